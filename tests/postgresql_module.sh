#!/usr/bin/env bash
# The PostgreSQL store's module (libmailnet_postgresql.so.0) is loaded only for a postgresql://
# store: smtpd on a Maildir store maps no libpq; without the module a postgresql:// store is a
# clear error (exit 69), not a crash, that never shows the URI's password. Usage: postgresql_module.sh SMTPD LIBMAILNET_SO
set -euo pipefail
smtpd=$1 libmailnet=$2
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT

# 1. A Maildir store: no libpq (nor its Kerberos, LDAP, GnuTLS) in the process.
"$smtpd" --listen 127.0.0.1:0 --store "$tmp/mail" >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do grep -q '^listening smtp ' "$tmp/out" && break; sleep 0.05; done
grep -q '^listening smtp ' "$tmp/out" || { echo "smtpd did not start"; cat "$tmp/err"; exit 1; }
if grep -E 'libpq|libkrb5|libldap|libgnutls' "/proc/$pid/maps" >/dev/null; then
    echo "a Maildir smtpd maps libpq or its dependencies:"; grep -oE '/[^ ]*(libpq|libkrb5|libldap|libgnutls)[^ ]*' "/proc/$pid/maps" | sort -u
    exit 1
fi
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
echo "ok: a Maildir smtpd maps no libpq"

# 2. libmailnet with a module beside it that cannot be loaded (LD_LIBRARY_PATH wins over the
# program's RUNPATH): a postgresql:// store is refused with exit 69 and that file's own load
# error, before any connection, and no password of the URI is shown.
cp -L "$libmailnet" "$tmp/$(basename "$libmailnet")"
: >"$tmp/libmailnet_postgresql.so.0"
set +e
LD_LIBRARY_PATH=$tmp "$smtpd" --listen 127.0.0.1:0 --store 'postgresql://nobody:hunter2@127.0.0.1:1/none?password=hunter3' \
    >"$tmp/out" 2>"$tmp/err"
code=$?
set -e
cat "$tmp/err"
[ "$code" = 69 ] || { echo "exit $code, expected 69"; exit 1; }
grep -q "PostgreSQL support cannot be loaded (.*$tmp/libmailnet_postgresql.so.0" "$tmp/err"
if grep -q hunter "$tmp/err"; then echo "the URI's password was shown"; exit 1; fi
echo "ok: with a broken module, exit 69 and its load error, no password shown"
