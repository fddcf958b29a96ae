//! `kalla-datagen`: writes seeded benchmark data, its job request and its ground truth.
//!
//! ```text
//! kalla-datagen --shape one-to-one --invoices 1000000 --seed 42 --out data/1to1 [--payments N] [--format parquet,csv]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kalla_datagen::{Format, Options, Shape};

/// Writes DIR/invoices.parquet, DIR/payments.parquet (and .csv when asked), DIR/job.json and
/// DIR/truth.json. The same arguments always give byte-identical files.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The reconciliation pattern.
    #[arg(long, value_enum)]
    shape: Shape,
    /// Number of invoices.
    #[arg(long)]
    invoices: u64,
    /// Number of payments (one-to-one only; default 95% of the invoices).
    #[arg(long)]
    payments: Option<u64>,
    /// The seed.
    #[arg(long)]
    seed: u64,
    /// Output directory (created if missing; existing files are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Formats to write, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "parquet")]
    format: Vec<Format>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = Options {
        shape: cli.shape,
        invoices: cli.invoices,
        payments: cli.payments,
        seed: cli.seed,
        out: cli.out,
        formats: cli.format,
    };
    match kalla_datagen::generate(&options) {
        Ok(truth) => {
            println!(
                "{}: {} invoices, {} payments; matched {}, unmatched invoices {}, payments {}",
                truth.shape,
                truth.rows.invoices,
                truth.rows.payments,
                truth.matched,
                truth.unmatched.invoices,
                truth.unmatched.payments
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kalla-datagen: {error}");
            ExitCode::FAILURE
        }
    }
}
