#!/usr/bin/env bash
# pg_private.sh start|stop|restart|pause|resume DIR: a private PostgreSQL 15 for the tests (DESIGN.md "Dependencies"):
# initdb into a new directory under ${TMPDIR:-/tmp} (the postgres user, when run as root, must
# reach it, which a build tree under /root would not allow), its Unix socket there, a free TCP
# port on 127.0.0.1, trust authentication, fsync off (the tests restart it, they never crash
# the machine; MAILNET_PG_DURABLE=1 keeps PostgreSQL's durable defaults, for the bench).
# `start` writes the connection URI to DIR/uri, the postmaster's PID to DIR/pid
# and the cluster's directory to DIR/cluster; where PostgreSQL cannot be had it writes
# DIR/unavailable with the reason instead and still exits 0, so the PostgreSQL tests report
# skipped, never passed. `stop` stops that postmaster by its PID (nothing else) and removes
# both directories. `restart` restarts it (fast shutdown: every session cut) on the same port,
# for the tests of a database that goes away.
set -euo pipefail
cmd=${1:?usage: pg_private.sh start|stop|restart|pause|resume DIR}
dir=${2:?usage: pg_private.sh start|stop|restart|pause|resume DIR}
bin=${MAILNET_PG_BIN:-/usr/lib/postgresql/15/bin}

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

unavailable() {
  mkdir -p "$dir"
  echo "$1" >"$dir/unavailable"
  echo "pg_private: PostgreSQL tests will be skipped: $1" >&2
  exit 0
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] || unavailable "no PostgreSQL 15 in $bin (Debian package postgresql-15)"
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then unavailable "no postgres user"; fi
  [ -f "$dir/pid" ] && stop
  rm -rf "$dir"
  mkdir -p "$dir"
  local cluster
  cluster=$(mktemp -d "${TMPDIR:-/tmp}/mailnet-pg.XXXXXX")
  echo "$cluster" >"$dir/cluster"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$cluster"; fi
  as_owner "$bin/initdb" -D "$cluster/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || unavailable "initdb failed: $(tail -3 "$dir/initdb.log" | tr '\n' ' ')"
  local port tries=0 durability="-c fsync=off -c full_page_writes=off"
  # MAILNET_PG_DURABLE=1 (the store bench): PostgreSQL's durable defaults.
  [ "${MAILNET_PG_DURABLE:-}" = 1 ] && durability=""
  while :; do
    port=$(free_port)
    # -w: wait until it accepts connections. A port taken meanwhile fails the start: try another.
    if as_owner "$bin/pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w -t 60 -s \
         -o "-c listen_addresses=127.0.0.1 -p $port -k $cluster $durability -c max_connections=300 -c shared_buffers=64MB" start; then
      break
    fi
    tries=$((tries + 1))
    [ $tries -lt 5 ] || unavailable "postgres would not start: $(tail -3 "$cluster/server.log" | tr '\n' ' ')"
  done
  head -1 "$cluster/data/postmaster.pid" >"$dir/pid"
  echo "postgresql://postgres@127.0.0.1:$port/postgres" >"$dir/uri"
  echo "pg_private: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (pid $(cat "$dir/pid"), socket in $cluster)" >&2
}

stop() {
  local cluster=
  [ -f "$dir/cluster" ] && cluster=$(cat "$dir/cluster")
  if [ -f "$dir/pid" ] && [ -n "$cluster" ]; then
    local pid
    pid=$(cat "$dir/pid")
    # Only our postmaster: the PID must still be a postgres process serving our cluster.
    if kill -0 "$pid" 2>/dev/null && grep -q "$cluster/data" "/proc/$pid/cmdline" 2>/dev/null; then
      kill -INT "$pid"  # fast shutdown
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
  fi
  case "$cluster" in "${TMPDIR:-/tmp}"/mailnet-pg.*) rm -rf "$cluster" ;; esac
  rm -rf "$dir"
}

# pause: a fast shutdown that keeps the cluster (a database that went away); resume: started
# again on the same port with the same settings (postmaster.opts, as pg_ctl restart reads it).
pause() {
  local cluster
  cluster=$(cat "$dir/cluster")
  cp "$cluster/data/postmaster.opts" "$dir/opts"
  as_owner "$bin/pg_ctl" -D "$cluster/data" -w -t 60 -s -m fast stop
}

resume() {
  local cluster opts
  cluster=$(cat "$dir/cluster")
  # postmaster.opts: the server's path, then each argument in double quotes.
  opts=$(sed -e 's/^[^ ]* //' "$dir/opts")
  eval "set -- $opts"
  local args=() skip=0 a
  for a in "$@"; do  # -D is pg_ctl's own
    if [ $skip = 1 ]; then skip=0; continue; fi
    if [ "$a" = -D ]; then skip=1; continue; fi
    args+=("$a")
  done
  as_owner "$bin/pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w -t 60 -s -o "${args[*]}" start
  head -1 "$cluster/data/postmaster.pid" >"$dir/pid"
}

restart() {
  local cluster
  cluster=$(cat "$dir/cluster")
  as_owner "$bin/pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w -t 60 -s -m fast restart
  head -1 "$cluster/data/postmaster.pid" >"$dir/pid"
}

case "$cmd" in
  start) start ;;
  restart) restart ;;
  pause) pause ;;
  resume) resume ;;
  stop) stop ;;
  *) echo "usage: pg_private.sh start|stop|restart|pause|resume DIR" >&2; exit 64 ;;
esac
