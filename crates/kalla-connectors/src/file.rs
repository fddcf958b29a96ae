//! File sources: CSV (optionally gzip) and Parquet files or directories of them.
//!
//! A source path is resolved under the data root and refused when it lands outside it (after
//! following symlinks). The file list is fixed when the job is planned — it is what the audit
//! trail records (size, modification time) and what the scan reads.
//!
//! CSV typing: a column named in the source's `schema` is read as that type. Otherwise types are
//! inferred from the first [`INFER_RECORDS`] records with Arrow's rules, then made safe for money:
//! a numeric-looking column with a leading zero (`007`) stays text, and a column of plain decimal
//! numbers (`12.50`) becomes `decimal(38, s)` with `s` the most fractional digits seen, instead of
//! a float. Decimal columns are read as text and converted exactly by `__kalla_decimal`, so a value
//! that would lose digits fails the job instead of being truncated. A column whose header repeats
//! another's name is refused.
//!
//! Values past the sample (and in the other files of a directory) are held to the inferred types:
//! inferred numeric columns are read as text and converted by `__kalla_inferred`
//! ([`crate::inferred`]), which fails the job, naming the file, line and column, on a value that
//! would not read back as the text it is (`0012`, `+12`, ` 12`, `-0` in a bigint column) instead
//! of silently merging it with another key. A column given a type in `schema` is read as declared.

use crate::decimal::ParseDecimalUdf;
use crate::error::ConnectorError;
use crate::inferred::{CsvFileRef, InferredColumn, InferredUdf};
use crate::types::{parse_sql_type, sql_type_name};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::csv::reader::Format;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::config::CsvOptions as DfCsvOptions;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::context::SessionState;
use datafusion::functions::core::expr_fn::nullif;
use datafusion::logical_expr::{Expr, ScalarUDF, cast, lit};
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use kalla_recipe::{CsvOptions, FileFormat, Source};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// How many records CSV type inference reads.
pub const INFER_RECORDS: usize = 1000;

/// One file of a source, as the audit trail records it.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Absolute path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub modified: Option<SystemTime>,
}

/// A file source ready to be scanned.
#[derive(Debug)]
pub struct OpenedFileSource {
    /// The scan as DataFusion reads it (decimal CSV columns as text).
    pub provider: Arc<dyn TableProvider>,
    /// Expressions over the provider's columns giving the source's columns in their final types.
    pub projection: Vec<Expr>,
    /// The source's schema as `match_sql` sees it.
    pub schema: SchemaRef,
    /// The format read.
    pub format: FileFormat,
    /// The files read, sorted by path.
    pub files: Vec<FileEntry>,
    /// Rows the source is expected to hold (Parquet metadata), when known without reading.
    pub expected_rows: Option<u64>,
}

/// Resolves `given` (relative to `root`, or absolute, or `file://`) and refuses paths outside root.
pub fn resolve_under_root(root: &Path, given: &str) -> Result<PathBuf, ConnectorError> {
    let root = root.canonicalize().map_err(|e| ConnectorError::Io { path: root.display().to_string(), source: e })?;
    let joined = if Path::new(given).is_absolute() { PathBuf::from(given) } else { root.join(given) };
    let resolved = match joined.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Refuse an escaping path even when it does not exist, so the error does not reveal
            // what exists outside the root.
            if !lexically_inside(&root, &joined) {
                return Err(ConnectorError::OutsideRoot { path: given.to_string() });
            }
            return Err(ConnectorError::NotFound { path: given.to_string() });
        }
        Err(e) => return Err(ConnectorError::Io { path: given.to_string(), source: e }),
    };
    if !resolved.starts_with(&root) {
        return Err(ConnectorError::OutsideRoot { path: given.to_string() });
    }
    Ok(resolved)
}

/// True when `path`, with `.` and `..` resolved lexically, stays under `root`.
pub fn lexically_inside(root: &Path, path: &Path) -> bool {
    let mut parts: Vec<std::path::Component> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                if parts.pop().is_none() {
                    return false;
                }
            }
            std::path::Component::CurDir => {}
            other => parts.push(other),
        }
    }
    let normal: PathBuf = parts.iter().collect();
    normal.starts_with(root)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Csv,
    CsvGz,
    Parquet,
}

