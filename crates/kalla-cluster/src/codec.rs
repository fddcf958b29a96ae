//! The physical extension codec of the scheduler and the executors: Kalla's nodes (the Postgres
//! scan) go to kalla-core's [`KallaPhysicalCodec`], everything else Ballista adds to a distributed
//! plan (shuffle readers and writers, …) to Ballista's own codec. Each side's bytes travel in
//! their own field of `ClusterPhysicalNode` (`proto/kalla.proto`), so decoding never guesses.
//!
//! Plans reach Ballista physically (the scheduler plans them in-process and submits the physical
//! plan), so no logical codec is involved: DataFusion's default logical codec is left in place.

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use kalla_core::codec::KallaPhysicalCodec;
use kalla_core::codec::proto::{ClusterPhysicalNode, cluster_physical_node::Codec};
use prost::Message;
use std::sync::Arc;

/// Kalla's codec in front of Ballista's.
#[derive(Debug, Default)]
pub struct ClusterCodec {
    kalla: KallaPhysicalCodec,
    ballista: BallistaPhysicalExtensionCodec,
}

impl ClusterCodec {
    /// The codec as Ballista's configs take it.
    pub fn shared() -> Arc<dyn PhysicalExtensionCodec> {
        Arc::new(ClusterCodec::default())
    }
}

impl PhysicalExtensionCodec for ClusterCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = ClusterPhysicalNode::decode(buf)
            .map_err(|e| DataFusionError::Internal(format!("not a kallad plan extension node: {e}")))?;
        match node.codec {
            Some(Codec::Kalla(bytes)) => self.kalla.try_decode(&bytes, inputs, ctx, converter),
            Some(Codec::Ballista(bytes)) => self.ballista.try_decode(&bytes, inputs, ctx, converter),
            None => Err(DataFusionError::Internal("an empty kallad plan extension node".into())),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let mut inner = Vec::new();
        let codec = match self.kalla.try_encode(Arc::clone(&node), &mut inner, converter) {
            Ok(()) => Codec::Kalla(inner),
            Err(DataFusionError::NotImplemented(_)) => {
                inner.clear();
                self.ballista.try_encode(node, &mut inner, converter)?;
                Codec::Ballista(inner)
            }
            Err(e) => return Err(e),
        };
        ClusterPhysicalNode { codec: Some(codec) }
            .encode(buf)
            .map_err(|e| DataFusionError::Internal(format!("encoding a plan extension node: {e}")))
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.kalla.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.kalla.try_encode_udf(node, buf)
    }
}
