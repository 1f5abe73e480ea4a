//! From a [`Frame`] to what a learner takes: the target (its problem, classes or values) and
//! the feature columns with their kinds, less the columns that carry no signal.
//!
//! Feature columns (the rules `docs` and the README quote):
//! - numbers are numeric, except two values 0 and 1 (boolean) and a row number (the integers
//!   0..n-1 or 1..n in row order, an identifier: dropped with a warning);
//! - strings are categorical, except two values that read as a truth value (`true`/`false`,
//!   `yes`/`no`, `y`/`n`, `t`/`f`, any case: boolean), one distinct value a row (an identifier:
//!   dropped), and free text (more distinct values than half the rows, four words or more on
//!   average: dropped, with a warning);
//! - a column with every value missing, or with one value and none missing, is dropped.
//!
//! Rows whose target is missing are left out, with a warning.

use serde::{Deserialize, Serialize};

use super::error::{Result, TabularError};
use super::frame::{Column, ColumnData, FeatureKind, Frame, MISSING};
use super::problem::{self, Problem};
use super::schema::Schema;

/// The target: its problem and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The column's name.
    pub name: String,
    /// The problem.
    pub problem: Problem,
    /// The values.
    pub values: TargetValues,
}

/// A target's values.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetValues {
    /// Class indices into `classes` (sorted: numerically when every class is a number, else
    /// as strings; the positive class of a binary problem is the second).
    Classes {
        /// One class index a row.
        codes: Vec<usize>,
        /// The class labels as written.
        classes: Vec<String>,
    },
    /// Numbers.
    Values(Vec<f64>),
}

impl TargetValues {
    /// Rows.
    pub fn len(&self) -> usize {
        match self {
            TargetValues::Classes { codes, .. } => codes.len(),
            TargetValues::Values(v) => v.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The class indices (`None` for a regression).
    pub fn codes(&self) -> Option<&[usize]> {
        match self {
            TargetValues::Classes { codes, .. } => Some(codes),
            TargetValues::Values(_) => None,
        }
    }

    /// Rows per class (empty for a regression).
    pub fn counts(&self) -> Vec<usize> {
        match self {
            TargetValues::Classes { codes, classes } => {
                let mut n = vec![0; classes.len()];
                for &c in codes {
                    n[c] += 1;
                }
                n
            }
            TargetValues::Values(_) => Vec::new(),
        }
    }

    /// The values restricted to `rows`.
    pub fn take(&self, rows: &[usize]) -> TargetValues {
        match self {
            TargetValues::Classes { codes, classes } => TargetValues::Classes {
                codes: rows.iter().map(|&r| codes[r]).collect(),
                classes: classes.clone(),
            },
            TargetValues::Values(v) => TargetValues::Values(rows.iter().map(|&r| v[r]).collect()),
        }
    }
}

/// A feature column and its kind (a boolean is stored as the numbers 0 and 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// What it is taken as.
    pub kind: FeatureKind,
    /// Its values.
    pub column: Column,
}

/// A column left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    /// The column.
    pub name: String,
    /// Why (`identifier`, `free text`, `all missing`, `constant`).
    pub reason: String,
}

/// A CSV task's data: features and target over the same rows.
#[derive(Debug, Clone, PartialEq)]
pub struct TabularData {
    /// The feature columns kept, in file order.
    pub features: Vec<Feature>,
    /// The target.
    pub target: Target,
    /// Columns left out.
    pub dropped: Vec<Dropped>,
    /// The rows of the file these are (0-based data rows; rows with a missing target are not
    /// among them).
    pub rows: Vec<usize>,
}

impl TabularData {
    /// Take `target` out of `frame` as the target (its problem inferred unless given) and keep
    /// the other columns that carry a signal as features.
    pub fn from_frame(frame: &Frame, target: &str, problem: Option<Problem>) -> Result<TabularData> {
        let Some(t) = frame.column(target) else {
            return Err(TabularError::NoTarget {
                name: target.to_string(),
                closest: closest(target, &frame.names()),
            });
        };
        let rows: Vec<usize> = (0..frame.rows).filter(|&r| !t.is_missing(r)).collect();
        if rows.is_empty() {
            return Err(bad_target(target, "every value is missing"));
        }
        let target = make_target(&t.take(&rows), problem)?;
        let (mut features, mut dropped) = (Vec::new(), Vec::new());
        for c in frame.columns.iter().filter(|c| c.name != target.name) {
            let c = if rows.len() == frame.rows { c.clone() } else { c.take(&rows) };
            match feature(c) {
                Ok(f) => features.push(f),
                Err(d) => dropped.push(d),
            }
        }
        if features.is_empty() {
            let names: Vec<String> = dropped.iter().map(|d| format!("{} ({})", d.name, d.reason)).collect();
            return Err(TabularError::Data(format!("no usable feature column (left out: {})", names.join(", "))));
        }
        Ok(TabularData {
            features,
            target,
            dropped,
            rows,
        })
    }

