//! What the loop has seen: trials, failed proposals and where each candidate came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::configspace::Config;

/// Where a candidate came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Drawn uniformly from the space.
    Random,
    /// One of the task's starting points ([`crate::task::Evaluator::starting_points`]: e.g. each
    /// model family of a tabular task at its defaults), evaluated before the strategy's own.
    Start,
    /// A change of one parameter of a parent (a one-edge change of its cell, a step of a number).
    Mutation {
        /// The parent configuration, as written in the prompt and the report
        /// ([`Config`]'s `name=value` form).
        parent: String,
    },
    /// Proposed by the LLM in exchange number `exchange` of the run.
    Llm {
        /// Index of the LLM exchange (see the run's `llm.jsonl`).
        exchange: usize,
    },
}

/// A proposed candidate: a configuration of the task's search space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The configuration.
    pub config: Config,
    /// Where it came from.
    pub origin: Origin,
}

/// A proposal that could not be used, kept as a signal for the next prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedProposal {
    /// What was proposed (as written).
    pub text: String,
    /// Why it was rejected.
    pub reason: String,
    /// The LLM exchange it came from, if any.
    pub exchange: Option<usize>,
}

/// State of a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    /// Chosen for evaluation, not started.
    Pending,
    /// Being evaluated.
    Running,
    /// Evaluated.
    Complete,
    /// The evaluation failed (see `error`).
    Failed,
    /// Stopped early by a pruner or its budget share.
    Pruned,
    /// Was running when the agent died; a resumed run evaluates it again.
    Lost,
}

impl TrialState {
    /// The name stored and shown (`pending`, `running`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TrialState::Pending => "pending",
            TrialState::Running => "running",
            TrialState::Complete => "complete",
            TrialState::Failed => "failed",
            TrialState::Pruned => "pruned",
            TrialState::Lost => "lost",
        }
    }

    /// The state named `s`.
    pub fn from_name(s: &str) -> Option<Self> {
        [
            TrialState::Pending,
            TrialState::Running,
            TrialState::Complete,
            TrialState::Failed,
            TrialState::Pruned,
            TrialState::Lost,
        ]
        .into_iter()
        .find(|t| t.name() == s)
    }

    /// Whether the trial is over (complete, failed or pruned).
    pub fn is_finished(self) -> bool {
        matches!(self, TrialState::Complete | TrialState::Failed | TrialState::Pruned)
    }
}

/// One evaluated candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Number of the trial in the run (0-based).
    pub id: usize,
    /// Round of the loop that proposed it.
    pub round: usize,
    /// The configuration (of the task's search space).
    pub config: Config,
    /// Where it came from.
    pub origin: Origin,
    /// Proxy scores (`None` when not finite), by proxy name.
    pub proxies: BTreeMap<String, Option<f64>>,
    /// The ranking score that selected it within its round (ensemble), when proxies ranked.
    pub rank_score: Option<f64>,
    /// The accuracy the strategy sees (validation accuracy, percent).
    pub accuracy: Option<f64>,
    /// The test accuracy (percent), for the report only; strategies never see it.
    pub test_accuracy: Option<f64>,
    /// Device seconds the evaluation cost.
    pub seconds: f64,
    /// Outcome.
    pub state: TrialState,
    /// Why it failed.
    pub error: Option<String>,
    /// Epochs of its last rung (the fidelity its accuracy is at); 0 where a task has no epochs.
    #[serde(default)]
    pub epochs: usize,
    /// Its evaluations at increasing fidelity ([`crate::scheduler`]), in order; the trial's
    /// accuracy, state and error are those of the last, its seconds their sum.
    #[serde(default)]
    pub rungs: Vec<Rung>,
    /// Its successive-halving bracket (`sha`, `hyperband`).
    #[serde(default)]
    pub bracket: Option<usize>,
}

/// One evaluation of a trial at one fidelity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rung {
    /// Epochs trained in all at the end of this rung.
    pub epochs: usize,
    /// The accuracy the strategy sees at this rung.
    pub accuracy: Option<f64>,
    /// The test accuracy, for the report.
    pub test_accuracy: Option<f64>,
    /// Device seconds this rung cost (the epochs it added).
    pub seconds: f64,
    /// Its outcome.
    pub state: TrialState,
    /// Why it failed or was pruned.
    pub error: Option<String>,
    /// Its place in the run's sequence of evaluations (new trials and promotions), from 0.
    pub job: usize,
    /// The round of the loop it ran in.
    pub round: usize,
}

