//! Everything a caller can fix is refused at planning with its code and field, and nothing is
//! written.

use crate::harness::{Fixture, csv_sources, job};
use kalla_recipe::ErrorCode;
use serde_json::{Value, json};

fn fixture() -> Fixture {
    let f = Fixture::new();
    f.file("invoices.csv", "invoice_id,ref,amount,issued\nI1,A,10.00,2026-01-05\nI2,B,20.00,2026-02-01\n");
    f.file("payments.csv", "payment_id,ref,amount\nP1,A,10.00\n");
    f
}

fn sources() -> Value {
    csv_sources(&["invoice_id"], &["payment_id"])
}

const OK_SQL: &str = "SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.ref = p.ref";

async fn refused(f: &Fixture, request: Value) -> (ErrorCode, Option<String>, String) {
    let e = f.run_once(request, false, 2).await.expect_err("the job must be refused");
    let written: Vec<_> = std::fs::read_dir(f.out.path()).unwrap().collect();
    assert!(
        written.is_empty() || std::fs::read_dir(f.out.path().join("runs")).map(|d| d.count() == 0).unwrap_or(true),
        "a refused job wrote something"
    );
    (e.code, e.field, e.message)
}

#[tokio::test]
async fn untraceable_key_names_the_columns_to_select() {
    let f = fixture();
    let (code, field, message) =
        refused(&f, job("SELECT i.invoice_id FROM invoices i JOIN payments p ON i.ref = p.ref", sources())).await;
    assert_eq!(code, ErrorCode::UntraceableKey);
    assert_eq!(field.as_deref(), Some("sources[1].primary_key"));
    assert!(message.contains("payments.payment_id"), "{message}");
    // A cast breaks the trail on purpose.
    let (code, ..) = refused(
        &f,
        job("SELECT i.invoice_id, CAST(p.payment_id AS VARCHAR) AS pid FROM invoices i JOIN payments p ON i.ref = p.ref", sources()),
    )
    .await;
    assert_eq!(code, ErrorCode::UntraceableKey);
}

#[tokio::test]
async fn duplicate_output_columns_are_named() {
    let f = fixture();
    let (code, _, message) =
        refused(&f, job("SELECT * FROM invoices i JOIN payments p ON i.ref = p.ref", sources())).await;
    assert_eq!(code, ErrorCode::DuplicateOutputColumn);
    assert!(message.contains("ref (i.ref, p.ref)"), "{message}");
    assert!(message.contains("amount"), "{message}");
}

#[tokio::test]
async fn statements_other_than_one_query_are_forbidden() {
    let f = fixture();
    for sql in [
        "DROP TABLE invoices",
        "DELETE FROM invoices",
        "INSERT INTO invoices VALUES ('x', 'y', 1, '2026-01-01')",
        "COPY invoices TO '/tmp/x.csv'",
        "SET datafusion.execution.batch_size = 1",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "SELECT 1; SELECT 2",
        "EXPLAIN SELECT 1",
    ] {
        let (code, field, _) = refused(&f, job(sql, sources())).await;
        assert_eq!(code, ErrorCode::ForbiddenStatement, "{sql}");
        assert_eq!(field.as_deref(), Some("match_sql"));
    }
}

#[tokio::test]
async fn syntax_errors_unknown_tables_and_columns_have_their_codes() {
    let f = fixture();
    assert_eq!(refused(&f, job("SELEC invoice_id FROM invoices", sources())).await.0, ErrorCode::InvalidSql);
    assert_eq!(refused(&f, job("SELECT x.a FROM ledger x", sources())).await.0, ErrorCode::UnknownTable);
    let (code, _, message) = refused(&f, job("SELECT i.nope, i.invoice_id FROM invoices i", sources())).await;
    assert_eq!(code, ErrorCode::UnknownColumn);
    assert!(message.contains("nope"), "{message}");
    assert_eq!(
        refused(&f, job("SELECT tolerance_match(i.ref, i.ref, 1) AS t, i.invoice_id FROM invoices i", sources()))
            .await
            .0,
        ErrorCode::InvalidSql
    );
}

#[tokio::test]
async fn key_columns_must_exist() {
    let f = fixture();
    let mut s = sources();
    s[0]["primary_key"] = json!(["invoice_no"]);
    let (code, field, _) = refused(&f, job(OK_SQL, s)).await;
    assert_eq!((code, field.as_deref()), (ErrorCode::UnknownColumn, Some("sources[0].primary_key[0]")));
}

