#!/usr/bin/env bash
# Checks the systemd units with systemd-analyze verify (it parses every
# setting and refuses a unit it could not run). The configured units name
# the installed juiced; here they point at the one just built.
# Usage: systemd_verify.sh UNIT_DIR JUICED
set -euo pipefail
units=$1 juiced=$2
if ! command -v systemd-analyze >/dev/null; then
  echo "systemd-analyze not found (Debian package systemd): skipped"; exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in "$units"/*.service; do
  sed "s#^ExecStart=[^ ]*juiced#ExecStart=$juiced#" "$f" >"$tmp/$(basename "$f")"
done
cd "$tmp"
# An instance of the template, and the user unit; warnings fail the test too.
out=$(systemd-analyze verify ./juice-bootstrap@4222.service 2>&1 || echo "exit $?")
# (--user needs a runtime dir; a private one will do.)
out+=$(XDG_RUNTIME_DIR="$tmp" systemd-analyze --user verify ./juiced.service 2>&1 || echo "exit $?")
if [[ -n "$out" ]]; then echo "$out"; exit 1; fi
grep -q -- "--bootstrap-node --port %i" juice-bootstrap@.service
echo "units OK"
