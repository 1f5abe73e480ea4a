//! Gradient-boosted trees, random forests and extremely randomised trees, all through LightGBM
//! (the `lightgbm3` crate, which builds LightGBM from its C++ sources): `gbdt` boosting, or its
//! `rf` mode (bagged trees averaged, not boosted), with `extra_trees` for random thresholds.

use lightgbm3::{Booster, Dataset};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Fit, LearnError};
use crate::tabular::matrix::Matrix;
use crate::tabular::problem::Problem;

/// How the trees are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boosting {
    /// Gradient boosting.
    Gbdt,
    /// A random forest: trees on bootstrap-like row samples, averaged.
    Forest,
}

/// Trees' hyperparameters (LightGBM's names in brackets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbmParams {
    /// Boosting or a forest.
    pub boosting: Boosting,
    /// Random split thresholds (`extra_trees`): extremely randomised trees in a forest.
    pub extra_trees: bool,
    /// Trees (`num_iterations`; the most, with early stopping).
    pub trees: usize,
    /// Shrinkage of boosting (`learning_rate`).
    pub learning_rate: f64,
    /// Leaves a tree (`num_leaves`).
    pub num_leaves: usize,
    /// Rows a leaf at least (`min_data_in_leaf`).
    pub min_child_samples: usize,
    /// Share of columns a tree (`feature_fraction`).
    pub feature_fraction: f64,
    /// Share of rows a tree (`bagging_fraction`, drawn anew each tree).
    pub bagging_fraction: f64,
    /// L2 regularisation of leaf values (`lambda_l2`).
    pub lambda_l2: f64,
}

impl Default for GbmParams {
    /// LightGBM's defaults.
    fn default() -> Self {
        GbmParams {
            boosting: Boosting::Gbdt,
            extra_trees: false,
            trees: 100,
            learning_rate: 0.1,
            num_leaves: 31,
            min_child_samples: 20,
            feature_fraction: 1.0,
            bagging_fraction: 1.0,
            lambda_l2: 0.0,
        }
    }
}

/// Rounds without improvement on the validation rows after which boosting stops.
const EARLY_STOPPING_ROUNDS: usize = 50;

impl GbmParams {
    fn lightgbm(&self, problem: Problem, classes: usize, fit: &Fit) -> serde_json::Value {
        let (objective, metric) = match problem {
            Problem::Binary => ("binary", "binary_logloss"),
            Problem::Multiclass => ("multiclass", "multi_logloss"),
            Problem::Regression => ("regression", "l2"),
        };
        let forest = self.boosting == Boosting::Forest;
        // LightGBM's forest needs bagging: at most 0.632 (a bootstrap's share of distinct rows).
        let bagging = if forest { self.bagging_fraction.min(0.632) } else { self.bagging_fraction };
        let mut p = json!({
            "objective": objective,
            "metric": metric,
            "boosting": if forest { "rf" } else { "gbdt" },
            "extra_trees": self.extra_trees,
            "num_iterations": self.trees,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves.max(2),
            "min_data_in_leaf": self.min_child_samples.max(1),
            "feature_fraction": self.feature_fraction.clamp(0.05, 1.0),
            "bagging_fraction": bagging.clamp(0.05, 1.0),
            "bagging_freq": if forest || bagging < 1.0 { 1 } else { 0 },
            "lambda_l2": self.lambda_l2.max(0.0),
            "num_threads": fit.threads.max(1),
            "seed": fit.seed,
            "deterministic": true,
            "force_row_wise": true,
            "verbosity": -1,
        });
        if problem == Problem::Multiclass {
            p["num_class"] = json!(classes);
        }
        if fit.valid.is_some() && !forest {
            p["early_stopping_rounds"] = json!(EARLY_STOPPING_ROUNDS);
        }
        p
    }
}

/// A fitted LightGBM model: its text form (what LightGBM saves), and the trees it kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedGbm {
    /// LightGBM's model text.
    pub model: String,
    /// Trees (boosting rounds) kept after early stopping.
    pub trees: usize,
    /// Classes (1 for a regression).
    pub classes: usize,
}

fn lgbm_error(e: lightgbm3::Error) -> LearnError {
    LearnError(format!("LightGBM: {e}"))
}

fn labels(y: &[f64]) -> Vec<f32> {
    y.iter().map(|&v| v as f32).collect()
}

/// Tables of at least this many cells (rows × encoded columns) with a deadline get a probe fit
/// of [`PROBE_TREES`] trees first, which sets how many trees fit by the deadline (a boosting
/// round on 80,000 rows of 600 columns takes a third of a second on two cores; a fit in this
/// process cannot be stopped midway).
pub const PROBE_CELLS: usize = 2_000_000;