fn kind_of(path: &Path, format: Option<FileFormat>) -> Option<Kind> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let gz = name.ends_with(".gz");
    match format {
        Some(FileFormat::Csv) => Some(if gz { Kind::CsvGz } else { Kind::Csv }),
        Some(FileFormat::Parquet) => Some(Kind::Parquet),
        None if name.ends_with(".csv.gz") => Some(Kind::CsvGz),
        None if name.ends_with(".csv") => Some(Kind::Csv),
        None if name.ends_with(".parquet") => Some(Kind::Parquet),
        None => None,
    }
}

fn entry(path: PathBuf) -> Result<FileEntry, ConnectorError> {
    let meta =
        std::fs::metadata(&path).map_err(|e| ConnectorError::Io { path: path.display().to_string(), source: e })?;
    Ok(FileEntry { size: meta.len(), modified: meta.modified().ok(), path })
}

/// Lists the files of a source path: the file itself, or the data files of a directory
/// (hidden and `_`-prefixed files skipped, not recursive), all of one kind.
fn list_files(path: &Path, given: &str, format: Option<FileFormat>) -> Result<(Kind, Vec<FileEntry>), ConnectorError> {
    if path.is_file() {
        let kind = kind_of(path, format).ok_or_else(|| ConnectorError::UnknownFormat { path: given.to_string() })?;
        return Ok((kind, vec![entry(path.to_path_buf())?]));
    }
    let mut files = Vec::new();
    let mut kind: Option<Kind> = None;
    let dir = std::fs::read_dir(path).map_err(|e| ConnectorError::Io { path: given.to_string(), source: e })?;
    for item in dir {
        let item = item.map_err(|e| ConnectorError::Io { path: given.to_string(), source: e })?;
        let p = item.path();
        let name = item.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || name.starts_with('_') || !p.is_file() {
            continue;
        }
        let Some(k) = kind_of(&p, format) else { continue };
        match kind {
            None => kind = Some(k),
            Some(existing) if existing != k => {
                return Err(ConnectorError::MixedDirectory { path: given.to_string() });
            }
            _ => {}
        }
        files.push(entry(p)?);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    match kind {
        Some(k) => Ok((k, files)),
        None => Err(ConnectorError::EmptyDirectory { path: given.to_string() }),
    }
}

fn csv_byte(v: &Option<String>, default: u8) -> u8 {
    v.as_ref().and_then(|s| s.bytes().next()).unwrap_or(default)
}

fn null_regex(opts: &CsvOptions) -> Option<String> {
    opts.null_value.as_ref().map(|v| format!("^(?:|{})$", regex::escape(v)))
}

fn arrow_format(opts: &CsvOptions) -> Result<Format, ConnectorError> {
    let mut f = Format::default()
        .with_header(opts.has_header.unwrap_or(true))
        .with_delimiter(csv_byte(&opts.delimiter, b','))
        .with_quote(csv_byte(&opts.quote, b'"'));
    if let Some(e) = &opts.escape {
        f = f.with_escape(csv_byte(&Some(e.clone()), b'\\'));
    }
    if let Some(r) = null_regex(opts) {
        let re = regex::Regex::new(&r).map_err(|e| ConnectorError::InvalidOption { message: e.to_string() })?;
        f = f.with_null_regex(re);
    }
    Ok(f)
}

fn open_maybe_gz(path: &Path, kind: Kind) -> Result<Box<dyn Read>, ConnectorError> {
    let file = File::open(path).map_err(|e| ConnectorError::Io { path: path.display().to_string(), source: e })?;
    Ok(match kind {
        Kind::CsvGz => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        _ => Box::new(BufReader::new(file)),
    })
}

fn leading_zero(v: &str) -> bool {
    let v = v.trim_start_matches(['+', '-']);
    let b = v.as_bytes();
    b.len() > 1 && b[0] == b'0' && b[1].is_ascii_digit()
}

/// `-0` (or `-00`…): an integer that would not read back as the text it is.
fn negative_zero_integer(v: &str) -> bool {
    v.strip_prefix('-').is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b == b'0'))
}

/// Fractional digits of a plain decimal (`-12.50` → Some(2)); None when not a plain decimal.
fn plain_decimal_scale(v: &str) -> Option<usize> {
    let v = v.trim().trim_start_matches(['+', '-']);
    let (i, f) = v.split_once('.').unwrap_or((v, ""));
    let ok = !(i.is_empty() && f.is_empty())
        && i.bytes().all(|b| b.is_ascii_digit())
        && f.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(f.len())
}

