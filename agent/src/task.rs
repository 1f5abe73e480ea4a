//! Tasks: what evaluating a candidate means.
//!
//! - `nb201:cifar10`, `nb201:cifar100`, `nb201:imagenet16`: a lookup in the NAS-Bench-201 table.
//!   The agent sees the validation accuracy after 12 epochs by default (the benchmark's own
//!   search protocol), or after 200 epochs with `--fidelity 200` where the table has it; the
//!   report gives the 200-epoch test accuracy. The table records no training time, so a lookup
//!   costs no device time (proxy scoring still does).
//! - `cifar10`, `cifar100`, `mnist`, `fashion-mnist`: real training with the evaluator, on the
//!   training split minus a validation hold-out (the last 10 % of the training images, which the
//!   agent sees the accuracy of); the test split is not looked at during the search.

use std::sync::Arc;

use autoagent_evaluator::data::DatasetKind;
use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::net::Nb201Config;

use crate::configspace::{Config, Space, VisionConfig};
use autoagent_evaluator::table::Nb201Table;

use crate::llm_strategy::TaskInfo;

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluation {
    /// The accuracy the strategy sees.
    pub accuracy: Option<f64>,
    /// Test accuracy, for the report.
    pub test_accuracy: Option<f64>,
    /// Device seconds spent.
    pub seconds: f64,
    /// Why it failed.
    pub error: Option<String>,
    /// Stopped before it finished (it exceeded its share of the budget).
    pub pruned: bool,
    /// Metrics per epoch: (epoch from 1, name, value).
    pub metrics: Vec<(usize, String, f64)>,
    /// Files the evaluation wrote, relative to the run directory.
    pub artefacts: Vec<String>,
    /// The end of the evaluation's stderr (trials in child processes).
    pub stderr_tail: Option<String>,
    /// Epochs trained in all, when the evaluation says (a final model that ended early when its
    /// time ran short trained fewer than asked).
    pub epochs: Option<usize>,
}

/// How far an evaluation trains: from the epochs a trial's checkpoint has done (`from`, 0 for
/// a new trial) to `to` epochs in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fidelity {
    /// Epochs already done (the trial continues from its checkpoint of that many).
    pub from: usize,
    /// Epochs in all at the end.
    pub to: usize,
}

impl Fidelity {
    /// A new trial of `epochs` epochs.
    pub fn new(epochs: usize) -> Self {
        Fidelity { from: 0, to: epochs }
    }

    /// Epochs this evaluation trains.
    pub fn added(&self) -> usize {
        self.to.saturating_sub(self.from)
    }
}

