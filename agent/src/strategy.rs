//! Search strategies behind one ask/tell trait (Optuna's sampler): random search, regularized
//! evolution, local search and the LLM. Each proposes configurations of the task's search space
//! through the space's own operations (sample, mutate, neighbours), so none assumes what a
//! candidate holds.

use std::collections::VecDeque;

use autoagent_evaluator::nb201::Arch;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::configspace::{Config, Space};
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
    space: Space,
    rng: ChaCha8Rng,
}

impl RandomSearch {
    /// Random search over `space` drawing from `seed`.
    pub fn new(space: Space, seed: u64) -> Self {
        RandomSearch {
            space,
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
                    config: self.space.sample(&mut self.rng),
                    origin: Origin::Random,
                })
                .collect(),
            ..Asked::default()
        })
    }

    fn tell(&mut self, _trial: &Trial) {}
}

/// Regularized evolution (Real et al., AAAI 2019): a population of the most recent
/// `population` trials; each candidate is a mutation of one parameter ([`Space::mutate`]: one
/// edge of a cell) of the best of `sample` members drawn at random; the oldest member dies when
/// a new one joins. Until the population is full, candidates are drawn at random.
pub struct Evolution {
    space: Space,
    rng: ChaCha8Rng,
    population: VecDeque<(Config, f64)>,
    size: usize,
    sample: usize,
}

impl Evolution {
    /// Regularized evolution over `space` with population `size` and tournament `sample`
    /// (NB201's settings: 10 and 3).
    pub fn new(space: Space, seed: u64, size: usize, sample: usize) -> Self {
        assert!(size >= 1 && sample >= 1, "population and sample sizes must be positive");
        Evolution {
            space,
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
                    config: self.space.sample(&mut self.rng),
                    origin: Origin::Random,
                });
                continue;
            }
            let members: Vec<&(Config, f64)> = self.population.iter().collect();
            let contenders: Vec<&&(Config, f64)> = members.choose_multiple(&mut self.rng, self.sample).collect();
            let parent = &contenders.iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("a non-empty tournament").0;
            proposals.push(Proposal {
                config: self.space.mutate(parent, &mut self.rng),
                origin: Origin::Mutation { parent: parent.to_string() },
            });
        }
        Ok(Asked { proposals, ..Asked::default() })
    }

    fn tell(&mut self, trial: &Trial) {
        if let Some(acc) = trial.accuracy {
            self.population.push_back((trial.config.clone(), acc));
            if self.population.len() > self.size {
                self.population.pop_front();
            }
        }
    }
}

/// Local search (White, Nolen, Savani, ICML 2021 workshop: "local search is state of the art for
/// NAS benchmarks"): after `init` random configurations, propose the neighbours
/// ([`Space::neighbours`]: one edge of the cell, one step of one other parameter) of the best
/// configuration evaluated so far that have not been evaluated (in random order, so that proxy
/// ranking chooses among all of them); once every neighbour of the best is evaluated (a local
/// optimum), those of the next best; random configurations when every explored neighbourhood is
/// spent.
pub struct LocalSearch {
    space: Space,
    rng: ChaCha8Rng,
    init: usize,
}

