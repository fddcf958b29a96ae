#!/usr/bin/env bash
# Cluster benchmark (not a test): the 2,000,000 x 1,900,000 reconciliation through the HTTP API,
# local mode vs `kallad scheduler` + 2 `kallad executor`s on this machine, from Parquet and from
# Postgres (a throwaway server on this machine, loaded from the same data), with peak RSS per
# process. Usage: scripts/bench-cluster.sh [WORK_DIR]   (BENCH_RUNS=3, BENCH_SLOTS=1 per executor)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-${TMPDIR:-/tmp}/kalla-bench}"
. scripts/bench/prelude.sh
mkdir -p "$work/data"
python3 -c 'import sys; sys.path.insert(0, "scripts/bench"); from bench_local import generate; generate(sys.argv[1])' "$work/data"

. scripts/bench/pg.sh
echo "loading the Parquet data into PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')" >&2
csv="$(mktemp -d /tmp/kalla-bench-csv.XXXXXX)"; chmod 755 "$csv"
python3 - "$work/data" "$csv" <<'PY'
import duckdb, sys
con = duckdb.connect()
for t in ("invoices", "payments"):
    con.execute(f"COPY (SELECT * FROM '{sys.argv[1]}/{t}.parquet') TO '{sys.argv[2]}/{t}.csv' (HEADER)")
PY
"${PSQL[@]}" -c "CREATE TABLE invoices (invoice_id bigint, customer text, amount numeric(12,2), currency text,
  invoice_date date, reference text, created_at timestamptz);
  CREATE TABLE payments (payment_id bigint, payer text, amount numeric(12,2), currency text, paid_on date,
  reference_number text, received_at timestamptz);"
"${PSQL[@]}" -c "\\copy invoices FROM '$csv/invoices.csv' CSV HEADER" -c "\\copy payments FROM '$csv/payments.csv' CSV HEADER"
"${PSQL[@]}" -c "VACUUM ANALYZE invoices" -c "VACUUM ANALYZE payments"
rm -rf "$csv"
BENCH_PG="postgres://kalla@127.0.0.1:$PORT/postgres?sslmode=disable&table=" \
  python3 scripts/bench/bench_cluster.py "$CARGO_TARGET_DIR/release/kallad" "$work/data" "$work/cluster-out"
