//! `kallad executor`: a Ballista executor that registers with `kallad scheduler` (SPEC 2).
//!
//! It runs the tasks of the cluster jobs the scheduler hands it (Postgres partitions read here,
//! in the job's snapshot; shuffle data served over Arrow Flight), heartbeats, and drains on
//! SIGTERM (docs/architecture.md, section 3b).

use clap::Args;
use kalla_cluster::executor::{ExecutorSettings, run};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Arguments of `kallad executor`.
#[derive(Debug, Args)]
pub(crate) struct ExecutorArgs {
    /// Host of the scheduler's gRPC port.
    #[arg(long, env = "KALLA_SCHEDULER_HOST", default_value = "localhost")]
    scheduler_host: String,
    /// The scheduler's gRPC port.
    #[arg(long, env = "KALLA_SCHEDULER_PORT", default_value_t = 50050)]
    scheduler_port: u16,
    /// Arrow Flight port (shuffle data).
    #[arg(long, env = "KALLA_FLIGHT_PORT", default_value_t = 50051)]
    flight_port: u16,
    /// gRPC port.
    #[arg(long, env = "KALLA_EXECUTOR_GRPC_PORT", default_value_t = 50052)]
    grpc_port: u16,
    /// Address to bind.
    #[arg(long, env = "KALLA_BIND_HOST", default_value = "127.0.0.1")]
    bind_host: String,
    /// The address the scheduler and peers use to reach this executor; default: --bind-host
    /// (required when binding 0.0.0.0).
    #[arg(long, env = "KALLA_EXTERNAL_HOST")]
    external_host: Option<String>,
    /// Task slots; default: the number of cores.
    #[arg(long, env = "KALLA_CONCURRENT_TASKS", value_parser = crate::engine_args::count_flag(1, crate::engine_args::MAX_PARALLELISM))]
    concurrent_tasks: Option<usize>,
    /// Directory for shuffle files; default: a temporary directory removed on exit.
    #[arg(long, env = "KALLA_WORK_DIR")]
    work_dir: Option<std::path::PathBuf>,
    /// One memory pool for this executor's tasks, e.g. `4GiB`; default: none.
    #[arg(long, env = "KALLA_MEMORY_LIMIT")]
    memory_limit: Option<bytesize::ByteSize>,
    /// On SIGTERM, how long running tasks may take before the executor exits anyway.
    #[arg(long, env = "KALLA_SHUTDOWN_GRACE", default_value = "30s", value_parser = crate::engine_args::duration_flag)]
    shutdown_grace: Duration,
}

/// Resolves once SIGTERM (or Ctrl-C) arrived and the grace period passed; `asked` is set as
/// soon as the signal arrives.
async fn terminated_and_grace_over(grace: Duration, asked: &AtomicBool) {
    crate::daemon::stop_requested().await;
    asked.store(true, Ordering::SeqCst);
    tokio::time::sleep(grace).await;
}

pub(crate) async fn run_executor(args: ExecutorArgs) -> ExitCode {
    // Ballista parses `bind-host:port` as a socket address: a name would panic there.
    if args.bind_host.parse::<std::net::IpAddr>().is_err() {
        tracing::error!("--bind-host must be an IP address (e.g. 127.0.0.1 or 0.0.0.0), not {}", args.bind_host);
        return ExitCode::from(2);
    }
    let external_host = match crate::daemon::advertised_host(args.external_host.as_deref(), &args.bind_host) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    // Kept alive until the executor ends; removed on drop.
    let (work_dir, _temporary) = match &args.work_dir {
        // Created now: DataFusion creates a missing spill directory with `create_dir` when a task
        // is decoded, and two tasks decoded at once on a fresh executor race on it (EEXIST
        // rejects one, which fails its Ballista job).
        Some(dir) => match std::fs::create_dir_all(dir) {
            Ok(()) => (dir.clone(), None),
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot create the work directory");
                return ExitCode::from(2);
            }
        },
        None => match tempfile::Builder::new().prefix("kallad-executor-").tempdir() {
            Ok(t) => (t.path().to_path_buf(), Some(t)),
            Err(e) => {
                tracing::error!(error = %e, "cannot create a work directory");
                return ExitCode::from(2);
            }
        },
    };
    let settings = ExecutorSettings {
        scheduler_host: args.scheduler_host,
        scheduler_port: args.scheduler_port,
        bind_host: args.bind_host,
        external_host,
        flight_port: args.flight_port,
        grpc_port: args.grpc_port,
        concurrent_tasks: args
            .concurrent_tasks
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        work_dir: work_dir.to_string_lossy().to_string(),
        memory_limit: args.memory_limit.map(|b| b.as_u64()).filter(|b| *b > 0),
    };
    tracing::info!(
        scheduler = %format!("{}:{}", settings.scheduler_host, settings.scheduler_port),
        external_host = %settings.external_host,
        flight_port = settings.flight_port,
        grpc_port = settings.grpc_port,
        slots = settings.concurrent_tasks,
        "kallad executor starting"
    );
    // Ballista logs a server that cannot bind and then stops as if the scheduler had gone; a
    // port in use is the operator's to fix, so say so first.
    // Both held at once, so the same port given for both is refused too.
    let mut probes = Vec::with_capacity(2);
    for (flag, port) in [("--flight-port", settings.flight_port), ("--grpc-port", settings.grpc_port)] {
        match std::net::TcpListener::bind((settings.bind_host.as_str(), port)) {
            Ok(listener) => probes.push(listener),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen on {}:{port} ({flag})", settings.bind_host);
                return ExitCode::from(2);
            }
        }
    }
    drop(probes);
    let asked = AtomicBool::new(false);
    tokio::select! {
        result = run(settings) => match result {
            Ok(()) if asked.load(Ordering::SeqCst) => {
                tracing::info!("kallad executor stopped");
                ExitCode::SUCCESS
            }
            // Ballista stops an executor whose heartbeats fail (the scheduler is gone) and cannot
            // start another in the same process: exit with an error so a supervisor restarts it
            // (it then waits for the scheduler).
            Ok(()) => {
                tracing::error!(
                    "the executor stopped without being asked (the scheduler became unreachable, or one of its \
                     servers failed: Ballista's reason is logged above); exiting so it can be restarted"
                );
                ExitCode::from(1)
            }
            Err(e) => {
                tracing::error!(error = %e, "kallad executor failed");
                ExitCode::from(1)
            }
        },
        _ = terminated_and_grace_over(args.shutdown_grace, &asked) => {
            tracing::warn!("running tasks did not finish within --shutdown-grace; exiting");
            ExitCode::SUCCESS
        }
    }
}
