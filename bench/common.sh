# bench/common.sh: what bench/run (pop3), bench/smtprun (smtp), bench/fetchrun (fetch) and
# bench/mailnetdrun (mailnetd) share, sourced by them: the load clients popload and smtpload and
# a private Dovecot POP3 server (/work/shared/PEERS.md).
# Uses the caller's globals: here (bench/), build (the build directory), work (the run's
# directory), py and lib (python3 and bench/pop3lib.py), started (PIDs to stop on exit),
# with_tls and tls_suite (pop3s), dovecot_perf (1: Dovecot's high-performance mode, see
# start_dovecot; unset or 0: its default secure mode), log().

# build_popload: sets popload=BUILD/bench/popload, rebuilt (g++ -O2) when its source is newer.
build_popload() {
  mkdir -p "$build/bench"
  popload=$build/bench/popload
  if [ ! -x "$popload" ] || [ "$here/popload.cpp" -nt "$popload" ]; then
    echo "== building $popload"
    g++ -std=c++20 -O2 -Wall -Wextra -pthread "$here/popload.cpp" -o "$popload" -lssl -lcrypto
  fi
}

# build_smtpload: sets smtpload=BUILD/bench/smtpload, rebuilt (g++ -O2) when its source is newer.
build_smtpload() {
  mkdir -p "$build/bench"
  smtpload=$build/bench/smtpload
  if [ ! -x "$smtpload" ] || [ "$here/smtpload.cpp" -nt "$smtpload" ] || [ "$here/benchclock.hpp" -nt "$smtpload" ]; then
    echo "== building $smtpload"
    g++ -std=c++20 -O2 -Wall -Wextra -pthread "$here/smtpload.cpp" -o "$smtpload"
  fi
}

# start_dovecot NAME SRC|-: Dovecot on 127.0.0.1 (a free port: server_port; server_pid) serving
# $work/NAME/mail, a copy of $work/gen/SRC (-: there already), to the users of $work/gen/users.
start_dovecot() {
  local d=$work/$1
  if [ "$2" != - ]; then
    rm -rf "$d"
    mkdir -p "$d"
    cp -a "$work/gen/$2" "$d/mail"
  fi
  mkdir -p "$d/run" "$d/state" "$d/log"
  chmod 755 "$d"
  chown -R nobody:nogroup "$d/mail"
  cp "$work/gen/users" "$d/users"
  server_port=$("$py" "$lib" freeport)
  # pop3s: with_tls=1 gives it a free port, TLS 1.3 and the one cipher suite; otherwise port 0
  # (none: its default would be 995).
  local ssl=no tls_port=0 ssl_conf=
  if [ "$with_tls" = 1 ]; then
    ssl=yes
    tls_port=$("$py" "$lib" freeport)
    ssl_conf="ssl_cert = <$work/tls/cert.pem
ssl_key = <$work/tls/key.pem
ssl_min_protocol = TLSv1.3
ssl_cipher_suites = $tls_suite"
  fi
  server_tls_port=$tls_port
  # Dovecot's defaults otherwise, including its secure login mode (service_count = 1 for
  # pop3-login). default_client_limit is raised from 1000 so that 1000 sessions do not hit
  # the per-service client limits of its helper services (capacity, not a mode change).
  # dovecot_perf=1: the high-performance mode of Dovecot 2.3's docs instead (wiki
  # LoginProcess.txt: long-running pop3-login processes, service_count = 0, process_min_avail =
  # the cores; Services.txt and PerformanceTuning.txt: pop3 processes reused, service_count
  # raised from 1, "e.g. 100", fine with one mail UID as here, and kept ready with
  # process_min_avail), plus the passdb/userdb lookup cache (auth_cache_size). pop3's
  # client_limit stays 1 (Services.txt: higher adds latency, not safe beyond hobby use).
  local login_conf= pop3_conf= auth_conf=
  if [ "${dovecot_perf:-0}" = 1 ]; then
    local cores; cores=$(nproc)
    login_conf="  service_count = 0
  process_min_avail = $cores
  vsz_limit = 1G"
    pop3_conf="  service_count = 100
  process_min_avail = $cores"
    auth_conf="auth_cache_size = 1M"
  fi
  cat >"$d/dovecot.conf" <<EOF
base_dir = $d/run
state_dir = $d/state
log_path = $d/log/dovecot.log
info_log_path = $d/log/info.log
protocols = pop3
listen = 127.0.0.1
ssl = $ssl
$ssl_conf
disable_plaintext_auth = no
first_valid_uid = 1
$auth_conf
default_client_limit = 2200
mail_location = maildir:$d/mail/%u
passdb {
  driver = passwd-file
  args = $d/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$d/mail/%u
}
service pop3-login {
$login_conf
  inet_listener pop3 {
    port = $server_port
  }
  inet_listener pop3s {
    port = $tls_port
  }
}
service pop3 {
  process_limit = 1100
$pop3_conf
}
EOF
  /usr/bin/doveconf -c "$d/dovecot.conf" -n >/dev/null
  /usr/sbin/dovecot -F -c "$d/dovecot.conf" &
  server_pid=$!
  started+=("$server_pid")
  local i
  for i in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$server_port") 2>/dev/null; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench/run: dovecot did not start:" >&2
  cat "$d/log/dovecot.log" >&2 || true
  exit 70
}

check_dovecot_log() {  # check_dovecot_log NAME: Dovecot's errors and warnings, if any
  local f=$work/$1/log/dovecot.log n
  [ -f "$f" ] || return 0
  n=$(grep -E 'Error|Warning|Fatal|Panic' "$f" | grep -vc 'Killed with signal 15' || true)
  [ "$n" = 0 ] && return 0
  log "Dovecot ($1) logged $n errors/warnings, first ones:"
  grep -E 'Error|Warning|Fatal|Panic' "$f" | grep -v 'Killed with signal 15' | head -5
}

# discard_work DIR: a part's work directory at its end. Under `bench/run all` (BENCH_TRASH set)
# it is moved into the trash, which bench/run removes once every part has run: on ext4 without a
# journal (this machine's disk) files made within minutes of many deletions cost the kernel a
# scan past the freed inodes (docs/benchmarks.md, the smtp bench), so the next part would pay for
# this one's clean-up.
discard_work() {
  if [ -n "${BENCH_TRASH:-}" ] && [ -d "$BENCH_TRASH" ] && mv "$1" "$BENCH_TRASH/" 2>/dev/null; then return 0; fi
  rm -rf "$1"
}
