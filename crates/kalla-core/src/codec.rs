//! Kalla's physical extension codec: what `datafusion-proto` needs, beyond its own messages, to
//! ship a Kalla plan to another process: the UDFs (stateless, encoded by name) and the Postgres
//! scan (a `DataSourceExec` whose `FileSource` is Kalla's `PgSource`), encoded as the prost
//! messages of `proto/kalla.proto` inside the `KallaPhysicalNode` envelope.

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
use kalla_connectors::postgres::scan::PgSource;
use kalla_recipe::{ErrorCode, KallaError};
use prost::Message;
use std::sync::Arc;

/// The prost types of `proto/kalla.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/kalla.rs"));
}

/// The Postgres scan ↔ `PgScanNode`.
mod pg_scan {
    use super::proto;
    use datafusion::common::{DataFusionError, Result};
    use datafusion::datasource::listing::PartitionedFile;
    use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
    use datafusion::physical_plan::ExecutionPlan;
    use kalla_connectors::postgres::catalog::PgColumn;
    use kalla_connectors::postgres::scan::{PgScanSpec, PgSource, pg_scan_exec};
    use kalla_connectors::postgres::types::{PgScalar, PgType, resolve_scalar};
    use kalla_connectors::postgres::uri::{PgLocation, ScanMode, Tls};
    use std::sync::Arc;

    fn bad(what: &str) -> DataFusionError {
        DataFusionError::Internal(format!("a Postgres scan node with {what}"))
    }

    fn scalar_name(s: &PgScalar) -> (&'static str, u32, i32) {
        match s {
            PgScalar::Bool => ("bool", 0, 0),
            PgScalar::Int2 => ("int2", 0, 0),
            PgScalar::Int4 => ("int4", 0, 0),
            PgScalar::Int8 => ("int8", 0, 0),
            PgScalar::Float4 => ("float4", 0, 0),
            PgScalar::Float8 => ("float8", 0, 0),
            PgScalar::Numeric { precision, scale } => ("numeric", *precision as u32, *scale as i32),
            PgScalar::Text => ("text", 0, 0),
            PgScalar::Bpchar => ("bpchar", 0, 0),
            PgScalar::Jsonb => ("jsonb", 0, 0),
            PgScalar::Uuid => ("uuid", 0, 0),
            PgScalar::Bytea => ("bytea", 0, 0),
            PgScalar::Date => ("date", 0, 0),
            PgScalar::Timestamp => ("timestamp", 0, 0),
            PgScalar::TimestampTz => ("timestamptz", 0, 0),
            PgScalar::Time => ("time", 0, 0),
            PgScalar::Interval => ("interval", 0, 0),
        }
    }

    /// The scalar a shipped column names: the catalog type names `scalar_name` writes are the
    /// ones `resolve_scalar` reads; numerics carry their decimal explicitly.
    fn scalar(name: &str, precision: u32, scale: i32) -> Result<PgScalar> {
        if name == "numeric" {
            return Ok(PgScalar::Numeric {
                precision: u8::try_from(precision).map_err(|_| bad("a bad precision"))?,
                scale: i8::try_from(scale).map_err(|_| bad("a bad scale"))?,
            });
        }
        resolve_scalar(name, "b", -1).map_err(|m| bad(&m))
    }

