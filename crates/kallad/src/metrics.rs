//! `/metrics` (SPEC 8): Prometheus/OpenMetrics text, names prefixed `kalla_`, base units, no
//! per-job labels.
//!
//! `kalla_jobs_total{outcome}`, `kalla_jobs_queued`, `kalla_jobs_running`,
//! `kalla_job_duration_seconds{mode}`, `kalla_source_rows_read_total{kind}` and
//! `kalla_source_bytes_read_total{kind}` (kind: `csv`, `parquet`; every pass of a run over a
//! source counts, added while jobs run), `kalla_callback_attempts_total{kind,result}` (kind:
//! `progress`, `complete`, `error`; result: `delivered`, `failed`), `kalla_callbacks_pending`
//! (final callbacks still being delivered), `kalla_executors_live` (executors registered with the
//! embedded scheduler and alive) and
//! `kalla_memory_pool_reserved_bytes` (0 without `--memory-limit`).

use datafusion::execution::memory_pool::MemoryPool;
use kalla_recipe::Mode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallbackLabel {
    kind: String,
    result: String,
}

type HistogramFamily = Family<ModeLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.1 s … ~55 min in doublings.
    Histogram::new(exponential_buckets(0.1, 2.0, 16))
}

/// The daemon's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    jobs_total: Family<OutcomeLabel, Counter>,
    job_duration: HistogramFamily,
    queued: Gauge,
    running: Gauge,
    memory_reserved: Gauge,
    executors: Gauge,
    rows_read: Family<KindLabel, Counter>,
    bytes_read: Family<KindLabel, Counter>,
    callback_attempts: Family<CallbackLabel, Counter>,
    /// Final callbacks being delivered.
    pub(crate) callbacks_pending: Gauge,
    pool: Option<Arc<dyn MemoryPool>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub(crate) fn new(pool: Option<Arc<dyn MemoryPool>>) -> Metrics {
        let mut registry = Registry::with_prefix("kalla");
        let jobs_total = Family::<OutcomeLabel, Counter>::default();
        registry.register("jobs", "Jobs finished, by outcome", jobs_total.clone());
        let job_duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register_with_unit("job_duration", "Run time of jobs, by mode", Unit::Seconds, job_duration.clone());
        let queued = Gauge::default();
        registry.register("jobs_queued", "Jobs waiting for a slot", queued.clone());
        let running = Gauge::default();
        registry.register("jobs_running", "Jobs running", running.clone());
        let executors: Gauge = Gauge::default();
        registry.register("executors_live", "Executors registered and alive", executors.clone());
        let memory_reserved = Gauge::default();
        registry.register_with_unit(
            "memory_pool_reserved",
            "Bytes reserved in the process memory pool",
            Unit::Bytes,
            memory_reserved.clone(),
        );
        let rows_read = Family::<KindLabel, Counter>::default();
        registry.register("source_rows_read", "Rows read from sources, by source kind", rows_read.clone());
        let bytes_read = Family::<KindLabel, Counter>::default();
        registry.register("source_bytes_read", "Bytes read from sources, by source kind", bytes_read.clone());
        let callback_attempts = Family::<CallbackLabel, Counter>::default();
        registry.register("callback_attempts", "Callback attempts, by kind and result", callback_attempts.clone());
        let callbacks_pending = Gauge::default();
        registry.register("callbacks_pending", "Final callbacks not yet delivered", callbacks_pending.clone());
        // Every series the daemon can add exists from the start at 0, so a dashboard or an alert
        // on a rate sees the family before the first job, callback or read of its kind.
        for outcome in ["succeeded", "failed", "cancelled"] {
            drop(jobs_total.get_or_create(&OutcomeLabel { outcome: outcome.into() }));
        }
        for mode in ["local", "cluster"] {
            drop(job_duration.get_or_create(&ModeLabel { mode: mode.into() }));
        }
        for kind in ["csv", "parquet", "postgres"] {
            drop(rows_read.get_or_create(&KindLabel { kind: kind.into() }));
            drop(bytes_read.get_or_create(&KindLabel { kind: kind.into() }));
        }
        for kind in ["progress", "complete", "error"] {
            for result in ["delivered", "failed"] {
                drop(callback_attempts.get_or_create(&CallbackLabel { kind: kind.into(), result: result.into() }));
            }
        }
        Metrics {
            registry,
            jobs_total,
            job_duration,
            queued,
            running,
            memory_reserved,
            executors,
            rows_read,
            bytes_read,
            callback_attempts,
            callbacks_pending,
            pool,
        }
    }

    /// Counts a finished job; `ran_for` is its run time when it started.
    pub(crate) fn job_finished(&self, outcome: &str, mode: Mode, ran_for: Option<std::time::Duration>) {
        self.jobs_total.get_or_create(&OutcomeLabel { outcome: outcome.to_string() }).inc();
        if let Some(d) = ran_for {
            self.job_duration
                .get_or_create(&ModeLabel { mode: if mode == Mode::Cluster { "cluster" } else { "local" }.to_string() })
                .observe(d.as_secs_f64());
        }
    }

    /// Adds rows and bytes read from sources of one kind.
    pub(crate) fn source_read(&self, kind: &str, rows: u64, bytes: u64) {
        let label = KindLabel { kind: kind.to_string() };
        self.rows_read.get_or_create(&label).inc_by(rows);
        self.bytes_read.get_or_create(&label).inc_by(bytes);
    }

    /// Counts one callback attempt.
    pub(crate) fn callback_attempt(&self, kind: &str, delivered: bool) {
        let result = if delivered { "delivered" } else { "failed" };
        self.callback_attempts
            .get_or_create(&CallbackLabel { kind: kind.to_string(), result: result.to_string() })
            .inc();
    }

    /// The exposition text, with gauges read now.
    pub(crate) fn render(&self, queued: usize, running: usize, executors: usize) -> Result<String, std::fmt::Error> {
        self.executors.set(i64::try_from(executors).unwrap_or(i64::MAX));
        self.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
        self.running.set(i64::try_from(running).unwrap_or(i64::MAX));
        let reserved = self.pool.as_ref().map(|p| p.reserved()).unwrap_or(0);
        self.memory_reserved.set(i64::try_from(reserved).unwrap_or(i64::MAX));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
