//! A parameter of a space: its name, its kind (type and range), its default, its meaning and
//! the condition under which it exists.

use std::fmt;

use autoagent_evaluator::nb201::Arch;

use super::error::Error;
use super::value::Value;

/// The type and the range of a parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// One of unordered choices.
    Categorical {
        /// The choices.
        choices: Vec<String>,
    },
    /// One of ordered integers (a channel count, a batch size): mutation and local search step
    /// to the adjacent value.
    Ordinal {
        /// The values, increasing.
        values: Vec<i64>,
    },
    /// An integer in `low..=high`.
    Int {
        /// The least value.
        low: i64,
        /// The greatest value.
        high: i64,
        /// Sample and step on a log scale (`low` above 0).
        log: bool,
    },
    /// A real number in `[low, high]`.
    Float {
        /// The least value.
        low: f64,
        /// The greatest value.
        high: f64,
        /// Sample and step on a log scale (`low` above 0).
        log: bool,
    },
    /// An NB201 cell (any of the 15,625).
    Cell,
}

/// Why a value does not fit a kind.
pub(crate) enum Mismatch {
    /// Not the kind's type.
    Type {
        /// The type the kind takes.
        expected: &'static str,
        /// The value's type.
        found: &'static str,
    },
    /// Outside the range or the choices.
    Range {
        /// The value, as text.
        value: String,
        /// What the kind admits.
        domain: String,
    },
}

impl Mismatch {
    /// The error of parameter `name`.
    pub(crate) fn error(self, name: &str) -> Error {
        let name = name.to_string();
        match self {
            Mismatch::Type { expected, found } => Error::WrongType {
                name,
                expected: expected.into(),
                found: found.into(),
            },
            Mismatch::Range { value, domain } => Error::OutOfRange { name, value, domain },
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Type { expected, found } => write!(f, "expected {expected}, found {found}"),
            Mismatch::Range { value, domain } => write!(f, "{value} is not {domain}"),
        }
    }
}

impl Kind {
    /// Its name for the prompt: `categorical`, `ordinal`, `int`, `float` or `cell`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Categorical { .. } => "categorical",
            Kind::Ordinal { .. } => "ordinal",
            Kind::Int { .. } => "int",
            Kind::Float { .. } => "float",
            Kind::Cell => "cell",
        }
    }

    /// The type of its values, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Categorical { .. } => "a string",
            Kind::Ordinal { .. } | Kind::Int { .. } => "an integer",
            Kind::Float { .. } => "a number",
            Kind::Cell => "an NB201 cell",
        }
    }

    /// What it admits, as text: `one of a, b`, `1 to 5`, `0.001 to 0.5 (log scale)`.
    pub fn domain(&self) -> String {
        let log = |log: bool| if log { " (log scale)" } else { "" };
        match self {
            Kind::Categorical { choices } => format!("one of {}", choices.join(", ")),
            Kind::Ordinal { values } => format!("one of {}", join(values)),
            Kind::Int { low, high, log: l } => format!("{low} to {high}{}", log(*l)),
            Kind::Float { low, high, log: l } => format!("{low} to {high}{}", log(*l)),
            Kind::Cell => "an NB201 cell".into(),
        }
    }

    /// Whether it admits more than one value (so that mutation can change it).
    pub fn varies(&self) -> bool {
        match self {
            Kind::Categorical { choices } => choices.len() > 1,
            Kind::Ordinal { values } => values.len() > 1,
            Kind::Int { low, high, .. } => low < high,
            Kind::Float { low, high, .. } => low < high,
            Kind::Cell => true,
        }
    }

    /// The value that `text` writes for this kind (a choice, an integer, a number, an arch string),
    /// whether or not it is in range.
    pub fn parse(&self, text: &str) -> Option<Value> {
        let text = text.trim();
        match self {
            Kind::Categorical { .. } => Some(Value::Str(text.to_string())),
            Kind::Ordinal { .. } | Kind::Int { .. } => text.parse().ok().map(Value::Int),
            Kind::Float { .. } => text.parse::<f64>().ok().filter(|x| x.is_finite()).map(Value::Float),
            Kind::Cell => Arch::parse(text).ok().map(Value::Cell),
        }
    }

    /// Whether `value` has the kind's type and lies in its range.
    pub(crate) fn admits(&self, value: &Value) -> Result<(), Mismatch> {
        let inside = match (self, value) {
            (Kind::Categorical { choices }, Value::Str(s)) => choices.contains(s),
            (Kind::Ordinal { values }, Value::Int(i)) => values.contains(i),
            (Kind::Int { low, high, .. }, Value::Int(i)) => (low..=high).contains(&i),
            (Kind::Float { low, high, .. }, Value::Float(x)) => (low..=high).contains(&x),
            (Kind::Cell, Value::Cell(_)) => true,
            _ => {
                return Err(Mismatch::Type {
                    expected: self.type_name(),
                    found: value.type_name(),
                })
            }
        };
        match inside {
            true => Ok(()),
            false => Err(Mismatch::Range {
                value: value.to_string(),
                domain: self.domain(),
            }),
        }
    }

    /// Why the range is empty or unusable, if it is.
    pub(crate) fn check(&self) -> Result<(), String> {
        match self {
            Kind::Categorical { choices } => check_choices(choices),
            Kind::Ordinal { values } => check_values(values),
            Kind::Int { low, high, log } => check_range(*low as f64, *high as f64, *log, &format!("{low}:{high}")),
            Kind::Float { low, high, log } => check_range(*low, *high, *log, &format!("{low}:{high}")),
            Kind::Cell => Ok(()),
        }
    }
}

