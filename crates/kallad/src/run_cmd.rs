//! `kallad run JOB.json`: one job, in-process, status document on stdout.
//!
//! Exit status: 0 when the job succeeded, 1 when it was refused or failed (the status document
//! then carries the error), 2 when kallad itself could not start.

use crate::engine_args::EngineArgs;
use clap::Args;
use futures::FutureExt;
use kalla_core::session::new_session;
use kalla_core::timestamp_now as now;
use kalla_core::{EngineConfig, RunObserver, plan_job};
use kalla_recipe::{ErrorCode, JobRequest, JobState, JobStatus, KallaError, Mode, Stage};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `kallad run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The job request (SPEC 3.1) as a JSON file.
    job: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Remembers the stage the run is in, for the status document of a run that fails.
#[derive(Debug)]
struct StageSeen(std::sync::Mutex<Stage>);

impl RunObserver for StageSeen {
    fn stage(&self, stage: Stage) {
        if let Ok(mut seen) = self.0.lock() {
            *seen = stage;
        }
    }
}

/// The status document of a job that failed in `stage` (as the daemon reports it: where the job
/// was when it failed; a request refused before running is `queued`, where the daemon's job
/// would have been).
fn failed(run_id: String, submitted_at: String, error: KallaError) -> JobStatus {
    failed_in(Stage::Queued, run_id, submitted_at, error)
}

fn failed_in(stage: Stage, run_id: String, submitted_at: String, error: KallaError) -> JobStatus {
    JobStatus {
        run_id,
        status: JobState::Failed,
        stage,
        progress: 0.0,
        mode: Mode::Local,
        counts: None,
        output_paths: None,
        callback: None,
        error: Some(error),
        submitted_at,
        started_at: None,
        finished_at: Some(now()),
    }
}

fn print(status: &JobStatus) -> ExitCode {
    match serde_json::to_string_pretty(status) {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("kallad: cannot encode the status document: {e}");
            return ExitCode::from(2);
        }
    }
    if status.status == JobState::Succeeded { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

pub(crate) async fn run(args: RunArgs) -> ExitCode {
    let submitted_at = now();
    let body = match std::fs::read(&args.job) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("kallad: cannot read {}: {e}", args.job.display());
            return ExitCode::from(2);
        }
    };
    let request = match JobRequest::from_json(&body) {
        Ok(r) => r,
        Err(e) => return print(&failed(String::new(), submitted_at, e)),
    };
    let run_id = request.run_id.clone();
    let job = match request.validate() {
        Ok(j) => j,
        Err(e) => return print(&failed(run_id, submitted_at, e)),
    };
    let ctx = match new_session(args.engine.partitions(), args.engine.memory_pool()) {
        Ok(c) => c,
        Err(e) => {
            return print(&failed(run_id, submitted_at, KallaError::new(ErrorCode::Internal, e.to_string())));
        }
    };
    let config = EngineConfig {
        rows_per_partition: args.engine.rows_per_partition(),
        data_dir: args.engine.data_dir,
        output_dir: args.engine.output_dir,
        roundtrip_plans: false,
    };
    let span = tracing::info_span!("job", run_id = %job.run_id);
    let _enter = span.enter();
    let started_at = now();
    let planned = match plan_job(ctx, job, config).await {
        Ok(p) => p,
        Err(e) => return print(&failed(run_id, submitted_at, e)),
    };
    tracing::info!(sources = planned.sources.len(), "job planned");
    // A panic inside the engine (a DataFusion bug) fails the job with a status document, as in
    // the daemon, instead of ending the process without one.
    let seen = StageSeen(std::sync::Mutex::new(Stage::Reading));
    let ran = match std::panic::AssertUnwindSafe(planned.run(&seen)).catch_unwind().await {
        Ok(r) => r,
        Err(_) => Err(KallaError::new(ErrorCode::Internal, "the engine failed unexpectedly (a bug); see the log")),
    };
    match ran {
        Ok(outcome) => {
            let mut status = outcome.summary.status;
            status.submitted_at = submitted_at;
            status.started_at = Some(started_at);
            tracing::info!(matched = outcome.counts.matched, "job succeeded");
            print(&status)
        }
        Err(e) => {
            tracing::error!(code = %e.code, error = %e.message, "job failed");
            let stage = seen.0.lock().map(|s| *s).unwrap_or(Stage::Reading);
            let mut status = failed_in(stage, run_id, submitted_at, e);
            status.started_at = Some(started_at);
            print(&status)
        }
    }
}
