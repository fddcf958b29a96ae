//! The error vocabulary shared by the engine, the HTTP API and callbacks.
//!
//! Every failure a caller can see carries one [`ErrorCode`] from a single published enum
//! (SPEC section 3), a human message, and — when the caller can fix it — the JSON path of the
//! request field at fault. Keeping the enum in this I/O-free crate lets the engine, the daemon and
//! the OpenAPI document agree on it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Machine-readable error codes of the Kalla API (serialized in `snake_case`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not JSON.
    BadJson,
    /// A field is missing, unknown, of the wrong type or out of range.
    InvalidField,
    /// Missing or wrong bearer token.
    Unauthorized,
    /// The request body is over the size limit.
    PayloadTooLarge,
    /// The job queue is full.
    QueueFull,
    /// The `run_id` is already used by a different request.
    RunIdConflict,
    /// No such job or endpoint.
    NotFound,
    /// The endpoint does not take this HTTP method.
    MethodNotAllowed,
    /// `match_sql` does not parse or does not plan.
    InvalidSql,
    /// `match_sql` is not exactly one SELECT/WITH query.
    ForbiddenStatement,
    /// `match_sql` names a table that is not a source alias.
    UnknownTable,
    /// `match_sql`, a key or a filter names a column the source does not have.
    UnknownColumn,
    /// A source key cannot be followed to the output columns of `match_sql`.
    UntraceableKey,
    /// Two output columns of `match_sql` share a name.
    DuplicateOutputColumn,
    /// A filter does not fit its column.
    InvalidFilter,
    /// A source file, directory or table does not exist.
    SourceNotFound,
    /// A source path resolves outside the data root.
    SourceOutsideRoot,
    /// The source kind is not supported (yet).
    UnsupportedSource,
    /// A source cannot be reached (network, authentication).
    SourceUnreachable,
    /// Reading a source failed while the job ran (bad bytes, a value that does not fit its type).
    SourceReadFailed,
    /// `output_path` resolves outside the output root.
    OutputOutsideRoot,
    /// `output_path` exists and is not empty.
    OutputExists,
    /// The plan cannot run on the cluster.
    NotDistributable,
    /// No executor is alive for a cluster job.
    NoExecutors,
    /// The job was cancelled.
    Cancelled,
    /// The daemon is shutting down.
    ShuttingDown,
    /// The job ran past its timeout.
    Timeout,
    /// The daemon restarted while the job was queued or running.
    DaemonRestarted,
    /// The job needed more memory than `--memory-limit` grants and could not spill.
    MemoryLimitExceeded,
    /// A fault of kallad itself or of its environment (disk full, bug).
    Internal,
}

impl ErrorCode {
    /// The wire name of this code (`"invalid_sql"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::RunIdConflict => "run_id_conflict",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::InvalidSql => "invalid_sql",
            ErrorCode::ForbiddenStatement => "forbidden_statement",
            ErrorCode::UnknownTable => "unknown_table",
            ErrorCode::UnknownColumn => "unknown_column",
            ErrorCode::UntraceableKey => "untraceable_key",
            ErrorCode::DuplicateOutputColumn => "duplicate_output_column",
            ErrorCode::InvalidFilter => "invalid_filter",
            ErrorCode::SourceNotFound => "source_not_found",
            ErrorCode::SourceOutsideRoot => "source_outside_root",
            ErrorCode::UnsupportedSource => "unsupported_source",
            ErrorCode::SourceUnreachable => "source_unreachable",
            ErrorCode::SourceReadFailed => "source_read_failed",
            ErrorCode::OutputOutsideRoot => "output_outside_root",
            ErrorCode::OutputExists => "output_exists",
            ErrorCode::NotDistributable => "not_distributable",
            ErrorCode::NoExecutors => "no_executors",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Timeout => "timeout",
            ErrorCode::DaemonRestarted => "daemon_restarted",
            ErrorCode::MemoryLimitExceeded => "memory_limit_exceeded",
            ErrorCode::Internal => "internal",
        }
    }

    /// True when the caller can fix the request (an HTTP 4xx at submission).
    pub fn is_caller_error(self) -> bool {
        !matches!(
            self,
            ErrorCode::Internal
                | ErrorCode::Cancelled
                | ErrorCode::ShuttingDown
                | ErrorCode::Timeout
                | ErrorCode::DaemonRestarted
                | ErrorCode::MemoryLimitExceeded
                | ErrorCode::NoExecutors
                | ErrorCode::QueueFull
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as the API shows it: code, human message, and the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, utoipa::ToSchema)]
#[error("{code}: {message}")]
pub struct KallaError {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A message for a human; never contains a secret.
    pub message: String,
    /// The JSON path of the request field at fault (`sources[1].filters[0].value`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

impl KallaError {
    /// An error without a field.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        KallaError { code, message: message.into(), field: None }
    }

    /// An error pointing at a request field.
    pub fn at(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        KallaError { code, message: message.into(), field: Some(field.into()) }
    }

    /// Sets the field if none is set yet.
    pub fn or_field(mut self, field: impl Into<String>) -> Self {
        if self.field.is_none() {
            self.field = Some(field.into());
        }
        self
    }
}

/// The wire shape `{"error": {...}}` of every API error.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: KallaError,
}
