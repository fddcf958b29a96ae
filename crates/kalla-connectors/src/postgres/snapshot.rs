//! One snapshot per database per job (SPEC 4).
//!
//! A job's [`SnapshotRegistry`] exports, on first use for a database, a snapshot from a
//! REPEATABLE READ, READ ONLY transaction (`pg_export_snapshot()`), and keeps that transaction
//! open until the registry is dropped at the end of the job, so every reader — retries included —
//! can still `SET TRANSACTION SNAPSHOT` to it. Planning only describes sources; the registry is
//! armed when the job starts running, so a queued job holds no transaction open.
//!
//! The holding transaction also takes `ACCESS SHARE` locks on every table the job reads (as
//! pg_dump does): `TRUNCATE` and table-rewriting `ALTER TABLE` are not MVCC-safe — after they
//! commit, an older snapshot sees the table empty — so they must wait for the job instead. Under
//! that lock the table's columns are read again and compared with what the job was planned with;
//! a table changed since submission fails the job rather than being decoded with the old types.
//! The holder disables `idle_in_transaction_session_timeout` (and on Postgres ≥ 17
//! `transaction_timeout`) for itself, since it is idle in a transaction by design.

use super::catalog::describe_table;
use super::connect::{PgConnection, connect_uncapped, describe, quote_ident};
use super::scan::PgScanSpec;
use crate::error::ConnectorError;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How long a finished job may spend ending its stray backends.
const STRAY_BACKENDS_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// An exported snapshot and the transaction that keeps it importable.
#[derive(Debug)]
pub struct HeldSnapshot {
    /// The id readers import.
    pub id: String,
    /// `txid_current_snapshot()` of the exporting transaction (for the audit trail).
    pub txid_snapshot: String,
    holder: PgConnection,
}

#[derive(Debug, Default)]
struct Held {
    by_database: HashMap<String, Arc<HeldSnapshot>>,
    /// Tables locked and checked, as `database/schema.table`.
    checked: HashSet<String>,
}

/// The snapshots of one job, by database.
#[derive(Debug)]
pub struct SnapshotRegistry {
    run_id: String,
    armed: AtomicBool,
    held: tokio::sync::Mutex<Held>,
}

impl SnapshotRegistry {
    /// A registry for job `run_id`, not yet armed.
    pub fn new(run_id: &str) -> SnapshotRegistry {
        SnapshotRegistry { run_id: run_id.to_string(), armed: AtomicBool::new(false), held: Default::default() }
    }

