//! Anti joins whose build side every cluster task reads for itself (cluster mode).
//!
//! Each keyed source's unmatched rows come from `source RIGHT ANTI JOIN matched keys` with the
//! keys collected on the build side (`CollectLeft`), read from the run's own `matched.parquet`.
//! Ballista turns every `CollectLeft` join into a broadcast: a stage of its own reads the keys
//! and writes them as shuffle files, and every task of the join fetches and decodes all of
//! them. The keys are already a file every executor can read (the run's output directory is
//! shared, as [`crate::parts`] requires), so [`TaskBuildJoinExec`] hides the build side from
//! Ballista: it shows only the probe side as its child, so Ballista neither cuts a stage at the
//! join nor slices the build side, and each task reads the keys from `matched.parquet` itself —
//! what the broadcast gave it, without the extra stage, its shuffle files and their transfer.
//!
//! The join is DataFusion's own `HashJoinExec`, unchanged; only which process reads its build
//! side moves. [`build_in_each_task`] wraps only right anti joins in `CollectLeft` mode whose
//! build side reads nothing but the run's outputs: a right anti join keeps or drops each probe
//! row by the build side alone, so a task that reads the whole build side and its own slice of
//! the probe side gives exactly that slice's rows.

use crate::progress::ReadTracker;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, JoinType, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use std::fmt;
use std::sync::Arc;

/// A `CollectLeft` hash join shown to Ballista as a node over its probe side only; executing a
/// partition executes the join's partition, which reads the whole build side in this process.
#[derive(Debug, Clone)]
pub struct TaskBuildJoinExec {
    /// The `HashJoinExec`.
    join: Arc<dyn ExecutionPlan>,
    build: Arc<dyn ExecutionPlan>,
    probe: Arc<dyn ExecutionPlan>,
}

impl TaskBuildJoinExec {
    /// Wraps `join`, which must be a `CollectLeft` right anti `HashJoinExec`.
    pub fn try_new(join: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let hash = join.downcast_ref::<HashJoinExec>().ok_or_else(|| {
            DataFusionError::Internal(format!("TaskBuildJoinExec takes a hash join, not {}", join.name()))
        })?;
        if *hash.partition_mode() != PartitionMode::CollectLeft || *hash.join_type() != JoinType::RightAnti {
            return Err(DataFusionError::Internal(format!(
                "TaskBuildJoinExec takes a CollectLeft right anti join, not a {:?} {:?} join",
                hash.partition_mode(),
                hash.join_type()
            )));
        }
        let (build, probe) = (Arc::clone(hash.left()), Arc::clone(hash.right()));
        Ok(TaskBuildJoinExec { join, build, probe })
    }

    /// The join, build and probe side included.
    pub fn join(&self) -> &Arc<dyn ExecutionPlan> {
        &self.join
    }

    /// The build side, which every task reads whole.
    pub fn build(&self) -> &Arc<dyn ExecutionPlan> {
        &self.build
    }
}

impl DisplayAs for TaskBuildJoinExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "TaskBuildJoinExec: build side read by each task, ")?;
        self.join.fmt_as(t, f)
    }
}

impl ExecutionPlan for TaskBuildJoinExec {
    fn name(&self) -> &str {
        "TaskBuildJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.join.properties()
    }

    /// The probe side only: what Ballista may slice between tasks.
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.probe]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.join.apply_expressions(f)
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(TaskBuildJoinExec::try_new(Arc::clone(&self.join).reset_state()?)?))
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "TaskBuildJoinExec takes one input (the probe side), got {}",
                children.len()
            )));
        }
        let probe = children.swap_remove(0);
        let join = Arc::clone(&self.join).replace_children(vec![Arc::clone(&self.build), probe], recompute())?;
        Ok(Arc::new(TaskBuildJoinExec::try_new(join)?))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, recompute())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        self.join.execute(partition, context)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.join.metrics()
    }
}

/// `plan` with every `CollectLeft` right anti join whose build side reads only the run's outputs
/// (by `reads`) wrapped in a [`TaskBuildJoinExec`]; any other node as it was.
pub fn build_in_each_task(plan: Arc<dyn ExecutionPlan>, reads: &ReadTracker) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && *join.partition_mode() == PartitionMode::CollectLeft
        && *join.join_type() == JoinType::RightAnti
        && reads.reads_only_outputs(join.left())
    {
        let probe = build_in_each_task(Arc::clone(join.right()), reads)?;
        let join = Arc::clone(&plan).replace_children(vec![Arc::clone(join.left()), probe], recompute())?;
        return Ok(Arc::new(TaskBuildJoinExec::try_new(join)?));
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let rebuilt = children.iter().map(|c| build_in_each_task(Arc::clone(c), reads)).collect::<Result<Vec<_>>>()?;
    if rebuilt.iter().zip(&children).all(|(new, old)| Arc::ptr_eq(new, old)) {
        return Ok(plan);
    }
    plan.replace_children(rebuilt, recompute())
}

/// Whether `plan` has a [`TaskBuildJoinExec`] anywhere.
pub fn builds_in_each_task(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<TaskBuildJoinExec>() || plan.children().into_iter().any(builds_in_each_task)
}

/// Options that rebuild a node's properties from its new children.
pub(crate) fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}
