//! Test harness: real files in a temporary data root, jobs planned and run by the engine, outputs
//! read back from the Parquet files it wrote.
//!
//! Every job runs twice: once as planned, once with every physical plan serialized and decoded
//! through `datafusion-proto` and Kalla's codec first (`roundtrip_plans`). Both runs must write
//! identical outputs, which is how every scenario also proves its plans can be shipped.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::ArrowWriter;
use kalla_core::session::new_session;
use kalla_core::{EngineConfig, NoObserver, plan_job};
use kalla_recipe::{Counts, JobRequest, KallaError};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A data root and an output root for one test.
pub struct Fixture {
    pub data: tempfile::TempDir,
    pub out: tempfile::TempDir,
}

/// A finished job.
#[derive(Debug)]
pub struct Outcome {
    pub counts: Counts,
    pub dir: PathBuf,
    pub summary: Value,
    /// Rows and bytes the run read from its sources, by kind.
    pub reads: std::collections::BTreeMap<String, kalla_core::progress::ReadCounts>,
    /// Progress as it stood when the run ended.
    pub progress: kalla_core::progress::ProgressSample,
    /// The partitions the run used in the end.
    pub partitions: usize,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture { data: tempfile::tempdir().unwrap(), out: tempfile::tempdir().unwrap() }
    }

    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.data.path().join(name);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        path
    }

    pub fn parquet(&self, name: &str, batch: &RecordBatch) -> PathBuf {
        let path = self.data.path().join(name);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        let file = std::fs::File::create(&path).unwrap();
        let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        path
    }

    fn config(&self, roundtrip: bool) -> EngineConfig {
        EngineConfig {
            data_dir: self.data.path().to_path_buf(),
            output_dir: self.out.path().to_path_buf(),
            roundtrip_plans: roundtrip,
            rows_per_partition: None,
        }
    }

    /// Plans and runs `request` once with the given settings.
    pub async fn run_once(&self, request: Value, roundtrip: bool, partitions: usize) -> Result<Outcome, KallaError> {
        self.run_scaled(request, roundtrip, partitions, None).await
    }

    /// Plans `request` without running it.
    pub async fn plan(&self, request: Value, partitions: usize) -> Result<kalla_core::PlannedJob, KallaError> {
        let job = JobRequest::from_value(request)?.validate()?;
        plan_job(new_session(partitions, None).unwrap(), job, self.config(false)).await
    }

    /// Plans and runs `request` once; with `rows_per_partition`, the run raises its partitions
    /// from `partitions` for its largest source as `kallad` does without `--partitions`.
    pub async fn run_scaled(
        &self,
        request: Value,
        roundtrip: bool,
        partitions: usize,
        rows_per_partition: Option<u64>,
    ) -> Result<Outcome, KallaError> {
        let job = JobRequest::from_value(request)?.validate()?;
        let ctx = new_session(partitions, None).unwrap();
        let config = EngineConfig { rows_per_partition, ..self.config(roundtrip) };
        let planned = plan_job(ctx.clone(), job, config).await?;
        let tracker = std::sync::Arc::clone(&planned.reads);
        let outcome = planned.run(&NoObserver).await?;
        let dir = self.out.path().join(&outcome.output_paths.summary).parent().unwrap().to_path_buf();
        let summary: Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
        Ok(Outcome {
            counts: outcome.counts,
            dir,
            summary,
            reads: tracker.counts(),
            progress: tracker.sample(),
            partitions: ctx.state().config().target_partitions(),
        })
    }

    /// Runs `request` with partitions scaled to its input (one per 2 rows of the largest source,
    /// from 3) and again with plan round trips at 2 partitions, asserts identical outputs, and
    /// returns the first outcome.
    pub async fn run(&self, request: Value) -> Result<Outcome, KallaError> {
        let first = self.run_scaled(request.clone(), false, 3, Some(2)).await?;
        let mut again = request;
        again["run_id"] = json!(uuid::Uuid::new_v4().to_string());
        again["output_path"] = json!(format!("{}-roundtrip", again["output_path"].as_str().unwrap()));
        let second = self.run_once(again, true, 2).await.expect("the round-tripped plan must run as well");
        assert_eq!(first.counts, second.counts, "round-tripped plans give other counts");
        for file in output_files(&first.dir) {
            assert_eq!(
                all_rows(&first.dir.join(&file)),
                all_rows(&second.dir.join(&file)),
                "round-tripped plans wrote other rows to {file}"
            );
        }
        Ok(first)
    }
}

/// `invoices.csv` and `payments.csv` with the given keys and no other settings.
pub fn csv_sources(invoice_key: &[&str], payment_key: &[&str]) -> Value {
    json!([
        {"alias": "invoices", "uri": "invoices.csv", "primary_key": invoice_key},
        {"alias": "payments", "uri": "payments.csv", "primary_key": payment_key}
    ])
}

/// A job request with a fresh run id and output path.
pub fn job(sql: &str, sources: Value) -> Value {
    let id = uuid::Uuid::new_v4().to_string();
    json!({"run_id": id, "match_sql": sql, "sources": sources, "output_path": format!("runs/{id}")})
}

/// The Parquet files in an output directory, sorted.
pub fn output_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    v.sort();
    v
}

pub use kalla_testpg::rows::all_rows;
use kalla_testpg::rows::{cell, read};

/// The values of `column` in a Parquet file, lists flattened, as a set.
pub fn keys(path: &Path, column: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for b in read(path) {
        let c = b.column_by_name(column).unwrap_or_else(|| panic!("no column {column} in {}", path.display()));
        for i in 0..b.num_rows() {
            match c.data_type() {
                DataType::List(_) => {
                    let l = c.as_list::<i32>().value(i);
                    for j in 0..l.len() {
                        out.insert(cell(&l, j));
                    }
                }
                _ => {
                    out.insert(cell(c, i));
                }
            }
        }
    }
    out
}

/// The values of several columns per row, joined with `/`, as a set.
pub fn tuples(path: &Path, columns: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for b in read(path) {
        let cols: Vec<&ArrayRef> = columns.iter().map(|c| b.column_by_name(c).unwrap()).collect();
        for i in 0..b.num_rows() {
            out.insert(cols.iter().map(|c| cell(c, i)).collect::<Vec<_>>().join("/"));
        }
    }
    out
}

/// Rows of a Parquet file.
pub fn row_count(path: &Path) -> usize {
    read(path).iter().map(|b| b.num_rows()).sum()
}

/// A set of strings from literals.
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}
