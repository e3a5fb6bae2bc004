#!/usr/bin/env bash
# Signature verifications per second per scheme: opamp-verify against `openssl speed`, both
# measured in this run and both divided by CPU time (openssl speed's default is user time).
#
# Usage: benches/scripts/signatures_vs_openssl.sh [SECONDS per measure (default 3)]
# Prints one line per scheme: openssl verify/s, ours (primitive and whole offer), ratios.
# SKIP_BUILD=1 uses the binary already in the target directory.
set -euo pipefail

seconds="${1:-3}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo_root/target}"
command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 2; }

[[ -n "${SKIP_BUILD:-}" ]] || cargo build --quiet --release --manifest-path "$repo_root/Cargo.toml" -p opamp-benches --bin signature_speed
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "openssl: $(openssl version)"

# -mr lines: "+F2:<n>:2048:<sign/s>:<verify/s>" (RSA), "+F6:<n>:253:Ed25519:<sign/s>:<verify/s>".
speed="$(openssl speed -seconds "$seconds" -mr ed25519 rsa2048 2>/dev/null)"
openssl_rsa="$(awk -F: '/^\+F2:/ && $3 == 2048 { print $5 }' <<<"$speed")"
openssl_ed="$(awk -F: '/^\+F6:/ && $4 == "Ed25519" { print $6 }' <<<"$speed")"
[[ -n "$openssl_rsa" && -n "$openssl_ed" ]] || { echo "cannot parse openssl speed output" >&2; exit 2; }

ours="$("$target/release/signature_speed" "$seconds")"
rate() { awk -v level="$1" -v scheme="$2" '$1 == level && $2 == scheme { print $3 }' <<<"$ours"; }

printf '%-22s %14s %16s %10s %16s %10s\n' scheme openssl_verify/s ours_primitive/s ratio ours_offer/s ratio
for scheme in ed25519 rsa-pss-sha256 rsa-pkcs1v15-sha256; do
    base="$openssl_rsa"
    [[ "$scheme" == ed25519 ]] && base="$openssl_ed"
    primitive="$(rate primitive "$scheme")" offer="$(rate offer "$scheme")"
    awk -v s="$scheme" -v b="$base" -v p="$primitive" -v o="$offer" \
        'BEGIN { printf "%-22s %14.0f %16.0f %10.3f %16.0f %10.3f\n", s, b, p, p / b, o, o / b }'
done
echo "ratio = ours / openssl verifications per CPU second (openssl rsa2048 is raw PKCS#1 v1.5"
echo "on a 36-byte digest; ours hashes the message with SHA-256 first)"
