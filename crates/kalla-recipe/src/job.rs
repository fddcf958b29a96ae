//! The job request of SPEC 3.1 and its static validation.
//!
//! Parsing is strict (`deny_unknown_fields`): a misspelt field is an error with its JSON path,
//! never silently ignored. [`JobRequest::parse`] returns a [`ValidatedJob`], in which every check
//! that needs no I/O has passed: UUID, aliases, keys, filter shapes, source URI kinds. Checks that
//! need files, databases or a query planner live in the engine.

use crate::error::{ErrorCode, KallaError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use uuid::Uuid;

/// A job request as the API receives it (SPEC 3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The idempotency key, a UUID.
    pub run_id: String,
    /// Base URL of the app's callback endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The user's matching query: one SELECT/WITH.
    pub match_sql: String,
    /// The sources, at least one.
    pub sources: Vec<SourceSpec>,
    /// Compatibility form of per-source keys: `{"alias": ["col", …]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_keys: Option<BTreeMap<String, Vec<String>>>,
    /// Where the outputs go, relative to the output root or absolute inside it.
    pub output_path: String,
}

/// One source of a job. `Debug` redacts the URI's password.
#[derive(Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// The table name `match_sql` uses: a plain SQL identifier.
    pub alias: String,
    /// A Postgres URL, a file path or `file://` URL.
    pub uri: String,
    /// Overrides the format the file extension implies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FileFormat>,
    /// CSV dialect options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvOptions>,
    /// Column types to read columns as: `{column: SQL type}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<BTreeMap<String, String>>,
    /// The source's key columns; absent means no unmatched output for this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<Vec<String>>,
    /// Row filters applied to the source before matching.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterSpec>,
}

impl std::fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSpec")
            .field("alias", &self.alias)
            .field("uri", &crate::redact::redact_uri(&self.uri))
            .field("format", &self.format)
            .field("csv", &self.csv)
            .field("schema", &self.schema)
            .field("primary_key", &self.primary_key)
            .field("filters", &self.filters)
            .finish()
    }
}

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma (or other delimiter) separated values, optionally gzip-compressed.
    Csv,
    /// Apache Parquet.
    Parquet,
}

/// CSV dialect options; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// One ASCII character, default `,`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// One ASCII character, default `"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
    /// One ASCII character; default none (quotes are escaped by doubling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escape: Option<String>,
    /// Whether the first line names the columns, default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_header: Option<bool>,
    /// The text that means NULL, default the empty field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_value: Option<String>,
}

/// A filter `{column, op, value}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// The source column.
    pub column: String,
    /// The comparison.
    pub op: FilterOp,
    /// A scalar or an array of scalars, as `op` needs; absent for the null tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// Filter operators of SPEC 3.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    /// `=`
    Eq,
    /// `<>`
    Neq,
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `<`
    Lt,
    /// `<=`
    Lte,
    /// `BETWEEN a AND b`, inclusive.
    Between,
    /// `IN (…)`.
    In,
    /// SQL `LIKE` with `%` and `_`.
    Like,
    /// `IS NULL`.
    IsNull,
    /// `IS NOT NULL`.
    IsNotNull,
}

/// A scalar filter value, exactly as given (numbers keep their decimal text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterScalar {
    /// A JSON string.
    Text(String),
    /// A JSON number, as its exact decimal text.
    Number(String),
    /// A JSON boolean.
    Bool(bool),
}

/// The value of a filter, shaped for its operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterValue {
    /// No value (`is_null`, `is_not_null`).
    None,
    /// One scalar.
    One(FilterScalar),
    /// Two scalars (`between`).
    Range(FilterScalar, FilterScalar),
    /// A non-empty list (`in`).
    List(Vec<FilterScalar>),
}

/// A filter whose value has the shape its operator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The source column.
    pub column: String,
    /// The operator.
    pub op: FilterOp,
    /// The value.
    pub value: FilterValue,
    /// JSON path of this filter in the request, for error messages.
    pub field: String,
}

