//! Reconciliation scenarios on real files. Expected values are written out by construction of
//! the data (each row's fate is chosen when it is written), never computed by the engine.

use crate::harness::{Fixture, csv_sources, job, keys, row_count, set, tuples};
use serde_json::json;

const INVOICES: &str = "\
invoice_id,reference,amount,customer
I1,R1,100.00,acme
I2,R2,250.50,acme
I3,R3,75.00,globex
I4,R4,1000.00,globex
I5,R5,1.10,initech
I6,R6,42.00,initech
";

const PAYMENTS: &str = "\
payment_id,reference_number,amount,payer
P1,R1,100.00,acme
P2,R2,250.50,acme
P3,R3,75.01,globex
P4,R4,990.00,globex
P5,R5,1.00,initech
P9,R9,5.00,nobody
";

fn sources() -> serde_json::Value {
    json!([
        {"alias": "invoices", "uri": "invoices.csv", "primary_key": ["invoice_id"], "schema": {"amount": "decimal(12,2)"}},
        {"alias": "payments", "uri": "payments.csv", "primary_key": ["payment_id"], "schema": {"amount": "decimal(12,2)"}}
    ])
}

fn fixture() -> Fixture {
    let f = Fixture::new();
    f.file("invoices.csv", INVOICES);
    f.file("payments.csv", PAYMENTS);
    f
}

#[tokio::test]
async fn exact_one_to_one_matches_and_leaves_the_rest_unmatched() {
    let f = fixture();
    let o = f
        .run(job(
            "SELECT i.invoice_id, p.payment_id, i.amount FROM invoices i JOIN payments p \
             ON i.reference = p.reference_number AND i.amount = p.amount",
            sources(),
        ))
        .await
        .unwrap();
    assert_eq!(o.counts.matched, 2);
    assert_eq!(tuples(&o.dir.join("matched.parquet"), &["invoice_id", "payment_id"]), set(&["I1/P1", "I2/P2"]));
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["I3", "I4", "I5", "I6"]));
    assert_eq!(keys(&o.dir.join("unmatched_payments.parquet"), "payment_id"), set(&["P3", "P4", "P5", "P9"]));
    assert_eq!(o.counts.total["invoices"], 6);
    assert_eq!(o.counts.total["payments"], 6);
    assert_eq!(o.counts.unmatched["invoices"], Some(4));
    assert_eq!(o.counts.unmatched["payments"], Some(4));
    let checks = &o.summary["audit"]["checks"]["invoices"];
    assert_eq!(checks["total_keys"], json!(6));
    assert_eq!(checks["matched_keys"], json!(2));
    assert_eq!(checks["unmatched_keys"], json!(4));
    assert_eq!(checks["keys_balance"], json!(true));
    // RFC 3339 UTC times sort as text: submitted ≤ started ≤ finished.
    let t = |k: &str| o.summary[k].as_str().unwrap_or_else(|| panic!("{k} missing")).to_string();
    assert!(t("submitted_at") <= t("started_at") && t("started_at") <= t("finished_at"), "{}", o.summary);
    assert_eq!(
        o.summary["audit"]["match_sql"],
        json!(
            "SELECT i.invoice_id, p.payment_id, i.amount FROM invoices i JOIN payments p \
             ON i.reference = p.reference_number AND i.amount = p.amount"
        )
    );
}

#[tokio::test]
async fn percent_tolerance_includes_values_exactly_on_the_boundary() {
    // I3/P3: |75.00-75.01| = 0.01 ≤ 1% of 75.01 → match. I4/P4: |1000-990| = 10 = 1% of 1000 →
    // on the boundary, match. I5/P5: |1.10-1.00| = 0.10 > 1% of 1.10 → no match.
    let f = fixture();
    let o = f
        .run(job(
            "SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p \
             ON i.reference = p.reference_number AND tolerance_match_pct(i.amount, p.amount, 0.01)",
            sources(),
        ))
        .await
        .unwrap();
    assert_eq!(
        tuples(&o.dir.join("matched.parquet"), &["invoice_id", "payment_id"]),
        set(&["I1/P1", "I2/P2", "I3/P3", "I4/P4"])
    );
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["I5", "I6"]));
    assert_eq!(keys(&o.dir.join("unmatched_payments.parquet"), "payment_id"), set(&["P5", "P9"]));
}