/// Evaluates candidates: configurations of the task's search space ([`Evaluator::space`]).
pub trait Evaluator: Send {
    /// What the prompt says about the task.
    fn info(&self) -> TaskInfo;
    /// Configurations evaluated first, before the strategy's own proposals, each once (default:
    /// none): a known good portfolio that every strategy then improves on.
    fn starting_points(&self) -> Vec<crate::configspace::Config> {
        Vec::new()
    }
    /// How its scores are shown (default: validation accuracy in %, trained in epochs).
    fn score_label(&self) -> crate::score::ScoreLabel {
        crate::score::ScoreLabel::accuracy()
    }
    /// The search space its candidates come from (the task's default, or the user's narrowing).
    fn space(&self) -> &Space;
    /// The estimated device seconds of evaluating `config` at `fidelity` (for the budget's
    /// planning).
    fn estimate_seconds(&self, config: &Config, fidelity: Fidelity) -> f64;
    /// Evaluate `config` at `fidelity`.
    fn evaluate(&mut self, config: &Config, fidelity: Fidelity) -> Evaluation;
    /// Evaluate `config` as trial number `trial` at `fidelity` (continuing the trial's
    /// checkpoint when `fidelity.from > 0`), stopping it (pruned) once it has run for `limit`
    /// when given. The default ignores the trial and the limit.
    fn evaluate_trial(&mut self, config: &Config, trial: usize, fidelity: Fidelity, limit: Option<TrialLimit>) -> Evaluation {
        let _ = (trial, limit);
        self.evaluate(config, fidelity)
    }
    /// Trial `trial` was continued past its checkpoint of `epochs` and that is recorded: the
    /// checkpoint may go. The default keeps nothing.
    fn release(&mut self, trial: usize, epochs: usize) {
        let _ = (trial, epochs);
    }
    /// The estimated device seconds of training the final model of `config` for `epochs`
    /// (`None`: the task has no final training, as a table lookup has not); `epoch_seconds` is
    /// what an epoch of `config` took in the search, when it was trained there.
    fn estimate_final_seconds(&self, config: &Config, epochs: usize, epoch_seconds: Option<f64>) -> Option<f64> {
        let _ = (config, epochs, epoch_seconds);
        None
    }
    /// The device seconds the budget should hold back for the final model of `config` (default:
    /// [`Evaluator::estimate_final_seconds`]); more when the final model does more than retrain
    /// `config` and can do less when time is short (a tabular ensemble refits several trials,
    /// as many as fit, at least the best).
    fn final_reserve_seconds(&self, config: &Config, epochs: usize, epoch_seconds: Option<f64>) -> Option<f64> {
        self.estimate_final_seconds(config, epochs, epoch_seconds)
    }
    /// Whether the task ranks a round's candidates itself ([`Evaluator::rank`]): a table's MLPs
    /// by their zero-cost proxies. (The loop's proxy ranker ranks the networks of image tasks.)
    fn ranks(&self) -> bool {
        false
    }
    /// The estimated device seconds of [`Evaluator::rank`] on `configs`.
    fn rank_estimate_seconds(&self, configs: &[Config]) -> f64 {
        let _ = configs;
        0.0
    }
    /// The task's ranking of a round's candidates (their evaluation order follows the rank
    /// scores, larger first) and the device seconds it took; `None` when it does not rank.
    fn rank(&mut self, configs: &[Config]) -> Option<(Vec<crate::ranker::Scored>, f64)> {
        let _ = configs;
        None
    }
    /// Train the final model of `config` for `epochs` on the whole training split and measure
    /// it once on the test split, stopped at `limit` (`None` without final training).
    fn train_final(&mut self, config: &Config, epochs: usize, limit: Option<TrialLimit>) -> Option<Evaluation> {
        let _ = (config, epochs, limit);
        None
    }
}

impl Evaluation {
    /// Its outcome: pruned (stopped at its limit), failed, or complete.
    pub fn state(&self) -> crate::history::TrialState {
        use crate::history::TrialState;
        if self.pruned {
            TrialState::Pruned
        } else if self.error.is_some() {
            TrialState::Failed
        } else {
            TrialState::Complete
        }
    }

    /// An evaluation that failed before it ran, for `error`.
    pub fn failed(error: String) -> Self {
        Evaluation {
            error: Some(error),
            ..Evaluation::default()
        }
    }
}

/// How long one trial may run, and what set that limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrialLimit {
    /// Device seconds.
    pub seconds: f64,
    /// Set by the per-trial timeout (`--trial-timeout`), else by what is left of a time budget.
    pub timeout: bool,
}

impl TrialLimit {
    /// The tighter of what is left of a time budget and the per-trial timeout (the timeout on a
    /// tie); `None` when neither applies.
    pub fn of(budget_left: Option<f64>, timeout: Option<f64>) -> Option<Self> {
        match (budget_left, timeout) {
            (Some(left), Some(t)) if left < t => Some(TrialLimit { seconds: left, timeout: false }),
            (_, Some(t)) => Some(TrialLimit { seconds: t, timeout: true }),
            (Some(left), None) => Some(TrialLimit { seconds: left, timeout: false }),
            (None, None) => None,
        }
    }

    /// Why a trial stopped at this limit, after `ran` seconds (the pruned trial's error).
    pub fn reason(&self, ran: f64) -> String {
        if self.timeout {
            format!("stopped after {ran:.1} s: the trial reached --trial-timeout ({:.1} s)", self.seconds)
        } else {
            format!(
                "stopped after {ran:.1} s: the trial exceeded its share of the budget ({:.1} s left)",
                self.seconds
            )
        }
    }
}

