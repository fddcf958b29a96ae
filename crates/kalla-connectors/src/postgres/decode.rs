//! The binary COPY decoder: `COPY … TO STDOUT (FORMAT binary)` bytes straight into Arrow builders.
//!
//! The format: an 11-byte signature, a 32-bit flags word, a 32-bit header-extension length and
//! the extension; then per row a 16-bit field count (-1 ends the data) and per field a 32-bit
//! length (-1 is NULL) followed by the type's `*_send` bytes, all big-endian. The server sends
//! CopyData messages that usually hold one row each, but nothing guarantees it, so the decoder
//! takes chunks of any size: a row is decoded only once all its bytes are there, and a partial
//! row waits in a carry-over buffer.
//!
//! Values are decoded in place: integers and floats from their bytes, `numeric` digit groups
//! straight into an i128/i256 at the column's scale (never through text or floats), dates and
//! timestamps by shifting the Postgres epoch (2000-01-01) to the Unix epoch.

use super::types::{PgScalar, PgType};
use datafusion::arrow::array::NullBufferBuilder;
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder, ListArray,
    RecordBatch, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{Field, IntervalMonthDayNano, SchemaRef, i256};
use std::sync::Arc;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// A batch is flushed early once its values reach this many bytes: Arrow's text and binary
/// builders hold at most 2 GiB per array.
const MAX_BATCH_BYTES: usize = 256 << 20;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// A decoding failure; `column` is the column's name when one column is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The column at fault.
    pub column: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "column {c}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DecodeError {}

fn stream_error(message: impl Into<String>) -> DecodeError {
    DecodeError { column: None, message: message.into() }
}

/// What a value could not become; the column is added by the caller.
type ValueResult = Result<(), String>;

fn be_i16(b: &[u8]) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}
fn be_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}
fn be_i64(b: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}
fn exact<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N], String> {
    b.try_into().map_err(|_| format!("a {what} value of {} bytes (expected {N})", b.len()))
}

/// A `numeric` value as digit groups, decoded to an integer at `scale`.
fn numeric_parts(b: &[u8]) -> Result<(i16, i16, u16, &[u8]), String> {
    let short = || "a truncated numeric value".to_string();
    let ndigits = be_i16(b).ok_or_else(short)?;
    let weight = be_i16(&b[2..]).ok_or_else(short)?;
    let sign = be_i16(&b[4..]).ok_or_else(short)? as u16;
    let digits = b.get(8..).ok_or_else(short)?;
    if ndigits < 0 || digits.len() != ndigits as usize * 2 {
        return Err("a malformed numeric value".into());
    }
    Ok((ndigits, weight, sign, digits))
}

fn numeric_special(sign: u16) -> Result<bool, String> {
    match sign {
        0x0000 => Ok(false),
        0x4000 => Ok(true),
        0xC000 => Err("NaN cannot be stored in a decimal column".into()),
        0xD000 => Err("Infinity cannot be stored in a decimal column".into()),
        0xF000 => Err("-Infinity cannot be stored in a decimal column".into()),
        _ => Err("a numeric value with an unknown sign".into()),
    }
}

/// Full digit groups, the cut last group as `(value, digits kept)`, and the power of ten left.
type TrimmedDigits = (Vec<u16>, Option<(u16, u32)>, i32);

/// Plans the digit groups of a numeric for a target `scale` without overshooting: trailing
/// groups beyond the scale must be zero (dropped), and the last group kept is cut to the digits
/// the scale keeps. Returns the full groups, the cut last group as `(value, digits kept)`, and
/// the power of ten still to multiply by; `None` when a nonzero digit lies beyond the scale (or
/// a group is not a base-10000 digit: malformed input).
fn trim_groups(digits: &[u8], weight: i16, ndigits: i16, scale: i8) -> Option<TrimmedDigits> {
    let groups: Vec<u16> = digits.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])).collect();
    if groups.iter().any(|g| *g > 9999) {
        return None;
    }
    let mut groups = groups;
    // Value = groups as an integer × 10^exp at the target scale.
    let mut exp = 4 * (weight as i32 - (ndigits as i32 - 1)) + scale as i32;
    while exp <= -4 {
        match groups.pop() {
            Some(0) => exp += 4,
            // No digit left: the value is zero, whatever its weight.
            None => return Some((groups, None, 0)),
            Some(_) => return None,
        }
    }
    if exp < 0 {
        let cut = (-exp) as u32;
        let Some(d) = groups.pop() else { return Some((groups, None, 0)) };
        let divisor = 10u16.pow(cut);
        if d % divisor != 0 {
            return None;
        }
        return Some((groups, Some((d / divisor, 4 - cut)), 0));
    }
    Some((groups, None, exp))
}

