#!/usr/bin/env bash
# The whole test suite: installs nginx, apache2, lighttpd, php-cgi, php-fpm, cgi-fcgi and ss when
# missing, then runs every unit and integration test. Tests that need one of those fail when it
# is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
cargo build --bins
cargo test --lib --bins --tests -- --test-threads="${TEST_THREADS:-2}"
