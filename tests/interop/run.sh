#!/bin/sh
# mailnet interop tests: runs one interop script under python3, or skips (125) when
# python3 itself is missing. Usage: run.sh SCRIPT BINARY (pop3d or smtpd) [ARGS...]
command -v python3 >/dev/null 2>&1 || { echo "SKIP: python3 not installed"; exit 125; }
script=$1; shift
PYTHONDONTWRITEBYTECODE=1 exec python3 "$script" "$@"
