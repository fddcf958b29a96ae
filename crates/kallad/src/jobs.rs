//! The job manager: admission, the bounded queue, concurrency, cancellation and timeouts.
//!
//! Submission plans the job fully (bounded by [`VALIDATION_BUDGET`]) before answering, so every
//! error a caller can fix is a 422. An admitted job waits for one of `max_concurrent_jobs`
//! permits, then runs; cancel and timeout drop the running future, which stops DataFusion's
//! streams and removes the job's temporary output directory.

use crate::callbacks::Callbacks;
use crate::journal::{Journal, Record, request_digest};
use crate::metrics::Metrics;
use crate::scheduler::ModeArg;
use futures::FutureExt;
use kalla_cluster::runner::ClusterRunner;
use kalla_cluster::scheduler::EmbeddedScheduler;
use kalla_core::progress::{ReadCounts, ReadTracker};
use kalla_core::session::new_session;
use kalla_core::timestamp_now as now;
use kalla_core::{EngineConfig, PlanDescription, PlannedJob, RunObserver, plan_job};
use kalla_recipe::{CallbackStatus, ErrorCode, JobRequest, JobState, JobStatus, KallaError, Mode, Stage};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// On shutdown, how long final callbacks may take to get their first attempt out.
const CALLBACK_DRAIN: Duration = Duration::from_secs(10);

/// How often a running job's progress is read.
const PROGRESS_TICK: Duration = Duration::from_millis(500);

/// Adds what the sources delivered since the last flush to the read metrics.
#[derive(Default)]
struct ReadMeter {
    seen: std::collections::BTreeMap<String, ReadCounts>,
}

impl ReadMeter {
    fn flush(&mut self, reads: &ReadTracker, metrics: &Metrics) {
        for (kind, now) in reads.counts() {
            let before = self.seen.entry(kind.clone()).or_default();
            metrics.source_read(&kind, now.rows.saturating_sub(before.rows), now.bytes.saturating_sub(before.bytes));
            *before = now;
        }
    }
}

/// How long submission may spend validating a job.
pub(crate) const VALIDATION_BUDGET: Duration = Duration::from_secs(10);

/// Settings of the job manager.
#[derive(Debug, Clone)]
pub(crate) struct ManagerConfig {
    pub(crate) data_dir: std::path::PathBuf,
    pub(crate) output_dir: std::path::PathBuf,
    pub(crate) partitions: usize,
    /// See `EngineConfig::rows_per_partition`.
    pub(crate) rows_per_partition: Option<u64>,
    pub(crate) max_concurrent_jobs: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) job_timeout: Duration,
    pub(crate) memory_pool: Option<Arc<dyn datafusion::execution::memory_pool::MemoryPool>>,
    pub(crate) callbacks: Callbacks,
    pub(crate) journal: Journal,
    /// How long finished jobs stay queryable.
    pub(crate) retention: Duration,
    /// The embedded scheduler and how to use it; `None`: every job runs in-process.
    pub(crate) cluster: Option<ClusterConfig>,
}

/// How jobs use the cluster.
#[derive(Clone)]
pub(crate) struct ClusterConfig {
    pub(crate) scheduler: Arc<EmbeddedScheduler>,
    pub(crate) mode: ModeArg,
    pub(crate) cluster_wait: Duration,
    /// Who writes the output files of a cluster job.
    pub(crate) outputs: kalla_cluster::runner::ClusterOutputs,
    /// `--partitions` when given; else a cluster job takes the live executors' task slots.
    pub(crate) partitions: Option<usize>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("mode", &self.mode)
            .field("cluster_wait", &self.cluster_wait)
            .field("outputs", &self.outputs)
            .finish()
    }
}

/// How often a `cluster` job waiting for its first executor looks again.
const EXECUTOR_POLL: Duration = Duration::from_millis(200);

/// What a submission answered.
#[derive(Debug)]
pub(crate) enum Submitted {
    /// A new job, queued.
    Queued(JobStatus),
    /// The same request again: the job's current status.
    Existing(JobStatus),
}

