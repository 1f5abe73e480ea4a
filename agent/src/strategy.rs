//! Search strategies behind one ask/tell trait (Optuna's sampler): random search, regularized
//! evolution and the LLM.

use std::collections::VecDeque;

use autoagent_evaluator::nb201::Arch;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::history::{FailedProposal, History, Origin, Proposal, Trial};
use crate::llm::Exchange;

/// What one `ask` produced.
#[derive(Debug, Default)]
pub struct Asked {
    /// Valid candidates (not yet deduplicated).
    pub proposals: Vec<Proposal>,
    /// Rejected proposals with their reasons.
    pub failed: Vec<FailedProposal>,
    /// LLM exchanges made, verbatim.
    pub exchanges: Vec<Exchange>,
}

/// Errors that stop the run (a strategy's ordinary failures are failed proposals instead).
#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    /// The LLM backend failed (unreachable server, broken model).
    #[error(transparent)]
    Llm(#[from] crate::llm::LlmError),
    /// A prompt template failed.
    #[error(transparent)]
    Prompt(#[from] crate::prompts::PromptError),
}

/// A search strategy.
#[async_trait::async_trait]
pub trait Strategy: Send {
    /// Its name (`random`, `evolution`, `llm`).
    fn name(&self) -> &'static str;
    /// Propose `k` candidates given the history.
    async fn ask(&mut self, history: &History, k: usize) -> Result<Asked, StrategyError>;
    /// Learn from a finished trial.
    fn tell(&mut self, trial: &Trial);
}

/// Uniform random search.
pub struct RandomSearch {
    rng: ChaCha8Rng,
}

impl RandomSearch {
    /// Random search drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        RandomSearch {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

#[async_trait::async_trait]
impl Strategy for RandomSearch {
    fn name(&self) -> &'static str {
        "random"
    }

    async fn ask(&mut self, _history: &History, k: usize) -> Result<Asked, StrategyError> {
        Ok(Asked {
            proposals: (0..k)
                .map(|_| Proposal {
                    arch: Arch::sample(&mut self.rng),
                    origin: Origin::Random,
                })
                .collect(),
            ..Asked::default()
        })
    }

    fn tell(&mut self, _trial: &Trial) {}
}

/// Regularized evolution (Real et al., AAAI 2019): a population of the most recent
/// `population` trials; each candidate is a one-edge mutation of the best of `sample`
/// members drawn at random; the oldest member dies when a new one joins. Until the population
/// is full, candidates are drawn at random.
pub struct Evolution {
    rng: ChaCha8Rng,
    population: VecDeque<(Arch, f64)>,
    size: usize,
    sample: usize,
}

impl Evolution {
    /// Regularized evolution with population `size` and tournament `sample` (NB201's settings:
    /// 10 and 3).
    pub fn new(seed: u64, size: usize, sample: usize) -> Self {
        assert!(size >= 1 && sample >= 1, "population and sample sizes must be positive");
        Evolution {
            rng: ChaCha8Rng::seed_from_u64(seed),
            population: VecDeque::new(),
            size,
            sample: sample.min(size),
        }
    }
}

#[async_trait::async_trait]
impl Strategy for Evolution {
    fn name(&self) -> &'static str {
        "evolution"
    }

    async fn ask(&mut self, _history: &History, k: usize) -> Result<Asked, StrategyError> {
        let mut proposals = Vec::with_capacity(k);
        for _ in 0..k {
            if self.population.len() < self.size {
                proposals.push(Proposal {
                    arch: Arch::sample(&mut self.rng),
                    origin: Origin::Random,
                });
                continue;
            }
            let members: Vec<&(Arch, f64)> = self.population.iter().collect();
            let contenders: Vec<&&(Arch, f64)> = members.choose_multiple(&mut self.rng, self.sample).collect();
            let parent = contenders.iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("a non-empty tournament").0;
            proposals.push(Proposal {
                arch: parent.mutate(&mut self.rng),
                origin: Origin::Mutation { parent: parent.to_string() },
            });
        }
        Ok(Asked { proposals, ..Asked::default() })
    }

    fn tell(&mut self, trial: &Trial) {
        if let Some(acc) = trial.accuracy {
            self.population.push_back((trial.arch, acc));
            if self.population.len() > self.size {
                self.population.pop_front();
            }
        }
    }
}

/// Local search (White, Nolen, Savani, ICML 2021 workshop: "local search is state of the art for
/// NAS benchmarks"): after `init` random cells, propose the one-edge neighbours of the best cell
/// evaluated so far that have not been evaluated (in random order, so that proxy ranking chooses
/// among all of them); once every neighbour of the best is evaluated (a local optimum), those of
/// the next best; random cells when every explored cell's neighbourhood is spent.
pub struct LocalSearch {
    rng: ChaCha8Rng,
    init: usize,
}

impl LocalSearch {
    /// Local search drawing from `seed`, starting after `init` evaluated random cells.
    pub fn new(seed: u64, init: usize) -> Self {
        LocalSearch {
            rng: ChaCha8Rng::seed_from_u64(seed),
            init: init.max(1),
        }
    }
}

