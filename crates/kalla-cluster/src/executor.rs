//! `kallad executor`: a Ballista executor that registers with the scheduler of `kallad scheduler`.
//!
//! Heartbeats every 5 s (SPEC 7; the scheduler declares an executor dead after its
//! `--executor-timeout`). Shuffle files go under `--work-dir` (a temporary directory removed on
//! exit when none is given). On SIGTERM the Ballista executor stops taking tasks, reports
//! itself stopped and waits for its running tasks; kallad bounds that wait by
//! `--shutdown-grace`.

use ballista_core::RuntimeProducer;
use ballista_core::error::BallistaError;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;
use std::sync::Arc;
use std::time::Duration;

/// Heartbeat period of executors.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Settings of one executor (SPEC 2).
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// Scheduler host and gRPC port.
    pub scheduler_host: String,
    /// Scheduler gRPC port.
    pub scheduler_port: u16,
    /// Address to bind.
    pub bind_host: String,
    /// The address the scheduler and peers use to reach this executor.
    pub external_host: String,
    /// Flight (shuffle data) port.
    pub flight_port: u16,
    /// gRPC port.
    pub grpc_port: u16,
    /// Task slots.
    pub concurrent_tasks: usize,
    /// Shuffle files directory.
    pub work_dir: String,
    /// One memory pool for the executor's tasks, in bytes; `None`: no limit (SPEC 2), not
    /// Ballista's default of 70 % of the host's memory.
    pub memory_limit: Option<u64>,
}

/// How often an executor that cannot reach the scheduler tries again.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// Runs the executor until it stops (SIGTERM, Ctrl-C, or its services ending). Until the
/// scheduler first answers, it keeps trying every second (executors and scheduler may start in
/// any order); it registers as soon as the scheduler is up.
pub async fn run(settings: ExecutorSettings) -> Result<(), String> {
    // Task plans name Kalla's functions; the executor resolves them in this registry.
    let session = kalla_core::session::new_session(1, None).map_err(|e| e.to_string())?;
    let functions = Arc::new(BallistaFunctionRegistry::from(&session.state()));
    // With --memory-limit, every task of this executor draws on one Kalla pool of that size
    // (kalla_core::memory: repartition buffers are not refused, as DataFusion 55's repartition
    // spill can stall a query); Ballista's own per-task FairSpillPool is off (size 0).
    let runtime = settings.memory_limit.map(|bytes| {
        let pool = kalla_core::memory::memory_pool(usize::try_from(bytes).unwrap_or(usize::MAX));
        tracing::info!("memory pool: one Kalla pool of --memory-limit ({bytes} bytes) for all tasks");
        let work_dir = settings.work_dir.clone();
        let producer: RuntimeProducer = Arc::new(move |_config: &SessionConfig| {
            Ok(Arc::new(
                RuntimeEnvBuilder::new().with_temp_file_path(&work_dir).with_memory_pool(Arc::clone(&pool)).build()?,
            ))
        });
        producer
    });
    let mut attempts = 0u64;
    loop {
        let config = ExecutorProcessConfig {
            scheduler_host: settings.scheduler_host.clone(),
            scheduler_port: settings.scheduler_port,
            bind_host: settings.bind_host.clone(),
            external_host: Some(settings.external_host.clone()),
            port: settings.flight_port,
            grpc_port: settings.grpc_port,
            vcores: settings.concurrent_tasks.max(1),
            work_dir: Some(settings.work_dir.clone()),
            executor_heartbeat_interval_seconds: HEARTBEAT.as_secs(),
            // 0 is Ballista's "unbounded"; the limit, when set, is in the runtime's pool.
            memory_pool_size: Some(0),
            override_runtime_producer: runtime.clone(),
            override_physical_codec: Some(crate::codec::ClusterCodec::shared()),
            override_logical_codec: Some(crate::codec::ClusterLogicalCodec::shared()),
            override_function_registry: Some(Arc::clone(&functions)),
            ..Default::default()
        };
        match start_executor_process(Arc::new(config)).await {
            // Ballista's own first step; nothing is bound yet when it fails.
            Err(BallistaError::GrpcConnectionError(_)) => {
                if attempts.is_multiple_of(30) {
                    tracing::warn!(
                        scheduler = %format!("{}:{}", settings.scheduler_host, settings.scheduler_port),
                        "the scheduler does not answer yet; trying every second"
                    );
                }
                attempts += 1;
                tokio::time::sleep(CONNECT_RETRY).await;
            }
            other => return other.map_err(|e| e.to_string()),
        }
    }
}
