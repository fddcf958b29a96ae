//! Kalla's extension codecs: what `datafusion-proto` needs, beyond its own messages, to ship a
//! Kalla plan to another process. Physical: the UDFs (stateless, encoded by name) and the
//! Postgres scan (a `DataSourceExec` whose `FileSource` is Kalla's `PgSource`) inside the
//! `KallaPhysicalNode` envelope. Logical: the UDFs and the Postgres table provider (`PgTable`)
//! inside `KallaLogicalNode`. Both are the prost messages of `proto/kalla.proto`.

use crate::keyjoin::TaskBuildJoinExec;
use crate::parts::ParquetPartsExec;
use crate::session::kalla_udfs;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::JoinType;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, internal_err, not_impl_err};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::prelude::SessionContext;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use kalla_connectors::postgres::scan::{PgSource, PgTable};
use kalla_connectors::postgres::snapshot::SnapshotRegistry;
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

    /// The largest batch a shipped Postgres scan may ask for (sessions use 8,192 rows).
    const MAX_BATCH_ROWS: usize = 1 << 20;

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

    /// The table as planned ↔ `PgTableSpec` (shared by the logical and the physical node).
    pub(super) fn encode_spec(spec: &PgScanSpec) -> proto::PgTableSpec {
        let l = &spec.location;
        proto::PgTableSpec {
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
        }
    }

    pub(super) fn decode_spec(node: proto::PgTableSpec) -> Result<PgScanSpec> {
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
        let mut relkind = node.relkind.chars();
        let relkind = match (relkind.next(), relkind.next()) {
            (Some(k), None) => k,
            _ => return Err(bad(&format!("the relkind {:?}", node.relkind))),
        };
        Ok(PgScanSpec {
            alias: node.alias,
            run_id: node.run_id,
            location,
            columns,
            ctid_ranges: node.ctid_ranges,
            pages: node.pages,
            reltuples: node.reltuples,
            relkind,
        })
    }

    pub(super) fn encode(source: &PgSource, config: &FileScanConfig) -> Result<proto::PgScanNode> {
        let spec = source.spec();
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
            table: Some(encode_spec(spec)),
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
        let spec = decode_spec(node.table.ok_or_else(|| bad("no table"))?)?;
        let mut source = PgSource::new(Arc::new(spec), node.snapshot);
        source.filters = node.filters;
        // A plan from the wire is checked before it sizes a buffer or indexes the columns.
        let batch_size = usize::try_from(node.batch_size).ok().filter(|n| (1..=MAX_BATCH_ROWS).contains(n));
        source.set_batch_size(batch_size.ok_or_else(|| bad("a batch size out of range"))?);
        let columns = source.spec().columns.len();
        if node.projection.iter().any(|i| *i as usize >= columns) {
            return Err(bad("a projection past the table's columns"));
        }
        let groups = node.partitions.into_iter().map(|p| FileGroup::new(vec![PartitionedFile::new(p, 1)])).collect();
        let projection = node.has_projection.then(|| node.projection.iter().map(|i| *i as usize).collect());
        pg_scan_exec(source, groups, projection, node.limit.map(|n| n as usize))
    }
}

/// [`TaskBuildJoinExec`] as DataFusion's own encoding of its join, the probe side left out (it
/// is the node's one input, which the framework encodes and decodes as a child).
mod task_build_join {
    use super::proto;
    use crate::keyjoin::{TaskBuildJoinExec, recompute};
    use datafusion::common::{DataFusionError, Result};
    use datafusion::execution::TaskContext;
    use datafusion::physical_plan::ExecutionPlan;
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion_proto::physical_plan::{
        PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
    };
    use datafusion_proto::protobuf::PhysicalPlanNode;
    use prost::Message;
    use std::sync::Arc;

    pub(super) fn encode(
        node: &TaskBuildJoinExec,
        codec: &dyn PhysicalExtensionCodec,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<proto::TaskBuildJoinNode> {
        let probe = node
            .children()
            .first()
            .map(|p| p.schema())
            .ok_or_else(|| DataFusionError::Internal("a TaskBuildJoinExec without its probe side".into()))?;
        let placeholder: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(probe));
        let join =
            Arc::clone(node.join()).replace_children(vec![Arc::clone(node.build()), placeholder], recompute())?;
        // An error inside is this node's: not `NotImplemented`, which would send the node to
        // another codec and hide the cause.
        let join = converter
            .execution_plan_to_proto(&join, codec)
            .map_err(|e| DataFusionError::Internal(format!("encoding a TaskBuildJoinExec's join: {e}")))?;
        Ok(proto::TaskBuildJoinNode { join: join.encode_to_vec() })
    }