    /// The rows of `frame` (a test file, or the test rows of the training file) as data of
    /// this task: the same feature columns taken the same way (a column the frame lacks is all
    /// missing), the target's classes as in training. A class training never saw, or a frame
    /// without the target, is an error; rows with a missing target are left out.
    pub fn like(&self, frame: &Frame) -> Result<TabularData> {
        let Some(t) = frame.column(&self.target.name) else {
            return Err(TabularError::NoTarget {
                name: self.target.name.clone(),
                closest: closest(&self.target.name, &frame.names()),
            });
        };
        let rows: Vec<usize> = (0..frame.rows).filter(|&r| !t.is_missing(r)).collect();
        let schema = Schema::of(self);
        let values = schema.target.values(t, &rows)?;
        let features = schema.take(frame, &rows).features;
        Ok(TabularData {
            features,
            target: Target {
                name: self.target.name.clone(),
                problem: self.target.problem,
                values,
            },
            dropped: self.dropped.clone(),
            rows,
        })
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Two class labels that are the same: equal, or the same number written two ways (`1` and
/// `1.0`).
pub fn same_label(a: &str, b: &str) -> bool {
    a == b || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

pub(super) fn bad_target(name: &str, reason: &str) -> TabularError {
    TabularError::BadTarget {
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

/// The closest of `names` to `asked` (a misspelt target), if one is close enough to be meant.
pub fn closest(asked: &str, names: &[&str]) -> Option<String> {
    let lower = asked.to_lowercase();
    names
        .iter()
        .map(|n| (strsim::levenshtein(&lower, &n.to_lowercase()), *n))
        .filter(|&(d, n)| d <= (n.chars().count() / 3).max(2))
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n.to_string())
}

fn is_integer(v: f64) -> bool {
    v.fract() == 0.0 && v.abs() < 1e15
}

/// The target of present values `t`: its problem (inferred unless given) and values.
fn make_target(t: &Column, asked: Option<Problem>) -> Result<Target> {
    let name = &t.name;
    let (distinct, integers) = match &t.data {
        ColumnData::Numeric(v) => {
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            sorted.dedup();
            (sorted.len(), Some(v.iter().all(|&x| is_integer(x))))
        }
        ColumnData::Categorical { codes, levels } => {
            let mut used = vec![false; levels.len()];
            codes.iter().for_each(|&c| used[c as usize] = true);
            (used.iter().filter(|&&u| u).count(), None)
        }
    };
    if distinct < 2 {
        let value = t.text(0).unwrap_or_default();
        return Err(bad_target(name, &format!("every row has the value '{value}'; there is nothing to learn")));
    }
    let problem = asked.unwrap_or_else(|| problem::infer(distinct, integers, t.len()));
    let values = match (problem, &t.data) {
        (Problem::Regression, ColumnData::Numeric(v)) => TargetValues::Values(v.clone()),
        (Problem::Regression, ColumnData::Categorical { levels, .. }) => {
            let example = levels.iter().find(|l| l.parse::<f64>().is_err()).cloned().unwrap_or_default();
            return Err(bad_target(name, &format!("a regression needs numbers, and '{example}' is not one")));
        }
        (_, _) => classes(t),
    };
    if problem == Problem::Binary && distinct != 2 {
        return Err(bad_target(name, &format!("--problem binary needs two classes, the column has {distinct}")));
    }
    Ok(Target {
        name: name.clone(),
        problem,
        values,
    })
}

/// Class indices of a target column, the classes sorted (numerically when all are numbers).
fn classes(t: &Column) -> TargetValues {
    let labels: Vec<String> = (0..t.len()).map(|i| t.text(i).unwrap_or_default()).collect();
    let mut classes = labels.clone();
    classes.sort();
    classes.dedup();
    if classes.iter().all(|c| c.parse::<f64>().is_ok()) {
        classes.sort_by(|a, b| a.parse::<f64>().unwrap_or(0.0).total_cmp(&b.parse::<f64>().unwrap_or(0.0)));
    }
    let codes = labels.iter().map(|l| classes.iter().position(|c| c == l).unwrap_or(0)).collect();
    TargetValues::Classes { codes, classes }
}

/// Words taken as truth values (false, true).
const TRUTH: [(&str, &str); 4] = [("false", "true"), ("no", "yes"), ("n", "y"), ("f", "t")];

/// A feature column's kind, or why it is left out.
fn feature(c: Column) -> Result<Feature, Dropped> {
    let drop = |reason: &str| Dropped {
        name: c.name.clone(),
        reason: reason.to_string(),
    };
    let present = c.len() - c.missing();
    if present == 0 {
        return Err(drop("all missing"));
    }
    let kind = match &c.data {
        ColumnData::Numeric(v) => numeric_kind(v, present).ok_or_else(|| drop("identifier"))?,
        ColumnData::Categorical { codes, levels } => {
            let used = levels_used(codes, levels.len());
            if used * 2 > present && mean_words(codes, levels) >= 4.0 {
                return Err(drop("free text"));
            }
            if truth_values(codes, levels).is_some() {
                FeatureKind::Boolean
            } else if used == present && present == c.len() && present > 1 {
                return Err(drop("identifier"));
            } else {
                FeatureKind::Categorical
            }
        }
    };
    if distinct_present(&c) == 1 && present == c.len() {
        return Err(drop("constant"));
    }
    let column = match kind {
        FeatureKind::Boolean => as_truth(c),
        _ => c,
    };
    Ok(Feature { kind, column })
}

/// A numeric column's kind; `None` for a row number.
fn numeric_kind(v: &[f64], present: usize) -> Option<FeatureKind> {
    let row_number = |start: f64| present == v.len() && v.iter().enumerate().all(|(i, &x)| x == start + i as f64);
    if v.len() > 2 && (row_number(0.0) || row_number(1.0)) {
        return None;
    }
    let binary = v.iter().all(|&x| x.is_nan() || x == 0.0 || x == 1.0) && v.contains(&0.0) && v.contains(&1.0);
    Some(if binary { FeatureKind::Boolean } else { FeatureKind::Numeric })
}

fn levels_used(codes: &[u32], levels: usize) -> usize {
    let mut used = vec![false; levels];
    codes.iter().filter(|&&c| c != MISSING).for_each(|&c| used[c as usize] = true);
    used.iter().filter(|&&u| u).count()
}

fn distinct_present(c: &Column) -> usize {
    match &c.data {
        ColumnData::Numeric(v) => {
            let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
            s.sort_by(f64::total_cmp);
            s.dedup();
            s.len()
        }
        ColumnData::Categorical { codes, levels } => levels_used(codes, levels.len()),
    }
}

/// The mean number of whitespace-separated words of a column's present values.
fn mean_words(codes: &[u32], levels: &[String]) -> f64 {
    let words: Vec<usize> = levels.iter().map(|l| l.split_whitespace().count()).collect();
    let present: Vec<usize> = codes.iter().filter(|&&c| c != MISSING).map(|&c| words[c as usize]).collect();
    present.iter().sum::<usize>() as f64 / present.len().max(1) as f64
}

/// What each level of a column means when its present values, in any case, are the two words
/// of one truth pair ([`TRUTH`]); `None` otherwise.
fn truth_values(codes: &[u32], levels: &[String]) -> Option<Vec<bool>> {
    let lower: Vec<String> = levels.iter().map(|l| l.to_lowercase()).collect();
    let mut used = vec![false; levels.len()];
    codes.iter().filter(|&&c| c != MISSING).for_each(|&c| used[c as usize] = true);
    TRUTH.iter().find_map(|&(f, t)| {
        let words: Vec<&str> = lower.iter().zip(&used).filter(|(_, &u)| u).map(|(l, _)| l.as_str()).collect();
        let fits = words.iter().all(|w| *w == f || *w == t) && words.contains(&f) && words.contains(&t);
        fits.then(|| lower.iter().map(|l| l == t).collect())
    })
}

/// A truth-valued string column as the numbers 0 and 1: a word of a truth pair ([`TRUTH`], any
/// case) is its value, whichever pair the column's training rows used (a later file may hold only
/// one of the two words); any other text is missing.
pub(super) fn as_truth(c: Column) -> Column {
    let data = match c.data {
        ColumnData::Categorical { codes, levels } => {
            let truth: Vec<f64> = levels.iter().map(|l| truth_word(&l.to_lowercase())).collect();
            ColumnData::Numeric(codes.iter().map(|&x| if x == MISSING { f64::NAN } else { truth[x as usize] }).collect())
        }
        numeric => numeric,
    };
    Column { name: c.name, data }
}

/// 1 for a true word of a truth pair, 0 for a false one, `NaN` for other text.
fn truth_word(lower: &str) -> f64 {
    TRUTH
        .iter()
        .find_map(|&(f, t)| (lower == f).then_some(0.0).or((lower == t).then_some(1.0)))
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tabular::read::frame_of;

    #[test]
    fn feature_kinds_and_left_out_columns_follow_the_documented_rules() {
        let text = "row,id,num,flag,yes,colour,note,empty,same,target\n\
            0,a1,1.5,0,yes,red,the quick brown fox jumps,,k,x\n\
            1,a2,2.5,1,no,blue,a slow grey cat sleeps here,,k,y\n\
            2,a3,,1,Yes,red,one more line of words here,,k,x\n\
            3,a4,4.0,0,,green,and yet another long note,,k,\n";
        let d = TabularData::from_frame(&frame_of(text), "target", None).unwrap();
        let kinds: Vec<(&str, FeatureKind)> = d.features.iter().map(|f| (f.column.name.as_str(), f.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("num", FeatureKind::Numeric),
                ("flag", FeatureKind::Boolean),
                ("yes", FeatureKind::Boolean),
                ("colour", FeatureKind::Categorical)
            ]
        );
        let dropped: Vec<(&str, &str)> = d.dropped.iter().map(|x| (x.name.as_str(), x.reason.as_str())).collect();
        assert_eq!(
            dropped,
            [
                ("row", "identifier"),
                ("id", "identifier"),
                ("note", "free text"),
                ("empty", "all missing"),
                ("same", "constant")
            ]
        );
        // The row with no target is left out.
        assert_eq!(d.rows, [0, 1, 2]);
        assert_eq!(d.target.problem, Problem::Binary);
        assert_eq!(
            d.target.values,
            TargetValues::Classes {
                codes: vec![0, 1, 0],
                classes: vec!["x".into(), "y".into()]
            }
        );
    }

    #[test]
    fn truth_words_are_booleans_and_classes_sort_numerically() {
        let d = TabularData::from_frame(&frame_of("a,b,t\nYes,5,10\nno,2,9\nyes,7,10\n"), "t", None).unwrap();
        assert_eq!(d.features[0].kind, FeatureKind::Boolean);
        assert_eq!(d.features[0].column.data, ColumnData::Numeric(vec![1.0, 0.0, 1.0]));
        assert_eq!(
            d.target.values,
            TargetValues::Classes {
                codes: vec![1, 0, 1],
                classes: vec!["9".into(), "10".into()]
            }
        );
    }

    #[test]
    fn test_rows_are_taken_like_the_training_rows() {
        let train = TabularData::from_frame(&frame_of("a,b,t\nyes,1.5,x\nno,2.5,y\nyes,3.5,x\n"), "t", None).unwrap();
        let test = train.like(&frame_of("b,a,t,extra\n9,no,y,1\n8,YES,x,2\n")).unwrap();
        assert_eq!(test.features[0].column.data, ColumnData::Numeric(vec![0.0, 1.0]));
        assert_eq!(test.features[1].column.data, ColumnData::Numeric(vec![9.0, 8.0]));
        assert_eq!(
            test.target.values,
            TargetValues::Classes {
                codes: vec![1, 0],
                classes: vec!["x".into(), "y".into()]
            }
        );
        let e = train.like(&frame_of("a,b,t\nyes,1,z\n")).unwrap_err().to_string();
        assert!(e.contains("row 0 has the class 'z', which the training rows do not have"), "{e}");
        let missing = train.like(&frame_of("a,t\nno,x\n")).unwrap();
        assert!(missing.features[1].column.is_missing(0));
    }

    #[test]
    fn bad_targets_are_one_line_errors() {
        let f = frame_of("age,income,Target\n1,2,3\n4,5,3\n");
        let e = TabularData::from_frame(&f, "target", None).unwrap_err().to_string();
        assert_eq!(e, "no column 'target' in the data (did you mean 'Target'?)");
        let e = TabularData::from_frame(&f, "Target", None).unwrap_err().to_string();
        assert!(e.contains("every row has the value '3'"), "{e}");
        let e = TabularData::from_frame(&f, "zzzzzz", None).unwrap_err().to_string();
        assert_eq!(e, "no column 'zzzzzz' in the data");
        let f = frame_of("a,t\n1,x\n2,y\n3,z\n");
        let e = TabularData::from_frame(&f, "t", Some(Problem::Regression)).unwrap_err().to_string();
        assert!(e.contains("a regression needs numbers, and 'x' is not one"), "{e}");
        let e = TabularData::from_frame(&f, "t", Some(Problem::Binary)).unwrap_err().to_string();
        assert!(e.contains("needs two classes, the column has 3"), "{e}");
        let f = frame_of("id,t\na,1\nb,2\n");
        let e = TabularData::from_frame(&f, "t", None).unwrap_err().to_string();
        assert!(e.contains("no usable feature column (left out: id (identifier))"), "{e}");
    }
}
