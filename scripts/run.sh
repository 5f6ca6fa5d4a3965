#!/usr/bin/env bash
# The main job: install what is missing, build, and run `fastpm run` on the embedded default
# config (pool www on 127.0.0.1:9000, status on http://127.0.0.1:9180/status). Extra arguments
# go to `fastpm run` (e.g. --backlog 1024, -c conf/examples/unix-socket.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh run
cargo build --release --bin fastpm
exec target/release/fastpm run "$@"
