//! Outputs written where their rows are made (cluster mode).
//!
//! A plan shipped to the executors would otherwise send every output row back to the scheduler
//! (Arrow IPC shuffle files, Flight, decoding) to be encoded into Parquet there by one thread.
//! Instead [`ParquetPartsExec`] sits on top of the plan: each partition, on the executor that runs
//! it, writes its rows into its own Parquet part in a directory of the run's temporary output
//! directory (which every executor sees at the same path, like `--data-dir`) and returns one row
//! naming the part and its row count. [`write_parts`] then takes exactly one part per partition —
//! the one the successful attempt reported — and [`concat_parts`] joins them into the one output
//! file by copying their column chunks, without decoding them.

use crate::output::{write_stream, write_unsynced_timed, writer_properties};
use crate::remote::PlanRunner;
use datafusion::arrow::array::{RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::column::writer::ColumnCloseResult;
use datafusion::parquet::file::metadata::{KeyValue, PageIndexPolicy, ParquetMetaDataReader};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::writer::SerializedFileWriter;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
};
use datafusion::prelude::SessionContext;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// The schema of what [`ParquetPartsExec`] returns: one row per partition.
fn report_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("path", DataType::Utf8, false), Field::new("rows", DataType::UInt64, false)]))
}

/// Writes each partition of its input into its own Parquet file in `dir` and returns, per
/// partition, one row `(path, rows)`. A retried partition writes a new file (the name carries a
/// fresh UUID), so the file an attempt reports is always complete and its own. The row names no
/// partition: a Ballista task runs its slice of a stage renumbered from 0, so the index `execute`
/// sees is not the stage's partition.
///
/// Metrics (per partition, shown in Ballista's stage log): `output_rows` (the report rows),
/// `rows_written` and `write_time` (encoding and writing the part, without the input's own time).
#[derive(Debug, Clone)]
pub struct ParquetPartsExec {
    input: Arc<dyn ExecutionPlan>,
    dir: PathBuf,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ParquetPartsExec {
    /// Parts of `input` into `dir`, which must exist (the scheduler creates it).
    pub fn new(input: Arc<dyn ExecutionPlan>, dir: PathBuf) -> Self {
        let partitions = input.output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(report_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        ParquetPartsExec { input, dir, properties, metrics: ExecutionPlanMetricsSet::new() }
    }

    /// The directory the parts go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl DisplayAs for ParquetPartsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ParquetPartsExec: dir={}", self.dir.display())
    }
}

impl ExecutionPlan for ParquetPartsExec {
    fn name(&self) -> &str {
        "ParquetPartsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!("ParquetPartsExec takes one input, got {}", children.len())));
        }
        let input = children.swap_remove(0);
        Ok(match options.children_properties {
            ChildrenPropertiesMode::Keep => Arc::new(ParquetPartsExec {
                input,
                metrics: ExecutionPlanMetricsSet::new(),
                ..ParquetPartsExec::clone(&self)
            }),
            ChildrenPropertiesMode::Recompute => Arc::new(ParquetPartsExec::new(input, self.dir.clone())),
        })
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let path = self.dir.join(format!("part-{}.parquet", Uuid::new_v4()));
        let schema = self.schema();
        let reported = Arc::clone(&schema);
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let rows_written = MetricBuilder::new(&self.metrics).counter("rows_written", partition);
        let write_time = MetricBuilder::new(&self.metrics).subset_time("write_time", partition);
        let written = async move {
            // Not synced: the part is copied into the output file, which is.
            let rows = write_unsynced_timed(input, &path, &write_time).await?;
            baseline.elapsed_compute().add(&write_time);
            rows_written.add(usize::try_from(rows).unwrap_or(usize::MAX));
            let report = RecordBatch::try_new(
                reported,
                vec![
                    Arc::new(StringArray::from(vec![path.to_string_lossy().to_string()])),
                    Arc::new(UInt64Array::from(vec![rows])),
                ],
            )?;
            baseline.record_output(report.num_rows());
            baseline.done();
            Ok(report)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::once(written))))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// Runs `plan` on `runner` with its output written as parts beside `path`, then joins the parts
