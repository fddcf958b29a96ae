//! Strict reading of CSV columns whose type was inferred.
//!
//! CSV types are inferred from the first [`INFER_RECORDS`](crate::file::INFER_RECORDS) records of
//! the first file. Arrow's CSV reader then parses every later value leniently: `0012`, `+12` and
//! ` 12` all become 12, and `-0` becomes 0, so a late identifier merges with another key without a
//! word. Inferred numeric columns are therefore read as text and converted by [`InferredUdf`]
//! (`__kalla_inferred(text, type, context)`), which accepts only the values the inference itself
//! takes for that type — the text a value reads back as — and otherwise fails the job with
//! `source_read_failed` naming the source, the file, the line and the column.
//!
//! The conversion is one pass over each value's bytes (what Arrow's own parser does); finding the
//! file and line of a bad value re-reads the source's files, only on that failure path. `context`
//! is a JSON literal ([`InferredColumn`]) carried in the plan, so a plan shipped to an executor
//! needs nothing but the function's name to run it.

use crate::decimal::parse_exact_unscaled;
use crate::file::INFER_RECORDS;
use crate::types::{parse_sql_type, sql_type_name};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, Float64Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use kalla_recipe::{ErrorCode, KallaError};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

/// The UDF's SQL name. It starts with `__kalla`, which `match_sql` may not contain: a query calling
/// it could name any file in `context` and read it back in the error message.
pub const INFERRED_NAME: &str = "__kalla_inferred";

/// One file of a CSV source, for naming where a bad value is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvFileRef {
    /// The absolute path, to re-read it.
    pub path: String,
    /// The path as messages show it (relative to the data root).
    pub shown: String,
}

/// Where an inferred column's values come from: what a failure needs to find the bad value's file
/// and line. Serialized as the UDF's third argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferredColumn {
    /// The source's alias.
    pub source: String,
    /// The column's name.
    pub column: String,
    /// The column's position in each record.
    pub index: usize,
    /// The source's files, in the order they are listed.
    pub files: Vec<CsvFileRef>,
    /// The field delimiter.
    pub delimiter: u8,
    /// The quote character.
    pub quote: u8,
    /// The escape character, if any.
    pub escape: Option<u8>,
    /// Whether each file starts with a header line.
    pub has_header: bool,
    /// The text read as NULL, besides the empty field.
    pub null_value: Option<String>,
}

/// The types inference gives a numeric column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inferred {
    Bigint,
    Double,
    Decimal(u8, i8),
}

impl Inferred {
    fn of(t: &DataType) -> Option<Inferred> {
        match t {
            DataType::Int64 => Some(Inferred::Bigint),
            DataType::Float64 => Some(Inferred::Double),
            DataType::Decimal128(p, s) => Some(Inferred::Decimal(*p, *s)),
            _ => None,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Inferred::Bigint => DataType::Int64,
            Inferred::Double => DataType::Float64,
            Inferred::Decimal(p, s) => DataType::Decimal128(p, s),
        }
    }

    /// Checks `v` has the form inference gives this type; `Err` says why not.
    fn check(self, v: &str) -> std::result::Result<(), Cow<'static, str>> {
        match self {
            Inferred::Bigint => strict_i64(v).map(|_| ()),
            Inferred::Double => strict_f64(v).map(|_| ()),
            Inferred::Decimal(p, s) => strict_decimal(v, p, s).map(|_| ()),
        }
    }
}

/// Why `v`, which does not have the form inference gives a `what`, does not.
fn shape_reason(v: &str, what: &'static str) -> Cow<'static, str> {
    if v.trim() != v {
        "has surrounding spaces".into()
    } else if v.starts_with('+') {
        "has a leading +".into()
    } else {
        what.into()
    }
}

/// An integer as inference takes one: `-?(0|[1-9][0-9]*)`, not `-0`, within the bigint range.
fn strict_i64(v: &str) -> std::result::Result<i64, Cow<'static, str>> {
    let (negative, digits) = match v.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(shape_reason(v, "is not an integer"));
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return Err("has leading zeros".into());
    }
    if negative && digits == b"0" {
        return Err("is a negative zero".into());
    }
    // Accumulated as a negative number, so that i64::MIN fits.
    let mut acc: i64 = 0;
    for d in digits {
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_sub(i64::from(d - b'0')))
            .ok_or(Cow::Borrowed("is out of the bigint range"))?;
    }
    if negative { Ok(acc) } else { acc.checked_neg().ok_or(Cow::Borrowed("is out of the bigint range")) }
}