/// Infers a CSV schema from the first records of `file` (see the module docs for the rules).
/// `shown` names the file in messages.
fn infer_csv(file: &FileEntry, shown: &str, kind: Kind, opts: &CsvOptions) -> Result<Schema, ConnectorError> {
    let format = arrow_format(opts)?;
    let name = file.path.display().to_string();
    let read_err =
        |e: datafusion::arrow::error::ArrowError| ConnectorError::Read { path: name.clone(), message: e.to_string() };
    let (inferred, _) = format.infer_schema(open_maybe_gz(&file.path, kind)?, Some(INFER_RECORDS)).map_err(read_err)?;
    let names: Vec<&String> = inferred.fields().iter().map(|f| f.name()).collect();
    for (i, name) in names.iter().enumerate() {
        if let Some(j) = names[i + 1..].iter().position(|other| other == name) {
            return Err(ConnectorError::DuplicateColumn {
                path: shown.to_string(),
                column: name.to_string(),
                first: i + 1,
                second: i + j + 2,
            });
        }
    }
    // Read the same sample as text to apply the money-safe rules.
    let text_schema = Arc::new(Schema::new(
        inferred.fields().iter().map(|f| Field::new(f.name(), DataType::Utf8, true)).collect::<Vec<_>>(),
    ));
    let mut builder = ReaderBuilder::new(Arc::clone(&text_schema)).with_format(format).with_batch_size(INFER_RECORDS);
    builder = builder.with_bounds(0, INFER_RECORDS);
    let reader = builder.build(open_maybe_gz(&file.path, kind)?).map_err(read_err)?;
    let mut leading = vec![false; inferred.fields().len()];
    let mut negative_zero = vec![false; inferred.fields().len()];
    let mut scales: Vec<Option<usize>> = vec![Some(0); inferred.fields().len()];
    for batch in reader {
        let batch = batch.map_err(read_err)?;
        for (i, column) in batch.columns().iter().enumerate() {
            let strings = column.as_string::<i32>();
            for v in strings.iter().flatten() {
                if leading_zero(v) {
                    leading[i] = true;
                }
                if negative_zero_integer(v) {
                    negative_zero[i] = true;
                }
                scales[i] = match (scales[i], plain_decimal_scale(v)) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
        }
    }
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let t = match f.data_type() {
                DataType::Int64 | DataType::Float64 if leading[i] => DataType::Utf8,
                DataType::Int64 if negative_zero[i] => DataType::Utf8,
                DataType::Float64 => match scales[i] {
                    Some(s) if s <= 18 => DataType::Decimal128(38, s as i8),
                    _ => DataType::Float64,
                },
                other => other.clone(),
            };
            Field::new(f.name(), t, true)
        })
        .collect();
    Ok(Schema::new(fields))
}

/// The rows of a Parquet source's files, from their footers, after checking that every file holds
/// the first file's columns with the same types: a scan of several files maps columns by name, so
/// a later file without a column would be read with NULLs there (its keys never matching) and one
/// with another type would be cast to the first file's, silently.
fn parquet_schema_and_rows(files: &[FileEntry], shown: &dyn Fn(&FileEntry) -> String) -> Result<u64, ConnectorError> {
    let mut rows = 0u64;
    let mut first: Option<(String, Vec<(String, DataType)>)> = None;
    for f in files {
        let name = f.path.display().to_string();
        let read_err = |e: &dyn std::fmt::Display| ConnectorError::Read { path: name.clone(), message: e.to_string() };
        let file = File::open(&f.path).map_err(|e| ConnectorError::Io { path: name.clone(), source: e })?;
        let reader = SerializedFileReader::new(file).map_err(|e| read_err(&e))?;
        let meta = reader.metadata().file_metadata();
        rows = rows.saturating_add(meta.num_rows().max(0) as u64);
        let schema =
            parquet_to_arrow_schema(meta.schema_descr(), meta.key_value_metadata()).map_err(|e| read_err(&e))?;
        let columns: Vec<(String, DataType)> =
            schema.fields().iter().map(|c| (c.name().clone(), comparable_type(c.data_type()))).collect();
        match &first {
            None => first = Some((shown(f), columns)),
            Some((first_name, expected)) => {
                if let Some(message) = column_difference(expected, &columns) {
                    return Err(ConnectorError::FileMismatch { path: shown(f), first: first_name.clone(), message });
                }
            }
        }
    }
    Ok(rows)
}

