#!/usr/bin/env bash
# Runs every fuzz target for a short time (default 10 s each) from the committed
# seeds. Needs a nightly toolchain and cargo-fuzz; skips with a message otherwise.
# Usage: fuzz/run-short.sh [seconds-per-target]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-10}"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: skipped (no nightly toolchain; install one with 'rustup toolchain install nightly')"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --quiet
fi

cargo +nightly fuzz build -O
failed=""
for target in $(cargo +nightly fuzz list); do
    mkdir -p "corpus/$target"
    seeds="seeds/$target"
    [ -d "$seeds" ] || seeds=""
    echo "fuzz: $target for ${seconds}s"
    # Only inputs found by this run count: older artifacts may be known, reported crashes.
    stamp="$(mktemp)"
    cargo +nightly fuzz run -O "$target" "corpus/$target" $seeds -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
        | grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|Done)|ERROR|panicked|SUMMARY' || true
    # libFuzzer exits non-zero on a crash; the pipe above hides it, so check artifacts.
    found="$(find "artifacts/$target" -newer "$stamp" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) 2>/dev/null || true)"
    rm -f "$stamp"
    if [ -n "$found" ]; then
        echo "fuzz: $target found a failing input:" $found
        failed="$failed $target"
    fi
done
if [ -n "$failed" ]; then
    echo "fuzz: failing inputs found by:$failed (see artifacts/)"
    exit 1
fi
echo "fuzz: all targets ran ${seconds}s without a crash"
