#!/usr/bin/env bash
# Verified download vs `openssl dgst -sha256` on the same file, in the same run.
#
# Ours: the opamp-transport download route serves the file on 127.0.0.1 and the supervisor's
# Downloader streams it to disk, hashing as it writes, checks the SHA-256, fsyncs and renames
# (bin `download_verify`). Theirs: `openssl dgst -sha256 FILE` from the page cache. Issue 11
# target: ours >= 0.9x openssl's throughput (wall clock).
#
# Usage: benches/scripts/download_vs_openssl.sh [SIZE_MIB (default 1024)] [RUNS (default 5)] [DEST_DIR]
# DEST_DIR (default: a temp dir next to the file, i.e. on disk) is where downloads are written;
# pass a tmpfs such as /dev/shm to leave the disk out.
# SKIP_BUILD=1 uses the binary already in the target directory.
set -euo pipefail

size_mib="${1:-1024}"
runs="${2:-5}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo_root/target}"
command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 2; }

[[ -n "${SKIP_BUILD:-}" ]] || cargo build --quiet --release --manifest-path "$repo_root/Cargo.toml" -p opamp-benches --bin download_verify
ours="$target/release/download_verify"

work="$(mktemp -d)"
dest="${3:-$work/downloads}"
mkdir -p "$dest"
dest="$(mktemp -d -p "$dest")"
trap 'rm -rf "$work" "$dest"' EXIT
file="$work/serve/payload.bin"
mkdir -p "$work/serve"
echo "creating ${size_mib} MiB of random data in $file; downloads go to $dest ($(df --output=fstype "$dest" | tail -1))"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$file"
cat "$file" >/dev/null # warm the page cache so both sides read from memory

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "openssl: $(openssl version)"
sha="$(openssl dgst -sha256 -r "$file" | cut -d' ' -f1)"

measure_openssl() {
    local TIMEFORMAT='%R %U %S' report
    report="$({ time openssl dgst -sha256 "$file" >/dev/null; } 2>&1)"
    awk '{ printf "%.4f %.4f", $1, $2 + $3 }' <<<"$report"
}
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

openssl_wall=() ours_wall=() ours_cpu=()
for ((i = 1; i <= runs; i++)); do # interleaved so drift in machine load hits both alike
    read -r ow oc <<<"$(measure_openssl)"
    read -r rw rc <<<"$("$ours" "$file" "$sha" "$dest")"
    openssl_wall+=("$ow") ours_wall+=("$rw") ours_cpu+=("$rc")
    printf 'run %d: openssl %ss wall %ss cpu   download+verify+fsync %ss wall %ss cpu\n' "$i" "$ow" "$oc" "$rw" "$rc"
done
o="$(printf '%s\n' "${openssl_wall[@]}" | median)"
r="$(printf '%s\n' "${ours_wall[@]}" | median)"
c="$(printf '%s\n' "${ours_cpu[@]}" | median)"
awk -v o="$o" -v r="$r" -v c="$c" -v mib="$size_mib" 'BEGIN {
    printf "median wall: openssl %.3fs (%.0f MiB/s), download+verify+fsync %.3fs (%.0f MiB/s, %.3fs CPU), ratio %.3f\n", o, mib / o, r, mib / r, c, o / r
    if (o / r >= 0.9) print "PASS: ratio >= 0.9"; else print "BELOW 0.9"
}'
