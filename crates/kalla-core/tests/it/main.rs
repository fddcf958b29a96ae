//! Integration tests of the engine: real files in, real Parquet out.

mod codec;
mod formats;
mod harness;
mod postgres;
mod progress;
mod refusals;
mod runner;
mod scenarios;
