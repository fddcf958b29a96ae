//! Kalla's sources: what a `uri` names, how it is read into Arrow, and how a job's `filters`
//! become DataFusion predicates that keep their exact meaning.
//!
//! The engine sees every source as a `TableProvider` plus a projection to its final column types,
//! so it does not care whether rows come from a file or (later) a Postgres scan.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod decimal;
mod error;
pub mod file;
pub mod filter;
pub mod inferred;
pub mod postgres;
pub mod types;

pub use error::ConnectorError;
