//! Greedy ensemble selection with replacement (Caruana, Niculescu-Mizil, Crew & Ksikes, ICML
//! 2004): starting from the best single model, repeatedly add the model (any, again or not)
//! whose addition makes the averaged out-of-fold prediction best on the task's metric; the
//! ensemble is the best of those averages, its weights the models' counts.

use serde::{Deserialize, Serialize};

use super::dataset::TargetValues;
use super::metrics::Metric;
use super::pipeline::score;

/// Additions after the first model.
pub const ROUNDS: usize = 24;

/// The models chosen and their weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    /// `(index of the model among those given, weight)`, weights summing to 1, by index.
    pub weights: Vec<(usize, f64)>,
    /// The metric of the weighted out-of-fold prediction.
    pub score: f64,
    /// The best single model (the first chosen): its index among those given.
    pub best: usize,
}

/// The ensemble of `oofs` (each a model's out-of-fold predictions of every row of `y`, rows ×
/// `width`), scored on `rows` (the rows the folds predicted) with `metric`.
pub fn select(oofs: &[&[f64]], y: &TargetValues, rows: &[usize], width: usize, metric: Metric) -> Option<Ensemble> {
    if oofs.is_empty() || rows.is_empty() {
        return None;
    }
    let preds: Vec<Vec<f64>> = oofs.iter().map(|p| pick(p, rows, width)).collect();
    let loss = |p: &[f64]| {
        let s = score(metric, y, rows, p);
        if s.is_nan() {
            f64::INFINITY
        } else {
            metric.loss(s)
        }
    };
    let mut counts = vec![0usize; preds.len()];
    let mut sum = vec![0.0; preds[0].len()];
    let mut best: Option<(f64, Vec<usize>)> = None;
    let mut first = None;
    for round in 0..=ROUNDS {
        let n = (round + 1) as f64;
        let trial = |m: usize| -> f64 {
            let avg: Vec<f64> = sum.iter().zip(&preds[m]).map(|(s, p)| (s + p) / n).collect();
            loss(&avg)
        };
        let (m, l) = (0..preds.len())
            .map(|m| (m, trial(m)))
            .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
        if !l.is_finite() {
            break;
        }
        first.get_or_insert(m);
        counts[m] += 1;
        sum.iter_mut().zip(&preds[m]).for_each(|(s, p)| *s += p);
        if best.as_ref().is_none_or(|(b, _)| l < *b) {
            best = Some((l, counts.clone()));
        }
    }
    let (l, counts) = best?;
    let total: usize = counts.iter().sum();
    Some(Ensemble {
        weights: counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (i, c as f64 / total as f64))
            .collect(),
        score: if metric.higher_is_better() { -l } else { l },
        best: first?,
    })
}

/// The predictions of `rows` (each `width` wide) out of predictions of every row.
fn pick(p: &[f64], rows: &[usize], width: usize) -> Vec<f64> {
    rows.iter().flat_map(|&r| p[r * width..(r + 1) * width].to_vec()).collect()
}

/// The metric on `rows` of the blend of `oofs` (each a model's predictions of every row of `y`)
/// with weights `e.weights` (its `score` is not read): what a changed set of weights scores.
pub fn score_blend(e: &Ensemble, oofs: &[&[f64]], y: &TargetValues, rows: &[usize], width: usize, metric: Metric) -> f64 {
    let picked: Vec<Vec<f64>> = oofs.iter().map(|p| pick(p, rows, width)).collect();
    let refs: Vec<&[f64]> = picked.iter().map(Vec::as_slice).collect();
    score(metric, y, rows, &blend(e, &refs))
}

/// The weighted average of predictions `preds` (one a model, each rows × width) with the
/// ensemble's weights (indices into `preds`).
pub fn blend(e: &Ensemble, preds: &[&[f64]]) -> Vec<f64> {
    let mut out = vec![0.0; preds.first().map_or(0, |p| p.len())];
    for &(i, w) in &e.weights {
        out.iter_mut().zip(preds[i]).for_each(|(o, p)| *o += w * p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ensemble_beats_its_members_when_they_err_differently_and_keeps_a_lone_best() {
        // Two regressors, each wrong on half the rows in opposite directions: their average
        // is exact.
        let y = TargetValues::Values(vec![1.0, 2.0, 3.0, 4.0]);
        let a = [2.0, 3.0, 3.0, 4.0];
        let b = [0.0, 1.0, 3.0, 4.0];
        let rows = [0, 1, 2, 3];
        let e = select(&[&a, &b], &y, &rows, 1, Metric::Rmse).unwrap();
        assert!(e.score < 1e-12, "{e:?}");
        assert_eq!(e.weights, [(0, 0.5), (1, 0.5)]);
        assert_eq!(blend(&e, &[&a, &b]), [1.0, 2.0, 3.0, 4.0]);
        // A useless model is not taken.
        let c = [9.0, 9.0, 9.0, 9.0];
        let exact = [1.0, 2.0, 3.0, 4.0];
        let e = select(&[&c, &exact], &y, &rows, 1, Metric::Rmse).unwrap();
        assert_eq!(e.weights, [(1, 1.0)]);
    }

    #[test]
    fn classes_are_averaged_as_probabilities_on_the_task_metric() {
        let y = TargetValues::Classes {
            codes: vec![0, 1, 1, 0],
            classes: vec!["a".into(), "b".into()],
        };
        let good = [0.8, 0.2, 0.3, 0.7, 0.4, 0.6, 0.6, 0.4];
        let bad = [0.2, 0.8, 0.7, 0.3, 0.6, 0.4, 0.4, 0.6];
        let e = select(&[&bad, &good], &y, &[0, 1, 2, 3], 2, Metric::RocAuc).unwrap();
        assert_eq!(e.weights, [(1, 1.0)]);
        assert_eq!(e.score, 1.0);
        assert_eq!(e.best, 1);
    }
}
