//! The SQL type names a source's `schema` may use, mapped to Arrow types.
//!
//! The list is closed on purpose: an unknown name is an error rather than a silent fallback to
//! text, because a money column read as the wrong type gives wrong answers.

use datafusion::arrow::datatypes::{DataType, TimeUnit};

/// The largest precision a Decimal128 holds.
pub const DECIMAL128_MAX_PRECISION: u8 = 38;
/// The largest precision a Decimal256 holds.
pub const DECIMAL256_MAX_PRECISION: u8 = 76;

/// Parses a SQL type name (`decimal(12,2)`, `date`, `timestamptz`, `text`, `bigint`, …).
pub fn parse_sql_type(text: &str) -> Result<DataType, String> {
    let norm: String = text.trim().to_ascii_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
    let simple = match norm.as_str() {
        "text" | "varchar" | "string" | "character varying" | "char" | "character" => Some(DataType::Utf8),
        "bigint" | "int8" | "long" => Some(DataType::Int64),
        "integer" | "int" | "int4" => Some(DataType::Int32),
        "smallint" | "int2" => Some(DataType::Int16),
        "double" | "double precision" | "float8" | "float" => Some(DataType::Float64),
        "real" | "float4" => Some(DataType::Float32),
        "boolean" | "bool" => Some(DataType::Boolean),
        "date" => Some(DataType::Date32),
        "timestamp" | "timestamp without time zone" => Some(DataType::Timestamp(TimeUnit::Microsecond, None)),
        "timestamptz" | "timestamp with time zone" => {
            Some(DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))
        }
        _ => None,
    };
    if let Some(t) = simple {
        return Ok(t);
    }
    let (name, args) = match norm.split_once('(') {
        Some((name, rest)) => match rest.strip_suffix(')') {
            Some(args) => (name.trim(), args),
            None => return Err(format!("unknown type {text:?}")),
        },
        None => return Err(format!("unknown type {text:?}")),
    };
    match name {
        "decimal" | "numeric" => {
            let parts: Vec<&str> = args.split(',').map(str::trim).collect();
            let parse = |s: &str| s.parse::<i64>().map_err(|_| format!("bad decimal argument {s:?} in {text:?}"));
            let (p, s) = match parts.as_slice() {
                [p] => (parse(p)?, 0),
                [p, s] => (parse(p)?, parse(s)?),
                _ => return Err(format!("decimal takes (precision, scale), got {text:?}")),
            };
            if p < 1 || p > DECIMAL256_MAX_PRECISION as i64 {
                return Err(format!("decimal precision must be 1..=76, got {p}"));
            }
            if s < 0 || s > p {
                return Err(format!("decimal scale must be 0..=precision, got {s}"));
            }
            Ok(if p <= DECIMAL128_MAX_PRECISION as i64 {
                DataType::Decimal128(p as u8, s as i8)
            } else {
                DataType::Decimal256(p as u8, s as i8)
            })
        }
        "varchar" | "character varying" | "char" | "character" => Ok(DataType::Utf8),
        _ => Err(format!("unknown type {text:?}")),
    }
}

/// A SQL-ish name of an Arrow type for messages and the validate endpoint.
pub fn sql_type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Float64 => "double".into(),
        DataType::Float32 => "real".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        other => other.to_string().to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_names_map_to_exact_arrow_types() {
        assert_eq!(parse_sql_type("decimal(12,2)").unwrap(), DataType::Decimal128(12, 2));
        assert_eq!(parse_sql_type("NUMERIC( 50 , 10 )").unwrap(), DataType::Decimal256(50, 10));
        assert_eq!(parse_sql_type("numeric(5)").unwrap(), DataType::Decimal128(5, 0));
        assert_eq!(
            parse_sql_type("timestamptz").unwrap(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(parse_sql_type("Timestamp").unwrap(), DataType::Timestamp(TimeUnit::Microsecond, None));
        assert_eq!(parse_sql_type("varchar(20)").unwrap(), DataType::Utf8);
        assert_eq!(parse_sql_type("bigint").unwrap(), DataType::Int64);
    }

    #[test]
    fn unknown_or_malformed_types_are_errors() {
        for bad in ["money", "decimal(0,0)", "decimal(5,6)", "decimal(80,2)", "decimal(a,b)", "decimal(5"] {
            assert!(parse_sql_type(bad).is_err(), "{bad}");
        }
    }
}
