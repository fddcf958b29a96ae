//! Planning a job: open its sources, plan `match_sql`, trace every key, settle the output path.
//!
//! Everything a caller can fix is found here, before any row is read for matching: forbidden
//! statements, unknown tables and columns, duplicate output names, untraceable keys, filters that
//! do not fit, missing files, paths outside their roots. A [`PlannedJob`] is then run by
//! [`crate::run`].

use crate::lineage::{KeyTrace, SOURCE_MARKER_PREFIX, lineage, source_marker, trace_key};
use crate::output::{ResolvedOutput, resolve_output};
use crate::progress::ReadTracker;
use crate::sql::{
    check_outer_join_using, check_text_decimal_literals, parse_match_sql, planning_error, strip_df_prefix,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use kalla_connectors::file::{FileEntry, open_file_source};
use kalla_connectors::filter::filters_to_expr;
use kalla_connectors::postgres::open_postgres_source;
use kalla_connectors::postgres::scan::PgScanSpec;
use kalla_connectors::postgres::snapshot::SnapshotRegistry;
use kalla_connectors::types::sql_type_name;
use kalla_recipe::{ErrorCode, FileFormat, KallaError, Source, SourceLocation, ValidatedJob};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// Roots and knobs the engine plans with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Root of relative file source paths; files outside it are refused.
    pub data_dir: PathBuf,
    /// Root of relative `output_path` values.
    pub output_dir: PathBuf,
    /// Serialize and decode every logical plan, then its physical plan, before running it (proves
    /// plans can ship both ways).
    pub roundtrip_plans: bool,
    /// `Some(rows)`: a local run raises its partitions so that each hash partition of the largest
    /// source holds about `rows` rows ([`crate::session::scale_partitions`]); `None`: the
    /// session's partitions as they are (`--partitions` given).
    pub rows_per_partition: Option<u64>,
}

/// A source opened for a job.
#[derive(Debug)]
pub struct PlannedSource {
    /// The alias as given.
    pub alias: String,
    /// The table name in the session (lower-cased alias).
    pub table: String,
    /// The request's view of the source.
    pub spec: Source,
    /// The source after its filters, as `match_sql` sees it.
    pub frame: DataFrame,
    /// Its columns and types.
    pub schema: SchemaRef,
    /// Key columns, when the source has a key.
    pub key: Option<Vec<String>>,
    /// Where the key travels in the matched output.
    pub trace: Option<KeyTrace>,
    /// Files read (file sources).
    pub files: Vec<FileEntry>,
    /// File format (file sources).
    pub format: Option<FileFormat>,
    /// Rows expected before filters, when known without reading (Parquet metadata, CSV
    /// sample, Postgres `reltuples`).
    pub expected_rows: Option<u64>,
    /// What a Postgres source reads.
    pub postgres: Option<PgScanSpec>,
}

/// A job ready to run.
pub struct PlannedJob {
    /// The session the job runs in.
    pub ctx: SessionContext,
    /// The validated request.
    pub job: ValidatedJob,
    /// Sources in request order.
    pub sources: Vec<PlannedSource>,
    /// `match_sql` as planned (unoptimized; optimized when run).
    pub match_plan: LogicalPlan,
    /// Output column names of `match_sql`.
    pub output_columns: Vec<String>,
    /// Where outputs go.
    pub output: ResolvedOutput,
    /// Engine settings.
    pub config: EngineConfig,
    /// When the job was planned (its submission), RFC 3339.
    pub planned_at: String,
    /// The source scans of the plans this job runs: progress and rows/bytes read.
    pub reads: Arc<ReadTracker>,
    /// The job's Postgres snapshots (armed when the run starts, released when the job is dropped).
    pub snapshots: Arc<SnapshotRegistry>,
    /// Where the job's plans run: `None` in this process, else on a cluster (mode `cluster`).
    pub runner: Option<Arc<dyn crate::remote::PlanRunner>>,
}

impl std::fmt::Debug for PlannedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedJob")
            .field("run_id", &self.job.run_id)
            .field("sources", &self.sources.iter().map(|s| &s.alias).collect::<Vec<_>>())
            .field("output_columns", &self.output_columns)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

/// The answer of the validate endpoint: what a job would produce.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PlanDescription {
    /// Output column names of `match_sql`.
    pub output_columns: Vec<String>,
    /// Per keyed source, the output columns that carry its key.
    pub key_columns: BTreeMap<String, Vec<String>>,
    /// Per source, its columns and types.
    pub sources: BTreeMap<String, SourceDescription>,
}

/// A source's columns as the validate endpoint shows them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceDescription {
    /// Columns in order.
    pub columns: Vec<ColumnDescription>,
}

/// One column.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ColumnDescription {
    /// Name.
    pub name: String,
    /// SQL type name.
    #[serde(rename = "type")]
    pub data_type: String,
}

fn internal(context: &str, e: impl std::fmt::Display) -> KallaError {
    KallaError::new(ErrorCode::Internal, format!("{context}: {e}"))
}

