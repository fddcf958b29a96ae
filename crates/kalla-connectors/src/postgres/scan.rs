//! The Postgres scan: a `DataSourceExec` over a `FileScanConfig` whose file groups are ctid page
//! ranges and whose `FileSource` is Kalla's [`PgSource`].
//!
//! This is the shape Ballista 55 slices correctly (see ENGINEERING.md, the slicing trap): each
//! partition is one file group holding one "file" whose path names its page range
//! (`kalla-pg/<alias>/pages-<from>-<to>` or `…/pages-<from>-end`; `…/all` for one partition),
//! the object store is a placeholder never read, and repartitioning is off. Each partition opens
//! its own connection, imports the job's snapshot, and streams
//! `COPY (SELECT <columns> FROM <table> WHERE ctid >= '(from,0)' AND ctid < '(to,0)') TO STDOUT
//! (FORMAT binary)` through the [`CopyDecoder`] into batches.

use super::catalog::{PgColumn, PgTableInfo};
use super::connect::{PgConnection, connect, connections_per_host, describe, is_transient, quote_ident, quote_literal};
use super::decode::CopyDecoder;
use super::pushdown::to_sql;
use super::snapshot::SnapshotRegistry;
use super::uri::{PgLocation, ScanMode};
use crate::error::ConnectorError;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileGroup, FileOpenFuture, FileOpener, FileScanConfig, FileScanConfigBuilder, FileSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder};
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan, PhysicalExpr};
use futures::StreamExt;
use kalla_recipe::{ErrorCode, KallaError};
use object_store::ObjectStore;
use std::sync::Arc;

/// A session extension capping how many page ranges (connections) a Postgres scan opens, below
/// the session's `target_partitions`. Local jobs raise `target_partitions` for large inputs so
/// that hash tables stay small; the reads should not open a connection per hash partition, so
/// the job sets this cap to the parallelism it started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxScanPartitions(pub usize);

/// Page ranges a scan planned in `config` opens: `target_partitions`, capped by
/// [`MaxScanPartitions`] when the session carries one.
pub fn scan_partitions(config: &datafusion::prelude::SessionConfig) -> usize {
    let target = config.target_partitions();
    match config.get_extension::<MaxScanPartitions>() {
        Some(cap) => target.min(cap.0.max(1)),
        None => target,
    }
}

/// Everything a partition needs to read its range: serializable as is (issue: cluster).
#[derive(Debug, Clone, PartialEq)]
pub struct PgScanSpec {
    /// The source alias (for messages and paths).
    pub alias: String,
    /// The job (for `application_name`).
    pub run_id: String,
    /// Where the table is (carries the password; never displayed).
    pub location: PgLocation,
    /// Columns of the table as read, in order.
    pub columns: Vec<PgColumn>,
    /// True when partitions may be ctid page ranges.
    pub ctid_ranges: bool,
    /// Pages when planned (ranges are split from it; the last range is open-ended).
    pub pages: i64,
    /// `reltuples` when planned.
    pub reltuples: f64,
    /// `relkind` (`r`, `p`, `v`, `m`, `f`).
    pub relkind: char,
}

impl PgScanSpec {
    /// The spec of a described table.
    pub fn new(alias: &str, run_id: &str, location: PgLocation, info: &PgTableInfo) -> PgScanSpec {
        PgScanSpec {
            alias: alias.to_string(),
            run_id: run_id.to_string(),
            ctid_ranges: location.scan == ScanMode::Ctid && info.ctid_ranges_possible(),
            location,
            columns: info.columns.clone(),
            pages: info.pages,
            reltuples: info.reltuples,
            relkind: info.relkind,
        }
    }

    /// The Arrow schema of the table.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| datafusion::arrow::datatypes::Field::new(&c.name, c.pg_type.arrow(), true))
                .collect::<Vec<_>>(),
        ))
    }

    /// The file groups of a scan with `partitions` partitions.
    pub fn file_groups(&self, partitions: usize) -> Vec<FileGroup> {
        let file = |path: String| PartitionedFile::new(path, 1);
        if !self.ctid_ranges || partitions <= 1 || self.pages <= 1 {
            return vec![FileGroup::new(vec![file(format!("kalla-pg/{}/all", self.alias))])];
        }
        // Never more ranges than connections a scan may hold at once.
        let n = partitions.min(usize::try_from(self.pages).unwrap_or(usize::MAX)).min(connections_per_host());
        let pages = self.pages as i128;
        let bound = |i: usize| (pages * i as i128 / n as i128) as i64;
        (0..n)
            .map(|i| {
                let to = if i + 1 == n { "end".to_string() } else { bound(i + 1).to_string() };
                FileGroup::new(vec![file(format!("kalla-pg/{}/pages-{}-{to}", self.alias, bound(i)))])
            })
            .collect()
    }

    /// The `COPY` statement of one range, selecting `columns` (indices into the table).
    pub fn copy_sql(&self, columns: &[usize], range: PageRange, filters: &[String], limit: Option<usize>) -> String {
        let list =
            columns.iter().filter_map(|i| self.columns.get(*i)).map(|c| quote_ident(&c.name)).collect::<Vec<_>>();
        let table = format!("{}.{}", quote_ident(&self.location.schema), quote_ident(&self.location.table));
        let mut sql = format!("COPY (SELECT {} FROM {table}", list.join(", "));
        let mut conditions: Vec<String> = match range {
            PageRange::All => vec![],
            PageRange::Pages { from, to: Some(to) } => {
                vec![format!("ctid >= '({from},0)'::tid"), format!("ctid < '({to},0)'::tid")]
            }
            PageRange::Pages { from, to: None } => vec![format!("ctid >= '({from},0)'::tid")],
        };
        conditions.extend(filters.iter().cloned());
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        sql.push_str(") TO STDOUT (FORMAT binary)");
        sql
    }
}

