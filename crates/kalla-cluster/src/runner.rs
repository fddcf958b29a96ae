//! Runs one kallad job's plans as Ballista jobs on the registered executors.
//!
//! The scheduler plans each of the job's queries in-process (its session has the job's tables,
//! UDFs and cluster settings) and submits the *physical* plan to the embedded Ballista scheduler,
//! which cuts it into stages and hands tasks to the executors; tasks read their sources themselves
//! (Postgres partitions through Kalla's scan in the job's snapshot). When the Ballista job
//! succeeds, the final partitions are fetched over Arrow Flight from the executors that hold them,
//! all at once, and returned one stream per partition: the rows of a check, or, for an output,
//! the one `(path, rows)` row each partition's Parquet part reported (`kalla_core::parts`).
//!
//! Liveness: while a Ballista job is unfinished, the runner watches the live executors. Ballista
//! re-runs the tasks of a lost executor on the others; when none is left for `cluster_wait`, the
//! Ballista job is cancelled and the plan fails with `no_executors`. Dropping the future or the
//! result stream before the Ballista job ended cancels it (kallad's cancel and timeout drop them).

use crate::scheduler::EmbeddedScheduler;
use ballista_core::JobId;
use ballista_core::client::BallistaClient;
use ballista_core::serde::protobuf::{PartitionLocation, job_status, task_status};
use ballista_scheduler::state::execution_stage::ExecutionStage;
use datafusion::common::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use kalla_core::remote::PlanRunner;
use kalla_recipe::{ErrorCode, KallaError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often an unfinished Ballista job's status is read (its status channel wakes the wait too).
const STATUS_TICK: Duration = Duration::from_millis(100);
/// How many times a dropped job's Ballista job is cancelled before giving up (one per tick).
const CANCEL_ATTEMPTS: usize = 300;
/// How many times a plan runs at most when its results, though computed, cannot be fetched.
const RESULT_ATTEMPTS: usize = 3;
/// Largest Flight message accepted when fetching results.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Runs the plans of one kallad job on the cluster.
pub struct ClusterRunner {
    scheduler: Arc<EmbeddedScheduler>,
    run_id: String,
    cluster_wait: Duration,
    plans_expected: usize,
    /// Ballista jobs submitted for this run, in order.
    jobs: Arc<Mutex<Vec<Submitted>>>,
    outputs: ClusterOutputs,
}

/// Who writes a cluster job's output files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterOutputs {
    /// Each partition writes a Parquet part on its executor, into the run's temporary output
    /// directory (so `--output-dir` must be shared read-write); the scheduler joins the parts.
    Parts,
    /// The scheduler fetches every output row over Flight and writes the files itself (the
    /// executors only read `--output-dir`: the anti joins read `matched.parquet`).
    Fetch,
}

impl std::fmt::Debug for ClusterRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRunner").field("run_id", &self.run_id).finish_non_exhaustive()
    }
}

/// Input partitions of a stage whose tasks succeeded, and all its input partitions (an
/// unresolved stage, whose size is not known yet, counts as one).
fn stage_progress(stage: &ExecutionStage) -> (usize, usize) {
    match stage {
        ExecutionStage::Successful(s) => (s.partitions, s.partitions),
        ExecutionStage::Running(s) => {
            let mut covered = vec![false; s.partitions];
            let succeeded = s.task_infos.iter().filter(|t| matches!(t.task_status, task_status::Status::Successful(_)));
            for p in succeeded.flat_map(|t| &t.global_input_partition_ids) {
                if let Some(c) = covered.get_mut(*p) {
                    *c = true;
                }
            }
            (covered.iter().filter(|c| **c).count(), s.partitions)
        }
        ExecutionStage::Resolved(s) => (0, s.partitions),
        ExecutionStage::Failed(s) => (0, s.partitions),
        ExecutionStage::UnResolved(_) => (0, 1),
    }
}

/// A Ballista job of the run and whether it has ended.
type Submitted = (JobId, Arc<AtomicBool>);

fn failed(code: ErrorCode, message: String) -> DataFusionError {
    DataFusionError::External(Box::new(KallaError::new(code, message)))
}

/// Cancels a Ballista job when dropped before it ended.
struct CancelOnDrop {
    scheduler: Arc<EmbeddedScheduler>,
    job_id: Option<JobId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(job_id) = self.job_id.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let scheduler = Arc::clone(&self.scheduler);
            // A job still being planned is not in Ballista's active cache, where a cancel looks
            // for it, and would then start anyway: cancel until its status is final (bounded).
            handle.spawn(async move {
                tracing::info!(job_id = %job_id, "cancelling the Ballista job");
                for _ in 0..CANCEL_ATTEMPTS {
                    if let Err(e) = scheduler.server().cancel_job(job_id.clone()).await {
                        tracing::warn!(error = %e, "cannot cancel a Ballista job");
                    }
                    tokio::time::sleep(STATUS_TICK).await;
                    if let Ok(Some(job_status::Status::Failed(_) | job_status::Status::Successful(_))) =
                        scheduler.job_status(&job_id).await
                    {
                        return;
                    }
                }
                tracing::warn!(job_id = %job_id, "a cancelled Ballista job did not end");
            });
        }
    }
}

