//! Filters pushed into the `COPY` query, only where Postgres gives exactly DataFusion's answer.
//!
//! A predicate is translated when it is made of comparisons (`=`, `<>`, `<`, `<=`, `>`, `>=`),
//! `BETWEEN`, `IN` lists and `IS [NOT] NULL` between one column and literals, combined with
//! `AND`, `OR` and `NOT`, over columns whose comparison means the same on both sides:
//! bool, integers, `numeric`, date, timestamp, timestamptz, and text/varchar compared under
//! `COLLATE "C"` (byte order, as DataFusion compares strings; not `name`, whose literals are
//! truncated to 63 bytes). Never on floats (NaN and -0
//! ordering), citext, `char(n)`, enums, json, uuid, bytea or arrays, and never through casts or
//! functions. Values are rendered as literals (COPY takes no parameters): numbers from their
//! digits, text with quotes doubled (connections run with `standard_conforming_strings=on`, so
//! backslashes are plain characters), a text containing NUL is not pushed.
//!
//! Pushed filters are declared inexact: DataFusion still applies them to the rows read, so the
//! pushdown can only save reading rows, never decide the answer on its own.

use super::catalog::PgColumn;
use super::connect::{quote_ident, quote_literal};
use super::types::{PgScalar, PgType};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, expr::InList};

/// The Postgres text of `expr`, when it means exactly the same there.
pub fn to_sql(expr: &Expr, columns: &[PgColumn]) -> Option<String> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: op @ (Operator::And | Operator::Or), right }) => {
            let word = if *op == Operator::And { "AND" } else { "OR" };
            Some(format!("({} {word} {})", to_sql(left, columns)?, to_sql(right, columns)?))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let sql_op = comparison(*op)?;
            match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) => compare(columns, &c.name, sql_op, v),
                (Expr::Literal(v, _), Expr::Column(c)) => compare(columns, &c.name, flip(sql_op), v),
                _ => None,
            }
        }
        Expr::Not(inner) => Some(format!("(NOT {})", to_sql(inner, columns)?)),
        Expr::IsNull(inner) => Some(format!("({} IS NULL)", column_ref(inner, columns)?)),
        Expr::IsNotNull(inner) => Some(format!("({} IS NOT NULL)", column_ref(inner, columns)?)),
        Expr::Between(Between { expr, negated, low, high }) => {
            let Expr::Column(c) = expr.as_ref() else { return None };
            let (Expr::Literal(lo, _), Expr::Literal(hi, _)) = (low.as_ref(), high.as_ref()) else { return None };
            let column = find(columns, &c.name)?;
            let (lo, hi) = (literal(column, lo)?, literal(column, hi)?);
            let not = if *negated { "NOT " } else { "" };
            Some(format!("({} {not}BETWEEN {lo} AND {hi})", operand(column)))
        }
        Expr::InList(InList { expr, list, negated }) => {
            let Expr::Column(c) = expr.as_ref() else { return None };
            let column = find(columns, &c.name)?;
            let values = list
                .iter()
                .map(|e| match e {
                    Expr::Literal(v, _) => literal(column, v),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            if values.is_empty() {
                return None;
            }
            let not = if *negated { "NOT " } else { "" };
            Some(format!("({} {not}IN ({}))", operand(column), values.join(", ")))
        }
        _ => None,
    }
}

fn comparison(op: Operator) -> Option<&'static str> {
    Some(match op {
        Operator::Eq => "=",
        Operator::NotEq => "<>",
        Operator::Lt => "<",
        Operator::LtEq => "<=",
        Operator::Gt => ">",
        Operator::GtEq => ">=",
        _ => return None,
    })
}

fn flip(op: &'static str) -> &'static str {
    match op {
        "<" => ">",
        "<=" => ">=",
        ">" => "<",
        ">=" => "<=",
        same => same,
    }
}

fn find<'a>(columns: &'a [PgColumn], name: &str) -> Option<&'a PgColumn> {
    columns.iter().find(|c| c.name == name).filter(|c| pushable(c))
}

/// Columns whose comparisons Postgres evaluates exactly as DataFusion does.
fn pushable(column: &PgColumn) -> bool {
    match &column.pg_type {
        PgType::Array(_) => false,
        PgType::Scalar(s) => match s {
            PgScalar::Bool
            | PgScalar::Int2
            | PgScalar::Int4
            | PgScalar::Int8
            | PgScalar::Numeric { .. }
            | PgScalar::Date
            | PgScalar::Timestamp
            | PgScalar::TimestampTz => true,
            // Not `name`: a literal compared with it is cut to 63 bytes first.
            PgScalar::Text => matches!(column.type_name.as_str(), "text" | "varchar"),
            _ => false,
        },
    }
}

/// The column as an operand: text under the byte-order collation.
fn operand(column: &PgColumn) -> String {
    match column.pg_type {
        PgType::Scalar(PgScalar::Text) => format!("{} COLLATE \"C\"", quote_ident(&column.name)),
        _ => quote_ident(&column.name),
    }
}

fn column_ref(expr: &Expr, columns: &[PgColumn]) -> Option<String> {
    match expr {
        Expr::Column(c) => find(columns, &c.name).map(|col| quote_ident(&col.name)),
        _ => None,
    }
}

fn compare(columns: &[PgColumn], name: &str, op: &str, value: &ScalarValue) -> Option<String> {
    let column = find(columns, name)?;
    Some(format!("({} {op} {})", operand(column), literal(column, value)?))
}

