#!/usr/bin/env bash
# Kalla's benchmark suite, one command: builds release (kallad and kalla-datagen), generates the
# seeded datasets with ground truth (cross-checked with DuckDB), loads them into a throwaway
# PostgreSQL on this machine, runs every cell through the HTTP API (local mode, and a scheduler +
# BENCH_EXECUTORS executors), checks every count against the truth, measures DuckDB 2.0 and a raw
# binary COPY as peers, and writes its section of docs/benchmarks.md and docs/benchmarks.json.
#
# Usage: scripts/bench.sh [WORK_DIR]        (data is generated once into WORK_DIR/data)
#   BENCH_PLAN=quick  a minute-long smoke run at 100k rows (writes into WORK_DIR only)
#   BENCH_PLAN=goals  the goal cells only, 2M x 1.9M (writes into WORK_DIR only; ~3 minutes)
#   BENCH_PLAN=full   goals, all shapes at 1M, growth 1M..10M, memory bound (default; ~15 minutes
#                     on 2 cores once the data exists)
#   BENCH_RUNS=3  BENCH_EXECUTORS=2  BENCH_NO_PG=1 (skip Postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-${TMPDIR:-/tmp}/kalla-bench-suite}"
plan="${BENCH_PLAN:-full}"
. scripts/bench/prelude.sh
cargo build --release --locked -p kalla-datagen
mkdir -p "$work"
export BENCH_PG=""
if [ -z "${BENCH_NO_PG:-}" ]; then
  . scripts/bench/pg.sh
  export BENCH_PG="postgres://kalla@127.0.0.1:$PORT/postgres?sslmode=disable&table="
  export BENCH_PSQL="${PSQL[*]}"
fi
export BENCH_PLAN="$plan"
python3 scripts/bench/suite.py "$CARGO_TARGET_DIR/release/kallad" "$CARGO_TARGET_DIR/release/kalla-datagen" "$work"
pg_version=""
[ -n "$BENCH_PG" ] && pg_version="$("$PGBIN/postgres" --version | awk '{print $3}')"
# A full run rewrites the committed results; a quick or goals run writes beside its data only.
report_dir=docs
[ "$plan" = full ] || report_dir="$work"
python3 scripts/bench/report.py "$work/results.json" "$pg_version" "$report_dir/benchmarks.json" "$report_dir/benchmarks.md"
