//! One snapshot per database per job (SPEC 4).
//!
//! A job's [`SnapshotRegistry`] exports, on first use for a database, a snapshot from a
//! REPEATABLE READ, READ ONLY transaction (`pg_export_snapshot()`), and keeps that transaction
//! open until the registry is dropped at the end of the job, so every reader — retries included —
//! can still `SET TRANSACTION SNAPSHOT` to it. Planning only describes sources; the registry is
//! armed when the job starts running, so a queued job holds no transaction open.

use super::connect::{PgConnection, connect, describe};
use super::uri::PgLocation;
use crate::error::ConnectorError;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// An exported snapshot and the transaction that keeps it importable.
#[derive(Debug)]
pub struct HeldSnapshot {
    /// The id readers import.
    pub id: String,
    /// `txid_current_snapshot()` of the exporting transaction (for the audit trail).
    pub txid_snapshot: String,
    _holder: PgConnection,
}

/// The snapshots of one job, by database.
#[derive(Debug)]
pub struct SnapshotRegistry {
    run_id: String,
    armed: AtomicBool,
    held: tokio::sync::Mutex<HashMap<String, Arc<HeldSnapshot>>>,
}

impl SnapshotRegistry {
    /// A registry for job `run_id`, not yet armed.
    pub fn new(run_id: &str) -> SnapshotRegistry {
        SnapshotRegistry { run_id: run_id.to_string(), armed: AtomicBool::new(false), held: Default::default() }
    }

    /// From now on, scans planned for this job export (or reuse) their database's snapshot.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// The snapshot for the location's database: exported on first use once armed; `None`
    /// before (plans built for validation are never executed).
    pub async fn snapshot_for(&self, location: &PgLocation) -> Result<Option<Arc<HeldSnapshot>>, ConnectorError> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let mut held = self.held.lock().await;
        let key = location.database_key();
        if let Some(s) = held.get(&key) {
            return Ok(Some(Arc::clone(s)));
        }
        let mut conn = connect(location, &self.run_id).await?;
        let failed = |e: tokio_postgres::Error| ConnectorError::Postgres {
            message: format!("exporting a snapshot of {}: {}", location.redacted(), describe(&e)),
        };
        conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await.map_err(failed)?;
        let row =
            conn.query_one("SELECT pg_export_snapshot(), txid_current_snapshot()::text", &[]).await.map_err(failed)?;
        conn.done();
        let snapshot = Arc::new(HeldSnapshot { id: row.get(0), txid_snapshot: row.get(1), _holder: conn });
        held.insert(key, Arc::clone(&snapshot));
        Ok(Some(snapshot))
    }

    /// Per database (redacted location), the snapshot id and `txid_current_snapshot()`.
    pub async fn audit(&self) -> BTreeMap<String, (String, String)> {
        self.held.lock().await.iter().map(|(k, s)| (k.clone(), (s.id.clone(), s.txid_snapshot.clone()))).collect()
    }
}
