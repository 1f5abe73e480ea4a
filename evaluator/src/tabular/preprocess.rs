//! Preprocessing of a pipeline, fitted on training rows and applied to any rows: missing-value
//! imputation (with indicator columns), categorical encoding (one-hot up to a cardinality,
//! ordinal, or out-of-fold target encoding), scaling and univariate feature selection.
//!
//! A fitted [`Preprocessor`] refers to categories by their text, not their codes, so it applies
//! to a file read later (unseen categories: one-hot counts them with the levels past its cap,
//! in its `other` column, or gives no column a 1 when it has none; ordinal and target encoding
//! treat them as missing). It serialises as JSON (the exported pipeline keeps it).

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::dataset::{Feature, TargetValues};
use super::frame::{Column, ColumnData, FeatureKind, MISSING};
use super::matrix::Matrix;

/// How missing numbers are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Impute {
    /// The training mean.
    Mean,
    /// The training median.
    Median,
    /// The most frequent training value.
    MostFrequent,
    /// Left missing (`NaN`), for learners that take missing values.
    Keep,
}

/// How categorical columns become numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encode {
    /// A 0/1 column for each of the most frequent levels (up to `max_onehot`), one for the rest.
    OneHot,
    /// The level's rank by training frequency.
    Ordinal,
    /// The target's smoothed mean for the level (a class's share for classes), out of fold on
    /// the training rows.
    Target,
}

/// How columns are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// As they are.
    None,
    /// To mean 0 and standard deviation 1.
    Standard,
    /// To the range 0..1 of the training rows.
    MinMax,
}

/// A pipeline's preprocessing choices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Missing numbers.
    pub impute: Impute,
    /// A 0/1 column for each numeric column with missing training values.
    pub indicators: bool,
    /// Categorical columns.
    pub encode: Encode,
    /// The most one-hot columns of one categorical column (the rest share one).
    pub max_onehot: usize,
    /// Scaling.
    pub scale: Scale,
    /// The share of columns kept by univariate selection (1 keeps all).
    pub select: f64,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            impute: Impute::Median,
            indicators: true,
            encode: Encode::OneHot,
            max_onehot: 16,
            scale: Scale::None,
            select: 1.0,
        }
    }
}

/// The smoothing of target encoding: a level's mean is pulled towards the prior as if it had
/// this many more rows at the prior.
const TARGET_SMOOTHING: f64 = 10.0;

/// Inner folds of out-of-fold target encoding.
const TARGET_FOLDS: usize = 5;

/// The fitted transformation of one feature column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
enum Step {
    Numeric {
        name: String,
        fill: Option<f64>,
        indicator: bool,
    },
    OneHot {
        name: String,
        levels: Vec<String>,
        other: bool,
    },
    Ordinal {
        name: String,
        levels: Vec<String>,
    },
    Target {
        name: String,
        levels: Vec<String>,
        means: Vec<Vec<f64>>,
        prior: Vec<f64>,
    },
}

/// A fitted preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessor {
    spec: Preprocess,
    steps: Vec<Step>,
    /// Per encoded column: subtract the first, multiply by the second.
    scale: Vec<(f64, f64)>,
    /// The encoded columns kept.
    keep: Vec<usize>,
    /// Names of the kept columns.
    pub names: Vec<String>,
}

impl Preprocessor {
    /// Fit on `rows` of `features` (target `y` over the same rows as the features) and give the
    /// training matrix of those rows; target encoding is out of fold there (seeded).
    pub fn fit_transform(spec: &Preprocess, features: &[Feature], y: &TargetValues, rows: &[usize], seed: u64) -> (Preprocessor, Matrix) {
        let steps: Vec<Step> = features.iter().map(|f| fit_step(spec, f, y, rows)).collect();
        let oof = oof_target_encodings(spec, features, y, rows, seed);
        let mut columns = Vec::new();
        for ((step, f), oof) in steps.iter().zip(features).zip(oof) {
            match oof {
                Some(cols) => columns.extend(cols),
                None => columns.extend(apply_step(step, &f.column, rows)),
            }
        }
        let mut p = Preprocessor {
            spec: spec.clone(),
            steps,
            scale: Vec::new(),
            keep: Vec::new(),
            names: Vec::new(),
        };
        p.scale = columns.iter().map(|(_, c)| scale_of(spec.scale, c)).collect();
        scale_columns(&p.scale, &mut columns);
        p.keep = select(spec.select, &columns, &y.take(rows));
        p.names = p.keep.iter().map(|&j| columns[j].0.clone()).collect();
        let kept: Vec<(String, Vec<f64>)> = p.keep.iter().map(|&j| columns[j].clone()).collect();
        (p, Matrix::from_columns(rows.len(), kept))
    }

