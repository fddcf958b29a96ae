//! Postgres column types and the Arrow types Kalla reads them as (SPEC 3.1, issue "Postgres
//! sources"). The mapping is exact: a value that cannot be represented fails the read with an
//! error naming the column; nothing is rounded, clipped or turned into NULL.
//!
//! | Postgres | Arrow |
//! |---|---|
//! | bool | Boolean |
//! | int2 / int4 / int8 | Int16 / Int32 / Int64 |
//! | float4 / float8 | Float32 / Float64 |
//! | numeric(p,s), p ≤ 38 | Decimal128(p,s); p ≤ 76: Decimal256(p,s) |
//! | numeric(p,s), s < 0 | Decimal(p−s, 0) (values are integers) |
//! | numeric(p,s), s > p | Decimal(s, s) |
//! | numeric (no typmod) | Decimal128(38,10), or the decimal the source's `schema` gives |
//! | text, varchar, name, citext, json, jsonb, enums, uuid (canonical text) | Utf8 |
//! | bpchar (`char(n)`) | Utf8, trailing blanks stripped (as Postgres compares them) |
//! | bytea | Binary |
//! | date | Date32 |
//! | timestamp / timestamptz | Timestamp(µs) / Timestamp(µs, "UTC") |
//! | time | Time64(µs) |
//! | interval | Interval(MonthDayNano) |
//! | one-dimensional arrays of the above | List |
//!
//! NaN and ±Infinity numerics, ±infinity dates and timestamps, and arrays of more than one
//! dimension fail the read naming the column. Other types are refused when the source is opened.

use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use std::sync::Arc;

/// The Arrow decimal of unconstrained `numeric` columns unless the source's `schema` says
/// otherwise.
pub const UNCONSTRAINED_NUMERIC: (u8, i8) = (38, 10);

/// A scalar Postgres type Kalla decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgScalar {
    /// bool
    Bool,
    /// int2
    Int2,
    /// int4
    Int4,
    /// int8
    Int8,
    /// float4
    Float4,
    /// float8
    Float8,
    /// numeric, read as a decimal of this precision and scale.
    Numeric {
        /// Arrow precision.
        precision: u8,
        /// Arrow scale.
        scale: i8,
    },
    /// Text-like types sent as UTF-8 text.
    Text,
    /// `char(n)`: text with trailing blanks stripped.
    Bpchar,
    /// jsonb: a version byte, then text.
    Jsonb,
    /// uuid: 16 bytes, read as canonical text.
    Uuid,
    /// bytea
    Bytea,
    /// date
    Date,
    /// timestamp
    Timestamp,
    /// timestamptz
    TimestampTz,
    /// time
    Time,
    /// interval
    Interval,
}

/// A column's type: a scalar or a one-dimensional array of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    /// A scalar.
    Scalar(PgScalar),
    /// A one-dimensional array.
    Array(PgScalar),
}

impl PgScalar {
    /// The Arrow type of this scalar.
    pub fn arrow(&self) -> DataType {
        match self {
            PgScalar::Bool => DataType::Boolean,
            PgScalar::Int2 => DataType::Int16,
            PgScalar::Int4 => DataType::Int32,
            PgScalar::Int8 => DataType::Int64,
            PgScalar::Float4 => DataType::Float32,
            PgScalar::Float8 => DataType::Float64,
            PgScalar::Numeric { precision, scale } if *precision <= 38 => DataType::Decimal128(*precision, *scale),
            PgScalar::Numeric { precision, scale } => DataType::Decimal256(*precision, *scale),
            PgScalar::Text | PgScalar::Bpchar | PgScalar::Jsonb | PgScalar::Uuid => DataType::Utf8,
            PgScalar::Bytea => DataType::Binary,
            PgScalar::Date => DataType::Date32,
            PgScalar::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgScalar::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            PgScalar::Time => DataType::Time64(TimeUnit::Microsecond),
            PgScalar::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
        }
    }
}

impl PgType {
    /// The Arrow type of this column.
    pub fn arrow(&self) -> DataType {
        match self {
            PgType::Scalar(s) => s.arrow(),
            PgType::Array(s) => DataType::List(Arc::new(Field::new("item", s.arrow(), true))),
        }
    }

    /// The scalar (of the elements, for arrays).
    pub fn scalar(&self) -> &PgScalar {
        match self {
            PgType::Scalar(s) | PgType::Array(s) => s,
        }
    }
}

/// The Arrow decimal for `numeric` with a type modifier, or an error text.
pub fn numeric_decimal(typmod: i32) -> Result<(u8, i8), String> {
    if typmod < 4 {
        return Ok(UNCONSTRAINED_NUMERIC);
    }
    let packed = typmod - 4;
    let precision = (packed >> 16) & 0xffff;
    // The scale is an 11-bit two's-complement number (negative scales since Postgres 15).
    let scale = ((packed & 0x7ff) ^ 1024) - 1024;
    let (p, s) = if scale < 0 {
        (precision - scale, 0)
    } else if scale > precision {
        (scale, scale)
    } else {
        (precision, scale)
    };
    if p > 76 {
        return Err(format!("numeric({precision},{scale}) needs {p} digits; Arrow decimals hold at most 76"));
    }
    Ok((p as u8, s as i8))
}

/// Resolves a catalog type to a Kalla type. `name` is the type's `typname`, `typtype` its
/// `typtype` (`e` for enums), `typmod` the column's type modifier.
pub fn resolve_scalar(name: &str, typtype: &str, typmod: i32) -> Result<PgScalar, String> {
    if typtype == "e" {
        return Ok(PgScalar::Text);
    }
    Ok(match name {
        "bool" => PgScalar::Bool,
        "int2" => PgScalar::Int2,
        "int4" => PgScalar::Int4,
        "int8" => PgScalar::Int8,
        "float4" => PgScalar::Float4,
        "float8" => PgScalar::Float8,
        "numeric" => {
            let (precision, scale) = numeric_decimal(typmod)?;
            PgScalar::Numeric { precision, scale }
        }
        "text" | "varchar" | "name" | "citext" | "json" => PgScalar::Text,
        "bpchar" => PgScalar::Bpchar,
        "jsonb" => PgScalar::Jsonb,
        "uuid" => PgScalar::Uuid,
        "bytea" => PgScalar::Bytea,
        "date" => PgScalar::Date,
        "timestamp" => PgScalar::Timestamp,
        "timestamptz" => PgScalar::TimestampTz,
        "time" => PgScalar::Time,
        "interval" => PgScalar::Interval,
        other => return Err(format!("type {other} is not supported")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typmod(p: i32, s: i32) -> i32 {
        ((p << 16) | (s & 0x7ff)) + 4
    }

    #[test]
    fn numeric_type_modifiers_map_to_exact_decimals() {
        assert_eq!(numeric_decimal(-1), Ok((38, 10)));
        assert_eq!(numeric_decimal(typmod(12, 2)), Ok((12, 2)));
        assert_eq!(numeric_decimal(typmod(38, 0)), Ok((38, 0)));
        assert_eq!(numeric_decimal(typmod(50, 5)), Ok((50, 5)));
        assert_eq!(numeric_decimal(typmod(5, -2)), Ok((7, 0)));
        assert_eq!(numeric_decimal(typmod(3, 5)), Ok((5, 5)));
        assert!(numeric_decimal(typmod(76, -3)).is_err());
        assert_eq!(PgScalar::Numeric { precision: 39, scale: 2 }.arrow(), DataType::Decimal256(39, 2));
    }
}
