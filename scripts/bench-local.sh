#!/usr/bin/env bash
# Local benchmark (not a test): kallad run vs DuckDB 2.0 on 2,000,000 x 1,900,000 Parquet rows.
# Usage: scripts/bench-local.sh [WORK_DIR]   (data is generated once into WORK_DIR/data)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-${TMPDIR:-/tmp}/kalla-bench}"
. scripts/bench/prelude.sh
python3 scripts/bench/bench_local.py "$CARGO_TARGET_DIR/release/kallad" "$work/data" "$work/out"