#[tokio::test]
async fn absolute_tolerance_is_exact_where_floats_are_not() {
    // In binary floating point 1.10 - 1.00 > 0.10; in exact decimals it is equal, so I5/P5 match
    // with a tolerance of 0.10 and not with 0.09.
    let f = fixture();
    let run = |tol: &str| {
        job(
            &format!(
                "SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p \
                 ON i.reference = p.reference_number AND tolerance_match(i.amount, p.amount, {tol}) \
                 WHERE i.invoice_id = 'I5'"
            ),
            sources(),
        )
    };
    let o = f.run(run("0.10")).await.unwrap();
    assert_eq!(tuples(&o.dir.join("matched.parquet"), &["invoice_id", "payment_id"]), set(&["I5/P5"]));
    let o = f.run(run("0.09")).await.unwrap();
    assert_eq!(o.counts.matched, 0);
    assert_eq!(o.counts.unmatched["invoices"], Some(6));
}

#[tokio::test]
async fn split_payments_match_one_invoice_through_array_agg_and_having() {
    let f = Fixture::new();
    f.file("invoices.csv", "invoice_id,reference,amount\nI1,R1,300.00\nI2,R2,500.00\nI3,R3,100.00\n");
    f.file(
        "payments.csv",
        "payment_id,reference_number,amount\nP1,R1,100.00\nP2,R1,200.00\nP3,R2,250.00\nP4,R2,200.00\nP5,R3,100.00\nP6,R9,50.00\n",
    );
    let o = f
        .run(job(
            "SELECT i.invoice_id, array_agg(p.payment_id) AS payment_ids, sum(p.amount) AS paid \
             FROM invoices i JOIN payments p ON i.reference = p.reference_number \
             GROUP BY i.invoice_id, i.amount HAVING sum(p.amount) = i.amount",
            sources(),
        ))
        .await
        .unwrap();
    assert_eq!(o.counts.matched, 2);
    assert_eq!(keys(&o.dir.join("matched.parquet"), "payment_ids"), set(&["P1", "P2", "P5"]));
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["I2"]));
    assert_eq!(keys(&o.dir.join("unmatched_payments.parquet"), "payment_id"), set(&["P3", "P4", "P6"]));
    assert_eq!(o.counts.unmatched["payments"], Some(3));
}

#[tokio::test]
async fn batch_payment_matches_many_invoices() {
    let f = Fixture::new();
    f.file(
        "invoices.csv",
        "invoice_id,batch,amount\nI1,B1,100.00\nI2,B1,200.00\nI3,B1,300.00\nI4,B2,200.00\nI5,B2,200.00\nI6,B7,10.00\n",
    );
    f.file("payments.csv", "payment_id,batch,amount\nQ1,B1,600.00\nQ2,B2,500.00\n");
    let o = f
        .run(job(
            "SELECT p.payment_id, array_agg(i.invoice_id) AS invoice_ids FROM payments p \
             JOIN invoices i ON i.batch = p.batch GROUP BY p.payment_id, p.amount HAVING sum(i.amount) = p.amount",
            sources(),
        ))
        .await
        .unwrap();
    assert_eq!(o.counts.matched, 1);
    assert_eq!(keys(&o.dir.join("matched.parquet"), "invoice_ids"), set(&["I1", "I2", "I3"]));
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["I4", "I5", "I6"]));
    assert_eq!(keys(&o.dir.join("unmatched_payments.parquet"), "payment_id"), set(&["Q2"]));
}

#[tokio::test]
async fn many_to_many_groups_match_on_customer_totals() {
    let f = Fixture::new();
    f.file("invoices.csv", "invoice_id,customer,amount\nI1,A,100.00\nI2,A,200.00\nI3,B,100.00\nI4,C,50.00\n");
    f.file("payments.csv", "payment_id,payer,amount\nP1,A,150.00\nP2,A,150.00\nP3,B,90.00\n");
    let o = f
        .run(job(
            "WITH inv AS (SELECT customer, array_agg(invoice_id) AS invoice_ids, sum(amount) AS total FROM invoices GROUP BY customer), \
             pay AS (SELECT payer, array_agg(payment_id) AS payment_ids, sum(amount) AS total FROM payments GROUP BY payer) \
             SELECT inv.customer, inv.invoice_ids, pay.payment_ids FROM inv JOIN pay ON inv.customer = pay.payer AND inv.total = pay.total",
            sources(),
        ))
        .await
        .unwrap();
    assert_eq!(o.counts.matched, 1);
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["I3", "I4"]));
    assert_eq!(keys(&o.dir.join("unmatched_payments.parquet"), "payment_id"), set(&["P3"]));
}

