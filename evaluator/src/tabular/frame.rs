//! A table in memory, column by column: numbers as `f64` (`NaN` is missing), strings interned
//! as codes into the column's levels (`MISSING` is missing).

use serde::{Deserialize, Serialize};

/// The code of a missing categorical value.
pub const MISSING: u32 = u32::MAX;

/// The values of one column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    /// Every present value parses as a finite number; `NaN` marks a missing one.
    Numeric(Vec<f64>),
    /// Strings: each row's code into `levels` (in order of first appearance), or [`MISSING`].
    Categorical {
        /// The codes, one per row.
        codes: Vec<u32>,
        /// The distinct values.
        levels: Vec<String>,
    },
}

/// One named column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The header's name.
    pub name: String,
    /// The values.
    pub data: ColumnData,
}

impl Column {
    /// Rows.
    pub fn len(&self) -> usize {
        match &self.data {
            ColumnData::Numeric(v) => v.len(),
            ColumnData::Categorical { codes, .. } => codes.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether row `i` is missing.
    pub fn is_missing(&self, i: usize) -> bool {
        match &self.data {
            ColumnData::Numeric(v) => v[i].is_nan(),
            ColumnData::Categorical { codes, .. } => codes[i] == MISSING,
        }
    }

    /// Rows that are missing.
    pub fn missing(&self) -> usize {
        (0..self.len()).filter(|&i| self.is_missing(i)).count()
    }

    /// The value of row `i` as text (`None` when missing).
    pub fn text(&self, i: usize) -> Option<String> {
        match &self.data {
            ColumnData::Numeric(v) => (!v[i].is_nan()).then(|| v[i].to_string()),
            ColumnData::Categorical { codes, levels } => (codes[i] != MISSING).then(|| levels[codes[i] as usize].clone()),
        }
    }

    /// The column restricted to `rows`, in their order.
    pub fn take(&self, rows: &[usize]) -> Column {
        let data = match &self.data {
            ColumnData::Numeric(v) => ColumnData::Numeric(rows.iter().map(|&r| v[r]).collect()),
            ColumnData::Categorical { codes, levels } => ColumnData::Categorical {
                codes: rows.iter().map(|&r| codes[r]).collect(),
                levels: levels.clone(),
            },
        };
        Column { name: self.name.clone(), data }
    }
}

/// A table read from a CSV: its columns in header order.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The columns.
    pub columns: Vec<Column>,
    /// Data rows.
    pub rows: usize,
}

impl Frame {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The frame restricted to `rows`, in their order.
    pub fn take(&self, rows: &[usize]) -> Frame {
        Frame {
            columns: self.columns.iter().map(|c| c.take(rows)).collect(),
            rows: rows.len(),
        }
    }

    /// The column names.
    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }
}

/// What a feature column is taken as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// Numbers.
    Numeric,
    /// Two values (`true`/`false`, `yes`/`no`, `y`/`n`, `t`/`f`, or the numbers 0 and 1),
    /// coded 0 and 1.
    Boolean,
    /// Strings from a set of levels.
    Categorical,
}

impl FeatureKind {
    /// The kind's name (`numeric`, `boolean`, `categorical`).
    pub fn name(self) -> &'static str {
        match self {
            FeatureKind::Numeric => "numeric",
            FeatureKind::Boolean => "boolean",
            FeatureKind::Categorical => "categorical",
        }
    }
}
