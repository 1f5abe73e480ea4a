//! Proxy ranking of a round's candidates: every member proxy scores every candidate on one
//! batch of real images (cached on disk, shared with `autoagent bench proxies`), and the round is
//! ordered by the log-rank ensemble of the members ([`autoagent_proxies::ensemble`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autoagent_evaluator::data::{self, DatasetKind};
use autoagent_evaluator::net::Nb201Config;
use autoagent_evaluator::proxy::Nb201Candidate;
use autoagent_proxies::cache::ScoreCache;
use autoagent_proxies::ensemble::log_rank_aggregate;
use autoagent_proxies::{Batch, Proxy};

use crate::configspace::{Config, VisionConfig};

/// The scores of one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Each member's score (`None` when not finite or failed).
    pub proxies: BTreeMap<String, Option<f64>>,
    /// The ensemble score within the round (higher is better).
    pub rank_score: f64,
    /// Milliseconds each member's score took to compute (when it was first computed).
    pub ms: BTreeMap<String, f64>,
}

/// The order in which a round's candidates are evaluated: best `rank_score` first, non-finite
/// scores last, ties in proposal order.
pub fn evaluation_order(scored: &[Scored]) -> Vec<usize> {
    let key = |i: usize| Some(scored[i].rank_score).filter(|v| !v.is_nan()).unwrap_or(f64::NEG_INFINITY);
    let mut order: Vec<usize> = (0..scored.len()).collect();
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    order
}

/// Scores and ranks candidates.
pub struct Ranker {
    proxies: Vec<Box<dyn Proxy>>,
    batch: Batch,
    batch_id: String,
    seed: u64,
    cache: ScoreCache,
    /// (classes, channels, size) of the networks.
    shape: (usize, usize, usize),
    /// Seconds and count of the scores this ranker computed, per proxy (for estimates).
    measured: Vec<(f64, usize)>,
    /// Score several architectures at a time.
    parallel: bool,
}

/// Seconds a proxy score is assumed to take before one has been measured (a NB201 network on
/// two CPU cores takes 0.06 to 0.6 s per proxy).
const FIRST_SCORE_SECONDS: f64 = 1.0;

/// The default score cache for `images` and a batch size, in the user cache directory; the
/// agent's proxy ranking and `autoagent bench proxies` share it.
pub fn default_cache(images: &str, batch_size: usize) -> PathBuf {
    data::data_root(None)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
        .join("bench")
        .join(format!("proxies-nb201-{images}-b{batch_size}.jsonl"))
}

/// What a ranker is built from ([`Ranker::build`]).
#[derive(Debug, Clone)]
pub struct RankerConfig<'a> {
    /// Member proxies, comma-separated (`synflow,naswot,jacob_cov`).
    pub proxies: &'a str,
    /// Dataset whose images the proxies see (and whose classes the networks have).
    pub images: DatasetKind,
    /// Data root (or a folder holding the dataset).
    pub data_root: &'a Path,
    /// Download the dataset when missing.
    pub download: bool,
    /// Draw the batch from the search-training part of the training split only
    /// ([`crate::task::search_split`]), never from the validation hold-out: training tasks, whose
    /// hold-out decides the selection (label-using proxies would otherwise see its labels).
    /// Table tasks (`nb201:*`) have no hold-out of ours and draw from the whole training split.
    pub search_split: bool,
    /// Images in the proxies' batch.
    pub batch_size: usize,
    /// Seed of the batch and the networks' initialisation.
    pub seed: u64,
    /// Score cache file (default: [`default_cache`]).
    pub cache: Option<PathBuf>,
    /// Device the proxies run on.
    pub device: &'a candle_core::Device,
    /// Score several architectures at a time (see [`Ranker::set_parallel`]).
    pub parallel: bool,
}