/// A Parquet column's type with the width of its string or binary offsets left out: a scan reads
/// `string`, `large_string` and string views alike without loss.
fn comparable_type(t: &DataType) -> DataType {
    match t {
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        t => t.clone(),
    }
}

/// How the columns of a later file differ from the first file's (names and types), if they do.
fn column_difference(expected: &[(String, DataType)], got: &[(String, DataType)]) -> Option<String> {
    let missing: Vec<&str> =
        expected.iter().filter(|(n, _)| !got.iter().any(|(g, _)| g == n)).map(|(n, _)| n.as_str()).collect();
    if !missing.is_empty() {
        return Some(format!("it has no column {}", missing.join(", ")));
    }
    let extra: Vec<&str> =
        got.iter().filter(|(n, _)| !expected.iter().any(|(e, _)| e == n)).map(|(n, _)| n.as_str()).collect();
    if !extra.is_empty() {
        return Some(format!("it has the columns {} the first file lacks", extra.join(", ")));
    }
    expected.iter().find_map(|(n, t)| {
        let (_, other) = got.iter().find(|(g, _)| g == n)?;
        (other != t).then(|| {
            // Arrow's names where Kalla's do not tell the two apart (timestamp units).
            let (mut got, mut want) = (sql_type_name(other), sql_type_name(t));
            if got == want {
                (got, want) = (other.to_string(), t.to_string());
            }
            format!("its column {n} is {got} where the first file's is {want}")
        })
    })
}

/// Checks that every file of a CSV source with headers after the first names the same columns in
/// the same order as the first (`expected`, its header as inference read it): a scan reads fields
/// by position, so a file with its columns in another order would put one column's values under
/// another's name.
fn check_csv_headers(
    first: &str,
    expected: &Schema,
    rest: &[FileEntry],
    kind: Kind,
    opts: &CsvOptions,
    shown: &dyn Fn(&FileEntry) -> String,
) -> Result<(), ConnectorError> {
    if !opts.has_header.unwrap_or(true) || rest.is_empty() {
        return Ok(());
    }
    let format = arrow_format(opts)?;
    let names = |schema: &Schema| schema.fields().iter().map(|c| c.name().clone()).collect::<Vec<_>>();
    let expected = names(expected);
    for f in rest {
        let (schema, _) = format
            .infer_schema(open_maybe_gz(&f.path, kind)?, Some(0))
            .map_err(|e| ConnectorError::Read { path: f.path.display().to_string(), message: e.to_string() })?;
        let got = names(&schema);
        if got != expected {
            return Err(ConnectorError::FileMismatch {
                path: shown(f),
                first: first.to_string(),
                message: format!("its header is {} where the first file's is {}", got.join(","), expected.join(",")),
            });
        }
    }
    Ok(())
}

/// Applies `schema` overrides to an inferred or stored schema. CSV columns may take any listed
/// type; Parquet columns already have types, so an override must name the type they have.
fn apply_overrides(
    base: &Schema,
    overrides: &BTreeMap<String, String>,
    parquet: bool,
) -> Result<Schema, ConnectorError> {
    for name in overrides.keys() {
        if base.field_with_name(name).is_err() {
            return Err(ConnectorError::UnknownSchemaColumn {
                column: name.clone(),
                available: base.fields().iter().map(|f| f.name().clone()).collect(),
            });
        }
    }
    let mut fields = Vec::with_capacity(base.fields().len());
    for f in base.fields() {
        let t = match overrides.get(f.name()) {
            Some(text) => {
                let t = parse_sql_type(text)
                    .map_err(|message| ConnectorError::InvalidSchemaType { column: f.name().clone(), message })?;
                if parquet && &t != f.data_type() {
                    return Err(ConnectorError::InvalidSchemaType {
                        column: f.name().clone(),
                        message: format!(
                            "Parquet column {} is stored as {}; schema may only restate a Parquet column's type",
                            f.name(),
                            crate::types::sql_type_name(f.data_type())
                        ),
                    });
                }
                t
            }
            None => f.data_type().clone(),
        };
        fields.push(Field::new(f.name(), t, true));
    }
    Ok(Schema::new(fields))
}

