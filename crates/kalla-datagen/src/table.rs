//! The two tables' columns, and the writer that streams rows into Parquet (and CSV) files.
//!
//! Invoices and payments have the same column layout under different names (key, party, amount,
//! currency, date, reference, timestamp, plus `customer_id`/`period` for many-to-many), so one
//! [`Row`] type and one [`TableWriter`] serve both. Rows are buffered into 64k-row record batches;
//! the Parquet writer cuts 1M-row row groups.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::csv;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;

use crate::{Error, Format};

/// Currency codes, indexed by [`Row::currency`].
pub(crate) const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
/// Rows per record batch handed to the file writers.
pub(crate) const BATCH_ROWS: usize = 64 * 1024;
/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 1 << 20;
/// `amount`'s type: Decimal128(12, 2), values in cents.
const AMOUNT_PRECISION: u8 = 12;
const AMOUNT_SCALE: i8 = 2;

/// One of the two tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    Invoices,
    Payments,
}

impl Table {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Invoices => "invoices",
            Table::Payments => "payments",
        }
    }

    /// The primary key column.
    pub(crate) fn key(self) -> &'static str {
        self.columns()[0]
    }

    /// Column names in [`Row`] order (without the group columns).
    fn columns(self) -> [&'static str; 7] {
        match self {
            Table::Invoices => {
                ["invoice_id", "customer", "amount", "currency", "invoice_date", "reference", "created_at"]
            }
            Table::Payments => {
                ["payment_id", "payer", "amount", "currency", "paid_on", "reference_number", "received_at"]
            }
        }
    }

    /// The date and timestamp columns (for a CSV job's `schema`).
    pub(crate) fn date_column(self) -> &'static str {
        self.columns()[4]
    }

    pub(crate) fn timestamp_column(self) -> &'static str {
        self.columns()[6]
    }

    pub(crate) fn schema(self, group_columns: bool) -> SchemaRef {
        let [id, party, amount, currency, date, reference, at] = self.columns();
        let mut fields = vec![
            Field::new(id, DataType::Int64, false),
            Field::new(party, DataType::Utf8, false),
            Field::new(amount, DataType::Decimal128(AMOUNT_PRECISION, AMOUNT_SCALE), false),
            Field::new(currency, DataType::Utf8, false),
            Field::new(date, DataType::Date32, false),
            Field::new(reference, DataType::Utf8, false),
            Field::new(at, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        ];
        if group_columns {
            fields.push(Field::new("customer_id", DataType::Int64, false));
            fields.push(Field::new("period", DataType::Utf8, false));
        }
        Arc::new(Schema::new(fields))
    }
}

/// A reference string, formatted when written. Each kind has its own prefix, so kinds never
/// collide: an orphan's reference matches nothing by construction.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reference {
    /// `INV-000000042`: one invoice's own reference (one-to-one, split, many-to-many).
    Invoice(u64),
    /// `BAT-00000042`: shared by a batch's invoices and the payment that pays them.
    Batch(u64),
    /// `UNK-000000042`: a payment's reference that names no invoice.
    Orphan(u64),
    /// `RMT-000000042`: a payment's own remittance number (many-to-many matches by group).
    Remittance(u64),
}

impl Reference {
    fn write(self, out: &mut String) {
        let (prefix, n, width) = match self {
            Reference::Invoice(n) => ("INV-", n, 9),
            Reference::Batch(n) => ("BAT-", n, 8),
            Reference::Orphan(n) => ("UNK-", n, 9),
            Reference::Remittance(n) => ("RMT-", n, 9),
        };
        out.push_str(prefix);
        push_number(out, n, width);
    }
}

/// One invoice or payment. The key (`invoice_id` / `payment_id`) is the row's position in its
/// file, counted from 1, and is assigned by the [`TableWriter`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Row {
    /// Written as `customer_<n>` (the invoice's customer, the payment's payer).
    pub customer: u64,
    /// In cents.
    pub amount: i64,
    /// Index into [`CURRENCIES`].
    pub currency: u8,
    /// Date32: `invoice_date` / `paid_on`.
    pub day: i32,
    pub reference: Reference,
    /// µs since the epoch, UTC: `created_at` / `received_at`.
    pub at: i64,
    /// Many-to-many only: `(customer_id, month of 2026)`.
    pub group: Option<(i64, u32)>,
}