/// The 24 cells one edge away from `arch`.
pub fn neighbours(arch: &Arch) -> Vec<Arch> {
    let mut out = Vec::new();
    for edge in 0..arch.ops.len() {
        for op in autoagent_evaluator::nb201::Op::ALL {
            if op != arch.ops[edge] {
                let mut n = *arch;
                n.ops[edge] = op;
                out.push(n);
            }
        }
    }
    out
}

#[async_trait::async_trait]
impl Strategy for LocalSearch {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn ask(&mut self, history: &History, k: usize) -> Result<Asked, StrategyError> {
        let evaluated = history.trials.iter().filter(|t| t.accuracy.is_some()).count();
        let mut proposals: Vec<Proposal> = Vec::with_capacity(k);
        if evaluated >= self.init {
            let mut taken: Vec<String> = Vec::new();
            for best in history.best(history.trials.len()) {
                let mut around = neighbours(&best.arch);
                around.shuffle(&mut self.rng);
                for n in around {
                    let c = n.canonical();
                    if history.seen(&n) || taken.contains(&c) {
                        continue;
                    }
                    taken.push(c);
                    proposals.push(Proposal {
                        arch: n,
                        origin: Origin::Mutation { parent: best.arch.to_string() },
                    });
                    if proposals.len() == k {
                        return Ok(Asked { proposals, ..Asked::default() });
                    }
                }
                if !proposals.is_empty() {
                    break;
                }
            }
        }
        while proposals.len() < k {
            proposals.push(Proposal {
                arch: Arch::sample(&mut self.rng),
                origin: Origin::Random,
            });
        }
        Ok(Asked { proposals, ..Asked::default() })
    }

    fn tell(&mut self, _trial: &Trial) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::TrialState;

    fn trial(arch: Arch, acc: f64) -> Trial {
        Trial {
            accuracy: Some(acc),
            state: TrialState::Complete,
            ..Trial::new(0, 0, arch, Origin::Random)
        }
    }

    #[tokio::test]
    async fn evolution_mutates_tournament_winners_once_the_population_is_full() {
        let mut e = Evolution::new(1, 3, 3);
        let h = History::default();
        let first = e.ask(&h, 3).await.unwrap();
        assert!(first.proposals.iter().all(|p| p.origin == Origin::Random));
        let best = Arch::parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|").unwrap();
        e.tell(&trial(first.proposals[0].arch, 50.0));
        e.tell(&trial(best, 94.0));
        e.tell(&trial(first.proposals[1].arch, 60.0));
        // Tournament of the whole population: the parent is always the best.
        let next = e.ask(&h, 8).await.unwrap();
        for p in &next.proposals {
            assert_eq!(p.origin, Origin::Mutation { parent: best.to_string() });
            let differing = p.arch.ops.iter().zip(best.ops.iter()).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 1);
        }
        // Aging: a fourth member pushes out the oldest, not the worst.
        e.tell(&trial(first.proposals[2].arch, 10.0));
        assert_eq!(e.population.len(), 3);
        assert_eq!(e.population.front().unwrap().0, best);
    }

    #[tokio::test]
    async fn local_search_walks_the_neighbourhood_of_the_best() {
        let mut l = LocalSearch::new(2, 2);
        let mut h = History::default();
        // Random until two cells are evaluated.
        let first = l.ask(&h, 4).await.unwrap().proposals;
        assert!(first.iter().all(|p| p.origin == Origin::Random));
        let best = Arch::parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|").unwrap();
        h.trials.push(trial(first[0].arch, 50.0));
        h.trials.push(trial(best, 94.0));
        // Then every unevaluated neighbour of the best, once each: 24 cells, some isomorphic.
        let next = l.ask(&h, 100).await.unwrap().proposals;
        let from_best: Vec<_> = next.iter().filter(|p| p.origin == Origin::Mutation { parent: best.to_string() }).collect();
        let distinct: std::collections::BTreeSet<String> = neighbours(&best).iter().map(|a| a.canonical()).collect();
        assert_eq!(from_best.len(), distinct.len());
        for p in &from_best {
            assert_eq!(p.arch.ops.iter().zip(best.ops.iter()).filter(|(a, b)| a != b).count(), 1);
        }
        // A local optimum: every neighbour evaluated (and worse) moves on to the next best.
        for n in neighbours(&best) {
            let mut t = trial(n, 10.0);
            t.id = h.trials.len();
            h.trials.push(t);
        }
        let after = l.ask(&h, 3).await.unwrap().proposals;
        assert!(after.iter().all(|p| p.origin
            == Origin::Mutation {
                parent: first[0].arch.to_string()
            }
            || p.origin == Origin::Random));
        assert_eq!(after.len(), 3);
    }

    #[tokio::test]
    async fn random_search_is_seeded() {
        let h = History::default();
        let a = RandomSearch::new(5).ask(&h, 4).await.unwrap().proposals;
        let b = RandomSearch::new(5).ask(&h, 4).await.unwrap().proposals;
        assert_eq!(a, b);
    }
}
