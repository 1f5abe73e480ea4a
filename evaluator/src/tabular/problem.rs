//! The learning problem a target column poses, and the rule that infers it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Binary or multiclass classification, or regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// Two classes.
    Binary,
    /// Three or more classes.
    Multiclass,
    /// A number.
    Regression,
}

impl Problem {
    /// The name (`binary`, `multiclass`, `regression`).
    pub fn name(self) -> &'static str {
        match self {
            Problem::Binary => "binary",
            Problem::Multiclass => "multiclass",
            Problem::Regression => "regression",
        }
    }

    /// Whether the problem has classes.
    pub fn is_classification(self) -> bool {
        self != Problem::Regression
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Problem {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "binary" => Ok(Problem::Binary),
            "multiclass" => Ok(Problem::Multiclass),
            "regression" => Ok(Problem::Regression),
            other => Err(format!("unknown problem '{other}' (expected binary, multiclass or regression)")),
        }
    }
}

/// The most classes an integer target may have and still be taken as classes.
pub const MAX_INTEGER_CLASSES: usize = 20;

/// The rule that infers the problem from a target's present values:
///
/// - strings: two distinct values are binary, more are multiclass;
/// - numbers with two distinct values: binary;
/// - integers with at most [`MAX_INTEGER_CLASSES`] distinct values, and at least ten rows a
///   value on average: multiclass;
/// - other numbers: regression.
///
/// `distinct` counts the distinct present values, `integers` says whether every one is an
/// integer (`None` for strings), `rows` counts the present values.
pub fn infer(distinct: usize, integers: Option<bool>, rows: usize) -> Problem {
    match (integers, distinct) {
        (_, 0..=2) => Problem::Binary,
        (None, _) => Problem::Multiclass,
        (Some(true), d) if d <= MAX_INTEGER_CLASSES && d * 10 <= rows => Problem::Multiclass,
        _ => Problem::Regression,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_problem_follows_the_documented_rule() {
        assert_eq!(infer(2, None, 1000), Problem::Binary);
        assert_eq!(infer(2, Some(true), 1000), Problem::Binary);
        assert_eq!(infer(2, Some(false), 1000), Problem::Binary);
        assert_eq!(infer(4, None, 10), Problem::Multiclass);
        // vehicle: classes 1..4 in 846 rows; auto_mpg: fractional miles per gallon.
        assert_eq!(infer(4, Some(true), 846), Problem::Multiclass);
        assert_eq!(infer(127, Some(false), 398), Problem::Regression);
        // Integers with many values, or few rows a value, are amounts.
        assert_eq!(infer(21, Some(true), 10_000), Problem::Regression);
        assert_eq!(infer(8, Some(true), 50), Problem::Regression);
        assert_eq!("Regression".parse::<Problem>(), Ok(Problem::Regression));
        assert!("ranking".parse::<Problem>().unwrap_err().contains("expected binary, multiclass or regression"));
    }
}