/// Trees of the probe fit.
pub const PROBE_TREES: usize = 10;

/// The share of the time left to the deadline the trees may use (the rest: predicting, and the
/// probe's estimate's error).
const DEADLINE_SHARE: f64 = 0.8;

/// Fit on `x` and the target's numbers `y` (class indices or values). With a deadline on a
/// large table, a probe of [`PROBE_TREES`] trees measures a tree's time and the fit grows at
/// most the trees that end by the deadline (the probe's model when not even those would).
pub fn fit(params: &GbmParams, x: &Matrix, y: &[f64], fit: &Fit) -> Result<FittedGbm, LearnError> {
    let Some(deadline) = fit.deadline.filter(|_| x.rows * x.cols >= PROBE_CELLS && params.trees > PROBE_TREES) else {
        return fit_trees(params, x, y, fit);
    };
    let started = std::time::Instant::now();
    let probe = GbmParams {
        trees: PROBE_TREES,
        ..params.clone()
    };
    let probed = fit_trees(&probe, x, y, &Fit { valid: None, ..*fit })?;
    let per_tree = started.elapsed().as_secs_f64() / PROBE_TREES as f64;
    let left = deadline.saturating_duration_since(std::time::Instant::now()).as_secs_f64();
    let affordable = (DEADLINE_SHARE * left / per_tree.max(1e-9)) as usize;
    if affordable <= PROBE_TREES {
        return Ok(probed);
    }
    fit_trees(
        &GbmParams {
            trees: params.trees.min(affordable),
            ..params.clone()
        },
        x,
        y,
        fit,
    )
}

/// Fit `params.trees` trees (fewer when boosting stops early on the validation rows).
fn fit_trees(params: &GbmParams, x: &Matrix, y: &[f64], fit: &Fit) -> Result<FittedGbm, LearnError> {
    let cols = x.cols as i32;
    let train = Dataset::from_slice(&x.data, &labels(y), cols, true).map_err(lgbm_error)?;
    let valid = match fit.valid {
        Some((vx, vy)) => Some(Dataset::from_slice_with_reference(&vx.data, &labels(vy), cols, true, Some(&train)).map_err(lgbm_error)?),
        None => None,
    };
    let booster = Booster::train_with_valid(train, valid, &params.lightgbm(fit.problem, fit.classes, fit)).map_err(lgbm_error)?;
    Ok(FittedGbm {
        model: booster.save_string().map_err(lgbm_error)?,
        trees: booster.num_iterations().max(0) as usize,
        classes: fit.classes,
    })
}

impl FittedGbm {
    /// Predictions for `x`: rows × classes probabilities, or values.
    pub fn predict(&self, x: &Matrix, threads: usize) -> Result<Vec<f64>, LearnError> {
        let booster = Booster::from_string(&self.model).map_err(lgbm_error)?;
        let p = booster
            .predict_with_params(&x.data, x.cols as i32, true, &format!("num_threads={}", threads.max(1)))
            .map_err(lgbm_error)?;
        // A binary model gives the positive class's probability.
        Ok(match self.classes {
            2 => p.iter().flat_map(|&q| [1.0 - q, q]).collect(),
            _ => p,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tabular::problem::Problem;

    #[test]
    fn a_large_table_with_a_deadline_grows_only_the_trees_that_fit() {
        // 200,000 rows of 10 columns: two million cells, a probe first.
        let (rows, cols) = (200_000, 10);
        let data: Vec<f64> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f64 / 1000.0).collect();
        let y: Vec<f64> = (0..rows).map(|r| f64::from(u8::from(data[r * cols] + data[r * cols + 1] > 1.0))).collect();
        let x = Matrix {
            rows,
            cols,
            data,
            names: (0..cols).map(|j| format!("x{j}")).collect(),
        };
        let params = GbmParams {
            trees: 100_000,
            learning_rate: 0.01,
            ..GbmParams::default()
        };
        let started = std::time::Instant::now();
        let fit = Fit {
            problem: Problem::Binary,
            classes: 2,
            threads: 1,
            seed: 0,
            valid: None,
            deadline: Some(started + std::time::Duration::from_secs(3)),
        };
        let m = super::fit(&params, &x, &y, &fit).unwrap();
        let took = started.elapsed().as_secs_f64();
        assert!(m.trees >= PROBE_TREES && m.trees < 100_000, "{} trees", m.trees);
        // Ends near the deadline, not after 100,000 trees (the probe's estimate may err a little).
        assert!(took < 6.0, "{took} s for {} trees", m.trees);
    }
}
