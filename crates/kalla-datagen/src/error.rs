//! The crate's one error type: every I/O, encoding and option error, with the file it concerns.

use std::path::{Path, PathBuf};

use datafusion::arrow::error::ArrowError;
use datafusion::parquet::errors::ParquetError;

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options cannot be honoured.
    #[error("invalid options: {0}")]
    Options(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding Parquet failed.
    #[error("{path}: {source}")]
    Parquet {
        /// The Parquet file.
        path: PathBuf,
        /// The cause.
        source: ParquetError,
    },
    /// Building or encoding Arrow data (or CSV) failed.
    #[error("{path}: {source}")]
    Arrow {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        source: ArrowError,
    },
    /// Encoding JSON failed.
    #[error("{path}: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A writer thread panicked (a bug).
    #[error("the {0} writer thread panicked")]
    Panicked(&'static str),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn parquet(path: &Path, source: ParquetError) -> Self {
        Error::Parquet { path: path.to_path_buf(), source }
    }

    pub(crate) fn arrow(path: &Path, source: ArrowError) -> Self {
        Error::Arrow { path: path.to_path_buf(), source }
    }

    pub(crate) fn json(path: &Path, source: serde_json::Error) -> Self {
        Error::Json { path: path.to_path_buf(), source }
    }
}