const COMPOSITE_INVOICES: &str =
    "company,invoice_no,ref,amount\nC1,1,X,10.00\nC1,2,Y,20.00\nC2,1,Y,30.00\nC2,2,Z,40.00\n";
const COMPOSITE_PAYMENTS: &str = "bank,payment_no,ref,amount\nBK1,1,X,10.00\nBK2,1,Y,30.00\nBK1,2,Q,99.00\n";

fn composite_sources() -> serde_json::Value {
    json!([
        {"alias": "invoices", "uri": "invoices.csv", "primary_key": ["company", "invoice_no"]},
        {"alias": "payments", "uri": "payments.csv", "primary_key": ["bank", "payment_no"]}
    ])
}

#[tokio::test]
async fn unmatched_rows_follow_composite_keys() {
    // invoice_no 1 exists for C1 and C2: only the (company, invoice_no) pair identifies a row.
    let f = Fixture::new();
    f.file("invoices.csv", COMPOSITE_INVOICES);
    f.file("payments.csv", COMPOSITE_PAYMENTS);
    let o = f
        .run(job(
            "SELECT i.company, i.invoice_no, p.bank, p.payment_no FROM invoices i JOIN payments p \
             ON i.ref = p.ref AND i.amount = p.amount",
            composite_sources(),
        ))
        .await
        .unwrap();
    assert_eq!(
        tuples(&o.dir.join("matched.parquet"), &["company", "invoice_no", "bank", "payment_no"]),
        set(&["C1/1/BK1/1", "C2/1/BK2/1"])
    );
    assert_eq!(tuples(&o.dir.join("unmatched_invoices.parquet"), &["company", "invoice_no"]), set(&["C1/2", "C2/2"]));
    assert_eq!(tuples(&o.dir.join("unmatched_payments.parquet"), &["bank", "payment_no"]), set(&["BK1/2"]));
}

#[tokio::test]
async fn composite_keys_travel_as_struct_lists_and_as_parallel_lists() {
    let f = Fixture::new();
    f.file("invoices.csv", COMPOSITE_INVOICES);
    f.file("payments.csv", "bank,payment_no,ref,amount\nBK1,1,Y,5.00\nBK2,1,Y,15.00\nBK1,2,Z,40.00\nBK3,9,W,1.00\n");
    // C1/2 (Y, 20) is paid by BK1/1 + BK2/1; C2/2 (Z, 40) by BK1/2; C1/1 and C2/1 are unpaid.
    let struct_sql = "SELECT i.company, i.invoice_no, array_agg(struct(p.bank, p.payment_no)) AS payments \
        FROM invoices i JOIN payments p ON i.ref = p.ref GROUP BY i.company, i.invoice_no, i.amount HAVING sum(p.amount) = i.amount";
    let lists_sql = "SELECT i.company, i.invoice_no, array_agg(p.bank) AS banks, array_agg(p.payment_no) AS numbers \
        FROM invoices i JOIN payments p ON i.ref = p.ref GROUP BY i.company, i.invoice_no, i.amount HAVING sum(p.amount) = i.amount";
    for sql in [struct_sql, lists_sql] {
        let o = f.run(job(sql, composite_sources())).await.unwrap();
        assert_eq!(o.counts.matched, 2, "{sql}");
        assert_eq!(
            tuples(&o.dir.join("unmatched_invoices.parquet"), &["company", "invoice_no"]),
            set(&["C1/1", "C2/1"])
        );
        assert_eq!(
            tuples(&o.dir.join("unmatched_payments.parquet"), &["bank", "payment_no"]),
            set(&["BK3/9"]),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn keys_named_id_on_both_sides_are_told_apart_by_their_aliases() {
    let f = Fixture::new();
    f.file("invoices.csv", "id,ref\n1,A\n2,B\n3,C\n");
    f.file("payments.csv", "id,ref\n1,B\n2,C\n3,D\n");
    let sources = csv_sources(&["id"], &["id"]);
    let o = f
        .run(job(
            "SELECT i.id AS invoice_id, p.id AS payment_id FROM invoices i JOIN payments p ON i.ref = p.ref",
            sources,
        ))
        .await
        .unwrap();
    assert_eq!(tuples(&o.dir.join("matched.parquet"), &["invoice_id", "payment_id"]), set(&["2/1", "3/2"]));
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "id"), set(&["1"]));
    assert_eq!(keys(&o.dir.join("unmatched_payments.parquet"), "id"), set(&["3"]));
}

#[tokio::test]
async fn keys_are_traced_through_ctes_and_subqueries() {
    let f = fixture();
    let o = f
        .run(job(
            "WITH big AS (SELECT invoice_id AS inv, reference FROM invoices WHERE amount >= 100), \
             pays AS (SELECT x.pid, x.reference_number FROM (SELECT payment_id AS pid, reference_number FROM payments) x) \
             SELECT DISTINCT b.inv, q.pid FROM big b JOIN pays q ON b.reference = q.reference_number",
            sources(),
        ))
        .await
        .unwrap();
    assert_eq!(tuples(&o.dir.join("matched.parquet"), &["inv", "pid"]), set(&["I1/P1", "I2/P2", "I4/P4"]));
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["I3", "I5", "I6"]));
    assert_eq!(keys(&o.dir.join("unmatched_payments.parquet"), "payment_id"), set(&["P3", "P5", "P9"]));
}