impl ClusterRunner {
    /// A runner for the job `run_id`, which will execute `plans_expected` plans.
    pub fn new(
        scheduler: Arc<EmbeddedScheduler>,
        run_id: String,
        cluster_wait: Duration,
        plans_expected: usize,
        outputs: ClusterOutputs,
    ) -> ClusterRunner {
        ClusterRunner {
            scheduler,
            run_id,
            cluster_wait,
            plans_expected,
            jobs: Arc::new(Mutex::new(Vec::new())),
            outputs,
        }
    }

    fn jobs(&self) -> Vec<Submitted> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Work done over work expected: each plan the run executes weighs the same; a plan's share
    /// is the fraction of its Ballista stages' input partitions whose tasks succeeded.
    pub async fn progress(&self) -> f64 {
        let server = self.scheduler.server();
        let running = server.state.task_manager.get_running_job_cache();
        let mut done = 0.0;
        for (job_id, ended) in self.jobs() {
            if ended.load(Ordering::SeqCst) {
                done += 1.0;
                continue;
            }
            done += match running.get(&job_id) {
                Some(info) => {
                    let graph = info.execution_graph.read().await;
                    let (finished, total) =
                        graph.stages().values().map(stage_progress).fold((0, 0), |(f, t), (sf, st)| (f + sf, t + st));
                    if total == 0 { 0.0 } else { finished as f64 / total as f64 }
                }
                // Queued, not planned into stages yet.
                None => 0.0,
            };
        }
        (done / self.plans_expected.max(1) as f64).min(kalla_core::progress::RUNNING_PROGRESS_CAP)
    }

    /// Waits for the Ballista job to end; its final partitions on success.
    async fn wait(
        scheduler: &EmbeddedScheduler,
        job_id: &JobId,
        label: &str,
        cluster_wait: Duration,
        mut updates: tokio::sync::mpsc::Receiver<ballista_core::serde::protobuf::JobStatus>,
    ) -> Result<Vec<PartitionLocation>, DataFusionError> {
        let mut updates_open = true;
        let mut without_executors: Option<Instant> = None;
        loop {
            let status = scheduler.job_status(job_id).await.map_err(|e| {
                DataFusionError::Execution(format!("{label}: cannot read the Ballista job status: {e}"))
            })?;
            match status {
                Some(job_status::Status::Successful(s)) => return Ok(s.partition_location),
                Some(job_status::Status::Failed(f)) => {
                    let e = match kalla_error_in(&f.error) {
                        Some(k) => k,
                        None => KallaError::new(
                            ErrorCode::Internal,
                            format!("{label}: the cluster job failed: {}", f.error),
                        ),
                    };
                    return Err(DataFusionError::External(Box::new(e)));
                }
                _ => {}
            }
            if scheduler.live_executors().await.is_empty() {
                let since = *without_executors.get_or_insert_with(Instant::now);
                if since.elapsed() >= cluster_wait {
                    return Err(failed(
                        ErrorCode::NoExecutors,
                        format!(
                            "{label}: no live executor for {} (--cluster-wait); the job cannot go on",
                            humantime_secs(cluster_wait)
                        ),
                    ));
                }
            } else {
                without_executors = None;
            }
            if updates_open {
                tokio::select! {
                    u = updates.recv() => updates_open = u.is_some(),
                    _ = tokio::time::sleep(STATUS_TICK) => {}
                }
            } else {
                tokio::time::sleep(STATUS_TICK).await;
            }
        }
    }
}

/// The Kalla error inside a Ballista failure message. Errors cross from the executors as text:
/// Ballista formats a failed task's error with `{:?}` (and the stage failure quotes that again
/// with `{:?}`), so a `KallaError` arrives as `KallaError { code: SourceReadFailed, message:
/// "…", … }` under one or more levels of Debug escaping; Display text (`source_read_failed: …`)
/// is recognised too. DataFusion's `ResourcesExhausted` is a memory limit. Anything else is not
/// Kalla's and becomes `internal` with the whole text.
fn kalla_error_in(text: &str) -> Option<KallaError> {
    debug_form(text).or_else(|| display_form(text)).or_else(|| {
        text.contains("ResourcesExhausted").then(|| {
            KallaError::new(
                ErrorCode::MemoryLimitExceeded,
                format!("an executor ran out of its memory pool (--memory-limit) and could not spill: {text}"),
            )
        })
    })
}