/// Opens a file source: resolves and lists its files, settles its schema and builds the scan.
pub async fn open_file_source(
    state: &SessionState,
    source: &Source,
    path_text: &str,
    data_root: &Path,
) -> Result<OpenedFileSource, ConnectorError> {
    let path = resolve_under_root(data_root, path_text)?;
    let (kind, files) = list_files(&path, path_text, source.format)?;
    let Some(first) = files.first() else {
        return Err(ConnectorError::EmptyDirectory { path: path_text.to_string() });
    };
    let urls = files.iter().map(|f| ListingTableUrl::parse(f.path.to_string_lossy())).collect::<Result<Vec<_>, _>>()?;
    let root = data_root.canonicalize().unwrap_or_else(|_| data_root.to_path_buf());
    let shown = |f: &FileEntry| f.path.strip_prefix(&root).unwrap_or(&f.path).display().to_string();
    match kind {
        Kind::Parquet => {
            // Strings are read as `Utf8View`, DataFusion's Parquet default (the session's
            // `schema_force_view_types = false` governs only what `read_parquet` reads back).
            // Measured at 2M × 1.9M (docs/benchmarks.md, "String views"): read as `Utf8`, local
            // jobs took 9 % longer and cluster jobs were no faster, though their shuffles are
            // smaller.
            let format = ParquetFormat::default().with_force_view_types(true);
            let options = ListingOptions::new(Arc::new(format)).with_file_extension("");
            let first_url = ListingTableUrl::parse(first.path.to_string_lossy())?;
            let stored = options.infer_schema(state, &first_url).await?;
            let final_schema = Arc::new(apply_overrides(&stored, &source.schema, true)?);
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(Arc::clone(&final_schema));
            let provider = Arc::new(ListingTable::try_new(config)?);
            let projection = final_schema.fields().iter().map(|f| col_exact(f.name())).collect();
            let expected_rows = Some(parquet_schema_and_rows(&files, &shown)?);
            Ok(OpenedFileSource {
                provider,
                projection,
                schema: final_schema,
                format: FileFormat::Parquet,
                files,
                expected_rows,
            })
        }
        Kind::Csv | Kind::CsvGz => {
            let inferred = infer_csv(first, &shown(first), kind, &source.csv)?;
            check_csv_headers(&shown(first), &inferred, &files[1..], kind, &source.csv, &shown)?;
            let final_schema = Arc::new(apply_overrides(&inferred, &source.schema, false)?);
            // Decimal columns, and numeric columns whose type was inferred, are read as text and
            // converted strictly (`__kalla_decimal`, `__kalla_inferred`). DataFusion 55's CSV scan
            // ignores null patterns, so with a `null_value` every column is read as text, the
            // pattern is turned into NULL, and the text is converted (a value that does not
            // convert fails the job rather than becoming NULL).
            let all_text = source.csv.null_value.is_some();
            let strictly_inferred = |f: &Field| {
                !source.schema.contains_key(f.name())
                    && matches!(f.data_type(), DataType::Int64 | DataType::Float64 | DataType::Decimal128(..))
            };
            let read_schema = Schema::new(
                final_schema
                    .fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        DataType::Decimal128(..) | DataType::Decimal256(..) => {
                            Field::new(f.name(), DataType::Utf8, true)
                        }
                        _ if all_text || strictly_inferred(f) => Field::new(f.name(), DataType::Utf8, true),
                        t => Field::new(f.name(), t.clone(), true),
                    })
                    .collect::<Vec<_>>(),
            );
            let parse = Arc::new(parse_decimal_udf());
            let inferred_udf = Arc::new(inferred_udf());
            let file_refs: Vec<CsvFileRef> =
                files.iter().map(|f| CsvFileRef { path: f.path.display().to_string(), shown: shown(f) }).collect();
            let mut projection = Vec::with_capacity(final_schema.fields().len());
            for (index, f) in final_schema.fields().iter().enumerate() {
                let raw = match &source.csv.null_value {
                    Some(null) => nullif(col_exact(f.name()), lit(null.clone())),
                    None => col_exact(f.name()),
                };
                let value = match f.data_type() {
                    _ if strictly_inferred(f) => {
                        let column = InferredColumn {
                            source: source.alias.clone(),
                            column: f.name().clone(),
                            index,
                            files: file_refs.clone(),
                            delimiter: csv_byte(&source.csv.delimiter, b','),
                            quote: csv_byte(&source.csv.quote, b'"'),
                            escape: source.csv.escape.as_ref().map(|e| csv_byte(&Some(e.clone()), b'\\')),
                            has_header: source.csv.has_header.unwrap_or(true),
                            null_value: source.csv.null_value.clone(),
                        };
                        let context = serde_json::to_string(&column)
                            .map_err(|e| ConnectorError::InvalidOption { message: e.to_string() })?;
                        inferred_udf.call(vec![raw, lit(sql_type_name(f.data_type())), lit(context)])
                    }
                    DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => parse.call(vec![
                        raw,
                        lit(*p as i64),
                        lit(*s as i64),
                        lit(format!("{}.{}", source.alias, f.name())),
                    ]),
                    DataType::Utf8 => raw,
                    t if all_text => cast(raw, t.clone()),
                    _ => raw,
                };
                projection.push(value.alias(f.name()));
            }
            let opts = &source.csv;
            let df_opts = DfCsvOptions {
                has_header: Some(opts.has_header.unwrap_or(true)),
                delimiter: csv_byte(&opts.delimiter, b','),
                quote: csv_byte(&opts.quote, b'"'),
                escape: opts.escape.as_ref().map(|e| csv_byte(&Some(e.clone()), b'\\')),
                ..Default::default()
            };
            let compression =
                if kind == Kind::CsvGz { FileCompressionType::GZIP } else { FileCompressionType::UNCOMPRESSED };
            let format = CsvFormat::default().with_options(df_opts).with_file_compression_type(compression);
            let options = ListingOptions::new(Arc::new(format)).with_file_extension("");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(Arc::new(read_schema));
            let provider = Arc::new(ListingTable::try_new(config)?);
            let expected_rows = estimate_csv_rows(&files, kind, opts.has_header.unwrap_or(true));
            Ok(OpenedFileSource {
                provider,
                projection,
                schema: final_schema,
                format: FileFormat::Csv,
                files,
                expected_rows,
            })
        }
    }
}

