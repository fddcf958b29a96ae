//! `tolerance_match(a, b, tol)` and `tolerance_match_pct(a, b, frac)`.
//!
//! `tolerance_match` is `|a − b| ≤ tol`; `tolerance_match_pct` is `|a − b| ≤ frac · max(|a|, |b|)`
//! (`frac` is a fraction: 0.01 = 1%). Boundaries are inclusive. When every argument is exact
//! (integers, decimals) the comparison is done on 256-bit integers at a common scale, so a value
//! exactly on the boundary matches; floats are used only when a float is given. NULL in, NULL out.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Decimal256Type, Float64Type, i256};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use std::sync::Arc;

/// Name of the absolute-tolerance function.
pub const TOLERANCE_MATCH: &str = "tolerance_match";
/// Name of the relative-tolerance function.
pub const TOLERANCE_MATCH_PCT: &str = "tolerance_match_pct";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Absolute,
    Relative,
}

/// One of the two tolerance functions.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToleranceUdf {
    kind: Kind,
    signature: Signature,
}

impl ToleranceUdf {
    fn new(kind: Kind) -> Self {
        ToleranceUdf { kind, signature: Signature::user_defined(Volatility::Immutable) }
    }
}

/// `tolerance_match` as a registrable UDF.
pub fn tolerance_match() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToleranceUdf::new(Kind::Absolute))
}

/// `tolerance_match_pct` as a registrable UDF.
pub fn tolerance_match_pct() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToleranceUdf::new(Kind::Relative))
}

fn is_exact(t: &DataType) -> bool {
    t.is_integer()
        || matches!(
            t,
            DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
                | DataType::Null
        )
}

fn scale_of(t: &DataType) -> i8 {
    match t {
        DataType::Decimal32(_, s)
        | DataType::Decimal64(_, s)
        | DataType::Decimal128(_, s)
        | DataType::Decimal256(_, s) => (*s).max(0),
        _ => 0,
    }
}

/// Largest scale the exact path uses; keeps 10^scale products inside 256 bits for money-sized values.
const MAX_COMMON_SCALE: i8 = 38;

impl ScalarUDFImpl for ToleranceUdf {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Absolute => TOLERANCE_MATCH,
            Kind::Relative => TOLERANCE_MATCH_PCT,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 3 {
            return plan_err!("{}(a, b, tolerance) takes 3 arguments, got {}", self.name(), arg_types.len());
        }
        for t in arg_types {
            if !(is_exact(t) || t.is_floating()) {
                return plan_err!("{} takes numbers, got {t}", self.name());
            }
        }
        if arg_types.iter().any(|t| t.is_floating()) {
            return Ok(vec![DataType::Float64; 3]);
        }
        let scale = arg_types.iter().map(scale_of).max().unwrap_or(0);
        if scale > MAX_COMMON_SCALE {
            return plan_err!("{}: scale {scale} is too large for exact comparison", self.name());
        }
        Ok(vec![DataType::Decimal256(76, scale); 3])
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [a, b, t] = arrays.as_slice() else {
            return exec_err!("{} takes 3 arguments", self.name());
        };
        let out = match a.data_type() {
            DataType::Float64 => self.eval_float(a, b, t)?,
            DataType::Decimal256(_, s) => self.eval_exact(a, b, t, *s)?,
            other => return exec_err!("{}: unexpected argument type {other}", self.name()),
        };
        Ok(ColumnarValue::Array(out))
    }
}

impl ToleranceUdf {
    fn eval_float(&self, a: &ArrayRef, b: &ArrayRef, t: &ArrayRef) -> Result<ArrayRef> {
        let (a, b, t) =
            (a.as_primitive::<Float64Type>(), b.as_primitive::<Float64Type>(), t.as_primitive::<Float64Type>());
        let mut out = BooleanBuilder::with_capacity(a.len());
        for i in 0..a.len() {
            if a.is_null(i) || b.is_null(i) || t.is_null(i) {
                out.append_null();
                continue;
            }
            let (x, y, tol) = (a.value(i), b.value(i), t.value(i));
            let diff = (x - y).abs();
            out.append_value(match self.kind {
                Kind::Absolute => diff <= tol,
                Kind::Relative => diff <= tol * x.abs().max(y.abs()),
            });
        }
        Ok(Arc::new(out.finish()))
    }

    fn eval_exact(&self, a: &ArrayRef, b: &ArrayRef, t: &ArrayRef, scale: i8) -> Result<ArrayRef> {
        // Casting in the planner already aligned all three to Decimal256(76, scale); re-cast
        // defensively without the lossy "safe" mode.
        let opts = CastOptions { safe: false, ..Default::default() };
        let target = DataType::Decimal256(76, scale);
        let (a, b, t) = (
            cast_with_options(a, &target, &opts)?,
            cast_with_options(b, &target, &opts)?,
            cast_with_options(t, &target, &opts)?,
        );
        let (a, b, t) = (
            a.as_primitive::<Decimal256Type>(),
            b.as_primitive::<Decimal256Type>(),
            t.as_primitive::<Decimal256Type>(),
        );
        let unit = i256::from_i128(10).checked_pow(scale as u32);
        let mut out = BooleanBuilder::with_capacity(a.len());
        for i in 0..a.len() {
            if a.is_null(i) || b.is_null(i) || t.is_null(i) {
                out.append_null();
                continue;
            }
            let (x, y, tol) = (a.value(i), b.value(i), t.value(i));
            let Some(diff) = x.checked_sub(y).and_then(abs) else {
                return exec_err!("{}: values too large for exact comparison", self.name());
            };
            let ok = match self.kind {
                Kind::Absolute => diff <= tol,
                Kind::Relative => {
                    // |x − y| / 10^s ≤ (tol / 10^s) · (m / 10^s)  ⇔  |x − y| · 10^s ≤ tol · m
                    let m = match (abs(x), abs(y)) {
                        (Some(ax), Some(ay)) => ax.max(ay),
                        _ => return exec_err!("{}: values too large for exact comparison", self.name()),
                    };
                    match (unit.and_then(|u| diff.checked_mul(u)), tol.checked_mul(m)) {
                        (Some(lhs), Some(rhs)) => lhs <= rhs,
                        _ => return exec_err!("{}: values too large for exact comparison", self.name()),
                    }
                }
            };
            out.append_value(ok);
        }
        Ok(Arc::new(out.finish()))
    }
}

fn abs(v: i256) -> Option<i256> {
    if v < i256::ZERO { v.checked_neg() } else { Some(v) }
}
