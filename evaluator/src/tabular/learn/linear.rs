//! L2-regularised linear models with `linfa`: multinomial logistic regression for classes
//! (`linfa-logistic`, also for two classes) and ridge regression for values
//! (`linfa-elasticnet` with no L1 share).

use linfa::prelude::{Dataset, Fit as _};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::{finite, Fit, LearnError};
use crate::tabular::matrix::Matrix;
use crate::tabular::problem::Problem;

/// A linear model's hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearParams {
    /// L2 penalty (logistic: `alpha`; ridge: the penalty).
    pub alpha: f64,
    /// The most optimiser iterations.
    pub max_iterations: u64,
}

impl Default for LinearParams {
    fn default() -> Self {
        LinearParams {
            alpha: 1.0,
            max_iterations: 200,
        }
    }
}

/// A fitted linear model: one weight vector and intercept an output (a class's score, or the
/// value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedLinear {
    /// Weights, outputs × columns, row-major.
    pub weights: Vec<f64>,
    /// Intercepts, one an output.
    pub intercepts: Vec<f64>,
    /// Classes (softmax over the outputs), or 1 for a regression (the value).
    pub classes: usize,
}

fn array(x: &Matrix) -> Result<Array2<f64>, LearnError> {
    Array2::from_shape_vec((x.rows, x.cols), finite(x)).map_err(|e| LearnError(format!("linear: {e}")))
}

/// Fit on `x` and `y` (class indices or values).
pub fn fit(params: &LinearParams, x: &Matrix, y: &[f64], fit: &Fit) -> Result<FittedLinear, LearnError> {
    let xs = array(x)?;
    match fit.problem {
        Problem::Regression => {
            let data = Dataset::new(xs, Array1::from(y.to_vec()));
            let m = linfa_elasticnet::ElasticNet::params()
                .penalty(params.alpha)
                .l1_ratio(0.0)
                .max_iterations(params.max_iterations as u32)
                .fit(&data)
                .map_err(|e| LearnError(format!("ridge regression: {e}")))?;
            Ok(FittedLinear {
                weights: m.hyperplane().to_vec(),
                intercepts: vec![m.intercept()],
                classes: 1,
            })
        }
        _ => {
            let labels: Array1<usize> = y.iter().map(|&c| c as usize).collect();
            let data = Dataset::new(xs, labels);
            let m = linfa_logistic::MultiLogisticRegression::default()
                .alpha(params.alpha)
                .max_iterations(params.max_iterations)
                .fit(&data)
                .map_err(|e| LearnError(format!("logistic regression: {e}")))?;
            // The model's outputs are its classes (those in the rows); a class absent from them
            // gets no output and a score of minus infinity.
            let (w, b) = (m.params(), m.intercept());
            let mut weights = vec![0.0; fit.classes * x.cols];
            let mut intercepts = vec![f64::NEG_INFINITY; fit.classes];
            for (k, &class) in m.classes().iter().enumerate() {
                for j in 0..x.cols {
                    weights[class * x.cols + j] = w[[j, k]];
                }
                intercepts[class] = b[k];
            }
            Ok(FittedLinear {
                weights,
                intercepts,
                classes: fit.classes,
            })
        }
    }
}

impl FittedLinear {
    /// Probabilities (rows × classes) or values.
    pub fn predict(&self, x: &Matrix) -> Vec<f64> {
        let xs = finite(x);
        let outputs = self.intercepts.len();
        let mut out = Vec::with_capacity(x.rows * outputs);
        for row in xs.chunks(x.cols.max(1)).take(x.rows) {
            let scores: Vec<f64> = (0..outputs)
                .map(|k| self.intercepts[k] + row.iter().zip(&self.weights[k * x.cols..(k + 1) * x.cols]).map(|(a, b)| a * b).sum::<f64>())
                .collect();
            if self.classes == 1 {
                out.push(scores[0]);
            } else {
                out.extend(softmax(&scores));
            }
        }
        out
    }
}

fn softmax(s: &[f64]) -> Vec<f64> {
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|v| v / z).collect()
}
