//! Output paths and their atomic commit (SPEC 5).
//!
//! A run writes into `<output_path>.tmp-<run_id>/` and renames that directory to `output_path`
//! only when every file, `summary.json` last, is written and synced. A run that fails or is
//! cancelled removes its temporary directory ([`TmpDir`] does it on drop), so no `output_path`
//! ever holds a partial result.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Date64Type, FieldRef, Schema, SchemaRef};
use datafusion::common::DataFusionError;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;
use kalla_connectors::file::lexically_inside;
use kalla_recipe::{ErrorCode, KallaError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// Where a job's outputs go.
#[derive(Debug, Clone)]
pub struct ResolvedOutput {
    /// `output_path` as given (status documents show it this way).
    pub given: String,
    /// The absolute final directory.
    pub final_dir: PathBuf,
    /// The absolute temporary directory written first.
    pub tmp_dir: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> KallaError {
    KallaError::new(ErrorCode::Internal, format!("{what} {}: {e}", path.display()))
}

/// What follows an output's name in its run's temporary directory (`<output>.tmp-<run id>`).
const TMP_MARKER: &str = ".tmp-";
/// What follows a temporary directory's name while it is removed (`….removing-<uuid>`).
const REMOVING_MARKER: &str = ".removing-";

/// Resolves `given` under `root`, refusing escapes and existing non-empty targets.
pub fn resolve_output(root: &Path, given: &str, run_id: Uuid) -> Result<ResolvedOutput, KallaError> {
    std::fs::create_dir_all(root).map_err(|e| io_err("cannot create the output root", root, e))?;
    let root = root.canonicalize().map_err(|e| io_err("cannot resolve the output root", root, e))?;
    let joined = if Path::new(given).is_absolute() { PathBuf::from(given) } else { root.join(given) };
    let outside = || {
        KallaError::at(
            ErrorCode::OutputOutsideRoot,
            "output_path",
            format!("output_path {given:?} is outside the output root"),
        )
    };
    if !lexically_inside(&root, &joined) {
        return Err(outside());
    }
    let normal: PathBuf = normalize(&joined);
    if normal == root {
        return Err(KallaError::at(
            ErrorCode::OutputOutsideRoot,
            "output_path",
            "output_path must name a directory below the output root",
        ));
    }
    // A name kallad itself gives a run's temporary directory (`<output>.tmp-<run id>`, or
    // `….removing-<uuid>` while it is deleted) is not an output: it may be in use.
    if let Some(name) = normal.file_name().map(|n| n.to_string_lossy().to_string())
        && [TMP_MARKER, REMOVING_MARKER]
            .iter()
            .any(|marker| name.rsplit_once(marker).is_some_and(|(_, id)| Uuid::parse_str(id).is_ok()))
    {
        return Err(KallaError::at(
            ErrorCode::InvalidField,
            "output_path",
            format!("output_path {given:?} ends like a run's temporary directory (.tmp-<uuid>); choose another name"),
        ));
    }
    // Follow symlinks in the part that exists: it must stay inside the root too.
    let mut existing = normal.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => break,
        }
    }
    if let Ok(real) = existing.canonicalize()
        && !real.starts_with(&root)
    {
        return Err(outside());
    }
    if normal.exists() {
        let non_empty = match std::fs::read_dir(&normal) {
            Ok(mut entries) => entries.next().is_some(),
            Err(_) => true, // a file, or unreadable: either way not ours to overwrite
        };
        if non_empty {
            return Err(KallaError::at(
                ErrorCode::OutputExists,
                "output_path",
                format!("output_path {given:?} already exists and is not empty"),
            ));
        }
    }
    let name = normal.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp_dir = normal.with_file_name(format!("{name}{TMP_MARKER}{run_id}"));
    Ok(ResolvedOutput { given: given.to_string(), final_dir: normal, tmp_dir })
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The temporary output directory; removed on drop unless committed.
#[derive(Debug)]
pub struct TmpDir {
    path: PathBuf,
    committed: bool,
}

impl TmpDir {
    /// Creates `out.tmp_dir` (replacing a leftover of an earlier attempt of the same run).
    pub fn create(out: &ResolvedOutput) -> Result<TmpDir, KallaError> {
        if out.tmp_dir.exists() {
            std::fs::remove_dir_all(&out.tmp_dir).map_err(|e| io_err("cannot remove stale", &out.tmp_dir, e))?;
        }
        if let Some(parent) = out.tmp_dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err("cannot create", parent, e))?;
        }
        std::fs::create_dir(&out.tmp_dir).map_err(|e| io_err("cannot create", &out.tmp_dir, e))?;
        Ok(TmpDir { path: out.tmp_dir.clone(), committed: false })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the directory to `final_dir`, atomically.
    pub fn commit(mut self, final_dir: &Path) -> Result<(), KallaError> {
        if final_dir.exists() {
            // resolve_output allowed only an empty directory here; rename cannot replace it on
            // every platform, so remove it first (it holds nothing).
            std::fs::remove_dir(final_dir).map_err(|e| {
                KallaError::new(ErrorCode::OutputExists, format!("output_path appeared while the job ran: {e}"))
            })?;
        }
        std::fs::rename(&self.path, final_dir).map_err(|e| io_err("cannot commit outputs to", final_dir, e))?;
        if let Some(parent) = final_dir.parent()
            && let Ok(dir) = std::fs::File::open(parent)
        {
            // Make the rename durable; a failure here does not undo the commit.
            let _ = dir.sync_all();
        }
        self.committed = true;
        Ok(())
    }
}