/// Opens one source and registers it (after its filters) under its lower-cased alias.
async fn open_source(
    ctx: &SessionContext,
    source: &Source,
    config: &EngineConfig,
    run_id: &str,
    snapshots: &Arc<SnapshotRegistry>,
) -> Result<PlannedSource, KallaError> {
    let table = source.alias.to_ascii_lowercase();
    let mut postgres = None;
    let (frame, schema, files, format, expected_rows) = match &source.location {
        SourceLocation::File(path) => {
            let opened = open_file_source(&ctx.state(), source, path, &config.data_dir)
                .await
                .map_err(|e| e.into_kalla(&source.field))?;
            let frame = ctx
                .read_table(opened.provider)
                .and_then(|df| df.select(opened.projection))
                .map_err(|e| internal("building the source scan", e))?;
            (frame, opened.schema, opened.files, Some(opened.format), opened.expected_rows)
        }
        SourceLocation::Postgres(uri) => {
            let opened = open_postgres_source(source, uri, run_id, Arc::clone(snapshots))
                .await
                .map_err(|e| e.into_kalla(&source.field))?;
            let frame = ctx.read_table(opened.provider).map_err(|e| internal("building the source scan", e))?;
            postgres = Some(opened.spec);
            (frame, opened.schema, Vec::new(), None, opened.expected_rows)
        }
    };
    // The unmatched rows and the checks add columns named `__kalla…` beside the source's own.
    if let Some(f) = schema.fields().iter().find(|f| f.name().to_ascii_lowercase().starts_with("__kalla")) {
        return Err(KallaError::at(
            ErrorCode::UnsupportedSource,
            format!("{}.uri", source.field),
            format!(
                "source {}: column {:?} starts with __kalla, which is reserved for kallad; rename it in the \
                 source (a Postgres table can be read through a view that renames it)",
                source.alias,
                f.name()
            ),
        ));
    }
    if let Some(key) = &source.key {
        for (i, k) in key.iter().enumerate() {
            if schema.field_with_name(k).is_err() {
                return Err(KallaError::at(
                    ErrorCode::UnknownColumn,
                    format!("{}.primary_key[{i}]", source.field),
                    format!(
                        "key column {k:?} is not a column of source {:?} (it has {})",
                        source.alias,
                        schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    let frame = match filters_to_expr(&schema, &source.filters).map_err(|e| e.into_kalla(&source.field))? {
        Some(predicate) => frame.filter(predicate).map_err(|e| internal("applying filters", e))?,
        None => frame,
    };
    let frame = frame.alias(&source_marker(&table)).map_err(|e| internal("naming the source", e))?;
    ctx.register_table(table.as_str(), frame.clone().into_view()).map_err(|e| internal("registering the source", e))?;
    Ok(PlannedSource {
        alias: source.alias.clone(),
        table,
        spec: source.clone(),
        frame,
        schema,
        key: source.key.clone(),
        trace: None,
        files,
        format,
        expected_rows,
        postgres,
    })
}

/// Plans `job` in `ctx`: every check of SPEC 3.1 that a caller can act on.
pub async fn plan_job(ctx: SessionContext, job: ValidatedJob, config: EngineConfig) -> Result<PlannedJob, KallaError> {
    let output = resolve_output(&config.output_dir, &job.output_path, job.run_id)?;
    let statement = parse_match_sql(&job.match_sql)?;
    if job.match_sql.to_ascii_lowercase().contains("__kalla") {
        return Err(KallaError::at(
            ErrorCode::InvalidSql,
            "match_sql",
            format!("names starting with __kalla are reserved for kallad (such as {SOURCE_MARKER_PREFIX}…)"),
        ));
    }
    let snapshots = Arc::new(SnapshotRegistry::new(&job.run_id.to_string()));
    let mut sources = Vec::with_capacity(job.sources.len());
    for source in &job.sources {
        sources.push(open_source(&ctx, source, &config, &job.run_id.to_string(), &snapshots).await?);
    }
    let match_plan = ctx.state().statement_to_plan(statement).await.map_err(planning_error)?;
    let output_columns: Vec<String> = match_plan.schema().fields().iter().map(|f| f.name().clone()).collect();
    check_unique_columns(&match_plan)?;
    check_outer_join_using(&match_plan)?;
    let state = ctx.state();
    if let Ok(analyzed) = state.analyzer().execute_and_check(match_plan.clone(), state.config_options(), |_, _| {}) {
        check_text_decimal_literals(&analyzed)?;
    }
    // Optimizing and physical planning catch type errors (a UDF given text, …) before the job
    // is accepted.
    let physical = ctx.state().create_physical_plan(&match_plan).await;
    if let Err(e) = physical {
        return Err(KallaError::at(ErrorCode::InvalidSql, "match_sql", strip_df_prefix(e.find_root())));
    }
    tracing::debug!(plan = %match_plan.display_indent_schema(), "match_sql planned");
    check_writable(match_plan.schema().as_arrow(), None)?;
    for (i, source) in sources.iter().enumerate() {
        if source.key.is_some() {
            check_writable(&source.schema, Some((i, &source.alias)))?;
        }
    }
    let tables: HashSet<String> = sources.iter().map(|s| s.table.clone()).collect();
    let lineage = lineage(&match_plan, &tables);
    for (i, source) in sources.iter_mut().enumerate() {
        let Some(key) = &source.key else { continue };
        match trace_key(&lineage, &source.table, key) {
            Some(trace) => source.trace = Some(trace),
            None => {
                let wanted = key.iter().map(|k| format!("{}.{}", source.alias, k)).collect::<Vec<_>>().join(", ");
                let composite = if key.len() > 1 {
                    format!(", array_agg(struct({})), or one array_agg per key column", key.join(", "))
                } else {
                    format!(" or array_agg({})", key[0])
                };
                return Err(KallaError::at(
                    ErrorCode::UntraceableKey,
                    format!("sources[{i}].primary_key"),
                    format!(
                        "match_sql must select the key of source {:?} so unmatched rows can be found: select {wanted} \
                         as plain columns{composite} (casts and expressions are not followed)",
                        source.alias
                    ),
                ));
            }
        }
    }
    let planned_at = crate::timestamp_now();
    let reads = Arc::new(read_tracker(&sources, &job));
    Ok(PlannedJob {
        ctx,
        job,
        sources,
        match_plan,
        output_columns,
        output,
        config,
        planned_at,
        reads,
        snapshots,
        runner: None,
    })
}

/// How many times a run reads a source: `match_sql`, then for a keyed source the anti join and
/// the checks, for a source without key its count.
fn passes(source: &PlannedSource) -> u64 {
    if source.key.is_some() { 3 } else { 2 }
}

fn read_tracker(sources: &[PlannedSource], job: &ValidatedJob) -> ReadTracker {
    let locations = sources
        .iter()
        .map(|s| {
            s.files
                .iter()
                .filter_map(|f| ListingTableUrl::parse(f.path.to_string_lossy()).ok())
                .map(|u| u.prefix().as_ref().to_string())
                .collect()
        })
        .collect();
    let expected = sources.iter().map(|s| s.expected_rows.map(|r| r.saturating_mul(passes(s)))).collect();
    let aliases: Vec<String> = sources.iter().map(|s| s.alias.clone()).collect();
    ReadTracker::new(&aliases, locations, expected, &job.run_id.to_string())
}

fn check_unique_columns(plan: &LogicalPlan) -> Result<(), KallaError> {
    let schema = plan.schema();
    let mut seen: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (qualifier, field) in schema.iter() {
        let full = match qualifier {
            Some(q) => format!("{q}.{}", field.name()),
            None => field.name().clone(),
        };
        seen.entry(field.name().as_str()).or_default().push(full);
    }
    let dups: Vec<String> =
        seen.into_iter().filter(|(_, v)| v.len() > 1).map(|(name, v)| format!("{name} ({})", v.join(", "))).collect();
    if dups.is_empty() {
        Ok(())
    } else {
        Err(KallaError::at(
            ErrorCode::DuplicateOutputColumn,
            "match_sql",
            format!("output column names must be unique; alias them apart: {}", dups.join("; ")),
        ))
    }
}

/// Refuses, before anything runs, a column no output could hold: Parquet cannot store an Arrow
/// `Interval(MonthDayNano)` (a Postgres `interval`, or SQL interval arithmetic), and the writer
/// would fail after the match ran. `source` is the source whose every column goes to its unmatched
/// output (index and alias); `None` is the matched output.
fn check_writable(
    schema: &datafusion::arrow::datatypes::Schema,
    source: Option<(usize, &str)>,
) -> Result<(), KallaError> {
    let Some(field) = schema.fields().iter().find(|f| !crate::output::writable(f.data_type())) else {
        return Ok(());
    };
    Err(match source {
        None => KallaError::at(
            ErrorCode::InvalidSql,
            "match_sql",
            format!(
                "output column {:?} is an interval, which Parquet outputs cannot hold; select it as text \
                 (CAST(… AS VARCHAR)) or as a number of seconds",
                field.name()
            ),
        ),
        Some((i, alias)) => KallaError::at(
            ErrorCode::UnsupportedSource,
            format!("sources[{i}].uri"),
            format!(
                "source {alias}: column {:?} is an interval, which its unmatched output (every column of the source) \
                 cannot hold in Parquet; read the source through a view that casts it to text",
                field.name()
            ),
        ),
    })
}

impl PlannedJob {
    /// What the validate endpoint returns for this job.
    pub fn describe(&self) -> PlanDescription {
        let mut key_columns = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for s in &self.sources {
            if let Some(trace) = &s.trace {
                let cols = trace.columns().into_iter().map(|i| self.output_columns[i].clone()).collect();
                key_columns.insert(s.alias.clone(), cols);
            }
            sources.insert(
                s.alias.clone(),
                SourceDescription {
                    columns: s
                        .schema
                        .fields()
                        .iter()
                        .map(|f| ColumnDescription { name: f.name().clone(), data_type: sql_type_name(f.data_type()) })
                        .collect(),
                },
            );
        }
        PlanDescription { output_columns: self.output_columns.clone(), key_columns, sources }
    }
}
