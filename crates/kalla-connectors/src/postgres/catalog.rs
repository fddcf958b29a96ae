//! What the catalog says about a source: its columns and their types, its kind, its size.

use super::connect::{PgConnection, describe};
use super::types::{PgScalar, PgType, resolve_scalar};
use super::uri::PgLocation;
use crate::error::ConnectorError;

/// One column as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    /// Name, exactly as in the catalog.
    pub name: String,
    /// Type as decoded.
    pub pg_type: PgType,
    /// The catalog's type name (for messages).
    pub type_name: String,
    /// True for unconstrained `numeric` (its decimal can be set by the source's `schema`).
    pub unconstrained_numeric: bool,
}

/// A table or view as the catalog describes it.
#[derive(Debug, Clone)]
pub struct PgTableInfo {
    /// `relkind`: `r` table, `p` partitioned table, `v` view, `m` materialized view, `f` foreign.
    pub relkind: char,
    /// Columns in order.
    pub columns: Vec<PgColumn>,
    /// Pages now (`pg_relation_size / block_size`; 0 for views).
    pub pages: i64,
    /// `reltuples`: the planner's row estimate (-1 when never analyzed).
    pub reltuples: f64,
    /// `server_version_num`.
    pub server_version: i32,
}

impl PgTableInfo {
    /// True when ctid page ranges can split the scan: a plain table or materialized view on
    /// Postgres ≥ 14 (TID range scans).
    pub fn ctid_ranges_possible(&self) -> bool {
        matches!(self.relkind, 'r' | 'm') && self.server_version >= 140_000
    }
}

const RELATION: &str = "SELECT c.oid::int8, c.relkind::text, \
     (pg_relation_size(c.oid) / current_setting('block_size')::int8)::int8, c.reltuples::float8, \
     current_setting('server_version_num')::int4, \
     has_table_privilege(c.oid, 'SELECT') AND has_schema_privilege(n.oid, 'USAGE') \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')";

const COLUMNS: &str = "WITH cols AS ( \
       SELECT a.attnum, a.attname::text AS name, \
              CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END AS tid, \
              CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END AS typmod \
       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
       WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped) \
     SELECT c.name, t.typname::text, t.typtype::text, t.typcategory::text, c.typmod, \
            e.typname::text, e.typtype::text, \
            (SELECT nspname::text FROM pg_namespace WHERE oid = t.typnamespace), \
            (SELECT nspname::text FROM pg_namespace WHERE oid = e.typnamespace) \
     FROM cols c JOIN pg_type t ON t.oid = c.tid \
     LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' \
     ORDER BY c.attnum";

/// [`resolve_scalar`] for a type of schema `schema`: the names it maps are pg_catalog's types
/// (and the citext extension's, wherever it is installed); a user's type that shares such a
/// name in another schema (`public.date`) is another type, not read as the built-in one.
fn resolve_in(schema: Option<&str>, name: &str, typtype: &str, typmod: i32) -> Result<PgScalar, String> {
    match schema {
        Some("pg_catalog") => resolve_scalar(name, typtype, typmod),
        _ if typtype == "e" || name == "citext" => resolve_scalar(name, typtype, typmod),
        Some(other) => Err(format!("type {other}.{name} is not supported")),
        None => Err(format!("type {name} is not supported")),
    }
}

/// Reads the catalog entry of the location's table or view.
pub async fn describe_table(conn: &PgConnection, location: &PgLocation) -> Result<PgTableInfo, ConnectorError> {
    let failed = |e: tokio_postgres::Error| ConnectorError::Postgres {
        message: format!("reading the catalog of {}: {}", location.redacted(), describe(&e)),
    };
    let rows = conn.query(RELATION, &[&location.schema, &location.table]).await.map_err(failed)?;
    let Some(row) = rows.first() else {
        return Err(ConnectorError::PgNotFound {
            message: format!(
                "table or view {}.{} does not exist in database {} (or the user may not see it)",
                location.schema, location.table, location.dbname
            ),
        });
    };
    let oid: i64 = row.try_get(0).map_err(failed)?;
    let relkind: String = row.try_get(1).map_err(failed)?;
    let info_pages: i64 = row.try_get(2).map_err(failed)?;
    let reltuples: f64 = row.try_get(3).map_err(failed)?;
    let server_version: i32 = row.try_get(4).map_err(failed)?;
    let may_select: bool = row.try_get(5).map_err(failed)?;
    if !may_select {
        return Err(ConnectorError::Postgres {
            message: format!(
                "permission denied: user {} may not SELECT from {}.{} (GRANT SELECT and USAGE on its schema)",
                location.user, location.schema, location.table
            ),
        });
    }
    let mut columns = Vec::new();
    for r in conn.query(COLUMNS, &[&oid]).await.map_err(failed)? {
        let name: String = r.try_get(0).map_err(failed)?;
        let typname: String = r.try_get(1).map_err(failed)?;
        let typtype: String = r.try_get(2).map_err(failed)?;
        let category: String = r.try_get(3).map_err(failed)?;
        let typmod: i32 = r.try_get(4).map_err(failed)?;
        let elem_name: Option<String> = r.try_get(5).map_err(failed)?;
        let elem_type: Option<String> = r.try_get(6).map_err(failed)?;
        let schema: Option<String> = r.try_get(7).map_err(failed)?;
        let elem_schema: Option<String> = r.try_get(8).map_err(failed)?;
        let unsupported = |message: String| ConnectorError::PgUnsupportedType {
            column: name.clone(),
            message: format!("{message}; cast it in a view or leave the column out"),
        };
        let pg_type = match (category.as_str(), &elem_name, &elem_type) {
            ("A", Some(en), Some(et)) => PgType::Array(
                resolve_in(elem_schema.as_deref(), en, et, typmod)
                    .map_err(|m| unsupported(format!("{m} (array of {en})")))?,
            ),
            _ => PgType::Scalar(resolve_in(schema.as_deref(), &typname, &typtype, typmod).map_err(unsupported)?),
        };
        let unconstrained_numeric = typname == "numeric" && typmod < 4 && matches!(pg_type, PgType::Scalar(_));
        columns.push(PgColumn { name, pg_type, type_name: typname, unconstrained_numeric });
    }
    Ok(PgTableInfo {
        relkind: relkind.chars().next().unwrap_or('r'),
        columns,
        pages: info_pages,
        reltuples,
        server_version,
    })
}
