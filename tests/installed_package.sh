#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds docs/examples/store_roundtrip
# against it with find_package(mailnet) and checks pkg-config; runs the example.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src/docs/examples/store_roundtrip" -B "$tmp/app" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/app" >/dev/null
out=$(LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib/x86_64-linux-gnu" "$tmp/app/store_roundtrip")
echo "$out"
grep -qx 'messages 1 octets 22' <<<"$out"
grep -qx '| hello' <<<"$out"
pc=$(PKG_CONFIG_PATH=$(dirname "$(find "$tmp/prefix" -name mailnet.pc)") pkg-config --cflags --libs mailnet)
echo "pkg-config: $pc"
grep -q -- '-lmailnet' <<<"$pc"
# The flags point into the prefix it was installed to, wherever that is.
incdir=$(grep -o -- "-I[^ ]*" <<<"$pc" | head -n1 | cut -c3-)
[ "$(cd "$incdir" && pwd -P)" = "$(cd "$tmp/prefix/include" && pwd -P)" ]
echo "installed package OK"