struct Job {
    /// SHA-256 of the request as parsed (canonical JSON: object keys sorted), for idempotency.
    request: String,
    status: JobStatus,
    cancel: CancellationToken,
    /// When it started running.
    started: Option<std::time::Instant>,
    /// Callback base URL.
    callback_url: Option<String>,
    /// Source aliases in request order ("left" and "right" of the callbacks are the first two).
    aliases: Vec<String>,
    /// When the last progress callback went out (at most one a second), and what it said.
    last_progress: Option<(std::time::Instant, Stage, f64)>,
    /// Rows read from the sources so far.
    rows_read: u64,
    /// The run's temporary output directory.
    tmp_dir: Option<std::path::PathBuf>,
    /// The output directory it will commit (jobs of this process only).
    output: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct State {
    jobs: HashMap<Uuid, Job>,
    /// Run ids, oldest first.
    order: VecDeque<Uuid>,
    queued: usize,
    running: usize,
    draining: bool,
}

/// Owns every job of this daemon.
pub(crate) struct JobManager {
    config: ManagerConfig,
    pub(crate) metrics: Metrics,
    state: Mutex<State>,
    permits: Arc<Semaphore>,
    /// Final callbacks whose first attempt has not yet been made (drain waits for them).
    unattempted: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManager").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Canonical JSON: the same document whatever the key order or whitespace of the body.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), canonical(&map[k]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

struct StageObserver {
    manager: Arc<JobManager>,
    run_id: Uuid,
}

impl RunObserver for StageObserver {
    fn stage(&self, stage: Stage) {
        self.manager.update(self.run_id, |s| s.stage = stage);
        self.manager.progress_callback(self.run_id);
    }
}

impl JobManager {
    pub(crate) fn new(config: ManagerConfig) -> Arc<JobManager> {
        let permits = Arc::new(Semaphore::new(config.max_concurrent_jobs.max(1)));
        let metrics = Metrics::new(config.memory_pool.clone());
        Arc::new(JobManager {
            config,
            metrics,
            state: Mutex::new(State::default()),
            permits,
            unattempted: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated in a way that matters
        // more than losing the daemon, so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, run_id: Uuid, f: impl FnOnce(&mut JobStatus)) {
        if let Some(job) = self.lock().jobs.get_mut(&run_id) {
            f(&mut job.status);
        }
    }

    fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            data_dir: self.config.data_dir.clone(),
            output_dir: self.config.output_dir.clone(),
            roundtrip_plans: false,
            rows_per_partition: self.config.rows_per_partition,
        }
    }

    /// Parses, validates and plans a request within the validation budget.
    async fn plan(&self, body: &[u8]) -> Result<(Value, PlannedJob), KallaError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| KallaError::new(ErrorCode::BadJson, format!("the body is not valid JSON: {e}")))?;
        let job = JobRequest::from_value(value.clone())?.validate()?;
        let ctx = new_session(self.config.partitions, self.config.memory_pool.clone())
            .map_err(|e| KallaError::new(ErrorCode::Internal, e.to_string()))?;
        // A panic while planning (a DataFusion bug) answers this request with an error instead of
        // dropping its connection.
        let planning = std::panic::AssertUnwindSafe(plan_job(ctx, job, self.engine_config())).catch_unwind();
        let planned = tokio::time::timeout(VALIDATION_BUDGET, planning)
            .await
            .map_err(|_| {
                KallaError::new(
                    ErrorCode::SourceUnreachable,
                    format!("validating the job took longer than {}s", VALIDATION_BUDGET.as_secs()),
                )
            })?
            .map_err(|_| {
                KallaError::new(ErrorCode::Internal, "planning failed unexpectedly (a bug); see the daemon log")
            })??;
        Ok((canonical(&value), planned))
    }

    /// `POST /api/jobs/validate`: what the job would produce, or the refusal a submit would get.
    pub(crate) async fn validate(&self, body: &[u8]) -> Result<PlanDescription, KallaError> {
        Ok(self.plan(body).await?.1.describe())
    }