/// How often, and how far apart, a temporary directory that could not be removed at once is
/// tried again: a cancelled cluster job's tasks can still be creating parts in it for a moment
/// (each removal then meets a file it did not list, and fails), until their executors abort them.
const REMOVE_ATTEMPTS: u32 = 20;
const REMOVE_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

impl Drop for TmpDir {
    fn drop(&mut self) {
        if self.committed || !self.path.exists() {
            return;
        }
        if std::fs::remove_dir_all(&self.path).is_ok() {
            return;
        }
        // Moved out of the way first: the retries then delete this attempt's files only, never
        // a directory created at the same path meanwhile, and a task still writing a part can no
        // longer create one (the path it names is gone).
        let name = self.path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let path = self.path.with_file_name(format!("{name}{REMOVING_MARKER}{}", Uuid::new_v4()));
        if let Err(e) = std::fs::rename(&self.path, &path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove temporary output directory");
            }
            return;
        }
        let retry = move || {
            if let Err(e) = remove_retrying(&path, true) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove temporary output directory");
            }
        };
        if let Err(e) = std::thread::Builder::new().name("kalla-tmp-cleanup".into()).spawn(retry) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove temporary output directory");
        }
    }
}

/// Removes what a run that was interrupted (kallad killed, or exiting while a removal was still
/// being retried) left of its temporary directory `tmp_dir` (`<output>.tmp-<run_id>`): the
/// directory and every `….removing-<uuid>` copy of it. A path whose name is not `run_id`'s
/// temporary directory, or that does not lie below `root` (the resolved output root, as
/// [`resolve_output`] makes the names: the path comes from the journal, a file that could have been
/// edited), is left alone (`InvalidInput`). Each removal is tried again for a while, as in
/// [`TmpDir`]'s drop: an executor may still be finishing a task of the interrupted job.
/// Returns how many directories were removed.
pub fn remove_run_leftovers(root: &Path, tmp_dir: &Path, run_id: Uuid) -> std::io::Result<usize> {
    let name = tmp_dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if !name.ends_with(&format!("{TMP_MARKER}{run_id}")) || name.len() <= TMP_MARKER.len() + 36 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not the temporary directory of run {run_id}", tmp_dir.display()),
        ));
    }
    let below_root = tmp_dir.parent().is_some_and(|parent| lexically_inside(root, parent))
        && !tmp_dir.components().any(|c| c == std::path::Component::ParentDir);
    if !below_root {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not below the output root {}", tmp_dir.display(), root.display()),
        ));
    }
    let mut leftovers = vec![tmp_dir.to_path_buf()];
    let removing = format!("{name}{REMOVING_MARKER}");
    if let Some(parent) = tmp_dir.parent() {
        match std::fs::read_dir(parent) {
            Ok(entries) => leftovers.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&removing))
                    .map(|e| e.path()),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        }
    }
    let mut removed = 0;
    for path in leftovers {
        if remove_retrying(&path, false)? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes the directory `path`, in up to [`REMOVE_ATTEMPTS`] attempts [`REMOVE_PAUSE`] apart
/// (pausing before the first one too when `pause_first`). `Ok(false)` when it was not there.
fn remove_retrying(path: &Path, pause_first: bool) -> std::io::Result<bool> {
    let mut attempt = 1;
    loop {
        if pause_first || attempt > 1 {
            std::thread::sleep(REMOVE_PAUSE);
        }
        match std::fs::remove_dir_all(path) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) if attempt >= REMOVE_ATTEMPTS => return Err(e),
            Err(_) => attempt += 1,
        }
    }
}

