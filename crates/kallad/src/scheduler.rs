//! `kallad scheduler`: the HTTP job service, and the embedded Ballista scheduler executors
//! register with (gRPC on `--grpc-port`). Each job runs in-process or on the executors, as
//! `--mode` and the live executors decide when it starts (see [`crate::jobs`]).

use crate::api::{AppState, router};
use crate::callbacks::{Callbacks, parse_schedule, parse_secret};
use crate::engine_args::EngineArgs;
use crate::jobs::{ClusterConfig, JobManager, ManagerConfig};
use crate::journal::Journal;
use clap::Args;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `kallad scheduler`.
#[derive(Debug, Args)]
pub(crate) struct SchedulerArgs {
    /// HTTP API port (0 picks a free port; the chosen address is logged).
    #[arg(long, env = "KALLA_HTTP_PORT", default_value_t = 9090)]
    http_port: u16,
    /// gRPC port of the embedded Ballista scheduler, where executors register (0 picks a free
    /// port; the chosen address is logged as `grpc_addr`).
    #[arg(long, env = "KALLA_GRPC_PORT", default_value_t = 50050)]
    grpc_port: u16,
    /// An executor silent this long is dead (executors heartbeat every 5 s).
    #[arg(long, env = "KALLA_EXECUTOR_TIMEOUT", default_value = "30s", value_parser = crate::engine_args::duration_flag)]
    executor_timeout: Duration,
    /// Where jobs run: `auto` (on the executors when at least one is alive at job start, else
    /// in-process), `local`, or `cluster` (wait up to --cluster-wait for an executor).
    #[arg(long, env = "KALLA_MODE", value_enum, default_value_t = ModeArg::Auto)]
    mode: ModeArg,
    /// In `cluster` mode, how long a job waits for a live executor (at start, and when every
    /// executor is lost while it runs) before it fails with `no_executors`.
    #[arg(long, env = "KALLA_CLUSTER_WAIT", default_value = "60s", value_parser = crate::engine_args::duration_flag)]
    cluster_wait: Duration,
    /// Who writes a cluster job's output files: `parts` (each partition writes a Parquet part on
    /// its executor into the shared --output-dir, which executors must be able to write; the
    /// scheduler joins the parts) or `fetch` (the scheduler pulls every output row over Flight and
    /// writes the files; executors only read --output-dir).
    #[arg(long, env = "KALLA_CLUSTER_OUTPUTS", value_enum, default_value_t = ClusterOutputsArg::Parts)]
    cluster_outputs: ClusterOutputsArg,
    /// Address to bind; set 0.0.0.0 deliberately, with --api-token.
    #[arg(long, env = "KALLA_BIND_HOST", default_value = "127.0.0.1")]
    bind_host: String,
    /// The address executors use to reach this scheduler's gRPC port (they report task results
    /// there); default --bind-host, or when that is 0.0.0.0 or :: this machine's host name (a
    /// warning says so; 127.0.0.1 with --mode local, which never uses executors).
    #[arg(long, env = "KALLA_SCHEDULER_EXTERNAL_HOST")]
    external_host: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Jobs running at once.
    #[arg(long, env = "KALLA_MAX_CONCURRENT_JOBS", default_value_t = 2,
          value_parser = crate::engine_args::count_flag(1, crate::engine_args::MAX_PARALLELISM))]
    max_concurrent_jobs: usize,
    /// Jobs waiting at most; more is 503 queue_full.
    #[arg(long, env = "KALLA_QUEUE_CAPACITY", default_value_t = 64, value_parser = crate::engine_args::count_flag(0, 1_000_000))]
    queue_capacity: usize,
    /// A job running longer is cancelled with code `timeout`.
    #[arg(long, env = "KALLA_JOB_TIMEOUT", default_value = "6h", value_parser = crate::engine_args::duration_flag)]
    job_timeout: Duration,
    /// When set, every /api/* request needs `Authorization: Bearer <token>`.
    #[arg(long, env = "KALLA_API_TOKEN", hide_env_values = true)]
    api_token: Option<crate::secret::Secret<String>>,
    /// `whsec_<base64>` (Standard Webhooks): when set, callbacks are signed.
    #[arg(long, env = "KALLA_CALLBACK_SECRET", hide_env_values = true)]
    callback_secret: Option<crate::secret::Secret<String>>,
    /// Delays before each attempt of a complete/error callback.
    #[arg(long, env = "KALLA_CALLBACK_RETRY", default_value = "0s,5s,30s,2m,5m,10m,30m,1h")]
    callback_retry: String,
    /// The job journal; default `<output-dir>/.kallad`.
    #[arg(long, env = "KALLA_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// How long finished jobs stay queryable (status and journal) before they are forgotten.
    #[arg(long, env = "KALLA_JOB_RETENTION", default_value = "7d", value_parser = crate::engine_args::duration_flag)]
    job_retention: Duration,
    /// On SIGTERM, how long running jobs may take to finish before they are cancelled.
    #[arg(long, env = "KALLA_SHUTDOWN_GRACE", default_value = "30s", value_parser = crate::engine_args::duration_flag)]
    shutdown_grace: Duration,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ModeArg {
    /// On the executors when one is alive at job start, else in-process.
    Auto,
    /// Always in-process.
    Local,
    /// Always on the executors.
    Cluster,
}

