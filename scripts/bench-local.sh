#!/usr/bin/env bash
# Local benchmark (not a test): kallad run vs DuckDB 2.0 on 2,000,000 x 1,900,000 Parquet rows.
# Usage: scripts/bench-local.sh [WORK_DIR]   (data is generated once into WORK_DIR/data)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kalla-target}"
work="${1:-${TMPDIR:-/tmp}/kalla-bench}"
python3 -c 'import duckdb, sys; sys.exit(0 if duckdb.__version__.startswith("2.0") else 1)' 2>/dev/null \
  || python3 -m pip install --quiet "duckdb==2.0.0"
cargo build --release --locked -p kallad
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
python3 scripts/bench/bench_local.py "$CARGO_TARGET_DIR/release/kallad" "$work/data" "$work/out"