/// [`strict_i64`] for the integers of at most 18 digits (which cannot overflow), the hot path;
/// `None` for anything else, valid or not.
#[inline]
fn short_i64(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    if digits.is_empty() || digits.len() > 18 || (digits[0] == b'0' && (digits.len() > 1 || negative)) {
        return None;
    }
    let mut acc: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        acc = acc * 10 + i64::from(d);
    }
    Some(if negative { -acc } else { acc })
}

/// Checks the form inference gives numbers: `-?(\d+|\d*\.\d+|\d+\.\d*)`, with an exponent
/// `[eE][-+]?\d+` when `exponent`, and no leading zero in the integer part.
fn plain_number(v: &str, exponent: bool) -> std::result::Result<(), Cow<'static, str>> {
    let what = if exponent { "is not a number" } else { "is not a plain decimal number" };
    let b = v.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            frac_digits += 1;
        }
    }
    let mantissa_ok = int_digits + frac_digits > 0;
    if mantissa_ok && exponent && i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(shape_reason(v, what));
        }
    }
    if !mantissa_ok || i != b.len() {
        return Err(shape_reason(v, what));
    }
    if int_digits > 1 && b[int_start] == b'0' {
        return Err("has leading zeros".into());
    }
    Ok(())
}

fn strict_f64(v: &str) -> std::result::Result<f64, Cow<'static, str>> {
    plain_number(v, true)?;
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err("is out of the double range".into()),
    }
}

fn strict_decimal(v: &str, precision: u8, scale: i8) -> std::result::Result<i128, Cow<'static, str>> {
    plain_number(v, false)?;
    let unscaled = parse_exact_unscaled(v, precision, scale).map_err(|e| {
        // parse_exact's message starts with the quoted value, which the caller shows already.
        let quoted = format!("{v:?} ");
        Cow::Owned(e.strip_prefix(quoted.as_str()).map(str::to_string).unwrap_or(e))
    })?;
    unscaled.to_i128().ok_or(Cow::Borrowed("does not fit its decimal type"))
}

/// `__kalla_inferred(text, type, context)`: `text` as `type` (`bigint`, `double` or
/// `decimal(p,s)`), failing on any value inference would not have given that type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct InferredUdf {
    signature: Signature,
}

impl Default for InferredUdf {
    fn default() -> Self {
        InferredUdf { signature: Signature::any(3, Volatility::Immutable) }
    }
}

fn literal_text<'a>(arg: Option<&'a ScalarValue>, what: &str) -> Result<&'a str> {
    match arg {
        Some(ScalarValue::Utf8(Some(s))) => Ok(s),
        _ => plan_err!("{INFERRED_NAME}: {what} must be a text literal"),
    }
}

fn inferred_type(text: &str) -> Result<Inferred> {
    match parse_sql_type(text).ok().as_ref().and_then(Inferred::of) {
        Some(t) => Ok(t),
        None => plan_err!("{INFERRED_NAME}: {text:?} is not a type CSV inference gives"),
    }
}

/// The error for the first bad value of `column` in its files (re-read to find it), or, if the
/// files no longer hold one, for `value` as the batch had it.
fn bad_value(column: &InferredColumn, kind: Inferred, value: &str, reason: &str) -> DataFusionError {
    let type_name = sql_type_name(&kind.data_type());
    let advice = format!(
        "so it does not read back as the {type_name} the first {INFER_RECORDS} records gave the column; \
         declare the column's type in the source's schema (e.g. \"text\")"
    );
    let message = match locate(column, kind) {
        Some(found) => format!(
            "source {}: {} line {}, column {}: value {:?} {}, {advice}",
            column.source, found.file, found.line, column.column, found.value, found.reason
        ),
        None => format!("source {}: column {}: value {value:?} {reason}, {advice}", column.source, column.column),
    };
    DataFusionError::External(Box::new(KallaError::new(ErrorCode::SourceReadFailed, message)))
}

