//! A finite set of values per parameter, for decoding under a template (the local LLM picks
//! one option per slot), and the one-line text of a configuration that such a template spells.

use super::config::Config;
use super::numeric::{at, position};
use super::param::Kind;
use super::space::Space;
use super::value::Value;

/// Values of a float parameter on a grid.
const FLOAT_POINTS: usize = 6;

/// The most values of an integer parameter on a grid (more are thinned evenly).
const INT_POINTS: usize = 8;

impl Kind {
    /// Finitely many values of the kind, in increasing order where it is ordered: every choice or
    /// ordinal value; every integer of a range of at most [`INT_POINTS`], else that many spread
    /// over it; [`FLOAT_POINTS`] numbers spread evenly over the (log-)range, rounded to 2
    /// significant digits, ends included. Empty for a cell (its edges are choices of their own).
    pub fn grid(&self) -> Vec<Value> {
        match self {
            Kind::Categorical { choices } => choices.iter().cloned().map(Value::Str).collect(),
            Kind::Ordinal { values } => values.iter().copied().map(Value::Int).collect(),
            Kind::Int { low, high, log } => {
                if high - low < INT_POINTS as i64 {
                    return (*low..=*high).map(Value::Int).collect();
                }
                let mut out: Vec<i64> = (0..INT_POINTS)
                    .map(|i| at(i as f64 / (INT_POINTS - 1) as f64, *low as f64, *high as f64, *log).round() as i64)
                    .collect();
                out.dedup();
                out.into_iter().map(Value::Int).collect()
            }
            Kind::Float { low, high, log } if low < high => {
                let mut out: Vec<f64> = (0..FLOAT_POINTS)
                    .map(|i| round2(at(i as f64 / (FLOAT_POINTS - 1) as f64, *low, *high, *log)).clamp(*low, *high))
                    .collect();
                out.dedup();
                out.into_iter().map(Value::Float).collect()
            }
            Kind::Float { low, .. } => vec![Value::Float(*low)],
            Kind::Cell => Vec::new(),
        }
    }

    /// The index of the grid value nearest to `value` (by position in the range; a choice by
    /// equality), if any.
    pub fn nearest_on_grid(&self, value: &Value) -> Option<usize> {
        let grid = self.grid();
        if let Some(i) = grid.iter().position(|g| g == value) {
            return Some(i);
        }
        let p = position(self, value)?;
        let distance = |g: &Value| position(self, g).map_or(f64::INFINITY, |q| (q - p).abs());
        (0..grid.len()).min_by(|&a, &b| distance(&grid[a]).total_cmp(&distance(&grid[b])))
    }
}

/// `x` rounded to 2 significant digits.
fn round2(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{x:.1e}").parse().unwrap_or(x)
}

impl Space {
    /// Whether the space is an NB201 cell alone (an NB201 table's): its candidates are written
    /// as bare arch strings.
    pub fn is_cell_only(&self) -> bool {
        matches!(self.params(), [p] if p.kind == Kind::Cell)
    }

    /// `config` on one line in the space's parameter order, `name=value` separated by `, `; a
    /// cell-only space's as its bare arch string. Inactive and unknown parameters are left out.
    pub fn line(&self, config: &Config) -> String {
        if self.is_cell_only() {
            return config.cell(&self.params()[0].name).map(|a| a.to_string()).unwrap_or_default();
        }
        let parts: Vec<String> = self
            .active(config)
            .iter()
            .filter_map(|p| config.get(&p.name).map(|v| format!("{}={v}", p.name)))
            .collect();
        parts.join(", ")
    }
}
