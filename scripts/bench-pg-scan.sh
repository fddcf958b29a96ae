#!/usr/bin/env bash
# Postgres read speed (issue: Postgres sources). In one run, on a throwaway PostgreSQL server on
# this machine: the time of `psql -c "COPY invoices TO STDOUT (FORMAT binary)" > /dev/null` (the
# physical limit: the server's own encoding plus the wire) and of Kalla's scan of the same table
# into Arrow record batches with 1 and 2 partitions, each the median of RUNS runs.
#   ROWS=2000000 RUNS=5 bash scripts/bench-pg-scan.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-2000000}"
RUNS="${RUNS:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kalla-target}"
cargo build --release --workspace --bins --examples >&2
SCAN="$CARGO_TARGET_DIR/release/examples/pg_scan"

. scripts/bench/pg.sh

echo "loading $ROWS rows" >&2
"${PSQL[@]}" -c "CREATE TABLE invoices (id bigint, ref text, amount numeric(12,2), customer text, issued date,
  status text, created_at timestamptz);
  INSERT INTO invoices SELECT g, 'INV-' || lpad(g::text, 9, '0'), ((g::int8 * 7919) % 10000000) / 100.0,
    'CUST-' || (g % 50000), DATE '2025-01-01' + (g % 365), (ARRAY['open','paid','void'])[1 + g % 3],
    TIMESTAMPTZ '2025-01-01 00:00:00+00' + g * INTERVAL '1 second'
  FROM generate_series(1, $ROWS) g;" -c "VACUUM ANALYZE invoices;"
URI="postgres://kalla@127.0.0.1:$PORT/postgres?table=invoices&sslmode=disable"

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
copy_times=()
for _ in $(seq "$RUNS"); do
  start=$(date +%s.%N)
  "${PSQL[@]}" -c "COPY invoices TO STDOUT (FORMAT binary)" > /dev/null
  end=$(date +%s.%N)
  copy_times+=("$(awk "BEGIN {print $end - $start}")")
done
COPY_MEDIAN=$(printf '%s\n' "${copy_times[@]}" | median)
declare -A SCAN_MEDIAN
for p in 1 2; do
  out="$("$SCAN" "$URI" "$p" "$RUNS")"
  rows=$(echo "$out" | head -1 | sed 's/.*rows=\([0-9]*\).*/\1/')
  [ "$rows" = "$ROWS" ] || { echo "kallad read $rows rows, expected $ROWS" >&2; exit 1; }
  SCAN_MEDIAN[$p]=$(echo "$out" | sed 's/.*seconds=//' | median)
done
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on the same machine"
echo "rows: $ROWS, runs per measurement: $RUNS (median)"
printf '%-46s %8s %8s\n' "measurement" "seconds" "ratio"
printf '%-46s %8.3f %8s\n' "psql COPY (FORMAT binary) > /dev/null" "$COPY_MEDIAN" "1.00"
for p in 1 2; do
  printf '%-46s %8.3f %8.2f\n' "kallad scan into Arrow, $p partition(s)" "${SCAN_MEDIAN[$p]}" \
    "$(awk "BEGIN {print ${SCAN_MEDIAN[$p]} / $COPY_MEDIAN}")"
done
