//! Errors of the connectors crate, and how each maps to an API error code.

use datafusion::common::DataFusionError;
use kalla_recipe::{ErrorCode, KallaError};

/// What can go wrong while opening or describing a source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The path does not exist.
    #[error("source {path:?} does not exist")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// The path resolves outside the data root.
    #[error("source {path:?} is outside the data root")]
    OutsideRoot {
        /// The path as given.
        path: String,
    },
    /// The file's format cannot be told from its name.
    #[error("cannot tell the format of {path:?}: name it .csv, .csv.gz or .parquet, or set \"format\"")]
    UnknownFormat {
        /// The path as given.
        path: String,
    },
    /// A directory holds files of different formats.
    #[error("directory {path:?} mixes file formats; a source directory must hold one kind of file")]
    MixedDirectory {
        /// The path as given.
        path: String,
    },
    /// A directory holds no data file.
    #[error("directory {path:?} holds no .csv, .csv.gz or .parquet file")]
    EmptyDirectory {
        /// The path as given.
        path: String,
    },
    /// An invalid CSV option.
    #[error("invalid csv option: {message}")]
    InvalidOption {
        /// What is wrong.
        message: String,
    },
    /// A `schema` entry names a column the source does not have.
    #[error("schema names column {column:?}, which the source does not have (it has {available:?})")]
    UnknownSchemaColumn {
        /// The column named.
        column: String,
        /// The source's columns.
        available: Vec<String>,
    },
    /// A `schema` entry gives a type that cannot be used.
    #[error("schema type for column {column:?}: {message}")]
    InvalidSchemaType {
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// A filter names a column the source does not have.
    #[error("filter column {column:?} is not a column of the source (it has {available:?})")]
    UnknownFilterColumn {
        /// The column.
        column: String,
        /// The source's columns.
        available: Vec<String>,
        /// The filter's JSON path.
        field: String,
    },
    /// A filter does not fit its column.
    #[error("{message}")]
    InvalidFilter {
        /// What is wrong.
        message: String,
        /// The JSON path of the offending part.
        field: String,
    },
    /// Reading a file failed.
    #[error("cannot read {path:?}: {message}")]
    Read {
        /// The file.
        path: String,
        /// What the reader said.
        message: String,
    },
    /// A file of a directory source whose columns differ from the first file's.
    #[error("{path}: {message}; every file of a directory source must have the columns of its first file ({first})")]
    FileMismatch {
        /// The file, as messages show it.
        path: String,
        /// The first file, as messages show it.
        first: String,
        /// How it differs.
        message: String,
    },
    /// A CSV header names a column twice.
    #[error(
        "{path}: the header names column {column:?} twice (fields {first} and {second}); column names must be unique"
    )]
    DuplicateColumn {
        /// The file, as messages show it.
        path: String,
        /// The repeated name.
        column: String,
        /// The 1-based position of its first occurrence.
        first: usize,
        /// The 1-based position of its second occurrence.
        second: usize,
    },
    /// An I/O error.
    #[error("cannot read {path:?}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A source URI that cannot be used.
    #[error("{message}")]
    InvalidUri {
        /// What is wrong.
        message: String,
    },
    /// A Postgres server could not be reached or refused us.
    #[error("{message}")]
    Postgres {
        /// What happened (credentials redacted).
        message: String,
    },
    /// A Postgres server could not be reached, or the connection was lost (worth retrying, unlike
    /// a refused login).
    #[error("{message}")]
    PgUnavailable {
        /// What happened (credentials redacted).
        message: String,
    },
    /// The Postgres table or view does not exist.
    #[error("{message}")]
    PgNotFound {
        /// What is missing.
        message: String,
    },
    /// A Postgres column of a type Kalla does not read.
    #[error("column {column:?}: {message}")]
    PgUnsupportedType {
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// DataFusion refused something.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

impl ConnectorError {
    /// The API error for this failure of the source at JSON path `source_field`.
    pub fn into_kalla(self, source_field: &str) -> KallaError {
        let uri = format!("{source_field}.uri");
        let message = self.to_string();
        match self {
            ConnectorError::NotFound { .. } => KallaError::at(ErrorCode::SourceNotFound, uri, message),
            ConnectorError::OutsideRoot { .. } => KallaError::at(ErrorCode::SourceOutsideRoot, uri, message),
            ConnectorError::UnknownFormat { .. }
            | ConnectorError::MixedDirectory { .. }
            | ConnectorError::EmptyDirectory { .. } => KallaError::at(ErrorCode::UnsupportedSource, uri, message),
            ConnectorError::InvalidOption { .. } => {
                KallaError::at(ErrorCode::InvalidField, format!("{source_field}.csv"), message)
            }
            ConnectorError::UnknownSchemaColumn { column, .. } => {
                KallaError::at(ErrorCode::UnknownColumn, format!("{source_field}.schema.{column}"), message)
            }
            ConnectorError::InvalidSchemaType { column, .. } => {
                KallaError::at(ErrorCode::InvalidField, format!("{source_field}.schema.{column}"), message)
            }
            ConnectorError::UnknownFilterColumn { field, .. } => {
                KallaError::at(ErrorCode::UnknownColumn, format!("{field}.column"), message)
            }
            ConnectorError::InvalidFilter { field, .. } => KallaError::at(ErrorCode::InvalidFilter, field, message),
            ConnectorError::Read { .. }
            | ConnectorError::DuplicateColumn { .. }
            | ConnectorError::FileMismatch { .. } => KallaError::at(ErrorCode::SourceReadFailed, uri, message),
            ConnectorError::Io { .. } => KallaError::at(ErrorCode::SourceUnreachable, uri, message),
            ConnectorError::InvalidUri { .. } => KallaError::at(ErrorCode::InvalidField, uri, message),
            ConnectorError::Postgres { .. } | ConnectorError::PgUnavailable { .. } => {
                KallaError::at(ErrorCode::SourceUnreachable, uri, message)
            }
            ConnectorError::PgNotFound { .. } => KallaError::at(ErrorCode::SourceNotFound, uri, message),
            ConnectorError::PgUnsupportedType { .. } => KallaError::at(ErrorCode::UnsupportedSource, uri, message),
            ConnectorError::DataFusion(_) => KallaError::at(ErrorCode::SourceUnreachable, uri, message),
        }
    }
}