impl LocalSearch {
    /// Local search over `space` drawing from `seed`, starting after `init` evaluated random
    /// configurations.
    pub fn new(space: Space, seed: u64, init: usize) -> Self {
        LocalSearch {
            space,
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
                let mut around = self.space.neighbours(&best.config);
                around.shuffle(&mut self.rng);
                for n in around {
                    let c = n.key();
                    if history.seen(&n) || taken.contains(&c) {
                        continue;
                    }
                    taken.push(c);
                    proposals.push(Proposal {
                        config: n,
                        origin: Origin::Mutation {
                            parent: best.config.to_string(),
                        },
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
                config: self.space.sample(&mut self.rng),
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
    use crate::configspace::cell_space;
    use crate::history::TrialState;
    use crate::task::cell_config;

    fn trial(arch: Arch, acc: f64) -> Trial {
        Trial {
            accuracy: Some(acc),
            state: TrialState::Complete,
            ..Trial::new(0, 0, cell_config(arch), Origin::Random)
        }
    }

    fn cell(p: &Proposal) -> Arch {
        p.config.cell("cell").unwrap()
    }

    #[tokio::test]
    async fn evolution_mutates_tournament_winners_once_the_population_is_full() {
        let mut e = Evolution::new(cell_space(), 1, 3, 3);
        let h = History::default();
        let first = e.ask(&h, 3).await.unwrap();
        assert!(first.proposals.iter().all(|p| p.origin == Origin::Random));
        let best = Arch::parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|").unwrap();
        e.tell(&trial(cell(&first.proposals[0]), 50.0));
        e.tell(&trial(best, 94.0));
        e.tell(&trial(cell(&first.proposals[1]), 60.0));
        // Tournament of the whole population: the parent is always the best.
        let next = e.ask(&h, 8).await.unwrap();
        for p in &next.proposals {
            assert_eq!(
                p.origin,
                Origin::Mutation {
                    parent: cell_config(best).to_string()
                }
            );
            let differing = cell(p).ops.iter().zip(best.ops.iter()).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 1);
        }
        // Aging: a fourth member pushes out the oldest, not the worst.
        e.tell(&trial(cell(&first.proposals[2]), 10.0));
        assert_eq!(e.population.len(), 3);
        assert_eq!(e.population.front().unwrap().0, cell_config(best));
    }

    #[tokio::test]
    async fn local_search_walks_the_neighbourhood_of_the_best() {
        let mut l = LocalSearch::new(cell_space(), 2, 2);
        let mut h = History::default();
        // Random until two cells are evaluated.
        let first = l.ask(&h, 4).await.unwrap().proposals;
        assert!(first.iter().all(|p| p.origin == Origin::Random));
        let best = Arch::parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|").unwrap();
        h.trials.push(trial(cell(&first[0]), 50.0));
        h.trials.push(trial(best, 94.0));
        // Then every unevaluated neighbour of the best, once each: 24 cells, some isomorphic.
        let next = l.ask(&h, 100).await.unwrap().proposals;
        let from_best: Vec<_> = next
            .iter()
            .filter(|p| {
                p.origin
                    == Origin::Mutation {
                        parent: cell_config(best).to_string(),
                    }
            })
            .collect();
        let distinct: std::collections::BTreeSet<String> = neighbours(&best).iter().map(|a| a.canonical()).collect();
        assert_eq!(from_best.len(), distinct.len());
        for p in &from_best {
            assert_eq!(cell(p).ops.iter().zip(best.ops.iter()).filter(|(a, b)| a != b).count(), 1);
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
                parent: first[0].config.to_string()
            }
            || p.origin == Origin::Random));
        assert_eq!(after.len(), 3);
    }

    #[tokio::test]
    async fn over_the_vision_space_children_change_one_parameter_and_neighbours_are_new() {
        let space = crate::configspace::vision_space();
        let mut e = Evolution::new(space.clone(), 4, 2, 2);
        let h = History::default();
        let first = e.ask(&h, 2).await.unwrap().proposals;
        for (i, p) in first.iter().enumerate() {
            space.validate(&p.config).unwrap();
            e.tell(&Trial {
                accuracy: Some(50.0 + i as f64),
                state: TrialState::Complete,
                ..Trial::new(i, 0, p.config.clone(), Origin::Random)
            });
        }
        let parent = &first[1].config;
        for p in e.ask(&h, 10).await.unwrap().proposals {
            space.validate(&p.config).unwrap();
            assert_eq!(p.origin, Origin::Mutation { parent: parent.to_string() });
            // One parameter differs (a change of augment may add or drop the cutout length).
            let changed: Vec<&str> = space
                .params()
                .iter()
                .map(|q| q.name.as_str())
                .filter(|n| p.config.get(n) != parent.get(n) && *n != "cutout_length")
                .collect();
            assert!(changed.len() <= 1, "{changed:?}");
        }
        // Local search proposes unevaluated neighbours of the best, all distinct.
        let mut l = LocalSearch::new(space.clone(), 1, 1);
        let mut hist = History::default();
        hist.trials.push(trial(Arch::from_ordinal(9631), 60.0));
        hist.trials[0].config = space.default_config();
        let next = l.ask(&hist, 8).await.unwrap().proposals;
        let keys: std::collections::BTreeSet<String> = next.iter().map(|p| p.config.key()).collect();
        assert_eq!(keys.len(), 8);
        assert!(next.iter().all(|p| !hist.seen(&p.config) && space.validate(&p.config).is_ok()));
    }

    #[tokio::test]
    async fn random_search_is_seeded() {
        let h = History::default();
        let a = RandomSearch::new(cell_space(), 5).ask(&h, 4).await.unwrap().proposals;
        let b = RandomSearch::new(cell_space(), 5).ask(&h, 4).await.unwrap().proposals;
        assert_eq!(a, b);
    }
}
