//! Kalla on Apache Ballista 55: the scheduler embedded in `kallad scheduler` and the executor
//! of `kallad executor`.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod codec;
pub mod executor;
pub mod runner;
pub mod scheduler;