/// The rows one partition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageRange {
    /// The whole relation.
    All,
    /// Pages `from` up to `to` (exclusive), or to the end.
    Pages {
        /// First page.
        from: i64,
        /// Page after the last, or open-ended.
        to: Option<i64>,
    },
}

impl PageRange {
    /// Parses the range from a partition's path.
    pub fn from_path(path: &str) -> Result<PageRange> {
        let bad = || DataFusionError::Internal(format!("not a Kalla Postgres partition path: {path}"));
        let last = path.rsplit('/').next().ok_or_else(bad)?;
        if last == "all" {
            return Ok(PageRange::All);
        }
        let rest = last.strip_prefix("pages-").ok_or_else(bad)?;
        let (from, to) = rest.split_once('-').ok_or_else(bad)?;
        let from = from.parse().map_err(|_| bad())?;
        let to = if to == "end" { None } else { Some(to.parse().map_err(|_| bad())?) };
        Ok(PageRange::Pages { from, to })
    }
}

/// A Postgres table or view as DataFusion sees it.
#[derive(Debug)]
pub struct PgTable {
    spec: Arc<PgScanSpec>,
    schema: SchemaRef,
    registry: Arc<SnapshotRegistry>,
}

impl PgTable {
    /// A table reading `spec` in the snapshots of `registry`.
    pub fn new(spec: PgScanSpec, registry: Arc<SnapshotRegistry>) -> PgTable {
        let schema = spec.schema();
        PgTable { spec: Arc::new(spec), schema, registry }
    }

    /// The table as planned.
    pub fn spec(&self) -> &PgScanSpec {
        &self.spec
    }
}

#[async_trait::async_trait]
impl TableProvider for PgTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: DataFusion re-applies every pushed filter to the rows read.
        Ok(filters
            .iter()
            .map(|f| match to_sql(f, &self.spec.columns) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let pushed: Vec<String> = filters.iter().filter_map(|f| to_sql(f, &self.spec.columns)).collect();
        // A LIMIT is pushed only when every filter went with it (otherwise the rows it keeps
        // could be filtered away afterwards).
        let limit = if pushed.len() == filters.len() { limit } else { None };
        let snapshot = self
            .registry
            .snapshot_for(&self.spec)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e.into_kalla(&format!("source {}", self.spec.alias)))))?
            .map(|s| s.id.clone());
        let mut source = PgSource::new(Arc::clone(&self.spec), snapshot);
        source.filters = pushed;
        let groups = self.spec.file_groups(scan_partitions(state.config()));
        pg_scan_exec(source, groups, projection.cloned(), limit)
    }
}

