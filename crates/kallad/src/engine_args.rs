//! Flags shared by `kallad run` and `kallad scheduler`: where data and outputs live and how big
//! a job's session is.

use clap::Args;
use datafusion::execution::memory_pool::MemoryPool;
use kalla_core::session::memory_pool;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The longest duration a flag takes: 10 years (clock arithmetic on much larger values overflows).
pub(crate) const MAX_FLAG_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses a duration flag (`30s`, `6h`, `7d`), at most [`MAX_FLAG_DURATION`].
pub(crate) fn duration_flag(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d > MAX_FLAG_DURATION {
        return Err(format!("{text} is longer than 10 years, the most a duration flag takes"));
    }
    Ok(d)
}

/// A parser of counts in `min..=max` for a flag.
pub(crate) fn count_flag(min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync {
    move |text| {
        let n: usize = text.trim().parse().map_err(|e| format!("{text} is not a count: {e}"))?;
        if !(min..=max).contains(&n) {
            return Err(format!("{n} is outside {min}..={max}"));
        }
        Ok(n)
    }
}

/// The most partitions a job may have (`--partitions`), task slots an executor may offer
/// (`--concurrent-tasks`) or jobs may run at once (`--max-concurrent-jobs`).
pub(crate) const MAX_PARALLELISM: usize = 4096;

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
    #[arg(long, env = "BALLISTA_PARTITIONS", value_parser = count_flag(1, MAX_PARALLELISM))]
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
