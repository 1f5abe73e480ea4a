//! A pipeline: preprocessing and a learner, validated on folds of the training rows (the
//! out-of-fold predictions are kept: the ensemble is built from them) and fitted once on all
//! of them for the final model.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::dataset::{TabularData, TargetValues};
use super::learn::{target_numbers, Fit, Fitted, LearnError, Learner};
use super::matrix::Matrix;
use super::metrics::{Metric, Truth};
use super::preprocess::{Preprocess, Preprocessor};
use super::split::Fold;

/// Preprocessing and a learner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// The preprocessing.
    pub preprocess: Preprocess,
    /// The learner.
    pub learner: Learner,
}

/// How a pipeline did on the folds.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// Out-of-fold predictions of the validated rows, in row order (rows × classes, or a value
    /// a row); rows no fold predicts (a hold-out's training rows) are `NaN`.
    pub oof: Vec<f64>,
    /// The metric over the rows predicted.
    pub score: f64,
    /// The metric of each fold.
    pub fold_scores: Vec<f64>,
    /// The trees each fold's boosting kept, or the epochs of each fold's MLP (empty for other
    /// learners).
    pub rounds: Vec<usize>,
    /// Seconds it took.
    pub seconds: f64,
}

/// A pipeline fitted on all the training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedPipeline {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Its fitted preprocessing.
    pub preprocessor: Preprocessor,
    /// Its fitted model.
    pub model: Fitted,
}

/// The width of a prediction row: the classes, or 1 for a value.
pub fn width(y: &TargetValues) -> usize {
    match y {
        TargetValues::Classes { classes, .. } => classes.len(),
        TargetValues::Values(_) => 1,
    }
}

/// `metric` of predictions `pred` of the rows `rows` of `y` (predictions in the rows' order).
pub fn score(metric: Metric, y: &TargetValues, rows: &[usize], pred: &[f64]) -> f64 {
    match y.take(rows) {
        TargetValues::Classes { codes, .. } => metric.score(&Truth::Classes(&codes), pred),
        TargetValues::Values(v) => metric.score(&Truth::Values(&v), pred),
    }
}

impl Pipeline {
    /// The pipeline with boosting's trees or an MLP's epochs set to `rounds` (what early
    /// stopping kept on the folds: a refit on every row has no validation rows to stop on);
    /// other learners as they are.
    pub fn with_rounds(&self, rounds: Option<usize>) -> Pipeline {
        let mut p = self.clone();
        match (&mut p.learner, rounds) {
            (Learner::Gbm(g), Some(t)) if g.boosting == super::learn::gbm::Boosting::Gbdt => g.trees = t.max(1),
            (Learner::Mlp(m), Some(t)) => m.epochs = t.max(1),
            _ => {}
        }
        p
    }

    fn fit_context<'a>(&self, data: &TabularData, threads: usize, seed: u64, valid: Option<(&'a Matrix, &'a [f64])>, deadline: Option<Instant>) -> Fit<'a> {
        Fit {
            problem: data.target.problem,
            classes: width(&data.target.values).max(1),
            threads,
            seed,
            valid,
            deadline,
        }
    }

    /// Fit on `rows` of `data` (indices into its rows).
    pub fn fit(&self, data: &TabularData, rows: &[usize], threads: usize, seed: u64) -> Result<FittedPipeline, LearnError> {
        self.fit_by(data, rows, threads, seed, None)
    }

    /// [`Pipeline::fit`], ended by `deadline` (boosting on a large table grows the trees that fit).
    pub fn fit_by(&self, data: &TabularData, rows: &[usize], threads: usize, seed: u64, deadline: Option<Instant>) -> Result<FittedPipeline, LearnError> {
        let (preprocessor, x) = Preprocessor::fit_transform(&self.preprocess, &data.features, &data.target.values, rows, seed);
        let y = target_numbers(&data.target.values.take(rows));
        let model = self.learner.fit(&x, &y, &self.fit_context(data, threads, seed, None, deadline))?;
        Ok(FittedPipeline {
            pipeline: self.clone(),
            preprocessor,
            model,
        })
    }