/// Where a source's data lives. `Debug` redacts a Postgres URL's password.
#[derive(Clone, PartialEq, Eq)]
pub enum SourceLocation {
    /// A file or directory path (a `file://` URL is turned into its path).
    File(String),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl std::fmt::Debug for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceLocation::File(p) => f.debug_tuple("File").field(p).finish(),
            SourceLocation::Postgres(u) => f.debug_tuple("Postgres").field(&crate::redact::redact_uri(u)).finish(),
        }
    }
}

/// A source after static validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The alias as given.
    pub alias: String,
    /// Where the data is.
    pub location: SourceLocation,
    /// Format override.
    pub format: Option<FileFormat>,
    /// CSV options.
    pub csv: CsvOptions,
    /// Column type overrides, column → SQL type text.
    pub schema: BTreeMap<String, String>,
    /// Key columns; `None` when the source has no key.
    pub key: Option<Vec<String>>,
    /// Filters.
    pub filters: Vec<Filter>,
    /// JSON path of this source (`sources[0]`).
    pub field: String,
}

/// A job request that passed every check needing no I/O.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJob {
    /// The run id.
    pub run_id: Uuid,
    /// Callback base URL.
    pub callback_url: Option<String>,
    /// The query.
    pub match_sql: String,
    /// Sources in request order.
    pub sources: Vec<Source>,
    /// The requested output path, as given.
    pub output_path: String,
    /// The request as parsed, for the audit trail and idempotency.
    pub request: JobRequest,
}