    pub(super) fn decode(
        node: &proto::TaskBuildJoinNode,
        probe: Arc<dyn ExecutionPlan>,
        ctx: &TaskContext,
        codec: &dyn PhysicalExtensionCodec,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let join = PhysicalPlanNode::decode(node.join.as_slice())
            .map_err(|e| DataFusionError::Internal(format!("a TaskBuildJoinExec's join does not decode: {e}")))?;
        let join = converter.proto_to_execution_plan(&join, &PhysicalPlanDecodeContext::new(ctx, codec))?;
        let build = join.children().first().map(|b| Arc::clone(*b)).ok_or_else(|| {
            DataFusionError::Internal("a TaskBuildJoinExec's join decoded without its build side".into())
        })?;
        let join = join.replace_children(vec![build, probe], recompute())?;
        Ok(Arc::new(TaskBuildJoinExec::try_new(join)?))
    }
}

/// Encodes and decodes the parts of a physical plan that are Kalla's.
#[derive(Debug, Default, Clone)]
pub struct KallaPhysicalCodec;

impl PhysicalExtensionCodec for KallaPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let envelope = proto::KallaPhysicalNode::decode(buf)
            .map_err(|e| DataFusionError::Internal(format!("not a Kalla plan node: {e}")))?;
        match envelope.node {
            Some(proto::kalla_physical_node::Node::PgScan(node)) => pg_scan::decode(node),
            Some(proto::kalla_physical_node::Node::ParquetParts(node)) => match inputs {
                [input] => Ok(Arc::new(ParquetPartsExec::new(Arc::clone(input), node.dir.into()))),
                _ => internal_err!("a ParquetPartsExec with {} inputs", inputs.len()),
            },
            Some(proto::kalla_physical_node::Node::TaskBuildJoin(node)) => match inputs {
                [probe] => task_build_join::decode(&node, Arc::clone(probe), ctx, self, proto_converter),
                _ => internal_err!("a TaskBuildJoinExec with {} inputs", inputs.len()),
            },
            None => not_impl_err!("an empty Kalla plan node"),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(join) = node.downcast_ref::<TaskBuildJoinExec>() {
            let envelope = proto::KallaPhysicalNode {
                node: Some(proto::kalla_physical_node::Node::TaskBuildJoin(task_build_join::encode(
                    join,
                    self,
                    proto_converter,
                )?)),
            };
            return envelope
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(format!("encoding a TaskBuildJoinExec: {e}")));
        }
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
        if let Some(parts) = node.downcast_ref::<ParquetPartsExec>() {
            let dir = parts
                .dir()
                .to_str()
                .ok_or_else(|| DataFusionError::Internal(format!("parts directory {:?} is not UTF-8", parts.dir())))?;
            let envelope = proto::KallaPhysicalNode {
                node: Some(proto::kalla_physical_node::Node::ParquetParts(proto::ParquetPartsNode { dir: dir.into() })),
            };
            return envelope
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(format!("encoding a ParquetPartsExec: {e}")));
        }
        not_impl_err!("Kalla cannot encode plan node {}", node.name())
    }

    fn try_decode_udf(&self, name: &str, _buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        kalla_udf(name)
    }

    fn try_encode_udf(&self, _node: &ScalarUDF, _buf: &mut Vec<u8>) -> Result<()> {
        // Kalla's UDFs are stateless: the name in the plan is enough to decode them.
        Ok(())
    }
}

/// A Kalla UDF by the name a plan carries.
fn kalla_udf(name: &str) -> Result<Arc<ScalarUDF>> {
    match kalla_udfs().into_iter().find(|u| u.name() == name) {
        Some(udf) => Ok(Arc::new(udf)),
        None => not_impl_err!("unknown scalar function {name}"),
    }
}

/// Encodes and decodes the parts of a logical plan that are Kalla's: the Postgres table
/// provider and the UDFs. File sources are DataFusion listing tables behind views, which
/// `datafusion-proto` encodes itself; Kalla has no logical plan nodes of its own.
///
/// A Postgres table is decoded into a table that reads in its job's snapshots, so the codec that
/// decodes one must be made [`for_job`](Self::for_job) with that job's registry; without one
/// (or with another job's) decoding refuses, as reading in a fresh snapshot would break the
/// job's one-snapshot guarantee (SPEC 4).
#[derive(Debug, Default, Clone)]
pub struct KallaLogicalCodec {
    snapshots: Option<Arc<SnapshotRegistry>>,
}