    /// The job these snapshots belong to.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// From now on, scans planned for this job export (or reuse) their database's snapshot.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// The snapshot for the scan's database, with its table locked and checked: exported on
    /// first use once armed; `None` before (plans built for validation are never executed).
    pub async fn snapshot_for(&self, spec: &PgScanSpec) -> Result<Option<Arc<HeldSnapshot>>, ConnectorError> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let location = &spec.location;
        let mut held = self.held.lock().await;
        let database = location.database_key();
        let snapshot = match held.by_database.get(&database) {
            Some(s) => Arc::clone(s),
            None => {
                let s = Arc::new(self.export(spec).await?);
                held.by_database.insert(database.clone(), Arc::clone(&s));
                s
            }
        };
        let table = format!("{database}/{}.{}", location.schema, location.table);
        if !held.checked.contains(&table) {
            lock_and_check(&snapshot.holder, spec).await?;
            held.checked.insert(table);
        }
        Ok(Some(snapshot))
    }

    async fn export(&self, spec: &PgScanSpec) -> Result<HeldSnapshot, ConnectorError> {
        let location = &spec.location;
        let mut conn = connect_uncapped(location, &self.run_id).await?;
        let failed = |e: tokio_postgres::Error| ConnectorError::Postgres {
            message: format!("exporting a snapshot of {}: {}", location.redacted(), describe(&e)),
        };
        conn.batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL idle_in_transaction_session_timeout = 0",
        )
        .await
        .map_err(failed)?;
        let version: i32 = conn
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(failed)?
            .try_get(0)
            .map_err(failed)?;
        if version >= 170_000 {
            conn.batch_execute("SET LOCAL transaction_timeout = 0").await.map_err(failed)?;
        }
        // The first table is locked before the snapshot is taken (a utility statement takes
        // none), so nothing can empty it in between.
        lock(&conn, spec).await?;
        let row =
            conn.query_one("SELECT pg_export_snapshot(), txid_current_snapshot()::text", &[]).await.map_err(failed)?;
        conn.done();
        Ok(HeldSnapshot {
            id: row.try_get(0).map_err(failed)?,
            txid_snapshot: row.try_get(1).map_err(failed)?,
            holder: conn,
        })
    }

    /// Ends every other backend of this job in the databases it holds snapshots of (they carry
    /// the job's `application_name`). Called when a job ends, however it ends: a reader the
    /// job's executors failed to close (a cancelled task whose plan is still referenced) must
    /// not outlive it. Failures are logged; they do not change the job's outcome.
    pub async fn end_stray_backends(&self) {
        // A Postgres that stopped answering must not hold the end of the job.
        if tokio::time::timeout(STRAY_BACKENDS_BUDGET, self.end_stray_backends_now()).await.is_err() {
            tracing::warn!("ending the job's stray Postgres backends took too long; given up");
        }
    }

    async fn end_stray_backends_now(&self) {
        let held = self.held.lock().await;
        for snapshot in held.by_database.values() {
            let sql = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                       WHERE application_name = $1 AND pid <> pg_backend_pid()";
            match snapshot.holder.query_one(sql, &[&format!("kallad/{}", self.run_id)]).await {
                Ok(row) => {
                    let ended: i64 = row.try_get(0).unwrap_or(0);
                    if ended > 0 {
                        tracing::info!(backends = ended, "ended Postgres backends the job left behind");
                    }
                }
                Err(e) => tracing::warn!(error = %describe(&e), "cannot end the job's stray Postgres backends"),
            }
        }
    }

    /// Per database (`host:port/db`), the snapshot id and `txid_current_snapshot()`.
    pub async fn audit(&self) -> BTreeMap<String, (String, String)> {
        self.held
            .lock()
            .await
            .by_database
            .iter()
            .map(|(k, s)| (k.clone(), (s.id.clone(), s.txid_snapshot.clone())))
            .collect()
    }
}

async fn lock(conn: &PgConnection, spec: &PgScanSpec) -> Result<(), ConnectorError> {
    if !matches!(spec.relkind, 'r' | 'p' | 'v' | 'm') {
        return Ok(());
    }
    let location = &spec.location;
    let name = format!("{}.{}", quote_ident(&location.schema), quote_ident(&location.table));
    // LOCK TABLE refuses a materialized view (SQLSTATE 42809); reading it takes the same
    // ACCESS SHARE lock, held as long as the transaction, which is what keeps a REFRESH out.
    let sql = if spec.relkind == 'm' {
        format!("SELECT FROM {name} LIMIT 0")
    } else {
        format!("LOCK TABLE {name} IN ACCESS SHARE MODE")
    };
    conn.batch_execute(&sql).await.map_err(|e| ConnectorError::Postgres {
        message: format!("locking {}.{} for the job: {}", location.schema, location.table, describe(&e)),
    })
}

/// Locks the table in the holding transaction and fails when its columns are no longer those
/// the job was planned with.
async fn lock_and_check(conn: &PgConnection, spec: &PgScanSpec) -> Result<(), ConnectorError> {
    lock(conn, spec).await?;
    let location = &spec.location;
    let now = describe_table(conn, location).await?;
    let changed = |what: String| ConnectorError::Read {
        path: location.redacted(),
        message: format!(
            "{}.{} changed since the job was submitted ({what}); submit it again",
            location.schema, location.table
        ),
    };
    if now.columns.len() != spec.columns.len() {
        return Err(changed(format!("{} columns, now {}", spec.columns.len(), now.columns.len())));
    }
    for (was, is) in spec.columns.iter().zip(&now.columns) {
        let same_type = was.type_name == is.type_name
            && was.unconstrained_numeric == is.unconstrained_numeric
            && (was.unconstrained_numeric || was.pg_type == is.pg_type);
        if was.name != is.name || !same_type {
            return Err(changed(format!("column {} {} is now {} {}", was.name, was.type_name, is.name, is.type_name)));
        }
    }
    Ok(())
}
