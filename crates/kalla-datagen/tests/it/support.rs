//! Generating into a temporary directory and reading a table back.

use std::fs::File;
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Decimal128Type, Int64Type};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use kalla_datagen::{Format, Options, Shape, Truth};
use tempfile::TempDir;

pub fn generate(shape: Shape, invoices: u64, payments: Option<u64>, seed: u64, formats: &[Format]) -> (TempDir, Truth) {
    let dir = tempfile::tempdir().unwrap();
    let truth = generate_into(dir.path(), shape, invoices, payments, seed, formats);
    (dir, truth)
}

pub fn generate_into(
    dir: &Path,
    shape: Shape,
    invoices: u64,
    payments: Option<u64>,
    seed: u64,
    formats: &[Format],
) -> Truth {
    let options = Options { shape, invoices, payments, seed, out: dir.to_path_buf(), formats: formats.to_vec() };
    let truth = kalla_datagen::generate(&options).unwrap();
    let written: Truth = serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap();
    assert_eq!(written, truth);
    truth
}

/// The columns the match queries use, one entry per row in file order.
pub struct Ledger {
    pub ids: Vec<i64>,
    /// In cents.
    pub amounts: Vec<i64>,
    pub references: Vec<String>,
    /// `(customer_id, period)`, many-to-many only.
    pub groups: Vec<(i64, String)>,
}

impl Ledger {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Reads `DIR/<table>.parquet`; `key` and `reference` name the key and reference columns.
pub fn read(dir: &Path, table: &str, key: &str, reference: &str) -> Ledger {
    let file = File::open(dir.join(format!("{table}.parquet"))).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut ledger = Ledger { ids: vec![], amounts: vec![], references: vec![], groups: vec![] };
    for batch in reader {
        let batch = batch.unwrap();
        let ids = batch.column_by_name(key).unwrap().as_primitive::<Int64Type>();
        let amounts = batch.column_by_name("amount").unwrap().as_primitive::<Decimal128Type>();
        let references = batch.column_by_name(reference).unwrap().as_string::<i32>();
        assert_eq!(ids.null_count() + amounts.null_count() + references.null_count(), 0);
        ledger.ids.extend(ids.values().iter().copied());
        ledger.amounts.extend(amounts.values().iter().map(|v| i64::try_from(*v).unwrap()));
        ledger.references.extend(references.iter().map(|r| r.unwrap().to_string()));
        if let (Some(customers), Some(periods)) = (batch.column_by_name("customer_id"), batch.column_by_name("period"))
        {
            let customers = customers.as_primitive::<Int64Type>();
            let periods = periods.as_string::<i32>();
            for i in 0..batch.num_rows() {
                ledger.groups.push((customers.value(i), periods.value(i).to_string()));
            }
        }
    }
    ledger
}

pub fn invoices(dir: &Path) -> Ledger {
    read(dir, "invoices", "invoice_id", "reference")
}

pub fn payments(dir: &Path) -> Ledger {
    read(dir, "payments", "payment_id", "reference_number")
}