impl KallaLogicalCodec {
    /// A codec decoding Postgres tables into the snapshots of the job owning `snapshots`.
    pub fn for_job(snapshots: Arc<SnapshotRegistry>) -> KallaLogicalCodec {
        KallaLogicalCodec { snapshots: Some(snapshots) }
    }
}

impl LogicalExtensionCodec for KallaLogicalCodec {
    fn try_decode(&self, _buf: &[u8], _inputs: &[LogicalPlan], _ctx: &TaskContext) -> Result<Extension> {
        not_impl_err!("Kalla has no logical plan nodes of its own")
    }

    fn try_encode(&self, node: &Extension, _buf: &mut Vec<u8>) -> Result<()> {
        not_impl_err!("Kalla cannot encode logical plan node {}", node.node.name())
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let envelope = proto::KallaLogicalNode::decode(buf)
            .map_err(|e| DataFusionError::Internal(format!("not a Kalla table: {e}")))?;
        let spec = match envelope.node {
            Some(proto::kalla_logical_node::Node::PgTable(spec)) => pg_scan::decode_spec(spec)?,
            None => return not_impl_err!("an empty Kalla table ({table_ref})"),
        };
        let snapshots = match &self.snapshots {
            Some(s) if s.run_id() == spec.run_id => Arc::clone(s),
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "the Postgres table of source {:?} belongs to job {} and can only be decoded where that job's snapshot is held",
                    spec.alias, spec.run_id
                )));
            }
        };
        let table = PgTable::new(spec, snapshots);
        if table.schema().fields() != schema.fields() {
            return Err(DataFusionError::Internal(format!(
                "the Postgres table {table_ref} decodes with another schema than its plan's"
            )));
        }
        Ok(Arc::new(table))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let Some(table) = node.downcast_ref::<PgTable>() else {
            return not_impl_err!("Kalla cannot encode the table {table_ref}");
        };
        proto::KallaLogicalNode {
            node: Some(proto::kalla_logical_node::Node::PgTable(pg_scan::encode_spec(table.spec()))),
        }
        .encode(buf)
        .map_err(|e| DataFusionError::Internal(format!("encoding a Postgres table: {e}")))
    }

    fn try_decode_udf(&self, name: &str, _buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        kalla_udf(name)
    }

    fn try_encode_udf(&self, _node: &ScalarUDF, _buf: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
}

/// Encodes `plan` with [`KallaLogicalCodec`] and decodes it in a context that has the job's
/// settings but not Kalla's functions or tables, as another process would; Postgres tables come
/// back reading in `snapshots` (the job's). Used to prove every plan the engine runs can travel
/// as a logical plan too.
pub fn roundtrip_logical_plan(
    plan: &LogicalPlan,
    job_ctx: &TaskContext,
    snapshots: &Arc<SnapshotRegistry>,
) -> Result<LogicalPlan> {
    let remote = SessionContext::new_with_config(job_ctx.session_config().clone());
    let codec = KallaLogicalCodec::for_job(Arc::clone(snapshots));
    let bytes = datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec(plan, &codec)?;
    datafusion_proto::bytes::logical_plan_from_bytes_with_extension_codec(&bytes, &remote.task_ctx(), &codec)
}