/// `v` as a Postgres literal of the column's type; None for NULL or a value of another kind.
fn literal(column: &PgColumn, v: &ScalarValue) -> Option<String> {
    let PgType::Scalar(scalar) = &column.pg_type else { return None };
    let integer = |v: &ScalarValue| -> Option<i128> {
        Some(match v {
            ScalarValue::Int8(Some(x)) => *x as i128,
            ScalarValue::Int16(Some(x)) => *x as i128,
            ScalarValue::Int32(Some(x)) => *x as i128,
            ScalarValue::Int64(Some(x)) => *x as i128,
            ScalarValue::UInt8(Some(x)) => *x as i128,
            ScalarValue::UInt16(Some(x)) => *x as i128,
            ScalarValue::UInt32(Some(x)) => *x as i128,
            ScalarValue::UInt64(Some(x)) => *x as i128,
            _ => return None,
        })
    };
    match scalar {
        PgScalar::Bool => match v {
            ScalarValue::Boolean(Some(b)) => Some(if *b { "TRUE" } else { "FALSE" }.into()),
            _ => None,
        },
        PgScalar::Int2 | PgScalar::Int4 | PgScalar::Int8 => integer(v).map(|i| i.to_string()),
        PgScalar::Numeric { .. } => match v {
            ScalarValue::Decimal128(Some(x), _, s) => Some(format!("{}::numeric", decimal_text(*x, *s))),
            other => integer(other).map(|i| format!("{i}::numeric")),
        },
        PgScalar::Date => match v {
            ScalarValue::Date32(Some(days)) => {
                let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
                    .checked_add_signed(chrono::Duration::days(*days as i64))?;
                Some(format!("DATE '{}'", date.format("%Y-%m-%d")))
            }
            _ => None,
        },
        PgScalar::Timestamp | PgScalar::TimestampTz => {
            let (micros, has_zone) = match v {
                ScalarValue::TimestampMicrosecond(Some(m), tz) => (*m, tz.is_some()),
                _ => return None,
            };
            let want_zone = *scalar == PgScalar::TimestampTz;
            if has_zone != want_zone {
                return None;
            }
            let t = chrono::DateTime::from_timestamp_micros(micros)?.naive_utc();
            let text = t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
            Some(if want_zone { format!("'{text}+00'::timestamptz") } else { format!("'{text}'::timestamp") })
        }
        PgScalar::Text => match v {
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s))
                if !s.contains('\0') =>
            {
                Some(quote_literal(s))
            }
            _ => None,
        },
        _ => None,
    }
}

/// An unscaled decimal as text (`12345`, scale 2 → `123.45`).
fn decimal_text(value: i128, scale: i8) -> String {
    if scale <= 0 {
        return format!("{value}{}", "0".repeat((-scale) as usize));
    }
    let digits = value.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded =
        if digits.len() <= scale { format!("{}{digits}", "0".repeat(scale + 1 - digits.len())) } else { digits };
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{int}.{frac}", if value < 0 { "-" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn columns() -> Vec<PgColumn> {
        let c = |name: &str, t: PgScalar, type_name: &str| PgColumn {
            name: name.into(),
            pg_type: PgType::Scalar(t),
            type_name: type_name.into(),
            unconstrained_numeric: false,
        };
        vec![
            c("id", PgScalar::Int8, "int8"),
            c("amount", PgScalar::Numeric { precision: 12, scale: 2 }, "numeric"),
            c("we\"ird", PgScalar::Text, "text"),
            c("f", PgScalar::Float8, "float8"),
            c("doc", PgScalar::Text, "json"),
        ]
    }

    #[test]
    fn exact_predicates_are_rendered_with_quoted_names_and_literals() {
        let cols = columns();
        let e = col("id")
            .gt_eq(lit(10i64))
            .and(Expr::Column(datafusion::common::Column::new_unqualified("we\"ird")).eq(lit("o'k\\; DROP TABLE x")));
        assert_eq!(
            to_sql(&e, &cols).unwrap(),
            "((\"id\" >= 10) AND (\"we\"\"ird\" COLLATE \"C\" = 'o''k\\; DROP TABLE x'))"
        );
        let e = Expr::Literal(ScalarValue::Decimal128(Some(-5), 12, 2), None).lt(col("amount"));
        assert_eq!(to_sql(&e, &cols).unwrap(), "(\"amount\" > -0.05::numeric)");
        assert_eq!(decimal_text(123456, 2), "1234.56");
        assert_eq!(decimal_text(7, 3), "0.007");
        assert_eq!(decimal_text(12, -2), "1200");
    }

    #[test]
    fn inexact_comparisons_are_not_pushed() {
        let cols = columns();
        assert_eq!(to_sql(&col("f").gt(lit(1.5f64)), &cols), None);
        assert_eq!(to_sql(&col("doc").eq(lit("{}")), &cols), None);
        assert_eq!(to_sql(&col("id").eq(lit("1")), &cols), None);
        assert_eq!(
            to_sql(&Expr::Column(datafusion::common::Column::new_unqualified("we\"ird")).eq(lit("nul\0")), &cols),
            None
        );
        assert_eq!(to_sql(&col("id").gt(lit(1i64)).or(col("f").gt(lit(1.0f64))), &cols), None);
    }
}
