#!/usr/bin/env bash
# The quick regression subset: every criterion bench with short warm-up and measurement, the
# interleaved codec overhead check, and two 1,000-agent fleet runs (transport only, and the
# fleet server's rollout). Criterion compares each bench with the previous run on this machine
# and prints "Performance has regressed" when it got slower; read those lines first.
# Takes about 5 minutes on 2 cores after the build.
#
# Usage: benches/scripts/quick.sh [--no-load]
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo_root/target}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "== criterion benches (quick)"
for bench in codec all_packages_hash session_pair rollout_engine verify_hash verify_signature; do
    cargo bench --quiet --manifest-path "$repo_root/Cargo.toml" -p opamp-benches --bench "$bench" -- \
        --warm-up-time 1 --measurement-time 2 --noplot 2>&1 | tee -a "$log" | grep -E '^[a-z_0-9/.-]+$|time:|thrpt:|regressed|improved' || true
done

echo "== codec overhead against prost (interleaved; ratio <= 1.05 is the target)"
cargo build --quiet --release --manifest-path "$repo_root/Cargo.toml" -p opamp-benches --bin codec_overhead --bin fleet_load --bin fleet_rollout
"$target/release/codec_overhead" 51

if [[ "${1:-}" != "--no-load" ]]; then
    echo "== fleet load, 1,000 agents"
    "$target/release/fleet_load" --agents 1000 --timeout-secs 120 | grep -v '^server: PROGRESS'
    echo "== fleet server rollout, 1,000 agents"
    "$target/release/fleet_rollout" --agents 1000 --timeout-secs 120 | grep -v 'Progress {'
fi

echo "== summary"
if grep -q "Performance has regressed" "$log"; then
    echo "criterion reports regressions:"
    # Criterion prints the bench id at the start of a line (alone or before "time:").
    awk '/^[a-z_0-9]/ { id = $1 } /Performance has regressed/ { print "  " id }' "$log"
    echo "(on a shared machine rerun a flagged bench alone before believing it)"
    exit 1
fi
echo "no criterion regressions reported"