/// A NAS-Bench-201 dataset of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nb201Dataset {
    /// CIFAR-10 (the cifar10-valid split for validation accuracy).
    Cifar10,
    /// CIFAR-100.
    Cifar100,
    /// ImageNet16-120.
    ImageNet16,
}

impl Nb201Dataset {
    /// Parse `cifar10`, `cifar100`, `imagenet16`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "cifar10" => Some(Nb201Dataset::Cifar10),
            "cifar100" => Some(Nb201Dataset::Cifar100),
            "imagenet16" | "imagenet16-120" => Some(Nb201Dataset::ImageNet16),
            _ => None,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Nb201Dataset::Cifar10 => "cifar10",
            Nb201Dataset::Cifar100 => "cifar100",
            Nb201Dataset::ImageNet16 => "imagenet16",
        }
    }
}

/// The images the proxies see on an NB201 table task when none are named: the task's own
/// dataset where it is at hand (CIFAR-10, downloaded when missing as ever; CIFAR-100 when it
/// is already under the data root `root`, since a ranking batch is no reason for an unasked
/// 160 MB download), else CIFAR-10 with a note saying why (ImageNet16-120 is not a dataset
/// this program reads). The networks then have the images' classes and size.
pub fn nb201_proxy_images(dataset: Nb201Dataset, root: &std::path::Path) -> (DatasetKind, Option<String>) {
    match dataset {
        Nb201Dataset::Cifar10 => (DatasetKind::Cifar10, None),
        Nb201Dataset::Cifar100 if autoagent_evaluator::data::locate(DatasetKind::Cifar100, root).is_some() => (DatasetKind::Cifar100, None),
        Nb201Dataset::Cifar100 => (
            DatasetKind::Cifar10,
            Some(format!(
                "nb201:cifar100: no CIFAR-100 images under {}, so the proxies rank with CIFAR-10 images \
                 (--images cifar100 downloads and uses CIFAR-100; --images cifar10 chooses CIFAR-10)",
                root.display()
            )),
        ),
        Nb201Dataset::ImageNet16 => (
            DatasetKind::Cifar10,
            Some(
                "nb201:imagenet16: ImageNet16-120 images are not available to autoagent, so the proxies rank \
                 with CIFAR-10 images (--images cifar10|cifar100 chooses)"
                    .to_string(),
            ),
        ),
    }
}

/// Table lookup: the validation accuracy after 12 or 200 epochs (the two fidelities the table
/// has), the 200-epoch test accuracy for the report.
pub struct TableEvaluator {
    table: Arc<Nb201Table>,
    dataset: Nb201Dataset,
    test: String,
    fidelities: Vec<usize>,
    space: Space,
}

impl TableEvaluator {
    /// Lookups of `dataset` at each of `fidelities` (12 or 200 epochs).
    pub fn new(table: Arc<Nb201Table>, dataset: Nb201Dataset, fidelities: &[usize]) -> Result<Self, String> {
        let test = format!("{}_test_acc", dataset.prefix());
        let e = TableEvaluator {
            table,
            dataset,
            test,
            fidelities: fidelities.to_vec(),
            space: crate::configspace::cell_space(),
        };
        if !e.table.columns().iter().any(|c| *c == e.test) {
            return Err(format!("the NB201 table has no column '{}'", e.test));
        }
        for &f in fidelities {
            let valid = e.valid_column(f)?;
            if !e.table.columns().iter().any(|c| *c == valid) {
                return Err(format!("the NB201 table has no column '{valid}'"));
            }
            if (0..e.table.len()).any(|i| matches!(e.table.value(i, &valid), Ok(None))) {
                return Err(format!(
                    "the NB201 table has no {f}-epoch validation accuracy for {} (column '{valid}' is empty; use --fidelity 12)",
                    e.dataset.prefix()
                ));
            }
        }
        Ok(e)
    }

    /// Search `space` (a narrowing of the cell space) instead.
    pub fn set_space(&mut self, space: Space) {
        self.space = space;
    }

    fn valid_column(&self, fidelity: usize) -> Result<String, String> {
        let p = self.dataset.prefix();
        match fidelity {
            12 => Ok(format!("{p}_valid_acc_12ep")),
            200 => Ok(format!("{p}_valid_acc")),
            other => Err(format!("fidelity {other} is not in the table (use 12 or 200)")),
        }
    }
}

