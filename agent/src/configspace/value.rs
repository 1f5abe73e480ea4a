//! The value of one parameter: a choice, an integer, a real number or an NB201 cell.
//!
//! In JSON a value is a string, an integer, a number or (a cell) its arch string
//! `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`; floats keep a decimal point or an exponent (`0.0`,
//! `1e-5`), so they read back as floats.

use std::fmt;

use autoagent_evaluator::nb201::Arch;

/// The value of one parameter in a [`Config`](super::Config).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A categorical choice.
    Str(String),
    /// An integer (of an `Int` or `Ordinal` parameter).
    Int(i64),
    /// A real number.
    Float(f64),
    /// An NB201 cell.
    Cell(Arch),
}

impl Value {
    /// What kind of value this is, for error messages (`an integer`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Cell(_) => "an NB201 cell",
        }
    }

    /// The choice, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The real number, if this is one.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(x) => Some(*x),
            _ => None,
        }
    }

    /// The cell, if this is one.
    pub fn as_cell(&self) -> Option<Arch> {
        match self {
            Value::Cell(a) => Some(*a),
            _ => None,
        }
    }

    /// The value's part of a configuration's canonical key: a cell's isomorphism class
    /// ([`Arch::canonical`]), a float in scientific notation with 4 significant digits.
    pub fn key(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(x) => sig4(*x),
            Value::Cell(a) => a.canonical(),
        }
    }
}

/// `x` in scientific notation with 4 significant digits (`1.000e-1`); both zeros give `0`.
fn sig4(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.3e}")
    }
}

/// `x` rounded to 4 significant digits and printed as briefly as Rust prints that float
/// (`0.03162`, `0.0005`).
pub(crate) fn short_float(x: f64) -> String {
    let rounded: f64 = sig4(x).parse().unwrap_or(x);
    format!("{rounded}")
}

/// Compact text: a choice as itself, a float to 4 significant digits, a cell as its arch string.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&short_float(*x)),
            Value::Cell(a) => write!(f, "{a}"),
        }
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Str(x) => s.serialize_str(x),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(x) => s.serialize_f64(*x),
            Value::Cell(a) => s.collect_str(a),
        }
    }
}

/// Reads what [`Value`]'s `Serialize` writes: a string that parses as an NB201 arch string is a
/// cell (no categorical choice looks like one), any other string a choice.
impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl serde::de::Visitor<'_> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, an integer or a number")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v).map(Value::Int).map_err(|_| E::custom(format!("integer {v} is too large")))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Arch::parse(v).map(Value::Cell).unwrap_or_else(|_| Value::Str(v.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_and_key_to_four_significant_digits() {
        assert_eq!(Value::Float(1e-3f64.sqrt()).to_string(), "0.03162");
        assert_eq!(Value::Float(5e-4).to_string(), "0.0005");
        assert_eq!(Value::Float(0.0).to_string(), "0");
        assert_eq!(Value::Float(0.1).key(), "1.000e-1");
        assert_eq!(Value::Float(0.100004).key(), Value::Float(0.1).key());
        assert_ne!(Value::Float(0.10006).key(), Value::Float(0.1).key());
        assert_eq!(Value::Float(-0.0).key(), Value::Float(0.0).key());
    }

    #[test]
    fn json_keeps_the_type_of_every_value() {
        let cell = Arch::parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|").unwrap();
        for v in [
            Value::Str("crop_flip".into()),
            Value::Int(16),
            Value::Float(0.0),
            Value::Float(1e-5),
            Value::Cell(cell),
        ] {
            let text = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v, "{text}");
        }
        assert_eq!(serde_json::to_string(&Value::Float(0.0)).unwrap(), "0.0");
        assert!(serde_json::from_str::<Value>("[1]").is_err());
        assert!(serde_json::from_str::<Value>("18446744073709551615").is_err());
    }
}