/// A bad value found in a file.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    file: String,
    line: u64,
    value: String,
    reason: String,
}

/// The first value of `column` in its files (in order) that `kind` refuses.
fn locate(column: &InferredColumn, kind: Inferred) -> Option<Found> {
    for file in &column.files {
        let path = Path::new(&file.path);
        let gz = file.path.to_ascii_lowercase().ends_with(".gz");
        let raw = std::fs::File::open(path).ok()?;
        let input: Box<dyn std::io::Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(raw)))
        } else {
            Box::new(std::io::BufReader::new(raw))
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(column.delimiter)
            .quote(column.quote)
            .escape(column.escape)
            .from_reader(input);
        let mut record = csv::ByteRecord::new();
        let mut first = true;
        // A record the reader cannot parse ends the search in this file.
        while let Ok(true) = reader.read_byte_record(&mut record) {
            if std::mem::take(&mut first) && column.has_header {
                continue;
            }
            let Some(Ok(v)) = record.get(column.index).map(std::str::from_utf8) else { continue };
            if v.is_empty() || column.null_value.as_deref() == Some(v) {
                continue;
            }
            if let Err(reason) = kind.check(v) {
                return Some(Found {
                    file: file.shown.clone(),
                    line: record.position().map_or(0, |p| p.line()),
                    value: v.to_string(),
                    reason: reason.into_owned(),
                });
            }
        }
    }
    None
}

