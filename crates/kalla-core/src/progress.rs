//! Rows read: progress (SPEC 3.2) and the source read metrics (SPEC 8).
//!
//! Every physical plan a run executes is registered with the job's [`ReadTracker`], which keeps
//! the plan's source scans (`DataSourceExec` nodes over a source's files; the run's own outputs,
//! read back from the temporary directory, are not sources). DataFusion counts the rows each scan
//! has produced while it runs (`output_rows`), so reading the counters at any moment gives the
//! rows read so far without touching the hot path.
//!
//! Progress is rows read over rows expected. A run reads a source more than once — `match_sql`,
//! the anti join of its unmatched rows and its checks (a source without key: `match_sql` and a
//! count) — so a source's expected rows are its estimated rows (Parquet metadata, the CSV bytes
//! scaled by a sample, Postgres `reltuples`) times the passes over it. Estimates can be off and
//! filters or `LIMIT` can stop a scan early, so progress is capped below 1.0 until the job is done
//! and the caller keeps it from decreasing.

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricValue;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The most progress a running job reports.
pub const RUNNING_PROGRESS_CAP: f64 = 0.99;

/// One source scan of an executed plan.
struct Scan {
    /// Index of the source in the job.
    source: usize,
    /// `csv`, `parquet`, …: the file source's type.
    kind: String,
    node: Arc<dyn ExecutionPlan>,
    /// Stored bytes of the file ranges the scan reads, and how many ranges there are (CSV scans
    /// have no bytes counter; finished ranges times the mean range size stands in).
    range_bytes: u64,
    ranges: u64,
}

/// Rows and bytes read from sources of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// Rows produced by source scans.
    pub rows: u64,
    /// Bytes read from storage by source scans.
    pub bytes: u64,
}

/// A moment's view of a run's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressSample {
    /// Rows read over rows expected, at most [`RUNNING_PROGRESS_CAP`].
    pub fraction: f64,
    /// Rows read from every source so far.
    pub rows_read: u64,
}

/// The source scans of one job's plans.
pub struct ReadTracker {
    /// Object-store locations of each source's files → the source's index.
    locations: HashMap<String, usize>,
    /// Source aliases: a Postgres partition's path is `kalla-pg/<alias>/<range>`.
    aliases: HashMap<String, usize>,
    /// Marks the run's temporary output directory in a location.
    output_marker: String,
    /// Per source: rows expected over all passes, when known.
    expected: Vec<Option<u64>>,
    scans: Mutex<Vec<Scan>>,
}

impl std::fmt::Debug for ReadTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTracker").field("expected", &self.expected).finish_non_exhaustive()
    }
}

fn rows(node: &Arc<dyn ExecutionPlan>) -> u64 {
    node.metrics().and_then(|m| m.output_rows()).unwrap_or(0) as u64
}

fn counter(node: &Arc<dyn ExecutionPlan>, name: &str) -> u64 {
    node.metrics()
        .and_then(|m| m.sum_by_name(name))
        .map(|v| match v {
            MetricValue::Count { count: c, .. } => c.value() as u64,
            other => other.as_usize() as u64,
        })
        .unwrap_or(0)
}

impl ReadTracker {
    /// A tracker for sources whose files have the given object-store locations (`locations[i]`
    /// for source `i`) and expected rows over all passes; `run_id` names the output directory.
    pub fn new(
        aliases: &[String],
        locations: Vec<Vec<String>>,
        expected: Vec<Option<u64>>,
        run_id: &str,
    ) -> ReadTracker {
        let locations =
            locations.into_iter().enumerate().flat_map(|(i, ls)| ls.into_iter().map(move |l| (l, i))).collect();
        let aliases = aliases.iter().enumerate().map(|(i, a)| (a.clone(), i)).collect();
        ReadTracker {
            locations,
            aliases,
            output_marker: format!(".tmp-{run_id}"),
            expected,
            scans: Mutex::new(Vec::new()),
        }
    }

    fn source_of(&self, location: &str) -> Option<usize> {
        if let Some(i) = self.locations.get(location) {
            return Some(*i);
        }
        let mut parts = location.split('/');
        match (parts.next(), parts.next()) {
            (Some("kalla-pg"), Some(alias)) => self.aliases.get(alias).copied(),
            _ => None,
        }
    }

