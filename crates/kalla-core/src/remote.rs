//! Where a job's physical plans run. By default the engine executes them in-process; a
//! [`PlanRunner`] set on a [`crate::PlannedJob`] runs them elsewhere (kalla-cluster's runner ships
//! them to Ballista executors) and hands back their rows, which the engine writes exactly as it
//! writes local results. The engine stays ignorant of Ballista.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use std::sync::Arc;

/// Runs physical plans somewhere other than this process.
pub trait PlanRunner: Send + Sync + std::fmt::Debug {
    /// Runs `plan` (planned in `ctx`) and returns one stream per partition of its result, in
    /// partition order — one per partition the remote side ran, which need not be the number
    /// `plan` had when it was planned here. `label` names the plan in logs (`matching`,
    /// `unmatched rows of invoices`, …). Dropping the returned future or streams before the end
    /// must stop the remote work.
    fn execute(
        &self,
        label: String,
        plan: Arc<dyn ExecutionPlan>,
        ctx: SessionContext,
    ) -> BoxFuture<'static, Result<Vec<SendableRecordBatchStream>, DataFusionError>>;

    /// Whether outputs are written where their rows are made: each partition writes a Parquet
    /// part into the run's temporary directory, which the remote side shares
    /// ([`crate::parts`]). `false`: their rows come back through [`PlanRunner::execute`] and are
    /// written here.
    fn writes_parts(&self) -> bool;

    /// The session to plan and run a join whose build side is only key columns (each source's
    /// anti join against the matched keys) in: the remote side may broadcast such a side
    /// further than the rows of an ordinary join, since the alternative is to shuffle every
    /// row of the source. The default is `ctx` itself.
    fn key_join_session(&self, ctx: &SessionContext) -> Result<SessionContext, DataFusionError> {
        Ok(ctx.clone())
    }
}

/// The partitions' streams as one: their batches interleave as they arrive.
pub fn merged(schema: SchemaRef, partitions: Vec<SendableRecordBatchStream>) -> SendableRecordBatchStream {
    Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::select_all(partitions)))
}