    /// `POST /api/jobs`.
    pub(crate) async fn submit(self: &Arc<Self>, body: &[u8]) -> Result<Submitted, KallaError> {
        // Idempotency first: a resubmission must not be refused because its output now exists.
        if let Ok(value) = serde_json::from_slice::<Value>(body)
            && let Some(Ok(run_id)) = value.get("run_id").and_then(Value::as_str).map(Uuid::parse_str)
            && let Some(answer) = self.existing(run_id, &canonical(&value))?
        {
            return Ok(answer);
        }
        let (request, planned) = self.plan(body).await?;
        let request = request_digest(&request);
        let run_id = planned.job.run_id;
        let status = JobStatus {
            run_id: run_id.to_string(),
            status: JobState::Queued,
            stage: Stage::Queued,
            progress: 0.0,
            mode: Mode::Local,
            counts: None,
            output_paths: None,
            callback: planned.job.callback_url.as_ref().map(|_| CallbackStatus::default()),
            error: None,
            submitted_at: now(),
            started_at: None,
            finished_at: None,
        };
        let cancel = CancellationToken::new();
        {
            let mut state = self.lock();
            if state.draining {
                return Err(KallaError::new(ErrorCode::ShuttingDown, "kallad is shutting down; submit again later"));
            }
            // A concurrent identical submission may have won the race while this one planned.
            if let Some(existing) = state.jobs.get(&run_id) {
                return if existing.request == request {
                    Ok(Submitted::Existing(existing.status.clone()))
                } else {
                    Err(conflict(run_id))
                };
            }
            // `queued` counts the jobs that have not taken a slot yet, including those about to
            // take a free one: only the rest wait in the queue.
            let free_slots = self.config.max_concurrent_jobs.max(1).saturating_sub(state.running);
            let waiting = state.queued.saturating_sub(free_slots);
            // Two jobs may not aim at one output: the second would run in full, then fail.
            let output = &planned.output.final_dir;
            if let Some((other, _)) =
                state.jobs.iter().find(|(_, j)| !j.status.status.is_final() && j.output.as_ref() == Some(output))
            {
                return Err(KallaError::at(
                    ErrorCode::OutputExists,
                    "output_path",
                    format!("output_path {:?} is the output of job {other}, which has not ended", planned.output.given),
                ));
            }
            if state.queued >= free_slots && waiting >= self.config.queue_capacity {
                return Err(KallaError::new(
                    ErrorCode::QueueFull,
                    format!("the queue holds {waiting} jobs, its capacity; retry later"),
                ));
            }
            state.queued += 1;
            state.order.push_back(run_id);
            state.jobs.insert(
                run_id,
                Job {
                    request,
                    status: status.clone(),
                    cancel: cancel.clone(),
                    started: None,
                    callback_url: planned.job.callback_url.clone(),
                    aliases: planned.sources.iter().map(|s| s.alias.clone()).collect(),
                    last_progress: None,
                    rows_read: 0,
                    tmp_dir: Some(planned.output.tmp_dir.clone()),
                    output: Some(planned.output.final_dir.clone()),
                },
            );
            if let Some(job) = state.jobs.get(&run_id)
                && let Err(e) = self.config.journal.append(run_id, &record(job))
            {
                state.jobs.remove(&run_id);
                state.order.retain(|id| *id != run_id);
                state.queued = state.queued.saturating_sub(1);
                return Err(KallaError::new(ErrorCode::Internal, format!("cannot write the job journal: {e}")));
            }
        }
        tracing::info!(%run_id, "job queued");
        let manager = Arc::clone(self);
        let span = tracing::info_span!("job", %run_id);
        tokio::spawn(async move { manager.drive(run_id, planned, cancel).await }.instrument(span));
        Ok(Submitted::Queued(status))
    }

    fn existing(&self, run_id: Uuid, request: &Value) -> Result<Option<Submitted>, KallaError> {
        let digest = request_digest(request);
        let state = self.lock();
        match state.jobs.get(&run_id) {
            Some(job) if job.request == digest => Ok(Some(Submitted::Existing(job.status.clone()))),
            Some(_) => Err(conflict(run_id)),
            None => Ok(None),
        }
    }

