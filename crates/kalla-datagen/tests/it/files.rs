//! The files' formats: CSV conventions, the job request, the exact match_sql of each shape.

use kalla_datagen::{Format, Shape};

use crate::support::generate;

#[test]
fn csv_has_a_header_plain_decimals_iso_dates_and_utc_timestamps() {
    let (dir, truth) = generate(Shape::ManyToMany, 1_000, None, 4, &[Format::Csv, Format::Parquet]);
    let csv = std::fs::read_to_string(dir.path().join("invoices.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("invoice_id,customer,amount,currency,invoice_date,reference,created_at,customer_id,period")
    );
    let first: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(first[0], "1");
    assert!(first[1].starts_with("customer_"));
    let (units, cents) = first[2].split_once('.').unwrap();
    assert!(units.parse::<u64>().is_ok() && cents.len() == 2 && cents.parse::<u8>().is_ok(), "{}", first[2]);
    assert!(["EUR", "USD", "GBP"].contains(&first[3]));
    assert!(first[4].len() == 10 && first[4].starts_with("2026-"), "{}", first[4]);
    assert!(first[5].starts_with("INV-"));
    assert!(first[6].len() == 20 && first[6].starts_with(first[4]) && first[6].ends_with('Z'), "{}", first[6]);
    assert!(first[8].len() == 7 && first[8].starts_with("2026-"), "{}", first[8]);
    assert_eq!(csv.lines().count() as u64, truth.rows.invoices + 1);
    let payments = std::fs::read_to_string(dir.path().join("payments.csv")).unwrap();
    assert_eq!(payments.lines().count() as u64, truth.rows.payments + 1);
}

#[test]
fn job_json_is_a_job_request_for_the_written_files() {
    let (dir, _) = generate(Shape::Split, 100, None, 4, &[Format::Parquet, Format::Csv]);
    let job: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("job.json")).unwrap()).unwrap();
    assert_eq!(
        job,
        serde_json::json!({
            "run_id": "00000000-0000-4000-8000-000000000000",
            "match_sql": Shape::Split.match_sql(),
            "sources": [
                {"alias": "invoices", "uri": "invoices.parquet", "primary_key": ["invoice_id"]},
                {"alias": "payments", "uri": "payments.parquet", "primary_key": ["payment_id"]},
            ],
            "output_path": "out",
        })
    );
    let csv: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("job-csv.json")).unwrap()).unwrap();
    assert_eq!(csv["sources"][1]["uri"], "payments.csv");
    assert_eq!(csv["sources"][1]["schema"]["amount"], "decimal(12,2)");
    assert_eq!(csv["sources"][1]["schema"]["received_at"], "timestamptz");
}

#[test]
fn match_sql_is_exactly_the_benchmark_query_of_each_shape() {
    assert_eq!(
        Shape::OneToOne.match_sql(),
        "SELECT i.invoice_id, p.payment_id, i.amount, p.amount AS paid FROM invoices i JOIN payments p ON i.reference = p.reference_number AND tolerance_match_pct(i.amount, p.amount, 0.01)"
    );
    assert_eq!(
        Shape::Split.match_sql(),
        "SELECT i.invoice_id, array_agg(p.payment_id) AS payment_ids FROM invoices i JOIN payments p ON i.reference = p.reference_number GROUP BY i.invoice_id, i.amount HAVING sum(p.amount) = i.amount"
    );
    assert_eq!(
        Shape::Batch.match_sql(),
        "SELECT p.payment_id, array_agg(i.invoice_id) AS invoice_ids FROM payments p JOIN invoices i ON i.reference = p.reference_number GROUP BY p.payment_id, p.amount HAVING sum(i.amount) = p.amount"
    );
    assert_eq!(
        Shape::ManyToMany.match_sql(),
        "WITH i AS (SELECT customer_id, period, sum(amount) AS total, array_agg(invoice_id) AS invoice_ids FROM invoices GROUP BY customer_id, period), p AS (SELECT customer_id, period, sum(amount) AS total, array_agg(payment_id) AS payment_ids FROM payments GROUP BY customer_id, period) SELECT i.customer_id, i.period, i.invoice_ids, p.payment_ids FROM i JOIN p ON i.customer_id = p.customer_id AND i.period = p.period AND i.total = p.total"
    );
}