/// `code` as the API spells it, from `SourceReadFailed` or `source_read_failed`.
fn error_code(token: &str) -> Option<ErrorCode> {
    let mut snake = String::new();
    for (i, c) in token.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    serde_json::from_value(serde_json::Value::String(snake)).ok()
}

/// One level of Rust Debug string escaping undone.
fn unescape_once(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn debug_form(text: &str) -> Option<KallaError> {
    let at = text.find("KallaError { code: ")?;
    let rest = &text[at + "KallaError { code: ".len()..];
    let token: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    let code = error_code(&token)?;
    let after = &rest[token.len()..];
    let m = after.find("message: ")?;
    let quoted = &after[m + "message: ".len()..];
    // The opening quote tells how deep the escaping goes: `"`, `\"`, `\\\"`, …
    let slashes = quoted.chars().take_while(|c| *c == '\\').count();
    if !quoted[slashes..].starts_with('"') {
        return None;
    }
    let delimiter = &quoted[..=slashes];
    let body = &quoted[slashes + 1..];
    // The closing delimiter is the first one not itself escaped (preceded by a backslash).
    let mut end = None;
    for (i, _) in body.match_indices(delimiter) {
        if !body[..i].ends_with('\\') {
            end = Some(i);
            break;
        }
    }
    let mut message = body[..end?].to_string();
    // Each level of Debug doubles the backslashes: 0 → one level, 1 → two, 3 → three, …
    let mut levels = 1;
    let mut width = slashes;
    while width > 0 {
        levels += 1;
        width /= 2;
    }
    for _ in 0..levels {
        message = unescape_once(&message);
    }
    Some(KallaError::new(code, message))
}

fn display_form(text: &str) -> Option<KallaError> {
    for (at, _) in text.match_indices(": ") {
        let start = text[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_lowercase() || *c == '_'))
            .map_or(0, |(p, c)| p + c.len_utf8());
        let token = &text[start..at];
        if token.is_empty() {
            continue;
        }
        let Some(code) = error_code(token) else { continue };
        let message = text[at + 2..].lines().next().unwrap_or_default();
        let message = message.trim_end_matches(|c: char| c == '"' || c == ')' || c == ']' || c.is_whitespace());
        return Some(KallaError::new(code, message.to_string()));
    }
    None
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// One location per final partition, `0..n`. Ballista appends a location each time a final
/// task succeeds and never removes one, so a final task run again (its executor was lost, or its
/// input was re-computed) leaves two entries for one partition: the last one counts. Fetching both
/// would duplicate rows. The partition ids must be `0..n` without a gap (Ballista's final stage
/// may have another partition count than the submitted plan, so `n` is what it reports).
fn final_partitions(locations: Vec<PartitionLocation>, label: &str) -> Result<Vec<PartitionLocation>, DataFusionError> {
    let mut by_partition: std::collections::BTreeMap<u32, PartitionLocation> = std::collections::BTreeMap::new();
    for location in locations {
        let Some(id) = location.partition_id.as_ref().map(|p| p.partition_id) else {
            return Err(failed(
                ErrorCode::Internal,
                format!("{label}: the cluster reported a result without its partition"),
            ));
        };
        by_partition.insert(id, location);
    }
    for (expected, id) in by_partition.keys().enumerate() {
        if *id as usize != expected {
            return Err(failed(
                ErrorCode::Internal,
                format!("{label}: the cluster reported no result for partition {expected} (next: {id})"),
            ));
        }
    }
    Ok(by_partition.into_values().collect())
}

/// Results that could not be fetched because their executor could not be reached or stopped
/// answering: what running the plan again can fix (the executor was lost after the Ballista job
/// succeeded). Any other fetch failure (a malformed location, undecodable data) is not retried.
#[derive(Debug)]
struct ResultsLost(String);

impl std::fmt::Display for ResultsLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResultsLost {}

fn lost(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(ResultsLost(message)))
}

fn is_lost(e: &DataFusionError) -> bool {
    matches!(e, DataFusionError::External(inner) if inner.downcast_ref::<ResultsLost>().is_some())
}

