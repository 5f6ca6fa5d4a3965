#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 30) from the captured seeds; new inputs go to
# corpus/ (git-ignored), crashes to artifacts/, each run's log to artifacts/<target>.log.
# Needs `cargo install cargo-fuzz`. RUSTC_BOOTSTRAP=1 lets a stable toolchain take
# cargo-fuzz's nightly flags; the parsers have no unsafe code, so no sanitizer is needed.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
mkdir -p artifacts
status=0
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    log="artifacts/$target.log"
    if cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=70000 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
        cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || echo 'cov: ?')
        echo "$target: ok, $runs runs in ${seconds}s, $cov"
    else
        echo "$target: FAILED, see $log"; tail -30 "$log"; status=1
    fi
done
exit $status
