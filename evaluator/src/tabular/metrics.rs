//! Metrics of tabular tasks, computed one way for autoagent and for every peer it is compared
//! with: ROC-AUC (binary), log-loss and accuracy (classification), RMSE, MAE and R²
//! (regression).
//!
//! Predictions of a classifier are class probabilities, row-major (`rows × classes`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::problem::Problem;

/// Probabilities are clipped to `[EPS, 1 - EPS]` for the log-loss (as scikit-learn).
const EPS: f64 = 1e-15;

/// A metric of a tabular task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Area under the ROC curve of the positive class (binary).
    RocAuc,
    /// Mean negative log-likelihood of the true class.
    LogLoss,
    /// Share of rows whose most probable class is the true one.
    Accuracy,
    /// The mean of the classes' recalls (for imbalanced classes).
    BalancedAccuracy,
    /// Root mean squared error.
    Rmse,
    /// Mean absolute error.
    Mae,
    /// Coefficient of determination.
    R2,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 7] = [
        Metric::RocAuc,
        Metric::LogLoss,
        Metric::Accuracy,
        Metric::BalancedAccuracy,
        Metric::Rmse,
        Metric::Mae,
        Metric::R2,
    ];

    /// The name (`roc_auc`, `log_loss`, `accuracy`, `balanced_accuracy`, `rmse`, `mae`, `r2`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::RocAuc => "roc_auc",
            Metric::LogLoss => "log_loss",
            Metric::Accuracy => "accuracy",
            Metric::BalancedAccuracy => "balanced_accuracy",
            Metric::Rmse => "rmse",
            Metric::Mae => "mae",
            Metric::R2 => "r2",
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::RocAuc | Metric::Accuracy | Metric::BalancedAccuracy | Metric::R2)
    }

    /// Whether the metric applies to `problem`.
    pub fn applies_to(self, problem: Problem) -> bool {
        match self {
            Metric::RocAuc => problem == Problem::Binary,
            Metric::LogLoss | Metric::Accuracy | Metric::BalancedAccuracy => problem.is_classification(),
            Metric::Rmse | Metric::Mae | Metric::R2 => problem == Problem::Regression,
        }
    }

    /// The default metric of `problem` (binary: ROC-AUC, multiclass: log-loss, regression:
    /// RMSE).
    pub fn default_for(problem: Problem) -> Metric {
        match problem {
            Problem::Binary => Metric::RocAuc,
            Problem::Multiclass => Metric::LogLoss,
            Problem::Regression => Metric::Rmse,
        }
    }

    /// The metrics reported beside the task's (the task's first).
    pub fn reported(self, problem: Problem) -> Vec<Metric> {
        let mut all = vec![self];
        let more: &[Metric] = match problem {
            Problem::Binary => &[Metric::RocAuc, Metric::LogLoss, Metric::Accuracy],
            Problem::Multiclass => &[Metric::LogLoss, Metric::Accuracy],
            Problem::Regression => &[Metric::Rmse, Metric::R2],
        };
        all.extend(more.iter().filter(|m| **m != self));
        all
    }

    /// The metric of `pred` against `truth`.
    pub fn score(self, truth: &Truth<'_>, pred: &[f64]) -> f64 {
        match (self, truth) {
            (Metric::RocAuc, Truth::Classes(y)) => roc_auc(y, &column(pred, 2, 1)),
            (Metric::LogLoss, Truth::Classes(y)) => log_loss(y, pred),
            (Metric::Accuracy, Truth::Classes(y)) => accuracy(y, pred),
            (Metric::BalancedAccuracy, Truth::Classes(y)) => balanced_accuracy(y, pred),
            (Metric::Rmse, Truth::Values(y)) => rmse(y, pred),
            (Metric::Mae, Truth::Values(y)) => mae(y, pred),
            (Metric::R2, Truth::Values(y)) => r2(y, pred),
            _ => f64::NAN,
        }
    }

    /// `value` as a loss (smaller is better), to compare and to minimise.
    pub fn loss(self, value: f64) -> f64 {
        if self.higher_is_better() {
            -value
        } else {
            value
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase().replace('-', "_");
        let alias = match s.as_str() {
            "auc" | "roc" => "roc_auc",
            "logloss" | "log_loss" | "cross_entropy" => "log_loss",
            "acc" => "accuracy",
            other => other,
        };
        Metric::ALL.into_iter().find(|m| m.name() == alias).ok_or_else(|| {
            let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
            format!("unknown metric '{s}' (expected one of {})", names.join(", "))
        })
    }
}

