//! Integration tests: generated files are deterministic, and `truth.json` equals a brute-force
//! evaluation of each shape's `match_sql` over the rows read back from the Parquet files.

mod determinism;
mod files;
mod support;
mod truth;