/// into the one file `path`; returns the row count. The runner hands back one result per
/// partition (kalla-cluster keeps one location per final partition), so there must be exactly
/// one part per partition, each a different file inside the parts directory, and the joined file
/// must hold the rows the parts reported.
pub async fn write_parts(
    runner: &dyn PlanRunner,
    label: &str,
    plan: Arc<dyn ExecutionPlan>,
    ctx: SessionContext,
    path: &Path,
) -> Result<u64> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let dir = path.with_file_name(format!(".parts-{name}"));
    std::fs::create_dir(&dir)?;
    let schema = plan.schema();
    let parts_plan = Arc::new(ParquetPartsExec::new(plan, dir.clone()));
    let mut reports = Vec::new();
    for partition in runner.execute(label.to_string(), parts_plan, ctx).await? {
        reports.push(datafusion::physical_plan::common::collect(partition).await?);
    }
    let joining = std::time::Instant::now();
    let parts = reported_parts(&reports, &dir, label)?;
    let expected: u64 = parts.iter().map(|(_, rows)| rows).sum();
    let files: Vec<PathBuf> = parts.into_iter().map(|(p, _)| p).collect();
    let out = path.to_path_buf();
    let rows = if files.is_empty() {
        let empty = datafusion::physical_plan::EmptyRecordBatchStream::new(schema);
        write_stream(Box::pin(empty), &out).await?
    } else {
        tokio::task::spawn_blocking(move || concat_parts(&files, &out))
            .await
            .map_err(|e| DataFusionError::Internal(format!("joining the parts of {name}: {e}")))??
    };
    if rows != expected {
        return Err(DataFusionError::Internal(format!(
            "{label}: the parts reported {expected} rows but {name} holds {rows}"
        )));
    }
    std::fs::remove_dir_all(&dir)?;
    tracing::debug!(plan = %label, rows, ms = joining.elapsed().as_millis() as u64, "parts joined");
    Ok(rows)
}

/// The `(path, rows)` of every part [`ParquetPartsExec`] reported, given the report batches of
/// each result partition: exactly one part per partition, no file twice, every file inside `dir`.
fn reported_parts(partitions: &[Vec<RecordBatch>], dir: &Path, label: &str) -> Result<Vec<(PathBuf, u64)>> {
    let mut parts: Vec<(PathBuf, u64)> = Vec::with_capacity(partitions.len());
    for (p, batches) in partitions.iter().enumerate() {
        let mut reported = Vec::new();
        for b in batches {
            let (Some(path), Some(rows)) = (
                b.column_by_name("path").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
                b.column_by_name("rows").and_then(|c| c.as_any().downcast_ref::<UInt64Array>()),
            ) else {
                return Err(DataFusionError::Internal(format!("{label}: a part report lacks its path or rows")));
            };
            reported.extend((0..b.num_rows()).map(|r| (PathBuf::from(path.value(r)), rows.value(r))));
        }
        let [(file, rows)] = <[(PathBuf, u64); 1]>::try_from(reported).map_err(|r| {
            DataFusionError::Internal(format!("{label}: result partition {p} reported {} parts, not one", r.len()))
        })?;
        if file.parent() != Some(dir) {
            return Err(DataFusionError::Internal(format!("{label}: a part was reported outside {dir:?}")));
        }
        if parts.iter().any(|(f, _)| *f == file) {
            return Err(DataFusionError::Internal(format!("{label}: part {file:?} was reported twice")));
        }
        parts.push((file, rows));
    }
    Ok(parts)
}