#[tokio::test]
async fn left_join_nulls_mark_nothing_matched() {
    let f = fixture();
    let o = f
        .run(job(
            "SELECT i.invoice_id, p.payment_id FROM invoices i LEFT JOIN payments p \
             ON i.reference = p.reference_number AND i.amount = p.amount",
            sources(),
        ))
        .await
        .unwrap();
    // Every invoice is in the output, so none is unmatched; the NULL payment ids mark nothing.
    assert_eq!(o.counts.matched, 6);
    assert_eq!(o.counts.unmatched["invoices"], Some(0));
    assert_eq!(keys(&o.dir.join("unmatched_payments.parquet"), "payment_id"), set(&["P3", "P4", "P5", "P9"]));
}

#[tokio::test]
async fn union_of_branches_that_all_carry_the_key_is_traced() {
    let f = fixture();
    let o = f
        .run(job(
            "SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.reference = p.reference_number AND i.amount = p.amount \
             UNION \
             SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.reference = p.reference_number WHERE i.invoice_id = 'I3'",
            sources(),
        ))
        .await
        .unwrap();
    assert_eq!(
        tuples(&o.dir.join("matched.parquet"), &["invoice_id", "payment_id"]),
        set(&["I1/P1", "I2/P2", "I3/P3"])
    );
    assert_eq!(o.counts.unmatched["payments"], Some(3));
}

#[tokio::test]
async fn key_only_select_is_enough() {
    let f = fixture();
    let o = f
        .run(job(
            "SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.reference = p.reference_number",
            sources(),
        ))
        .await
        .unwrap();
    assert_eq!(o.counts.matched, 5);
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["I6"]));
    assert_eq!(keys(&o.dir.join("unmatched_payments.parquet"), "payment_id"), set(&["P9"]));
}

#[tokio::test]
async fn filters_restrict_sources_before_matching_and_in_totals() {
    let f = fixture();
    let mut sources = sources();
    sources[0]["filters"] = json!([{"column": "amount", "op": "gte", "value": 75.00}, {"column": "customer", "op": "in", "value": ["acme", "globex"]}]);
    sources[1]["filters"] = json!([{"column": "payer", "op": "neq", "value": "nobody"}]);
    let o = f
        .run(job(
            "SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.reference = p.reference_number",
            sources,
        ))
        .await
        .unwrap();
    // Invoices left by the filters: I1, I2, I3, I4; payments: P1..P5.
    assert_eq!(o.counts.total["invoices"], 4);
    assert_eq!(o.counts.total["payments"], 5);
    assert_eq!(o.counts.matched, 4);
    assert_eq!(o.counts.unmatched["invoices"], Some(0));
    assert_eq!(keys(&o.dir.join("unmatched_payments.parquet"), "payment_id"), set(&["P5"]));
    let audit = &o.summary["audit"]["sources"][1];
    assert_eq!(audit["uri"], "payments.csv");
    assert_eq!(audit["filters"], json!([{"column": "payer", "op": "neq", "value": "nobody"}]));
    assert_eq!(audit["primary_key"], json!(["payment_id"]));
}

