//! The process-wide memory pool of `--memory-limit`.
//!
//! A [`FairSpillPool`] of the limit, with one exception: the buffers of `RepartitionExec`'s
//! output channels are counted but never refused. DataFusion 55 answers a refused repartition
//! buffer by spilling it to a per-partition spill pool, and that path can stop a query forever:
//! when two input tasks spill into the same output partition at once, the reader waits on the
//! older file while the batch it needs is in the newer one and every writer waits on the reader
//! (apache/datafusion#24883, fixed after 55.2 by #24891). kallad hit it on the benchmark's join
//! under a 400 MiB limit — every thread parked, the job never finishing — and, on another run, a
//! spill file read after it was removed ("No such file or directory").
//!
//! Not refusing those buffers keeps the repartition in memory, where its size is bounded by
//! DataFusion's channel gate (an input stops while every output channel holds data), so a
//! query may use a few batches per partition more than the limit. The operators that own large
//! state — joins, sorts, aggregations — are still refused past the limit and spill where
//! DataFusion can (sorts, aggregations) or fail with `memory_limit_exceeded` (hash joins).

use datafusion::common::Result;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation};
use std::sync::Arc;

/// A fair, spill-aware pool of a fixed size that never refuses a repartition channel buffer.
#[derive(Debug)]
pub struct KallaMemoryPool {
    inner: FairSpillPool,
}

impl KallaMemoryPool {
    /// A pool of `bytes`.
    pub fn new(bytes: usize) -> KallaMemoryPool {
        KallaMemoryPool { inner: FairSpillPool::new(bytes) }
    }
}

/// True for the reservation of a `RepartitionExec` output channel (`RepartitionExec[3]`), not
/// for its order-preserving merge (`RepartitionExec[Merge 3]`), which stays limited.
fn is_repartition_channel(consumer: &MemoryConsumer) -> bool {
    consumer
        .name()
        .strip_prefix("RepartitionExec[")
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|partition| !partition.is_empty() && partition.bytes().all(|b| b.is_ascii_digit()))
}

impl std::fmt::Display for KallaMemoryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KallaMemoryPool over {}", self.inner)
    }
}

impl MemoryPool for KallaMemoryPool {
    fn name(&self) -> &str {
        "KallaMemoryPool"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if is_repartition_channel(reservation.consumer()) {
            self.inner.grow(reservation, additional);
            return Ok(());
        }
        self.inner.try_grow(reservation, additional)
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// The pool of `--memory-limit` (see the module docs).
pub fn memory_pool(bytes: usize) -> Arc<dyn MemoryPool> {
    Arc::new(KallaMemoryPool::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repartition_channels_grow_past_the_limit_and_everything_else_is_refused() {
        let pool: Arc<dyn MemoryPool> = memory_pool(1000);
        let channel = MemoryConsumer::new("RepartitionExec[1]").with_can_spill(true).register(&pool);
        channel.try_grow(5000).expect("a repartition channel is never refused");
        assert_eq!(pool.reserved(), 5000, "it is still counted");

        for name in ["HashJoinInput", "ExternalSorter[0]", "RepartitionExec[Merge 1]", "RepartitionExec[]"] {
            let other = MemoryConsumer::new(name).register(&pool);
            let e = other.try_grow(1).expect_err("the pool is over its limit");
            assert!(e.to_string().contains("Resources exhausted"), "{name}: {e}");
        }

        drop(channel);
        assert_eq!(pool.reserved(), 0);
        let join = MemoryConsumer::new("HashJoinInput").register(&pool);
        join.try_grow(1000).expect("the whole limit is available again");
        join.try_grow(1).expect_err("but not more");
    }
}
