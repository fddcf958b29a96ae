//! `summary.json`: the status document plus the audit trail (SPEC 5).

use kalla_connectors::file::FileEntry;
use kalla_recipe::{FileFormat, FilterSpec, JobStatus};
use serde::Serialize;
use std::collections::BTreeMap;

/// The whole `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The status document of the finished job.
    #[serde(flatten)]
    pub status: JobStatus,
    /// How the result came about.
    pub audit: AuditTrail,
}

/// What a finance team needs to trust a result.
#[derive(Debug, Clone, Serialize)]
pub struct AuditTrail {
    /// The kallad version that produced the outputs.
    pub kallad_version: String,
    /// The exact query.
    pub match_sql: String,
    /// Each source as read.
    pub sources: Vec<AuditSource>,
    /// Wall time per stage, milliseconds.
    pub stage_timings_ms: BTreeMap<String, u64>,
    /// Per keyed source, key-level checks.
    pub checks: BTreeMap<String, SourceChecks>,
}

/// One source in the audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct AuditSource {
    /// Alias.
    pub alias: String,
    /// URI with credentials redacted.
    pub uri: String,
    /// File format, for file sources.
    pub format: Option<FileFormat>,
    /// Key columns.
    pub primary_key: Option<Vec<String>>,
    /// Filters as given.
    pub filters: Vec<FilterSpec>,
    /// Files read, with size and modification time.
    pub files: Vec<FileAudit>,
    /// For a Postgres source: the snapshot it was read in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresAudit>,
}

/// The snapshot a Postgres source was read in (shared by every source of its database).
#[derive(Debug, Clone, Serialize)]
pub struct PostgresAudit {
    /// The exported snapshot id every reader imported.
    pub snapshot_id: String,
    /// `txid_current_snapshot()` of the exporting transaction.
    pub txid_current_snapshot: String,
}

/// One file read.
#[derive(Debug, Clone, Serialize)]
pub struct FileAudit {
    /// Absolute path.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Modification time, RFC 3339.
    pub modified: Option<String>,
}

impl From<&FileEntry> for FileAudit {
    fn from(f: &FileEntry) -> Self {
        FileAudit { path: f.path.display().to_string(), size: f.size, modified: f.modified.and_then(rfc3339) }
    }
}

/// A file's modification time in RFC 3339, or none when chrono cannot represent it (beyond
/// ±262,143 years, which a filesystem can store: chrono's own conversion would panic).
fn rfc3339(t: std::time::SystemTime) -> Option<String> {
    let at = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => {
            chrono::DateTime::<chrono::Utc>::UNIX_EPOCH.checked_add_signed(chrono::TimeDelta::from_std(after).ok()?)
        }
        Err(before) => chrono::DateTime::<chrono::Utc>::UNIX_EPOCH
            .checked_sub_signed(chrono::TimeDelta::from_std(before.duration()).ok()?),
    }?;
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// Key-level checks of one keyed source. Keys are compared as tuples; a tuple with a NULL is
/// its own group (as in GROUP BY) and is never matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceChecks {
    /// Rows after filters.
    pub total_rows: u64,
    /// Distinct keys after filters.
    pub total_keys: u64,
    /// Distinct keys that appear in the matched output.
    pub matched_keys: u64,
    /// Distinct keys in the unmatched output (counted from the written file).
    pub unmatched_keys: u64,
    /// `total_keys == matched_keys + unmatched_keys`.
    pub keys_balance: bool,
    /// Keys shared by more than one source row.
    pub duplicate_keys: u64,
    /// Rows whose key is shared with another row.
    pub duplicate_key_rows: u64,
    /// Keys present in more than one matched row.
    pub multi_matched_keys: u64,
}

#[cfg(test)]
mod tests {
    use super::rfc3339;
    use std::time::{Duration, UNIX_EPOCH};

    /// A modification time chrono cannot hold is left out of the audit trail instead of ending
    /// the job (chrono's `From<SystemTime>` panics there).
    #[test]
    fn modification_times_chrono_cannot_hold_are_left_out() {
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_micros(1_500_000)).as_deref(),
            Some("1970-01-01T00:00:01.500000Z")
        );
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(86_400)).as_deref(), Some("1969-12-31T00:00:00.000000Z"));
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(99_999_999_999_999)), None);
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(99_999_999_999_999)), None);
    }
}
