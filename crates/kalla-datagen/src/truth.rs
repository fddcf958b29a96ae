//! `truth.json` (the expected counts, known by construction) and `job.json` (the job request).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::table::Table;
use crate::{Error, Format, Options};

/// The `run_id` written into `job.json`; the benchmark script replaces it.
pub const PLACEHOLDER_RUN_ID: &str = "00000000-0000-4000-8000-000000000000";

/// What a correct reconciliation of the generated data reports (SPEC 4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    /// The shape's name, as on the command line.
    pub shape: String,
    /// The seed the data was generated from.
    pub seed: u64,
    /// Rows written per table.
    pub rows: Sides,
    /// Rows `match_sql` returns.
    pub matched: u64,
    /// Per table, rows whose key appears in no matched row.
    pub unmatched: Sides,
    /// Counts per construction category (shape-specific; for reading, not for checks).
    pub breakdown: Value,
}

/// A count per table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sides {
    /// The `invoices` count.
    pub invoices: u64,
    /// The `payments` count.
    pub payments: u64,
}

pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    let file = File::create(path).map_err(|source| Error::io(path, source))?;
    let mut out = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut out, value).map_err(|source| Error::json(path, source))?;
    out.write_all(b"\n").map_err(|source| Error::io(path, source))?;
    out.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
    Ok(())
}

/// `job.json` reads the Parquet files when they were written, else the CSV files; with both,
/// `job-csv.json` is the same job over the CSV files.
pub(crate) fn write_jobs(options: &Options) -> Result<(), Error> {
    let parquet = options.formats.contains(&Format::Parquet);
    let csv = options.formats.contains(&Format::Csv);
    let first = if parquet { Format::Parquet } else { Format::Csv };
    write_json(&options.out.join("job.json"), &job(options, first))?;
    if parquet && csv {
        write_json(&options.out.join("job-csv.json"), &job(options, Format::Csv))?;
    }
    Ok(())
}

fn job(options: &Options, format: Format) -> Value {
    json!({
        "run_id": PLACEHOLDER_RUN_ID,
        "match_sql": options.shape.match_sql(),
        "sources": [
            source(Table::Invoices, format, options.shape.has_group_columns()),
            source(Table::Payments, format, options.shape.has_group_columns()),
        ],
        "output_path": "out",
    })
}

fn source(table: Table, format: Format, group_columns: bool) -> Value {
    let mut source = json!({
        "alias": table.name(),
        "uri": format!("{}.{}", table.name(), format.extension()),
        "primary_key": [table.key()],
    });
    if format == Format::Csv {
        // Without it CSV inference would read amounts as floats and timestamps as text.
        let mut schema = serde_json::Map::new();
        schema.insert(table.key().into(), "bigint".into());
        schema.insert("amount".into(), "decimal(12,2)".into());
        schema.insert(table.date_column().into(), "date".into());
        schema.insert(table.timestamp_column().into(), "timestamptz".into());
        if group_columns {
            schema.insert("customer_id".into(), "bigint".into());
            schema.insert("period".into(), "text".into());
        }
        source["schema"] = Value::Object(schema);
    }
    source
}
