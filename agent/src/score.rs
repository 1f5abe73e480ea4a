//! How a trial's score is shown. The loop maximises one number a trial (`Trial::accuracy`): a
//! training task's validation accuracy in %, a tabular task's metric oriented so that larger is
//! better (ROC-AUC as it is, log-loss and RMSE negated). A [`ScoreLabel`] turns it back into the
//! number the user asked for, under its name.

use serde::{Deserialize, Serialize};

/// The name of a task's score and how to show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreLabel {
    /// The metric's name (`acc`, `roc_auc`, `log_loss`, ...).
    pub name: String,
    /// Whether the loop's score is the metric negated (a loss).
    pub negated: bool,
    /// Decimals shown.
    pub decimals: usize,
    /// Whether trials train for epochs (shown beside the score).
    pub epochs: bool,
}

impl Default for ScoreLabel {
    fn default() -> Self {
        ScoreLabel::accuracy()
    }
}

impl ScoreLabel {
    /// A training task's validation accuracy (%).
    pub fn accuracy() -> Self {
        ScoreLabel {
            name: "acc".into(),
            negated: false,
            decimals: 2,
            epochs: true,
        }
    }

    /// The metric's value of a loop score.
    pub fn value(&self, score: f64) -> f64 {
        if self.negated {
            -score
        } else {
            score
        }
    }

    /// `score` as the metric's value, with the label's decimals.
    pub fn show(&self, score: f64) -> String {
        format!("{:.*}", self.decimals, self.value(score))
    }

    /// The label a run directory's `config.json` records (`score`), else validation accuracy
    /// (runs before labels were recorded).
    pub fn of_config(config: &serde_json::Value) -> Self {
        serde_json::from_value(config["score"].clone()).unwrap_or_default()
    }

    /// What the score is called in prose: `accuracy`, or the metric's name.
    pub fn words(&self) -> &str {
        if *self == ScoreLabel::accuracy() {
            "accuracy"
        } else {
            &self.name
        }
    }

    /// `name value`, e.g. `log_loss 0.4912`.
    pub fn named(&self, score: f64) -> String {
        format!("{} {}", self.name, self.show(score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_is_shown_as_the_metric_not_the_negated_score() {
        let l = ScoreLabel {
            name: "log_loss".into(),
            negated: true,
            decimals: 4,
            epochs: false,
        };
        assert_eq!(l.named(-0.49123), "log_loss 0.4912");
        assert_eq!(ScoreLabel::accuracy().named(91.234), "acc 91.23");
    }
}
