//! Running a planned job: matched rows, unmatched rows per keyed source, checks, commit.
//!
//! 1. `match_sql` runs once and streams into `matched.parquet`.
//! 2. For each keyed source, the keys of the matched rows *as written* are read back from
//!    `matched.parquet` (unnesting `array_agg` lists), and the source (after its filters) is
//!    anti-joined against them into `unmatched_<alias>.parquet`. `match_sql` is never evaluated
//!    a second time, keys are compared with SQL equality in their own types (never as strings),
//!    so a NULL key never matches.
//! 3. Checks for the audit trail are computed by separate queries, so they cross-check the
//!    outputs instead of restating them.
//! 4. `summary.json` is written last, then the temporary directory is renamed into place.

use crate::codec::{KallaPhysicalCodec, check_distributable, roundtrip_logical_plan, roundtrip_physical_plan};
use crate::lineage::{KeyCarrier, KeyTrace};
use crate::output::{TmpDir, write_stream, write_synced};
use crate::plan::{PlannedJob, PlannedSource};
use crate::summary::{AuditSource, AuditTrail, FileAudit, PostgresAudit, SourceChecks, Summary};
use datafusion::arrow::array::Array;
use datafusion::common::{Column, DataFusionError, JoinType};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::functions_nested::expr_fn::array_distinct;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{Expr, case, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext};
use kalla_connectors::file::{col_exact, first_invalid_utf8_line};
use kalla_recipe::{Counts, ErrorCode, JobState, JobStatus, KallaError, Mode, OutputPaths, Stage};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The column numbering matched rows while their keys are made distinct per row.
const ROW_NUMBER: &str = "__kalla_row";

/// Told about a run's progress.
pub trait RunObserver: Send + Sync {
    /// The run entered `stage`.
    fn stage(&self, _stage: Stage) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct NoObserver;
impl RunObserver for NoObserver {}

/// The result of a successful run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Counts of the outputs.
    pub counts: Counts,
    /// Output paths as given.
    pub output_paths: OutputPaths,
    /// The summary written to `summary.json`.
    pub summary: Summary,
}

/// What one source contributes to the counts and the audit trail.
struct SourceResult {
    total: u64,
    unmatched: Option<u64>,
    path: Option<String>,
    checks: Option<SourceChecks>,
}

const MATCHED_FILE: &str = "matched.parquet";
const SUMMARY_FILE: &str = "summary.json";

fn key_alias(j: usize) -> String {
    format!("__kalla_k{j}")
}

/// Maps an error met while running to the API error.
pub fn execution_error(stage: &str, e: DataFusionError) -> KallaError {
    let root = e.find_root();
    if let DataFusionError::External(inner) = root
        && let Some(k) = inner.downcast_ref::<KallaError>()
    {
        return k.clone();
    }
    // A transient source failure travels as an I/O error (retryable on a cluster).
    if let DataFusionError::IoError(io) = root
        && let Some(k) = io.get_ref().and_then(|inner| inner.downcast_ref::<KallaError>())
    {
        return k.clone();
    }
    let text = crate::sql::strip_df_prefix(root);
    let code = match root {
        DataFusionError::ArrowError(..) | DataFusionError::ParquetError(..) => ErrorCode::SourceReadFailed,
        DataFusionError::Execution(m) if m.contains("declare a wider type") => ErrorCode::SourceReadFailed,
        DataFusionError::ResourcesExhausted(_) => {
            return KallaError::new(
                ErrorCode::MemoryLimitExceeded,
                format!("{stage}: the job needs more memory than --memory-limit grants and could not spill: {text}"),
            );
        }
        _ => ErrorCode::Internal,
    };
    KallaError::new(code, format!("{stage}: {text}"))
}

