//! Kalla's job vocabulary: the request of a reconciliation job, its static validation, and the
//! error codes every part of kallad reports with.
//!
//! This crate does no I/O, so the HTTP layer, the engine and the tests share one definition of
//! what a valid job is and of how a refusal is worded.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod error;
mod job;
pub mod redact;
mod status;

pub use error::{ErrorBody, ErrorCode, KallaError};
pub use job::{
    CsvOptions, FileFormat, Filter, FilterOp, FilterScalar, FilterSpec, FilterValue, JobRequest, Source,
    SourceLocation, SourceSpec, ValidatedJob, is_plain_identifier,
};
pub use status::{CallbackStatus, Counts, JobState, JobStatus, Mode, OutputPaths, Stage};
