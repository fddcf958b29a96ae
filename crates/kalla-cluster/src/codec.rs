//! The extension codecs of the scheduler and the executors. Physical: Kalla's nodes (the
//! Postgres scan) go to kalla-core's [`KallaPhysicalCodec`], everything else Ballista adds to a
//! distributed plan (shuffle readers and writers, …) to Ballista's own codec. Logical: Kalla's
//! table provider (the Postgres table) and UDFs go to [`KallaLogicalCodec`], the rest (Ballista's
//! cache node, file formats) to Ballista's. Each side's bytes travel in their own field of
//! `ClusterPhysicalNode` / `ClusterLogicalNode` (`proto/kalla.proto`), so decoding never guesses.
//!
//! kallad submits plans to its embedded scheduler physically and in-process, so what crosses
//! processes is the physical encoding. The logical codec is installed too, so a logical plan
//! reaching Ballista decodes with Kalla's functions; a Postgres table in one decodes only where
//! its job's snapshots are held ([`ClusterLogicalCodec::for_job`]).

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use kalla_connectors::postgres::snapshot::SnapshotRegistry;
use kalla_core::codec::proto::{
    ClusterLogicalNode, ClusterPhysicalNode, cluster_logical_node, cluster_physical_node::Codec,
};
use kalla_core::codec::{KallaLogicalCodec, KallaPhysicalCodec};
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

/// Kalla's logical codec in front of Ballista's.
#[derive(Debug, Default)]
pub struct ClusterLogicalCodec {
    kalla: KallaLogicalCodec,
    ballista: BallistaLogicalExtensionCodec,
}

impl ClusterLogicalCodec {
    /// The codec as Ballista's configs take it: no job's snapshots, so a Postgres table is
    /// refused (kallad submits physical plans; see the module docs).
    pub fn shared() -> Arc<dyn LogicalExtensionCodec> {
        Arc::new(ClusterLogicalCodec::default())
    }

    /// A codec that decodes Postgres tables into the snapshots of the job owning `snapshots`.
    pub fn for_job(snapshots: Arc<SnapshotRegistry>) -> ClusterLogicalCodec {
        ClusterLogicalCodec { kalla: KallaLogicalCodec::for_job(snapshots), ballista: Default::default() }
    }

    /// Writes what Kalla's side encodes, or Ballista's when Kalla's does not know the node.
    fn encode_either(
        &self,
        buf: &mut Vec<u8>,
        kalla: impl FnOnce(&KallaLogicalCodec, &mut Vec<u8>) -> Result<()>,
        ballista: impl FnOnce(&BallistaLogicalExtensionCodec, &mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let mut inner = Vec::new();
        let codec = match kalla(&self.kalla, &mut inner) {
            Ok(()) => cluster_logical_node::Codec::Kalla(inner),
            Err(DataFusionError::NotImplemented(_)) => {
                inner.clear();
                ballista(&self.ballista, &mut inner)?;
                cluster_logical_node::Codec::Ballista(inner)
            }
            Err(e) => return Err(e),
        };
        ClusterLogicalNode { codec: Some(codec) }
            .encode(buf)
            .map_err(|e| DataFusionError::Internal(format!("encoding a logical plan extension: {e}")))
    }

    fn decode_envelope(buf: &[u8]) -> Result<cluster_logical_node::Codec> {
        ClusterLogicalNode::decode(buf)
            .map_err(|e| DataFusionError::Internal(format!("not a kallad logical plan extension: {e}")))?
            .codec
            .ok_or_else(|| DataFusionError::Internal("an empty kallad logical plan extension".into()))
    }
}

impl LogicalExtensionCodec for ClusterLogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        match Self::decode_envelope(buf)? {
            cluster_logical_node::Codec::Kalla(b) => self.kalla.try_decode(&b, inputs, ctx),
            cluster_logical_node::Codec::Ballista(b) => self.ballista.try_decode(&b, inputs, ctx),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.encode_either(buf, |k, b| k.try_encode(node, b), |c, b| c.try_encode(node, b))
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match Self::decode_envelope(buf)? {
            cluster_logical_node::Codec::Kalla(b) => self.kalla.try_decode_table_provider(&b, table_ref, schema, ctx),
            cluster_logical_node::Codec::Ballista(b) => {
                self.ballista.try_decode_table_provider(&b, table_ref, schema, ctx)
            }
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.encode_either(
            buf,
            |k, b| k.try_encode_table_provider(table_ref, Arc::clone(&node), b),
            |c, b| c.try_encode_table_provider(table_ref, Arc::clone(&node), b),
        )
    }