/// How much of the first CSV file [`estimate_csv_rows`] reads.
const ROW_SAMPLE_BYTES: usize = 1 << 20;

/// Counts the bytes read through it (the compressed bytes under a gzip decoder).
struct CountingReader<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The rows a CSV source holds, estimated without reading it: the first MiB of the first file
/// (decompressed) gives lines per stored byte, which is scaled to the stored size of all files.
/// Exact for a single file smaller than the sample (quoted line breaks aside). Used for progress,
/// which never claims 1.0 before the job is done, and to size a local job's partitions. `None`
/// when the sample cannot be read.
fn estimate_csv_rows(files: &[FileEntry], kind: Kind, has_header: bool) -> Option<u64> {
    let first = files.first()?;
    let count = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let file = CountingReader { inner: File::open(&first.path).ok()?, count: std::rc::Rc::clone(&count) };
    let mut reader: Box<dyn Read> = match kind {
        Kind::CsvGz => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        _ => Box::new(file),
    };
    let mut sample = Vec::with_capacity(ROW_SAMPLE_BYTES);
    reader.by_ref().take(ROW_SAMPLE_BYTES as u64).read_to_end(&mut sample).ok()?;
    let whole_file = sample.len() < ROW_SAMPLE_BYTES;
    let mut lines = sample.iter().filter(|b| **b == b'\n').count() as u64;
    if whole_file && sample.last().is_some_and(|b| *b != b'\n') {
        lines += 1;
    }
    let headers = if has_header { files.len() as u64 } else { 0 };
    if whole_file && files.len() == 1 {
        return Some(lines.saturating_sub(headers));
    }
    let stored_sample = count.get().max(1);
    let stored_total: u64 = files.iter().map(|f| f.size).sum();
    let estimate = (lines as f64) * (stored_total as f64) / (stored_sample as f64);
    Some((estimate as u64).saturating_sub(headers))
}

/// Finds the first line of a CSV file (gzip by extension) that is not UTF-8: `Ok(Some(line))`,
/// 1-based. Used to name the file and line when a read fails on bad bytes, so the happy path
/// pays nothing for it.
pub fn first_invalid_utf8_line(path: &Path) -> std::io::Result<Option<u64>> {
    use std::io::BufRead;
    let gz = path.to_string_lossy().to_ascii_lowercase().ends_with(".gz");
    let file = File::open(path)?;
    let mut reader: Box<dyn BufRead> = if gz {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut line = Vec::with_capacity(4096);
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        number += 1;
        if std::str::from_utf8(&line).is_err() {
            return Ok(Some(number));
        }
    }
}