/// The scan plan of `source` over `groups` (one partition each): what `PgTable::scan` builds and
/// what a decoder rebuilds from a shipped plan.
pub fn pg_scan_exec(
    source: PgSource,
    groups: Vec<FileGroup>,
    projection: Option<Vec<usize>>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = source.spec.schema();
    let mut statistics = Statistics::new_unknown(&schema);
    if source.spec.reltuples >= 0.0 {
        statistics.num_rows = datafusion::common::stats::Precision::Inexact(source.spec.reltuples as usize);
    }
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
        .with_file_groups(groups)
        .with_statistics(statistics)
        // Each partition reads its own range: no work stealing between partitions.
        .with_preserve_order(true)
        .with_projection_indices(projection)?
        .with_limit(limit)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// Kalla's `FileSource` for Postgres ranges.
#[derive(Debug, Clone)]
pub struct PgSource {
    spec: Arc<PgScanSpec>,
    snapshot: Option<String>,
    /// Predicates added to every range's `WHERE` (see [`super::pushdown`]).
    pub filters: Vec<String>,
    table_schema: TableSchema,
    projection: datafusion::datasource::projection::SplitProjection,
    batch_size: usize,
    metrics: ExecutionPlanMetricsSet,
}

impl PgSource {
    /// A source reading `spec` in `snapshot` (when the job has one).
    pub fn new(spec: Arc<PgScanSpec>, snapshot: Option<String>) -> PgSource {
        let table_schema = TableSchema::from(spec.schema());
        PgSource {
            projection: datafusion::datasource::projection::SplitProjection::unprojected(&table_schema),
            spec,
            snapshot,
            filters: Vec::new(),
            table_schema,
            batch_size: 8192,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// What this source reads.
    pub fn spec(&self) -> &Arc<PgScanSpec> {
        &self.spec
    }

    /// The snapshot it imports.
    pub fn snapshot(&self) -> Option<&str> {
        self.snapshot.as_deref()
    }

    /// Rows per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Sets the rows per batch.
    pub fn set_batch_size(&mut self, batch_size: usize) {
        self.batch_size = batch_size.max(1);
    }

    /// The table columns of the output, in order (the projection is always plain columns), or
    /// `None` when one is not a plain column.
    pub fn projection_indices(&self) -> Option<Vec<usize>> {
        self.projection
            .source
            .iter()
            .map(|p| p.expr.downcast_ref::<datafusion::physical_expr::expressions::Column>().map(|c| c.index()))
            .collect()
    }
}

impl FileSource for PgSource {
    fn create_file_opener(
        &self,
        _object_store: Arc<dyn ObjectStore>,
        base_config: &FileScanConfig,
        partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        let opener = Arc::new(PgOpener {
            bytes: MetricBuilder::new(&self.metrics).counter("bytes_scanned", partition),
            spec: Arc::clone(&self.spec),
            snapshot: self.snapshot.clone(),
            filters: self.filters.clone(),
            columns: self.projection.file_indices.clone(),
            batch_size: self.batch_size,
            limit: base_config.limit,
        });
        datafusion::datasource::projection::ProjectionOpener::try_new(
            self.projection.clone(),
            opener,
            self.table_schema.file_schema(),
        )
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        let mut s = self.clone();
        s.batch_size = batch_size;
        Arc::new(s)
    }

    fn try_pushdown_projection(&self, projection: &ProjectionExprs) -> Result<Option<Arc<dyn FileSource>>> {
        // Only plain columns under their own names: the scan stays a column list a shipped plan
        // can carry; expressions remain in a ProjectionExec above.
        let plain = projection.iter().all(|p| {
            p.expr.downcast_ref::<datafusion::physical_expr::expressions::Column>().is_some_and(|c| c.name() == p.alias)
        });
        if !plain {
            return Ok(None);
        }
        let mut s = self.clone();
        let merged = self.projection.source.try_merge(projection)?;
        s.projection =
            datafusion::datasource::projection::SplitProjection::new(self.table_schema.file_schema(), &merged);
        Ok(Some(Arc::new(s)))
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        Some(&self.projection.source)
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        "postgres"
    }

    fn supports_repartitioning(&self) -> bool {
        false
    }

    fn fmt_extra(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, ", source={}, location={}", self.spec.alias, self.spec.location.redacted())?;
        if !self.filters.is_empty() {
            write!(f, ", pushed={}", self.filters.join(" AND "))?;
        }
        Ok(())
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        datafusion::physical_plan::apply_expression_roots(self.projection.source.iter(), f)
    }
}

struct PgOpener {
    /// COPY bytes received (the `bytes_scanned` metric, as Parquet scans have).
    bytes: Count,
    spec: Arc<PgScanSpec>,
    snapshot: Option<String>,
    filters: Vec<String>,
    columns: Vec<usize>,
    batch_size: usize,
    limit: Option<usize>,
}

fn read_error(alias: &str, message: String) -> DataFusionError {
    DataFusionError::External(Box::new(KallaError::new(
        ErrorCode::SourceReadFailed,
        format!("source {alias}: {message}"),
    )))
}

/// A read that failed on the way, not on the data: the connection could not be made or was
/// lost, or the server ended the session (SQLSTATE class 08, `57P01`–`57P03`). It surfaces as an
/// I/O error — the one kind Ballista retries — carrying the same `source_read_failed` error, so
/// a cluster task re-reads its range (in the job's snapshot, which the scheduler still holds);
/// in-process the job fails with that error as before.
fn transient_read_error(alias: &str, message: String) -> DataFusionError {
    DataFusionError::IoError(std::io::Error::other(KallaError::new(
        ErrorCode::SourceReadFailed,
        format!("source {alias}: {message}"),
    )))
}

fn pg_read_error(alias: &str, e: &tokio_postgres::Error) -> DataFusionError {
    if is_transient(e) { transient_read_error(alias, describe(e)) } else { read_error(alias, describe(e)) }
}

/// The state of one partition's stream.
struct Reading {
    /// Released as soon as the range's COPY ends: a consumer may hold a finished stream for a
    /// long time (a join working through its last batch, a plan kept by a cancelled task), and
    /// the backend must not wait idle in its transaction meanwhile.
    conn: Option<PgConnection>,
    copy: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    decoder: CopyDecoder,
    alias: String,
    ended: bool,
    bytes: Count,
}

impl FileOpener for PgOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let range = PageRange::from_path(file.object_meta.location.as_ref())?;
        let spec = Arc::clone(&self.spec);
        let snapshot = self.snapshot.clone();
        let columns = self.columns.clone();
        let batch_size = self.batch_size;
        let limit = self.limit;
        let filters = self.filters.clone();
        let bytes = self.bytes.clone();
        Ok(Box::pin(async move {
            let alias = spec.alias.clone();
            let conn = connect(&spec.location, &spec.run_id).await.map_err(|e| match e {
                ConnectorError::PgUnavailable { message } => transient_read_error(&alias, message),
                other => read_error(&alias, other.to_string()),
            })?;
            let failed = |e: tokio_postgres::Error| pg_read_error(&alias, &e);
            let mut begin = String::from("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;");
            if let Some(id) = &snapshot {
                begin.push_str(&format!(" SET TRANSACTION SNAPSHOT {};", quote_literal(id)));
            }
            conn.batch_execute(&begin).await.map_err(failed)?;
            let sql = spec.copy_sql(&columns, range, &filters, limit);
            tracing::debug!(source = %alias, %sql, "reading a Postgres range");
            let copy = Box::pin(conn.copy_out(sql.as_str()).await.map_err(failed)?);
            let schema = Arc::new(spec.schema().project(&columns)?);
            let types = columns.iter().filter_map(|i| spec.columns.get(*i)).map(|c| c.pg_type.clone()).collect();
            let decoder = CopyDecoder::new(schema, types, batch_size);
            let state = Reading { conn: Some(conn), copy, decoder, alias, ended: false, bytes };
            Ok(futures::stream::try_unfold(state, next_batch).boxed())
        }))
    }
}

