"""Local benchmark: kallad run vs DuckDB on the same 2,000,000 x 1,900,000 Parquet files.

Generates deterministic data with DuckDB, runs the 1% tolerance reconciliation with
`kallad run` (release build), then DuckDB doing the same work: the match, two anti joins and
three Parquet writes. Prints a Markdown table row per run. Called by scripts/bench-local.sh.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import duckdb

INVOICES = int(os.environ.get("BENCH_INVOICES", 2_000_000))
PAYMENTS = int(os.environ.get("BENCH_PAYMENTS", 1_900_000))
RUNS = int(os.environ.get("BENCH_RUNS", 3))
THREADS = os.cpu_count() or 2


def generate(data_dir):
    inv = os.path.join(data_dir, "invoices.parquet")
    pay = os.path.join(data_dir, "payments.parquet")
    if os.path.exists(inv) and os.path.exists(pay):
        return
    con = duckdb.connect()
    con.execute(f"""
        CREATE TABLE invoices AS
        SELECT i::BIGINT AS invoice_id,
               'customer_' || (i % 50000) AS customer,
               CAST(((hash(i) % 999900) + 100) / 100.0 AS DECIMAL(12,2)) AS amount,
               CASE i % 3 WHEN 0 THEN 'EUR' WHEN 1 THEN 'USD' ELSE 'GBP' END AS currency,
               DATE '2026-01-01' + CAST(i % 365 AS INTEGER) AS invoice_date,
               'REF-' || lpad(i::VARCHAR, 10, '0') AS reference,
               TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) AS created_at
        FROM range({INVOICES}) t(i)
    """)
    matched = PAYMENTS * 95 // 100
    # Payment p < matched references invoice (7p + 3) mod N (a bijection, as 7 is coprime with N
    # for the default N); 2% of those pay 5% more than invoiced; the rest reference nothing.
    con.execute(f"""
        CREATE TABLE payments AS
        SELECT p::BIGINT AS payment_id,
               'payer_' || (p % 40000) AS payer,
               CASE WHEN p < {matched} THEN
                    CASE WHEN p % 50 = 0 THEN CAST(i.amount * 1.05 AS DECIMAL(12,2)) ELSE i.amount END
                    ELSE CAST(((hash(p + 7777777) % 999900) + 100) / 100.0 AS DECIMAL(12,2)) END AS amount,
               CASE p % 3 WHEN 0 THEN 'EUR' WHEN 1 THEN 'USD' ELSE 'GBP' END AS currency,
               DATE '2026-01-01' + CAST(p % 365 AS INTEGER) AS paid_on,
               CASE WHEN p < {matched} THEN i.reference ELSE 'ORPHAN-' || p END AS reference_number,
               TIMESTAMPTZ '2026-01-02 00:00:00+00' + to_seconds(p) AS received_at
        FROM range({PAYMENTS}) t(p)
        LEFT JOIN invoices i ON i.invoice_id = (7 * p + 3) % {INVOICES} AND p < {matched}
    """)
    con.execute(f"COPY (SELECT * FROM invoices ORDER BY invoice_id) TO '{inv}' (FORMAT parquet)")
    con.execute(f"COPY (SELECT * FROM payments ORDER BY payment_id) TO '{pay}' (FORMAT parquet)")


MATCH_SQL = ("SELECT i.invoice_id, p.payment_id, i.amount, p.amount AS paid FROM invoices i "
             "JOIN payments p ON i.reference = p.reference_number "
             "AND tolerance_match_pct(i.amount, p.amount, 0.01)")


def run_kallad(kallad, data_dir, out_dir):
    run_id = str(uuid.uuid4())
    job = {
        "run_id": run_id,
        "match_sql": MATCH_SQL,
        "sources": [
            {"alias": "invoices", "uri": "invoices.parquet", "primary_key": ["invoice_id"]},
            {"alias": "payments", "uri": "payments.parquet", "primary_key": ["payment_id"]},
        ],
        "output_path": run_id,
    }
    job_path = os.path.join(out_dir, f"{run_id}.json")
    with open(job_path, "w") as f:
        json.dump(job, f)
    start = time.perf_counter()
    res = subprocess.run([kallad, "run", job_path, "--data-dir", data_dir, "--output-dir", out_dir],
                         capture_output=True, env={**os.environ, "RUST_LOG": "warn"})
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"kallad failed: {res.stdout.decode()} {res.stderr.decode()}")
    status = json.loads(res.stdout)
    summary = json.load(open(os.path.join(out_dir, run_id, "summary.json")))
    shutil.rmtree(os.path.join(out_dir, run_id))
    return elapsed, status["counts"], summary["audit"]["stage_timings_ms"]


def run_duckdb(data_dir, out_dir):
    d = os.path.join(out_dir, "duckdb")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    inv = os.path.join(data_dir, "invoices.parquet")
    pay = os.path.join(data_dir, "payments.parquet")
    start = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {THREADS}")
    con.execute(f"""COPY (SELECT i.invoice_id, p.payment_id, i.amount, p.amount AS paid
        FROM '{inv}' i JOIN '{pay}' p ON i.reference = p.reference_number
        AND abs(i.amount - p.amount) <= 0.01 * greatest(abs(i.amount), abs(p.amount)))
        TO '{d}/matched.parquet' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT * FROM '{inv}' WHERE invoice_id NOT IN
        (SELECT invoice_id FROM '{d}/matched.parquet')) TO '{d}/unmatched_invoices.parquet' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT * FROM '{pay}' WHERE payment_id NOT IN
        (SELECT payment_id FROM '{d}/matched.parquet')) TO '{d}/unmatched_payments.parquet' (FORMAT parquet)""")
    elapsed = time.perf_counter() - start
    counts = {
        "matched": con.execute(f"SELECT count(*) FROM '{d}/matched.parquet'").fetchone()[0],
        "unmatched_invoices": con.execute(f"SELECT count(*) FROM '{d}/unmatched_invoices.parquet'").fetchone()[0],
        "unmatched_payments": con.execute(f"SELECT count(*) FROM '{d}/unmatched_payments.parquet'").fetchone()[0],
    }
    return elapsed, counts


def main():
    kallad, data_dir, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(data_dir, exist_ok=True)
    os.makedirs(out_dir, exist_ok=True)
    t = time.perf_counter()
    generate(data_dir)
    print(f"data: {INVOICES} invoices x {PAYMENTS} payments in {data_dir} ({time.perf_counter() - t:.1f}s)")
    print(f"duckdb {duckdb.__version__}, threads={THREADS}")
    print("| run | kallad s | kallad stages (ms) | duckdb s | ratio |")
    print("|---|---|---|---|---|")
    for r in range(RUNS):
        k, counts, stages = run_kallad(kallad, data_dir, out_dir)
        d, dcounts = run_duckdb(data_dir, out_dir)
        want = (dcounts["matched"], dcounts["unmatched_invoices"], dcounts["unmatched_payments"])
        got = (counts["matched"], counts["unmatched"]["invoices"], counts["unmatched"]["payments"])
        if want != got:
            sys.exit(f"counts differ: kallad {got} duckdb {want}")
        print(f"| {r + 1} | {k:.2f} | {stages} | {d:.2f} | {k / d:.2f}x |")
    print(f"counts (equal in both): matched={got[0]} unmatched_invoices={got[1]} unmatched_payments={got[2]}")


if __name__ == "__main__":
    main()