    /// Waits for a permit, runs the job under its cancel token and timeout, records the end.
    async fn drive(self: Arc<Self>, run_id: Uuid, planned: PlannedJob, cancel: CancellationToken) {
        let permit = tokio::select! {
            p = Arc::clone(&self.permits).acquire_owned() => p,
            _ = cancel.cancelled() => {
                self.finish(run_id, Err(KallaError::new(ErrorCode::Cancelled, "cancelled while queued")), true);
                return;
            }
        };
        let Ok(_permit) = permit else {
            self.finish(run_id, Err(KallaError::new(ErrorCode::Internal, "the job slots are closed")), true);
            return;
        };
        {
            let mut state = self.lock();
            state.queued = state.queued.saturating_sub(1);
            state.running += 1;
            if let Some(job) = state.jobs.get_mut(&run_id) {
                job.started = Some(std::time::Instant::now());
                job.status.status = JobState::Running;
                job.status.stage = Stage::Reading;
                job.status.started_at = Some(now());
                self.write_journal(run_id, job);
            }
        }
        let mut planned = planned;
        // --job-timeout counts from the slot, so waiting for an executor counts too.
        let timeout = self.config.job_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || {
            KallaError::new(
                ErrorCode::Timeout,
                format!("the job ran longer than its timeout of {}", humantime::format_duration(timeout)),
            )
        };
        let runner = tokio::select! {
            r = self.choose_mode(&mut planned) => r,
            _ = cancel.cancelled() => Err(KallaError::new(ErrorCode::Cancelled, "the job was cancelled")),
            _ = tokio::time::sleep_until(deadline) => Err(timed_out()),
        };
        let runner = match runner {
            Ok(r) => r,
            Err(e) => {
                // Refused for the cluster (`--mode cluster`: no executor, or not distributable):
                // the status says where the job was to run.
                if self.config.cluster.as_ref().is_some_and(|c| c.mode == ModeArg::Cluster) {
                    self.update(run_id, |s| s.mode = Mode::Cluster);
                }
                self.finish(run_id, Err(e), false);
                return;
            }
        };
        let mode = planned.mode();
        self.update(run_id, |s| s.mode = mode);
        tracing::info!(mode = ?mode, "job started");
        let observer = StageObserver { manager: Arc::clone(&self), run_id };
        let reads = Arc::clone(&planned.reads);
        let snapshots = Arc::clone(&planned.snapshots);
        let mut meter = ReadMeter::default();
        let result = tokio::select! {
            // A panic inside the engine fails this job, not the daemon (and the job still ends).
            r = std::panic::AssertUnwindSafe(planned.run(&observer)).catch_unwind() => match r {
                Ok(r) => r.map(Some),
                Err(_) => Err(KallaError::new(ErrorCode::Internal, "the engine failed unexpectedly (a bug); see the daemon log")),
            },
            never = self.watch_progress(run_id, &reads, runner.as_deref(), &mut meter) => match never {},
            _ = cancel.cancelled() => Err(KallaError::new(ErrorCode::Cancelled, "the job was cancelled")),
            _ = tokio::time::sleep_until(deadline) => Err(timed_out()),
        };
        meter.flush(&reads, &self.metrics);
        // Whatever ended the job, no Postgres backend reading for it outlives it.
        snapshots.end_stray_backends().await;
        self.finish(run_id, result, false);
    }

