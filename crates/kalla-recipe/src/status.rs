//! The job status document of SPEC 3.2, shared by `kallad run`, the HTTP API and `summary.json`.

use crate::error::KallaError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a slot.
    Queued,
    /// Running.
    Running,
    /// Finished; outputs committed.
    Succeeded,
    /// Failed; no outputs.
    Failed,
    /// Cancelled; no outputs.
    Cancelled,
}

impl JobState {
    /// True for a state a job never leaves.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

/// What a running job is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Not started.
    Queued,
    /// Opening and reading sources.
    Reading,
    /// Running `match_sql`.
    Matching,
    /// Computing unmatched rows and writing outputs.
    WritingResults,
    /// Finished.
    Done,
}

/// Where a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// In-process DataFusion.
    Local,
    /// A distributed Ballista job.
    Cluster,
}

/// Row counts of a finished job; every count equals the row count of its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counts {
    /// Rows of each source after its filters, by alias.
    pub total: BTreeMap<String, u64>,
    /// Rows of `matched.parquet`.
    pub matched: u64,
    /// Rows of `unmatched_<alias>.parquet`; `null` for a source without key.
    pub unmatched: BTreeMap<String, Option<u64>>,
}

/// Output paths as the API was given them (relative to the output root when relative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputPaths {
    /// The matched rows.
    pub matched: String,
    /// Unmatched rows per source; `null` for a source without key.
    pub unmatched: BTreeMap<String, Option<String>>,
    /// `summary.json`.
    pub summary: String,
}

/// Callback delivery as the status document shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallbackStatus {
    /// True once the final callback got a 2xx answer.
    pub delivered: bool,
    /// Attempts made for the final callback.
    pub attempts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// The status document of one job (SPEC 3.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStatus {
    /// The job's run id.
    pub run_id: String,
    /// Its state.
    pub status: JobState,
    /// Its stage.
    pub stage: Stage,
    /// Rows read over rows expected, 0..=1; 1.0 only when done.
    pub progress: f64,
    /// Where it runs.
    pub mode: Mode,
    /// Counts, once succeeded.
    pub counts: Option<Counts>,
    /// Output paths, once succeeded.
    pub output_paths: Option<OutputPaths>,
    /// Callback delivery, when the job has a callback URL.
    pub callback: Option<CallbackStatus>,
    /// The error of a failed or cancelled job.
    pub error: Option<KallaError>,
    /// RFC 3339 time of submission.
    pub submitted_at: String,
    /// RFC 3339 time the job started running.
    pub started_at: Option<String>,
    /// RFC 3339 time the job finished.
    pub finished_at: Option<String>,
}
