//! The DataFusion session a job runs in: exact decimal literals, Kalla's UDFs, one memory pool.

use crate::udf::{tolerance_match, tolerance_match_pct};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{SessionConfig, SessionContext};
use kalla_connectors::file::{inferred_udf, parse_decimal_udf};
use kalla_connectors::postgres::scan::MaxScanPartitions;
use std::sync::Arc;

/// Every scalar UDF Kalla adds to DataFusion; sessions and codecs register exactly these.
/// (plus the test-only fault function when its environment variable is set, see [`crate::fault`]).
pub fn kalla_udfs() -> Vec<ScalarUDF> {
    let mut udfs = vec![tolerance_match(), tolerance_match_pct(), parse_decimal_udf(), inferred_udf()];
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
    // Files read back with `read_parquet` (the matched keys, the unmatched keys) and SQL's string
    // types give `Utf8`. Parquet sources do not follow this setting: they are read as `Utf8View`,
    // which measured faster (`kalla_connectors::file::open_file_source`).
    config.options_mut().execution.parquet.schema_force_view_types = false;
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    config
}

/// Cluster jobs broadcast a hash join's smaller side only under this estimated size. Measured
/// (docs/benchmarks.md, "Cluster"): Ballista's default, 128 MiB, broadcast the 2M × 1.9M match's
/// whole invoices side to every task (each building the full hash table), which was slower than
/// shuffling both sides; the anti joins' key columns stay well under it and are broadcast.
pub const CLUSTER_BROADCAST_BYTES: usize = 32 * 1024 * 1024;

/// Cluster jobs broadcast the build side of a join over key columns only (each source's anti join
/// against the matched keys) under this estimated size: Ballista's own default broadcast limit.
/// The alternative is a partitioned join that shuffles every row of the source, all columns,
/// to find the few it keeps. Measured (docs/benchmarks.md, "Cluster at 10M"): at 10M × 10M the
/// 9.2M matched keys were over [`CLUSTER_BROADCAST_BYTES`], and the shuffle of both sources made
/// writing the results 9.0–9.7 s; broadcast, 5.7–5.8 s.
pub const CLUSTER_KEY_BROADCAST_BYTES: usize = 128 * 1024 * 1024;

/// A cluster job reads a keyed file source in one task per plan when it has at most this many
/// rows (by its files' metadata), and handles such sources side by side:
/// - its key count runs in one task, started with the match: split over tasks it would shuffle
///   every key to the task that owns it; in one task it needs no shuffle, and it fills the
///   executors' idle slots between the match's stages;
/// - its anti join runs in one task, which builds the matched keys once rather than once per
///   task, while the other source's runs on another executor.
///
/// Measured at 2M rows (docs/benchmarks.md, "Cluster at 2M: session 11"). Past a few million
/// rows one task's hash tables outgrow the caches and one task takes too long, and the source
/// is split over the job's partitions again.
pub const CLUSTER_ONE_TASK_SOURCE_ROWS: u64 = 4_000_000;

/// Settings a plan needs before it is planned for Ballista (the ones Ballista's own client
/// applies): no round-robin repartitioning (a task runs a slice of a stage), no dynamic filters
/// (their producer and consumer may land in different stages), scalar subqueries as joins, and
/// hash joins broadcast only under [`CLUSTER_BROADCAST_BYTES`] / 1M rows (Ballista's own limit is
/// set to the same by `kalla_cluster::runner::apply_cluster_session_settings`, which calls this).
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
    options.optimizer.hash_join_single_partition_threshold = CLUSTER_BROADCAST_BYTES;
    options.optimizer.hash_join_single_partition_threshold_rows = 1_000_000;
}

/// Rows per hash partition a local job aims at when `--partitions` is not given: the size at
/// which a 2-core machine's join and aggregate hash tables still run at their small-input speed
/// (measured in docs/benchmarks.md, "Growth").
pub const ROWS_PER_PARTITION: u64 = 500_000;

/// At most this many partitions come from the input size (measured: 64 was slower than 16–40 at
/// 10M rows per side on 2 cores).
pub const MAX_SCALED_PARTITIONS: usize = 32;

/// The partitions a local job uses: `base` (the cores, or `--partitions`' default), raised so that
/// each hash partition of the largest source holds about `rows_per_partition` rows, at most
/// [`MAX_SCALED_PARTITIONS`] (never below `base`).
pub fn partitions_for_rows(base: usize, largest_source_rows: Option<u64>, rows_per_partition: u64) -> usize {
    let base = base.max(1);
    let Some(rows) = largest_source_rows else { return base };
    let wanted = rows.div_ceil(rows_per_partition.max(1));
    let wanted = usize::try_from(wanted).unwrap_or(usize::MAX).min(MAX_SCALED_PARTITIONS);
    base.max(wanted)
}

/// Raises the session's `target_partitions` to [`partitions_for_rows`] for a local run, keeping the
/// Postgres scans at the parallelism the session had (`MaxScanPartitions`): the hash joins and
/// aggregates get more, smaller hash tables; the reads do not get more connections. Returns the
/// partitions now in use.
pub fn scale_partitions(ctx: &SessionContext, largest_source_rows: Option<u64>, rows_per_partition: u64) -> usize {
    let state = ctx.state_ref();
    let mut state = state.write();
    let config = state.config_mut();
    let base = config.target_partitions();
    let partitions = partitions_for_rows(base, largest_source_rows, rows_per_partition);
    if partitions != base {
        config.set_extension(Arc::new(MaxScanPartitions(base)));
        config.options_mut().execution.target_partitions = partitions;
    }
    partitions
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_grow_with_the_largest_source_from_the_cores_up_to_the_cap() {
        assert_eq!(partitions_for_rows(2, None, ROWS_PER_PARTITION), 2);
        assert_eq!(partitions_for_rows(2, Some(0), ROWS_PER_PARTITION), 2);
        assert_eq!(partitions_for_rows(2, Some(1_000_000), ROWS_PER_PARTITION), 2);
        assert_eq!(partitions_for_rows(2, Some(1_000_001), ROWS_PER_PARTITION), 3);
        assert_eq!(partitions_for_rows(2, Some(2_000_000), ROWS_PER_PARTITION), 4);
        assert_eq!(partitions_for_rows(2, Some(10_000_000), ROWS_PER_PARTITION), 20);
        assert_eq!(partitions_for_rows(2, Some(100_000_000), ROWS_PER_PARTITION), MAX_SCALED_PARTITIONS);
        assert_eq!(partitions_for_rows(48, Some(100_000_000), ROWS_PER_PARTITION), 48);
        assert_eq!(partitions_for_rows(0, Some(10), 0), 10);
    }

    #[test]
    fn scaling_a_session_caps_its_postgres_scans_at_the_parallelism_it_had() {
        let ctx = new_session(2, None).unwrap();
        assert_eq!(scale_partitions(&ctx, Some(3_000_000), ROWS_PER_PARTITION), 6);
        let state = ctx.state();
        assert_eq!(state.config().target_partitions(), 6);
        assert_eq!(kalla_connectors::postgres::scan::scan_partitions(state.config()), 2);

        let small = new_session(2, None).unwrap();
        assert_eq!(scale_partitions(&small, Some(10), ROWS_PER_PARTITION), 2);
        assert!(small.state().config().get_extension::<MaxScanPartitions>().is_none());
    }
}