#[tokio::test]
async fn files_outside_the_root_and_missing_files_are_refused() {
    let f = fixture();
    let outside = tempfile::NamedTempFile::new().unwrap();
    for (uri, want) in [
        ("../etc/passwd", ErrorCode::SourceOutsideRoot),
        (outside.path().to_str().unwrap(), ErrorCode::SourceOutsideRoot),
        ("missing.csv", ErrorCode::SourceNotFound),
        ("s3://bucket/x.csv", ErrorCode::UnsupportedSource),
    ] {
        let mut s = sources();
        s[1]["uri"] = json!(uri);
        let (code, field, _) = refused(&f, job(OK_SQL, s)).await;
        assert_eq!((code, field.as_deref()), (want, Some("sources[1].uri")), "{uri}");
    }
    // A symlink inside the root that points outside it is refused too.
    std::os::unix::fs::symlink(outside.path(), f.data.path().join("link.csv")).unwrap();
    let mut s = sources();
    s[1]["uri"] = json!("link.csv");
    assert_eq!(refused(&f, job(OK_SQL, s)).await.0, ErrorCode::SourceOutsideRoot);
}

#[tokio::test]
async fn filters_that_do_not_fit_their_column_are_refused() {
    let f = fixture();
    for (filter, want_field) in [
        (json!({"column": "amount", "op": "eq", "value": 10.005}), "sources[0].filters[0].value"),
        (
            json!({"column": "issued", "op": "between", "value": ["2026-01-01", "soon"]}),
            "sources[0].filters[0].value[1]",
        ),
        (json!({"column": "ref", "op": "gt", "value": 5}), "sources[0].filters[0].value"),
        (json!({"column": "amount", "op": "like", "value": "1%"}), "sources[0].filters[0]"),
        (json!({"column": "amount", "op": "between", "value": [1]}), "sources[0].filters[0].value"),
    ] {
        let mut s = sources();
        s[0]["filters"] = json!([filter]);
        let (code, field, _) = refused(&f, job(OK_SQL, s)).await;
        assert_eq!((code, field.as_deref()), (ErrorCode::InvalidFilter, Some(want_field)), "{filter}");
    }
    let mut s = sources();
    s[0]["filters"] = json!([{"column": "nope", "op": "is_null"}]);
    assert_eq!(refused(&f, job(OK_SQL, s)).await.0, ErrorCode::UnknownColumn);
}

#[tokio::test]
async fn output_paths_escaping_the_root_or_existing_are_refused() {
    let f = fixture();
    let mut r = job(OK_SQL, sources());
    r["output_path"] = json!("../elsewhere");
    assert_eq!(refused(&f, r).await.0, ErrorCode::OutputOutsideRoot);
    let mut r = job(OK_SQL, sources());
    r["output_path"] = json!("/tmp/kalla-escape");
    assert_eq!(refused(&f, r).await.0, ErrorCode::OutputOutsideRoot);

    std::fs::create_dir_all(f.out.path().join("taken")).unwrap();
    std::fs::write(f.out.path().join("taken/matched.parquet"), b"old").unwrap();
    let mut r = job(OK_SQL, sources());
    r["output_path"] = json!("taken");
    let e = f.run_once(r, false, 2).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::OutputExists);
    assert_eq!(std::fs::read(f.out.path().join("taken/matched.parquet")).unwrap(), b"old");
}

#[tokio::test]
async fn reserved_names_are_refused() {
    let f = fixture();
    let (code, ..) = refused(&f, job("SELECT invoice_id FROM __kalla_source_invoices", sources())).await;
    assert_eq!(code, ErrorCode::InvalidSql);
}

/// The anti join and the checks add columns named `__kalla…` beside a source's own; a source with
/// such a column would fail after the match, as `internal`.
#[tokio::test]
async fn a_source_column_named_like_kallads_own_is_refused_before_the_job_runs() {
    let f = fixture();
    f.file("odd.csv", "invoice_id,__kalla_k0\nI1,x\n");
    let sources = json!([{"alias": "odd", "uri": "odd.csv", "primary_key": ["invoice_id"]}]);
    let (code, field, message) = refused(&f, job("SELECT invoice_id FROM odd", sources)).await;
    assert_eq!((code, field.as_deref()), (ErrorCode::UnsupportedSource, Some("sources[0].uri")));
    assert_eq!(
        message,
        "source odd: column \"__kalla_k0\" starts with __kalla, which is reserved for kallad; rename it in the \
         source (a Postgres table can be read through a view that renames it)"
    );
}