impl JobRequest {
    /// Parses a request body, reporting the JSON path of the first field at fault.
    pub fn from_json(body: &[u8]) -> Result<JobRequest, KallaError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| KallaError::new(ErrorCode::BadJson, format!("the body is not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Parses an already decoded JSON value.
    pub fn from_value(value: Value) -> Result<JobRequest, KallaError> {
        serde_path_to_error::deserialize::<_, JobRequest>(value).map_err(|e| {
            let mut path = e.path().to_string();
            let message = e.inner().to_string();
            if path == "." {
                path.clear();
            }
            // A missing or unknown field is reported at the object holding it: name the field.
            let named = ["missing field `", "unknown field `"]
                .iter()
                .find_map(|p| message.strip_prefix(p))
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name);
            if let Some(name) = named
                && !path.ends_with(name)
            {
                path = if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
            }
            if path.is_empty() {
                KallaError::new(ErrorCode::InvalidField, message)
            } else {
                KallaError::at(ErrorCode::InvalidField, path, message)
            }
        })
    }

    /// Validates everything that needs no I/O.
    pub fn validate(self) -> Result<ValidatedJob, KallaError> {
        let run_id = Uuid::parse_str(&self.run_id).map_err(|_| {
            KallaError::at(
                ErrorCode::InvalidField,
                "run_id",
                format!("run_id must be a UUID, got {:?}", truncate(&self.run_id)),
            )
        })?;
        if self.match_sql.trim().is_empty() {
            return Err(KallaError::at(ErrorCode::InvalidField, "match_sql", "match_sql is empty"));
        }
        if self.output_path.trim().is_empty() {
            return Err(KallaError::at(ErrorCode::InvalidField, "output_path", "output_path is empty"));
        }
        if let Some(url) = &self.callback_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(KallaError::at(
                ErrorCode::InvalidField,
                "callback_url",
                "callback_url must be an http:// or https:// URL",
            ));
        }
        if self.sources.is_empty() {
            return Err(KallaError::at(ErrorCode::InvalidField, "sources", "at least one source is required"));
        }
        let mut sources = Vec::with_capacity(self.sources.len());
        for (i, spec) in self.sources.iter().enumerate() {
            sources.push(validate_source(i, spec)?);
        }
        for (i, s) in sources.iter().enumerate() {
            if sources[..i].iter().any(|o| o.alias.eq_ignore_ascii_case(&s.alias)) {
                return Err(KallaError::at(
                    ErrorCode::InvalidField,
                    format!("{}.alias", s.field),
                    format!("alias {:?} is used by two sources (aliases are case-insensitive)", s.alias),
                ));
            }
        }
        if let Some(map) = &self.primary_keys {
            for (alias, cols) in map {
                let field = format!("primary_keys.{alias}");
                let Some(source) = sources.iter_mut().find(|s| &s.alias == alias) else {
                    return Err(KallaError::at(
                        ErrorCode::InvalidField,
                        field,
                        format!("primary_keys names {alias:?}, which is not a source alias"),
                    ));
                };
                check_key(cols, &field)?;
                match &source.key {
                    Some(existing) if existing != cols => {
                        return Err(KallaError::at(
                            ErrorCode::InvalidField,
                            field,
                            format!("source {alias:?} has primary_key {existing:?} and primary_keys gives {cols:?}"),
                        ));
                    }
                    _ => source.key = Some(cols.clone()),
                }
            }
        }
        Ok(ValidatedJob {
            run_id,
            callback_url: self.callback_url.clone(),
            match_sql: self.match_sql.clone(),
            sources,
            output_path: self.output_path.clone(),
            request: self,
        })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// True for a plain SQL identifier: a letter or `_`, then letters, digits or `_`.
pub fn is_plain_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

fn check_key(cols: &[String], field: &str) -> Result<(), KallaError> {
    if cols.is_empty() {
        return Err(KallaError::at(
            ErrorCode::InvalidField,
            field,
            "a key needs at least one column (omit it for a source without key)",
        ));
    }
    for (i, c) in cols.iter().enumerate() {
        if c.is_empty() {
            return Err(KallaError::at(ErrorCode::InvalidField, format!("{field}[{i}]"), "empty key column name"));
        }
        if cols[..i].contains(c) {
            return Err(KallaError::at(
                ErrorCode::InvalidField,
                format!("{field}[{i}]"),
                format!("key column {c:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

fn validate_source(i: usize, spec: &SourceSpec) -> Result<Source, KallaError> {
    let field = format!("sources[{i}]");
    if !is_plain_identifier(&spec.alias) {
        return Err(KallaError::at(
            ErrorCode::InvalidField,
            format!("{field}.alias"),
            format!(
                "alias {:?} is not a plain SQL identifier (letters, digits and _, not starting with a digit)",
                truncate(&spec.alias)
            ),
        ));
    }
    if spec.alias.to_ascii_lowercase().starts_with("__kalla") {
        return Err(KallaError::at(
            ErrorCode::InvalidField,
            format!("{field}.alias"),
            "aliases starting with __kalla are reserved",
        ));
    }
    let location = classify_uri(&spec.uri).map_err(|e| e.or_field(format!("{field}.uri")))?;
    if let Some(key) = &spec.primary_key {
        check_key(key, &format!("{field}.primary_key"))?;
    }
    if let Some(csv) = &spec.csv {
        for (name, v) in [("delimiter", &csv.delimiter), ("quote", &csv.quote), ("escape", &csv.escape)] {
            if let Some(v) = v
                && (v.len() != 1 || !v.is_ascii())
            {
                return Err(KallaError::at(
                    ErrorCode::InvalidField,
                    format!("{field}.csv.{name}"),
                    format!("csv.{name} must be exactly one ASCII character"),
                ));
            }
        }
    }
    let mut filters = Vec::with_capacity(spec.filters.len());
    for (j, f) in spec.filters.iter().enumerate() {
        filters.push(validate_filter(&format!("{field}.filters[{j}]"), f)?);
    }
    Ok(Source {
        alias: spec.alias.clone(),
        location,
        format: spec.format,
        csv: spec.csv.clone().unwrap_or_default(),
        schema: spec.schema.clone().unwrap_or_default(),
        key: spec.primary_key.clone(),
        filters,
        field,
    })
}

fn classify_uri(uri: &str) -> Result<SourceLocation, KallaError> {
    if uri.trim().is_empty() {
        return Err(KallaError::new(ErrorCode::InvalidField, "uri is empty"));
    }
    let lower = uri.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return Ok(SourceLocation::Postgres(uri.to_string()));
    }
    if let Some(path) = uri.strip_prefix("file://") {
        if path.is_empty() {
            return Err(KallaError::new(ErrorCode::InvalidField, "file:// URL without a path"));
        }
        return Ok(SourceLocation::File(path.to_string()));
    }
    if let Some(idx) = lower.find("://") {
        let scheme = &lower[..idx];
        let message = if scheme == "s3" {
            "s3:// sources are not supported yet".to_string()
        } else {
            format!("{scheme}:// sources are not supported; use postgres://, a file path or file://")
        };
        return Err(KallaError::new(ErrorCode::UnsupportedSource, message));
    }
    Ok(SourceLocation::File(uri.to_string()))
}

fn scalar(value: &Value, field: &str) -> Result<FilterScalar, KallaError> {
    match value {
        Value::String(s) => Ok(FilterScalar::Text(s.clone())),
        Value::Number(n) => Ok(FilterScalar::Number(n.to_string())),
        Value::Bool(b) => Ok(FilterScalar::Bool(*b)),
        other => Err(KallaError::at(
            ErrorCode::InvalidFilter,
            field,
            format!("a filter value must be a string, number or boolean, got {}", json_kind(other)),
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn validate_filter(field: &str, f: &FilterSpec) -> Result<Filter, KallaError> {
    let vfield = format!("{field}.value");
    if f.column.is_empty() {
        return Err(KallaError::at(ErrorCode::InvalidFilter, format!("{field}.column"), "empty column name"));
    }
    let value = match f.op {
        FilterOp::IsNull | FilterOp::IsNotNull => match &f.value {
            None | Some(Value::Null) => FilterValue::None,
            Some(_) => {
                return Err(KallaError::at(ErrorCode::InvalidFilter, vfield, "is_null and is_not_null take no value"));
            }
        },
        FilterOp::Between => match &f.value {
            Some(Value::Array(items)) if items.len() == 2 => FilterValue::Range(
                scalar(&items[0], &format!("{vfield}[0]"))?,
                scalar(&items[1], &format!("{vfield}[1]"))?,
            ),
            _ => {
                return Err(KallaError::at(
                    ErrorCode::InvalidFilter,
                    vfield,
                    "between needs an array of two values [low, high]",
                ));
            }
        },
        FilterOp::In => match &f.value {
            Some(Value::Array(items)) if !items.is_empty() => FilterValue::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(k, v)| scalar(v, &format!("{vfield}[{k}]")))
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                return Err(KallaError::at(ErrorCode::InvalidFilter, vfield, "in needs a non-empty array of values"));
            }
        },
        FilterOp::Like => match &f.value {
            Some(Value::String(s)) => FilterValue::One(FilterScalar::Text(s.clone())),
            _ => {
                return Err(KallaError::at(ErrorCode::InvalidFilter, vfield, "like needs a string pattern"));
            }
        },
        _ => match &f.value {
            Some(v) => FilterValue::One(scalar(v, &vfield)?),
            None => {
                return Err(KallaError::at(ErrorCode::InvalidFilter, vfield, "this operator needs a value"));
            }
        },
    };
    Ok(Filter { column: f.column.clone(), op: f.op, value, field: field.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "run_id": "5c1f6a3e-2b1d-4c1e-9d53-0d6f6c2b8a10",
            "match_sql": "SELECT a.id FROM a",
            "sources": [{"alias": "a", "uri": "a.csv", "primary_key": ["id"]}],
            "output_path": "out"
        })
    }

    fn parse(v: Value) -> Result<ValidatedJob, KallaError> {
        JobRequest::from_value(v)?.validate()
    }

    #[test]
    fn unknown_field_is_refused_with_its_path() {
        let mut v = base();
        v["sources"][0]["alais"] = json!("x");
        let e = parse(v).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(e.field.as_deref(), Some("sources[0].alais"));
        assert!(e.message.contains("unknown field `alais`"), "{}", e.message);
    }

    /// SPEC 3.1: everything the caller can fix is a 422 with `field`, a missing field too.
    #[test]
    fn a_missing_or_unknown_field_is_named_where_it_belongs() {
        for (edit, field) in [
            (
                Box::new(|v: &mut Value| drop(v.as_object_mut().unwrap().remove("match_sql")))
                    as Box<dyn Fn(&mut Value)>,
                "match_sql",
            ),
            (
                Box::new(|v: &mut Value| drop(v["sources"][0].as_object_mut().unwrap().remove("alias"))),
                "sources[0].alias",
            ),
            (Box::new(|v: &mut Value| v["extra"] = json!(1)), "extra"),
        ] {
            let mut v = base();
            edit(&mut v);
            let e = parse(v).unwrap_err();
            assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidField, Some(field)), "{}", e.message);
        }
    }

    #[test]
    fn wrong_type_names_the_field() {
        let mut v = base();
        v["sources"][0]["primary_key"] = json!("id");
        let e = parse(v).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sources[0].primary_key"));
    }

    #[test]
    fn non_uuid_run_id_is_invalid_field() {
        let mut v = base();
        v["run_id"] = json!("run-1");
        let e = parse(v).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidField, Some("run_id")));
    }

    #[test]
    fn filter_numbers_keep_their_exact_text() {
        let mut v = base();
        v["sources"][0]["filters"] = serde_json::from_str(
            r#"[{"column": "amount", "op": "between", "value": [0.1, 100000000000000000000.05]}]"#,
        )
        .unwrap();
        let job = parse(v).unwrap();
        assert_eq!(
            job.sources[0].filters[0].value,
            FilterValue::Range(
                FilterScalar::Number("0.1".into()),
                FilterScalar::Number("100000000000000000000.05".into())
            )
        );
    }

    #[test]
    fn filter_shapes_are_checked_per_operator() {
        for (op, value) in [
            ("between", json!([1])),
            ("in", json!([])),
            ("like", json!(5)),
            ("is_null", json!(1)),
            ("eq", json!({"a": 1})),
            ("eq", json!(null)),
        ] {
            let mut v = base();
            v["sources"][0]["filters"] = json!([{"column": "c", "op": op, "value": value}]);
            let e = parse(v).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidFilter, "{op} {value}");
            assert!(e.field.as_deref().unwrap_or("").starts_with("sources[0].filters[0].value"));
        }
    }

    #[test]
    fn top_level_primary_keys_are_merged_and_conflicts_refused() {
        let mut v = base();
        v["sources"][0].as_object_mut().unwrap().remove("primary_key");
        v["primary_keys"] = json!({"a": ["id", "line"]});
        let job = parse(v.clone()).unwrap();
        assert_eq!(job.sources[0].key, Some(vec!["id".to_string(), "line".to_string()]));
        v["sources"][0]["primary_key"] = json!(["id"]);
        assert_eq!(parse(v.clone()).unwrap_err().field.as_deref(), Some("primary_keys.a"));
        v["primary_keys"] = json!({"zz": ["id"]});
        assert_eq!(parse(v).unwrap_err().code, ErrorCode::InvalidField);
    }

    #[test]
    fn aliases_must_be_plain_and_unique() {
        let mut v = base();
        v["sources"][0]["alias"] = json!("a b");
        assert_eq!(parse(v).unwrap_err().field.as_deref(), Some("sources[0].alias"));
        let mut v = base();
        v["sources"] = json!([{"alias": "a", "uri": "a.csv"}, {"alias": "A", "uri": "b.csv"}]);
        assert_eq!(parse(v).unwrap_err().field.as_deref(), Some("sources[1].alias"));
    }

    #[test]
    fn uri_kinds_are_classified() {
        assert_eq!(classify_uri("file:///d/x.csv").unwrap(), SourceLocation::File("/d/x.csv".into()));
        assert!(matches!(classify_uri("postgresql://u@h/db?table=t").unwrap(), SourceLocation::Postgres(_)));
        assert_eq!(classify_uri("s3://b/k.csv").unwrap_err().code, ErrorCode::UnsupportedSource);
        assert_eq!(classify_uri("http://x/y.csv").unwrap_err().code, ErrorCode::UnsupportedSource);
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let request = serde_json::json!({
            "run_id": "5c1f6a3e-2b1d-4c1e-9d53-0d6f6c2b8a10",
            "match_sql": "SELECT * FROM t",
            "sources": [{"alias": "t", "uri": "postgres://kalla:hunter2@db:5432/x?table=t"}],
            "output_path": "out"
        });
        let parsed = JobRequest::from_value(request).unwrap();
        assert!(!format!("{parsed:?}").contains("hunter2"));
        let job = parsed.validate().unwrap();
        let shown = format!("{job:?}");
        assert!(!shown.contains("hunter2") && shown.contains("kalla:***@db"), "{shown}");
    }
}