    pub(super) fn encode(source: &PgSource, config: &FileScanConfig) -> Result<proto::PgScanNode> {
        let spec = source.spec();
        let l = &spec.location;
        let projection = source.projection_indices().ok_or_else(|| bad("a projection that is not plain columns"))?;
        let all: Vec<usize> = (0..spec.columns.len()).collect();
        let mut partitions = Vec::new();
        for group in &config.file_groups {
            match group.files() {
                [one] => partitions.push(one.object_meta.location.as_ref().to_string()),
                _ => return Err(bad("a partition of several ranges")),
            }
        }
        Ok(proto::PgScanNode {
            alias: spec.alias.clone(),
            run_id: spec.run_id.clone(),
            location: Some(proto::PgLocation {
                host: l.host.clone(),
                port: l.port as u32,
                user: l.user.clone(),
                password: l.password.clone(),
                dbname: l.dbname.clone(),
                schema: l.schema.clone(),
                table: l.table.clone(),
                tls: match &l.tls {
                    Tls::Disable => "disable",
                    Tls::Prefer => "prefer",
                    Tls::Require => "require",
                    Tls::VerifyFull { .. } => "verify-full",
                }
                .to_string(),
                root_cert: match &l.tls {
                    Tls::VerifyFull { root_cert } => root_cert.clone(),
                    _ => None,
                },
                scan: if l.scan == ScanMode::Single { "single" } else { "ctid" }.to_string(),
            }),
            columns: spec
                .columns
                .iter()
                .map(|c| {
                    let (name, precision, scale) = scalar_name(c.pg_type.scalar());
                    proto::PgColumn {
                        name: c.name.clone(),
                        type_name: c.type_name.clone(),
                        unconstrained_numeric: c.unconstrained_numeric,
                        array: matches!(c.pg_type, PgType::Array(_)),
                        scalar: name.to_string(),
                        precision,
                        scale,
                    }
                })
                .collect(),
            ctid_ranges: spec.ctid_ranges,
            pages: spec.pages,
            reltuples: spec.reltuples,
            relkind: spec.relkind.to_string(),
            snapshot: source.snapshot().map(str::to_string),
            filters: source.filters.clone(),
            has_projection: projection != all,
            projection: projection.iter().map(|i| *i as u32).collect(),
            partitions,
            limit: config.limit.map(|n| n as u64),
            batch_size: source.batch_size() as u64,
        })
    }

    pub(super) fn decode(node: proto::PgScanNode) -> Result<Arc<dyn ExecutionPlan>> {
        let l = node.location.ok_or_else(|| bad("no location"))?;
        let tls = match l.tls.as_str() {
            "disable" => Tls::Disable,
            "prefer" => Tls::Prefer,
            "require" => Tls::Require,
            "verify-full" => Tls::VerifyFull { root_cert: l.root_cert },
            other => return Err(bad(&format!("the unknown TLS mode {other:?}"))),
        };
        let location = PgLocation {
            host: l.host,
            port: u16::try_from(l.port).map_err(|_| bad("a bad port"))?,
            user: l.user,
            password: l.password,
            dbname: l.dbname,
            schema: l.schema,
            table: l.table,
            tls,
            scan: if l.scan == "single" { ScanMode::Single } else { ScanMode::Ctid },
        };
        let columns = node
            .columns
            .into_iter()
            .map(|c| {
                let s = scalar(&c.scalar, c.precision, c.scale)?;
                Ok(PgColumn {
                    name: c.name,
                    pg_type: if c.array { PgType::Array(s) } else { PgType::Scalar(s) },
                    type_name: c.type_name,
                    unconstrained_numeric: c.unconstrained_numeric,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let spec = PgScanSpec {
            alias: node.alias,
            run_id: node.run_id,
            location,
            columns,
            ctid_ranges: node.ctid_ranges,
            pages: node.pages,
            reltuples: node.reltuples,
            relkind: node.relkind.chars().next().unwrap_or('r'),
        };
        let mut source = PgSource::new(Arc::new(spec), node.snapshot);
        source.filters = node.filters;
        source.set_batch_size(usize::try_from(node.batch_size).unwrap_or(8192));
        let groups = node.partitions.into_iter().map(|p| FileGroup::new(vec![PartitionedFile::new(p, 1)])).collect();
        let projection = node.has_projection.then(|| node.projection.iter().map(|i| *i as usize).collect());
        pg_scan_exec(source, groups, projection, node.limit.map(|n| n as usize))
    }
}

/// Encodes and decodes the parts of a physical plan that are Kalla's.
#[derive(Debug, Default, Clone)]
pub struct KallaPhysicalCodec;

impl PhysicalExtensionCodec for KallaPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let envelope = proto::KallaPhysicalNode::decode(buf)
            .map_err(|e| DataFusionError::Internal(format!("not a Kalla plan node: {e}")))?;
        match envelope.node {
            Some(proto::kalla_physical_node::Node::PgScan(node)) => pg_scan::decode(node),
            None => not_impl_err!("an empty Kalla plan node"),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(exec) = node.downcast_ref::<DataSourceExec>()
            && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
            && let Some(source) = config.file_source().downcast_ref::<PgSource>()
        {
            let envelope = proto::KallaPhysicalNode {
                node: Some(proto::kalla_physical_node::Node::PgScan(pg_scan::encode(source, config)?)),
            };
            return envelope
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(format!("encoding a Postgres scan: {e}")));
        }
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