    /// Decides where a starting job runs (`--mode`, the live executors, whether its plans can be
    /// shipped) and, for the cluster, sets the job up for it. `auto` runs locally when no executor
    /// is alive or a plan cannot be distributed; `cluster` waits up to `--cluster-wait` for an
    /// executor (`no_executors`) and refuses what cannot be distributed (`not_distributable`).
    async fn choose_mode(&self, planned: &mut PlannedJob) -> Result<Option<Arc<ClusterRunner>>, KallaError> {
        let Some(cluster) = &self.config.cluster else { return Ok(None) };
        let mut executors = cluster.scheduler.live_executors().await;
        match cluster.mode {
            ModeArg::Local => return Ok(None),
            ModeArg::Auto if executors.is_empty() => return Ok(None),
            ModeArg::Auto => {
                if let Err(e) = planned.distributable().await {
                    tracing::info!(reason = %e.message, "the job runs locally: its plan cannot be distributed");
                    return Ok(None);
                }
            }
            ModeArg::Cluster => {
                let deadline = tokio::time::Instant::now() + cluster.cluster_wait;
                while executors.is_empty() {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(KallaError::new(
                            ErrorCode::NoExecutors,
                            format!(
                                "no executor registered within --cluster-wait ({})",
                                humantime::format_duration(cluster.cluster_wait)
                            ),
                        ));
                    }
                    tokio::time::sleep(EXECUTOR_POLL).await;
                    executors = cluster.scheduler.live_executors().await;
                }
                planned.distributable().await?;
            }
        }
        let partitions = cluster_partitions(cluster.partitions, executors.iter().map(|e| e.slots));
        kalla_cluster::runner::apply_cluster_session_settings(&planned.ctx, partitions)
            .map_err(|e| KallaError::new(ErrorCode::Internal, format!("cluster settings: {e}")))?;
        let runner = Arc::new(ClusterRunner::new(
            Arc::clone(&cluster.scheduler),
            planned.job.run_id.to_string(),
            cluster.cluster_wait,
            planned.plan_count(),
            cluster.outputs,
        ));
        planned.runner = Some(Arc::clone(&runner) as Arc<dyn kalla_core::remote::PlanRunner>);
        Ok(Some(runner))
    }

    /// While a job runs: its progress (never decreasing) and the read metrics, twice a second.
    /// In cluster mode the scans run on the executors: progress is the share of the Ballista
    /// tasks done, and no rows are counted here.
    async fn watch_progress(
        self: &Arc<Self>,
        run_id: Uuid,
        reads: &ReadTracker,
        runner: Option<&ClusterRunner>,
        meter: &mut ReadMeter,
    ) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(PROGRESS_TICK).await;
            meter.flush(reads, &self.metrics);
            let sample = reads.sample();
            let fraction = match runner {
                Some(r) => r.progress().await,
                None => sample.fraction,
            };
            if let Some(job) = self.lock().jobs.get_mut(&run_id) {
                job.status.progress = job.status.progress.max(fraction);
                job.rows_read = sample.rows_read;
            }
            self.progress_callback(run_id);
        }
    }

    fn finish(
        self: &Arc<Self>,
        run_id: Uuid,
        result: Result<Option<kalla_core::RunOutcome>, KallaError>,
        was_queued: bool,
    ) {
        let mut state = self.lock();
        if was_queued {
            state.queued = state.queued.saturating_sub(1);
        } else {
            state.running = state.running.saturating_sub(1);
        }
        let state_draining = state.draining;
        let Some(job) = state.jobs.get_mut(&run_id) else { return };
        let ran_for = job.started.map(|t| t.elapsed());
        let s = &mut job.status;
        s.finished_at = Some(now());
        match result {
            Ok(Some(outcome)) => {
                tracing::info!(%run_id, matched = outcome.counts.matched, "job succeeded");
                s.status = JobState::Succeeded;
                s.stage = Stage::Done;
                s.progress = 1.0;
                s.counts = Some(outcome.counts);
                s.output_paths = Some(outcome.output_paths);
            }
            Ok(None) => {}
            Err(mut e) => {
                if e.code == ErrorCode::Cancelled && state_draining {
                    e = KallaError::new(ErrorCode::ShuttingDown, "kallad shut down before the job finished");
                }
                tracing::warn!(%run_id, code = %e.code, error = %e.message, "job ended without result");
                s.status = if e.code == ErrorCode::Cancelled { JobState::Cancelled } else { JobState::Failed };
                s.error = Some(e);
            }
        }
        let outcome = match s.status {
            JobState::Succeeded => "succeeded",
            JobState::Cancelled => "cancelled",
            _ => "failed",
        };
        self.metrics.job_finished(outcome, s.mode, ran_for);
        self.write_journal(run_id, job);
        if let Some(url) = job.callback_url.clone() {
            let (kind, body) = final_callback(&job.status, &job.aliases, ran_for);
            self.spawn_final_callback(run_id, url, kind, body);
        }
    }

    fn write_journal(&self, run_id: Uuid, job: &Job) {
        if let Err(e) = self.config.journal.append(run_id, &record(job)) {
            tracing::error!(%run_id, error = %e, "cannot write the job journal");
        }
    }

    /// Delivers the `complete`/`error` callback of a finished job on its own task.
    fn spawn_final_callback(self: &Arc<Self>, run_id: Uuid, url: String, kind: &'static str, body: Value) {
        let manager = Arc::clone(self);
        self.unattempted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let span = tracing::info_span!("callback", %run_id, kind);
        tokio::spawn(
            async move {
                let id = format!("{run_id}-{kind}");
                let target = crate::callbacks::endpoint(&url, kind);
                let body = serde_json::to_vec(&body).unwrap_or_default();
                manager.metrics.callbacks_pending.inc();
                let delivered = manager
                    .config
                    .callbacks
                    .deliver(&target, &id, &body, |a| {
                        manager.metrics.callback_attempt(kind, a.error.is_none());
                        if a.number == 1 {
                            manager.unattempted.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        let mut state = manager.lock();
                        if let Some(job) = state.jobs.get_mut(&run_id) {
                            if let Some(c) = job.status.callback.as_mut() {
                                c.attempts = a.number;
                                c.delivered = a.error.is_none();
                                c.last_error = a.error.clone();
                            }
                            manager.write_journal(run_id, job);
                        }
                    })
                    .await;
                manager.metrics.callbacks_pending.dec();
                if delivered {
                    tracing::info!("callback delivered");
                } else {
                    tracing::warn!("callback not delivered after every attempt of --callback-retry");
                }
            }
            .instrument(span),
        );
    }

    /// After a restart: jobs that were queued or running fail with `daemon_restarted`; final
    /// callbacks not yet delivered are delivered (again).
    pub(crate) fn recover(self: &Arc<Self>) -> std::io::Result<usize> {
        let records = self.config.journal.load(self.config.retention)?;
        let count = records.len();
        let mut pending = Vec::new();
        let mut leftovers = Vec::new();
        {
            let mut state = self.lock();
            for r in records {
                let Ok(run_id) = Uuid::parse_str(&r.status.run_id) else { continue };
                let mut job = Job {
                    request: r.request_sha256,
                    status: r.status,
                    cancel: CancellationToken::new(),
                    started: None,
                    callback_url: r.callback_url,
                    aliases: r.aliases,
                    last_progress: None,
                    rows_read: 0,
                    tmp_dir: r.tmp_dir,
                    output: None,
                };
                if let Some(tmp) = &job.tmp_dir {
                    leftovers.push((run_id, tmp.clone()));
                }
                if !job.status.status.is_final() {
                    job.status.status = JobState::Failed;
                    job.status.finished_at = Some(now());
                    job.status.error = Some(KallaError::new(
                        ErrorCode::DaemonRestarted,
                        "kallad restarted while the job was queued or running; submit it again with a new run_id",
                    ));
                    self.write_journal(run_id, &job);
                    self.metrics.job_finished("failed", job.status.mode, None);
                }
                let undelivered = job.status.callback.as_ref().is_some_and(|c| !c.delivered);
                if undelivered && let Some(url) = job.callback_url.clone() {
                    let (kind, body) = final_callback(&job.status, &job.aliases, None);
                    pending.push((run_id, url, kind, body));
                }
                state.order.push_back(run_id);
                state.jobs.insert(run_id, job);
            }
        }
        for (run_id, url, kind, body) in pending {
            self.spawn_final_callback(run_id, url, kind, body);
        }
        // Runs name their temporary directories under the resolved root (`resolve_output`).
        let root = self.config.output_dir.canonicalize().unwrap_or_else(|_| self.config.output_dir.clone());
        remove_leftovers(root, leftovers);
        Ok(count)
    }

    /// Sends a best-effort progress callback, at most one a second per job.
    fn progress_callback(self: &Arc<Self>, run_id: Uuid) {
        let (url, body) = {
            let mut state = self.lock();
            let Some(job) = state.jobs.get_mut(&run_id) else { return };
            let Some(url) = job.callback_url.clone() else { return };
            let (stage, progress) = (job.status.stage, job.status.progress);
            match job.last_progress {
                Some((at, _, _)) if at.elapsed() < Duration::from_secs(1) => return,
                Some((_, s, p)) if s == stage && p == progress => return,
                _ => {}
            }
            job.last_progress = Some((std::time::Instant::now(), stage, progress));
            let mut body = serde_json::json!({
                "run_id": job.status.run_id,
                "stage": stage,
                "progress": progress,
            });
            // Rows are counted where the scans run: here in local mode, not for cluster jobs.
            if job.status.mode == Mode::Local {
                body["rows_read"] = job.rows_read.into();
            }
            (url, body)
        };
        let manager = Arc::clone(self);
        tokio::spawn(async move {
            let target = crate::callbacks::endpoint(&url, "progress");
            let id = format!("{run_id}-progress-{}", chrono::Utc::now().timestamp_millis());
            let body = serde_json::to_vec(&body).unwrap_or_default();
            let delivered = manager.config.callbacks.progress(&target, &id, &body).await;
            manager.metrics.callback_attempt("progress", delivered);
        });
    }

    /// `GET /api/jobs/{run_id}`.
    pub(crate) fn status(&self, run_id: Uuid) -> Option<JobStatus> {
        self.lock().jobs.get(&run_id).map(|j| j.status.clone())
    }

    /// `GET /api/jobs`: newest first.
    pub(crate) fn list(&self, limit: usize, status: Option<JobState>) -> Vec<JobStatus> {
        let state = self.lock();
        state
            .order
            .iter()
            .rev()
            .filter_map(|id| state.jobs.get(id))
            .filter(|j| status.is_none_or(|s| j.status.status == s))
            .take(limit)
            .map(|j| j.status.clone())
            .collect()
    }

    /// `POST /api/jobs/{run_id}/cancel`: idempotent; false when the job is unknown.
    pub(crate) fn cancel(&self, run_id: Uuid) -> bool {
        match self.lock().jobs.get(&run_id) {
            Some(job) => {
                job.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// SIGTERM: refuse new jobs, fail queued ones with `shutting_down`, give running ones
    /// `grace` to finish, then cancel them (also `shutting_down`). Returns when none runs.
    pub(crate) async fn drain(&self, grace: Duration) {
        let tokens: Vec<(CancellationToken, bool)> = {
            let mut state = self.lock();
            state.draining = true;
            state
                .jobs
                .values()
                .filter(|j| !j.status.status.is_final())
                .map(|j| (j.cancel.clone(), j.status.status == JobState::Queued))
                .collect()
        };
        for (token, queued) in &tokens {
            if *queued {
                token.cancel();
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let (queued, running, _) = self.load();
            if queued == 0 && running == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for (token, _) in &tokens {
                    token.cancel();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The error callbacks of the jobs just shut down get their first attempt before exit;
        // undelivered ones are delivered after the next start (journal).
        let deadline = tokio::time::Instant::now() + CALLBACK_DRAIN;
        while self.unattempted.load(std::sync::atomic::Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Forgets finished jobs older than the retention, in memory and in the journal. Returns how
    /// many went.
    pub(crate) fn expire(&self) -> usize {
        let retention = self.config.retention;
        let mut state = self.lock();
        let old: Vec<Uuid> = state
            .jobs
            .iter()
            .filter(|(_, j)| crate::journal::expired(&j.status, retention))
            .map(|(id, _)| *id)
            .collect();
        for run_id in &old {
            state.jobs.remove(run_id);
            if let Err(e) = self.config.journal.remove(*run_id) {
                tracing::warn!(%run_id, error = %e, "cannot remove an expired journal file");
            }
        }
        if !old.is_empty() {
            state.order.retain(|id| !old.contains(id));
            tracing::info!(jobs = old.len(), "expired finished jobs");
        }
        old.len()
    }

    /// Counts for `/ready`.
    pub(crate) fn load(&self) -> (usize, usize, bool) {
        let s = self.lock();
        (s.queued, s.running, s.draining)
    }
}

/// The body of the `complete` or `error` callback for a finished job.
fn final_callback(status: &JobStatus, aliases: &[String], ran_for: Option<Duration>) -> (&'static str, Value) {
    if status.status == JobState::Succeeded
        && let (Some(counts), Some(paths)) = (&status.counts, &status.output_paths)
    {
        let side = |i: usize| aliases.get(i);
        let count = |i: usize| side(i).and_then(|a| counts.unmatched.get(a).cloned().flatten());
        let total = |i: usize| side(i).and_then(|a| counts.total.get(a).copied());
        let path = |i: usize| side(i).and_then(|a| paths.unmatched.get(a).cloned().flatten());
        let unmatched: serde_json::Map<String, Value> = aliases
            .iter()
            .map(|a| {
                let c = counts.unmatched.get(a).cloned().flatten();
                let p = paths.unmatched.get(a).cloned().flatten();
                (a.clone(), serde_json::json!({"count": c, "path": p}))
            })
            .collect();
        let body = serde_json::json!({
            "run_id": status.run_id,
            "matched_count": counts.matched,
            "unmatched_left_count": count(0),
            "unmatched_right_count": count(1),
            "total_left": total(0),
            "total_right": total(1),
            "output_paths": {"matched": paths.matched, "unmatched_left": path(0), "unmatched_right": path(1)},
            "unmatched": unmatched,
            "duration_ms": ran_for.map(|d| d.as_millis() as u64).unwrap_or(0),
        });
        return ("complete", body);
    }
    let (code, message) = match &status.error {
        Some(e) => (e.code, e.message.clone()),
        None => (ErrorCode::Internal, "the job ended without a result".to_string()),
    };
    ("error", serde_json::json!({"run_id": status.run_id, "stage": status.stage, "code": code, "error": message}))
}

fn record(job: &Job) -> Record {
    Record {
        request_sha256: job.request.clone(),
        callback_url: job.callback_url.clone(),
        aliases: job.aliases.clone(),
        status: job.status.clone(),
        tmp_dir: job.tmp_dir.clone(),
    }
}

/// Removes, in the background, the temporary output directories that runs of an earlier kallad
/// process left behind (killed while they ran, or exiting while a removal was retried): nothing
/// else names them, and a run id never runs again.
fn remove_leftovers(root: std::path::PathBuf, leftovers: Vec<(Uuid, std::path::PathBuf)>) {
    if leftovers.is_empty() {
        return;
    }
    let sweep = move || {
        for (run_id, tmp) in leftovers {
            match kalla_core::output::remove_run_leftovers(&root, &tmp, run_id) {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(%run_id, path = %tmp.display(), removed, "removed an interrupted run's temporary output")
                }
                Err(e) => {
                    tracing::warn!(%run_id, path = %tmp.display(), error = %e, "cannot remove an interrupted run's temporary output")
                }
            }
        }
    };
    if let Err(e) = std::thread::Builder::new().name("kalla-leftovers".into()).spawn(sweep) {
        tracing::warn!(error = %e, "cannot start removing interrupted runs' temporary outputs");
    }
}

fn conflict(run_id: Uuid) -> KallaError {
    KallaError::at(
        ErrorCode::RunIdConflict,
        "run_id",
        format!("run_id {run_id} is already used by a different request"),
    )
}

/// The partitions of a cluster job: `--partitions` when given, else the task slots the live
/// executors reported, at least 1 and at most [`crate::engine_args::MAX_PARALLELISM`] (an executor
/// reports its own slots when it registers, over gRPC, and a huge number would make every plan
/// allocate that many partitions).
fn cluster_partitions(given: Option<usize>, slots: impl Iterator<Item = u32>) -> usize {
    given
        .unwrap_or_else(|| slots.fold(0usize, |all, s| all.saturating_add(s as usize)))
        .clamp(1, crate::engine_args::MAX_PARALLELISM)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cluster_job_takes_the_executors_slots_within_the_parallelism_bound() {
        use crate::engine_args::MAX_PARALLELISM;
        assert_eq!(super::cluster_partitions(None, [1, 1].into_iter()), 2);
        assert_eq!(super::cluster_partitions(Some(7), [1, 1].into_iter()), 7);
        assert_eq!(super::cluster_partitions(None, std::iter::empty()), 1);
        assert_eq!(super::cluster_partitions(None, [u32::MAX, u32::MAX, 4].into_iter()), MAX_PARALLELISM);
        assert_eq!(super::cluster_partitions(None, [MAX_PARALLELISM as u32, 1].into_iter()), MAX_PARALLELISM);
    }
}
