//! Exact text → decimal conversion for CSV columns.
//!
//! Arrow's CSV reader truncates fractional digits beyond a decimal column's scale (`1.239` read
//! as `decimal(12,2)` becomes `1.23`) without a word. Kalla reconciles money, so CSV decimal
//! columns are read as text and converted by [`ParseDecimalUdf`] (`__kalla_decimal(text, precision,
//! scale, label)`), which accepts only values it can represent exactly and otherwise fails the job
//! with a message naming the column and value.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Builder, Decimal256Builder};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, i256};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use std::sync::Arc;

/// The UDF's SQL name. It starts with `__kalla`, which `match_sql` may not contain: only the scans
/// Kalla builds call it.
pub const PARSE_DECIMAL_NAME: &str = "__kalla_decimal";

/// `__kalla_decimal(text, precision, scale, label)`: text to `decimal(precision, scale)`, exactly.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ParseDecimalUdf {
    signature: Signature,
}

impl Default for ParseDecimalUdf {
    fn default() -> Self {
        ParseDecimalUdf { signature: Signature::any(4, Volatility::Immutable) }
    }
}

/// A parsed decimal: sign and the digits of the unscaled value at the target scale.
#[derive(Debug, PartialEq, Eq)]
struct Digits {
    negative: bool,
    digits: Vec<u8>,
}

/// Parses `text` as a plain decimal at `scale`, refusing anything inexact.
fn parse_exact(text: &str, precision: u8, scale: i8) -> std::result::Result<Digits, String> {
    let t = text.trim();
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("{text:?} is not a decimal number"));
    }
    let scale = scale.max(0) as usize;
    let (kept, dropped) = if frac_part.len() > scale { frac_part.split_at(scale) } else { (frac_part, "") };
    if dropped.bytes().any(|b| b != b'0') {
        return Err(format!("{text:?} has more than {scale} decimal places and would lose digits"));
    }
    let mut digits: Vec<u8> = int_part.trim_start_matches('0').bytes().map(|b| b - b'0').collect();
    digits.extend(kept.bytes().map(|b| b - b'0'));
    digits.extend(std::iter::repeat_n(0, scale - kept.len()));
    let first_nonzero = digits.iter().position(|d| *d != 0).unwrap_or(digits.len());
    let digits = digits.split_off(first_nonzero);
    if digits.len() > precision as usize {
        return Err(format!("{text:?} does not fit decimal({precision},{scale})"));
    }
    Ok(Digits { negative, digits })
}

fn to_i128(d: &Digits) -> i128 {
    // At most 38 digits: cannot overflow.
    let v = d.digits.iter().fold(0i128, |acc, x| acc * 10 + *x as i128);
    if d.negative { -v } else { v }
}

fn to_i256(d: &Digits) -> i256 {
    let ten = i256::from_i128(10);
    let v = d.digits.iter().fold(i256::ZERO, |acc, x| acc.wrapping_mul(ten).wrapping_add(i256::from_i128(*x as i128)));
    if d.negative { v.wrapping_neg() } else { v }
}

/// Parses `text` exactly at `decimal(precision, scale)` and returns the unscaled value.
pub fn parse_exact_unscaled(text: &str, precision: u8, scale: i8) -> std::result::Result<i256, String> {
    parse_exact(text, precision, scale).map(|d| to_i256(&d))
}

fn literal_i64(arg: Option<&ScalarValue>, what: &str) -> Result<i64> {
    match arg {
        Some(ScalarValue::Int64(Some(v))) => Ok(*v),
        Some(ScalarValue::Int32(Some(v))) => Ok(*v as i64),
        Some(ScalarValue::UInt8(Some(v))) => Ok(*v as i64),
        Some(ScalarValue::Int8(Some(v))) => Ok(*v as i64),
        _ => plan_err!("{PARSE_DECIMAL_NAME}: {what} must be an integer literal"),
    }
}

fn target_type(precision: i64, scale: i64) -> Result<DataType> {
    if !(1..=76).contains(&precision) || scale < 0 || scale > precision {
        return plan_err!("{PARSE_DECIMAL_NAME}: bad decimal({precision},{scale})");
    }
    Ok(if precision <= 38 {
        DataType::Decimal128(precision as u8, scale as i8)
    } else {
        DataType::Decimal256(precision as u8, scale as i8)
    })
}