/// Why a ranker could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RankerError {
    /// Unknown proxy names.
    #[error("{0}")]
    Proxies(String),
    /// The images are missing or broken.
    #[error(transparent)]
    Data(#[from] autoagent_evaluator::data::DataError),
    /// The batch could not be drawn.
    #[error(transparent)]
    Batch(#[from] autoagent_evaluator::Error),
    /// The training split is too small to hold a validation part out.
    #[error("{0}")]
    Split(String),
    /// The cache cannot be opened.
    #[error(transparent)]
    Cache(#[from] autoagent_proxies::cache::CacheError),
}

impl Ranker {
    /// The ranker `cfg` describes: its proxies, one batch of the dataset's images (of its
    /// search-training part with `search_split`), its cache.
    pub fn build(cfg: &RankerConfig) -> Result<Self, RankerError> {
        let proxies = autoagent_proxies::registry::parse_list(cfg.proxies).map_err(RankerError::Proxies)?;
        let mut data = data::open(cfg.images, cfg.data_root, cfg.download)?;
        if cfg.search_split {
            data = crate::task::search_split(&data).map_err(RankerError::Split)?;
        }
        let batch = autoagent_evaluator::proxy::proxy_batch(&data, cfg.batch_size, cfg.seed, cfg.device)?;
        let batch_id = autoagent_evaluator::proxy::batch_id(cfg.images, &batch, cfg.seed)?;
        let cache_path = cfg.cache.clone().unwrap_or_else(|| default_cache(cfg.images.name(), cfg.batch_size));
        let cache = ScoreCache::open(&cache_path)?;
        let (c, h, _) = cfg.images.image_shape();
        let mut ranker = Ranker::new(proxies, batch, batch_id, cfg.seed, cache, (cfg.images.num_classes(), c, h));
        ranker.set_parallel(cfg.parallel);
        Ok(ranker)
    }

    /// A ranker of networks for `classes` classes and `channels × size × size` images.
    pub fn new(proxies: Vec<Box<dyn Proxy>>, batch: Batch, batch_id: String, seed: u64, cache: ScoreCache, shape: (usize, usize, usize)) -> Self {
        Ranker {
            measured: vec![(0.0, 0); proxies.len()],
            parallel: false,
            proxies,
            batch,
            batch_id,
            seed,
            cache,
            shape,
        }
    }

    /// Compute missing scores several architectures at a time (on the rayon pool).
    pub fn set_parallel(&mut self, parallel: bool) {
        self.parallel = parallel;
    }

    /// The proxies' batch.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// The batch's id in the score cache ([`autoagent_evaluator::proxy::batch_id`]).
    pub fn batch_id(&self) -> &str {
        &self.batch_id
    }

    /// The member names.
    pub fn names(&self) -> Vec<&'static str> {
        self.proxies.iter().map(|p| p.name()).collect()
    }

    /// The network `config` builds: its cell at its width and depth (NB201's C = 16, N = 5
    /// where it has none); the training hyperparameters do not change it.
    fn candidate(&self, config: &Config) -> Nb201Candidate {
        let (classes, channels, size) = self.shape;
        let v = VisionConfig::lenient(config);
        Nb201Candidate::new(Nb201Config {
            num_classes: classes,
            in_channels: channels,
            input_size: size,
            channels: v.width,
            cells_per_stage: v.depth,
            ..Nb201Config::new(v.arch)
        })
    }

    /// The estimated device seconds of scoring `configs`: a cached score costs what it cost when it
    /// was computed ([`Ranker::score`] charges it so), a missing one the mean this ranker has seen
    /// per proxy, computed or read back (or [`FIRST_SCORE_SECONDS`] before any).
    pub fn estimate_seconds(&self, configs: &[Config]) -> f64 {
        configs
            .iter()
            .map(|config| {
                let candidate = self.candidate(config);
                self.proxies
                    .iter()
                    .zip(&self.measured)
                    .map(
                        |(p, &(secs, n))| match self.cache.recorded_ms(p.as_ref(), &candidate, &self.batch_id, self.seed) {
                            Some(ms) => ms / 1e3,
                            None if n > 0 => secs / n as f64,
                            None => FIRST_SCORE_SECONDS,
                        },
                    )
                    .sum::<f64>()
            })
            .sum()
    }

    /// Score the networks of `configs` (candidates that build the same network share their
    /// scores through the cache); returns their scores (in order) and the device seconds they are charged:
    /// the time spent computing the missing ones, plus, for each score read from the cache, the
    /// time it took when it was computed, so a budget buys the same ranking with a cold or a warm
    /// cache. Missing scores are computed several architectures at a time when the ranker is
    /// parallel ([`Ranker::set_parallel`]); their seconds are then wall time.
    pub fn score(&mut self, configs: &[Config]) -> Result<(Vec<Scored>, f64), autoagent_proxies::cache::CacheError> {
        let mut columns = vec![vec![f64::NAN; configs.len()]; self.proxies.len()];
        let mut ms = vec![vec![0.0; configs.len()]; self.proxies.len()];
        let candidates: Vec<Nb201Candidate> = configs.iter().map(|c| self.candidate(c)).collect();
        let refs: Vec<&dyn autoagent_proxies::Candidate> = candidates.iter().map(|c| c as &dyn autoagent_proxies::Candidate).collect();
        let proxies: Vec<&dyn Proxy> = self.proxies.iter().map(|p| p.as_ref()).collect();
        let started = std::time::Instant::now();
        let grid = self.cache.score_grid(&proxies, &refs, &self.batch, &self.batch_id, self.seed, self.parallel)?;
        self.cache.flush()?;
        let wall = started.elapsed().as_secs_f64();
        // Seconds and count of the scores computed now, and of those read back, per proxy.
        let mut now = vec![(0.0f64, 0usize); self.proxies.len()];
        let mut cached = vec![(0.0f64, 0usize); self.proxies.len()];
        for (ai, row) in grid.iter().enumerate() {
            for (pi, scored) in row.iter().enumerate() {
                let tally = if scored.computed { &mut now[pi] } else { &mut cached[pi] };
                tally.0 += scored.ms / 1e3;
                tally.1 += 1;
                if let Some(e) = &scored.error {
                    tracing::warn!("{} of {} failed: {e}", self.proxies[pi].name(), configs[ai]);
                }
                ms[pi][ai] = scored.ms;
                columns[pi][ai] = scored.value.unwrap_or(f64::NAN);
            }
        }
        let summed: f64 = now.iter().map(|n| n.0).sum();
        let recorded: f64 = cached.iter().map(|n| n.0).sum();
        let seconds = if summed > 0.0 { wall } else { 0.0 } + recorded;
        // Scores computed side by side each took longer than alone: the means behind the
        // estimates are kept in wall time.
        let factor = if summed > 0.0 { wall / summed } else { 1.0 };
        for ((m, n), c) in self.measured.iter_mut().zip(&now).zip(&cached) {
            m.0 += n.0 * factor + c.0;
            m.1 += n.1 + c.1;
        }
        let refs: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
        let ensemble = if refs.len() > 1 {
            log_rank_aggregate(&refs)
        } else {
            // One member: its score, a non-finite one (a dead cell, a failed score) below all.
            refs[0].iter().map(|&v| if v.is_finite() { v } else { f64::NEG_INFINITY }).collect()
        };
        let scored = (0..configs.len())
            .map(|ai| Scored {
                proxies: self
                    .proxies
                    .iter()
                    .enumerate()
                    .map(|(pi, p)| (p.name().to_string(), Some(columns[pi][ai]).filter(|v| v.is_finite())))
                    .collect(),
                rank_score: ensemble[ai],
                ms: self.proxies.iter().enumerate().map(|(pi, p)| (p.name().to_string(), ms[pi][ai])).collect(),
            })
            .collect();
        Ok((scored, seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(rank_score: f64) -> Scored {
        Scored {
            proxies: BTreeMap::new(),
            rank_score,
            ms: BTreeMap::new(),
        }
    }

    #[test]
    fn non_finite_rank_scores_are_evaluated_last() {
        let round: Vec<Scored> = [f64::NAN, 2.0, f64::NEG_INFINITY, 5.0, -f64::NAN, 2.0].into_iter().map(scored).collect();
        let order = evaluation_order(&round);
        assert_eq!(&order[..3], &[3, 1, 5]);
        assert!(order[3..].iter().all(|&i| !round[i].rank_score.is_finite()));
    }
}
