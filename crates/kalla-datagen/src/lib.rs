//! Deterministic, seeded benchmark data for kallad, with its ground truth known by construction.
//!
//! One run writes, into one directory, `invoices.parquet` and `payments.parquet` (and `.csv`
//! copies when asked), `job.json` — a job request (SPEC 3.1) whose `match_sql` reconciles them —
//! and `truth.json`: how many rows that `match_sql` returns and how many rows of each side are
//! unmatched (SPEC 4), counted while the rows were emitted, never by running a query.
//!
//! # Shapes
//! - [`Shape::OneToOne`]: payments reference one invoice each (`reference_number` = `reference`)
//!   and match when the amounts agree within 1% (`tolerance_match_pct`). The mix holds exact
//!   payments, payments inside the tolerance, payments exactly at it (they match), near misses one
//!   cent beyond it (they do not), orphan payments, and pairs of payments carrying the same
//!   reference (both within tolerance, so the invoice is in two matched rows, or one outside).
//! - [`Shape::Split`] (1:N): 2–5 payments carry an invoice's reference and sum to its amount,
//!   except groups deliberately off by a few cents; unpaid invoices and orphan payments.
//! - [`Shape::Batch`] (N:1): one payment pays 10–50 invoices that carry the batch's reference;
//!   its amount is their exact sum except in batches off by cents; unpaid batches and orphans.
//! - [`Shape::ManyToMany`]: invoices and payments carry `customer_id` and `period`; a group
//!   matches when both sides' sums are equal. Some groups differ by cents, some exist on one side.
//!
//! # Determinism and speed
//! Every invoice, payment pair or group draws from its own ChaCha8 stream, keyed by the seed and
//! numbered by its index, so a row is a pure function of `(seed, shape, sizes, index)`. That lets
//! the invoice and payment files be written by two threads at once, lets the payment side look up
//! "its" invoice without holding the invoice table in memory, and makes the same arguments give
//! byte-identical files. Payments visit invoices (or groups) through a seeded affine permutation,
//! so the payments file is not sorted by reference.

#![warn(missing_docs)]

mod error;
mod random;
mod shapes;
mod table;
mod truth;

use std::path::{Path, PathBuf};

pub use error::Error;
pub use truth::{PLACEHOLDER_RUN_ID, Sides, Truth};

/// Which reconciliation pattern the data follows (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Each payment references one invoice; amounts match within 1%.
    OneToOne,
    /// 1:N — an invoice is paid by several payments that sum to it.
    Split,
    /// N:1 — one payment pays a batch of invoices.
    Batch,
    /// Invoices and payments are matched per (customer, period) by their sums.
    ManyToMany,
}

impl Shape {
    /// The name used on the command line and in `truth.json`.
    pub fn name(self) -> &'static str {
        match self {
            Shape::OneToOne => "one-to-one",
            Shape::Split => "split",
            Shape::Batch => "batch",
            Shape::ManyToMany => "many-to-many",
        }
    }

    /// The `match_sql` of this shape's job.
    pub fn match_sql(self) -> &'static str {
        match self {
            Shape::OneToOne => {
                "SELECT i.invoice_id, p.payment_id, i.amount, p.amount AS paid FROM invoices i \
                 JOIN payments p ON i.reference = p.reference_number \
                 AND tolerance_match_pct(i.amount, p.amount, 0.01)"
            }
            Shape::Split => {
                "SELECT i.invoice_id, array_agg(p.payment_id) AS payment_ids FROM invoices i \
                 JOIN payments p ON i.reference = p.reference_number \
                 GROUP BY i.invoice_id, i.amount HAVING sum(p.amount) = i.amount"
            }
            Shape::Batch => {
                "SELECT p.payment_id, array_agg(i.invoice_id) AS invoice_ids FROM payments p \
                 JOIN invoices i ON i.reference = p.reference_number \
                 GROUP BY p.payment_id, p.amount HAVING sum(i.amount) = p.amount"
            }
            Shape::ManyToMany => {
                "WITH i AS (SELECT customer_id, period, sum(amount) AS total, \
                 array_agg(invoice_id) AS invoice_ids FROM invoices GROUP BY customer_id, period), \
                 p AS (SELECT customer_id, period, sum(amount) AS total, \
                 array_agg(payment_id) AS payment_ids FROM payments GROUP BY customer_id, period) \
                 SELECT i.customer_id, i.period, i.invoice_ids, p.payment_ids FROM i JOIN p \
                 ON i.customer_id = p.customer_id AND i.period = p.period AND i.total = p.total"
            }
        }
    }

    /// Whether rows carry the `customer_id` and `period` group columns.
    pub(crate) fn has_group_columns(self) -> bool {
        self == Shape::ManyToMany
    }
}

/// A file format the tables are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Format {
    /// Snappy-compressed Parquet, ~1M-row row groups.
    Parquet,
    /// CSV with a header row, `,` delimiter, decimals as `123.45`, dates `2026-01-31`,
    /// timestamps RFC 3339 in UTC (`2026-01-31T09:30:00Z`).
    Csv,
}

impl Format {
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }
}

/// What to generate and where.
#[derive(Clone, Debug)]
pub struct Options {
    /// The reconciliation pattern.
    pub shape: Shape,
    /// Number of invoice rows (exact).
    pub invoices: u64,
    /// Number of payment rows; one-to-one only (default 95% of `invoices`). The grouped shapes
    /// derive their payment count from the groups they build.
    pub payments: Option<u64>,
    /// The seed; the same options give byte-identical files.
    pub seed: u64,
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// Formats to write, at least one.
    pub formats: Vec<Format>,
}

/// Writes the tables, `truth.json` and `job.json` (see the crate docs) and returns the truth.
pub fn generate(options: &Options) -> Result<Truth, Error> {
    if options.formats.is_empty() {
        return Err(Error::Options("give at least one --format".into()));
    }
    if options.payments.is_some() && options.shape != Shape::OneToOne {
        return Err(Error::Options(format!(
            "--payments applies to one-to-one only; {} derives its payments from its groups",
            options.shape.name()
        )));
    }
    let mut formats = options.formats.clone();
    formats.sort();
    formats.dedup();
    let options = &Options { formats, ..options.clone() };
    std::fs::create_dir_all(&options.out).map_err(|source| Error::io(&options.out, source))?;
    let truth = shapes::write_tables(options)?;
    truth::write_json(&options.out.join("truth.json"), &truth)?;
    truth::write_jobs(options)?;
    Ok(truth)
}

/// The path of `table`'s file in `format` under `dir`.
pub(crate) fn table_path(dir: &Path, table: &str, format: Format) -> PathBuf {
    dir.join(format!("{table}.{}", format.extension()))
}