async fn next_batch(mut st: Reading) -> Result<Option<(RecordBatch, Reading)>> {
    loop {
        if st.ended {
            return Ok(None);
        }
        if st.decoder.batch_full() {
            let batch = st.decoder.flush().map_err(|e| read_error(&st.alias, e.to_string()))?;
            return Ok(batch.map(|b| (b, st)));
        }
        match st.copy.next().await {
            Some(chunk) => {
                let chunk = chunk.map_err(|e| pg_read_error(&st.alias, &e))?;
                st.bytes.add(chunk.len());
                st.decoder.feed(&chunk).map_err(|e| read_error(&st.alias, e.to_string()))?;
            }
            None => {
                st.decoder.finish().map_err(|e| read_error(&st.alias, e.to_string()))?;
                if let Some(mut conn) = st.conn.take() {
                    conn.done();
                }
                st.ended = true;
                let batch = st.decoder.flush().map_err(|e| read_error(&st.alias, e.to_string()))?;
                return Ok(batch.map(|b| (b, st)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ranges_are_balanced_and_the_last_is_open() {
        let spec = PgScanSpec {
            alias: "t".into(),
            run_id: "r".into(),
            location: PgLocation::parse("postgres://u@h/db?table=t").unwrap(),
            columns: vec![],
            ctid_ranges: true,
            pages: 10,
            reltuples: 0.0,
            relkind: 'r',
        };
        let paths = |n| {
            spec.file_groups(n)
                .iter()
                .map(|g| g.files()[0].object_meta.location.as_ref().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(1), vec!["kalla-pg/t/all"]);
        assert_eq!(paths(3), vec!["kalla-pg/t/pages-0-3", "kalla-pg/t/pages-3-6", "kalla-pg/t/pages-6-end"]);
        assert_eq!(paths(16).len(), 10);
        assert_eq!(PageRange::from_path("kalla-pg/t/pages-3-6").unwrap(), PageRange::Pages { from: 3, to: Some(6) });
        assert_eq!(PageRange::from_path("kalla-pg/t/pages-6-end").unwrap(), PageRange::Pages { from: 6, to: None });
        assert_eq!(
            spec.copy_sql(&[], PageRange::Pages { from: 3, to: Some(6) }, &[], Some(5)),
            "COPY (SELECT  FROM \"public\".\"t\" WHERE ctid >= '(3,0)'::tid AND ctid < '(6,0)'::tid LIMIT 5) TO STDOUT (FORMAT binary)"
        );
    }
}
