//! Admission of `match_sql`: exactly one query, and planner errors mapped to API codes.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, JoinConstraint, JoinType, ScalarValue, SchemaError};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use kalla_recipe::{ErrorCode, KallaError};

/// Most query blocks (`SELECT`s: the main query, each CTE, subquery and set operation branch)
/// `match_sql` may have. See [`check_size`].
pub const MAX_QUERY_BLOCKS: usize = 100;
/// Most set operations (`UNION`, `INTERSECT`, `EXCEPT`, `MINUS`) `match_sql` may have.
pub const MAX_SET_OPERATIONS: usize = 100;
/// Most joins (`JOIN`, and commas between the tables of a `FROM`) `match_sql` may have.
pub const MAX_JOINS: usize = 100;
/// Most operators (`AND`, `OR`, `IS`, `LIKE`, `IN`, comparisons, arithmetic, `||`, `::`, and
/// every other infix symbol) `match_sql` may have.
pub const MAX_OPERATORS: usize = 1000;

/// Refuses a `match_sql` too large to plan safely, counted on its tokens before anything parses
/// it. The SQL parser builds chains of set operations, joins, CTEs and infix operators without a
/// depth limit (nesting through parentheses it limits itself), and planning them recurses once
/// per link: measured on a 2 MiB stack (a daemon thread's), 1,000 CTEs each reading the previous
/// one or 2,000 `OR`ed comparisons overflow it, which kills the process; 300 joins take 17 s to
/// plan, blocking a thread. The limits stay far below those (300 chained CTEs plan in 0.2 s,
/// 1,000 operators in 0.7 s, 100 joins in 0.8 s) and far above a reconciliation's needs. A
/// query that does not tokenize is left to the parser, which explains the error.
fn check_size(sql: &str) -> Result<(), KallaError> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::Token;
    let Ok(tokens) = datafusion::sql::sqlparser::tokenizer::Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let (mut blocks, mut set_operations, mut joins, mut operators) = (0usize, 0usize, 0usize, 0usize);
    // Per parenthesis depth: whether the tokens are in a FROM list (where a comma is a join).
    let mut in_from = vec![false];
    for token in &tokens {
        let depth = in_from.len() - 1;
        match token {
            Token::Word(w) => match w.keyword {
                Keyword::SELECT => {
                    blocks += 1;
                    in_from[depth] = false;
                }
                Keyword::FROM => in_from[depth] = true,
                Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT | Keyword::MINUS => {
                    set_operations += 1;
                    in_from[depth] = false;
                }
                Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::FETCH
                | Keyword::WINDOW
                | Keyword::QUALIFY
                | Keyword::ON
                | Keyword::USING => in_from[depth] = false,
                Keyword::JOIN => joins += 1,
                Keyword::AND
                | Keyword::OR
                | Keyword::IS
                | Keyword::IN
                | Keyword::BETWEEN
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::RLIKE
                | Keyword::REGEXP
                | Keyword::COLLATE
                | Keyword::AT => operators += 1,
                _ => {}
            },
            Token::Comma if in_from[depth] => joins += 1,
            Token::LParen => in_from.push(false),
            Token::RParen => {
                if in_from.len() > 1 {
                    in_from.pop();
                }
            }
            // What builds no chain: names, literals, separators, brackets.
            Token::EOF
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Comma
            | Token::Whitespace(_)
            | Token::Period
            | Token::SemiColon
            | Token::RBracket
            | Token::LBrace
            | Token::RBrace
            | Token::Placeholder(_) => {}
            // Every infix symbol (comparisons, arithmetic, `||`, `::`, `[`, JSON and regex
            // operators, …).
            _ => operators += 1,
        }
    }
    for (count, max, what) in [
        (blocks, MAX_QUERY_BLOCKS, "query blocks (SELECT)"),
        (set_operations, MAX_SET_OPERATIONS, "set operations (UNION, INTERSECT, EXCEPT)"),
        (joins, MAX_JOINS, "joins"),
        (operators, MAX_OPERATORS, "operators (AND, OR, comparisons, arithmetic, …)"),
    ] {
        if count > max {
            return Err(KallaError::at(
                ErrorCode::InvalidSql,
                "match_sql",
                format!("match_sql has {count} {what}; at most {max} are accepted"),
            ));
        }
    }
    Ok(())
}

