//! Flags shared by `kallad run` and `kallad scheduler`: where data and outputs live and how big
//! a job's session is.

use clap::Args;
use datafusion::execution::memory_pool::MemoryPool;
use kalla_core::session::memory_pool;
use std::path::PathBuf;
use std::sync::Arc;

/// Engine flags (SPEC 2).
#[derive(Debug, Args)]
pub(crate) struct EngineArgs {
    /// Root of relative file source paths; files outside it are refused.
    #[arg(long, env = "KALLA_DATA_DIR", default_value = "./data")]
    pub(crate) data_dir: PathBuf,
    /// Root of relative output paths.
    #[arg(long, env = "KALLA_OUTPUT_DIR", default_value = "./runs")]
    pub(crate) output_dir: PathBuf,
    /// Partitions (parallelism) per job. Default: the number of cores, raised for a local job
    /// with large sources to one partition per 500,000 rows of the largest (at most 32).
    #[arg(long, env = "BALLISTA_PARTITIONS")]
    partitions: Option<usize>,
    /// One memory pool for the process, e.g. `4GiB`; operators spill where they can.
    #[arg(long, env = "KALLA_MEMORY_LIMIT")]
    memory_limit: Option<bytesize::ByteSize>,
}

impl EngineArgs {
    /// `--partitions`, or the number of cores.
    pub(crate) fn partitions(&self) -> usize {
        self.partitions.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
    }

    /// Rows per hash partition local jobs scale to, unless `--partitions` fixed the partitions.
    pub(crate) fn rows_per_partition(&self) -> Option<u64> {
        self.partitions.is_none().then_some(kalla_core::session::ROWS_PER_PARTITION)
    }

    /// `--partitions` when given (cluster jobs otherwise take the live executors' task slots).
    pub(crate) fn explicit_partitions(&self) -> Option<usize> {
        self.partitions
    }

    /// The process-wide pool of `--memory-limit`, when set.
    pub(crate) fn memory_pool(&self) -> Option<Arc<dyn MemoryPool>> {
        self.memory_limit.map(|b| memory_pool(usize::try_from(b.as_u64()).unwrap_or(usize::MAX)))
    }
}