    /// The matrix of `rows` of `features` (the columns the preprocessor was fitted on, by name,
    /// in its order).
    pub fn transform(&self, features: &[Feature], rows: &[usize]) -> Matrix {
        let mut columns = Vec::new();
        for step in &self.steps {
            let f = features.iter().find(|f| f.column.name == step_name(step));
            match f {
                Some(f) => columns.extend(apply_step(step, &f.column, rows)),
                None => columns.extend(apply_step(
                    step,
                    &missing_column(step_name(step), rows.len()),
                    &(0..rows.len()).collect::<Vec<_>>(),
                )),
            }
        }
        scale_columns(&self.scale, &mut columns);
        let kept: Vec<(String, Vec<f64>)> = self.keep.iter().map(|&j| std::mem::take(&mut columns[j])).collect();
        Matrix::from_columns(rows.len(), kept)
    }

    /// The choices it was fitted with.
    pub fn spec(&self) -> &Preprocess {
        &self.spec
    }
}

fn step_name(step: &Step) -> &str {
    match step {
        Step::Numeric { name, .. } | Step::OneHot { name, .. } | Step::Ordinal { name, .. } | Step::Target { name, .. } => name,
    }
}

fn missing_column(name: &str, rows: usize) -> Column {
    Column {
        name: name.to_string(),
        data: ColumnData::Numeric(vec![f64::NAN; rows]),
    }
}

/// Row `i`'s number (a categorical column's text parsed; `NaN` when missing or not a number).
fn number(c: &Column, i: usize) -> f64 {
    match &c.data {
        ColumnData::Numeric(v) => v[i],
        ColumnData::Categorical { codes, levels } => match codes[i] {
            MISSING => f64::NAN,
            k => levels[k as usize].parse().unwrap_or(f64::NAN),
        },
    }
}

/// Levels of `rows` of `c`, most frequent first (ties in order of first appearance).
fn levels_by_frequency(c: &Column, rows: &[usize]) -> Vec<String> {
    let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
    for (pos, &r) in rows.iter().enumerate() {
        if let Some(l) = c.text(r) {
            counts.entry(l).or_insert((0, pos)).0 += 1;
        }
    }
    let mut levels: Vec<(String, (usize, usize))> = counts.into_iter().collect();
    levels.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.1 .1.cmp(&b.1 .1)));
    levels.into_iter().map(|(l, _)| l).collect()
}

fn fit_step(spec: &Preprocess, f: &Feature, y: &TargetValues, rows: &[usize]) -> Step {
    let name = f.column.name.clone();
    if f.kind != FeatureKind::Categorical {
        let values: Vec<f64> = rows.iter().map(|&r| number(&f.column, r)).collect();
        let missing = values.iter().any(|v| v.is_nan());
        return Step::Numeric {
            name,
            fill: fill_value(spec.impute, &values),
            indicator: spec.indicators && missing,
        };
    }
    let levels = levels_by_frequency(&f.column, rows);
    match spec.encode {
        Encode::OneHot => Step::OneHot {
            name,
            other: levels.len() > spec.max_onehot,
            levels: levels.into_iter().take(spec.max_onehot.max(1)).collect(),
        },
        Encode::Ordinal => Step::Ordinal { name, levels },
        Encode::Target => {
            let (means, prior) = target_means(&f.column, &levels, y, rows);
            Step::Target { name, levels, means, prior }
        }
    }
}

/// The fill of missing numbers (`None` keeps them missing).
fn fill_value(impute: Impute, values: &[f64]) -> Option<f64> {
    let mut present: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if present.is_empty() {
        return (impute != Impute::Keep).then_some(0.0);
    }
    present.sort_by(f64::total_cmp);
    match impute {
        Impute::Keep => None,
        Impute::Mean => Some(present.iter().sum::<f64>() / present.len() as f64),
        Impute::Median => {
            let n = present.len();
            Some(if n % 2 == 1 {
                present[n / 2]
            } else {
                (present[n / 2 - 1] + present[n / 2]) / 2.0
            })
        }
        Impute::MostFrequent => {
            let mut best = (present[0], 0usize);
            let mut i = 0;
            while i < present.len() {
                let j = present[i..].iter().take_while(|&&v| v == present[i]).count();
                if j > best.1 {
                    best = (present[i], j);
                }
                i += j;
            }
            Some(best.0)
        }
    }
}

