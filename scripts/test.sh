#!/usr/bin/env bash
# The whole test suite: installs nginx, apache2, lighttpd, php-cgi, php-fpm, libphp, cgi-fcgi, ss when
# missing, then runs every unit and integration test. Tests that need one of those fail when it
# is absent. The benchmarks are compiled, not run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
cargo build --bins
# The benchmarks are not run here (they are load tests: see docs/BENCHMARKS.md), but they must
# still compile, or they rot unseen.
cargo bench --no-run --quiet
cargo test --lib --bins --tests -- --test-threads="${TEST_THREADS:-2}"