impl Default for Rung {
    fn default() -> Self {
        Rung {
            epochs: 0,
            accuracy: None,
            test_accuracy: None,
            seconds: 0.0,
            state: TrialState::Pending,
            error: None,
            job: 0,
            round: 0,
        }
    }
}

impl Trial {
    /// Trial `id` of `round`, of `config`, not yet evaluated.
    pub fn new(id: usize, round: usize, config: Config, origin: Origin) -> Self {
        Trial {
            id,
            round,
            config,
            origin,
            proxies: BTreeMap::new(),
            rank_score: None,
            accuracy: None,
            test_accuracy: None,
            seconds: 0.0,
            state: TrialState::Pending,
            error: None,
            epochs: 0,
            rungs: Vec::new(),
            bracket: None,
        }
    }

    /// Add a finished rung; its seconds add to the trial's. The trial's accuracy, epochs, state
    /// and error become the rung's, unless a promotion failed or was pruned: the trial then
    /// keeps the result of its last complete rung (the rung stays in `rungs`).
    pub fn push_rung(&mut self, rung: Rung) {
        self.seconds += rung.seconds;
        let keeps = rung.state != TrialState::Complete && self.rungs.iter().any(|r| r.state == TrialState::Complete);
        if !keeps {
            self.accuracy = rung.accuracy;
            self.test_accuracy = rung.test_accuracy;
            self.state = rung.state;
            self.error = rung.error.clone();
            self.epochs = rung.epochs;
        }
        self.rungs.push(rung);
    }

    /// The trial as its finished rungs leave it (`None` without one): a trial stored while a
    /// rung was running (or lost to a kill then) stands at its last finished rung.
    /// A finished trial recorded before trials had rungs (schema 2) was one evaluation: it
    /// settles as its own single rung, numbered as the job of its id (runs then evaluated one
    /// trial per job).
    pub fn settled(&self) -> Option<Trial> {
        if self.rungs.is_empty() {
            let rung = Rung {
                epochs: self.epochs,
                accuracy: self.accuracy,
                test_accuracy: self.test_accuracy,
                seconds: self.seconds,
                state: self.state,
                error: self.error.clone(),
                job: self.id,
                round: self.round,
            };
            return self.state.is_finished().then(|| Trial {
                rungs: vec![rung],
                ..self.clone()
            });
        }
        let n = self.rungs.iter().take_while(|r| r.state.is_finished()).count();
        (n > 0).then(|| self.after_rungs(n))
    }

    /// The trial as it stood after its first `n` rungs (a resumed run serves the rungs back
    /// one by one).
    pub fn after_rungs(&self, n: usize) -> Trial {
        let mut t = Trial {
            rungs: Vec::new(),
            seconds: 0.0,
            ..self.clone()
        };
        for r in self.rungs.iter().take(n) {
            t.push_rung(r.clone());
        }
        t
    }
}

/// Everything the strategies may look at.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// Trials in the order they finished.
    pub trials: Vec<Trial>,
    /// Rejected proposals, in order.
    pub failed: Vec<FailedProposal>,
}

impl History {
    /// Completed trials, best first: those trained longest first (a scheduler's incumbent is
    /// the best at the highest fidelity reached), then by the visible accuracy.
    pub fn best(&self, n: usize) -> Vec<&Trial> {
        let mut done: Vec<&Trial> = self.trials.iter().filter(|t| t.accuracy.is_some()).collect();
        done.sort_by(|a, b| {
            b.epochs
                .cmp(&a.epochs)
                .then(b.accuracy.partial_cmp(&a.accuracy).unwrap_or(std::cmp::Ordering::Equal))
                .then(a.id.cmp(&b.id))
        });
        done.truncate(n);
        done
    }

    /// The last `n` trials, most recent last.
    pub fn recent(&self, n: usize) -> &[Trial] {
        &self.trials[self.trials.len().saturating_sub(n)..]
    }

    /// Whether a configuration equivalent to `config` (the same [`Config::key`]: an isomorphic
    /// cell, floats equal to 4 significant digits) has been evaluated.
    pub fn seen(&self, config: &Config) -> bool {
        let key = config.key();
        self.trials.iter().any(|t| t.config.key() == key)
    }
}
