//! Admission of `match_sql`: exactly one query, and planner errors mapped to API codes.

use datafusion::common::{DataFusionError, SchemaError};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use kalla_recipe::{ErrorCode, KallaError};

/// Parses `sql` and returns its one statement if it is a query (SELECT / WITH / set operation).
pub fn parse_match_sql(sql: &str) -> Result<Statement, KallaError> {
    let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).map_err(|e| {
        KallaError::at(ErrorCode::InvalidSql, "match_sql", format!("match_sql does not parse: {}", strip_df_prefix(&e)))
    })?;
    if statements.len() != 1 {
        return Err(KallaError::at(
            ErrorCode::ForbiddenStatement,
            "match_sql",
            format!("match_sql must be exactly one query; it has {} statements", statements.len()),
        ));
    }
    let Some(statement) = statements.pop_front() else {
        return Err(KallaError::at(ErrorCode::ForbiddenStatement, "match_sql", "match_sql is empty"));
    };
    let kind = match &statement {
        Statement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_) => return Ok(statement),
            other => statement_kind(other),
        },
        Statement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE".to_string(),
        Statement::CopyTo(_) => "COPY".to_string(),
        Statement::Explain(_) => "EXPLAIN".to_string(),
        Statement::Reset(_) => "RESET".to_string(),
    };
    Err(KallaError::at(
        ErrorCode::ForbiddenStatement,
        "match_sql",
        format!("match_sql must be one SELECT or WITH query; {kind} is not allowed"),
    ))
}

fn statement_kind(s: &SqlStatement) -> String {
    let text = s.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second] if matches!(first.to_ascii_uppercase().as_str(), "CREATE" | "DROP" | "ALTER") => {
            format!("{} {}", first.to_ascii_uppercase(), second.to_ascii_uppercase())
        }
        [first, ..] => first.to_ascii_uppercase(),
        [] => "this statement".to_string(),
    }
}

/// DataFusion prefixes messages with the error kind ("Error during planning: "); callers do not
/// need it.
pub fn strip_df_prefix(e: &DataFusionError) -> String {
    let text = e.to_string();
    for prefix in [
        "SQL error: ",
        "Error during planning: ",
        "Schema error: ",
        "Optimizer rule",
        "This feature is not implemented: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text
}

/// Maps an error from planning `match_sql` to the API error a caller can act on.
pub fn planning_error(e: DataFusionError) -> KallaError {
    let root = e.find_root();
    let message = strip_df_prefix(root);
    let code = match root {
        DataFusionError::SchemaError(err, _) => match err.as_ref() {
            SchemaError::FieldNotFound { .. } => ErrorCode::UnknownColumn,
            SchemaError::AmbiguousReference { .. } => ErrorCode::InvalidSql,
            _ => ErrorCode::InvalidSql,
        },
        DataFusionError::Plan(m) if m.starts_with("table '") && m.contains("not found") => ErrorCode::UnknownTable,
        _ => ErrorCode::InvalidSql,
    };
    KallaError::at(code, "match_sql", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_query_is_admitted() {
        assert!(parse_match_sql("SELECT 1").is_ok());
        assert!(parse_match_sql("WITH x AS (SELECT 1 AS a) SELECT a FROM x;").is_ok());
        assert!(parse_match_sql("SELECT 1 UNION ALL SELECT 2").is_ok());
    }

    #[test]
    fn everything_else_is_forbidden() {
        for sql in [
            "DROP TABLE invoices",
            "DELETE FROM invoices",
            "INSERT INTO invoices VALUES (1)",
            "UPDATE invoices SET a = 1",
            "COPY invoices TO 'x.csv'",
            "SET datafusion.execution.batch_size = 1",
            "EXPLAIN SELECT 1",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE TABLE t AS SELECT 1",
            "SELECT 1; SELECT 2",
            "SELECT 1; DROP TABLE x",
        ] {
            let e = parse_match_sql(sql).unwrap_err();
            assert_eq!(e.code, ErrorCode::ForbiddenStatement, "{sql}: {e:?}");
        }
    }

    #[test]
    fn syntax_errors_are_invalid_sql() {
        let e = parse_match_sql("SELEC x FROM").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidSql);
    }
}
