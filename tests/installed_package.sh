#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds docs/examples/store_roundtrip,
# docs/examples/smtpd_embed and docs/examples/pop3c_list (run against our pop3d on 127.0.0.1)
# against it with find_package(mailnet), and two small programs with pkg-config; runs them.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
# The PostgreSQL store's module is installed beside libmailnet (docs/stores.md "The module").
for f in libmailnet.so.0 libmailnet_postgresql.so.0; do
  [ -n "$(find "$tmp/prefix" -name "$f")" ] || { echo "$f is not installed" >&2; exit 1; }
done
[ "$(dirname "$(find "$tmp/prefix" -name libmailnet.so.0)")" = "$(dirname "$(find "$tmp/prefix" -name libmailnet_postgresql.so.0)")" ]
libdirs="$tmp/prefix/lib:$tmp/prefix/lib/x86_64-linux-gnu:$tmp/prefix/lib64"
cmake -S "$src/docs/examples/store_roundtrip" -B "$tmp/app" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/app" >/dev/null
out=$(LD_LIBRARY_PATH="$libdirs" "$tmp/app/store_roundtrip")
echo "$out"
grep -qx 'messages 1 octets 22' <<<"$out"
grep -qx '| hello' <<<"$out"

# An application embedding the SMTP server (docs/smtpd.md "Embedding"), built the same way.
cmake -S "$src/docs/examples/smtpd_embed" -B "$tmp/smtpd_app" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/smtpd_app" >/dev/null
out=$(LD_LIBRARY_PATH="$libdirs" timeout 20 "$tmp/smtpd_app/smtpd_embed")
echo "$out"
grep -qx '> 550 5.7.1 we take mail for example.org only' <<<"$out"
grep -qx 'delivered 1 recipient(s) from alice@example.net, 24 octets' <<<"$out"
grep -qx 'Subject: hello' <<<"$out"
grep -q '^> 250 2.0.0 Ok: queued as ' <<<"$out"

# An application using the POP3 client library (docs/pop3c.md "The library") against our pop3d.
cmake -S "$src/docs/examples/pop3c_list" -B "$tmp/pop3c_app" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/pop3c_app" >/dev/null
mkdir -p "$tmp/mail/alice/new" "$tmp/mail/alice/cur" "$tmp/mail/alice/tmp"
printf 'Subject: first\n\none\n' >"$tmp/mail/alice/new/1.M1P1.host"
printf 'From: x\nSubject: second\n\ntwo\n' >"$tmp/mail/alice/new/2.M1P1.host"
echo 'alice:{PLAIN}secret' >"$tmp/users"
"$build/pop3d/pop3d" --listen 127.0.0.1:0 --store "$tmp/mail" --users "$tmp/users" >"$tmp/pop3d.out" 2>"$tmp/pop3d.err" &
pop3d_pid=$!
trap 'kill $pop3d_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do grep -q '^listening pop3 ' "$tmp/pop3d.out" && break; sleep 0.1; done
port=$(sed -n 's/^listening pop3 127.0.0.1://p' "$tmp/pop3d.out")
out=$(POP3_PASSWORD=secret LD_LIBRARY_PATH="$libdirs" timeout 20 "$tmp/pop3c_app/pop3c_list" 127.0.0.1 "$port" alice)
echo "$out"
kill $pop3d_pid
grep -qx 'messages 2 octets 56' <<<"$out"
grep -qx '1 Subject: first' <<<"$out"
grep -qx '2 Subject: second' <<<"$out"

export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$(find "$tmp/prefix" -name mailnet.pc)")
pc=$(pkg-config --cflags --libs mailnet)
echo "pkg-config: $pc"
grep -q -- '-lmailnet' <<<"$pc"
# DESIGN.md: mimetic is private (Libs.private), and there for a static link.
if grep -q -- '-lmimetic' <<<"$pc"; then echo "mimetic is in the public Libs" >&2; exit 1; fi
static=$(pkg-config --static --libs mailnet)
echo "pkg-config --static: $static"
for l in -lmimetic -lcrypt -lssl -lcrypto; do grep -q -- "$l" <<<"$static"; done
# The flags point into the prefix it was installed to, wherever that is.
incdir=$(grep -o -- "-I[^ ]*" <<<"$pc" | head -n1 | cut -c3-)
[ "$(cd "$incdir" && pwd -P)" = "$(cd "$tmp/prefix/include" && pwd -P)" ]

# A program built with nothing but the pkg-config flags.
cat >"$tmp/pc.cpp" <<'CPP'
#include <mailnet/store/store.hpp>
#include <mailnet/version.hpp>
#include <iostream>
#include <string>
#include <vector>
int main() {
    auto store = mailnet::make_memory_store();
    const std::vector<std::string> to{"bob"};
    if (!store->deliver(to, "Subject: pc\n\nbody\n") || !store->lock("bob")) return 1;
    auto list = store->snapshot("bob");
    if (!list || list->size() != 1) return 1;
    std::cout << "mailnet " << mailnet::version() << " octets " << (*list)[0].octets << "\n";
    return 0;
}
CPP
# shellcheck disable=SC2086  # the flags are words
g++ "$tmp/pc.cpp" -o "$tmp/pc" $(pkg-config --cflags --libs mailnet)
out=$(LD_LIBRARY_PATH="$libdirs" "$tmp/pc")
echo "$out"
grep -qx "mailnet $(pkg-config --modversion mailnet) octets 21" <<<"$out"

# A program that uses mimetic's API itself adds -lmimetic itself (docs/libmailnet.md).
cat >"$tmp/pc_mime.cpp" <<'CPP'
#include <mailnet/store/message.hpp>
#include <mailnet/store/store.hpp>
#include <mimetic/mimetic.h>
#include <iostream>
#include <string>
#include <vector>
int main() {
    auto store = mailnet::make_memory_store();
    const std::vector<std::string> to{"bob"};
    if (!store->deliver(to, "Subject: parsed\n\nbody\n") || !store->lock("bob")) return 1;
    auto list = store->snapshot("bob");
    if (!list || list->empty()) return 1;
    auto msg = store->open("bob", (*list)[0].id);
    if (!msg) return 1;
    auto mime = msg->mime();
    if (!mime) return 1;
    std::cout << "subject " << (*mime)->header().subject() << "\n";
    return 0;
}
CPP
# shellcheck disable=SC2086
g++ "$tmp/pc_mime.cpp" -o "$tmp/pc_mime" $(pkg-config --cflags --libs mailnet) -lmimetic
out=$(LD_LIBRARY_PATH="$libdirs" "$tmp/pc_mime")
echo "$out"
grep -qx 'subject parsed' <<<"$out"
echo "installed package OK"
