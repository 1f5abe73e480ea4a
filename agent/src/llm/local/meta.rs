//! Typed reads of GGUF metadata values, with errors that name the key.

use candle_core::quantized::gguf_file::{Content, Value};

use crate::llm::LlmError;

/// The value of `key`, if present.
pub(crate) fn get<'a>(ct: &'a Content, key: &str) -> Option<&'a Value> {
    ct.metadata.get(key)
}

fn missing(key: &str) -> LlmError {
    LlmError::Model(format!("the GGUF metadata has no `{key}`"))
}

fn wrong(key: &str, want: &str, v: &Value) -> LlmError {
    LlmError::Model(format!("the GGUF metadata `{key}` is not {want} (found {:?})", v.value_type()))
}

/// A non-negative integer of any width.
pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

/// A string value.
pub(crate) fn string<'a>(ct: &'a Content, key: &str) -> Result<&'a str, LlmError> {
    let v = get(ct, key).ok_or_else(|| missing(key))?;
    match v {
        Value::String(s) => Ok(s),
        v => Err(wrong(key, "a string", v)),
    }
}

/// An optional string value (absent: `None`; present with another type: an error).
pub(crate) fn opt_string<'a>(ct: &'a Content, key: &str) -> Result<Option<&'a str>, LlmError> {
    match get(ct, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(wrong(key, "a string", v)),
    }
}

/// An optional token id or count.
pub(crate) fn opt_u32(ct: &Content, key: &str) -> Result<Option<u32>, LlmError> {
    match get(ct, key) {
        None => Ok(None),
        Some(v) => as_u64(v)
            .and_then(|x| u32::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| wrong(key, "a 32-bit unsigned integer", v)),
    }
}

/// An optional boolean.
pub(crate) fn opt_bool(ct: &Content, key: &str) -> Result<Option<bool>, LlmError> {
    match get(ct, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong(key, "a boolean", v)),
    }
}

fn array<'a>(ct: &'a Content, key: &str) -> Result<&'a [Value], LlmError> {
    let v = get(ct, key).ok_or_else(|| missing(key))?;
    match v {
        Value::Array(a) => Ok(a),
        v => Err(wrong(key, "an array", v)),
    }
}

/// An array of strings.
pub(crate) fn strings(ct: &Content, key: &str) -> Result<Vec<String>, LlmError> {
    array(ct, key)?
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            v => Err(wrong(key, "an array of strings", v)),
        })
        .collect()
}

/// An optional array of numbers, read as `f32`.
pub(crate) fn opt_f32s(ct: &Content, key: &str) -> Result<Option<Vec<f32>>, LlmError> {
    if get(ct, key).is_none() {
        return Ok(None);
    }
    array(ct, key)?
        .iter()
        .map(|v| match *v {
            Value::F32(x) => Ok(x),
            Value::F64(x) => Ok(x as f32),
            ref v => as_u64(v).map(|x| x as f32).ok_or_else(|| wrong(key, "an array of numbers", v)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// An optional array of (possibly signed) integers, read as `i64`.
pub(crate) fn opt_ints(ct: &Content, key: &str) -> Result<Option<Vec<i64>>, LlmError> {
    if get(ct, key).is_none() {
        return Ok(None);
    }
    array(ct, key)?
        .iter()
        .map(|v| match *v {
            Value::I8(x) => Ok(x.into()),
            Value::I16(x) => Ok(x.into()),
            Value::I32(x) => Ok(x.into()),
            Value::I64(x) => Ok(x),
            ref v => as_u64(v)
                .and_then(|x| i64::try_from(x).ok())
                .ok_or_else(|| wrong(key, "an array of integers", v)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
