#!/usr/bin/env bash
# Checks the systemd units with `systemd-analyze verify`, against a built `opamp`
# (verify insists that ExecStart names an executable file): each unit is copied with its
# ExecStart pointed at $1 (default target/debug/opamp; the supervisor's unit gets the
# opamp-supervisor beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
opamp="$(realpath "${1:-target/debug/opamp}")"
[ -x "$opamp" ] || { echo "no opamp binary at $opamp (cargo build first)" >&2; exit 1; }
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for unit in deploy/systemd/*.service; do
    sed "s#/usr/local/bin/opamp#$opamp#" "$unit" > "$scratch/$(basename "$unit")"
done
# verify exits 0 after warnings such as an unknown key or a bad value: any output fails.
status=0
output="$(systemd-analyze verify "$scratch"/*.service 2>&1)" || status=$?
if [ -n "$output" ] || [ "$status" -ne 0 ]; then
    printf '%s\n' "$output" >&2
    echo "systemd-analyze verify failed (exit $status)" >&2
    exit 1
fi
echo "systemd units verified: $(ls deploy/systemd)"