#[tokio::test]
async fn a_source_without_key_gets_null_unmatched_count_and_path() {
    let f = fixture();
    let mut sources = sources();
    sources[1].as_object_mut().unwrap().remove("primary_key");
    let o = f
        .run(job("SELECT i.invoice_id FROM invoices i JOIN payments p ON i.reference = p.reference_number", sources))
        .await
        .unwrap();
    assert_eq!(o.counts.unmatched["payments"], None);
    assert_eq!(o.counts.total["payments"], 6);
    assert_eq!(o.summary["output_paths"]["unmatched"]["payments"], json!(null));
    assert_eq!(o.summary["counts"]["unmatched"]["payments"], json!(null));
    assert!(!o.dir.join("unmatched_payments.parquet").exists());
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["I6"]));
}

#[tokio::test]
async fn null_source_keys_are_never_matched() {
    let f = Fixture::new();
    f.file("invoices.csv", "invoice_id,ref\nI1,A\n,B\nI3,C\n");
    f.file("payments.csv", "payment_id,ref\nP1,A\nP2,B\n");
    let sources = csv_sources(&["invoice_id"], &["payment_id"]);
    let o = f
        .run(job("SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.ref = p.ref", sources))
        .await
        .unwrap();
    // The invoice with a NULL key joined P2, but a NULL key marks nothing matched.
    assert_eq!(o.counts.matched, 2);
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["NULL", "I3"]));
    assert_eq!(o.counts.unmatched["payments"], Some(0));
}

#[tokio::test]
async fn every_count_equals_the_rows_of_its_output() {
    let f = fixture();
    let o = f
        .run(job(
            "SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.reference = p.reference_number",
            sources(),
        ))
        .await
        .unwrap();
    assert_eq!(o.counts.matched as usize, row_count(&o.dir.join("matched.parquet")));
    for alias in ["invoices", "payments"] {
        assert_eq!(
            o.counts.unmatched[alias].unwrap() as usize,
            row_count(&o.dir.join(format!("unmatched_{alias}.parquet")))
        );
    }
}

#[tokio::test]
async fn duplicate_and_multi_matched_keys_are_reported() {
    let f = Fixture::new();
    f.file("invoices.csv", "invoice_id,ref\nI1,A\nI1,B\nI2,C\n");
    f.file("payments.csv", "payment_id,ref\nP1,A\nP2,A\nP3,Z\n");
    let sources = csv_sources(&["invoice_id"], &["payment_id"]);
    let o = f
        .run(job("SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.ref = p.ref", sources))
        .await
        .unwrap();
    let inv = &o.summary["audit"]["checks"]["invoices"];
    assert_eq!(inv["duplicate_keys"], json!(1));
    assert_eq!(inv["duplicate_key_rows"], json!(2));
    assert_eq!(inv["multi_matched_keys"], json!(1));
    assert_eq!(inv["matched_keys"], json!(1));
    assert_eq!(inv["total_keys"], json!(2));
    assert_eq!(inv["unmatched_keys"], json!(1));
    assert_eq!(inv["keys_balance"], json!(true));
}

#[tokio::test]
async fn right_and_full_joins_trace_both_sides() {
    let f = fixture();
    let right = f
        .run(job(
            "SELECT i.invoice_id, p.payment_id FROM invoices i RIGHT JOIN payments p \
             ON i.reference = p.reference_number AND i.amount = p.amount",
            sources(),
        ))
        .await
        .unwrap();
    // Every payment is in the output; only I1 and I2 are paired.
    assert_eq!(right.counts.matched, 6);
    assert_eq!(right.counts.unmatched["payments"], Some(0));
    assert_eq!(keys(&right.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["I3", "I4", "I5", "I6"]));
    let full = f
        .run(job(
            "SELECT i.invoice_id, p.payment_id FROM invoices i FULL JOIN payments p \
             ON i.reference = p.reference_number AND i.amount = p.amount",
            sources(),
        ))
        .await
        .unwrap();
    // 2 pairs + 4 lone invoices + 4 lone payments; nobody is left out of the output.
    assert_eq!(full.counts.matched, 10);
    assert_eq!((full.counts.unmatched["invoices"], full.counts.unmatched["payments"]), (Some(0), Some(0)));
}