/// `values` joined by `, `.
pub(crate) fn join<T: ToString>(values: &[T]) -> String {
    values.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

fn check_choices(choices: &[String]) -> Result<(), String> {
    if choices.is_empty() {
        return Err("no choices".into());
    }
    if choices.iter().any(|c| c.trim().is_empty() || c.trim() != c) {
        return Err("a choice is empty or has surrounding spaces".into());
    }
    match choices.iter().enumerate().find(|(i, c)| choices[..*i].contains(c)) {
        Some((_, c)) => Err(format!("choice '{c}' is listed twice")),
        None => Ok(()),
    }
}

fn check_values(values: &[i64]) -> Result<(), String> {
    if values.is_empty() {
        return Err("no values".into());
    }
    match values.windows(2).all(|w| w[0] < w[1]) {
        true => Ok(()),
        false => Err(format!("values must increase, found {}", join(values))),
    }
}

fn check_range(low: f64, high: f64, log: bool, text: &str) -> Result<(), String> {
    if !low.is_finite() || !high.is_finite() {
        return Err(format!("range {text} is not finite"));
    }
    if low > high {
        return Err(format!("empty range {text} (low above high)"));
    }
    if log && low <= 0.0 {
        return Err(format!("a log scale needs a low above 0, found range {text}"));
    }
    Ok(())
}

/// A parameter exists only when an earlier parameter has one of some values
/// (`cutout_length` only when `augment` is `crop_flip_cutout`).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The earlier parameter (categorical, ordinal or int).
    pub param: String,
    /// Its values, as text, under which the parameter exists.
    pub values: Vec<String>,
}

impl Condition {
    /// Whether the condition holds when its parameter has value `value`.
    pub fn holds(&self, value: &Value) -> bool {
        let text = value.to_string();
        self.values.contains(&text)
    }
}

/// `augment is crop_flip_cutout`, `augment is one of a, b`.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.values.as_slice() {
            [one] => write!(f, "{} is {one}", self.param),
            many => write!(f, "{} is one of {}", self.param, many.join(", ")),
        }
    }
}

/// A named, typed parameter with a default, a meaning and an optional condition. A parameter is
/// checked when a [`Space`](super::Space) is built from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Its name (letters, digits, `_`).
    pub name: String,
    /// Its type and range.
    pub kind: Kind,
    /// Its default value.
    pub default: Value,
    /// What it means, in one line for the prompt.
    pub meaning: String,
    /// When it exists; always if `None`.
    pub condition: Option<Condition>,
}

impl Param {
    /// An unconditional parameter.
    pub fn new(name: &str, kind: Kind, default: Value, meaning: &str) -> Param {
        Param {
            name: name.into(),
            kind,
            default,
            meaning: meaning.into(),
            condition: None,
        }
    }

    /// The parameter, existing only when the earlier parameter `param` is one of `values`.
    pub fn when(mut self, param: &str, values: &[&str]) -> Param {
        self.condition = Some(Condition {
            param: param.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        });
        self
    }

    /// Whether `value` fits the parameter, with an error naming it otherwise.
    pub fn check(&self, value: &Value) -> Result<(), Error> {
        self.kind.admits(value).map_err(|m| m.error(&self.name))
    }
}