/// Writer settings for every Parquet output.
pub(crate) fn writer_properties() -> WriterProperties {
    WriterProperties::builder().set_compression(Compression::SNAPPY).build()
}

/// Milliseconds in a day: a `Date64` that is a date holds a multiple of it.
const MS_PER_DAY: i64 = 86_400_000;

/// The type a column of type `t` is written as, so that any Parquet reader reads it back as it
/// was meant: string and binary views as plain `Utf8` / `Binary` (Parquet sources are read as
/// views, which older readers do not know; the bytes are the same), and `Date64` as `Date32`
/// (Parquet has no 64-bit date: written as is it is a bare INT64 of milliseconds, which readers
/// that ignore the embedded Arrow schema take for an integer). Nested types follow their
/// members; everything else is written as it is.
///
/// `arrow-rs`'s `coerce_types` writer option was not used: it also renames list items to
/// `element`, and it truncates a `Date64` holding a time of day, where Kalla refuses it.
pub fn written_type(t: &DataType) -> DataType {
    let field = |f: &FieldRef| Arc::new(f.as_ref().clone().with_data_type(written_type(f.data_type())));
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Date64 => DataType::Date32,
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(written_type(v))),
        other => other.clone(),
    }
}

/// Whether Parquet outputs can hold a column of type `t` (at any depth): not an Arrow
/// `Interval(MonthDayNano)`, which the Parquet writer refuses only when it meets a value.
pub(crate) fn writable(t: &DataType) -> bool {
    match t {
        DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano) => false,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) | DataType::Map(f, _) => {
            writable(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().all(|f| writable(f.data_type())),
        DataType::Dictionary(_, v) => writable(v),
        _ => true,
    }
}

/// `schema` with every column's [`written_type`].
pub fn written_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| Arc::new(f.as_ref().clone().with_data_type(written_type(f.data_type()))))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The first `Date64` value in `array` (at any depth) that is not a whole day.
fn date64_with_time_of_day(array: &dyn Array) -> Option<i64> {
    match array.data_type() {
        DataType::Date64 => array.as_primitive::<Date64Type>().iter().flatten().find(|v| v % MS_PER_DAY != 0),
        DataType::List(_) => date64_with_time_of_day(array.as_list::<i32>().values().as_ref()),
        DataType::LargeList(_) => date64_with_time_of_day(array.as_list::<i64>().values().as_ref()),
        DataType::FixedSizeList(..) => date64_with_time_of_day(array.as_fixed_size_list().values().as_ref()),
        DataType::Struct(_) => array.as_struct().columns().iter().find_map(|c| date64_with_time_of_day(c.as_ref())),
        DataType::Map(..) => date64_with_time_of_day(array.as_map().entries()),
        DataType::Dictionary(..) => date64_with_time_of_day(array.as_any_dictionary().values().as_ref()),
        _ => None,
    }
}

