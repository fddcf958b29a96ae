//! The Ballista scheduler inside `kallad scheduler`: gRPC on `--grpc-port` (executors register
//! and heartbeat there), next to kallad's own HTTP API on another port. The scheduler's own
//! HTTP routes (health checks) are served on the gRPC port, so they never clash with kallad's.

use ballista_core::JobId;
use ballista_core::serde::protobuf::executor_status::Status;
use ballista_core::serde::protobuf::job_status;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// An executor the scheduler knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorInfo {
    /// Executor id.
    pub id: String,
    /// The host it advertised.
    pub host: String,
    /// Its Flight port.
    pub flight_port: u16,
    /// Its gRPC port.
    pub grpc_port: u16,
    /// Task slots.
    pub slots: u32,
    /// Seconds since its last heartbeat.
    pub last_heartbeat_secs: Option<u64>,
    /// When its last heartbeat arrived, in seconds since the Unix epoch.
    pub last_heartbeat_unix_secs: Option<u64>,
}

/// The embedded scheduler.
pub struct EmbeddedScheduler {
    server: SchedulerServer<LogicalPlanNode, PhysicalPlanNode>,
    addr: SocketAddr,
    executor_timeout: Duration,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for EmbeddedScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedScheduler").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for EmbeddedScheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EmbeddedScheduler {
    /// Binds `bind_host:port` (0 picks a free port) and serves the scheduler's gRPC there;
    /// executors are told to reach it at `external_host`.
    /// `executor_timeout` is how long an executor may stay silent before it is dead;
    /// `drain_grace` how long a stopping executor may take to finish its tasks before they are
    /// re-run elsewhere (the executors' `--shutdown-grace`); `cluster_wait` how long kallad lets
    /// a job go on with no executor (Ballista's own limit is set beyond it, so kallad's fires).
    pub async fn start(
        bind_host: &str,
        external_host: &str,
        port: u16,
        executor_timeout: Duration,
        drain_grace: Duration,
        cluster_wait: Duration,
    ) -> Result<EmbeddedScheduler, String> {
        let listener = tokio::net::TcpListener::bind((bind_host, port))
            .await
            .map_err(|e| format!("cannot bind the scheduler gRPC port {bind_host}:{port}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let timeout = executor_timeout.as_secs().max(1);
        let config = SchedulerConfig {
            external_host: external_host.to_string(),
            bind_port: addr.port(),
            executor_timeout_seconds: timeout,
            expire_dead_executor_interval_seconds: (timeout / 3).max(1),
            executor_termination_grace_period: drain_grace.as_secs(),
            no_executors_grace_period_seconds: timeout + cluster_wait.as_secs() + 60,
            // Spread a stage's tasks over every executor (the default fills one executor first).
            task_distribution: TaskDistributionPolicy::RoundRobin,
            override_physical_codec: Some(crate::codec::ClusterCodec::shared()),
            override_logical_codec: Some(crate::codec::ClusterLogicalCodec::shared()),
            // Final results are fetched as soon as a job succeeds; keep them a minute, not five.
            finished_job_data_clean_up_interval_seconds: 60,
            ..Default::default()
        };
        let cluster = BallistaCluster::new_from_config(&config).await.map_err(|e| e.to_string())?;
        let server = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
            .await
            .map_err(|e| e.to_string())?;
        let serving = server.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = start_grpc_service_with_listener(listener, serving).await {
                tracing::error!(error = %e, "the scheduler gRPC service stopped");
            }
        });
        Ok(EmbeddedScheduler { server, addr, executor_timeout, task })
    }

    /// The Ballista scheduler.
    pub fn server(&self) -> &SchedulerServer<LogicalPlanNode, PhysicalPlanNode> {
        &self.server
    }

    /// The status of a Ballista job (`None` while it is not known yet).
    pub async fn job_status(&self, job_id: &JobId) -> Result<Option<job_status::Status>, String> {
        let status = self.server.state.task_manager.get_job_status(job_id).await.map_err(|e| e.to_string())?;
        Ok(status.and_then(|s| s.status))
    }

    /// The bound gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Executors that sent a heartbeat within the executor timeout and are not draining.
    pub async fn live_executors(&self) -> Vec<ExecutorInfo> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let states = match self.server.state.executor_manager.get_executors_state().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the executors' state");
                return Vec::new();
            }
        };
        let mut out: Vec<ExecutorInfo> = states
            .into_iter()
            .filter_map(|(meta, heartbeat, _)| {
                let age = heartbeat.map(|t| now.saturating_sub(t.as_secs()));
                // A draining (SIGTERM) or dead executor takes no new tasks: not live.
                let active = !matches!(
                    self.server
                        .state
                        .executor_manager
                        .get_executor_hearbeat(&meta.id)
                        .and_then(|h| h.status)
                        .and_then(|s| s.status),
                    Some(Status::Terminating(_) | Status::Dead(_))
                );
                let alive = active && age.is_some_and(|a| a <= self.executor_timeout.as_secs());
                alive.then_some(ExecutorInfo {
                    id: meta.id,
                    host: meta.host,
                    flight_port: meta.port,
                    grpc_port: meta.grpc_port,
                    slots: meta.specification.vcores,
                    last_heartbeat_secs: age,
                    last_heartbeat_unix_secs: heartbeat.map(|t| t.as_secs()),
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}
