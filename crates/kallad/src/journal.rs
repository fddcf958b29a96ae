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
use std::io::{BufRead, Write};
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
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.path(run_id))?;
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
            let file = std::fs::File::open(&path)?;
            let mut last: Option<Record> = None;
            for line in std::io::BufReader::new(file).lines() {
                let line = line?;
                match serde_json::from_str::<Record>(&line) {
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