/// `batch` as [`written_schema`] says (`schema`); a `Date64` that is not a whole day fails, since
/// writing it as a date would drop its time of day.
fn to_written(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, DataFusionError> {
    if batch.schema_ref().fields() == schema.fields() {
        return Ok(batch);
    }
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (column, field) in batch.columns().iter().zip(schema.fields()) {
        if column.data_type() == field.data_type() {
            columns.push(Arc::clone(column));
            continue;
        }
        if let Some(ms) = date64_with_time_of_day(column.as_ref()) {
            return Err(DataFusionError::External(Box::new(KallaError::new(
                ErrorCode::SourceReadFailed,
                format!(
                    "column {}: the date64 value {ms} (milliseconds since 1970-01-01) is not a whole day; \
                     dates are written as dates, and this one would lose its time of day",
                    field.name()
                ),
            ))));
        }
        columns.push(cast(column, field.data_type())?);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Writes every batch of `stream` into one Parquet file at `path` (synced); returns the rows.
pub async fn write_stream(
    stream: datafusion::execution::SendableRecordBatchStream,
    path: &Path,
) -> Result<u64, datafusion::common::DataFusionError> {
    let rows = write_unsynced(stream, path).await?;
    std::fs::File::open(path)?.sync_all()?;
    Ok(rows)
}

/// [`write_stream`] without the sync: for a temporary file that is copied into a synced one.
pub async fn write_unsynced(
    stream: datafusion::execution::SendableRecordBatchStream,
    path: &Path,
) -> Result<u64, datafusion::common::DataFusionError> {
    write_unsynced_timed(stream, path, &datafusion::physical_plan::metrics::Time::new()).await
}

/// [`write_unsynced`], adding the time spent creating, encoding and writing the file (not the
/// time the input takes to produce its batches) to `time`.
pub async fn write_unsynced_timed(
    mut stream: datafusion::execution::SendableRecordBatchStream,
    path: &Path,
    time: &datafusion::physical_plan::metrics::Time,
) -> Result<u64, datafusion::common::DataFusionError> {
    let schema: SchemaRef = written_schema(&stream.schema());
    let started = std::time::Instant::now();
    // Named, since an executor writing an output part may lack the shared directory or the
    // right to write there; still an I/O error, so that a retry elsewhere may succeed.
    let file = tokio::fs::File::create(path)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))?;
    let mut writer = AsyncArrowWriter::try_new(file, Arc::clone(&schema), Some(writer_properties()))?;
    time.add_elapsed(started);
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = to_written(batch?, &schema)?;
        rows += batch.num_rows() as u64;
        let started = std::time::Instant::now();
        writer.write(&batch).await?;
        time.add_elapsed(started);
    }
    let started = std::time::Instant::now();
    writer.close().await?;
    time.add_elapsed(started);
    Ok(rows)
}