#[tokio::test]
async fn keys_pass_through_window_functions_and_group_by_on_the_key() {
    let f = fixture();
    let o = f
        .run(job(
            "SELECT i.invoice_id, p.payment_id, row_number() OVER (PARTITION BY i.customer ORDER BY i.invoice_id) AS rn \
             FROM invoices i JOIN payments p ON i.reference = p.reference_number WHERE p.amount >= 75",
            sources(),
        ))
        .await
        .unwrap();
    assert_eq!(
        tuples(&o.dir.join("matched.parquet"), &["invoice_id", "payment_id", "rn"]),
        set(&["I1/P1/1", "I2/P2/2", "I3/P3/1", "I4/P4/2"])
    );
    let mut unkeyed_payments = sources();
    unkeyed_payments[1].as_object_mut().unwrap().remove("primary_key");
    let o = f
        .run(job(
            "SELECT i.invoice_id, count(*) AS payments FROM invoices i JOIN payments p \
             ON i.reference = p.reference_number GROUP BY i.invoice_id",
            unkeyed_payments,
        ))
        .await
        .unwrap();
    assert_eq!(o.counts.matched, 5);
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["I6"]));
}

#[tokio::test]
async fn composite_keys_travel_in_named_structs() {
    let f = Fixture::new();
    f.file("invoices.csv", COMPOSITE_INVOICES);
    f.file("payments.csv", "bank,payment_no,ref,amount\nBK1,1,Y,5.00\nBK2,1,Y,15.00\nBK3,9,W,1.00\n");
    let o = f
        .run(job(
            "SELECT i.company, i.invoice_no, array_agg(named_struct('number', p.payment_no, 'bank', p.bank)) AS paid_by \
             FROM invoices i JOIN payments p ON i.ref = p.ref GROUP BY i.company, i.invoice_no, i.amount \
             HAVING sum(p.amount) = i.amount",
            composite_sources(),
        ))
        .await
        .unwrap();
    assert_eq!(o.counts.matched, 1);
    assert_eq!(tuples(&o.dir.join("unmatched_payments.parquet"), &["bank", "payment_no"]), set(&["BK3/9"]));
    assert_eq!(o.counts.unmatched["invoices"], Some(3));
}

/// The scenarios of `testdata/scenarios.json` (the scenarios above as data, shared with kallad's
/// HTTP tests): each one's counts must be the ones written out in its `expect`.
#[tokio::test]
async fn every_shared_scenario_gives_its_expected_counts() {
    use std::collections::BTreeMap;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scenarios.json");
    let scenarios: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap();
    assert!(!scenarios.is_empty(), "no scenarios in {}", path.display());
    for s in &scenarios {
        let name = s["name"].as_str().expect("every scenario has a name");
        let f = Fixture::new();
        for (file, content) in s["files"].as_object().unwrap_or_else(|| panic!("{name}: no files")) {
            f.file(file, content.as_str().unwrap());
        }
        let o = f
            .run(job(s["match_sql"].as_str().unwrap(), s["sources"].clone()))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let expect = &s["expect"];
        let total: BTreeMap<String, u64> = serde_json::from_value(expect["total"].clone()).unwrap();
        let unmatched: BTreeMap<String, Option<u64>> = serde_json::from_value(expect["unmatched"].clone()).unwrap();
        assert_eq!(o.counts.matched, expect["matched"].as_u64().unwrap(), "{name}: matched");
        assert_eq!(o.counts.total, total, "{name}: total");
        assert_eq!(o.counts.unmatched, unmatched, "{name}: unmatched");
    }
}

