//! Job filters (`{column, op, value}`) as DataFusion predicates, checked against the real schema.
//!
//! A value must fit its column exactly: `100.005` against `decimal(12,2)`, `"abc"` against a
//! date, a number against a text column, `like` on a number — each is an `invalid_filter` error
//! naming the field. Nothing is dropped, rounded or reinterpreted.

use crate::decimal::parse_exact_unscaled;
use crate::error::ConnectorError;
use crate::file::col_exact;
use crate::types::sql_type_name;
use datafusion::arrow::compute::kernels::cast_utils::{Parser, string_to_timestamp_nanos};
use datafusion::arrow::datatypes::{DataType, Date32Type, Schema, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, lit};
use kalla_recipe::{Filter, FilterOp, FilterScalar, FilterValue};

/// The conjunction of `filters` over `schema`, or `None` when there are none.
pub fn filters_to_expr(schema: &Schema, filters: &[Filter]) -> Result<Option<Expr>, ConnectorError> {
    let mut out: Option<Expr> = None;
    for f in filters {
        let e = filter_to_expr(schema, f)?;
        out = Some(match out {
            None => e,
            Some(prev) => prev.and(e),
        });
    }
    Ok(out)
}

fn describe(s: &FilterScalar) -> String {
    match s {
        FilterScalar::Text(t) => format!("{t:?}"),
        FilterScalar::Number(n) => n.clone(),
        FilterScalar::Bool(b) => b.to_string(),
    }
}

/// Converts one scalar to a literal of the column's type, or says why it does not fit.
fn scalar_for(column: &str, t: &DataType, v: &FilterScalar) -> Result<ScalarValue, String> {
    let misfit = |why: &str| {
        format!("filter value {} does not fit column {column:?} of type {}: {why}", describe(v), sql_type_name(t))
    };
    match (t, v) {
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, FilterScalar::Text(s)) => Ok(match t {
            DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(s.clone())),
            DataType::Utf8View => ScalarValue::Utf8View(Some(s.clone())),
            _ => ScalarValue::Utf8(Some(s.clone())),
        }),
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, _) => {
            Err(misfit("a text column takes a string value"))
        }
        (DataType::Boolean, FilterScalar::Bool(b)) => Ok(ScalarValue::Boolean(Some(*b))),
        (DataType::Boolean, _) => Err(misfit("a boolean column takes true or false")),
        (
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64,
            FilterScalar::Number(n) | FilterScalar::Text(n),
        ) => {
            let as_i128: i128 = n.trim().parse().map_err(|_| misfit("not an integer"))?;
            let out = match t {
                DataType::Int8 => i8::try_from(as_i128).map(|x| ScalarValue::Int8(Some(x))).ok(),
                DataType::Int16 => i16::try_from(as_i128).map(|x| ScalarValue::Int16(Some(x))).ok(),
                DataType::Int32 => i32::try_from(as_i128).map(|x| ScalarValue::Int32(Some(x))).ok(),
                DataType::Int64 => i64::try_from(as_i128).map(|x| ScalarValue::Int64(Some(x))).ok(),
                DataType::UInt8 => u8::try_from(as_i128).map(|x| ScalarValue::UInt8(Some(x))).ok(),
                DataType::UInt16 => u16::try_from(as_i128).map(|x| ScalarValue::UInt16(Some(x))).ok(),
                DataType::UInt32 => u32::try_from(as_i128).map(|x| ScalarValue::UInt32(Some(x))).ok(),
                _ => u64::try_from(as_i128).map(|x| ScalarValue::UInt64(Some(x))).ok(),
            };
            out.ok_or_else(|| misfit("out of the column's range"))
        }
        (DataType::Float32 | DataType::Float64, FilterScalar::Number(n)) => {
            let f: f64 = n.parse().map_err(|_| misfit("not a number"))?;
            // A value the column's type would hold as infinity, or as 0 though it is not, would
            // compare as another number.
            let (finite, zero) = match t {
                DataType::Float32 => ((f as f32).is_finite(), f as f32 == 0.0),
                _ => (f.is_finite(), f == 0.0),
            };
            let mantissa = n.split(['e', 'E']).next().unwrap_or_default();
            if !finite {
                return Err(misfit("out of the column's range"));
            }
            if zero && mantissa.bytes().any(|b| matches!(b, b'1'..=b'9')) {
                return Err(misfit("too small for the column's type, which would hold it as 0"));
            }
            Ok(if matches!(t, DataType::Float32) {
                ScalarValue::Float32(Some(f as f32))
            } else {
                ScalarValue::Float64(Some(f))
            })
        }
        (DataType::Decimal128(p, s), FilterScalar::Number(n) | FilterScalar::Text(n)) => {
            let v = parse_exact_unscaled(n, *p, *s).map_err(|e| misfit(&e))?;
            let v = v.to_i128().ok_or_else(|| misfit("out of range"))?;
            Ok(ScalarValue::Decimal128(Some(v), *p, *s))
        }
        (DataType::Decimal256(p, s), FilterScalar::Number(n) | FilterScalar::Text(n)) => {
            let v = parse_exact_unscaled(n, *p, *s).map_err(|e| misfit(&e))?;
            Ok(ScalarValue::Decimal256(Some(v), *p, *s))
        }
        (DataType::Date32, FilterScalar::Text(s)) => Date32Type::parse(s.trim())
            .map(|d| ScalarValue::Date32(Some(d)))
            .ok_or_else(|| misfit("expected a date YYYY-MM-DD")),
        (DataType::Timestamp(unit, tz), FilterScalar::Text(s)) => {
            let nanos = string_to_timestamp_nanos(s.trim())
                .map_err(|_| misfit("expected a timestamp like 2026-01-31T12:00:00Z"))?;
            let tz = tz.clone();
            Ok(match unit {
                TimeUnit::Second => exact_div(nanos, 1_000_000_000).map(|x| ScalarValue::TimestampSecond(Some(x), tz)),
                TimeUnit::Millisecond => {
                    exact_div(nanos, 1_000_000).map(|x| ScalarValue::TimestampMillisecond(Some(x), tz))
                }
                TimeUnit::Microsecond => {
                    exact_div(nanos, 1_000).map(|x| ScalarValue::TimestampMicrosecond(Some(x), tz))
                }
                TimeUnit::Nanosecond => Some(ScalarValue::TimestampNanosecond(Some(nanos), tz)),
            }
            .ok_or_else(|| misfit("more precise than the column"))?)
        }
        (DataType::Date32 | DataType::Timestamp(..) | DataType::Float32 | DataType::Float64, _) => {
            Err(misfit("wrong kind of value"))
        }
        (DataType::Decimal128(..) | DataType::Decimal256(..), _) => Err(misfit("a decimal column takes a number")),
        _ => Err(format!("filters on column {column:?} of type {} are not supported", sql_type_name(t))),
    }
}

