#!/usr/bin/env bash
# Runs every test of the workspace. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kalla-target}"
cargo test --workspace --locked "$@"