#[tokio::test]
async fn not_in_over_nullable_values_runs_whole_here_and_is_refused_for_executors() {
    let f = Fixture::new();
    f.file("invoices.csv", "invoice_id,ref\nI1,A\nI2,B\nI3,\n");
    f.file("payments.csv", "payment_id,ref\nP1,A\nP2,C\n");
    let mut sources = csv_sources(&["invoice_id"], &["payment_id"]);
    sources[1].as_object_mut().unwrap().remove("primary_key");
    let sql = "SELECT i.invoice_id FROM invoices i WHERE i.ref NOT IN (SELECT ref FROM payments)";
    // SQL's NOT IN: I3's NULL ref is not "not in" the list, so only I2 is selected.
    let o = f.run_once(job(sql, sources.clone()), false, 2).await.unwrap();
    assert_eq!(o.counts.matched, 1);
    assert_eq!(keys(&o.dir.join("matched.parquet"), "invoice_id"), set(&["I2"]));
    assert_eq!(keys(&o.dir.join("unmatched_invoices.parquet"), "invoice_id"), set(&["I1", "I3"]));
    // Its null-aware anti join must run in one process: not shipped to executors.
    let e = f.plan(job(sql, sources), 2).await.unwrap().distributable().await.unwrap_err();
    assert_eq!(e.code, kalla_recipe::ErrorCode::NotDistributable, "{e:?}");
    assert!(e.message.contains("NOT IN"), "{}", e.message);
}

#[tokio::test]
async fn a_self_join_takes_each_key_from_one_reference_and_every_reference_counts_as_matched() {
    // Reversals matched within one ledger: the entry (positive) and its reversal (negative) are
    // both matched. The composite key of each side comes from that side only.
    let f = Fixture::new();
    f.file("ledger.csv", "k1,k2,ref,amt\n1,x,r,5\n2,y,r,-5\n3,z,q,7\n");
    let sources = json!([{"alias": "ledger", "uri": "ledger.csv", "primary_key": ["k1", "k2"]}]);
    let o = f
        .run(job(
            "SELECT x.k1, y.k1 AS rk1, y.k2 AS rk2, x.k2 FROM ledger x JOIN ledger y \
             ON x.ref = y.ref AND x.amt = -y.amt AND x.amt > 0",
            sources,
        ))
        .await
        .unwrap();
    assert_eq!(o.counts.matched, 1);
    assert_eq!(tuples(&o.dir.join("unmatched_ledger.parquet"), &["k1", "k2"]), set(&["3/z"]));
    let checks = &o.summary["audit"]["checks"]["ledger"];
    assert_eq!(
        (&checks["total_keys"], &checks["matched_keys"], &checks["unmatched_keys"], &checks["keys_balance"]),
        (&json!(3), &json!(2), &json!(1), &json!(true))
    );
    assert_eq!(checks["multi_matched_keys"], json!(0));

    // One key column: the same, and a row pairing an entry with itself carries its key once.
    f.file("single.csv", "id,ref,amt\n1,r,5\n2,r,-5\n3,q,7\n4,s,0\n");
    let sources = json!([{"alias": "single", "uri": "single.csv", "primary_key": ["id"]}]);
    let o = f
        .run(job(
            "SELECT x.id, y.id AS reversal_id FROM single x JOIN single y ON x.ref = y.ref AND x.amt = -y.amt AND x.amt >= 0",
            sources,
        ))
        .await
        .unwrap();
    assert_eq!(o.counts.matched, 2);
    assert_eq!(keys(&o.dir.join("unmatched_single.parquet"), "id"), set(&["3"]));
    let checks = &o.summary["audit"]["checks"]["single"];
    assert_eq!((&checks["matched_keys"], &checks["multi_matched_keys"]), (&json!(3), &json!(0)));
}

#[tokio::test]
async fn a_key_repeated_in_one_matched_rows_list_is_matched_by_that_row_once() {
    let f = Fixture::new();
    f.file("invoices.csv", "invoice_id,ref\n1,r\n2,r\n3,s\n");
    f.file("payments.csv", "payment_id,bref\np1,r\np2,r\np3,s\np4,t\n");
    let sources = || {
        json!([
            {"alias": "invoices", "uri": "invoices.csv", "primary_key": ["invoice_id"]},
            {"alias": "payments", "uri": "payments.csv"}
        ])
    };
    for (sql, multi_matched) in [
        // Grouped by reference: the group r lists invoices 1 and 2 twice each (once per
        // payment), yet each is in one matched row.
        (
            "SELECT p.bref, array_agg(i.invoice_id) AS ids FROM invoices i JOIN payments p ON i.ref = p.bref \
             GROUP BY p.bref",
            0,
        ),
        // The same with the key in a list of structs that also hold another column.
        (
            "SELECT p.bref, array_agg(named_struct('id', i.invoice_id, 'pid', p.payment_id)) AS paid \
             FROM invoices i JOIN payments p ON i.ref = p.bref GROUP BY p.bref",
            0,
        ),
        // Grouped by payment: invoices 1 and 2 are each in the rows of p1 and of p2.
        (
            "SELECT p.payment_id, array_agg(i.invoice_id) AS ids FROM invoices i JOIN payments p ON i.ref = p.bref \
             GROUP BY p.payment_id",
            2,
        ),
    ] {
        let o = f.run(job(sql, sources())).await.unwrap();
        let checks = &o.summary["audit"]["checks"]["invoices"];
        assert_eq!(
            (&checks["matched_keys"], &checks["multi_matched_keys"]),
            (&json!(3), &json!(multi_matched)),
            "{sql}"
        );
        assert_eq!(row_count(&o.dir.join("unmatched_invoices.parquet")), 0, "{sql}");
    }
}

