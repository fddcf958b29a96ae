"""Cross-checks kalla-datagen's truth.json with DuckDB.

    python3 scripts/bench/truth_duckdb.py DIR

Runs DIR's shape's match query in DuckDB over DIR/invoices.parquet and DIR/payments.parquet
(tolerance_match_pct(a, b, f) written as abs(a - b) <= f * greatest(abs(a), abs(b)), exact
decimals), counts matched rows, and counts per table the rows whose key is in no matched row
(unnesting the key arrays of the grouped shapes), as SPEC 4 defines them. Exits 1, printing both,
when that differs from truth.json.
"""
import json
import os
import sys

import duckdb

# Each shape's match query over the views `invoices` and `payments`, and the expressions that
# list the invoice and payment keys of one matched row (as arrays).
QUERIES = {
    "one-to-one": (
        "SELECT i.invoice_id, p.payment_id, i.amount, p.amount AS paid FROM invoices i "
        "JOIN payments p ON i.reference = p.reference_number "
        "AND abs(i.amount - p.amount) <= 0.01 * greatest(abs(i.amount), abs(p.amount))",
        "[invoice_id]",
        "[payment_id]",
    ),
    "split": (
        "SELECT i.invoice_id, array_agg(p.payment_id) AS payment_ids FROM invoices i "
        "JOIN payments p ON i.reference = p.reference_number "
        "GROUP BY i.invoice_id, i.amount HAVING sum(p.amount) = i.amount",
        "[invoice_id]",
        "payment_ids",
    ),
    "batch": (
        "SELECT p.payment_id, array_agg(i.invoice_id) AS invoice_ids FROM payments p "
        "JOIN invoices i ON i.reference = p.reference_number "
        "GROUP BY p.payment_id, p.amount HAVING sum(i.amount) = p.amount",
        "invoice_ids",
        "[payment_id]",
    ),
    "many-to-many": (
        "WITH i AS (SELECT customer_id, period, sum(amount) AS total, "
        "array_agg(invoice_id) AS invoice_ids FROM invoices GROUP BY customer_id, period), "
        "p AS (SELECT customer_id, period, sum(amount) AS total, "
        "array_agg(payment_id) AS payment_ids FROM payments GROUP BY customer_id, period) "
        "SELECT i.customer_id, i.period, i.invoice_ids, p.payment_ids FROM i JOIN p "
        "ON i.customer_id = p.customer_id AND i.period = p.period AND i.total = p.total",
        "invoice_ids",
        "payment_ids",
    ),
}


def evaluate(con, shape):
    query, invoice_keys, payment_keys = QUERIES[shape]
    con.execute(f"CREATE TEMP TABLE matched AS {query}")
    con.execute(f"CREATE TEMP TABLE matched_invoices AS SELECT DISTINCT unnest({invoice_keys}) AS k FROM matched")
    con.execute(f"CREATE TEMP TABLE matched_payments AS SELECT DISTINCT unnest({payment_keys}) AS k FROM matched")
    one = lambda sql: con.execute(sql).fetchone()[0]
    return {
        "rows": {
            "invoices": one("SELECT count(*) FROM invoices"),
            "payments": one("SELECT count(*) FROM payments"),
        },
        "matched": one("SELECT count(*) FROM matched"),
        "unmatched": {
            "invoices": one("SELECT count(*) FROM invoices WHERE invoice_id NOT IN (SELECT k FROM matched_invoices)"),
            "payments": one("SELECT count(*) FROM payments WHERE payment_id NOT IN (SELECT k FROM matched_payments)"),
        },
    }


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    data = sys.argv[1]
    with open(os.path.join(data, "truth.json")) as f:
        truth = json.load(f)
    con = duckdb.connect()
    for table in ("invoices", "payments"):
        path = os.path.join(data, f"{table}.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
    got = evaluate(con, truth["shape"])
    expected = {k: truth[k] for k in ("rows", "matched", "unmatched")}
    if got != expected:
        print(f"{data}: DuckDB disagrees with truth.json ({truth['shape']}, seed {truth['seed']})")
        print(f"  truth.json: {json.dumps(expected)}")
        print(f"  DuckDB:     {json.dumps(got)}")
        sys.exit(1)
    print(f"{data}: {truth['shape']} ok: {json.dumps(got)}")


if __name__ == "__main__":
    main()
