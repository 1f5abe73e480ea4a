//! What a fitted model expects of a table: the feature columns by name and kind, the columns
//! training left out, and the target (its problem and classes). A model keeps it, so a file read
//! later (a test file, new rows to predict) is taken the way the training rows were:
//!
//! - a feature column is found by its header name (the file's column order does not matter);
//! - a boolean column's words (`yes`/`no`, `true`/`false`, `y`/`n`, `t`/`f`, any case) are 1 and
//!   0 whichever pair training saw; other text there is missing;
//! - a numeric column's text that is not a number is missing (and counted, so it can be said);
//! - a categorical value training never saw is handled by the encoding the pipeline fitted:
//!   one-hot puts it in the `other` column when there is one (else no column is set), ordinal
//!   encoding takes it as missing, target encoding gives it the training prior;
//! - a column the file lacks is all missing (the caller decides whether that is an error), and
//!   a column that is neither a feature, the target nor a column training left out is extra.

use serde::{Deserialize, Serialize};

use super::dataset::{as_truth, bad_target, same_label, Dropped, Feature, TabularData, TargetValues};
use super::error::Result;
use super::frame::{Column, ColumnData, FeatureKind, Frame, MISSING};
use super::problem::Problem;

/// A feature column: its name and kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// The header's name.
    pub name: String,
    /// What it is taken as.
    pub kind: FeatureKind,
}

/// The target column: its name, problem and classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSchema {
    /// The header's name.
    pub name: String,
    /// The problem.
    pub problem: Problem,
    /// The class labels, in the order of predicted probabilities (empty for a regression).
    pub classes: Vec<String>,
}

/// The columns a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// The feature columns, in training file order.
    pub features: Vec<ColumnSchema>,
    /// The columns training left out, and why.
    pub dropped: Vec<Dropped>,
    /// The target.
    pub target: TargetSchema,
}

/// A later frame's rows as a model's features.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    /// The feature columns, in the schema's order.
    pub features: Vec<Feature>,
    /// Feature columns the frame lacks (taken as all missing).
    pub missing: Vec<String>,
    /// The frame's columns that are neither features, the target nor left out in training.
    pub extra: Vec<String>,
    /// Numeric feature columns with text that is not a number (taken as missing): name, rows.
    pub not_numbers: Vec<(String, usize)>,
}

impl TargetSchema {
    /// Rows `rows` of a later file's target column `t` (none missing) as this target's values:
    /// numbers for a regression, else the training classes (`1` and `1.0` are one class); a
    /// class training never saw is an error.
    pub fn values(&self, t: &Column, rows: &[usize]) -> Result<TargetValues> {
        if self.problem == Problem::Regression {
            return match t.take(rows).data {
                ColumnData::Numeric(v) => Ok(TargetValues::Values(v)),
                ColumnData::Categorical { levels, .. } => {
                    let bad = levels.iter().find(|l| l.parse::<f64>().is_err()).cloned().unwrap_or_default();
                    Err(bad_target(&self.name, &format!("a regression needs numbers, and '{bad}' is not one")))
                }
            };
        }
        let mut codes = Vec::with_capacity(rows.len());
        for &r in rows {
            let label = t.text(r).unwrap_or_default();
            let Some(c) = self.classes.iter().position(|c| same_label(c, &label)) else {
                return Err(bad_target(
                    &self.name,
                    &format!("row {r} has the class '{label}', which the training rows do not have"),
                ));
            };
            codes.push(c);
        }
        Ok(TargetValues::Classes {
            codes,
            classes: self.classes.clone(),
        })
    }
}

impl Schema {
    /// The schema of a task's training data.
    pub fn of(data: &TabularData) -> Schema {
        Schema {
            features: data
                .features
                .iter()
                .map(|f| ColumnSchema {
                    name: f.column.name.clone(),
                    kind: f.kind,
                })
                .collect(),
            dropped: data.dropped.clone(),
            target: TargetSchema {
                name: data.target.name.clone(),
                problem: data.target.problem,
                classes: match &data.target.values {
                    TargetValues::Classes { classes, .. } => classes.clone(),
                    TargetValues::Values(_) => Vec::new(),
                },
            },
        }
    }

    /// Rows `rows` of `frame` as the feature columns, each taken as in training.
    pub fn take(&self, frame: &Frame, rows: &[usize]) -> Taken {
        let mut taken = Taken {
            features: Vec::with_capacity(self.features.len()),
            missing: Vec::new(),
            extra: Vec::new(),
            not_numbers: Vec::new(),
        };
        for f in &self.features {
            let column = match frame.column(&f.name) {
                Some(c) => c.take(rows),
                None => {
                    taken.missing.push(f.name.clone());
                    Column {
                        name: f.name.clone(),
                        data: ColumnData::Numeric(vec![f64::NAN; rows.len()]),
                    }
                }
            };
            let column = match (f.kind, &column.data) {
                (FeatureKind::Boolean, ColumnData::Categorical { .. }) => as_truth(column),
                (FeatureKind::Numeric, ColumnData::Categorical { codes, levels }) => {
                    let bad = codes.iter().filter(|&&c| c != MISSING && levels[c as usize].parse::<f64>().is_err()).count();
                    if bad > 0 {
                        taken.not_numbers.push((f.name.clone(), bad));
                    }
                    column
                }
                _ => column,
            };
            taken.features.push(Feature { kind: f.kind, column });
        }
        let known = |n: &str| n == self.target.name || self.features.iter().any(|f| f.name == n) || self.dropped.iter().any(|d| d.name == n);
        taken.extra = frame.names().into_iter().filter(|n| !known(n)).map(str::to_string).collect();
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tabular::read::frame_of;

    #[test]
    fn a_later_file_is_taken_by_name_as_in_training_with_missing_and_extra_columns_named() {
        let train = frame_of("id,x,flag,colour,y\n1,0.5,yes,red,a\n2,1.5,no,blue,b\n3,2.5,yes,red,a\n4,3.5,no,green,b\n5,4.5,yes,red,a\n");
        let data = TabularData::from_frame(&train, "y", None).unwrap();
        let schema = Schema::of(&data);
        assert_eq!(schema.features.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["x", "flag", "colour"]);
        assert_eq!(schema.target.classes, ["a", "b"]);
        // Columns reordered, one feature absent, one extra, only one truth word, a non-number.
        let later = frame_of("note,flag,x\nhi,YES,7\nho,yes,oops\n");
        let t = schema.take(&later, &[0, 1]);
        assert_eq!(t.missing, ["colour"]);
        assert_eq!(t.extra, ["note"]);
        assert_eq!(t.not_numbers, [("x".to_string(), 1)]);
        assert_eq!(t.features[1].column.data, ColumnData::Numeric(vec![1.0, 1.0]));
        assert!(t.features[2].column.is_missing(0) && t.features[2].column.is_missing(1));
        // The id column training left out is neither missing nor extra.
        let with_id = frame_of("id,x,flag,colour\n9,1,no,red\n");
        let t = schema.take(&with_id, &[0]);
        assert!(t.missing.is_empty() && t.extra.is_empty(), "{t:?}");
        assert_eq!(t.features[1].column.data, ColumnData::Numeric(vec![0.0]));
    }
}