impl ScalarUDFImpl for InferredUdf {
    fn name(&self) -> &str {
        INFERRED_NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!("{INFERRED_NAME}: return type comes from its literal arguments")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let t = inferred_type(literal_text(args.scalar_arguments.get(1).copied().flatten(), "type")?)?;
        Ok(Arc::new(Field::new(self.name(), t.data_type(), true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let kind = match Inferred::of(args.return_field.data_type()) {
            Some(k) => k,
            None => return exec_err!("{INFERRED_NAME}: unexpected target {}", args.return_field.data_type()),
        };
        let input = match args.args.first() {
            Some(ColumnarValue::Array(a)) => Arc::clone(a),
            Some(ColumnarValue::Scalar(s)) => s.to_array_of_size(args.number_rows)?,
            None => return exec_err!("{INFERRED_NAME} takes 3 arguments"),
        };
        let input = datafusion::arrow::compute::cast(&input, &DataType::Utf8)?;
        let strings = input.as_string::<i32>();
        let fail = |v: &str, reason: Cow<'static, str>| -> DataFusionError {
            let context = match args.args.get(2) {
                Some(ColumnarValue::Scalar(ScalarValue::Utf8(Some(c)))) => serde_json::from_str(c).ok(),
                _ => None,
            };
            match context {
                Some(column) => bad_value(&column, kind, v, &reason),
                None => DataFusionError::External(Box::new(KallaError::new(
                    ErrorCode::SourceReadFailed,
                    format!(
                        "a CSV column: value {v:?} {reason}, so it does not read back as the column's inferred type"
                    ),
                ))),
            }
        };
        let nulls = strings.nulls().cloned();
        let n = strings.len();
        let out: ArrayRef = match kind {
            Inferred::Bigint => {
                // The common case in one tight pass over the bytes; anything else (a null, a
                // 19-digit number, a bad value) takes the full check.
                let offsets = strings.value_offsets();
                let data = strings.value_data();
                let mut values = Vec::with_capacity(n);
                for (i, w) in offsets.windows(2).enumerate() {
                    let bytes = data.get(w[0] as usize..w[1] as usize).unwrap_or_default();
                    values.push(match short_i64(bytes) {
                        Some(x) => x,
                        None if strings.is_null(i) => 0,
                        None => {
                            let v = strings.value(i);
                            strict_i64(v).map_err(|r| fail(v, r))?
                        }
                    });
                }
                Arc::new(Int64Array::new(values.into(), nulls))
            }
            Inferred::Double => {
                let mut values = Vec::with_capacity(n);
                for i in 0..n {
                    values.push(if strings.is_null(i) {
                        0.0
                    } else {
                        let v = strings.value(i);
                        strict_f64(v).map_err(|r| fail(v, r))?
                    });
                }
                Arc::new(Float64Array::new(values.into(), nulls))
            }
            Inferred::Decimal(p, s) => {
                let mut values = Vec::with_capacity(n);
                for i in 0..n {
                    values.push(if strings.is_null(i) {
                        0
                    } else {
                        let v = strings.value(i);
                        strict_decimal(v, p, s).map_err(|r| fail(v, r))?
                    });
                }
                Arc::new(Decimal128Array::new(values.into(), nulls).with_precision_and_scale(p, s)?)
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_accepted_only_in_the_form_inference_gives_them() {
        assert_eq!(strict_i64("0"), Ok(0));
        assert_eq!(strict_i64("-12"), Ok(-12));
        assert_eq!(strict_i64("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(strict_i64("-9223372036854775808"), Ok(i64::MIN));
        let why = |v: &str| strict_i64(v).unwrap_err().into_owned();
        assert_eq!(why("0012"), "has leading zeros");
        assert_eq!(why("-01"), "has leading zeros");
        assert_eq!(why("-0"), "is a negative zero");
        assert_eq!(why("+12"), "has a leading +");
        assert_eq!(why(" 12"), "has surrounding spaces");
        assert_eq!(why("12 "), "has surrounding spaces");
        assert_eq!(why("9223372036854775808"), "is out of the bigint range");
        for bad in ["", "-", "12.5", "1e3", "abc", "1_000"] {
            assert_eq!(why(bad), "is not an integer", "{bad}");
        }
        // The hot path agrees with the full check wherever it answers.
        for v in ["0", "-1", "17", "999999999999999999", "-999999999999999999", "0012", "-0", "+1", " 1", "1a", ""] {
            if let Some(x) = short_i64(v.as_bytes()) {
                assert_eq!(strict_i64(v), Ok(x), "{v}");
            }
        }
        assert_eq!(short_i64(b"-999999999999999999"), Some(-999_999_999_999_999_999));
        assert_eq!(short_i64(b"1000000000000000000"), None);
    }

    #[test]
    fn doubles_and_decimals_are_accepted_only_in_the_form_inference_gives_them() {
        assert_eq!(strict_f64("1e3"), Ok(1000.0));
        assert_eq!(strict_f64("-.5E-1"), Ok(-0.05));
        assert_eq!(strict_f64("0.5"), Ok(0.5));
        assert_eq!(strict_f64("1e999").unwrap_err(), "is out of the double range");
        assert_eq!(strict_f64("01.5").unwrap_err(), "has leading zeros");
        assert_eq!(strict_f64("+1.5").unwrap_err(), "has a leading +");
        assert_eq!(strict_f64("1e").unwrap_err(), "is not a number");
        assert_eq!(strict_f64("NaN").unwrap_err(), "is not a number");
        assert_eq!(strict_decimal("12.5", 38, 2), Ok(1250));
        assert_eq!(strict_decimal("-0.05", 38, 2), Ok(-5));
        assert_eq!(strict_decimal("7.", 38, 2), Ok(700));
        assert_eq!(strict_decimal("0012.50", 38, 2).unwrap_err(), "has leading zeros");
        assert_eq!(strict_decimal(" 12.50", 38, 2).unwrap_err(), "has surrounding spaces");
        assert_eq!(strict_decimal("1e3", 38, 2).unwrap_err(), "is not a plain decimal number");
        assert_eq!(strict_decimal("1.239", 38, 2).unwrap_err(), "has more than 2 decimal places and would lose digits");
    }
}
