//! Rows read: every pass over every source is counted, outputs read back are not.

use crate::harness::{Fixture, job};
use datafusion::arrow::array::{Decimal128Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use kalla_core::progress::{RUNNING_PROGRESS_CAP, ReadCounts};
use serde_json::json;
use std::sync::Arc;

const INVOICES_CSV: &str = "invoice_id,ref,amount\nI1,A,10.00\nI2,B,20.00\nI3,C,30.00\nI4,D,40.00\n";

fn payments() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("payment_id", DataType::Utf8, true),
        Field::new("ref", DataType::Utf8, true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["P1", "P2", "P9"])),
            Arc::new(StringArray::from(vec!["A", "B", "Z"])),
            Arc::new(Decimal128Array::from(vec![1000, 2000, 5]).with_precision_and_scale(12, 2).unwrap()),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn every_pass_over_a_source_counts_its_rows_and_outputs_do_not() {
    let f = Fixture::new();
    let csv = f.file("invoices.csv", INVOICES_CSV);
    let parquet = f.parquet("payments.parquet", &payments());
    let request = job(
        "SELECT i.invoice_id, p.payment_id FROM invoices i JOIN payments p ON i.ref = p.ref",
        json!([
            {"alias": "invoices", "uri": "invoices.csv", "primary_key": ["invoice_id"], "schema": {"amount": "decimal(12,2)"}},
            {"alias": "payments", "uri": "payments.parquet", "primary_key": ["payment_id"]}
        ]),
    );
    for (roundtrip, partitions) in [(false, 1), (true, 3)] {
        let mut request = request.clone();
        request["run_id"] = json!(uuid::Uuid::new_v4().to_string());
        request["output_path"] = json!(format!("out-{partitions}"));
        let outcome = f.run_once(request, roundtrip, partitions).await.unwrap();
        assert_eq!(outcome.counts.matched, 2);
        // Each keyed source is read three times (match_sql, anti join, checks); matched.parquet
        // and the unmatched files read back for keys and checks are outputs, not sources.
        let csv_size = std::fs::metadata(&csv).unwrap().len();
        assert_eq!(outcome.reads["csv"], ReadCounts { rows: 12, bytes: 3 * csv_size }, "partitions {partitions}");
        assert_eq!(outcome.reads["parquet"].rows, 9, "partitions {partitions}");
        let parquet_size = std::fs::metadata(&parquet).unwrap().len();
        assert!(outcome.reads["parquet"].bytes > 0 && outcome.reads["parquet"].bytes <= 3 * parquet_size);
        assert_eq!(outcome.reads.len(), 2);
        // Everything expected was read; a running job still never claims more than the cap.
        assert_eq!(outcome.progress.rows_read, 21);
        assert_eq!(outcome.progress.fraction, RUNNING_PROGRESS_CAP);
    }
}