/// Joins Parquet files of one schema into `out` (synced) by copying their row groups' column
/// chunks as they are, in the order given; returns the rows of `out`. The Arrow schema the parts
/// carry (`ARROW:schema`) and the output's writer settings go with them.
pub fn concat_parts(parts: &[PathBuf], out: &Path) -> Result<u64> {
    let mut inputs = Vec::with_capacity(parts.len());
    for part in parts {
        let file = std::fs::File::open(part)?;
        let metadata =
            ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Optional).parse_and_finish(&file)?;
        inputs.push((file, metadata));
    }
    let Some((_, first)) = inputs.first() else {
        return Err(DataFusionError::Internal("no parts to join".into()));
    };
    let schema = first.file_metadata().schema_descr().root_schema_ptr();
    for ((_, metadata), part) in inputs.iter().zip(parts) {
        if metadata.file_metadata().schema_descr().root_schema_ptr() != schema {
            return Err(DataFusionError::Internal(format!("part {part:?} has another schema than the first")));
        }
    }
    let key_values: Option<Vec<KeyValue>> = first.file_metadata().key_value_metadata().cloned();
    let props: WriterProperties = writer_properties().into_builder().set_key_value_metadata(key_values).build();
    let file = std::fs::File::create(out)?;
    let mut writer = SerializedFileWriter::new(file, schema, Arc::new(props))?;
    let mut rows = 0u64;
    for (input, metadata) in &inputs {
        for (g, group) in metadata.row_groups().iter().enumerate() {
            let column_index = metadata.column_index().and_then(|c| c.get(g));
            let offset_index = metadata.offset_index().and_then(|o| o.get(g));
            let mut group_out = writer.next_row_group()?;
            for (c, column) in group.columns().iter().enumerate() {
                let close = ColumnCloseResult {
                    bytes_written: column.compressed_size() as _,
                    rows_written: group.num_rows() as _,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: column_index.and_then(|r| r.get(c)).cloned(),
                    offset_index: offset_index.and_then(|r| r.get(c)).cloned(),
                };
                group_out.append_column(input, close)?;
            }
            group_out.close()?;
            rows += group.num_rows() as u64;
        }
    }
    let file = writer.into_inner()?;
    file.sync_all()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::RecordBatchReader;
    use datafusion::arrow::array::{Decimal128Array, LargeStringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use futures::future::BoxFuture;

    /// Runs plans in this process: what an executor does with each partition, minus the trip.
    #[derive(Debug)]
    struct InProcess;

    impl PlanRunner for InProcess {
        fn execute(
            &self,
            _label: String,
            plan: Arc<dyn ExecutionPlan>,
            ctx: SessionContext,
        ) -> BoxFuture<'static, Result<Vec<SendableRecordBatchStream>>> {
            Box::pin(async move {
                let n = plan.output_partitioning().partition_count();
                (0..n).map(|p| plan.execute(p, ctx.task_ctx())).collect()
            })
        }

        fn writes_parts(&self) -> bool {
            true
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            // Read back as Utf8 unless the parts' Arrow schema travels into the joined file.
            Field::new("note", DataType::LargeUtf8, true),
        ]))
    }

    fn batch(from: i64, n: i64) -> RecordBatch {
        let ids: Vec<String> = (from..from + n).map(|i| format!("inv-{i}")).collect();
        let amounts = Decimal128Array::from((from..from + n).map(|i| Some(i128::from(i) * 101)).collect::<Vec<_>>())
            .with_precision_and_scale(12, 2)
            .unwrap();
        let at =
            TimestampMicrosecondArray::from((from..from + n).map(|i| (i % 3 != 0).then_some(i)).collect::<Vec<_>>())
                .with_timezone("UTC");
        let notes =
            LargeStringArray::from((from..from + n).map(|i| (i % 2 == 0).then(|| format!("n{i}"))).collect::<Vec<_>>());
        let columns: Vec<Arc<dyn datafusion::arrow::array::Array>> =
            vec![Arc::new(StringArray::from(ids)), Arc::new(amounts), Arc::new(at), Arc::new(notes)];
        RecordBatch::try_new(schema(), columns).unwrap()
    }

    fn read(path: &Path) -> (SchemaRef, Vec<RecordBatch>) {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap().build().unwrap();
        let schema = reader.schema();
        (schema, reader.collect::<std::result::Result<Vec<_>, _>>().unwrap())
    }

    #[tokio::test]
    async fn parts_joined_into_one_file_hold_every_row_once_with_the_arrow_types() {
        let dir = tempfile::tempdir().unwrap();
        // Three partitions, the middle one empty, the last of several batches.
        let partitions = vec![vec![batch(0, 5)], vec![], vec![batch(5, 3), batch(8, 4)]];
        let plan = MemorySourceConfig::try_new_exec(&partitions, schema(), None).unwrap();
        let ctx = SessionContext::new();
        let path = dir.path().join("matched.parquet");
        let rows = write_parts(&InProcess, "matching", plan, ctx, &path).await.unwrap();
        assert_eq!(rows, 12);
        let (read_schema, batches) = read(&path);
        assert_eq!(read_schema, schema());
        // The parts come in whatever order the partitions finished: compare sorted by id.
        let sorted = |b: RecordBatch| {
            let order = datafusion::arrow::compute::sort_to_indices(b.column(0), None, None).unwrap();
            datafusion::arrow::compute::take_record_batch(&b, &order).unwrap()
        };
        let all = datafusion::arrow::compute::concat_batches(&schema(), &batches).unwrap();
        assert_eq!(sorted(all), sorted(batch(0, 12)));
        // Only the output is left: the parts directory is gone.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["matched.parquet"]);
    }

    #[tokio::test]
    async fn a_parts_writer_counts_the_rows_it_wrote_and_the_parts_it_reported() {
        let dir = tempfile::tempdir().unwrap();
        let partitions = vec![vec![batch(0, 5)], vec![], vec![batch(5, 3), batch(8, 4)]];
        let input = MemorySourceConfig::try_new_exec(&partitions, schema(), None).unwrap();
        let parts = Arc::new(ParquetPartsExec::new(input, dir.path().to_path_buf()));
        let ctx = SessionContext::new();
        for p in 0..3 {
            datafusion::physical_plan::common::collect(parts.execute(p, ctx.task_ctx()).unwrap()).await.unwrap();
        }
        let metrics = parts.metrics().unwrap();
        let sum = |name: &str| metrics.sum_by_name(name).map(|v| v.as_usize());
        assert_eq!(sum("rows_written"), Some(12));
        assert_eq!(metrics.output_rows(), Some(3));
        assert!(sum("write_time").is_some_and(|nanos| nanos > 0));
        assert_eq!(metrics.elapsed_compute(), sum("write_time"));
    }

    #[tokio::test]
    async fn a_plan_without_rows_gives_an_empty_file_with_its_schema() {
        let dir = tempfile::tempdir().unwrap();
        let plan = MemorySourceConfig::try_new_exec(&[vec![], vec![]], schema(), None).unwrap();
        let path = dir.path().join("unmatched_invoices.parquet");
        assert_eq!(write_parts(&InProcess, "u", plan, SessionContext::new(), &path).await.unwrap(), 0);
        let (read_schema, batches) = read(&path);
        assert_eq!(read_schema, schema());
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    }

    fn views_and_dates(from: i64, n: i64) -> RecordBatch {
        use datafusion::arrow::array::{BinaryViewArray, Date64Array, ListBuilder, StringViewArray, StringViewBuilder};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8View, false),
            Field::new("raw", DataType::BinaryView, true),
            Field::new("due", DataType::Date64, true),
            Field::new("ids", DataType::List(Arc::new(Field::new_list_field(DataType::Utf8View, true))), true),
        ]));
        let range = from..from + n;
        let mut ids = ListBuilder::new(StringViewBuilder::new());
        for i in range.clone() {
            ids.values().append_value(format!("a-long-enough-key-{i}"));
            ids.values().append_value(format!("k{i}"));
            ids.append(i % 2 == 0);
        }
        let columns: Vec<Arc<dyn datafusion::arrow::array::Array>> = vec![
            Arc::new(StringViewArray::from_iter_values(range.clone().map(|i| format!("inv-{i}")))),
            Arc::new(BinaryViewArray::from_iter(range.clone().map(|i| (i % 3 != 0).then(|| vec![i as u8; 20])))),
            Arc::new(Date64Array::from_iter(range.clone().map(|i| (i != 1).then_some((i - 3) * 86_400_000)))),
            Arc::new(ids.finish()),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[tokio::test]
    async fn outputs_declare_plain_strings_and_binaries_and_dates_whether_written_whole_or_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let partitions = vec![vec![views_and_dates(0, 3)], vec![views_and_dates(3, 4)]];
        let input_schema = views_and_dates(0, 0).schema();
        let plan = MemorySourceConfig::try_new_exec(&partitions, Arc::clone(&input_schema), None).unwrap();
        let joined = dir.path().join("matched.parquet");
        assert_eq!(write_parts(&InProcess, "matching", plan, SessionContext::new(), &joined).await.unwrap(), 7);
        let whole = dir.path().join("whole.parquet");
        let plan = MemorySourceConfig::try_new_exec(&partitions, input_schema, None).unwrap();
        let stream = datafusion::physical_plan::execute_stream(plan, SessionContext::new().task_ctx()).unwrap();
        assert_eq!(write_stream(stream, &whole).await.unwrap(), 7);
        let expected = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("raw", DataType::Binary, true),
            Field::new("due", DataType::Date32, true),
            Field::new("ids", DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))), true),
        ]));
        for path in [&joined, &whole] {
            let (schema, batches) = read(path);
            assert_eq!(schema, expected, "{path:?}");
            let all = datafusion::arrow::compute::concat_batches(&expected, &batches).unwrap();
            let order = datafusion::arrow::compute::sort_to_indices(all.column(0), None, None).unwrap();
            let all = datafusion::arrow::compute::take_record_batch(&all, &order).unwrap();
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&[all]).unwrap().to_string();
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("| inv-")).collect();
            assert_eq!(
                lines,
                [
                    "| inv-0 |                                          | 1969-12-29 | [a-long-enough-key-0, k0] |",
                    "| inv-1 | 0101010101010101010101010101010101010101 |            |                           |",
                    "| inv-2 | 0202020202020202020202020202020202020202 | 1969-12-31 | [a-long-enough-key-2, k2] |",
                    "| inv-3 |                                          | 1970-01-01 |                           |",
                    "| inv-4 | 0404040404040404040404040404040404040404 | 1970-01-02 | [a-long-enough-key-4, k4] |",
                    "| inv-5 | 0505050505050505050505050505050505050505 | 1970-01-03 |                           |",
                    "| inv-6 |                                          | 1970-01-04 | [a-long-enough-key-6, k6] |",
                ],
                "{path:?}"
            );
        }
    }

    fn report(rows: &[(&str, u64)]) -> RecordBatch {
        RecordBatch::try_new(
            report_schema(),
            vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(UInt64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn every_result_partition_must_report_one_part_of_its_own_inside_the_parts_directory() {
        let dir = Path::new("/out/run.tmp-1/.parts-matched.parquet");
        let a = "/out/run.tmp-1/.parts-matched.parquet/part-a.parquet";
        let b = "/out/run.tmp-1/.parts-matched.parquet/part-b.parquet";
        let ok = reported_parts(&[vec![report(&[(b, 7)])], vec![report(&[]), report(&[(a, 3)])]], dir, "m").unwrap();
        assert_eq!(ok, [(PathBuf::from(b), 7), (PathBuf::from(a), 3)]);
        let e = reported_parts(&[vec![report(&[(a, 3)])], vec![report(&[(a, 3)])]], dir, "m").unwrap_err();
        assert!(e.to_string().contains("reported twice"), "{e}");
        let e = reported_parts(&[vec![report(&[(a, 3), (b, 7)])]], dir, "m").unwrap_err();
        assert!(e.to_string().contains("result partition 0 reported 2 parts, not one"), "{e}");
        let e = reported_parts(&[vec![report(&[(a, 3)])], vec![]], dir, "m").unwrap_err();
        assert!(e.to_string().contains("result partition 1 reported 0 parts, not one"), "{e}");
        let e = reported_parts(&[vec![report(&[("/etc/part-a.parquet", 3)])]], dir, "m").unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
    }
}
