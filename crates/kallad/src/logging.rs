//! Logging: `RUST_LOG` sets the level (default `info`), `KALLA_LOG_FORMAT=json` gives JSON lines.
//! Logs go to stderr so `kallad run` keeps stdout for the status document; text logs are coloured
//! only when stderr is a terminal (a file or a journal gets plain text).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub(crate) fn init() -> Result<(), String> {
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")).map_err(|e| e.to_string())?;
    let json = std::env::var("KALLA_LOG_FORMAT").map(|v| v.eq_ignore_ascii_case("json")).unwrap_or(false);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if json { builder.json().try_init() } else { builder.try_init() };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