/// Passes `stream` through and, once it has ended, logs `plan` with the metrics of its run
/// (rows, times, spills per operator): what `RUST_LOG=kalla_core=debug` shows for a local job.
fn log_metrics_at_end(
    label: &str,
    plan: Arc<dyn ExecutionPlan>,
    stream: SendableRecordBatchStream,
) -> SendableRecordBatchStream {
    use futures::StreamExt;
    let label = label.to_string();
    let schema = stream.schema();
    let done = futures::stream::once(async move {
        let shown = datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan.as_ref());
        tracing::debug!(plan = %label, metrics = %shown.indent(true), "plan ran");
        None
    });
    let stream = stream.map(Some).chain(done).filter_map(futures::future::ready);
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream))
}

fn path_in(given: &str, file: &str) -> String {
    format!("{}/{file}", given.trim_end_matches('/'))
}

impl PlannedJob {
    /// The physical plan of `frame`, planned with the job's session as it is now (a frame made
    /// at submission carries the settings of that moment; cluster mode changes some).
    async fn physical(&self, frame: DataFrame) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        self.physical_in(&self.ctx, frame).await
    }

    /// [`Self::physical`] planned with the settings of `ctx` (the job's session or one derived
    /// from it).
    async fn physical_in(
        &self,
        ctx: &SessionContext,
        frame: DataFrame,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let roundtrip = self.config.roundtrip_plans && self.runner.is_none();
        let logical = frame.into_unoptimized_plan();
        let logical =
            if roundtrip { roundtrip_logical_plan(&logical, &self.ctx.task_ctx(), &self.snapshots)? } else { logical };
        let plan = DataFrame::new(ctx.state(), logical).create_physical_plan().await?;
        let plan = if roundtrip { roundtrip_physical_plan(plan, &self.ctx.task_ctx())? } else { plan };
        self.reads.track(&plan);
        Ok(plan)
    }

    /// Runs `frame` here or on the cluster; `label` names it in the cluster's logs.
    async fn execute(&self, label: &str, frame: DataFrame) -> Result<SendableRecordBatchStream, DataFusionError> {
        let plan = self.physical(frame).await?;
        self.run_plan(label, plan, &self.ctx).await
    }

    /// Runs `plan` here or on the cluster. A plan that reads nothing but this run's own outputs
    /// (checks counting the keys of `matched.parquet` or of an unmatched file the scheduler just
    /// wrote) runs here in cluster mode too: shipping it would only move the scheduler's own files
    /// through a shuffle.
    async fn run_plan(
        &self,
        label: &str,
        plan: Arc<dyn ExecutionPlan>,
        ctx: &SessionContext,
    ) -> Result<SendableRecordBatchStream, DataFusionError> {
        match &self.runner {
            Some(runner) if !self.reads.reads_only_outputs(&plan) => {
                let schema = plan.schema();
                Ok(crate::remote::merged(schema, runner.execute(label.to_string(), plan, ctx.clone()).await?))
            }
            _ => {
                let stream = datafusion::physical_plan::execute_stream(plan.clone(), ctx.task_ctx())?;
                Ok(if tracing::enabled!(tracing::Level::DEBUG) {
                    log_metrics_at_end(label, plan, stream)
                } else {
                    stream
                })
            }
        }
    }

    /// Runs `frame` into the one Parquet file `path`; returns its rows. On a runner that writes
    /// parts (the cluster, by default) each partition writes its own part where it runs and the
    /// parts are joined here ([`crate::parts`]), so the rows never travel to this process.
    /// `ctx` is the session `frame` is planned and run in: the job's, or for an anti join against
    /// the matched keys the runner's [`crate::remote::PlanRunner::key_join_session`].
    async fn write(
        &self,
        label: &str,
        frame: DataFrame,
        path: &Path,
        ctx: &SessionContext,
    ) -> Result<u64, DataFusionError> {
        let plan = self.output_plan(ctx, frame).await?;
        self.write_plan(label, plan, path, ctx).await
    }

    /// The physical plan of an output. On the cluster, an anti join against the keys of this
    /// run's outputs reads them in each task instead of through a broadcast stage (`keyjoin`).
    async fn output_plan(
        &self,
        ctx: &SessionContext,
        frame: DataFrame,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let plan = self.physical_in(ctx, frame).await?;
        match &self.runner {
            Some(_) => crate::keyjoin::build_in_each_task(plan, &self.reads),
            None => Ok(plan),
        }
    }

    /// [`Self::write`] of a plan [`Self::output_plan`] made in `ctx`.
    async fn write_plan(
        &self,
        label: &str,
        plan: Arc<dyn ExecutionPlan>,
        path: &Path,
        ctx: &SessionContext,
    ) -> Result<u64, DataFusionError> {
        match &self.runner {
            Some(runner) if runner.writes_parts() && !self.reads.reads_only_outputs(&plan) => {
                crate::parts::write_parts(runner.as_ref(), label, plan, ctx.clone(), path).await
            }
            _ => write_stream(self.run_plan(label, plan, ctx).await?, path).await,
        }
    }

    async fn collect_i64s(&self, label: &str, frame: DataFrame) -> Result<Vec<i64>, DataFusionError> {
        let stream = self.execute(label, frame).await?;
        one_row_i64s(label, &datafusion::physical_plan::common::collect(stream).await?)
    }

    /// The key tuples present in the matched output, one row each in columns `__kalla_k<j>`, with
    /// repetitions: every key a matched row carries, in every carrier of the trace (a source read
    /// twice by the query can carry its key in two places). What the anti join compares against.
    fn matched_keys(&self, matched: DataFrame, trace: &KeyTrace) -> Result<DataFrame, DataFusionError> {
        self.carried_keys(matched, trace, None)
    }

    /// The keys each matched row carries, each once per row, in columns `__kalla_k<j>`: what
    /// counting the keys in more than one matched row needs. A row carries one key when the trace
    /// is one plain carrier; a list (or two carriers) can carry a key twice in one row, so such
    /// rows are numbered and their keys made distinct per row.
    fn matched_key_rows(&self, matched: DataFrame, trace: &KeyTrace) -> Result<DataFrame, DataFusionError> {
        match trace.carriers.as_slice() {
            [KeyCarrier::Plain(_)] => return self.carried_keys(matched, trace, None),
            // One list of one key column (the usual 1:N match): its distinct elements.
            [KeyCarrier::Lists(idx)] if idx.len() == 1 => {
                let key = key_alias(0);
                return matched
                    .select(vec![array_distinct(col_exact(&self.output_columns[idx[0]])).alias(&key)])?
                    .unnest_columns(&[key.as_str()]);
            }
            _ => {}
        }
        let numbered = matched.window(vec![row_number().alias(ROW_NUMBER)])?;
        let keys: Vec<Expr> = (0..trace.width()).map(|j| col_exact(&key_alias(j))).collect();
        self.carried_keys(numbered, trace, Some(ROW_NUMBER))?.distinct()?.select(keys)
    }

    /// The union of every carrier's keys (columns `__kalla_k<j>`, after `keep` when given).
    fn carried_keys(
        &self,
        matched: DataFrame,
        trace: &KeyTrace,
        keep: Option<&str>,
    ) -> Result<DataFrame, DataFusionError> {
        let mut frames = trace.carriers.iter().map(|c| self.carrier_keys(matched.clone(), c, keep));
        let first = frames.next().ok_or_else(|| DataFusionError::Internal("a key trace without carriers".into()))??;
        frames.try_fold(first, |all, next| all.union(next?))
    }

    /// The keys one carrier holds, one row per key (lists unnested), in columns `__kalla_k<j>`.
    fn carrier_keys(
        &self,
        matched: DataFrame,
        carrier: &KeyCarrier,
        keep: Option<&str>,
    ) -> Result<DataFrame, DataFusionError> {
        let names = &self.output_columns;
        let kept = || keep.iter().map(|k| col_exact(k)).collect::<Vec<_>>();
        let aliased = |idx: &[usize]| {
            kept()
                .into_iter()
                .chain(idx.iter().enumerate().map(|(j, i)| col_exact(&names[*i]).alias(key_alias(j))))
                .collect::<Vec<_>>()
        };
        match carrier {
            KeyCarrier::Plain(idx) => matched.select(aliased(idx)),
            KeyCarrier::Lists(idx) => {
                let aliases: Vec<String> = (0..idx.len()).map(key_alias).collect();
                let refs: Vec<&str> = aliases.iter().map(String::as_str).collect();
                matched.select(aliased(idx))?.unnest_columns(&refs)
            }
            KeyCarrier::StructList { column, fields } => matched
                .select(kept().into_iter().chain([col_exact(&names[*column]).alias("__kalla_s")]).collect::<Vec<_>>())?
                .unnest_columns(&["__kalla_s"])?
                .select(
                    kept()
                        .into_iter()
                        .chain(
                            fields
                                .iter()
                                .enumerate()
                                .map(|(j, f)| get_field(col_exact("__kalla_s"), f.as_str()).alias(key_alias(j))),
                        )
                        .collect::<Vec<_>>(),
                ),
        }
    }

    fn key_join(source: &PlannedSource) -> Vec<Expr> {
        source
            .key
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, k)| Expr::Column(Column::new_unqualified(k)).eq(col_exact(&key_alias(j))))
            .collect()
    }

    async fn read_matched(&self, path: &Path) -> Result<DataFrame, DataFusionError> {
        self.ctx.read_parquet(path.to_string_lossy().to_string(), ParquetReadOptions::default()).await
    }

    /// The source's row count, key count, duplicate keys and the rows holding them, in that order.
    async fn source_key_counts(&self, source: &PlannedSource) -> Result<Vec<i64>, DataFusionError> {
        let key = source.key.clone().unwrap_or_default();
        let label = format!("checks of {}: source keys", source.alias);
        let source_stats = source
            .frame
            .clone()
            .aggregate(key.iter().map(|k| col_exact(k)).collect(), vec![count(lit(1)).alias("__kalla_n")])?
            .aggregate(
                vec![],
                vec![
                    sum(per_key_rows()).alias("total_rows"),
                    count(lit(1)).alias("total_keys"),
                    sum(when_true(per_key_rows().gt(lit(1i64)), lit(1i64))?).alias("duplicate_keys"),
                    sum(when_true(per_key_rows().gt(lit(1i64)), per_key_rows())?).alias("duplicate_key_rows"),
                ],
            )?;
        if !self.in_one_task(source) {
            return self.collect_i64s(&label, source_stats).await;
        }
        let one_task = one_task(&self.ctx);
        let plan = self.physical_in(&one_task, source_stats).await?;
        let stream = self.run_plan(&label, plan, &one_task).await?;
        one_row_i64s(&label, &datafusion::physical_plan::common::collect(stream).await?)
    }

    /// Whether a cluster run reads `source` in one task per plan: a keyed file source of at most
    /// [`crate::session::CLUSTER_ONE_TASK_SOURCE_ROWS`] rows. Its key count then needs no shuffle
    /// and starts with the match; its anti join builds the matched keys once, not once per task.
    /// Local runs, Postgres sources and larger sources are split into the job's partitions.
    fn in_one_task(&self, source: &PlannedSource) -> bool {
        self.runner.is_some()
            && source.trace.is_some()
            && source.format.is_some()
            && source.expected_rows.is_some_and(|rows| rows <= crate::session::CLUSTER_ONE_TASK_SOURCE_ROWS)
    }

    /// Checks of one keyed source, each side counted by its own query: the source's keys, the
    /// matched keys (read back from `matched.parquet`), and the keys of the written unmatched file.
    /// Every non-NULL key the matched output carries was copied from a row of this source, so the
    /// balance `total_keys = matched_keys + unmatched_keys` holds exactly when the anti join
    /// wrote every key the match left.
    /// `written` writes the unmatched file; the source's and the matched keys' counts do not
    /// need it and run meanwhile. Returns the rows written and the checks.
    async fn source_checks(
        &self,
        source: &PlannedSource,
        keys: DataFrame,
        unmatched_path: &Path,
        written: impl std::future::Future<Output = Result<u64, DataFusionError>>,
        early: Option<Vec<i64>>,
    ) -> Result<(u64, SourceChecks), DataFusionError> {
        let key = source.key.clone().unwrap_or_default();
        let not_null =
            (0..key.len()).map(|j| col_exact(&key_alias(j)).is_not_null()).reduce(Expr::and).unwrap_or(lit(true));
        let matched_stats = keys
            .filter(not_null)?
            .aggregate(
                (0..key.len()).map(|j| col_exact(&key_alias(j))).collect(),
                vec![count(lit(1)).alias("__kalla_n")],
            )?
            .aggregate(
                vec![],
                vec![
                    count(lit(1)).alias("matched_keys"),
                    sum(when_true(per_key_rows().gt(lit(1i64)), lit(1i64))?).alias("multi_matched_keys"),
                ],
            )?;
        let labels =
            ["source keys", "matched keys", "unmatched keys"].map(|l| format!("checks of {}: {l}", source.alias));
        let unmatched = async {
            let rows = written.await?;
            let unmatched_stats = self
                .read_matched(unmatched_path)
                .await?
                .aggregate(key.iter().map(|k| col_exact(k)).collect(), vec![])?
                .aggregate(vec![], vec![count(lit(1)).alias("unmatched_keys")])?;
            Ok::<_, DataFusionError>((rows, self.collect_i64s(&labels[2], unmatched_stats).await?))
        };
        let source_counts = async {
            match early {
                Some(v) => Ok(v),
                None => self.source_key_counts(source).await,
            }
        };
        let (s, m, (rows, u)) =
            futures::try_join!(source_counts, self.collect_i64s(&labels[1], matched_stats), unmatched)?;
        let get = |v: &[i64], i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        let (total_keys, matched_keys, unmatched_keys) = (get(&s, 1), get(&m, 0), get(&u, 0));
        let checks = SourceChecks {
            total_rows: get(&s, 0),
            total_keys,
            matched_keys,
            unmatched_keys,
            keys_balance: total_keys == matched_keys + unmatched_keys,
            duplicate_keys: get(&s, 2),
            duplicate_key_rows: get(&s, 3),
            multi_matched_keys: get(&m, 1),
        };
        Ok((rows, checks))
    }

    /// A CSV reader error about bad UTF-8 does not say which file it was reading; find it (only
    /// on this failure path) and name the file and line.
    fn explain_read_error(&self, e: KallaError) -> KallaError {
        if e.code != ErrorCode::SourceReadFailed || !e.message.contains("UTF-8") {
            return e;
        }
        let root = self.config.data_dir.canonicalize().unwrap_or_else(|_| self.config.data_dir.clone());
        for source in &self.sources {
            if source.format != Some(kalla_recipe::FileFormat::Csv) {
                continue;
            }
            for f in &source.files {
                if let Ok(Some(line)) = first_invalid_utf8_line(&f.path) {
                    let name = f.path.strip_prefix(&root).unwrap_or(&f.path);
                    return KallaError::new(
                        ErrorCode::SourceReadFailed,
                        format!(
                            "source {}: {} line {line} is not valid UTF-8 (input files must be UTF-8)",
                            source.alias,
                            name.display()
                        ),
                    );
                }
            }
        }
        e
    }

    /// The unmatched output and checks of one source (only a row count for a source without key).
    async fn source_outputs(
        &self,
        source: &PlannedSource,
        dir: &Path,
        matched_path: &Path,
        given: &str,
        early: Option<Vec<i64>>,
    ) -> Result<SourceResult, KallaError> {
        let fail = |e| execution_error(&format!("unmatched rows of {}", source.alias), e);
        tracing::debug!(source = %source.alias, "planning the unmatched rows and checks");
        let Some(trace) = &source.trace else {
            let rows = self
                .collect_i64s(
                    &format!("rows of {}", source.alias),
                    source.frame.clone().aggregate(vec![], vec![count(lit(1))]).map_err(fail)?,
                )
                .await
                .map_err(fail)?;
            let total = rows.first().copied().unwrap_or(0).max(0) as u64;
            return Ok(SourceResult { total, unmatched: None, path: None, checks: None });
        };
        let file = format!("unmatched_{}.parquet", source.alias);
        let path = dir.join(&file);
        let matched = self.read_matched(matched_path).await.map_err(fail)?;
        let keys = self.matched_keys(matched.clone(), trace).map_err(fail)?;
        let key_rows = self.matched_key_rows(matched, trace).map_err(fail)?;
        let anti =
            source.frame.clone().join_on(keys.clone(), JoinType::LeftAnti, Self::key_join(source)).map_err(fail)?;
        let label = format!("unmatched rows of {}", source.alias);
        let anti_ctx = match &self.runner {
            Some(runner) => runner.key_join_session(&self.ctx).map_err(fail)?,
            None => self.ctx.clone(),
        };
        let written = async {
            // In one task only as a join that reads the matched keys in that task: planned at one
            // partition without statistics to put the keys on the build side (a CSV source, keys
            // unnested from lists), DataFusion collects the source instead, which Ballista would
            // shuffle into the one task; such a join keeps the job's partitions.
            if self.in_one_task(source) {
                let one = one_task(&anti_ctx);
                let plan = self.output_plan(&one, anti.clone()).await?;
                if crate::keyjoin::builds_in_each_task(&plan) {
                    return self.write_plan(&label, plan, &path, &one).await;
                }
            }
            let plan = self.output_plan(&anti_ctx, anti).await?;
            self.write_plan(&label, plan, &path, &anti_ctx).await
        };
        let (rows, checks) = self.source_checks(source, key_rows, &path, written, early).await.map_err(fail)?;
        Ok(SourceResult {
            total: checks.total_rows,
            unmatched: Some(rows),
            path: Some(path_in(given, &file)),
            checks: Some(checks),
        })
    }

    /// Where this job's plans run.
    pub fn mode(&self) -> Mode {
        if self.runner.is_some() { Mode::Cluster } else { Mode::Local }
    }

    /// How many plans a cluster run ships: `match_sql`, then per keyed source its anti join and
    /// its source-key check (its matched-key and unmatched-key checks read only the run's own
    /// outputs and run in the scheduler), per source without key one count. Cluster progress
    /// counts finished plans against this.
    pub fn plan_count(&self) -> usize {
        1 + self.sources.iter().map(|s| if s.trace.is_some() { 2 } else { 1 }).sum::<usize>()
    }

    /// Whether every plan of this job can be shipped to executors: the plans of `match_sql` and
    /// of each source (the anti joins and checks read nothing else but the run's own Parquet
    /// output) must pass [`check_distributable`] and encode with Kalla's codec.
    pub async fn distributable(&self) -> Result<(), KallaError> {
        let frames = std::iter::once(DataFrame::new(self.ctx.state(), self.match_plan.clone()))
            .chain(self.sources.iter().map(|s| s.frame.clone()));
        for frame in frames {
            let frame = DataFrame::new(self.ctx.state(), frame.into_unoptimized_plan());
            let plan = frame.create_physical_plan().await.map_err(|e| execution_error("planning", e))?;
            check_distributable(&plan)?;
            datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, &KallaPhysicalCodec).map_err(
                |e| {
                    KallaError::new(
                        ErrorCode::NotDistributable,
                        format!("the plan cannot be shipped to executors: {e}"),
                    )
                },
            )?;
        }
        Ok(())
    }

    /// Runs the job to committed outputs.
    pub async fn run(self, observer: &dyn RunObserver) -> Result<RunOutcome, KallaError> {
        let started = Instant::now();
        let started_at = crate::timestamp_now();
        let mut timings: BTreeMap<String, u64> = BTreeMap::new();
        let tmp = TmpDir::create(&self.output)?;
        if self.runner.is_none()
            && let Some(rows_per_partition) = self.config.rows_per_partition
        {
            let largest = self.sources.iter().filter_map(|s| s.expected_rows).max();
            let partitions = crate::session::scale_partitions(&self.ctx, largest, rows_per_partition);
            tracing::info!(partitions, largest_source_rows = ?largest, "local run partitions");
        }
        // From here on, Postgres scans read in the job's one snapshot per database.
        self.snapshots.arm();
        let given = self.output.given.clone();

        observer.stage(Stage::Matching);
        let t = Instant::now();
        let matched_path = tmp.path().join(MATCHED_FILE);
        let match_frame = DataFrame::new(self.ctx.state(), self.match_plan.clone());
        // Key counts that need nothing from the match start with it (cluster runs only).
        let this = &self;
        let early_counts = futures::future::try_join_all(self.sources.iter().map(|s| async move {
            if !this.in_one_task(s) {
                return Ok(None);
            }
            let counts = this.source_key_counts(s).await;
            counts.map(Some).map_err(|e| execution_error(&format!("unmatched rows of {}", s.alias), e))
        }));
        let matching = async {
            let written = self.write("matching", match_frame, &matched_path, &self.ctx).await;
            written.map_err(|e| execution_error("matching", e))
        };
        let (matched_rows, mut early) = match futures::try_join!(matching, early_counts) {
            Ok(done) => done,
            Err(e) => return Err(self.explain_read_error(e)),
        };
        timings.insert("matching_ms".into(), t.elapsed().as_millis() as u64);

        observer.stage(Stage::WritingResults);
        let t = Instant::now();
        let mut total = BTreeMap::new();
        let mut unmatched = BTreeMap::new();
        let mut unmatched_paths = BTreeMap::new();
        let mut checks = BTreeMap::new();
        // One source at a time (its anti join and checks run concurrently): fewer large hash
        // tables are alive at once. On the cluster, sources read in one task each run together,
        // so that each keeps its own executor busy.
        let together = self.runner.is_some() && self.sources.iter().all(|s| s.trace.is_none() || self.in_one_task(s));
        let mut outputs = Vec::with_capacity(self.sources.len());
        for (i, source) in self.sources.iter().enumerate() {
            let counted = early.get_mut(i).and_then(Option::take);
            outputs.push(self.source_outputs(source, tmp.path(), &matched_path, &given, counted));
        }
        let results = if together {
            futures::future::try_join_all(outputs).await?
        } else {
            let mut results = Vec::with_capacity(outputs.len());
            for output in outputs {
                results.push(output.await?);
            }
            results
        };
        for (source, r) in self.sources.iter().zip(results) {
            total.insert(source.alias.clone(), r.total);
            unmatched.insert(source.alias.clone(), r.unmatched);
            unmatched_paths.insert(source.alias.clone(), r.path);
            if let Some(c) = r.checks {
                checks.insert(source.alias.clone(), c);
            }
        }
        timings.insert("writing_results_ms".into(), t.elapsed().as_millis() as u64);
        timings.insert("total_ms".into(), started.elapsed().as_millis() as u64);

        let counts = Counts { total, matched: matched_rows, unmatched };
        let output_paths = OutputPaths {
            matched: path_in(&given, MATCHED_FILE),
            unmatched: unmatched_paths,
            summary: path_in(&given, SUMMARY_FILE),
        };
        let now = crate::timestamp_now();
        let status = JobStatus {
            run_id: self.job.run_id.to_string(),
            status: JobState::Succeeded,
            stage: Stage::Done,
            progress: 1.0,
            mode: self.mode(),
            counts: Some(counts.clone()),
            output_paths: Some(output_paths.clone()),
            callback: None,
            error: None,
            submitted_at: self.planned_at.clone(),
            started_at: Some(started_at),
            finished_at: Some(now),
        };
        let snapshots = self.snapshots.audit().await;
        let summary = Summary { status, audit: self.audit(timings, checks, &snapshots) };
        let bytes = serde_json::to_vec_pretty(&summary)
            .map_err(|e| KallaError::new(ErrorCode::Internal, format!("cannot encode summary.json: {e}")))?;
        write_synced(&tmp.path().join(SUMMARY_FILE), &bytes)?;
        tmp.commit(&self.output.final_dir)?;
        Ok(RunOutcome { counts, output_paths, summary })
    }

    fn audit(
        &self,
        timings: BTreeMap<String, u64>,
        checks: BTreeMap<String, SourceChecks>,
        snapshots: &BTreeMap<String, (String, String)>,
    ) -> AuditTrail {
        AuditTrail {
            kallad_version: env!("CARGO_PKG_VERSION").to_string(),
            match_sql: self.job.match_sql.clone(),
            // Sources are planned in request order, one per request source.
            sources: self
                .sources
                .iter()
                .zip(&self.job.request.sources)
                .map(|(s, given)| AuditSource {
                    alias: s.alias.clone(),
                    uri: kalla_recipe::redact::redact_uri(&given.uri),
                    format: s.format,
                    primary_key: s.key.clone(),
                    filters: given.filters.clone(),
                    files: s.files.iter().map(FileAudit::from).collect(),
                    postgres: s.postgres.as_ref().and_then(|p| snapshots.get(&p.location.database_key())).map(
                        |(id, txid)| PostgresAudit { snapshot_id: id.clone(), txid_current_snapshot: txid.clone() },
                    ),
                })
                .collect(),
            stage_timings_ms: timings,
            checks,
        }
    }
}