/// Kalla's strict CSV conversion takes, as an argument, the files to re-read when a value fails,
/// and names the bad value in its error: called from `match_sql`, it would read any file on the
/// machine back to the caller. Its name (and the decimal one's) is reserved, so no query reaches it.
#[tokio::test]
async fn kallas_internal_conversions_cannot_be_called_from_match_sql() {
    let f = fixture();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "topsecret-line\n").unwrap();
    let context = json!({
        "source": "s", "column": "c", "index": 0,
        "files": [{"path": secret.path().to_string_lossy(), "shown": "s"}],
        "delimiter": 44, "quote": 34, "escape": null, "has_header": false, "null_value": null,
    })
    .to_string();
    for function in ["kalla_inferred", "__kalla_inferred", "__KALLA_INFERRED", "\"__kalla_inferred\""] {
        let sql = format!("{OK_SQL} WHERE {function}('x', 'bigint', '{context}') = 1");
        let (code, field, message) = refused(&f, job(&sql, sources())).await;
        assert_eq!((code, field.as_deref()), (ErrorCode::InvalidSql, Some("match_sql")), "{function}: {message}");
        assert!(!message.contains("topsecret"), "{message}");
    }
    for function in ["kalla_decimal", "__kalla_decimal"] {
        let sql = format!("{OK_SQL} WHERE {function}(i.ref, 12, 2, 'x') = 1");
        let (code, ..) = refused(&f, job(&sql, sources())).await;
        assert_eq!(code, ErrorCode::InvalidSql, "{function}");
    }
}

#[tokio::test]
async fn quoted_numbers_a_decimal_column_would_round_are_refused() {
    // DataFusion casts the text to the column's decimal(38,2): '10.005' would become 10.01 and
    // match I1's 10.00 nowhere but a payment of 10.01 — silently.
    let f = fixture();
    for cond in
        ["i.amount = '10.005'", "i.amount > '10.005'", "i.amount IN ('20.00', '10.005')", "'10.005' <= p.amount"]
    {
        let (code, field, message) = refused(&f, job(&format!("{OK_SQL} WHERE {cond}"), sources())).await;
        assert_eq!((code, field.as_deref()), (ErrorCode::InvalidSql, Some("match_sql")), "{cond}");
        assert!(message.contains("\"10.005\"") && message.contains("without quotes"), "{message}");
    }
    // Text the column holds exactly, and unquoted numbers, are compared exactly.
    for (cond, matched) in [
        ("i.amount = '10.00'", 1),
        ("i.amount = '10.000'", 1),
        ("i.amount = 10.005", 0),
        ("i.amount > 10.005", 0),
        ("i.amount < 10.005", 1),
    ] {
        let o = f.run_once(job(&format!("{OK_SQL} WHERE {cond}"), sources()), false, 2).await.unwrap();
        assert_eq!(o.counts.matched, matched, "{cond}");
    }
}

#[tokio::test]
async fn right_and_full_joins_using_a_shared_column_are_refused() {
    let f = fixture();
    for sql in [
        "SELECT i.invoice_id, p.payment_id FROM invoices i FULL JOIN payments p USING (ref)",
        "SELECT ref, i.invoice_id, p.payment_id FROM invoices i RIGHT JOIN payments p USING (ref)",
        "SELECT i.invoice_id, p.payment_id FROM (SELECT invoice_id, ref FROM invoices) i NATURAL FULL JOIN \
         (SELECT payment_id, ref FROM payments) p",
    ] {
        let (code, field, message) = refused(&f, job(sql, sources())).await;
        assert_eq!((code, field.as_deref()), (ErrorCode::InvalidSql, Some("match_sql")), "{sql}");
        assert!(message.contains("USING") && message.contains("COALESCE"), "{message}");
    }
    // USING in inner and left joins keeps the left value, which is the right one there.
    for (sql, matched) in [
        ("SELECT ref, i.invoice_id, p.payment_id FROM invoices i JOIN payments p USING (ref)", 1),
        ("SELECT ref, i.invoice_id, p.payment_id FROM invoices i LEFT JOIN payments p USING (ref)", 2),
    ] {
        let o = f.run_once(job(sql, sources()), false, 2).await.unwrap();
        assert_eq!(o.counts.matched, matched, "{sql}");
    }
}

#[tokio::test]
async fn an_interval_output_column_is_refused_before_the_job_runs() {
    // Parquet cannot hold Arrow's month-day-nano interval: the writer would fail after the match.
    let f = fixture();
    let sql =
        "SELECT i.invoice_id, p.payment_id, INTERVAL '1 hour' AS gap FROM invoices i JOIN payments p ON i.ref = p.ref";
    let (code, field, message) = refused(&f, job(sql, sources())).await;
    assert_eq!((code, field.as_deref()), (ErrorCode::InvalidSql, Some("match_sql")));
    assert!(message.contains("\"gap\"") && message.contains("interval"), "{message}");
}
