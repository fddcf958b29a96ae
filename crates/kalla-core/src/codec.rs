//! Kalla's physical extension codec: what `datafusion-proto` needs, beyond its own messages, to
//! ship a Kalla plan to another process. Today that is the UDFs (stateless, encoded by name);
//! Kalla's own plan nodes join here with the Postgres scan.

use crate::session::kalla_udfs;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, not_impl_err};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use kalla_recipe::{ErrorCode, KallaError};
use std::sync::Arc;

/// Encodes and decodes the parts of a physical plan that are Kalla's.
#[derive(Debug, Default, Clone)]
pub struct KallaPhysicalCodec;

impl PhysicalExtensionCodec for KallaPhysicalCodec {
    fn try_decode(
        &self,
        _buf: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        not_impl_err!("Kalla defines no custom physical plan node yet")
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        _buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        not_impl_err!("Kalla cannot encode plan node {}", node.name())
    }

    fn try_decode_udf(&self, name: &str, _buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match kalla_udfs().into_iter().find(|u| u.name() == name) {
            Some(udf) => Ok(Arc::new(udf)),
            None => not_impl_err!("unknown scalar function {name}"),
        }
    }

    fn try_encode_udf(&self, _node: &ScalarUDF, _buf: &mut Vec<u8>) -> Result<()> {
        // Kalla's UDFs are stateless: the name in the plan is enough to decode them.
        Ok(())
    }
}

/// Refuses plans that `datafusion-proto` would ship wrongly. DataFusion 55's CSV scan message has
/// no compression field, so a gzip CSV scan would be decoded as plain text on the other side;
/// such a plan is not distributable (it runs locally).
pub fn check_distributable(plan: &Arc<dyn ExecutionPlan>) -> std::result::Result<(), KallaError> {
    let mut problem: Option<String> = None;
    let _ = plan.apply(|node| {
        if let Some(exec) = node.downcast_ref::<DataSourceExec>()
            && let Some(scan) = exec.data_source().downcast_ref::<FileScanConfig>()
            && scan.file_compression_type.is_compressed()
        {
            problem = Some("a compressed CSV scan cannot be shipped to executors (DataFusion 55's plan encoding drops the compression)".into());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match problem {
        Some(message) => Err(KallaError::new(ErrorCode::NotDistributable, message)),
        None => Ok(()),
    }
}

/// Serializes `plan` with Kalla's codec and decodes it again, as a remote executor would: in a
/// context that has the job's settings but *not* Kalla's functions, so the UDFs must come from
/// the codec. Used to prove every plan the engine runs can be shipped.
pub fn roundtrip_physical_plan(plan: Arc<dyn ExecutionPlan>, job_ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    let remote = SessionContext::new_with_config(job_ctx.session_config().clone());
    let task_ctx = remote.task_ctx();
    let task_ctx = task_ctx.as_ref();
    check_distributable(&plan).map_err(|e| DataFusionError::External(Box::new(e)))?;
    let codec = KallaPhysicalCodec;
    let bytes = datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, &codec)?;
    datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(&bytes, task_ctx, &codec)
}