    // Kalla has no file formats of its own: Ballista's codec (DataFusion's formats) does them.
    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match self.kalla.try_decode_udf(name, buf) {
            Err(DataFusionError::NotImplemented(_)) => self.ballista.try_decode_udf(name, buf),
            other => other,
        }
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        // Kalla's UDFs and DataFusion's travel by name alone.
        self.kalla.try_encode_udf(node, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::datasource::provider_as_source;
    use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
    use datafusion::prelude::SessionContext;
    use datafusion_proto::bytes::{
        logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
    };
    use kalla_connectors::postgres::catalog::PgColumn;
    use kalla_connectors::postgres::scan::{PgScanSpec, PgTable};
    use kalla_connectors::postgres::types::{PgScalar, PgType};
    use kalla_connectors::postgres::uri::{PgLocation, ScanMode, Tls};

    /// A Postgres table filtered with a Kalla function: both of Kalla's logical parts.
    fn plan(snapshots: &Arc<SnapshotRegistry>) -> LogicalPlan {
        let spec = PgScanSpec {
            alias: "payments".into(),
            run_id: "job-a".into(),
            location: PgLocation {
                host: "127.0.0.1".into(),
                port: 5432,
                user: "kalla".into(),
                password: None,
                dbname: "bank".into(),
                schema: "public".into(),
                table: "payments".into(),
                tls: Tls::Disable,
                scan: ScanMode::Single,
            },
            columns: vec![PgColumn {
                name: "amount".into(),
                pg_type: PgType::Scalar(PgScalar::Numeric { precision: 12, scale: 2 }),
                type_name: "numeric".into(),
                unconstrained_numeric: false,
            }],
            ctid_ranges: false,
            pages: 1,
            reltuples: -1.0,
            relkind: 'r',
        };
        let tolerance = kalla_core::session::kalla_udfs()
            .into_iter()
            .find(|u| u.name() == "tolerance_match")
            .expect("Kalla registers tolerance_match");
        let table = provider_as_source(Arc::new(PgTable::new(spec, Arc::clone(snapshots))));
        LogicalPlanBuilder::scan("payments", table, None)
            .and_then(|b| b.filter(tolerance.call(vec![col("amount"), lit(100i64), lit(1i64)])))
            .and_then(|b| b.build())
            .expect("the plan builds")
    }

    #[test]
    fn kalla_tables_and_functions_cross_the_cluster_logical_codec() {
        let job = Arc::new(SnapshotRegistry::new("job-a"));
        let plan = plan(&job);
        let codec = ClusterLogicalCodec::for_job(Arc::clone(&job));
        let bytes = logical_plan_to_bytes_with_extension_codec(&plan, &codec).expect("encodes");
        // A bare context: tolerance_match and the table can only come from the codec.
        let remote = SessionContext::new();
        let back = logical_plan_from_bytes_with_extension_codec(&bytes, &remote.task_ctx(), &codec).expect("decodes");
        assert_eq!(back.display_indent_schema().to_string(), plan.display_indent_schema().to_string());

        // The codec Ballista's scheduler holds has no job's snapshots: it refuses the table.
        let e = logical_plan_from_bytes_with_extension_codec(
            &bytes,
            &remote.task_ctx(),
            ClusterLogicalCodec::shared().as_ref(),
        )
        .expect_err("no job's snapshots here");
        assert!(e.to_string().contains("belongs to job job-a"), "{e}");
    }
}
