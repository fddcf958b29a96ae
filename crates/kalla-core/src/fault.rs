//! Fault injection for the cluster tests, in the style of Ballista's chaos testing: a SQL function
//! `kalla_test_fault(mode, value)` that fires a bounded number of times *across processes*.
//!
//! It exists only when the environment variable [`FAULTS_ENV`] names a directory (tests set it
//! for the scheduler and executor processes they start; an operator never does). Each mode has a
//! budget: the files `<dir>/<mode>/token-*`. An invocation (one per batch) fires when it removes a
//! token — removal is atomic, so N tokens fire N times in the whole cluster — and otherwise
//! returns `true` for every row. The function is volatile, so a predicate using it is neither
//! folded away nor pushed into a source.
//!
//! Modes:
//! - `io`: fails the batch with an I/O error (Ballista retries a task that failed that way);
//! - `hold`: writes `<dir>/held-<pid>` and blocks the task forever, so a test can SIGKILL the
//!   process that holds it in the middle of the job;
//! - `pause`: writes `<dir>/paused-<pid>` and blocks the task until a test removes that file
//!   (meanwhile the test can break something under the task, e.g. its Postgres connection).
//!
//! The same budgets arm [`pause_point`]s in the scheduler's own code, where no SQL runs: a test
//! stops a run between two steps (e.g. after a Ballista job succeeded, before its results are
//! fetched) to break something in between.

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The environment variable that enables the function: a directory of token budgets.
pub const FAULTS_ENV: &str = "KALLA_TEST_FAULTS";
/// The function's name.
pub const TEST_FAULT: &str = "kalla_test_fault";

/// The fault function when the test hook is enabled.
pub fn fault_udf_from_env() -> Option<ScalarUDF> {
    let dir = std::env::var_os(FAULTS_ENV)?;
    Some(ScalarUDF::new_from_impl(FaultUdf {
        dir: PathBuf::from(dir),
        signature: Signature::any(2, Volatility::Volatile),
    }))
}

/// How long a [`pause_point`] waits for the test at most.
const PAUSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Stops here when a test armed `point`: with [`FAULTS_ENV`] set and a token left in
/// `<dir>/<point>/`, takes the token, writes `detail()` to `<dir>/<point>-<pid>` and waits until the
/// test removes that file (at most two minutes). Returns at once otherwise (always, in production:
/// the variable is never set there).
pub async fn pause_point(point: &str, detail: impl FnOnce() -> String) {
    let Some(dir) = std::env::var_os(FAULTS_ENV).map(PathBuf::from) else { return };
    if !take_token(&dir.join(point)) {
        return;
    }
    let marker = dir.join(format!("{point}-{}", std::process::id()));
    // Written whole before it appears under its name: the test reads it as soon as it sees it.
    let written = dir.join(format!(".writing-{point}-{}", std::process::id()));
    if std::fs::write(&written, detail()).is_err() || std::fs::rename(&written, &marker).is_err() {
        return;
    }
    tracing::warn!(point, "paused by the test hook {FAULTS_ENV}");
    let deadline = std::time::Instant::now() + PAUSE_LIMIT;
    while marker.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FaultUdf {
    dir: PathBuf,
    signature: Signature,
}

/// Takes one token of `budget`, if any is left.
fn take_token(budget: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(budget) else { return false };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("token-") && std::fs::remove_file(entry.path()).is_ok() {
            return true;
        }
    }
    false
}

impl ScalarUDFImpl for FaultUdf {
    fn name(&self) -> &str {
        TEST_FAULT
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let mode = match args.args.first() {
            Some(ColumnarValue::Scalar(s)) => s.to_string(),
            _ => return exec_err!("{TEST_FAULT}: the mode must be a literal"),
        };
        if !matches!(mode.as_str(), "io" | "hold" | "pause") {
            return exec_err!("{TEST_FAULT}: unknown mode {mode}");
        }
        if take_token(&self.dir.join(&mode)) {
            if mode == "io" {
                return Err(DataFusionError::IoError(std::io::Error::other("injected I/O fault (kalla_test_fault)")));
            }
            // `hold` blocks until the process is killed, `pause` until the test removes the marker.
            let kind = if mode == "pause" { "paused" } else { "held" };
            let marker = self.dir.join(format!("{kind}-{}", std::process::id()));
            std::fs::write(&marker, b"").map_err(DataFusionError::IoError)?;
            while mode == "hold" || marker.exists() {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(vec![true; args.number_rows]))))
    }
}
