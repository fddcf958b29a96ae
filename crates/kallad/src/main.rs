//! `kallad`: the Kalla compute daemon.
//!
//! `kallad run JOB.json` runs one job in-process and prints its status document;
//! `kallad scheduler` serves the HTTP job API and embeds the Ballista scheduler executors
//! register with; `kallad executor` is such an executor. A job runs in the scheduler's process or
//! on the executors (cluster mode), as `--mode` and the live executors decide.

mod api;
mod callbacks;
mod daemon;
mod engine_args;
mod executor_cmd;
mod jobs;
mod journal;
mod logging;
mod metrics;
mod run_cmd;
mod scheduler;
mod secret;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Command line of kallad.
#[derive(Debug, Parser)]
#[command(name = "kallad", version, about = "Kalla's reconciliation compute daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one job in-process and print its status document (no server).
    Run(run_cmd::RunArgs),
    /// Serve the HTTP job API and the scheduler executors register with.
    Scheduler(scheduler::SchedulerArgs),
    /// Run an executor that registers with a scheduler.
    Executor(executor_cmd::ExecutorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init() {
        eprintln!("kallad: {e}");
        return ExitCode::from(2);
    }
    // Planning recurses once per link of a query's chains (joins, set operations, CTEs,
    // operators); `match_sql` is capped below what a 2 MiB thread survives (kalla-core `sql.rs`),
    // and the threads get the 8 MiB of a main thread on top, as a margin. Only touched pages
    // cost memory.
    let runtime = match tokio::runtime::Builder::new_multi_thread().thread_stack_size(8 << 20).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kallad: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match cli.command {
        Command::Run(args) => runtime.block_on(run_cmd::run(args)),
        Command::Scheduler(args) => runtime.block_on(scheduler::run(args)),
        Command::Executor(args) => runtime.block_on(executor_cmd::run_executor(args)),
    };
    // The command decided to exit (its grace periods are over): work still running — a task
    // stuck in a long computation on an executor — must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API token and the callback key never show in the `Debug` of what holds them (the
    /// parsed command line, the callback sender), so logging those cannot leak them.
    #[test]
    fn secrets_stay_out_of_debug_output() {
        let cli = Cli::try_parse_from([
            "kallad",
            "scheduler",
            "--api-token",
            "tok-3f9a1c",
            "--callback-secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(shown.contains("api_token: Some(***)"), "{shown}");
        assert!(!shown.contains("tok-3f9a1c") && !shown.contains("MfKQ9r8G"), "{shown}");
        let key = callbacks::parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let shown = format!("{:?}", callbacks::Callbacks::new(Some(key.clone()), vec![]).unwrap());
        assert!(shown.contains("secret: Some(***)"), "{shown}");
        assert!(!shown.contains(&format!("{key:?}")), "{shown}");
    }
}
