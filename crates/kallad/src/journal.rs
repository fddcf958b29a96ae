//! The job journal (SPEC 7): one append-only JSON-lines file per job under `--state-dir`.
//!
//! Each line is a [`Record`]: what is needed to answer for the job after a restart — its status
//! document, its callback URL and source aliases, and a SHA-256 of the canonical request (the
//! idempotency key; the request itself is not stored, so credentials in source URIs never reach
//! the disk here). The last line is the job's current state. On start, jobs whose last state is
//! queued or running are marked failed with `daemon_restarted`; files of jobs finished longer
//! than the retention (`--job-retention`, 7 days by default) ago are removed, at start and by the
//! hourly sweep that also forgets them in memory.

use kalla_recipe::JobStatus;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// SHA-256 (hex) of the canonical request JSON.
    pub(crate) request_sha256: String,
    /// Callback base URL.
    pub(crate) callback_url: Option<String>,
    /// Source aliases in request order.
    pub(crate) aliases: Vec<String>,
    /// The status document at this point.
    pub(crate) status: JobStatus,
    /// The run's temporary output directory (`<output>.tmp-<run_id>`), removed at recovery if
    /// the run left it behind. Absent in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tmp_dir: Option<std::path::PathBuf>,
}

/// The hex SHA-256 of a canonical request.
pub(crate) fn request_digest(canonical: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(canonical).unwrap_or_default();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The journal directory.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (creating) the journal directory.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        Ok(Journal { dir: dir.to_path_buf() })
    }

    fn path(&self, run_id: Uuid) -> PathBuf {
        self.dir.join(format!("{run_id}.jsonl"))
    }

    /// Appends a record and syncs it.
    pub(crate) fn append(&self, run_id: Uuid, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new().create(true).read(true).append(true).open(self.path(run_id))?;
        // After a crash the file can end in a torn line: end it first, or this record would be
        // glued to it and unreadable.
        let len = f.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut last, len - 1)?;
            if last[0] != b'\n' {
                line.insert(0, b'\n');
            }
        }
        f.write_all(&line)?;
        f.sync_data()
    }

    /// Reads the last record of every job, removing expired ones. Unreadable files are skipped
    /// with a warning (a torn last line after a crash leaves the previous line in force).
    pub(crate) fn load(&self, retention: Duration) -> std::io::Result<Vec<Record>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                continue;
            }
            // Bytes, not lines of text: a line torn in the middle of a UTF-8 character is one bad
            // line, not a reason to stop reading the journal (and so to refuse to start).
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable journal file");
                    continue;
                }
            };
            let mut last: Option<Record> = None;
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<Record>(line) {
                    Ok(r) => last = Some(r),
                    Err(e) => tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable journal line"),
                }
            }
            let Some(record) = last else { continue };
            if expired(&record.status, retention) {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove an expired journal file");
                }
                continue;
            }
            out.push(record);
        }
        out.sort_by(|a, b| a.status.submitted_at.cmp(&b.status.submitted_at));
        Ok(out)
    }

    /// Removes a job's file.
    pub(crate) fn remove(&self, run_id: Uuid) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(run_id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A finished job whose end lies longer than `retention` ago.
pub(crate) fn expired(status: &JobStatus, retention: Duration) -> bool {
    if !status.status.is_final() {
        return false;
    }
    let Some(finished) = &status.finished_at else { return false };
    match chrono::DateTime::parse_from_rfc3339(finished) {
        Ok(t) => {
            let age = chrono::Utc::now().signed_duration_since(t);
            age.to_std().map(|a| a > retention).unwrap_or(false)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalla_recipe::{JobState, Mode, Stage};

    fn record(run_id: Uuid, status: JobState, error_text: &str) -> Record {
        Record {
            request_sha256: "0".repeat(64),
            callback_url: None,
            aliases: vec!["invoices".into()],
            status: JobStatus {
                run_id: run_id.to_string(),
                status,
                stage: Stage::Matching,
                progress: 0.5,
                mode: Mode::Local,
                counts: None,
                output_paths: None,
                callback: None,
                error: (!error_text.is_empty())
                    .then(|| kalla_recipe::KallaError::new(kalla_recipe::ErrorCode::Internal, error_text)),
                submitted_at: "2026-11-24T10:00:00Z".into(),
                started_at: None,
                finished_at: None,
            },
            tmp_dir: None,
        }
    }

    /// A crash while a line was appended leaves it torn, possibly inside a multi-byte character;
    /// the line before stays in force, and an unreadable file is skipped: the daemon still starts.
    #[test]
    fn a_torn_line_or_an_unreadable_file_leaves_the_rest_of_the_journal_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let id = Uuid::from_u128(1);
        journal.append(id, &record(id, JobState::Queued, "")).unwrap();
        journal.append(id, &record(id, JobState::Running, "")).unwrap();
        let torn = serde_json::to_vec(&record(id, JobState::Failed, "colonne « montant » illisible")).unwrap();
        let cut = torn.iter().position(|b| *b == 0xC2).unwrap() + 1;
        assert!(std::str::from_utf8(&torn[..cut]).is_err(), "the cut splits a character");
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join(format!("{id}.jsonl"))).unwrap();
        f.write_all(&torn[..cut]).unwrap();
        // A journal file that cannot be read (here a directory of that name).
        std::fs::create_dir(dir.path().join(format!("{}.jsonl", Uuid::from_u128(2)))).unwrap();
        let loaded = journal.load(Duration::from_secs(3600)).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            (loaded[0].status.run_id.as_str(), loaded[0].status.status),
            (id.to_string().as_str(), JobState::Running)
        );
        // The record recovery then appends (the job failed with daemon_restarted) is read back
        // whole: it starts on a line of its own.
        journal.append(id, &record(id, JobState::Failed, "the daemon restarted")).unwrap();
        let loaded = journal.load(Duration::from_secs(3600)).unwrap();
        assert_eq!(loaded[0].status.status, JobState::Failed);
        assert_eq!(loaded[0].status.error.as_ref().map(|e| e.message.as_str()), Some("the daemon restarted"));
    }
}
