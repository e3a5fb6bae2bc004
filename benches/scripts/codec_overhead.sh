#!/usr/bin/env bash
# Runs the `codec` criterion bench (CPU time per message) and prints, per message, messages/s
# of one core and the cost of opamp_proto::codec relative to plain prost measured in the same
# run. Issue 11 target: our layer adds under 5% (ratio <= 1.05).
#
# Usage: benches/scripts/codec_overhead.sh [extra criterion args, e.g. --measurement-time 2]
# Exit status: 0 when every codec/ws ratio is <= 1.05, 1 otherwise.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo_root/target}"
cargo bench --quiet --manifest-path "$repo_root/Cargo.toml" -p opamp-benches --bench codec -- "$@" >/dev/null

median_ns() { jq '.median.point_estimate' "$target/criterion/codec_$1/$2/new/estimates.json"; }

status=0
printf '%-26s %14s %14s %9s %9s %14s %14s %9s %9s\n' message prost_enc/s codec_enc/s ratio ws_ratio \
    prost_dec/s codec_dec/s ratio ws_ratio
for message in heartbeat full_status packages_available_1 packages_available_20 packages_available_1000; do
    pe="$(median_ns "$message" prost_encode)" ce="$(median_ns "$message" codec_encode)"
    we="$(median_ns "$message" ws_encode)" pd="$(median_ns "$message" prost_decode)"
    cd="$(median_ns "$message" codec_decode)" wd="$(median_ns "$message" ws_decode)"
    line="$(awk -v m="$message" -v pe="$pe" -v ce="$ce" -v we="$we" -v pd="$pd" -v cd="$cd" -v wd="$wd" 'BEGIN {
        printf "%-26s %14.0f %14.0f %9.3f %9.3f %14.0f %14.0f %9.3f %9.3f", m, 1e9/pe, 1e9/ce, ce/pe, we/pe, 1e9/pd, 1e9/cd, cd/pd, wd/pd
        if (ce/pe > 1.05 || we/pe > 1.05 || cd/pd > 1.05 || wd/pd > 1.05) printf " OVER"
    }')"
    echo "$line"
    [[ "$line" == *OVER ]] && status=1
done
echo "ratio = our CPU time per message / prost's (median of criterion samples); <= 1.05 passes"
exit "$status"