/// What one row of the target adds to an encoding: the class's indicator for each class but
/// the first of a binary problem (one column), every class of a multiclass one, the value of a
/// regression.
fn target_row(y: &TargetValues, r: usize) -> Vec<f64> {
    match y {
        TargetValues::Values(v) => vec![v[r]],
        TargetValues::Classes { codes, classes } if classes.len() == 2 => vec![f64::from(u8::from(codes[r] == 1))],
        TargetValues::Classes { codes, classes } => (0..classes.len()).map(|c| f64::from(u8::from(codes[r] == c))).collect(),
    }
}

/// Smoothed target means of each level over `rows`, and the prior.
fn target_means(c: &Column, levels: &[String], y: &TargetValues, rows: &[usize]) -> (Vec<Vec<f64>>, Vec<f64>) {
    let width = target_row(y, 0).len();
    let index: HashMap<&str, usize> = levels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    let mut sums = vec![vec![0.0; width]; levels.len()];
    let mut counts = vec![0.0; levels.len()];
    let mut prior = vec![0.0; width];
    for &r in rows {
        let t = target_row(y, r);
        prior.iter_mut().zip(&t).for_each(|(p, v)| *p += v);
        if let Some(&k) = c.text(r).as_deref().and_then(|l| index.get(l)) {
            sums[k].iter_mut().zip(&t).for_each(|(s, v)| *s += v);
            counts[k] += 1.0;
        }
    }
    prior.iter_mut().for_each(|p| *p /= rows.len().max(1) as f64);
    let means = sums
        .iter()
        .zip(&counts)
        .map(|(s, &n)| s.iter().zip(&prior).map(|(s, p)| (s + TARGET_SMOOTHING * p) / (n + TARGET_SMOOTHING)).collect())
        .collect();
    (means, prior)
}

/// Out-of-fold target encodings of the target-encoded columns on the training rows (`None` for
/// the other columns): each row's encoding is fitted on the other folds.
/// Named encoded columns.
type Columns = Vec<(String, Vec<f64>)>;

fn oof_target_encodings(spec: &Preprocess, features: &[Feature], y: &TargetValues, rows: &[usize], seed: u64) -> Vec<Option<Columns>> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x7e));
    let fold_of: Vec<usize> = {
        let mut f = vec![0; rows.len()];
        order.iter().enumerate().for_each(|(i, &p)| f[p] = i % TARGET_FOLDS);
        f
    };
    features
        .iter()
        .map(|f| {
            if spec.encode != Encode::Target || f.kind != FeatureKind::Categorical {
                return None;
            }
            let mut out: Vec<Vec<f64>> = Vec::new();
            for k in 0..TARGET_FOLDS {
                let fit: Vec<usize> = rows.iter().enumerate().filter(|(p, _)| fold_of[*p] != k).map(|(_, &r)| r).collect();
                let held: Vec<(usize, usize)> = rows.iter().enumerate().filter(|(p, _)| fold_of[*p] == k).map(|(p, &r)| (p, r)).collect();
                let levels = levels_by_frequency(&f.column, &fit);
                let (means, prior) = target_means(&f.column, &levels, y, &fit);
                let step = Step::Target {
                    name: f.column.name.clone(),
                    levels,
                    means,
                    prior,
                };
                let held_rows: Vec<usize> = held.iter().map(|&(_, r)| r).collect();
                let cols = apply_step(&step, &f.column, &held_rows);
                if out.is_empty() {
                    out = vec![vec![0.0; rows.len()]; cols.len()];
                }
                for (j, (_, c)) in cols.iter().enumerate() {
                    held.iter().zip(c).for_each(|(&(p, _), &v)| out[j][p] = v);
                }
            }
            let names = target_names(&f.column.name, out.len());
            Some(names.into_iter().zip(out).collect())
        })
        .collect()
}