/// Writes `bytes` to `path` and syncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), KallaError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| io_err("cannot create", path, e))?;
    f.write_all(bytes).map_err(|e| io_err("cannot write", path, e))?;
    f.sync_all().map_err(|e| io_err("cannot sync", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_runs_leftovers_are_removed_and_nothing_beside_them() {
        let root = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let dir = root.path().join("a");
        let tmp = dir.join(format!("res{TMP_MARKER}{id}"));
        let removing = dir.join(format!("res{TMP_MARKER}{id}{REMOVING_MARKER}{}", Uuid::new_v4()));
        let other_run = dir.join(format!("res{TMP_MARKER}{}", Uuid::new_v4()));
        let output = dir.join("res");
        for d in [&tmp, &removing, &other_run, &output] {
            std::fs::create_dir_all(d.join(".parts-matched.parquet")).unwrap();
            std::fs::write(d.join(".parts-matched.parquet").join("part-1.parquet"), b"x").unwrap();
        }
        assert_eq!(remove_run_leftovers(root.path(), &tmp, id).unwrap(), 2);
        assert!(!tmp.exists() && !removing.exists());
        assert!(other_run.is_dir() && output.is_dir());
        // Nothing left: nothing to do.
        assert_eq!(remove_run_leftovers(root.path(), &tmp, id).unwrap(), 0);
        assert_eq!(
            remove_run_leftovers(
                root.path(),
                &root.path().join("gone/res.tmp-x").with_file_name(format!("res{TMP_MARKER}{id}")),
                id
            )
            .unwrap(),
            0
        );
        // Only a directory named as the run's temporary directory is removed.
        for wrong in [output.clone(), other_run.clone(), dir.join(format!("{TMP_MARKER}{id}"))] {
            let e = remove_run_leftovers(root.path(), &wrong, id).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{wrong:?}");
        }
        assert!(other_run.is_dir() && output.is_dir());
        // Only below the output root (the journal names the path), without `..`.
        let srv = Path::new("/srv/out");
        let named = |dir: &str| Path::new(dir).join(format!("b{TMP_MARKER}{id}"));
        for outside in [named("/srv/other"), named("/srv/out/../etc"), named("/srv/outside"), named("/srv")] {
            let e = remove_run_leftovers(srv, &outside, id).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{outside:?}");
        }
        assert_eq!(remove_run_leftovers(srv, &named("/srv/out/a"), id).unwrap(), 0);
    }

    #[test]
    fn output_paths_outside_the_root_or_existing_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let id = Uuid::nil();
        assert_eq!(resolve_output(root.path(), "../x", id).unwrap_err().code, ErrorCode::OutputOutsideRoot);
        assert_eq!(resolve_output(root.path(), "/etc/kalla", id).unwrap_err().code, ErrorCode::OutputOutsideRoot);
        assert_eq!(resolve_output(root.path(), "a/../..", id).unwrap_err().code, ErrorCode::OutputOutsideRoot);
        std::fs::create_dir_all(root.path().join("full")).unwrap();
        std::fs::write(root.path().join("full/f"), b"x").unwrap();
        assert_eq!(resolve_output(root.path(), "full", id).unwrap_err().code, ErrorCode::OutputExists);
        std::fs::create_dir_all(root.path().join("empty")).unwrap();
        let ok = resolve_output(root.path(), "empty", id).unwrap();
        assert!(ok.tmp_dir.ends_with(format!("empty.tmp-{id}")));
        let nested = resolve_output(root.path(), "2026-01/run", id).unwrap();
        assert_eq!(nested.final_dir, root.path().canonicalize().unwrap().join("2026-01/run"));
        // Another run's temporary directory is not an output path.
        for taken in [format!("res.tmp-{}", Uuid::new_v4()), format!("a/res.tmp-{}.removing-{}", id, Uuid::new_v4())] {
            let e = resolve_output(root.path(), &taken, id).unwrap_err();
            assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidField, Some("output_path")), "{taken}");
        }
        assert!(resolve_output(root.path(), "res.tmp-notes", id).is_ok());
    }

    /// A cancelled cluster job's tasks may still be creating parts in the temporary directory
    /// while it is removed; the removal goes on until they have stopped.
    #[test]
    fn a_temporary_directory_written_into_while_it_is_dropped_is_still_removed() {
        let root = tempfile::tempdir().unwrap();
        let out = resolve_output(root.path(), "run", Uuid::nil()).unwrap();
        let tmp = TmpDir::create(&out).unwrap();
        let parts = tmp.path().join(".parts-matched.parquet");
        std::fs::create_dir(&parts).unwrap();
        let started = std::time::Instant::now();
        let writer = std::thread::spawn(move || {
            // As an executor does: new files in the parts directory, until it is gone (or 1 s).
            let mut i = 0u64;
            while started.elapsed() < std::time::Duration::from_secs(1)
                && std::fs::write(parts.join(format!("part-{i}.parquet")), b"x").is_ok()
            {
                i += 1;
            }
            i
        });
        while std::fs::read_dir(tmp.path().join(".parts-matched.parquet")).map_or(0, |d| d.count()) < 100 {
            std::thread::yield_now();
        }
        drop(tmp);
        let written = writer.join().unwrap();
        assert!(written >= 100, "{written}");
        // Nothing is left beside the output, under any name.
        let deadline = std::time::Instant::now() + REMOVE_PAUSE * (REMOVE_ATTEMPTS + 2);
        loop {
            let left: Vec<String> = std::fs::read_dir(root.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "left behind: {left:?}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