/// The rows of one final partition, fetched over Flight from the executor that holds it.
async fn fetch(location: PartitionLocation) -> Result<SendableRecordBatchStream, DataFusionError> {
    use ballista_core::error::BallistaError;
    let layout = location.layout();
    let meta = location
        .executor_meta
        .ok_or_else(|| DataFusionError::Internal("a result partition without its executor".into()))?;
    let partition_id =
        location.partition_id.ok_or_else(|| DataFusionError::Internal("a result partition without its id".into()))?;
    let port = u16::try_from(meta.port)
        .map_err(|_| DataFusionError::Internal(format!("executor {} has a bad Flight port", meta.id)))?;
    let mut client = BallistaClient::try_new(&meta.host, port, MAX_MESSAGE, false, None, 3, 200, 0, 0)
        .await
        .map_err(|e| lost(format!("cannot reach executor {} at {}:{port}: {e}", meta.id, meta.host)))?;
    client.fetch_partition(&meta.id, &partition_id.into(), location.file_id, layout, true).await.map_err(|e| {
        let message = format!("cannot fetch a result partition from {}: {e}", meta.id);
        match e {
            BallistaError::FetchFailed(..)
            | BallistaError::GrpcActionError(_)
            | BallistaError::GrpcConnectionError(_)
            | BallistaError::GrpcError(_)
            | BallistaError::TonicError(_)
            | BallistaError::IoError(_) => lost(message),
            _ => DataFusionError::Execution(message),
        }
    })
}

/// Fetches every final partition at once (decoding one overlaps with transferring the others and
/// with the caller's work). With `buffered`, each is read to its end here, so that an executor
/// lost while its rows travel fails this call (which can be retried) rather than the caller's
/// read of the stream.
async fn fetch_all(
    locations: Vec<PartitionLocation>,
    buffered: bool,
) -> Result<Vec<SendableRecordBatchStream>, DataFusionError> {
    let streams = futures::future::try_join_all(locations.into_iter().map(fetch)).await?;
    if !buffered {
        return Ok(streams);
    }
    futures::future::try_join_all(streams.into_iter().map(|stream| async move {
        let schema = stream.schema();
        // A transport error while the rows travel (the executor stopped answering) is a loss.
        let batches = datafusion::physical_plan::common::collect(stream).await.map_err(|e| match &e {
            DataFusionError::ArrowError(inner, _)
                if matches!(**inner, datafusion::arrow::error::ArrowError::ExternalError(_)) =>
            {
                lost(format!("a result partition stopped arriving: {e}"))
            }
            _ => e,
        })?;
        let stream = datafusion::physical_plan::memory::MemoryStream::try_new(batches, schema, None)?;
        Ok::<SendableRecordBatchStream, DataFusionError>(Box::pin(stream))
    }))
    .await
}

/// Where the final partitions are, one `host:port` (Flight) per line: what a test stopped at the
/// `before-fetch` pause point learns.
fn holders(locations: &[PartitionLocation]) -> String {
    locations.iter().filter_map(|l| l.executor_meta.as_ref().map(|m| format!("{}:{}\n", m.host, m.port))).collect()
}

impl ClusterRunner {
    /// Submits `plan` as one Ballista job and waits for it; the job and its final partitions'
    /// locations.
    async fn submit_and_wait(
        scheduler: &Arc<EmbeddedScheduler>,
        run_id: &str,
        label: &str,
        plan: Arc<dyn ExecutionPlan>,
        ctx: &SessionContext,
        cluster_wait: Duration,
        jobs: &Mutex<Vec<Submitted>>,
    ) -> Result<(JobId, Vec<PartitionLocation>), DataFusionError> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let job_id = scheduler
            .server()
            .submit_physical_plan(&format!("{run_id}: {label}"), Arc::new(ctx.clone()), plan, Some(tx))
            .await
            .map_err(|e| DataFusionError::Execution(format!("{label}: Ballista refused the plan: {e}")))?;
        tracing::info!(job_id = %job_id, plan = %label, "submitted to the cluster");
        let ended = Arc::new(AtomicBool::new(false));
        jobs.lock().unwrap_or_else(|p| p.into_inner()).push((job_id.clone(), Arc::clone(&ended)));
        let mut guard = CancelOnDrop { scheduler: Arc::clone(scheduler), job_id: Some(job_id.clone()) };
        let outcome = Self::wait(scheduler, &job_id, label, cluster_wait, rx).await;
        ended.store(true, Ordering::SeqCst);
        // Ended: nothing to cancel any more (a failed wait keeps the guard armed, so a job
        // given up for lack of executors is cancelled).
        let locations = outcome?;
        guard.job_id = None;
        Ok((job_id, final_partitions(locations, label)?))
    }
}