#[tokio::test]
async fn an_outer_join_on_inequalities_runs_here_and_is_refused_for_executors() {
    // A nested-loop join records per process which left rows found a partner; shipped, every
    // task would emit the unmatched ones (a cluster run gave (1, NULL) twice).
    let f = Fixture::new();
    f.file("a.csv", "id,amt\n1,5.00\n2,50.00\n");
    f.file("b/part-0.csv", "pid,bamt\n10,10.00\n11,20.00\n");
    f.file("b/part-1.csv", "pid,bamt\n12,30.00\n13,40.00\n");
    let sources = json!([
        {"alias": "a", "uri": "a.csv", "primary_key": ["id"]},
        {"alias": "b", "uri": "b", "primary_key": ["pid"]}
    ]);
    let sql = "SELECT a.id, b.pid FROM a LEFT JOIN b ON a.amt > b.bamt";
    let o = f.run_once(job(sql, sources.clone()), false, 3).await.unwrap();
    assert_eq!(
        tuples(&o.dir.join("matched.parquet"), &["id", "pid"]),
        set(&["1/NULL", "2/10", "2/11", "2/12", "2/13"])
    );
    assert_eq!(o.counts.matched, 5);
    let e = f.plan(job(sql, sources.clone()), 3).await.unwrap().distributable().await.unwrap_err();
    assert_eq!(e.code, kalla_recipe::ErrorCode::NotDistributable, "{e:?}");
    assert!(e.message.contains("nested-loop"), "{}", e.message);
    // The same outer join on an equality is a hash join, which Ballista plans correctly.
    let equi = "SELECT a.id, b.pid FROM a LEFT JOIN b ON a.id + 9 = b.pid";
    f.plan(job(equi, sources), 3).await.unwrap().distributable().await.unwrap();
}

#[tokio::test]
async fn a_window_partitioned_by_a_column_fixed_to_one_value_runs_here_and_is_refused_for_executors() {
    // The sort below the window leaves out `cat` (constant after the filter); past a shuffle the
    // executor no longer knows it and refuses the window, so the job would fail on a cluster.
    let f = Fixture::new();
    f.file("a.csv", "id,cat,amt\n0,A,0\n1,B,1\n2,A,2\n3,B,3\n4,A,4\n5,B,5\n6,A,6\n7,B,7\n");
    let sources = json!([{"alias": "a", "uri": "a.csv", "primary_key": ["id"]}]);
    let pinned = "SELECT a.id, lag(a.amt) OVER (PARTITION BY a.cat ORDER BY a.id) AS prev FROM a WHERE a.cat = 'A'";
    let o = f.run_once(job(pinned, sources.clone()), false, 3).await.unwrap();
    assert_eq!(tuples(&o.dir.join("matched.parquet"), &["id", "prev"]), set(&["0/NULL", "2/0", "4/2", "6/4"]));
    let e = f.plan(job(pinned, sources.clone()), 3).await.unwrap().distributable().await.unwrap_err();
    assert_eq!(e.code, kalla_recipe::ErrorCode::NotDistributable, "{e:?}");
    assert!(e.message.contains("PARTITION BY"), "{}", e.message);
    // Partitioned by a column that varies, the window sorts on it and ships.
    let varying = "SELECT a.id, lag(a.amt) OVER (PARTITION BY a.cat ORDER BY a.id) AS prev FROM a";
    f.plan(job(varying, sources), 3).await.unwrap().distributable().await.unwrap();
}