fn target_names(name: &str, width: usize) -> Vec<String> {
    match width {
        1 => vec![format!("{name}=target")],
        w => (0..w).map(|c| format!("{name}=target{c}")).collect(),
    }
}

/// The encoded columns of `step` for `rows` of `c`.
fn apply_step(step: &Step, c: &Column, rows: &[usize]) -> Vec<(String, Vec<f64>)> {
    match step {
        Step::Numeric { name, fill, indicator } => {
            let raw: Vec<f64> = rows.iter().map(|&r| number(c, r)).collect();
            let mut out = vec![(
                name.clone(),
                raw.iter().map(|&v| if v.is_nan() { fill.unwrap_or(f64::NAN) } else { v }).collect(),
            )];
            if *indicator {
                out.push((format!("{name}=missing"), raw.iter().map(|v| f64::from(u8::from(v.is_nan()))).collect()));
            }
            out
        }
        Step::OneHot { name, levels, other } => {
            let index: HashMap<&str, usize> = levels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
            let width = levels.len() + usize::from(*other);
            let mut cols = vec![vec![0.0; rows.len()]; width];
            for (p, &r) in rows.iter().enumerate() {
                match c.text(r).as_deref().map(|l| index.get(l)) {
                    Some(Some(&k)) => cols[k][p] = 1.0,
                    // A level past the most frequent ones, or one unseen in training.
                    Some(None) if *other => cols[levels.len()][p] = 1.0,
                    _ => {}
                }
            }
            let mut names: Vec<String> = levels.iter().map(|l| format!("{name}={l}")).collect();
            if *other {
                names.push(format!("{name}=other"));
            }
            names.into_iter().zip(cols).collect()
        }
        Step::Ordinal { name, levels } => {
            let index: HashMap<&str, usize> = levels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
            let codes = rows
                .iter()
                .map(|&r| c.text(r).as_deref().and_then(|l| index.get(l)).map_or(f64::NAN, |&k| k as f64))
                .collect();
            vec![(name.clone(), codes)]
        }
        Step::Target { name, levels, means, prior } => {
            let index: HashMap<&str, usize> = levels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
            let mut cols = vec![vec![0.0; rows.len()]; prior.len()];
            for (p, &r) in rows.iter().enumerate() {
                let m = c.text(r).as_deref().and_then(|l| index.get(l)).map_or(prior, |&k| &means[k]);
                cols.iter_mut().zip(m).for_each(|(col, &v)| col[p] = v);
            }
            target_names(name, prior.len()).into_iter().zip(cols).collect()
        }
    }
}

