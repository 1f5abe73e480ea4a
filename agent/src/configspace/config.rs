//! A configuration: a value for every active parameter of a space.

use std::collections::BTreeMap;
use std::fmt;

use autoagent_evaluator::nb201::Arch;

use super::value::Value;

/// A map from parameter names to values, in name order. It knows nothing of its space:
/// [`Space::validate`](super::Space::validate) checks it. In JSON it is one flat object
/// (`{"augment":"crop_flip","cell":"|nor_conv_3x3~0|+…","lr":0.1,…}`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Config {
    values: BTreeMap<String, Value>,
}

impl Config {
    /// An empty configuration.
    pub fn new() -> Config {
        Config::default()
    }

    /// The configuration with `name` set to `value`.
    pub fn with(mut self, name: &str, value: Value) -> Config {
        self.set(name, value);
        self
    }

    /// Set `name` to `value`, returning the value it replaces.
    pub fn set(&mut self, name: &str, value: Value) -> Option<Value> {
        self.values.insert(name.to_string(), value)
    }

    /// Remove `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.values.remove(name)
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// The names and values, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The choice of `name`, if it holds one.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// The integer of `name`, if it holds one.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(Value::as_int)
    }

    /// The real number of `name`, if it holds one.
    pub fn float(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(Value::as_float)
    }

    /// The cell of `name`, if it holds one.
    pub fn cell(&self, name: &str) -> Option<Arch> {
        self.get(name).and_then(Value::as_cell)
    }

    /// Compact JSON, one flat object; floats exact, a cell as its arch string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a map of strings, numbers and cells serialises")
    }

    /// The configuration that [`Config::to_json`] wrote.
    pub fn from_json(text: &str) -> Result<Config, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// One line of text: a configuration of a cell alone as its bare arch string, any other as
    /// `name=value` pairs in name order separated by `, ` (floats to 4 significant digits).
    pub fn line(&self) -> String {
        match (self.len(), self.get("cell")) {
            (1, Some(Value::Cell(a))) => a.to_string(),
            _ => self.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(", "),
        }
    }

    /// The key under which equivalent configurations collide, for deduplication:
    /// `name=value` in name order, a cell as its isomorphism class ([`Arch::canonical`]), a float
    /// to 4 significant digits. Only the values present count: a configuration validated against
    /// its space holds no inactive parameter.
    pub fn key(&self) -> String {
        let parts: Vec<String> = self.iter().map(|(n, v)| format!("{n}={}", v.key())).collect();
        parts.join(" ")
    }
}

/// `name=value` pairs in name order, separated by spaces; floats to 4 significant digits.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{name}={value}")?;
        }
        Ok(())
    }
}
