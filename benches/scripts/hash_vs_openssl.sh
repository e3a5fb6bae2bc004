#!/usr/bin/env bash
# Compares SHA-256 throughput of opamp-verify's streaming hasher with `openssl dgst -sha256`
# on the same file in the same run. Issue 4 requires ours >= 0.9x openssl.
#
# Usage: benches/scripts/hash_vs_openssl.sh [SIZE_MIB (default 1024)] [RUNS (default 5)]
# Exit status: 0 when the ratio is at least 0.9, 1 otherwise, 2 on a setup problem.
set -euo pipefail

size_mib="${1:-1024}"
runs="${2:-5}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 2; }

cargo build --quiet --release --manifest-path "$repo_root/Cargo.toml" -p opamp-verify --example sha256sum
ours="$repo_root/target/release/examples/sha256sum"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
file="$work/payload.bin"
echo "creating ${size_mib} MiB of random data in $file"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$file"
cat "$file" >/dev/null # warm the page cache so both tools hash from memory

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "sha_ni: $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no)"
echo "openssl: $(openssl version)"

# Both digests must agree before any timing counts.
expected="$(openssl dgst -sha256 -r "$file" | cut -d' ' -f1)"
got="$("$ours" "$file" | cut -d' ' -f1)"
[[ "$expected" == "$got" ]] || { echo "digest mismatch: openssl $expected, ours $got" >&2; exit 2; }

# Runs "$@" once; prints "wall_seconds cpu_seconds" (cpu = user + sys of the child).
measure() {
    local TIMEFORMAT='%R %U %S' report
    report="$({ time "$@" >/dev/null; } 2>&1)"
    awk '{ printf "%.4f %.4f", $1, $2 + $3 }' <<<"$report"
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
calc() { awk "BEGIN { $1 }"; }

openssl_wall=() openssl_cpu=() ours_wall=() ours_cpu=()
for ((i = 1; i <= runs; i++)); do # interleaved so drift in machine load hits both tools alike
    read -r ow oc <<<"$(measure openssl dgst -sha256 "$file")"
    read -r rw rc <<<"$(measure "$ours" "$file")"
    openssl_wall+=("$ow") openssl_cpu+=("$oc") ours_wall+=("$rw") ours_cpu+=("$rc")
    printf 'run %d: openssl %ss wall %ss cpu   opamp-verify %ss wall %ss cpu\n' "$i" "$ow" "$oc" "$rw" "$rc"
done

report() { # label, then RUNS openssl times, then RUNS opamp-verify times
    local label="$1" o r
    o="$(printf '%s\n' "${@:2:$runs}" | median)"
    r="$(printf '%s\n' "${@:$((runs + 2))}" | median)"
    printf '%s median: openssl %ss (%s MiB/s), opamp-verify %ss (%s MiB/s), ratio %s\n' "$label" \
        "$o" "$(calc "printf \"%.1f\", $size_mib / $o")" \
        "$r" "$(calc "printf \"%.1f\", $size_mib / $r")" \
        "$(calc "printf \"%.3f\", $o / $r")"
}
report "cpu " "${openssl_cpu[@]}" "${ours_cpu[@]}"
report "wall" "${openssl_wall[@]}" "${ours_wall[@]}"
openssl_median="$(printf '%s\n' "${openssl_wall[@]}" | median)"
ours_median="$(printf '%s\n' "${ours_wall[@]}" | median)"
ratio="$(calc "printf \"%.3f\", $openssl_median / $ours_median")"
echo "ratio (opamp-verify throughput / openssl throughput, wall clock): $ratio"
if [[ "$(calc "print ($ratio >= 0.9)")" == 1 ]]; then
    echo "PASS: ratio >= 0.9"
else
    echo "FAIL: ratio < 0.9"
    exit 1
fi
