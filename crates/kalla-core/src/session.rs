//! The DataFusion session a job runs in: exact decimal literals, Kalla's UDFs, one memory pool.

use crate::udf::{tolerance_match, tolerance_match_pct};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{SessionConfig, SessionContext};
use kalla_connectors::file::parse_decimal_udf;
use std::sync::Arc;

/// Every scalar UDF Kalla adds to DataFusion; sessions and codecs register exactly these.
/// (plus the test-only fault function when its environment variable is set, see [`crate::fault`]).
pub fn kalla_udfs() -> Vec<ScalarUDF> {
    let mut udfs = vec![tolerance_match(), tolerance_match_pct(), parse_decimal_udf()];
    udfs.extend(crate::fault::fault_udf_from_env());
    udfs
}

/// Builds the session configuration jobs plan and run with.
pub fn session_config(target_partitions: usize) -> SessionConfig {
    let mut config =
        SessionConfig::new().with_target_partitions(target_partitions.max(1)).with_information_schema(false);
    // `0.01` is a decimal, not a float: tolerance arithmetic on money must be exact.
    config.options_mut().sql_parser.parse_float_as_decimal = true;
    // A scan's file groups are its partitions. With work stealing (on by default in DataFusion
    // 55) sibling partitions share one queue of every file of the scan; a task that runs one
    // partition elsewhere (a Ballista executor) would then read every file. Kalla's scans are
    // partitioned on purpose (Postgres page ranges), so each partition reads its own group.
    config.options_mut().execution.enable_file_stream_work_stealing = false;
    // String columns stay `Utf8` (not `Utf8View`) in local and cluster mode alike: Ballista moves
    // shuffle data as Arrow IPC over Flight, where view arrays make oversized frames.
    config.options_mut().execution.parquet.schema_force_view_types = false;
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    config
}

/// Settings a plan needs before it is planned for Ballista (the ones Ballista's own client
/// applies): no round-robin repartitioning (a task runs a slice of a stage), no dynamic filters
/// (their producer and consumer may land in different stages), scalar subqueries as joins, and
/// hash joins broadcast only under Ballista's thresholds (128 MiB / 1M rows).
/// `target_partitions` is the cluster's task slots unless `--partitions` fixed it.
pub fn apply_cluster_settings(ctx: &SessionContext, target_partitions: usize) {
    let state = ctx.state_ref();
    let mut state = state.write();
    let options = state.config_mut().options_mut();
    options.execution.target_partitions = target_partitions.max(1);
    options.optimizer.enable_round_robin_repartition = false;
    // The umbrella flag only rules its three members through `set`; the fields are set one by one.
    options.optimizer.enable_dynamic_filter_pushdown = false;
    options.optimizer.enable_join_dynamic_filter_pushdown = false;
    options.optimizer.enable_topk_dynamic_filter_pushdown = false;
    options.optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    options.optimizer.enable_physical_uncorrelated_scalar_subquery = false;
    options.optimizer.hash_join_single_partition_threshold = 128 * 1024 * 1024;
    options.optimizer.hash_join_single_partition_threshold_rows = 1_000_000;
}

/// A session with Kalla's UDFs; `pool` is the process-wide memory pool when a limit is set.
pub fn new_session(
    target_partitions: usize,
    pool: Option<Arc<dyn MemoryPool>>,
) -> datafusion::common::Result<SessionContext> {
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(pool) = pool {
        runtime = runtime.with_memory_pool(pool);
    }
    let state = SessionStateBuilder::new()
        .with_config(session_config(target_partitions))
        .with_runtime_env(runtime.build_arc()?)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    for udf in kalla_udfs() {
        ctx.register_udf(udf);
    }
    Ok(ctx)
}

pub use crate::memory::memory_pool;