/// The per-key row count the checks' first aggregation names `__kalla_n`.
fn per_key_rows() -> Expr {
    col_exact("__kalla_n")
}

/// `then` where `cond` holds, else 0.
fn when_true(cond: Expr, then: Expr) -> datafusion::common::Result<Expr> {
    case(cond).when(lit(true), then).otherwise(lit(0i64))
}

/// `ctx` planning one partition: a plan of it runs as one task on the cluster.
fn one_task(ctx: &SessionContext) -> SessionContext {
    let mut state = ctx.state();
    state.config_mut().options_mut().execution.target_partitions = 1;
    SessionContext::new_with_state(state)
}

/// The one row a query of counts without GROUP BY returns, as i64s (NULL as 0), wherever among
/// the batches it comes; any other number of rows is an error rather than counts read from
/// nowhere.
fn one_row_i64s(label: &str, batches: &[datafusion::arrow::array::RecordBatch]) -> Result<Vec<i64>, DataFusionError> {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::DataType;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0).filter(|_| rows == 1) else {
        return Err(DataFusionError::Internal(format!("{label}: {rows} rows where one row of counts was expected")));
    };
    batch
        .columns()
        .iter()
        .map(|c| {
            let c = datafusion::arrow::compute::cast(c, &DataType::Int64)?;
            let c = c
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| DataFusionError::Internal(format!("{label}: a count is not an integer")))?;
            Ok(if c.is_null(0) { 0 } else { c.value(0) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::one_row_i64s;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn counts(rows: Vec<Option<i64>>) -> RecordBatch {
        let schema =
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true), Field::new("m", DataType::Int64, true)]));
        let column = Arc::new(Int64Array::from(rows.clone()));
        let other = Arc::new(Int64Array::from(rows.iter().map(|r| r.map(|v| v * 10)).collect::<Vec<_>>()));
        RecordBatch::try_new(schema, vec![column, other]).unwrap()
    }

    /// Counts are read from the one row, even behind an empty batch (a stream merged from several
    /// partitions can start with one); a result of no row or of two rows is an error.
    #[test]
    fn counts_come_from_the_one_row_wherever_it_is_and_only_from_it() {
        assert_eq!(one_row_i64s("c", &[counts(vec![]), counts(vec![Some(3)])]).unwrap(), vec![3, 30]);
        assert_eq!(one_row_i64s("c", &[counts(vec![None])]).unwrap(), vec![0, 0]);
        let e = one_row_i64s("c", &[counts(vec![Some(1)]), counts(vec![Some(2)])]).unwrap_err();
        assert!(e.to_string().contains("c: 2 rows where one row of counts was expected"), "{e}");
        assert!(one_row_i64s("c", &[counts(vec![])]).is_err());
        assert!(one_row_i64s("c", &[]).is_err());
    }
}