/// The true values a prediction is scored against.
#[derive(Debug, Clone, Copy)]
pub enum Truth<'a> {
    /// Class indices; predictions are probabilities, `classes` a row.
    Classes(&'a [usize]),
    /// Numbers; predictions are numbers.
    Values(&'a [f64]),
}

/// Column `j` of a row-major matrix of `width` columns.
fn column(m: &[f64], width: usize, j: usize) -> Vec<f64> {
    m.chunks(width).map(|r| r[j]).collect()
}

/// ROC-AUC of scores `s` for the positive class 1 of `y` (the Mann-Whitney U statistic, ties
/// counted half); `NaN` when one class is absent.
pub fn roc_auc(y: &[usize], s: &[f64]) -> f64 {
    // Average ranks (1-based) of tied scores.
    let ranks = autoagent_proxies::stats::ranks(s);
    let pos = y.iter().filter(|&&c| c == 1).count() as f64;
    let neg = y.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    let rank_sum: f64 = y.iter().zip(&ranks).filter(|(&c, _)| c == 1).map(|(_, r)| r).sum();
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Mean negative log-probability of the true class (each row renormalised after clipping).
pub fn log_loss(y: &[usize], p: &[f64]) -> f64 {
    let k = p.len() / y.len().max(1);
    let total: f64 = y
        .iter()
        .zip(p.chunks(k))
        .map(|(&c, row)| {
            let sum: f64 = row.iter().map(|q| q.clamp(EPS, 1.0 - EPS)).sum();
            -(row[c].clamp(EPS, 1.0 - EPS) / sum).ln()
        })
        .sum();
    total / y.len() as f64
}

/// The index of the largest value of `row` (the first of ties).
pub fn argmax(row: &[f64]) -> usize {
    row.iter().enumerate().fold(0, |best, (j, &v)| if v > row[best] { j } else { best })
}

/// Share of rows whose most probable class is the true one.
pub fn accuracy(y: &[usize], p: &[f64]) -> f64 {
    let k = p.len() / y.len().max(1);
    let hits = y.iter().zip(p.chunks(k)).filter(|(&c, row)| argmax(row) == c).count();
    hits as f64 / y.len() as f64
}

/// The mean over the classes present of the share of their rows predicted right.
pub fn balanced_accuracy(y: &[usize], p: &[f64]) -> f64 {
    let k = p.len() / y.len().max(1);
    let (mut hits, mut rows) = (vec![0usize; k], vec![0usize; k]);
    for (&c, row) in y.iter().zip(p.chunks(k)) {
        rows[c] += 1;
        hits[c] += usize::from(argmax(row) == c);
    }
    let recalls: Vec<f64> = hits.iter().zip(&rows).filter(|(_, &n)| n > 0).map(|(&h, &n)| h as f64 / n as f64).collect();
    recalls.iter().sum::<f64>() / recalls.len().max(1) as f64
}

/// Root mean squared error.
pub fn rmse(y: &[f64], p: &[f64]) -> f64 {
    (y.iter().zip(p).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / y.len() as f64).sqrt()
}

/// Mean absolute error.
pub fn mae(y: &[f64], p: &[f64]) -> f64 {
    y.iter().zip(p).map(|(a, b)| (a - b).abs()).sum::<f64>() / y.len() as f64
}

/// Coefficient of determination: 1 − SSres / SStot.
pub fn r2(y: &[f64], p: &[f64]) -> f64 {
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let tot: f64 = y.iter().map(|a| (a - mean).powi(2)).sum();
    let res: f64 = y.iter().zip(p).map(|(a, b)| (a - b).powi(2)).sum();
    1.0 - res / tot
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn metrics_match_their_definitions_on_hand_computed_cases() {
        // Scikit-learn's documented example: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.75.
        assert!(close(roc_auc(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8]), 0.75));
        // Ties count half.
        assert!(close(roc_auc(&[0, 1], &[0.5, 0.5]), 0.5));
        assert!(roc_auc(&[1, 1], &[0.2, 0.3]).is_nan());
        let p = [0.9, 0.1, 0.2, 0.8, 0.6, 0.4];
        let y = [0, 1, 1];
        assert!(close(log_loss(&y, &p), -(0.9f64.ln() + 0.8f64.ln() + 0.4f64.ln()) / 3.0));
        assert!(close(accuracy(&y, &p), 2.0 / 3.0));
        assert!(close(balanced_accuracy(&y, &p), (1.0 + 0.5) / 2.0));
        // A zero probability is clipped, not infinite.
        assert!(log_loss(&[1], &[1.0, 0.0]).is_finite());
        assert!(close(rmse(&[1.0, 3.0], &[2.0, 1.0]), (2.5f64).sqrt()));
        assert!(close(mae(&[1.0, 3.0], &[2.0, 1.0]), 1.5));
        assert!(close(r2(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 1.0));
        assert!(close(r2(&[1.0, 2.0, 3.0], &[2.0, 2.0, 2.0]), 0.0));
        assert!(close(Metric::RocAuc.score(&Truth::Classes(&[0, 1]), &[0.7, 0.3, 0.2, 0.8]), 1.0));
    }

    #[test]
    fn names_defaults_and_directions() {
        assert_eq!("AUC".parse::<Metric>(), Ok(Metric::RocAuc));
        assert_eq!("log-loss".parse::<Metric>(), Ok(Metric::LogLoss));
        assert!("f1".parse::<Metric>().unwrap_err().contains("expected one of roc_auc"));
        assert_eq!(Metric::default_for(Problem::Multiclass), Metric::LogLoss);
        assert!(!Metric::RocAuc.applies_to(Problem::Multiclass));
        assert_eq!(Metric::LogLoss.reported(Problem::Multiclass), [Metric::LogLoss, Metric::Accuracy]);
        assert_eq!(Metric::Rmse.reported(Problem::Regression), [Metric::Rmse, Metric::R2]);
        assert!(Metric::Rmse.loss(2.0) < Metric::Rmse.loss(3.0));
        assert!(Metric::RocAuc.loss(0.9) < Metric::RocAuc.loss(0.8));
    }
}
