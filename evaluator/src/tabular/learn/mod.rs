//! The model families of a tabular pipeline, behind one enum: LightGBM's boosted trees, random
//! forests and extra trees ([`gbm`]), regularised linear and logistic regression ([`linear`]),
//! k-nearest neighbours ([`knn`]), and multilayer perceptrons built with candle ([`mlp`]), whose
//! shapes the zero-cost proxies rank. Every learner is fitted on a [`Matrix`] and predicts class
//! probabilities (rows × classes, row-major) or values, and serialises once fitted.

pub mod gbm;
pub mod knn;
pub mod linear;
pub mod mlp;

use serde::{Deserialize, Serialize};

use super::dataset::TargetValues;
use super::matrix::Matrix;
use super::problem::Problem;

/// A learner that could not be fitted or could not predict.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct LearnError(pub String);

/// What a fit needs besides the learner and the data.
#[derive(Debug, Clone, Copy)]
pub struct Fit<'a> {
    /// The problem.
    pub problem: Problem,
    /// Classes of the task (1 for a regression), whether or not each is in the rows.
    pub classes: usize,
    /// Threads the learner may use.
    pub threads: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Rows to stop boosting early on (their matrix and target numbers).
    pub valid: Option<(&'a Matrix, &'a [f64])>,
    /// When the fit must have ended (a trial's share of a time budget): boosting on a large
    /// table grows only the trees that fit by then (see [`gbm::fit`]).
    pub deadline: Option<std::time::Instant>,
}

/// A model family and its hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Learner {
    /// LightGBM: boosting, a random forest or extra trees.
    Gbm(gbm::GbmParams),
    /// Logistic regression (classes) or ridge regression (values), L2-regularised.
    Linear(linear::LinearParams),
    /// k-nearest neighbours.
    Knn(knn::KnnParams),
    /// A multilayer perceptron.
    Mlp(mlp::MlpParams),
}

/// A fitted model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Fitted {
    /// LightGBM's model.
    Gbm(gbm::FittedGbm),
    /// A linear model.
    Linear(linear::FittedLinear),
    /// The training rows of k-nearest neighbours.
    Knn(knn::FittedKnn),
    /// An MLP's weights.
    Mlp(mlp::FittedMlp),
}

/// The target as numbers: class indices or values.
pub fn target_numbers(y: &TargetValues) -> Vec<f64> {
    match y {
        TargetValues::Classes { codes, .. } => codes.iter().map(|&c| c as f64).collect(),
        TargetValues::Values(v) => v.clone(),
    }
}

impl Learner {
    /// Fit on `x` and `y` (class indices or values, see [`target_numbers`]).
    pub fn fit(&self, x: &Matrix, y: &[f64], fit: &Fit) -> Result<Fitted, LearnError> {
        if x.rows == 0 {
            return Err(LearnError("no rows to fit on".into()));
        }
        Ok(match self {
            Learner::Gbm(p) => Fitted::Gbm(gbm::fit(p, x, y, fit)?),
            Learner::Linear(p) => Fitted::Linear(linear::fit(p, x, y, fit)?),
            Learner::Knn(p) => Fitted::Knn(knn::fit(p, x, y, fit)),
            Learner::Mlp(p) => Fitted::Mlp(mlp::fit(p, x, y, fit)?),
        })
    }

    /// The family's name (`gbm`, `linear`, `knn`, `mlp`).
    pub fn family(&self) -> &'static str {
        match self {
            Learner::Gbm(_) => "gbm",
            Learner::Linear(_) => "linear",
            Learner::Knn(_) => "knn",
            Learner::Mlp(_) => "mlp",
        }
    }
}

impl Fitted {
    /// Predictions for `x`: rows × classes probabilities, or one value a row.
    pub fn predict(&self, x: &Matrix, threads: usize) -> Result<Vec<f64>, LearnError> {
        match self {
            Fitted::Gbm(m) => m.predict(x, threads),
            Fitted::Linear(m) => Ok(m.predict(x)),
            Fitted::Knn(m) => Ok(m.predict(x, threads)),
            Fitted::Mlp(m) => m.predict(x, threads),
        }
    }

    /// The trees boosting kept, or the epochs of an MLP's weights (`None` for other learners).
    pub fn rounds(&self) -> Option<usize> {
        match self {
            Fitted::Gbm(g) => Some(g.trees),
            Fitted::Mlp(m) => Some(m.epochs),
            _ => None,
        }
    }
}

/// `x`'s values with missing ones as 0 (for learners that take no missing value; the
/// pipeline's imputation normally leaves none).
fn finite(x: &Matrix) -> Vec<f64> {
    x.data.iter().map(|&v| if v.is_finite() { v } else { 0.0 }).collect()
}