/// Appends `n` in decimal, zero-padded to `width` digits.
fn push_number(out: &mut String, n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut rest = n;
    loop {
        digits[len] = (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for _ in len..width {
        out.push('0');
    }
    for d in digits[..len].iter().rev() {
        out.push(char::from(b'0' + d));
    }
}

/// Column builders for one record batch.
struct Columns {
    id: Int64Builder,
    party: StringBuilder,
    amount: Decimal128Builder,
    currency: StringBuilder,
    day: Date32Builder,
    reference: StringBuilder,
    at: TimestampMicrosecondBuilder,
    customer_id: Int64Builder,
    period: StringBuilder,
    len: usize,
}

impl Columns {
    fn new() -> Self {
        let rows = BATCH_ROWS;
        Columns {
            id: Int64Builder::with_capacity(rows),
            party: StringBuilder::with_capacity(rows, rows * 16),
            amount: Decimal128Builder::with_capacity(rows)
                .with_data_type(DataType::Decimal128(AMOUNT_PRECISION, AMOUNT_SCALE)),
            currency: StringBuilder::with_capacity(rows, rows * 3),
            day: Date32Builder::with_capacity(rows),
            reference: StringBuilder::with_capacity(rows, rows * 13),
            at: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            customer_id: Int64Builder::new(),
            period: StringBuilder::new(),
            len: 0,
        }
    }

    fn push(&mut self, id: i64, row: &Row, scratch: &mut String) {
        self.id.append_value(id);
        scratch.clear();
        scratch.push_str("customer_");
        push_number(scratch, row.customer, 0);
        self.party.append_value(scratch.as_str());
        self.amount.append_value(i128::from(row.amount));
        self.currency.append_value(CURRENCIES[usize::from(row.currency)]);
        self.day.append_value(row.day);
        scratch.clear();
        row.reference.write(scratch);
        self.reference.append_value(scratch.as_str());
        self.at.append_value(row.at);
        if let Some((customer_id, month)) = row.group {
            self.customer_id.append_value(customer_id);
            scratch.clear();
            scratch.push_str("2026-");
            push_number(scratch, u64::from(month), 2);
            self.period.append_value(scratch.as_str());
        }
        self.len += 1;
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.party.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.currency.finish()),
            Arc::new(self.day.finish()),
            Arc::new(self.reference.finish()),
            Arc::new(self.at.finish()),
        ];
        if schema.fields().len() > arrays.len() {
            arrays.push(Arc::new(self.customer_id.finish()));
            arrays.push(Arc::new(self.period.finish()));
        }
        self.len = 0;
        RecordBatch::try_new(schema.clone(), arrays)
    }
}

/// Streams one table's rows into its files, one record batch at a time.
pub(crate) struct TableWriter {
    /// The first file, named in errors that are not about one file.
    label: PathBuf,
    schema: SchemaRef,
    columns: Columns,
    scratch: String,
    rows: u64,
    parquet: Option<(PathBuf, ArrowWriter<BufWriter<File>>)>,
    csv: Option<(PathBuf, csv::Writer<BufWriter<File>>)>,
}

impl TableWriter {
    /// Creates `DIR/<table>.<ext>` for each format.
    pub(crate) fn create(
        dir: &std::path::Path,
        table: Table,
        group_columns: bool,
        formats: &[Format],
    ) -> Result<Self, Error> {
        let schema = table.schema(group_columns);
        let mut parquet = None;
        let mut csv = None;
        let label = crate::table_path(dir, table.name(), formats.first().copied().unwrap_or(Format::Parquet));
        for &format in formats {
            let path = crate::table_path(dir, table.name(), format);
            let file = File::create(&path).map_err(|source| Error::io(&path, source))?;
            let out = BufWriter::with_capacity(1 << 20, file);
            match format {
                Format::Parquet => {
                    let writer = ArrowWriter::try_new(out, schema.clone(), Some(parquet_properties(&schema)))
                        .map_err(|source| Error::parquet(&path, source))?;
                    parquet = Some((path, writer));
                }
                Format::Csv => {
                    let writer = csv::WriterBuilder::new()
                        .with_header(true)
                        .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%SZ".to_string())
                        .build(out);
                    csv = Some((path, writer));
                }
            }
        }
        Ok(TableWriter { label, schema, columns: Columns::new(), scratch: String::new(), rows: 0, parquet, csv })
    }

    /// The key the next pushed row gets.
    pub(crate) fn next_id(&self) -> i64 {
        self.rows as i64 + 1
    }

    /// Appends a row and returns its key.
    pub(crate) fn push(&mut self, row: &Row) -> Result<i64, Error> {
        let id = self.next_id();
        self.columns.push(id, row, &mut self.scratch);
        self.rows += 1;
        if self.columns.len == BATCH_ROWS {
            self.flush()?;
        }
        Ok(id)
    }

    fn flush(&mut self) -> Result<(), Error> {
        let batch = self.columns.finish(&self.schema).map_err(|source| Error::arrow(&self.label, source))?;
        if let Some((path, writer)) = &mut self.parquet {
            writer.write(&batch).map_err(|source| Error::parquet(path, source))?;
        }
        if let Some((path, writer)) = &mut self.csv {
            writer.write(&batch).map_err(|source| Error::arrow(path, source))?;
        }
        Ok(())
    }

    /// Writes what is buffered, closes the files and returns the number of rows written.
    pub(crate) fn finish(mut self) -> Result<u64, Error> {
        // An empty table still gets its schema (Parquet) and header (CSV).
        if self.columns.len > 0 || self.rows == 0 {
            self.flush()?;
        }
        if let Some((path, writer)) = self.parquet.take() {
            let out = writer.into_inner().map_err(|source| Error::parquet(&path, source))?;
            out.into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
        }
        if let Some((path, writer)) = self.csv.take() {
            writer.into_inner().into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
        }
        Ok(self.rows)
    }
}

/// Snappy, 1M-row row groups; dictionaries only for the low-cardinality columns (a dictionary
/// on unique keys or references is built and then abandoned, which costs time for nothing).
fn parquet_properties(schema: &Schema) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(false);
    for (i, field) in schema.fields().iter().enumerate() {
        // party, currency, date, customer_id, period
        if matches!(i, 1 | 3 | 4 | 7 | 8) {
            builder = builder.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
        }
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_zero_padded() {
        let mut s = String::new();
        push_number(&mut s, 42, 5);
        s.push(' ');
        push_number(&mut s, 0, 0);
        s.push(' ');
        push_number(&mut s, 1234567, 3);
        assert_eq!(s, "00042 0 1234567");
    }

    #[test]
    fn references_of_different_kinds_never_collide() {
        let mut a = String::new();
        let mut b = String::new();
        Reference::Invoice(7).write(&mut a);
        Reference::Orphan(7).write(&mut b);
        assert_eq!(a, "INV-000000007");
        assert_eq!(b, "UNK-000000007");
    }
}