/// Refuses plans that cannot be shipped to executors (they run locally in mode `auto`):
/// - `datafusion-proto` would ship them wrongly: DataFusion 55's CSV scan message has no
///   compression field, so a gzip CSV scan would be decoded as plain text on the other side;
/// - a null-aware anti join (`NOT IN (subquery)` over nullable values): its NULL handling is
///   shared only within one process, so Ballista runs it as one task and refuses it when its
///   build side may exceed the broadcast limit; in the scheduler's process it runs whole.
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
        if let Some(join) = node.downcast_ref::<HashJoinExec>()
            && join.null_aware
        {
            problem = Some(
                "NOT IN (subquery) over nullable values needs a null-aware anti join, which must run in one process \
                 and cannot be shipped to executors"
                    .into(),
            );
            return Ok(TreeNodeRecursion::Stop);
        }
        // A nested-loop join (DataFusion's plan for a join on anything but equalities) collects
        // its left side whole in every task and records which left rows found a partner in that
        // task only. Locally the partitions share that record; shipped, every task of a join
        // that emits unmatched (or semi/anti) left rows emits them from its own record: the
        // unmatched rows repeated once per task, and matched ones among them. Ballista does not
        // re-plan it (it does for hash joins).
        if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>()
            && matches!(
                join.join_type(),
                JoinType::Left | JoinType::LeftAnti | JoinType::LeftSemi | JoinType::LeftMark | JoinType::Full
            )
            && join.right().properties().output_partitioning().partition_count() > 1
        {
            problem = Some(format!(
                "a {} join on a condition other than equalities (a nested-loop join) would emit its unmatched rows \
                 once per executor task; join on an equality (ON a.x = b.y AND …) to run it on the cluster",
                join.join_type()
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        // A window partitioned by a column the query fixes to one value (`PARTITION BY cat … WHERE
        // cat = 'A'`) sorts its input without that column, which DataFusion knows to be constant.
        // Cut at a repartition below it, the stage above reads a shuffle that no longer knows
        // it, and the executor refuses the window ("Expects PARTITION BY expression to be
        // ordered"): the job would fail on the cluster though it runs here.
        if let Some((input, partition_by)) = window_parts(node)
            && !partition_by.is_empty()
            && has_repartition(input)
        {
            let ordered = input.properties().output_ordering().map(|o| o.iter().map(|s| Arc::clone(&s.expr)).collect::<Vec<_>>()).unwrap_or_default();
            if partition_by.iter().any(|p| !ordered.iter().any(|o| o.as_ref() == p.as_ref())) {
                problem = Some(
                    "a window function is partitioned by a column the query fixes to one value; executors cannot run \
                     it (drop that column from PARTITION BY to run it on the cluster)"
                        .into(),
                );
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match problem {
        Some(message) => Err(KallaError::new(ErrorCode::NotDistributable, message)),
        None => Ok(()),
    }
}

/// The PARTITION BY expressions of a window function.
type PartitionBy = Vec<Arc<dyn PhysicalExpr>>;

/// A window node's input and the PARTITION BY expressions of its (first) window function.
fn window_parts(node: &Arc<dyn ExecutionPlan>) -> Option<(&Arc<dyn ExecutionPlan>, PartitionBy)> {
    let (input, exprs) = if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
        (w.input(), w.window_expr())
    } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
        (w.input(), w.window_expr())
    } else {
        return None;
    };
    Some((input, exprs.first().map(|e| e.partition_by().to_vec()).unwrap_or_default()))
}

/// Whether a repartition (a stage boundary on Ballista) lies anywhere below `plan`.
fn has_repartition(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.exists(|n| Ok(n.downcast_ref::<RepartitionExec>().is_some())).unwrap_or(true)
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::datasource::{provider_as_source, source_as_provider};
    use datafusion::logical_expr::LogicalPlanBuilder;
    use datafusion_proto::bytes::{
        logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
    };
    use kalla_connectors::postgres::catalog::PgColumn;
    use kalla_connectors::postgres::scan::PgScanSpec;
    use kalla_connectors::postgres::types::{PgScalar, PgType};
    use kalla_connectors::postgres::uri::{PgLocation, ScanMode, Tls};

    fn column(name: &str, pg_type: PgType, type_name: &str) -> PgColumn {
        PgColumn { name: name.into(), pg_type, type_name: type_name.into(), unconstrained_numeric: false }
    }

    fn invoices(run_id: &str) -> PgScanSpec {
        PgScanSpec {
            alias: "invoices".into(),
            run_id: run_id.into(),
            location: PgLocation {
                host: "db.internal".into(),
                port: 6543,
                user: "kalla".into(),
                password: Some("s3cret".into()),
                dbname: "ledger".into(),
                schema: "billing".into(),
                table: "Invoices".into(),
                tls: Tls::VerifyFull { root_cert: Some("/etc/ca.pem".into()) },
                scan: ScanMode::Ctid,
            },
            columns: vec![
                column("invoice_id", PgType::Scalar(PgScalar::Int8), "int8"),
                column("amount", PgType::Scalar(PgScalar::Numeric { precision: 12, scale: 2 }), "numeric"),
                column("tags", PgType::Array(PgScalar::Text), "_text"),
                column("created_at", PgType::Scalar(PgScalar::TimestampTz), "timestamptz"),
            ],
            ctid_ranges: true,
            pages: 1234,
            reltuples: 98765.0,
            relkind: 'p',
        }
    }

    fn scan_of(spec: PgScanSpec, snapshots: &Arc<SnapshotRegistry>) -> LogicalPlan {
        let table = PgTable::new(spec, Arc::clone(snapshots));
        LogicalPlanBuilder::scan("invoices", provider_as_source(Arc::new(table)), None)
            .and_then(|b| b.build())
            .expect("a scan of a table builds")
    }

    fn decoded_table(plan: &LogicalPlan) -> proto::PgTableSpec {
        let LogicalPlan::TableScan(scan) = plan else { panic!("not a table scan: {plan}") };
        let provider = source_as_provider(&scan.source).expect("a provider");
        let table = provider.downcast_ref::<PgTable>().expect("a Postgres table");
        pg_scan::encode_spec(table.spec())
    }

    #[test]
    fn a_postgres_table_travels_whole_in_a_logical_plan_and_reads_in_its_jobs_snapshots() {
        let job = Arc::new(SnapshotRegistry::new("job-a"));
        let plan = scan_of(invoices("job-a"), &job);
        let codec = KallaLogicalCodec::for_job(Arc::clone(&job));
        let bytes = logical_plan_to_bytes_with_extension_codec(&plan, &codec).expect("encodes");
        let remote = SessionContext::new();
        let back = logical_plan_from_bytes_with_extension_codec(&bytes, &remote.task_ctx(), &codec).expect("decodes");
        // Every field of the table, the password and the TLS root included, comes back as it was.
        assert_eq!(decoded_table(&back), pg_scan::encode_spec(&invoices("job-a")));
        assert_eq!(back.schema(), plan.schema());
    }

    #[test]
    fn a_postgres_table_is_refused_where_its_jobs_snapshots_are_not_held() {
        let job = Arc::new(SnapshotRegistry::new("job-a"));
        let bytes = logical_plan_to_bytes_with_extension_codec(
            &scan_of(invoices("job-a"), &job),
            &KallaLogicalCodec::for_job(Arc::clone(&job)),
        )
        .expect("encodes");
        let remote = SessionContext::new();
        let other_job = KallaLogicalCodec::for_job(Arc::new(SnapshotRegistry::new("job-b")));
        for codec in [KallaLogicalCodec::default(), other_job] {
            let e = logical_plan_from_bytes_with_extension_codec(&bytes, &remote.task_ctx(), &codec)
                .expect_err("a table read outside its job's snapshot must be refused");
            assert!(
                e.to_string().contains(
                    "the Postgres table of source \"invoices\" belongs to job job-a and can only be decoded where that job's snapshot is held"
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn kalla_functions_decode_by_name_in_a_context_that_lacks_them() {
        let codec = KallaLogicalCodec::default();
        for udf in kalla_udfs() {
            assert_eq!(codec.try_decode_udf(udf.name(), &[]).expect("a Kalla function").name(), udf.name());
        }
        let e = codec.try_decode_udf("no_such_function", &[]).expect_err("unknown");
        assert!(matches!(e, DataFusionError::NotImplemented(_)), "{e}");
    }

    /// A scan node from the wire (an executor's gRPC port is not authenticated) is checked before
    /// it indexes the table's columns or sizes a buffer: bad values are errors, not panics.
    #[test]
    fn a_postgres_scan_node_out_of_range_is_refused_when_decoded() {
        let node = |projection: Vec<u32>, batch_size: u64| proto::PgScanNode {
            table: Some(pg_scan::encode_spec(&invoices("job-a"))),
            snapshot: None,
            filters: vec![],
            projection,
            has_projection: true,
            partitions: vec!["kalla-pg/invoices/all".into()],
            limit: None,
            batch_size,
        };
        let columns = invoices("job-a").columns.len() as u32;
        assert!(pg_scan::decode(node((0..columns).collect(), 8192)).is_ok());
        for (n, what) in [
            (node(vec![0, columns], 8192), "a projection past the table's columns"),
            (node(vec![0], 0), "a batch size out of range"),
            (node(vec![0], u64::MAX), "a batch size out of range"),
        ] {
            let e = pg_scan::decode(n).expect_err(what).to_string();
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn a_parts_writer_travels_with_its_directory_and_its_input() {
        let schema =
            Arc::new(datafusion::arrow::datatypes::Schema::new(vec![datafusion::arrow::datatypes::Field::new(
                "id",
                datafusion::arrow::datatypes::DataType::Utf8,
                false,
            )]));
        let input = Arc::new(datafusion::physical_plan::empty::EmptyExec::new(schema).with_partitions(3));
        let dir = std::path::PathBuf::from("/out/2026/run.tmp-1/.parts-matched.parquet");
        let plan = Arc::new(ParquetPartsExec::new(input, dir.clone()));
        let decoded = roundtrip_physical_plan(plan, &SessionContext::new().task_ctx()).unwrap();
        let parts = decoded.downcast_ref::<ParquetPartsExec>().unwrap();
        assert_eq!(parts.dir(), dir);
        let input = &parts.children()[0];
        assert_eq!((input.name(), input.properties().partitioning.partition_count()), ("EmptyExec", 3));
    }
}