    fn scans(&self) -> std::sync::MutexGuard<'_, Vec<Scan>> {
        self.scans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the source scans of a plan about to run.
    pub fn track(&self, plan: &Arc<dyn ExecutionPlan>) {
        let mut found = Vec::new();
        collect_scans(plan, &mut |node, config| {
            let mut source = None;
            let (mut range_bytes, mut ranges) = (0u64, 0u64);
            for group in &config.file_groups {
                for file in group.iter() {
                    let location = file.object_meta.location.as_ref();
                    if location.contains(&self.output_marker) {
                        return;
                    }
                    if source.is_none() {
                        source = self.source_of(location);
                    }
                    range_bytes += match &file.range {
                        Some(r) => u64::try_from(r.end.saturating_sub(r.start)).unwrap_or(0),
                        None => file.object_meta.size,
                    };
                    ranges += 1;
                }
            }
            if let Some(source) = source {
                let kind = config.file_source().file_type().to_string();
                found.push(Scan { source, kind, node: Arc::clone(node), range_bytes, ranges });
            }
        });
        self.scans().extend(found);
    }

    /// Whether `plan` reads nothing but files of the run's temporary output directory: every
    /// leaf is a file scan of it (a plan without leaves reads nothing of them either).
    pub fn reads_only_outputs(&self, plan: &Arc<dyn ExecutionPlan>) -> bool {
        fn leaves<'a>(plan: &'a Arc<dyn ExecutionPlan>, out: &mut Vec<&'a Arc<dyn ExecutionPlan>>) {
            let children = plan.children();
            if children.is_empty() {
                out.push(plan);
            }
            for child in children {
                leaves(child, out);
            }
        }
        let mut found = Vec::new();
        leaves(plan, &mut found);
        !found.is_empty()
            && found.iter().all(|leaf| {
                file_scan(leaf).is_some_and(|config| {
                    config
                        .file_groups
                        .iter()
                        .flat_map(|g| g.iter())
                        .all(|f| f.object_meta.location.as_ref().contains(&self.output_marker))
                })
            })
    }

    /// Rows and bytes read so far, by source kind.
    pub fn counts(&self) -> BTreeMap<String, ReadCounts> {
        let mut out: BTreeMap<String, ReadCounts> = BTreeMap::new();
        for scan in self.scans().iter() {
            let c = out.entry(scan.kind.clone()).or_default();
            c.rows += rows(&scan.node);
            c.bytes += match scan.kind.as_str() {
                "parquet" | "postgres" => counter(&scan.node, "bytes_scanned"),
                _ => {
                    let done = counter(&scan.node, "files_processed").min(scan.ranges);
                    scan.range_bytes.checked_div(scan.ranges).unwrap_or(0) * done
                }
            };
        }
        out
    }

    /// Progress now: rows read over rows expected, counting only sources whose rows are known.
    pub fn sample(&self) -> ProgressSample {
        let mut read = vec![0u64; self.expected.len()];
        for scan in self.scans().iter() {
            if let Some(r) = read.get_mut(scan.source) {
                *r += rows(&scan.node);
            }
        }
        let rows_read = read.iter().sum();
        let (mut done, mut expected) = (0u64, 0u64);
        for (r, e) in read.iter().zip(&self.expected) {
            if let Some(e) = e {
                done = done.saturating_add((*r).min(*e));
                expected = expected.saturating_add(*e);
            }
        }
        let fraction = if expected == 0 { 0.0 } else { (done as f64 / expected as f64).min(RUNNING_PROGRESS_CAP) };
        ProgressSample { fraction, rows_read }
    }
}

/// The file scan configuration of a `DataSourceExec` over files (Kalla's Postgres scan is one).
fn file_scan(node: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    node.downcast_ref::<DataSourceExec>()?.data_source().downcast_ref::<FileScanConfig>()
}

fn collect_scans(plan: &Arc<dyn ExecutionPlan>, f: &mut dyn FnMut(&Arc<dyn ExecutionPlan>, &FileScanConfig)) {
    if let Some(config) = file_scan(plan) {
        f(plan, config);
    }
    for child in plan.children() {
        collect_scans(child, f);
    }
}