fn scalar_arg(args: &ScalarFunctionArgs, i: usize) -> Option<&ScalarValue> {
    match args.args.get(i) {
        Some(ColumnarValue::Scalar(s)) => Some(s),
        _ => None,
    }
}

impl ScalarUDFImpl for ParseDecimalUdf {
    fn name(&self) -> &str {
        PARSE_DECIMAL_NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!("{PARSE_DECIMAL_NAME}: return type comes from its literal arguments")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let p = literal_i64(args.scalar_arguments.get(1).copied().flatten(), "precision")?;
        let s = literal_i64(args.scalar_arguments.get(2).copied().flatten(), "scale")?;
        Ok(Arc::new(Field::new(self.name(), target_type(p, s)?, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let label = match scalar_arg(&args, 3) {
            Some(ScalarValue::Utf8(Some(s))) => s.clone(),
            _ => String::from("column"),
        };
        let target = args.return_field.data_type().clone();
        let input = match args.args.first() {
            Some(ColumnarValue::Array(a)) => Arc::clone(a),
            Some(ColumnarValue::Scalar(s)) => s.to_array_of_size(args.number_rows)?,
            None => return exec_err!("{PARSE_DECIMAL_NAME} takes 4 arguments"),
        };
        let input = datafusion::arrow::compute::cast(&input, &DataType::Utf8)?;
        let strings = input.as_string::<i32>();
        let fail = |v: &str, e: String| -> DataFusionError {
            DataFusionError::Execution(format!("{label}: value {e}; declare a wider type in the source's schema"))
                .context(format!("reading {label} ({v:?})"))
        };
        let out: ArrayRef = match target {
            DataType::Decimal128(p, s) => {
                let mut b = Decimal128Builder::with_capacity(strings.len());
                for v in strings.iter() {
                    match v {
                        Some(v) => b.append_value(to_i128(&parse_exact(v, p, s).map_err(|e| fail(v, e))?)),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish().with_precision_and_scale(p, s)?)
            }
            DataType::Decimal256(p, s) => {
                let mut b = Decimal256Builder::with_capacity(strings.len());
                for v in strings.iter() {
                    match v {
                        Some(v) => b.append_value(to_i256(&parse_exact(v, p, s).map_err(|e| fail(v, e))?)),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish().with_precision_and_scale(p, s)?)
            }
            other => return exec_err!("{PARSE_DECIMAL_NAME}: unexpected target {other}"),
        };
        debug_assert_eq!(out.len(), args.number_rows);
        Ok(ColumnarValue::Array(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(text: &str, p: u8, s: i8) -> std::result::Result<i128, String> {
        parse_exact(text, p, s).map(|d| to_i128(&d))
    }

    #[test]
    fn exact_values_parse_at_the_target_scale() {
        assert_eq!(val("12.5", 12, 2), Ok(1250));
        assert_eq!(val("-0.01", 12, 2), Ok(-1));
        assert_eq!(val("+7", 12, 2), Ok(700));
        assert_eq!(val("1.230", 12, 2), Ok(123));
        assert_eq!(val(" 0012.30 ", 4, 2), Ok(1230));
        assert_eq!(val(".5", 3, 1), Ok(5));
        assert_eq!(val("99999999999999999999999999999999999999", 38, 0), Ok(99999999999999999999999999999999999999));
    }

    #[test]
    fn inexact_or_malformed_values_are_refused() {
        assert!(val("1.239", 12, 2).unwrap_err().contains("lose digits"));
        assert!(val("123.45", 4, 2).unwrap_err().contains("does not fit"));
        for bad in ["", "-", ".", "1e5", "1,5", "abc", "1.2.3"] {
            assert!(val(bad, 12, 2).is_err(), "{bad}");
        }
    }

    #[test]
    fn decimal256_values_keep_every_digit() {
        let d = parse_exact("-1234567890123456789012345678901234567890.5", 50, 1).unwrap();
        assert_eq!(to_i256(&d).to_string(), "-12345678901234567890123456789012345678905");
    }
}
