//! A table's round ranked by its task: the MLP candidates by the zero-cost proxies of their
//! untrained networks on a batch of training rows (`autoagent_evaluator::tabular::cheap`), so
//! that only the better half of a round's MLP shapes is trained; the other families keep the
//! strategy's order (their cheap signal is a lower fidelity, the scheduler's business).
//!
//! The evaluation order: the round as proposed, the MLP candidates' places taken by the best
//! half of them by the proxies' log-rank ensemble (best first), the other half after every
//! other candidate. A candidate's rank score is its place from the end (larger: earlier).

use std::collections::BTreeMap;
use std::time::Instant;

use autoagent_evaluator::tabular::cheap::{proxy_scores, ProxyScores};
use autoagent_evaluator::tabular::TabularData;
use autoagent_proxies::ensemble::log_rank_aggregate;
use autoagent_proxies::Proxy;

use crate::configspace::{pipeline, Config};
use crate::ranker::Scored;

/// The proxies that rank a table's MLPs unless `--proxies` names others (measured with
/// `autoagent bench cheap-signal`: benchmarks/results/tabular-cheap-signal.md).
pub const TABULAR_PROXIES: &str = "jacob_cov";

/// Seconds an MLP's proxies are assumed to take before one has been measured (0.015 to 0.06 s
/// for every proxy on the fixtures).
const FIRST_SECONDS: f64 = 0.05;

/// The MLP ranking of a table's rounds.
pub struct MlpRanking {
    proxies: Vec<Box<dyn Proxy>>,
    seed: u64,
    /// Seconds and count of the MLPs scored.
    measured: (f64, usize),
}

fn is_mlp(c: &Config) -> bool {
    c.str("model") == Some("mlp")
}

impl MlpRanking {
    /// The ranking by `proxies` (comma-separated names), its batches and networks drawn from `seed`.
    pub fn new(proxies: &str, seed: u64) -> Result<MlpRanking, String> {
        Ok(MlpRanking {
            proxies: autoagent_proxies::registry::parse_list(proxies).map_err(|e| format!("--proxies: {e}"))?,
            seed,
            measured: (0.0, 0),
        })
    }

    /// The estimated seconds of ranking `configs`.
    pub fn estimate_seconds(&self, configs: &[Config]) -> f64 {
        let each = if self.measured.1 > 0 {
            self.measured.0 / self.measured.1 as f64
        } else {
            FIRST_SECONDS
        };
        configs.iter().filter(|c| is_mlp(c)).count() as f64 * each
    }

    /// Rank `configs` on `data`'s training rows (see the module's documentation); the seconds it took.
    pub fn rank(&mut self, configs: &[Config], data: &TabularData) -> (Vec<Scored>, f64) {
        let started = Instant::now();
        let rows: Vec<usize> = (0..data.len()).collect();
        let scores: Vec<Option<ProxyScores>> = configs
            .iter()
            .map(|c| is_mlp(c).then(|| proxy_scores(&pipeline(c), data, &rows, &self.proxies, self.seed)).flatten())
            .collect();
        let mlps: Vec<usize> = (0..configs.len()).filter(|&i| scores[i].is_some()).collect();
        let columns: Vec<Vec<f64>> = (0..self.proxies.len())
            .map(|k| mlps.iter().map(|&i| scores[i].as_ref().and_then(|s| s[k].1).unwrap_or(f64::NAN)).collect())
            .collect();
        let refs: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
        let ensemble = if mlps.is_empty() { Vec::new() } else { log_rank_aggregate(&refs) };
        let order = evaluation_order(configs.len(), &mlps, &ensemble);
        let n = configs.len();
        let mut rank_score = vec![0.0; n];
        order.iter().enumerate().for_each(|(place, &i)| rank_score[i] = (n - place) as f64);
        let seconds = started.elapsed().as_secs_f64();
        if !mlps.is_empty() {
            self.measured = (self.measured.0 + seconds, self.measured.1 + mlps.len());
        }
        let scored = (0..n)
            .map(|i| Scored {
                proxies: scores[i].iter().flatten().cloned().collect::<BTreeMap<_, _>>(),
                rank_score: rank_score[i],
                ms: BTreeMap::new(),
            })
            .collect();
        (scored, seconds)
    }
}

/// The order of a round of `n` candidates whose MLPs are `mlps` (in proposal order) with
/// ensemble scores `ensemble` (see the module's documentation).
pub fn evaluation_order(n: usize, mlps: &[usize], ensemble: &[f64]) -> Vec<usize> {
    let mut by_score: Vec<usize> = (0..mlps.len()).collect();
    let key = |j: usize| Some(ensemble[j]).filter(|v| v.is_finite()).unwrap_or(f64::NEG_INFINITY);
    by_score.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    let keep = mlps.len().div_ceil(2);
    let mut order = Vec::with_capacity(n);
    let mut slot = 0;
    for i in 0..n {
        if !mlps.contains(&i) {
            order.push(i);
            continue;
        }
        if slot < keep {
            order.push(mlps[by_score[slot]]);
        }
        slot += 1;
    }
    order.extend(by_score[keep..].iter().map(|&j| mlps[j]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_better_half_of_the_mlps_takes_their_places_the_rest_goes_last() {
        // Candidates 1, 3, 4 and 6 are MLPs, scored 0.1, 0.9, NaN, 0.5.
        let order = evaluation_order(7, &[1, 3, 4, 6], &[0.1, 0.9, f64::NAN, 0.5]);
        assert_eq!(order, vec![0, 3, 2, 6, 5, 1, 4]);
        // No MLP: the proposal order.
        assert_eq!(evaluation_order(3, &[], &[]), vec![0, 1, 2]);
        // One MLP keeps its place.
        assert_eq!(evaluation_order(3, &[1], &[f64::NAN]), vec![0, 1, 2]);
    }
}