/// The shift and factor of one column (missing values ignored).
fn scale_of(scale: Scale, c: &[f64]) -> (f64, f64) {
    let present: Vec<f64> = c.iter().copied().filter(|v| !v.is_nan()).collect();
    if present.is_empty() {
        return (0.0, 1.0);
    }
    let n = present.len() as f64;
    match scale {
        Scale::None => (0.0, 1.0),
        Scale::Standard => {
            let mean = present.iter().sum::<f64>() / n;
            let sd = (present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            (mean, if sd > 1e-12 { 1.0 / sd } else { 1.0 })
        }
        Scale::MinMax => {
            let (lo, hi) = present.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            (lo, if hi - lo > 1e-12 { 1.0 / (hi - lo) } else { 1.0 })
        }
    }
}

fn scale_columns(scale: &[(f64, f64)], columns: &mut [(String, Vec<f64>)]) {
    for ((_, c), &(shift, factor)) in columns.iter_mut().zip(scale) {
        if shift != 0.0 || factor != 1.0 {
            c.iter_mut().for_each(|v| *v = (*v - shift) * factor);
        }
    }
}

/// The columns kept by univariate selection: the share `keep` (at least one) with the largest
/// absolute correlation with the target (the largest over the classes' indicators), in their
/// order.
fn select(keep: f64, columns: &[(String, Vec<f64>)], y: &TargetValues) -> Vec<usize> {
    let all: Vec<usize> = (0..columns.len()).collect();
    if keep >= 1.0 || columns.is_empty() {
        return all;
    }
    let targets: Vec<Vec<f64>> = {
        let rows: Vec<Vec<f64>> = (0..y.len()).map(|r| target_row(y, r)).collect();
        (0..rows[0].len()).map(|j| rows.iter().map(|t| t[j]).collect()).collect()
    };
    let score = |c: &[f64]| targets.iter().map(|t| correlation(c, t).abs()).fold(0.0, f64::max);
    let mut scored: Vec<(usize, f64)> = columns.iter().enumerate().map(|(j, (_, c))| (j, score(c))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let n = ((columns.len() as f64 * keep).ceil() as usize).clamp(1, columns.len());
    let mut kept: Vec<usize> = scored[..n].iter().map(|&(j, _)| j).collect();
    kept.sort();
    kept
}

/// Pearson correlation over the rows where `a` is present (0 when either is constant).
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let pairs: Vec<(f64, f64)> = a.iter().zip(b).filter(|(x, _)| !x.is_nan()).map(|(&x, &y)| (x, y)).collect();
    let n = pairs.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (ma, mb) = (pairs.iter().map(|p| p.0).sum::<f64>() / n, pairs.iter().map(|p| p.1).sum::<f64>() / n);
    let cov: f64 = pairs.iter().map(|(x, y)| (x - ma) * (y - mb)).sum();
    let (va, vb): (f64, f64) = (pairs.iter().map(|p| (p.0 - ma).powi(2)).sum(), pairs.iter().map(|p| (p.1 - mb).powi(2)).sum());
    if va < 1e-300 || vb < 1e-300 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tabular::dataset::TabularData;
    use crate::tabular::read::frame_of;

    fn data(text: &str) -> TabularData {
        TabularData::from_frame(&frame_of(text), "t", None).unwrap()
    }

    const TEXT: &str = "x,c,t\n1,a,0\n,b,1\n3,a,0\n5,c,1\n7,a,1\n9,b,0\n";

    #[test]
    fn imputation_indicators_and_one_hot_with_a_cap() {
        let d = data(TEXT);
        let rows: Vec<usize> = (0..6).collect();
        let spec = Preprocess {
            max_onehot: 2,
            ..Preprocess::default()
        };
        let (p, m) = Preprocessor::fit_transform(&spec, &d.features, &d.target.values, &rows, 0);
        assert_eq!(m.names, ["x", "x=missing", "c=a", "c=b", "c=other"]);
        // The median of 1, 3, 5, 7, 9 fills row 1.
        assert_eq!(m.row(1), [5.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(m.row(3), [5.0, 0.0, 0.0, 0.0, 1.0]);
        // The same rows through the fitted preprocessor give the same matrix (no target encoding).
        assert_eq!(p.transform(&d.features, &rows), m);
        // A file read later with an unseen level and the categories in another order.
        let later = data("x,c,t\n2,zzz,0\n4,b,1\n6,b,0\n");
        let m2 = p.transform(&later.features, &[0, 1]);
        assert_eq!(m2.row(0), [2.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(m2.row(1), [4.0, 0.0, 0.0, 1.0, 0.0]);
        // It serialises.
        let back: Preprocessor = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn target_encoding_is_out_of_fold_on_training_rows_and_smoothed() {
        let d = data(TEXT);
        let rows: Vec<usize> = (0..6).collect();
        let spec = Preprocess {
            encode: Encode::Target,
            impute: Impute::Mean,
            indicators: false,
            ..Preprocess::default()
        };
        let (p, m) = Preprocessor::fit_transform(&spec, &d.features, &d.target.values, &rows, 3);
        assert_eq!(m.names, ["x", "c=target"]);
        // Full-data means: a = (1 + 10 × 0.5) / (3 + 10), the prior being 0.5.
        let full = p.transform(&d.features, &[0]);
        assert!((full.row(0)[1] - 6.0 / 13.0).abs() < 1e-12);
        // Out of fold, a training row's own target is not in its encoding.
        assert_ne!(m.column(1), p.transform(&d.features, &rows).column(1));
    }

    #[test]
    fn scaling_and_selection() {
        let d = data("x,noise,t\n10,5,0\n11,3,0\n13,4,1\n14,5,1\n");
        let rows: Vec<usize> = (0..4).collect();
        let spec = Preprocess {
            scale: Scale::Standard,
            select: 0.5,
            ..Preprocess::default()
        };
        let (_, m) = Preprocessor::fit_transform(&spec, &d.features, &d.target.values, &rows, 0);
        assert_eq!(m.names, ["x"]);
        let mean: f64 = m.column(0).iter().sum::<f64>() / 4.0;
        assert!(mean.abs() < 1e-12);
    }
}
