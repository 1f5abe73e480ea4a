//! The final model: when the search ends, the best configuration is trained again at full
//! fidelity on the whole training split (the validation hold-out included) and measured once on
//! the test split. A time budget holds back a share for it from the start (`--final-fraction`);
//! a run that cannot afford it says why and keeps the best searched trial as its model.

use serde::{Deserialize, Serialize};

use crate::configspace::Config;
use crate::history::{Trial, TrialState};

/// The directory of the final model in a run directory.
pub const FINAL_DIR: &str = "final";

/// What became of the final model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalModel {
    /// The searched trial whose configuration was retrained.
    pub trial: usize,
    /// Its configuration.
    pub config: Config,
    /// Epochs of the retraining (0 when skipped).
    pub epochs: usize,
    /// The best trial's validation accuracy in the search (%), at its own epochs.
    pub search_accuracy: Option<f64>,
    /// Epochs of that accuracy.
    pub search_epochs: usize,
    /// Test accuracy of the final model (%), measured once.
    pub test_accuracy: Option<f64>,
    /// Device seconds the retraining took.
    pub seconds: f64,
    /// `complete`, `failed`, `pruned` (stopped at the budget), or `skipped`.
    pub state: String,
    /// Why it failed, was stopped or was skipped.
    pub reason: Option<String>,
    /// Files it wrote, relative to the run directory (weights first).
    pub artefacts: Vec<String>,
}

impl FinalModel {
    /// The record of a final model not trained, for `reason`.
    pub fn skipped(best: &Trial, reason: String) -> Self {
        FinalModel {
            trial: best.id,
            config: best.config.clone(),
            epochs: 0,
            search_accuracy: best.accuracy,
            search_epochs: best.epochs,
            test_accuracy: None,
            seconds: 0.0,
            state: "skipped".into(),
            reason: Some(reason),
            artefacts: Vec::new(),
        }
    }

    /// Whether a model was trained and measured.
    pub fn is_complete(&self) -> bool {
        self.state == TrialState::Complete.name()
    }
}

/// How long the final training of the best trial `best` is: `max_epochs` when the budget left
/// (`left`, `None` without a time limit) affords it by `estimate(epochs)`, else the most epochs
/// that fit but not fewer than the trial trained in the search; `Err(why)` when even those do
/// not fit.
pub fn epochs(best: &Trial, max_epochs: usize, left: Option<f64>, estimate: impl Fn(usize) -> f64) -> Result<usize, String> {
    let Some(left) = left else {
        return Ok(max_epochs);
    };
    let least = best.epochs.clamp(1, max_epochs);
    if let Some(e) = (least..=max_epochs).rev().find(|&e| estimate(e) <= left) {
        return Ok(e);
    }
    Err(format!(
        "the budget left ({left:.0} device-s) does not afford retraining the best configuration for {least} epoch(s) (~{:.0} s): \
         the best searched trial is the run's model (raise --final-fraction or the budget)",
        estimate(least)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Origin;
    use autoagent_evaluator::nb201::Arch;

    #[test]
    fn the_final_training_is_as_long_as_the_budget_left_affords() {
        let best = Trial {
            epochs: 3,
            ..Trial::new(4, 1, crate::task::cell_config(Arch::from_ordinal(9631)), Origin::Random)
        };
        let per_epoch = |e: usize| 10.0 * e as f64;
        assert_eq!(epochs(&best, 27, None, per_epoch), Ok(27));
        assert_eq!(epochs(&best, 27, Some(1000.0), per_epoch), Ok(27));
        assert_eq!(epochs(&best, 27, Some(95.0), per_epoch), Ok(9));
        assert_eq!(epochs(&best, 27, Some(30.0), per_epoch), Ok(3));
        let e = epochs(&best, 27, Some(29.0), per_epoch).unwrap_err();
        assert!(e.contains("does not afford") && e.contains("3 epoch(s)"), "{e}");
    }
}