    /// Validate on `folds`: fit each fold's training rows, predict its validation rows (boosting
    /// stops early on them), and score the out-of-fold predictions with `metric`.
    pub fn validate(&self, data: &TabularData, folds: &[Fold], metric: Metric, threads: usize, seed: u64) -> Result<Validated, LearnError> {
        self.validate_within(data, folds, metric, threads, seed, None)
            .map(|v| v.expect("no limit, no stop"))
    }

    /// [`Pipeline::validate`], stopped before a fold that the folds so far say would end past
    /// `limit` seconds (`Ok(None)`: stopped).
    pub fn validate_within(
        &self,
        data: &TabularData,
        folds: &[Fold],
        metric: Metric,
        threads: usize,
        seed: u64,
        limit: Option<f64>,
    ) -> Result<Option<Validated>, LearnError> {
        let started = Instant::now();
        let deadline = limit.map(|l| started + std::time::Duration::from_secs_f64(l.max(0.0)));
        let w = width(&data.target.values);
        let mut oof = vec![f64::NAN; data.len() * w];
        let (mut fold_scores, mut rounds, mut predicted) = (Vec::new(), Vec::new(), Vec::new());
        for (k, fold) in folds.iter().enumerate() {
            let spent = started.elapsed().as_secs_f64();
            if limit.is_some_and(|l| k > 0 && spent + spent / k as f64 > l) {
                return Ok(None);
            }
            let fold_seed = seed.wrapping_add(k as u64);
            let (pre, x) = Preprocessor::fit_transform(&self.preprocess, &data.features, &data.target.values, &fold.train, fold_seed);
            let vx = pre.transform(&data.features, &fold.valid);
            let y = target_numbers(&data.target.values.take(&fold.train));
            let vy = target_numbers(&data.target.values.take(&fold.valid));
            let model = self
                .learner
                .fit(&x, &y, &self.fit_context(data, threads, fold_seed, Some((&vx, &vy)), deadline))?;
            if let Some(r) = model.rounds() {
                rounds.push(r);
            }
            let p = model.predict(&vx, threads)?;
            fold_scores.push(score(metric, &data.target.values, &fold.valid, &p));
            for (i, &r) in fold.valid.iter().enumerate() {
                oof[r * w..(r + 1) * w].copy_from_slice(&p[i * w..(i + 1) * w]);
            }
            predicted.extend_from_slice(&fold.valid);
        }
        predicted.sort_unstable();
        let pred: Vec<f64> = predicted.iter().flat_map(|&r| oof[r * w..(r + 1) * w].to_vec()).collect();
        Ok(Some(Validated {
            score: score(metric, &data.target.values, &predicted, &pred),
            oof,
            fold_scores,
            rounds,
            seconds: started.elapsed().as_secs_f64(),
        }))
    }
}

impl Validated {
    /// The trees (epochs) a refit on every row should grow (train): the folds' mean after early
    /// stopping, grown by the share of rows the folds held out (`None` without boosting or an
    /// MLP).
    pub fn refit_rounds(&self, folds: usize) -> Option<usize> {
        if self.rounds.is_empty() {
            return None;
        }
        let mean = self.rounds.iter().sum::<usize>() as f64 / self.rounds.len() as f64;
        let grow = if folds > 1 { folds as f64 / (folds as f64 - 1.0) } else { 1.25 };
        Some((mean * grow).round().max(1.0) as usize)
    }
}

impl FittedPipeline {
    /// Predictions for `rows` of `data`'s features (a file read later: columns by name).
    pub fn predict(&self, data_features: &[super::dataset::Feature], rows: &[usize], threads: usize) -> Result<Vec<f64>, LearnError> {
        let x = self.preprocessor.transform(data_features, rows);
        self.model.predict(&x, threads)
    }
}