impl Evaluator for TableEvaluator {
    fn info(&self) -> TaskInfo {
        let name = match self.dataset {
            Nb201Dataset::Cifar10 => "CIFAR-10",
            Nb201Dataset::Cifar100 => "CIFAR-100",
            Nb201Dataset::ImageNet16 => "ImageNet16-120",
        };
        let epochs: Vec<String> = self.fidelities.iter().map(|f| f.to_string()).collect();
        TaskInfo {
            description: format!("image classification on {name} with a network built from one NAS-Bench-201 cell"),
            metric: format!("validation accuracy after {} epochs", epochs.join(" or ")),
            profile: None,
        }
    }

    fn space(&self) -> &Space {
        &self.space
    }

    fn estimate_seconds(&self, _config: &Config, _fidelity: Fidelity) -> f64 {
        0.0
    }

    fn evaluate(&mut self, config: &Config, fidelity: Fidelity) -> Evaluation {
        let Some(arch) = config.cell("cell") else {
            return Evaluation::failed(format!("the NB201 table looks up cells; the candidate {config} has none"));
        };
        let arch = &arch;
        let valid = match self.valid_column(fidelity.to) {
            Ok(v) => v,
            Err(e) => {
                return Evaluation {
                    error: Some(e),
                    ..Evaluation::default()
                }
            }
        };
        let v = self.table.value_of(arch, &valid);
        let t = self.table.value_of(arch, &self.test);
        match (v, t) {
            (Ok(v), Ok(t)) => Evaluation {
                accuracy: v,
                test_accuracy: t,
                seconds: 0.0,
                error: v.is_none().then(|| format!("the table has no '{valid}' for {arch}")),
                ..Evaluation::default()
            },
            (Err(e), _) | (_, Err(e)) => Evaluation {
                error: Some(e.to_string()),
                ..Evaluation::default()
            },
        }
    }
}

/// The split a training task searches on: the training split minus its last 10 %, which is
/// held out as the validation split the agent sees the accuracy of (the test split is never
/// looked at during the search). It lives in the evaluator, which `autoagent train` selects with.
pub use autoagent_evaluator::data::search_split;

/// The network a configuration builds for a dataset's images and classes: its cell in NB201's
/// macro skeleton at its width and depth (C = 16, N = 5 where it has none, as on the table).
pub fn network(kind: DatasetKind, config: &Config) -> Nb201Config {
    let v = VisionConfig::lenient(config);
    let (c, h, _) = kind.image_shape();
    Nb201Config {
        num_classes: kind.num_classes(),
        in_channels: c,
        input_size: h,
        channels: v.width,
        cells_per_stage: v.depth,
        ..Nb201Config::new(v.arch)
    }
}

/// The configuration of a cell alone (an NB201 table task's candidate; in a training task, the
/// cell in NB201's own network and recipe).
pub fn cell_config(arch: Arch) -> Config {
    Config::new().with("cell", crate::configspace::Value::Cell(arch))
}

/// What a training task tells the LLM: trials train from `min_epochs` to `max_epochs` epochs
/// (the same when every trial trains as long).
pub fn training_info(kind: DatasetKind, min_epochs: usize, max_epochs: usize) -> TaskInfo {
    let name = match kind {
        DatasetKind::Cifar10 => "CIFAR-10",
        DatasetKind::Cifar100 => "CIFAR-100",
        DatasetKind::Mnist => "MNIST",
        DatasetKind::FashionMnist => "Fashion-MNIST",
    };
    let epochs = if min_epochs == max_epochs {
        format!("for {max_epochs} epoch(s)")
    } else {
        format!("for {min_epochs} epoch(s) first, the most promising up to {max_epochs}")
    };
    TaskInfo {
        description: format!(
            "image classification on {name}, training each candidate (a network built from a NAS-Bench-201 cell, and its training recipe) {epochs}"
        ),
        metric: "validation accuracy".into(),
        profile: None,
    }
}

/// Device-time estimates of training trials, learnt from the finished ones: device seconds per
/// forward GFLOP per training image and epoch, the slowest rate seen (so plans err on the safe
/// side).
#[derive(Debug, Clone)]
pub struct TrainingCost {
    kind: DatasetKind,
    images: usize,
    rate: Option<f64>,
}

