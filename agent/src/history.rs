//! What the loop has seen: trials, failed proposals and where each candidate came from.

use std::collections::BTreeMap;

use autoagent_evaluator::nb201::Arch;
use serde::{Deserialize, Serialize};

/// Where a candidate came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Drawn uniformly from the space.
    Random,
    /// One-edge mutation of a parent.
    Mutation {
        /// The parent's arch string.
        parent: String,
    },
    /// Proposed by the LLM in exchange number `exchange` of the run.
    Llm {
        /// Index of the LLM exchange (see the run's `llm.jsonl`).
        exchange: usize,
    },
}

/// A proposed candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The architecture.
    pub arch: Arch,
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
    /// The architecture.
    pub arch: Arch,
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
    /// Completed trials, best first (by the visible accuracy).
    pub fn best(&self, n: usize) -> Vec<&Trial> {
        let mut done: Vec<&Trial> = self.trials.iter().filter(|t| t.accuracy.is_some()).collect();
        done.sort_by(|a, b| b.accuracy.partial_cmp(&a.accuracy).unwrap_or(std::cmp::Ordering::Equal).then(a.id.cmp(&b.id)));
        done.truncate(n);
        done
    }

    /// The last `n` trials, most recent last.
    pub fn recent(&self, n: usize) -> &[Trial] {
        &self.trials[self.trials.len().saturating_sub(n)..]
    }

    /// Whether an architecture isomorphic to `arch` has been evaluated.
    pub fn seen(&self, arch: &Arch) -> bool {
        let c = arch.canonical();
        self.trials.iter().any(|t| t.arch.canonical() == c)
    }
}