impl PlanRunner for ClusterRunner {
    /// Runs `plan` as a Ballista job and fetches its final partitions. When they cannot be
    /// fetched although the job succeeded because the executor holding them cannot be reached or
    /// stopped answering (it was lost in between, or while they travelled; not for any other
    /// fetch error), the plan runs again as a new Ballista job, up to
    /// [`RESULT_ATTEMPTS`] times in all: a rerun is safe, since a plan only reads its sources
    /// (Postgres in the job's snapshot) and writes parts under fresh names, of which only those
    /// the final partitions report are used. With `--cluster-outputs parts` every result is
    /// small (a check's counts, a part's report) and is read to its end before it is returned;
    /// with `fetch`, output rows stream to the caller, and a loss after the first bytes arrived
    /// fails the job.
    fn execute(
        &self,
        label: String,
        plan: Arc<dyn ExecutionPlan>,
        ctx: SessionContext,
    ) -> BoxFuture<'static, Result<Vec<SendableRecordBatchStream>, DataFusionError>> {
        let scheduler = Arc::clone(&self.scheduler);
        let run_id = self.run_id.clone();
        let cluster_wait = self.cluster_wait;
        let jobs = Arc::clone(&self.jobs);
        let buffered = self.outputs == ClusterOutputs::Parts;
        Box::pin(async move {
            let mut attempt = 1;
            loop {
                let (job_id, locations) =
                    Self::submit_and_wait(&scheduler, &run_id, &label, Arc::clone(&plan), &ctx, cluster_wait, &jobs)
                        .await?;
                kalla_core::fault::pause_point("before-fetch", || holders(&locations)).await;
                match fetch_all(locations, buffered).await {
                    Ok(streams) => return Ok(streams),
                    Err(e) if attempt < RESULT_ATTEMPTS && is_lost(&e) => {
                        tracing::warn!(
                            plan = %label, attempt, error = %e,
                            "the cluster job succeeded but its results could not be fetched; running the plan again"
                        );
                        // The superseded job no longer counts towards the run's progress.
                        jobs.lock().unwrap_or_else(|p| p.into_inner()).retain(|(id, _)| *id != job_id);
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }

    fn writes_parts(&self) -> bool {
        self.outputs == ClusterOutputs::Parts
    }

    /// The job's session with DataFusion's join selection and Ballista's broadcast rule both
    /// allowing a build side up to [`kalla_core::session::CLUSTER_KEY_BROADCAST_BYTES`]
    /// (estimated): a side of keys is sent to every task instead of both sides being shuffled.
    fn key_join_session(&self, ctx: &SessionContext) -> Result<SessionContext, DataFusionError> {
        key_broadcast_session(ctx)
    }
}

/// See [`ClusterRunner::key_join_session`]; the rows fallback (for a side without a size
/// estimate) stays at the cluster's.
fn key_broadcast_session(ctx: &SessionContext) -> Result<SessionContext, DataFusionError> {
    let mut state = ctx.state();
    let options = state.config_mut().options_mut();
    options.optimizer.hash_join_single_partition_threshold = kalla_core::session::CLUSTER_KEY_BROADCAST_BYTES;
    set_ballista_broadcast_bytes(options, kalla_core::session::CLUSTER_KEY_BROADCAST_BYTES)?;
    Ok(SessionContext::new_with_state(state))
}

/// Sets the size under which Ballista's planner broadcasts a join side (registering Ballista's
/// settings in `options` when they are not there yet).
fn set_ballista_broadcast_bytes(
    options: &mut datafusion::common::config::ConfigOptions,
    bytes: usize,
) -> Result<(), DataFusionError> {
    if options.extensions.get::<ballista_core::config::BallistaConfig>().is_none() {
        options.extensions.insert(ballista_core::config::BallistaConfig::default());
    }
    options.set(ballista_core::config::BALLISTA_BROADCAST_JOIN_THRESHOLD_BYTES, &bytes.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location_at(port: u32) -> PartitionLocation {
        use ballista_core::serde::protobuf::{ExecutorMetadata, PartitionId};
        PartitionLocation {
            partition_id: Some(PartitionId { job_id: "j".into(), stage_id: 1, partition_id: 0 }),
            executor_meta: Some(ExecutorMetadata {
                id: "gone".into(),
                host: "127.0.0.1".into(),
                port,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Only a holder that cannot be reached counts as results lost with their executor (the plan
    /// then runs again); a location that cannot be right fails at once.
    #[tokio::test]
    async fn results_count_as_lost_only_when_their_executor_cannot_be_reached() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = fetch(location_at(u32::from(closed))).await.err().expect("nothing listens there");
        assert!(is_lost(&e), "{e}");
        let e = fetch(location_at(70_000)).await.err().expect("no such port");
        assert!(!is_lost(&e), "{e}");
        assert!(e.to_string().contains("bad Flight port"), "{e}");
    }

    use ballista_core::error::BallistaError;
    use ballista_core::serde::protobuf::FailedTask;

    /// The text Ballista's scheduler reports for a job whose task failed with `e`: the failed
    /// task's error, quoted again by the stage failure.
    fn reported(e: DataFusionError) -> String {
        let task = FailedTask::from(BallistaError::DataFusionError(Box::new(e)));
        format!(
            "Job failed due to stage 2 failed: Task [0] in Stage 2 failed 4 times, most recent failure reason: {:?}\n",
            task.error
        )
    }

    #[test]
    fn kalla_errors_are_recovered_from_what_ballista_reports() {
        let k = KallaError::new(ErrorCode::SourceReadFailed, "source t: column größe: \"NaN\" is not a decimal");
        let e = kalla_error_in(&reported(DataFusionError::External(Box::new(k.clone())))).unwrap();
        assert_eq!((e.code, e.message.as_str()), (k.code, k.message.as_str()));
        // A transient read travels as an I/O error carrying the same error.
        let io = DataFusionError::IoError(std::io::Error::other(k.clone()));
        let e = kalla_error_in(&reported(io)).unwrap();
        assert_eq!((e.code, e.message.as_str()), (k.code, k.message.as_str()));
        let oom = kalla_error_in(&reported(DataFusionError::ResourcesExhausted("hash join".into()))).unwrap();
        assert_eq!(oom.code, ErrorCode::MemoryLimitExceeded);
        let e = kalla_error_in("External error: source_read_failed: source ä: bad value").unwrap();
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::SourceReadFailed, "source ä: bad value"));
        assert!(kalla_error_in("Ärger: Arrow error: Invalid argument error: nothing of ours").is_none());
        assert!(kalla_error_in(&reported(DataFusionError::Execution("plain".into()))).is_none());
    }

    fn location(partition: u32, executor: &str) -> PartitionLocation {
        PartitionLocation {
            partition_id: Some(ballista_core::serde::protobuf::PartitionId {
                job_id: "j".into(),
                stage_id: 3,
                partition_id: partition,
            }),
            executor_meta: Some(ballista_core::serde::protobuf::ExecutorMetadata {
                id: executor.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_final_partition_run_twice_is_fetched_once_and_a_missing_one_fails() {
        let executor = |l: &PartitionLocation| l.executor_meta.as_ref().unwrap().id.clone();
        let got = final_partitions(vec![location(1, "a"), location(0, "a"), location(1, "b")], "m").unwrap();
        assert_eq!(got.iter().map(executor).collect::<Vec<_>>(), ["a", "b"]);
        let e = final_partitions(vec![location(0, "a"), location(2, "a")], "m").unwrap_err();
        assert!(e.to_string().contains("no result for partition 1"), "{e}");
    }
}

/// Prepares a job's session for planning for the cluster: DataFusion's settings
/// ([`kalla_core::session::apply_cluster_settings`], `target_partitions` included), then
/// Ballista's own, which its distributed planner reads from the session each plan is submitted
/// with: a hash join is broadcast only when its smaller side is estimated under
/// [`kalla_core::session::CLUSTER_BROADCAST_BYTES`], the limit DataFusion's join selection uses too.
pub fn apply_cluster_session_settings(ctx: &SessionContext, target_partitions: usize) -> Result<(), DataFusionError> {
    kalla_core::session::apply_cluster_settings(ctx, target_partitions);
    let state = ctx.state_ref();
    let mut state = state.write();
    set_ballista_broadcast_bytes(state.config_mut().options_mut(), kalla_core::session::CLUSTER_BROADCAST_BYTES)
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn cluster_jobs_broadcast_only_join_sides_under_kallas_limit() {
        let ctx = kalla_core::session::new_session(2, None).unwrap();
        apply_cluster_session_settings(&ctx, 2).unwrap();
        let state = ctx.state();
        let ballista = state.config().options().extensions.get::<ballista_core::config::BallistaConfig>().unwrap();
        assert_eq!(ballista.broadcast_join_threshold_bytes(), 32 * 1024 * 1024);
        assert_eq!(state.config().options().optimizer.hash_join_single_partition_threshold, 32 * 1024 * 1024);
    }

    /// One Int64 column `name` of `rows` values (about 8 bytes each in Arrow) into `path`.
    fn int_parquet(path: &std::path::Path, names: &[&str], rows: i64) {
        use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema =
            Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Int64, false)).collect::<Vec<_>>()));
        let file = std::fs::File::create(path).unwrap();
        let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), None).unwrap();
        let step = 1_000_000;
        for start in (0..rows).step_by(step) {
            let column: ArrayRef = Arc::new(Int64Array::from_iter_values(start..(start + step as i64).min(rows)));
            let batch = RecordBatch::try_new(Arc::clone(&schema), vec![column; names.len()]).unwrap();
            writer.write(&batch).unwrap();
        }
        writer.close().unwrap();
    }

    fn hash_join_mode(plan: &Arc<dyn ExecutionPlan>) -> Option<datafusion::physical_plan::joins::PartitionMode> {
        if let Some(j) = plan.downcast_ref::<datafusion::physical_plan::joins::HashJoinExec>() {
            return Some(*j.partition_mode());
        }
        plan.children().into_iter().find_map(hash_join_mode)
    }

    fn has_broadcast_input(plan: &Arc<dyn ExecutionPlan>) -> bool {
        plan.downcast_ref::<ballista_core::execution_plans::UnresolvedShuffleExec>().is_some_and(|u| u.broadcast)
            || plan.children().into_iter().any(has_broadcast_input)
    }

    /// Whether Ballista's planner, given `ctx`'s settings, cuts `plan` into stages with a
    /// broadcast input.
    fn ballista_broadcasts(ctx: &SessionContext, plan: Arc<dyn ExecutionPlan>) -> bool {
        use ballista_scheduler::planner::{DefaultDistributedPlanner, DistributedPlanner};
        let state = ctx.state();
        let stages = DefaultDistributedPlanner::new()
            .plan_query_stages(&ballista_core::JobId::new("t"), plan, state.config().options())
            .unwrap();
        stages.iter().any(|s| {
            let plan: Arc<dyn ExecutionPlan> = Arc::clone(s) as Arc<dyn ExecutionPlan>;
            has_broadcast_input(&plan)
        })
    }

    /// 5M matched keys (about 40 MB) sit between the ordinary limit and the key limit: the
    /// anti join shuffles both sides in the job's session and sends the keys to every task in
    /// the key session, in DataFusion's join selection and in Ballista's stage planning alike.
    #[tokio::test]
    async fn an_anti_join_against_keys_over_the_join_limit_is_broadcast_only_as_a_key_join() {
        use datafusion::physical_plan::joins::PartitionMode;
        use datafusion::prelude::{ParquetReadOptions, col};
        let dir = tempfile::tempdir().unwrap();
        let (keys, rows) = (dir.path().join("keys.parquet"), dir.path().join("rows.parquet"));
        int_parquet(&keys, &["k"], 5_000_000);
        int_parquet(&rows, &["id", "v"], 6_000_000);
        let ctx = kalla_core::session::new_session(2, None).unwrap();
        apply_cluster_session_settings(&ctx, 2).unwrap();
        let read = |path: &std::path::Path| {
            ctx.read_parquet(path.to_string_lossy().to_string(), ParquetReadOptions::default())
        };
        let anti = read(&rows)
            .await
            .unwrap()
            .join_on(read(&keys).await.unwrap(), datafusion::common::JoinType::LeftAnti, vec![col("id").eq(col("k"))])
            .unwrap();
        let plan_in = |c: &SessionContext| {
            let logical = anti.clone().into_unoptimized_plan();
            let state = c.state();
            async move { datafusion::prelude::DataFrame::new(state, logical).create_physical_plan().await.unwrap() }
        };
        let ordinary = plan_in(&ctx).await;
        assert_eq!(hash_join_mode(&ordinary), Some(PartitionMode::Partitioned));
        assert!(!ballista_broadcasts(&ctx, ordinary));
        let key_ctx = key_broadcast_session(&ctx).unwrap();
        let keyed = plan_in(&key_ctx).await;
        assert_eq!(hash_join_mode(&keyed), Some(PartitionMode::CollectLeft));
        assert!(ballista_broadcasts(&key_ctx, Arc::clone(&keyed)));
        // Ballista would demote the same plan under the job session's limit.
        assert!(!ballista_broadcasts(&ctx, keyed));
    }

    /// Ids `from..to` in column `name`, one Parquet file.
    fn ids_parquet(path: &std::path::Path, name: &str, ids: impl Iterator<Item = i64>) {
        use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Int64, false)]));
        let column: ArrayRef = Arc::new(Int64Array::from_iter_values(ids));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![column]).unwrap();
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    /// An anti join against keys in the run's output directory is one Ballista stage, without the
    /// broadcast stage Ballista cuts for any `CollectLeft` join; when Ballista slices that stage
    /// into tasks, each task (its plan shipped through the cluster codec) reads every key and only
    /// its own probe rows, so the tasks' rows together are the anti join's, each exactly once.
    #[tokio::test]
    async fn an_anti_join_against_the_runs_keys_is_one_stage_whose_tasks_each_read_every_key() {
        use ballista_scheduler::planner::{DefaultDistributedPlanner, DistributedPlanner};
        use ballista_scheduler::state::task_builder::restrict_plan_to_partitions;
        use datafusion::physical_plan::joins::PartitionMode;
        use datafusion::prelude::{ParquetReadOptions, col};
        use datafusion_proto::bytes::{
            physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
        };
        let dir = tempfile::tempdir().unwrap();
        let (outputs, rows) = (dir.path().join("r.tmp-run-1"), dir.path().join("rows"));
        std::fs::create_dir_all(&outputs).unwrap();
        std::fs::create_dir_all(&rows).unwrap();
        let keys = outputs.join("matched.parquet");
        // Matched keys: the even ids. Probe: ids 0..30,000 in three files (three partitions).
        ids_parquet(&keys, "k", (0..30_000).step_by(2));
        for f in 0..3 {
            ids_parquet(&rows.join(format!("part-{f}.parquet")), "id", f * 10_000..(f + 1) * 10_000);
        }
        let ctx = kalla_core::session::new_session(3, None).unwrap();
        apply_cluster_session_settings(&ctx, 3).unwrap();
        let key_ctx = key_broadcast_session(&ctx).unwrap();
        let read = |path: &std::path::Path| {
            key_ctx.read_parquet(path.to_string_lossy().to_string(), ParquetReadOptions::default())
        };
        let anti = read(&rows)
            .await
            .unwrap()
            .join_on(read(&keys).await.unwrap(), datafusion::common::JoinType::LeftAnti, vec![col("id").eq(col("k"))])
            .unwrap();
        let plan = anti.create_physical_plan().await.unwrap();
        assert_eq!(hash_join_mode(&plan), Some(PartitionMode::CollectLeft));
        assert!(ballista_broadcasts(&key_ctx, Arc::clone(&plan)));

        let reads = kalla_core::progress::ReadTracker::new(&[], Vec::new(), Vec::new(), "run-1");
        let wrapped = kalla_core::keyjoin::build_in_each_task(plan, &reads).unwrap();
        assert_eq!(hash_join_mode(&wrapped), None, "the join is hidden from Ballista");
        let state = key_ctx.state();
        let stages = DefaultDistributedPlanner::new()
            .plan_query_stages(&ballista_core::JobId::new("t"), wrapped, state.config().options())
            .unwrap();
        assert_eq!(stages.len(), 1);
        let stage: Arc<dyn ExecutionPlan> = Arc::clone(&stages[0]) as Arc<dyn ExecutionPlan>;
        assert!(!has_broadcast_input(&stage));
        let input = Arc::clone(stage.children()[0]);
        assert_eq!(input.properties().output_partitioning().partition_count(), 3);

        let codec = crate::codec::ClusterCodec::default();
        let mut ids = Vec::new();
        for task in 0..3 {
            let sliced = restrict_plan_to_partitions(Arc::clone(&input), &[task]).unwrap();
            let bytes = physical_plan_to_bytes_with_extension_codec(sliced, &codec).unwrap();
            let shipped = physical_plan_from_bytes_with_extension_codec(&bytes, &ctx.task_ctx(), &codec).unwrap();
            assert_eq!(shipped.properties().output_partitioning().partition_count(), 1);
            let batches = datafusion::physical_plan::collect(shipped, ctx.task_ctx()).await.unwrap();
            for b in batches {
                let column = b.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap();
                ids.extend(column.values().iter().copied());
            }
        }
        ids.sort_unstable();
        assert_eq!(ids, (1..30_000).step_by(2).collect::<Vec<i64>>());
    }

    #[test]
    fn key_joins_broadcast_up_to_ballistas_default_limit_and_leave_the_job_session_alone() {
        let ctx = kalla_core::session::new_session(2, None).unwrap();
        apply_cluster_session_settings(&ctx, 2).unwrap();
        let keys = key_broadcast_session(&ctx).unwrap();
        let state = keys.state();
        let ballista = state.config().options().extensions.get::<ballista_core::config::BallistaConfig>().unwrap();
        assert_eq!(ballista.broadcast_join_threshold_bytes(), 128 * 1024 * 1024);
        assert_eq!(state.config().options().optimizer.hash_join_single_partition_threshold, 128 * 1024 * 1024);
        assert_eq!(state.config().options().optimizer.hash_join_single_partition_threshold_rows, 1_000_000);
        // The job's own session keeps the limit its ordinary joins are planned with.
        let job = ctx.state();
        let ballista = job.config().options().extensions.get::<ballista_core::config::BallistaConfig>().unwrap();
        assert_eq!(ballista.broadcast_join_threshold_bytes(), 32 * 1024 * 1024);
        assert_eq!(job.config().options().optimizer.hash_join_single_partition_threshold, 32 * 1024 * 1024);
    }
}
