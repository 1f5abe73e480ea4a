//! The cheap signals of a pipeline, known before it is validated in full:
//!
//! - an MLP: the zero-cost proxies of its network on a batch of the pipeline's rows
//!   ([`proxy_scores`]), the network built at its initialisation and never trained;
//! - any pipeline: its validation at a lower fidelity ([`at_share`], [`subsample`]), each
//!   fold's training rows a seeded subsample (at least [`MIN_ROWS`]) and boosting's or a
//!   forest's trees at most the same share: what the multi-fidelity scheduler's lower rungs
//!   measure on a table.
//!
//! `autoagent bench cheap-signal` measures how well each ranks pipelines (rank correlation with
//! the full validation) on the fixtures.

use autoagent_proxies::Proxy;
use rand::seq::index::sample;
use rand::SeedableRng;

use super::dataset::TabularData;
use super::learn::mlp::proxy::{batch, MlpCandidate};
use super::learn::{target_numbers, Learner};
use super::pipeline::{width, Pipeline};
use super::preprocess::Preprocessor;
use super::problem::Problem;
use super::split::Fold;

/// The fewest training rows a fold keeps at a lower fidelity.
pub const MIN_ROWS: usize = 200;

/// The proxies that take no labels: the only ones that say anything about a regression's
/// network (one output: a classification loss is constant).
pub const LABEL_FREE: [&str; 6] = ["synflow", "naswot", "jacob_cov", "zen", "params", "flops"];

/// Each proxy's name and score (`None`: not finite, failed, or not applicable).
pub type ProxyScores = Vec<(String, Option<f64>)>;

/// Rows in a proxy batch.
pub const BATCH_ROWS: usize = 64;

/// Each proxy's score of `pipeline`'s MLP (`None` for a proxy whose score is not finite, failed,
/// or takes labels on a regression), its preprocessing fitted on `rows` of `data` and the batch
/// a seeded draw of [`BATCH_ROWS`] of them; `None` when the pipeline is not an MLP.
pub fn proxy_scores(pipeline: &Pipeline, data: &TabularData, rows: &[usize], proxies: &[Box<dyn Proxy>], seed: u64) -> Option<ProxyScores> {
    let Learner::Mlp(params) = &pipeline.learner else {
        return None;
    };
    let (pre, _) = Preprocessor::fit_transform(&pipeline.preprocess, &data.features, &data.target.values, rows, seed);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xba7c);
    let mut picked: Vec<usize> = sample(&mut rng, rows.len(), BATCH_ROWS.min(rows.len())).into_iter().map(|i| rows[i]).collect();
    picked.sort_unstable();
    let x = pre.transform(&data.features, &picked);
    let labels = target_numbers(&data.target.values.take(&picked));
    let regression = data.target.problem == Problem::Regression;
    let outputs = if regression { 1 } else { width(&data.target.values).max(2) };
    let candidate = MlpCandidate(params.shape(x.cols, outputs));
    let scores = match batch(&x, (!regression).then_some(labels.as_slice())) {
        Ok(b) => proxies
            .iter()
            .map(|p| {
                let applies = !regression || LABEL_FREE.contains(&p.name());
                let s = applies.then(|| p.score(&candidate, &b, seed).ok()).flatten().filter(|v| v.is_finite());
                (p.name().to_string(), s)
            })
            .collect(),
        Err(_) => proxies.iter().map(|p| (p.name().to_string(), None)).collect(),
    };
    Some(scores)
}

/// The pipeline at a lower fidelity `share` (0 < share ≤ 1): boosting's and a forest's trees
/// at most that share of its own (at least 10); other learners as they are.
pub fn at_share(pipeline: &Pipeline, share: f64) -> Pipeline {
    let mut p = pipeline.clone();
    if let Learner::Gbm(g) = &mut p.learner {
        g.trees = ((g.trees as f64 * share).round() as usize).clamp(10.min(g.trees), g.trees);
    }
    p
}

/// `folds` with each fold's training rows a seeded subsample of `share` of them (at least
/// [`MIN_ROWS`], all when fewer); the validation rows as they are.
pub fn subsample(folds: &[Fold], share: f64, seed: u64) -> Vec<Fold> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5ab5);
    folds
        .iter()
        .map(|f| {
            let n = f.train.len();
            let keep = ((n as f64 * share).ceil() as usize).max(MIN_ROWS).min(n);
            let mut train: Vec<usize> = sample(&mut rng, n, keep).into_iter().map(|i| f.train[i]).collect();
            train.sort_unstable();
            Fold { train, valid: f.valid.clone() }
        })
        .collect()
}