fn exact_div(v: i64, d: i64) -> Option<i64> {
    (v % d == 0).then_some(v / d)
}

fn filter_to_expr(schema: &Schema, f: &Filter) -> Result<Expr, ConnectorError> {
    let field = schema.field_with_name(&f.column).map_err(|_| ConnectorError::UnknownFilterColumn {
        column: f.column.clone(),
        available: schema.fields().iter().map(|x| x.name().clone()).collect(),
        field: f.field.clone(),
    })?;
    let t = field.data_type();
    let vfield = format!("{}.value", f.field);
    let one = |v: &FilterScalar, path: &str| {
        scalar_for(&f.column, t, v)
            .map_err(|message| ConnectorError::InvalidFilter { message, field: path.to_string() })
    };
    let c = col_exact(&f.column);
    Ok(match (&f.op, &f.value) {
        (FilterOp::IsNull, FilterValue::None) => c.is_null(),
        (FilterOp::IsNotNull, FilterValue::None) => c.is_not_null(),
        (FilterOp::Like, FilterValue::One(v @ FilterScalar::Text(_))) => {
            if !matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
                return Err(ConnectorError::InvalidFilter {
                    message: format!("like needs a text column; {:?} is {}", f.column, sql_type_name(t)),
                    field: f.field.clone(),
                });
            }
            c.like(lit(one(v, &vfield)?))
        }
        (FilterOp::Between, FilterValue::Range(lo, hi)) => {
            c.between(lit(one(lo, &format!("{vfield}[0]"))?), lit(one(hi, &format!("{vfield}[1]"))?))
        }
        (FilterOp::In, FilterValue::List(items)) => {
            let mut list = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                list.push(lit(one(v, &format!("{vfield}[{i}]"))?));
            }
            c.in_list(list, false)
        }
        (op, FilterValue::One(v)) => {
            let l = lit(one(v, &vfield)?);
            match op {
                FilterOp::Eq => c.eq(l),
                FilterOp::Neq => c.not_eq(l),
                FilterOp::Gt => c.gt(l),
                FilterOp::Gte => c.gt_eq(l),
                FilterOp::Lt => c.lt(l),
                FilterOp::Lte => c.lt_eq(l),
                _ => {
                    return Err(ConnectorError::InvalidFilter {
                        message: format!("operator {op:?} does not take this value"),
                        field: vfield,
                    });
                }
            }
        }
        (op, _) => {
            return Err(ConnectorError::InvalidFilter {
                message: format!("operator {op:?} does not take this value"),
                field: vfield,
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("on", DataType::Date32, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("r", DataType::Float32, true),
            Field::new("d", DataType::Float64, true),
        ])
    }

    fn f(column: &str, op: FilterOp, value: FilterValue) -> Filter {
        Filter { column: column.into(), op, value, field: "sources[0].filters[0]".into() }
    }

    fn n(s: &str) -> FilterScalar {
        FilterScalar::Number(s.into())
    }

    fn t(s: &str) -> FilterScalar {
        FilterScalar::Text(s.into())
    }

    #[test]
    fn fitting_values_become_exact_literals() {
        let e = filter_to_expr(&schema(), &f("amount", FilterOp::Gte, FilterValue::One(n("100.5")))).unwrap();
        assert_eq!(e.to_string(), "amount >= Decimal128(100.50,12,2)");
        let e = filter_to_expr(
            &schema(),
            &f("on", FilterOp::Between, FilterValue::Range(t("2026-01-01"), t("2026-01-31"))),
        )
        .unwrap();
        assert_eq!(e.to_string(), "on BETWEEN Date32(\"2026-01-01\") AND Date32(\"2026-01-31\")");
        let e = filter_to_expr(&schema(), &f("at", FilterOp::Lt, FilterValue::One(t("2026-01-01T01:00:00+01:00"))))
            .unwrap();
        assert!(e.to_string().contains("1767225600000000"), "{e}");
    }

    #[test]
    fn a_float_column_takes_any_number_its_type_holds_as_itself_or_rounded() {
        for (column, value) in
            [("r", "3.4e38"), ("r", "0.1"), ("r", "0"), ("r", "-0.0e-50"), ("d", "1e-300"), ("d", "1e308")]
        {
            let e = filter_to_expr(&schema(), &f(column, FilterOp::Gt, FilterValue::One(n(value)))).unwrap();
            // The nearest value of the column's type.
            let shown = match column {
                "r" => format!("r > Float32({})", value.parse::<f32>().unwrap()),
                _ => format!("d > Float64({})", value.parse::<f64>().unwrap()),
            };
            assert_eq!(e.to_string(), shown, "{column} {value}");
        }
    }

    /// `1e39` is infinity as a `real`, and `1e-50` is 0: the filter would keep other rows.
    #[test]
    fn a_float_value_its_column_would_hold_as_infinity_or_zero_is_refused() {
        for (column, value, why) in [
            ("r", "1e39", "out of the column's range"),
            ("r", "-1e39", "out of the column's range"),
            ("d", "1e400", "out of the column's range"),
            ("r", "1e-50", "too small for the column's type, which would hold it as 0"),
            ("d", "-2.5e-400", "too small for the column's type, which would hold it as 0"),
        ] {
            match filter_to_expr(&schema(), &f(column, FilterOp::Gt, FilterValue::One(n(value)))) {
                Err(ConnectorError::InvalidFilter { field, message }) => {
                    assert_eq!(field, "sources[0].filters[0].value");
                    assert!(message.ends_with(why), "{column} {value}: {message}");
                }
                other => panic!("{column} {value} gave {other:?}"),
            }
        }
    }

    #[test]
    fn misfitting_values_are_invalid_filter_with_the_field() {
        let cases = [
            f("amount", FilterOp::Eq, FilterValue::One(n("100.005"))),
            f("id", FilterOp::Eq, FilterValue::One(n("1.5"))),
            f("name", FilterOp::Eq, FilterValue::One(n("5"))),
            f("on", FilterOp::Eq, FilterValue::One(t("31/01/2026"))),
            f("ok", FilterOp::Eq, FilterValue::One(t("yes"))),
            f("amount", FilterOp::Like, FilterValue::One(t("1%"))),
            f("id", FilterOp::In, FilterValue::List(vec![n("1"), t("x")])),
        ];
        for c in cases {
            match filter_to_expr(&schema(), &c) {
                Err(ConnectorError::InvalidFilter { field, .. }) => assert!(field.starts_with("sources[0].filters[0]")),
                other => panic!("{c:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_filter_column_is_reported() {
        let e = filter_to_expr(&schema(), &f("nope", FilterOp::IsNull, FilterValue::None)).unwrap_err();
        assert!(matches!(e, ConnectorError::UnknownFilterColumn { .. }));
    }
}