/// `--cluster-outputs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ClusterOutputsArg {
    /// Executors write Parquet parts; the scheduler joins them.
    Parts,
    /// The scheduler fetches the rows over Flight and writes them.
    Fetch,
}

impl From<ClusterOutputsArg> for kalla_cluster::runner::ClusterOutputs {
    fn from(a: ClusterOutputsArg) -> Self {
        match a {
            ClusterOutputsArg::Parts => kalla_cluster::runner::ClusterOutputs::Parts,
            ClusterOutputsArg::Fetch => kalla_cluster::runner::ClusterOutputs::Fetch,
        }
    }
}

pub(crate) async fn run(args: SchedulerArgs) -> ExitCode {
    let secret = match args.callback_secret.as_ref().map(|s| parse_secret(&s.0)).transpose() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("--callback-secret: {e}");
            return ExitCode::from(2);
        }
    };
    let callbacks = match parse_schedule(&args.callback_retry).and_then(|schedule| Callbacks::new(secret, schedule)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("--callback-retry: {e}");
            return ExitCode::from(2);
        }
    };
    let state_dir = args.state_dir.clone().unwrap_or_else(|| args.engine.output_dir.join(".kallad"));
    let journal = match Journal::open(&state_dir) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(dir = %state_dir.display(), error = %e, "cannot open the job journal");
            return ExitCode::from(2);
        }
    };
    if args.executor_timeout <= kalla_cluster::executor::HEARTBEAT {
        tracing::error!(
            "--executor-timeout must be longer than the executors' {}s heartbeat",
            kalla_cluster::executor::HEARTBEAT.as_secs()
        );
        return ExitCode::from(2);
    }
    let (external_host, warning) = crate::daemon::scheduler_advertised_host(
        args.external_host.as_deref(),
        &args.bind_host,
        args.mode != ModeArg::Local,
        crate::daemon::machine_hostname(),
    );
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    let cluster = match kalla_cluster::scheduler::EmbeddedScheduler::start(
        &args.bind_host,
        &external_host,
        args.grpc_port,
        args.executor_timeout,
        args.shutdown_grace,
        args.cluster_wait,
    )
    .await
    {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the embedded scheduler");
            return ExitCode::from(2);
        }
    };
    let manager = JobManager::new(ManagerConfig {
        journal,
        partitions: args.engine.partitions(),
        rows_per_partition: args.engine.rows_per_partition(),
        memory_pool: args.engine.memory_pool(),
        data_dir: args.engine.data_dir.clone(),
        output_dir: args.engine.output_dir.clone(),
        callbacks,
        max_concurrent_jobs: args.max_concurrent_jobs,
        queue_capacity: args.queue_capacity,
        job_timeout: args.job_timeout,
        retention: args.job_retention,
        cluster: Some(ClusterConfig {
            scheduler: Arc::clone(&cluster),
            mode: args.mode,
            cluster_wait: args.cluster_wait,
            outputs: args.cluster_outputs.into(),
            partitions: args.engine.explicit_partitions(),
        }),
    });
    match manager.recover() {
        Ok(n) => tracing::info!(jobs = n, dir = %state_dir.display(), "journal loaded"),
        Err(e) => {
            tracing::error!(dir = %state_dir.display(), error = %e, "cannot read the job journal");
            return ExitCode::from(2);
        }
    }
    let sweeper = Arc::clone(&manager);
    let sweep_every = (args.job_retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(sweep_every).await;
            sweeper.expire();
        }
    });
    tracing::info!(grpc_addr = %cluster.addr(), "Ballista scheduler listening for executors");
    let state = AppState {
        jobs: Arc::clone(&manager),
        api_token: args.api_token.map(|t| crate::secret::Secret(Arc::from(t.0))),
        cluster,
        mode: args.mode,
    };
    let addr = format!("{}:{}", args.bind_host, args.http_port);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot bind the HTTP port");
            return ExitCode::from(2);
        }
    };
    match listener.local_addr() {
        Ok(a) => tracing::info!(addr = %a, mode = ?args.mode, "kallad scheduler listening"),
        Err(e) => tracing::warn!(error = %e, "listening, but the bound address is unknown"),
    }
    let drained = Arc::clone(&manager);
    let grace = args.shutdown_grace;
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        crate::daemon::stop_requested().await;
        tracing::info!("shutting down: no new jobs, draining");
        drained.drain(grace).await;
    });
    match server.await {
        Ok(()) => {
            tracing::info!("kallad scheduler stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "HTTP server failed");
            ExitCode::from(1)
        }
    }
}
