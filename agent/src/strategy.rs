//! Search strategies behind one ask/tell trait (Optuna's sampler): random search, regularized
//! evolution and the LLM.

use std::collections::VecDeque;

use autoagent_evaluator::nb201::Arch;
use rand::seq::IndexedRandom;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::TrialState;

    fn trial(arch: Arch, acc: f64) -> Trial {
        Trial {
            id: 0,
            round: 0,
            arch,
            origin: Origin::Random,
            proxies: Default::default(),
            rank_score: None,
            accuracy: Some(acc),
            test_accuracy: None,
            seconds: 0.0,
            state: TrialState::Complete,
            error: None,
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
    async fn random_search_is_seeded() {
        let h = History::default();
        let a = RandomSearch::new(5).ask(&h, 4).await.unwrap().proposals;
        let b = RandomSearch::new(5).ask(&h, 4).await.unwrap().proposals;
        assert_eq!(a, b);
    }
}