impl TrainingCost {
    /// Trials over `images` training images of `kind`.
    pub fn new(kind: DatasetKind, images: usize) -> Self {
        TrainingCost { kind, images, rate: None }
    }

    /// Seconds of training `arch` at the reference speed: per image and epoch 1.4 ms plus
    /// 24 ms per GFLOP of the forward pass (NB201's count, multiply-accumulates), fitted to
    /// `bench train-speed` of three NB201 cells on two CPU cores (`benchmarks/results/train-speed.md`:
    /// 610, 389 and 198 images/s at 7.8, 47 and 153 MFLOPs).
    fn work(&self, config: &Config, epochs: usize) -> f64 {
        self.reference_per_image(config) * (self.images * epochs) as f64
    }

    /// Seconds per training image of the network `config` builds at the reference speed (see
    /// [`TrainingCost::work`]).
    fn reference_per_image(&self, config: &Config) -> f64 {
        1.4e-3 + 24e-12 * network(self.kind, config).flops()
    }

    /// The estimated device seconds of training `arch` for `epochs` epochs: the reference speed
    /// until a trial has run, then scaled by the slowest ratio of measured to reference time
    /// seen so far.
    pub fn estimate(&self, config: &Config, epochs: usize) -> f64 {
        self.work(config, epochs) * self.rate.unwrap_or(1.0)
    }

    /// Set the speed from a measurement: the calibration cell ([`calibration_arch`]) trained at
    /// `seconds_per_image` here ([`autoagent_evaluator::calibrate::seconds_per_image`]); the
    /// other networks' estimates scale from it with their FLOPs as the reference speed does.
    pub fn calibrate(&mut self, seconds_per_image: f64) {
        let reference = self.reference_per_image(&calibration_config());
        if reference > 0.0 && seconds_per_image > 0.0 && seconds_per_image.is_finite() {
            self.rate = Some(seconds_per_image / reference);
        }
    }

    /// The training images a trial trains on.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Learn from a finished trial of `arch` that trained `epochs` epochs in `seconds`.
    pub fn observe(&mut self, config: &Config, epochs: usize, seconds: f64) {
        let work = self.work(config, epochs);
        if work > 0.0 && seconds > 0.0 {
            let rate = seconds / work;
            self.rate = Some(self.rate.map_or(rate, |r| r.max(rate)));
        }
    }
}

/// The network a run times its first training steps with ([`TrainingCost::calibrate`]): NB201's
/// median-size cell (9631 of the table, 0.34 M parameters on CIFAR-10) in NB201's network
/// (C = 16, N = 5).
pub fn calibration_config() -> Config {
    let arch = Arch::parse("|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|").expect("a valid NB201 cell");
    cell_config(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_training_estimate_is_in_seconds_not_a_million_times_more() {
        // Issue 15 item 6 / 16 item 1: the FLOP count was read as MFLOPs (~1.2e9 s for a trial).
        let cost = TrainingCost::new(DatasetKind::Cifar10, 45_000);
        let mid = cell_config(Arch::parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_3x3~1|none~2|").unwrap());
        let secs = cost.estimate(&mid, 1);
        assert!((30.0..1000.0).contains(&secs), "{secs}");
        // Calibrated: the calibration cell's estimate is its measured time; others scale.
        let mut calibrated = TrainingCost::new(DatasetKind::Cifar10, 45_000);
        let cal = calibration_config();
        calibrated.calibrate(0.01);
        assert!((calibrated.estimate(&cal, 1) - 450.0).abs() < 1e-6);
        assert!((calibrated.estimate(&mid, 1) / cost.estimate(&mid, 1) - calibrated.estimate(&cal, 1) / cost.estimate(&cal, 1)).abs() < 1e-9);
        // Measured twice as slow: later estimates follow.
        let mut learned = TrainingCost::new(DatasetKind::Cifar10, 45_000);
        learned.observe(&mid, 1, 2.0 * secs);
        assert!((learned.estimate(&mid, 1) / secs - 2.0).abs() < 1e-9);
    }
}