/// Decodes a numeric into an i128 at `scale` digits after the point, or says why it cannot be
/// exact (digits beyond the scale, more than `precision` digits).
pub fn numeric_i128(b: &[u8], precision: u8, scale: i8) -> Result<i128, String> {
    let (ndigits, weight, sign, digits) = numeric_parts(b)?;
    let negative = numeric_special(sign)?;
    let too_big = || format!("a value does not fit numeric({precision},{scale}) (declare a wider decimal in schema)");
    let lose = || {
        format!(
            "a value has more than {scale} digits after the point and would lose digits as \
             decimal({precision},{scale}) (declare a wider scale in schema)"
        )
    };
    let (groups, last, mut exp) = trim_groups(digits, weight, ndigits, scale).ok_or_else(lose)?;
    let mut acc: i128 = 0;
    for d in groups {
        acc = acc.checked_mul(10_000).and_then(|a| a.checked_add(d as i128)).ok_or_else(too_big)?;
    }
    if let Some((d, keep)) = last {
        acc = acc.checked_mul(10i128.pow(keep)).and_then(|a| a.checked_add(d as i128)).ok_or_else(too_big)?;
    }
    // Zero stays zero however far it is shifted (a zero digit group may come with any weight).
    while exp > 0 && acc != 0 {
        acc = acc.checked_mul(10).ok_or_else(too_big)?;
        exp -= 1;
    }
    if acc >= 10i128.pow(precision as u32) {
        return Err(too_big());
    }
    Ok(if negative { -acc } else { acc })
}

/// As [`numeric_i128`], for Decimal256.
pub fn numeric_i256(b: &[u8], precision: u8, scale: i8) -> Result<i256, String> {
    let (ndigits, weight, sign, digits) = numeric_parts(b)?;
    let negative = numeric_special(sign)?;
    let too_big = || format!("a value does not fit numeric({precision},{scale})");
    let ten = i256::from_i128(10);
    let (groups, last, mut exp) = trim_groups(digits, weight, ndigits, scale)
        .ok_or_else(|| format!("a value has more than {scale} digits after the point and would lose digits"))?;
    let mut acc = i256::ZERO;
    for d in groups {
        acc = acc
            .checked_mul(i256::from_i128(10_000))
            .and_then(|a| a.checked_add(i256::from_i128(d as i128)))
            .ok_or_else(too_big)?;
    }
    if let Some((d, keep)) = last {
        acc = acc
            .checked_mul(i256::from_i128(10i128.pow(keep)))
            .and_then(|a| a.checked_add(i256::from_i128(d as i128)))
            .ok_or_else(too_big)?;
    }
    while exp > 0 && acc != i256::ZERO {
        acc = acc.checked_mul(ten).ok_or_else(too_big)?;
        exp -= 1;
    }
    let limit = ten.checked_pow(precision as u32).ok_or_else(too_big)?;
    if acc >= limit {
        return Err(too_big());
    }
    Ok(if negative { acc.checked_neg().ok_or_else(too_big)? } else { acc })
}

fn uuid_text(b: &[u8]) -> Result<String, String> {
    let bytes: [u8; 16] = exact(b, "uuid")?;
    Ok(uuid::Uuid::from_bytes(bytes).hyphenated().to_string())
}

fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|_| "a text value that is not UTF-8".to_string())
}

/// One column's builder.
enum Builder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    D128(Decimal128Builder, u8, i8),
    D256(Decimal256Builder, u8, i8),
    Text(StringBuilder, PgScalar),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
    Interval(IntervalMonthDayNanoBuilder),
    List { element: Box<Builder>, field: Arc<Field>, offsets: Vec<i32>, nulls: NullBufferBuilder },
}

impl Builder {
    fn new(t: &PgType, capacity: usize) -> Builder {
        match t {
            PgType::Scalar(s) => Builder::scalar(s, capacity),
            PgType::Array(s) => Builder::List {
                element: Box::new(Builder::scalar(s, capacity)),
                field: Arc::new(Field::new("item", s.arrow(), true)),
                offsets: {
                    let mut o = Vec::with_capacity(capacity + 1);
                    o.push(0);
                    o
                },
                nulls: NullBufferBuilder::new(capacity),
            },
        }
    }