/// Parses `sql` and returns its one statement if it is a query (SELECT / WITH / set operation).
pub fn parse_match_sql(sql: &str) -> Result<Statement, KallaError> {
    check_size(sql)?;
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

/// Refuses `RIGHT`/`FULL JOIN … USING (…)` and `NATURAL RIGHT`/`FULL JOIN`: DataFusion 55 gives
/// their shared column the left side's value on every row, so on a row only the right side has
/// the column reads NULL instead of the right side's value (SQL's `COALESCE(left, right)`).
pub fn check_outer_join_using(plan: &LogicalPlan) -> Result<(), KallaError> {
    let mut refused = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Join(j) = node
            && j.join_constraint == JoinConstraint::Using
            && matches!(j.join_type, JoinType::Right | JoinType::Full)
        {
            refused = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if refused {
        return Err(KallaError::at(
            ErrorCode::InvalidSql,
            "match_sql",
            "RIGHT and FULL joins with USING (or NATURAL) are not supported: the engine would give their shared \
             column the left side's value, NULL on rows only the right side has; join ON a.col = b.col and select \
             both columns, or COALESCE(a.col, b.col)",
        ));
    }
    Ok(())
}

/// Refuses a text literal that the planner turned into a decimal it cannot hold exactly
/// (`amount = '10.005'` against a `decimal(12,2)` column): DataFusion casts the text to the
/// column's type, which rounds it (to 10.01) and silently changes which rows match. `plan` is
/// `match_sql`'s plan after the analyzer (where the casts are still visible); an unquoted number
/// is compared exactly and is not affected.
pub fn check_text_decimal_literals(plan: &LogicalPlan) -> Result<(), KallaError> {
    let mut refused: Option<String> = None;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let (inner, to) = match e {
                    Expr::Cast(c) => (c.expr.as_ref(), c.field.data_type()),
                    Expr::TryCast(c) => (c.expr.as_ref(), c.field.data_type()),
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                let (Expr::Literal(value, _), DataType::Decimal128(p, s) | DataType::Decimal256(p, s)) = (inner, to)
                else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                let text = match value {
                    ScalarValue::Utf8(Some(t)) | ScalarValue::LargeUtf8(Some(t)) | ScalarValue::Utf8View(Some(t)) => t,
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                let exact = *s >= 0 && kalla_connectors::decimal::parse_exact_unscaled(text, *p, *s).is_ok();
                if exact {
                    return Ok(TreeNodeRecursion::Continue);
                }
                refused = Some(format!(
                    "the text {text:?} is compared with a decimal({p},{s}) value and would be rounded or cut to \
                     fit it; write the number without quotes to compare it exactly"
                ));
                Ok(TreeNodeRecursion::Stop)
            })
        })
    });
    match refused {
        Some(message) => Err(KallaError::at(ErrorCode::InvalidSql, "match_sql", message)),
        None => Ok(()),
    }
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

    /// The chains that would overflow a thread's stack or take seconds to plan are refused
    /// before they are parsed; the same shapes at the limit are admitted.
    #[test]
    fn queries_past_the_size_limits_are_refused_before_they_are_parsed() {
        let unions = |n: usize| format!("SELECT a.id FROM a{}", " UNION ALL SELECT a.id FROM a".repeat(n - 1));
        let ctes = |n: usize| {
            let chain: Vec<String> = (1..n).map(|i| format!("c{i} AS (SELECT id FROM c{})", i - 1)).collect();
            format!("WITH c0 AS (SELECT id FROM a), {} SELECT id FROM c{}", chain.join(", "), n - 1)
        };
        let joins = |n: usize| {
            let chain: Vec<String> = (0..n).map(|i| format!("JOIN a a{i} ON a{i}.id = a.id")).collect();
            format!("SELECT a.id FROM a {}", chain.join(" "))
        };
        let ors = |n: usize| {
            let chain: Vec<String> = (0..n).map(|i| format!("a.id > {i}")).collect();
            format!("SELECT a.id FROM a WHERE {}", chain.join(" OR "))
        };
        let values =
            |n: usize| format!("SELECT a.id FROM a WHERE a.id IN (VALUES (1){})", " UNION ALL VALUES (1)".repeat(n));
        let commas = |n: usize| {
            let tables: String = (0..n).map(|i| format!(", a a{i}")).collect();
            format!("SELECT a.id FROM a{tables} WHERE a.id > 0")
        };
        let casts = |n: usize| format!("SELECT a.id{} FROM a", "::BIGINT".repeat(n));
        let cases = [
            // (query at the limit, one over it, what the message names)
            (values(MAX_SET_OPERATIONS), values(MAX_SET_OPERATIONS + 1), "101 set operations"),
            // Commas between a FROM's tables are joins; those of a select list, a function's
            // arguments or an IN list are not.
            (commas(MAX_JOINS), commas(MAX_JOINS + 1), "101 joins"),
            // `::` builds a chain as `+` does.
            (casts(MAX_OPERATORS), casts(MAX_OPERATORS + 1), "1001 operators"),
            (unions(MAX_QUERY_BLOCKS), unions(MAX_QUERY_BLOCKS + 1), "101 query blocks (SELECT); at most 100"),
            // Each CTE has its SELECT, and so has the main query.
            (ctes(MAX_QUERY_BLOCKS - 1), ctes(MAX_QUERY_BLOCKS), "101 query blocks (SELECT); at most 100"),
            // Each join has one `=`, and the chain has no other operator.
            (joins(MAX_JOINS), joins(MAX_JOINS + 1), "101 joins; at most 100"),
            // n comparisons and n - 1 ORs.
            (ors(500), ors(501), "1001 operators"),
        ];
        for (at_limit, over, message) in cases {
            assert!(parse_match_sql(&at_limit).is_ok(), "{at_limit:.80}");
            let e = parse_match_sql(&over).unwrap_err();
            assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidSql, Some("match_sql")), "{e:?}");
            assert!(e.message.contains(message), "{}", e.message);
        }
        // Lists do not count: wide select lists, function arguments, IN lists, strings, comments.
        let list: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
        let flat = format!(
            "SELECT a.id, a.id AS b, concat(a.x, 'a=b', a.y) -- x = y + z\n FROM a WHERE a.id IN ({}) /* a + b */",
            list.join(", ")
        );
        assert!(parse_match_sql(&flat).is_ok());
        // A chain far past the limits (it would overflow a 2 MiB stack when planned, and its
        // syntax tree when dropped) is refused on its tokens alone.
        let e = parse_match_sql(&unions(50_000)).unwrap_err();
        assert!(e.message.contains("50000 query blocks"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_are_invalid_sql() {
        let e = parse_match_sql("SELEC x FROM").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidSql);
    }
}