/// A column reference that keeps the name exactly (no identifier normalisation).
pub fn col_exact(name: &str) -> Expr {
    Expr::Column(datafusion::common::Column::new_unqualified(name))
}

/// The UDF used for exact CSV decimals, for registration in sessions and codecs.
pub fn parse_decimal_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ParseDecimalUdf::default())
}

/// The UDF that reads CSV columns of inferred numeric types strictly, for registration in
/// sessions and codecs.
pub fn inferred_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(InferredUdf::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zeros_and_plain_decimals_are_recognised() {
        assert!(leading_zero("007"));
        assert!(leading_zero("-01"));
        assert!(!leading_zero("0"));
        assert!(!leading_zero("0.50"));
        assert_eq!(plain_decimal_scale("12.50"), Some(2));
        assert_eq!(plain_decimal_scale("-3"), Some(0));
        assert_eq!(plain_decimal_scale("1e5"), None);
    }

    #[test]
    fn escaping_paths_are_refused_even_when_missing() {
        let root = tempfile::tempdir().unwrap();
        let e = resolve_under_root(root.path(), "../../etc/passwd").unwrap_err();
        assert!(matches!(e, ConnectorError::OutsideRoot { .. }), "{e}");
        let e = resolve_under_root(root.path(), "../nope/x.csv").unwrap_err();
        assert!(matches!(e, ConnectorError::OutsideRoot { .. }), "{e}");
        let e = resolve_under_root(root.path(), "missing.csv").unwrap_err();
        assert!(matches!(e, ConnectorError::NotFound { .. }), "{e}");
    }

    fn entry(path: &Path) -> FileEntry {
        FileEntry { path: path.to_path_buf(), size: std::fs::metadata(path).unwrap().len(), modified: None }
    }

    #[tokio::test]
    async fn parquet_sources_read_strings_as_views_whatever_the_session_says() {
        use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("reference", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(StringArray::from(vec![Some("INV-1"), None]))],
        )
        .unwrap();
        let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
            File::create(dir.path().join("s.parquet")).unwrap(),
            schema,
            None,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let mut config = datafusion::prelude::SessionConfig::new();
        config.options_mut().execution.parquet.schema_force_view_types = false;
        let state = datafusion::prelude::SessionContext::new_with_config(config).state();
        let source = Source {
            alias: "s".into(),
            location: kalla_recipe::SourceLocation::File("s.parquet".into()),
            format: None,
            csv: CsvOptions::default(),
            schema: BTreeMap::new(),
            key: None,
            filters: vec![],
            field: "sources[0]".into(),
        };
        let opened = open_file_source(&state, &source, "s.parquet", dir.path()).await.unwrap();
        let types: Vec<DataType> = opened.schema.fields().iter().map(|f| f.data_type().clone()).collect();
        assert_eq!(types, vec![DataType::Int64, DataType::Utf8View]);
    }

    #[test]
    fn csv_row_estimate_is_exact_for_a_small_file_and_close_for_large_ones() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.csv");
        std::fs::write(&small, "id,amount\n1,2.50\n2,3.00").unwrap();
        assert_eq!(estimate_csv_rows(&[entry(&small)], Kind::Csv, true), Some(2));
        assert_eq!(estimate_csv_rows(&[entry(&small)], Kind::Csv, false), Some(3));

        // 200,000 rows of 10–15 bytes: larger than the sample, so the estimate is scaled.
        let large = dir.path().join("large.csv");
        let mut text = String::from("id,amount\n");
        for i in 0..200_000u64 {
            text.push_str(&format!("{i},{}.{:02}\n", i % 997, i % 100));
        }
        std::fs::write(&large, &text).unwrap();
        let estimate = estimate_csv_rows(&[entry(&large)], Kind::Csv, true).unwrap();
        assert!((180_000..=220_000).contains(&estimate), "{estimate}");

        let gz = dir.path().join("large.csv.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, text.as_bytes()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let estimate = estimate_csv_rows(&[entry(&gz)], Kind::CsvGz, true).unwrap();
        assert!((150_000..=250_000).contains(&estimate), "{estimate}");
    }
}