    fn scalar(s: &PgScalar, capacity: usize) -> Builder {
        match s {
            PgScalar::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            PgScalar::Int2 => Builder::I16(Int16Builder::with_capacity(capacity)),
            PgScalar::Int4 => Builder::I32(Int32Builder::with_capacity(capacity)),
            PgScalar::Int8 => Builder::I64(Int64Builder::with_capacity(capacity)),
            PgScalar::Float4 => Builder::F32(Float32Builder::with_capacity(capacity)),
            PgScalar::Float8 => Builder::F64(Float64Builder::with_capacity(capacity)),
            PgScalar::Numeric { precision, scale } if *precision <= 38 => Builder::D128(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(*precision, *scale)
                    .unwrap_or_else(|_| Decimal128Builder::with_capacity(capacity)),
                *precision,
                *scale,
            ),
            PgScalar::Numeric { precision, scale } => Builder::D256(
                Decimal256Builder::with_capacity(capacity)
                    .with_precision_and_scale(*precision, *scale)
                    .unwrap_or_else(|_| Decimal256Builder::with_capacity(capacity)),
                *precision,
                *scale,
            ),
            PgScalar::Text | PgScalar::Bpchar | PgScalar::Jsonb | PgScalar::Uuid => {
                Builder::Text(StringBuilder::with_capacity(capacity, capacity * 16), s.clone())
            }
            PgScalar::Bytea => Builder::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            PgScalar::Date => Builder::Date(Date32Builder::with_capacity(capacity)),
            PgScalar::Timestamp => Builder::Ts(TimestampMicrosecondBuilder::with_capacity(capacity)),
            PgScalar::TimestampTz => {
                Builder::Ts(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"))
            }
            PgScalar::Time => Builder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            PgScalar::Interval => Builder::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::D128(b, ..) => b.append_null(),
            Builder::D256(b, ..) => b.append_null(),
            Builder::Text(b, _) => b.append_null(),
            Builder::Bytes(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Ts(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
            Builder::Interval(b) => b.append_null(),
            Builder::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    fn append(&mut self, v: &[u8]) -> ValueResult {
        match self {
            Builder::Bool(b) => b.append_value(exact::<1>(v, "bool")?[0] != 0),
            Builder::I16(b) => b.append_value(i16::from_be_bytes(exact(v, "int2")?)),
            Builder::I32(b) => b.append_value(i32::from_be_bytes(exact(v, "int4")?)),
            Builder::I64(b) => b.append_value(i64::from_be_bytes(exact(v, "int8")?)),
            Builder::F32(b) => b.append_value(f32::from_be_bytes(exact(v, "float4")?)),
            Builder::F64(b) => b.append_value(f64::from_be_bytes(exact(v, "float8")?)),
            Builder::D128(b, p, s) => b.append_value(numeric_i128(v, *p, *s)?),
            Builder::D256(b, p, s) => b.append_value(numeric_i256(v, *p, *s)?),
            Builder::Text(b, kind) => match kind {
                PgScalar::Bpchar => b.append_value(utf8(v)?.trim_end_matches(' ')),
                PgScalar::Jsonb => match v.split_first() {
                    Some((1, text)) => b.append_value(utf8(text)?),
                    _ => return Err("a jsonb value of an unknown version".into()),
                },
                PgScalar::Uuid => b.append_value(uuid_text(v)?),
                _ => b.append_value(utf8(v)?),
            },
            Builder::Bytes(b) => b.append_value(v),
            Builder::Date(b) => {
                let days = i32::from_be_bytes(exact(v, "date")?);
                if days == i32::MAX || days == i32::MIN {
                    return Err("an infinite date cannot be read (Arrow dates are finite)".into());
                }
                b.append_value(days.checked_add(PG_EPOCH_DAYS).ok_or("a date out of Arrow's range")?)
            }
            Builder::Ts(b) => {
                let micros = i64::from_be_bytes(exact(v, "timestamp")?);
                if micros == i64::MAX || micros == i64::MIN {
                    return Err("an infinite timestamp cannot be read (Arrow timestamps are finite)".into());
                }
                b.append_value(micros.checked_add(PG_EPOCH_MICROS).ok_or("a timestamp out of Arrow's range")?)
            }
            Builder::Time(b) => {
                let micros = i64::from_be_bytes(exact(v, "time")?);
                if !(0..86_400_000_000).contains(&micros) {
                    return Err("the time 24:00:00 cannot be stored in an Arrow time (at most 23:59:59.999999)".into());
                }
                b.append_value(micros)
            }
            Builder::Interval(b) => {
                let raw: [u8; 16] = exact(v, "interval")?;
                let micros = be_i64(&raw).ok_or("a truncated interval")?;
                let days = be_i32(&raw[8..]).ok_or("a truncated interval")?;
                let months = be_i32(&raw[12..]).ok_or("a truncated interval")?;
                let nanos = micros.checked_mul(1000).ok_or("an interval out of Arrow's range")?;
                b.append_value(IntervalMonthDayNano::new(months, days, nanos))
            }
            Builder::List { element, offsets, nulls, .. } => {
                let count = append_array(element, v)?;
                let last = offsets.last().copied().unwrap_or(0);
                let next = i32::try_from(count).ok().and_then(|c| last.checked_add(c)).ok_or("an array too large")?;
                offsets.push(next);
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<ArrayRef, String> {
        Ok(match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::D128(b, ..) => Arc::new(b.finish()),
            Builder::D256(b, ..) => Arc::new(b.finish()),
            Builder::Text(b, _) => Arc::new(b.finish()),
            Builder::Bytes(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Interval(b) => Arc::new(b.finish()),
            Builder::List { element, field, offsets, nulls } => {
                let values = element.finish()?;
                let taken = std::mem::replace(offsets, vec![0]);
                let array = ListArray::try_new(
                    Arc::clone(field),
                    OffsetBuffer::new(ScalarBuffer::from(taken)),
                    values,
                    nulls.finish(),
                )
                .map_err(|e| e.to_string())?;
                Arc::new(array)
            }
        })
    }
}

/// Appends the elements of a binary array value; returns how many.
fn append_array(element: &mut Builder, v: &[u8]) -> Result<usize, String> {
    let short = || "a truncated array value".to_string();
    let ndim = be_i32(v).ok_or_else(short)?;
    if ndim == 0 {
        return Ok(0);
    }
    if ndim != 1 {
        return Err(format!("an array of {ndim} dimensions (only one-dimensional arrays are read)"));
    }
    let count = be_i32(v.get(12..).ok_or_else(short)?).ok_or_else(short)?;
    let count = usize::try_from(count).map_err(|_| short())?;
    let mut pos = 20;
    for _ in 0..count {
        let len = be_i32(v.get(pos..).ok_or_else(short)?).ok_or_else(short)?;
        pos += 4;
        if len < -1 {
            return Err(format!("an array element length of {len}"));
        }
        if len == -1 {
            element.append_null();
        } else {
            let end = pos + len as usize;
            element.append(v.get(pos..end).ok_or_else(short)?)?;
            pos = end;
        }
    }
    Ok(count)
}

/// Decodes a binary COPY stream into record batches of `schema` (the columns of the COPY's
/// SELECT, in order, typed `types`).
pub struct CopyDecoder {
    schema: SchemaRef,
    types: Vec<PgType>,
    builders: Vec<Builder>,
    rows: usize,
    /// Bytes of the rows buffered.
    bytes: usize,
    batch_size: usize,
    header_done: bool,
    finished: bool,
    carry: Vec<u8>,
}

impl std::fmt::Debug for CopyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyDecoder").field("schema", &self.schema).field("rows", &self.rows).finish_non_exhaustive()
    }
}

/// Where a chunk stopped.
enum Step {
    /// Consumed everything.
    Consumed,
    /// More bytes are needed to go on from this offset.
    NeedMore(usize),
}

impl CopyDecoder {
    /// A decoder for columns `types` producing batches of `schema` of about `batch_size` rows.
    pub fn new(schema: SchemaRef, types: Vec<PgType>, batch_size: usize) -> CopyDecoder {
        let batch_size = batch_size.max(1);
        let builders = types.iter().map(|t| Builder::new(t, batch_size)).collect();
        CopyDecoder {
            schema,
            types,
            builders,
            rows: 0,
            bytes: 0,
            batch_size,
            header_done: false,
            finished: false,
            carry: Vec::new(),
        }
    }

    /// True once the end-of-data marker was read.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Rows buffered for the next batch.
    pub fn buffered_rows(&self) -> usize {
        self.rows
    }

    /// True when a batch is full.
    pub fn batch_full(&self) -> bool {
        self.rows >= self.batch_size || self.bytes >= MAX_BATCH_BYTES
    }

    /// Feeds a chunk of the COPY stream.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        if self.carry.is_empty() {
            match self.consume(chunk)? {
                Step::Consumed => {}
                Step::NeedMore(at) => self.carry.extend_from_slice(&chunk[at..]),
            }
        } else {
            let mut data = std::mem::take(&mut self.carry);
            data.extend_from_slice(chunk);
            match self.consume(&data)? {
                Step::Consumed => {}
                Step::NeedMore(at) => {
                    data.drain(..at);
                    self.carry = data;
                }
            }
        }
        Ok(())
    }

    fn consume(&mut self, data: &[u8]) -> Result<Step, DecodeError> {
        let mut pos = 0;
        if !self.header_done {
            if data.len() < SIGNATURE.len() + 8 {
                return Ok(Step::NeedMore(0));
            }
            if &data[..SIGNATURE.len()] != SIGNATURE {
                return Err(stream_error("the COPY stream does not start with the binary signature"));
            }
            let ext = be_i32(&data[SIGNATURE.len() + 4..]).unwrap_or(0);
            let end = SIGNATURE.len() + 8 + usize::try_from(ext).map_err(|_| stream_error("bad header"))?;
            if data.len() < end {
                return Ok(Step::NeedMore(0));
            }
            pos = end;
            self.header_done = true;
        }
        let columns = self.types.len();
        while pos < data.len() {
            if self.finished {
                return Err(stream_error("data after the end of the COPY stream"));
            }
            // Check the row is complete before decoding any of it.
            let Some(fields) = data.get(pos..pos + 2).and_then(be_i16) else { return Ok(Step::NeedMore(pos)) };
            if fields == -1 {
                self.finished = true;
                pos += 2;
                continue;
            }
            if fields as usize != columns {
                return Err(stream_error(format!("a row of {fields} fields where {columns} were selected")));
            }
            let mut end = pos + 2;
            for _ in 0..columns {
                let Some(len) = data.get(end..end + 4).and_then(be_i32) else { return Ok(Step::NeedMore(pos)) };
                end += 4;
                if len < -1 {
                    // -1 is NULL; any other negative length is not a length (read as NULL, it
                    // would turn a value, a key say, into NULL).
                    return Err(stream_error(format!("a field length of {len}")));
                }
                if len > 0 {
                    end += len as usize;
                }
            }
            if end > data.len() {
                return Ok(Step::NeedMore(pos));
            }
            let mut at = pos + 2;
            for (i, builder) in self.builders.iter_mut().enumerate() {
                let len = be_i32(&data[at..]).unwrap_or(-1);
                at += 4;
                if len < 0 {
                    builder.append_null();
                } else {
                    let value = &data[at..at + len as usize];
                    at += len as usize;
                    if let Err(message) = builder.append(value) {
                        return Err(DecodeError { column: Some(self.schema.field(i).name().clone()), message });
                    }
                }
            }
            self.rows += 1;
            self.bytes += end - pos;
            pos = end;
        }
        Ok(Step::Consumed)
    }

    /// The buffered rows as a batch (None when there are none).
    pub fn flush(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        if self.rows == 0 {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(self.builders.len());
        for (i, b) in self.builders.iter_mut().enumerate() {
            columns.push(
                b.finish()
                    .map_err(|message| DecodeError { column: Some(self.schema.field(i).name().clone()), message })?,
            );
        }
        let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        self.bytes = 0;
        let batch = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)
            .map_err(|e| stream_error(e.to_string()))?;
        debug_assert!(batch.columns().iter().all(|c| c.len() == batch.num_rows()));
        Ok(Some(batch))
    }

    /// Checks the stream ended cleanly.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if !self.finished || !self.carry.is_empty() {
            return Err(stream_error("the COPY stream ended early"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numeric binary: ndigits, weight, sign, dscale, digits.
    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(digits.len() as i16).to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_decode_exactly_at_the_column_scale() {
        // 1234.56 = [1234, 5600] weight 0
        assert_eq!(numeric_i128(&numeric(0, 0, 2, &[1234, 5600]), 12, 2), Ok(123456));
        assert_eq!(numeric_i128(&numeric(0, 0x4000, 2, &[1234, 5600]), 12, 2), Ok(-123456));
        // 0.05 = [500] weight -1
        assert_eq!(numeric_i128(&numeric(-1, 0, 2, &[500]), 12, 2), Ok(5));
        // 10000 = [1] weight 1
        assert_eq!(numeric_i128(&numeric(1, 0, 0, &[1]), 12, 2), Ok(1_000_000));
        // zero has no digits
        assert_eq!(numeric_i128(&numeric(0, 0, 2, &[]), 12, 2), Ok(0));
        // 2e34 + 0.50 at numeric(38,2): the padded last group must not overflow on the way.
        let mut groups = vec![200u16];
        groups.extend([0u16; 8]);
        groups.push(5000);
        assert_eq!(numeric_i128(&numeric(8, 0, 2, &groups), 38, 2), Ok(2 * 10i128.pow(36) + 50));
        // 0.0001 does not fit scale 2; 0.0100 does.
        assert!(numeric_i128(&numeric(-1, 0, 4, &[1]), 12, 2).is_err());
        assert_eq!(numeric_i128(&numeric(-1, 0, 4, &[100]), 12, 2), Ok(1));
        // 1.005 into scale 2 loses a digit
        assert!(numeric_i128(&numeric(0, 0, 3, &[1, 50]), 12, 2).unwrap_err().contains("lose digits"));
        // 10^12 does not fit numeric(12,2)
        assert!(numeric_i128(&numeric(3, 0, 0, &[1]), 12, 2).is_err());
        assert!(numeric_i128(&numeric(0, 0xC000, 0, &[]), 12, 2).unwrap_err().contains("NaN"));
        // 38 nines
        let digits = [99u16, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999];
        assert_eq!(numeric_i128(&numeric(9, 0, 0, &digits), 38, 0), Ok(10i128.pow(38) - 1));
        assert_eq!(
            numeric_i256(&numeric(9, 0x4000, 0, &digits), 40, 2),
            Ok(i256::from_i128(-(10i128.pow(38) - 1)).wrapping_mul(i256::from_i128(100)))
        );
    }

    /// A binary COPY stream of one-field rows (each given as its length and bytes), ended.
    fn one_column_stream(fields: &[(i32, &[u8])]) -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&[0; 8]);
        for (len, bytes) in fields {
            v.extend_from_slice(&1i16.to_be_bytes());
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(bytes);
        }
        v.extend_from_slice(&(-1i16).to_be_bytes());
        v
    }

    fn decoder(t: PgType) -> CopyDecoder {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![Field::new("k", t.arrow(), true)]));
        CopyDecoder::new(schema, vec![t], 16)
    }

    /// -1 is NULL; read as NULL, any other negative length would turn a value (a key, say) into
    /// NULL and its row into an unmatched one.
    #[test]
    fn a_negative_length_other_than_null_is_refused_not_read_as_null() {
        let mut d = decoder(PgType::Scalar(PgScalar::Int8));
        d.feed(&one_column_stream(&[(8, &7i64.to_be_bytes()), (-1, &[])])).unwrap();
        let batch = d.flush().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(0).null_count(), 1);
        for len in [-2, i32::MIN] {
            let e = decoder(PgType::Scalar(PgScalar::Int8)).feed(&one_column_stream(&[(len, &[])])).unwrap_err();
            assert_eq!(e.message, format!("a field length of {len}"));
        }
        // An array element: one dimension of two int4 elements, the second of length -2.
        let mut array = Vec::new();
        for x in [1i32, 0, 23, 2, 1, 4, 5, -2] {
            array.extend_from_slice(&x.to_be_bytes());
        }
        let e = decoder(PgType::Array(PgScalar::Int4))
            .feed(&one_column_stream(&[(array.len() as i32, &array)]))
            .unwrap_err();
        assert!(e.message.contains("an array element length of -2"), "{e}");
    }

    /// A zero digit group may come with any weight: it is zero, without shifting it 4 × 32767
    /// times.
    #[test]
    fn zero_at_any_weight_is_zero() {
        for weight in [i16::MAX, i16::MIN, 0] {
            assert_eq!(numeric_i128(&numeric(weight, 0, 0, &[0]), 12, 2), Ok(0), "{weight}");
            assert_eq!(numeric_i256(&numeric(weight, 0, 0, &[0, 0]), 50, 2), Ok(i256::ZERO), "{weight}");
        }
    }
}
