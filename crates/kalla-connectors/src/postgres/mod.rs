//! Postgres sources: a partitioned, snapshot-consistent binary-COPY scan.
//!
//! - [`uri`]: the source URI and connection settings;
//! - [`connect`]: TLS, the per-host connection cap, cancellation on drop;
//! - [`catalog`]: columns, types, kind and size of a table or view;
//! - [`types`]: the exact Postgres → Arrow type mapping;
//! - [`decode`]: the binary COPY decoder (the hot path);
//! - [`pushdown`]: filters rendered into the `COPY` query where the meaning is identical;
//! - [`snapshot`]: one exported snapshot per database per job;
//! - [`scan`]: the `DataSourceExec`/`FileSource` scan over ctid page ranges.

pub mod catalog;
pub mod connect;
pub mod decode;
pub mod pushdown;
pub mod scan;
pub mod snapshot;
pub mod types;
pub mod uri;

use crate::error::ConnectorError;
use crate::types::parse_sql_type;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use kalla_recipe::Source;
use std::sync::Arc;
use types::{PgScalar, PgType};

/// A Postgres source ready to be scanned.
#[derive(Debug)]
pub struct OpenedPgSource {
    /// The table as DataFusion reads it.
    pub provider: Arc<dyn TableProvider>,
    /// The source's schema.
    pub schema: SchemaRef,
    /// The catalog's row estimate (`reltuples`), when the table was ever analyzed.
    pub expected_rows: Option<u64>,
    /// What the scan reads (for the audit trail and progress).
    pub spec: scan::PgScanSpec,
}

/// Opens a Postgres source: parses its URI, reads its catalog entry, applies the source's
/// `schema` (unconstrained `numeric` columns may be given a decimal; any other entry must restate
/// the column's type) and builds the table.
pub async fn open_postgres_source(
    source: &Source,
    uri: &str,
    run_id: &str,
    registry: Arc<snapshot::SnapshotRegistry>,
) -> Result<OpenedPgSource, ConnectorError> {
    let location = uri::PgLocation::parse(uri)?;
    let mut conn = connect::connect(&location, run_id).await?;
    let described = catalog::describe_table(&conn, &location).await;
    conn.done();
    drop(conn);
    let mut info = described?;
    for (name, declared) in &source.schema {
        let Some(column) = info.columns.iter_mut().find(|c| &c.name == name) else {
            return Err(ConnectorError::UnknownSchemaColumn {
                column: name.clone(),
                available: info.columns.iter().map(|c| c.name.clone()).collect(),
            });
        };
        let wanted = parse_sql_type(declared)
            .map_err(|message| ConnectorError::InvalidSchemaType { column: name.clone(), message })?;
        match (&wanted, column.unconstrained_numeric) {
            (DataType::Decimal128(p, s) | DataType::Decimal256(p, s), true) if *s >= 0 => {
                column.pg_type = PgType::Scalar(PgScalar::Numeric { precision: *p, scale: *s });
            }
            _ if wanted == column.pg_type.arrow() => {}
            _ => {
                return Err(ConnectorError::InvalidSchemaType {
                    column: name.clone(),
                    message: format!(
                        "Postgres column {name} is {} (read as {}); schema may only restate it, or give an \
                         unconstrained numeric a decimal(p,s)",
                        column.type_name,
                        crate::types::sql_type_name(&column.pg_type.arrow())
                    ),
                });
            }
        }
    }
    let spec = scan::PgScanSpec::new(&source.alias, run_id, location, &info);
    let schema = spec.schema();
    let expected_rows = (info.reltuples >= 0.0).then_some(info.reltuples as u64);
    let provider = Arc::new(scan::PgTable::new(spec.clone(), registry));
    Ok(OpenedPgSource { provider, schema, expected_rows, spec })
}
