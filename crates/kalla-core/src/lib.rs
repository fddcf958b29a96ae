//! The Kalla reconciliation engine on DataFusion.
//!
//! A job names sources and a `match_sql`. The engine registers each source (after its filters)
//! as a table, plans `match_sql`, follows every source key through the plan to the output columns
//! that carry it ([`lineage`]), writes the matched rows, and derives each keyed source's unmatched
//! rows by an anti join against the keys of the matched rows it wrote ([`run`]). Outputs are
//! committed atomically with an audit trail ([`output`], [`summary`]).
//!
//! The engine does not care whether a table is a file or a database scan, nor (by design) where
//! a physical plan runs: every plan it executes can be serialized as a logical plan with
//! [`codec::KallaLogicalCodec`] and as a physical plan with [`codec::KallaPhysicalCodec`], which
//! the `roundtrip_plans` setting exercises on every run.
//!
//! Errors are [`kalla_recipe::KallaError`]s: every engine failure is something the API reports
//! with a code, so the engine speaks that vocabulary directly.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod codec;
pub mod fault;
pub mod keyjoin;
pub mod lineage;
pub mod memory;
pub mod output;
pub mod parts;
pub mod plan;
pub mod progress;
pub mod remote;
pub mod run;
pub mod session;
pub mod sql;
pub mod summary;
pub mod udf;

/// The current time as the status documents write it: RFC 3339, UTC, milliseconds.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub use plan::{EngineConfig, PlanDescription, PlannedJob, plan_job};
pub use run::{NoObserver, RunObserver, RunOutcome};
