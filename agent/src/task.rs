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
use std::time::Instant;

use autoagent_evaluator::data::{Dataset, DatasetKind, Split};
use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::net::Nb201Config;
use autoagent_evaluator::table::Nb201Table;
use autoagent_evaluator::train::{train, TrainConfig};
use candle_core::Device;

use crate::llm_strategy::TaskInfo;

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The accuracy the strategy sees.
    pub accuracy: Option<f64>,
    /// Test accuracy, for the report.
    pub test_accuracy: Option<f64>,
    /// Device seconds spent.
    pub seconds: f64,
    /// Why it failed.
    pub error: Option<String>,
}

/// Evaluates candidates.
pub trait Evaluator: Send {
    /// What the prompt says about the task.
    fn info(&self) -> TaskInfo;
    /// The estimated device seconds of evaluating `arch` (for the budget's planning).
    fn estimate_seconds(&self, arch: &Arch) -> f64;
    /// Evaluate `arch`.
    fn evaluate(&mut self, arch: &Arch) -> Evaluation;
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

/// Table lookup.
pub struct TableEvaluator {
    table: Arc<Nb201Table>,
    dataset: Nb201Dataset,
    valid: String,
    test: String,
    fidelity: usize,
}

impl TableEvaluator {
    /// Lookups of `dataset` at `fidelity` epochs (12 or 200).
    pub fn new(table: Arc<Nb201Table>, dataset: Nb201Dataset, fidelity: usize) -> Result<Self, String> {
        let p = dataset.prefix();
        let valid = match fidelity {
            12 => format!("{p}_valid_acc_12ep"),
            200 => format!("{p}_valid_acc"),
            other => return Err(format!("fidelity {other} is not in the table (use 12 or 200)")),
        };
        let test = format!("{p}_test_acc");
        for col in [&valid, &test] {
            if !table.columns().iter().any(|c| c == col) {
                return Err(format!("the NB201 table has no column '{col}'"));
            }
        }
        if (0..table.len()).any(|i| matches!(table.value(i, &valid), Ok(None))) {
            return Err(format!(
                "the NB201 table has no {fidelity}-epoch validation accuracy for {p} (column '{valid}' is empty; use --fidelity 12)"
            ));
        }
        Ok(TableEvaluator {
            table,
            dataset,
            valid,
            test,
            fidelity,
        })
    }
}

impl Evaluator for TableEvaluator {
    fn info(&self) -> TaskInfo {
        let name = match self.dataset {
            Nb201Dataset::Cifar10 => "CIFAR-10",
            Nb201Dataset::Cifar100 => "CIFAR-100",
            Nb201Dataset::ImageNet16 => "ImageNet16-120",
        };
        TaskInfo {
            description: format!("image classification on {name} with a network built from one NAS-Bench-201 cell"),
            metric: format!("validation accuracy after {} epochs", self.fidelity),
        }
    }

    fn estimate_seconds(&self, _arch: &Arch) -> f64 {
        0.0
    }

    fn evaluate(&mut self, arch: &Arch) -> Evaluation {
        let v = self.table.value_of(arch, &self.valid);
        let t = self.table.value_of(arch, &self.test);
        match (v, t) {
            (Ok(v), Ok(t)) => Evaluation {
                accuracy: v,
                test_accuracy: t,
                seconds: 0.0,
                error: v.is_none().then(|| format!("the table has no '{}' for {arch}", self.valid)),
            },
            (Err(e), _) | (_, Err(e)) => Evaluation {
                accuracy: None,
                test_accuracy: None,
                seconds: 0.0,
                error: Some(e.to_string()),
            },
        }
    }
}

/// Real training.
pub struct TrainEvaluator {
    data: Dataset,
    config: TrainConfig,
    device: Device,
    /// Device seconds per forward GFLOP per training image, learnt from finished trials.
    rate: Option<f64>,
}

fn split_off(split: &Split, from: usize, to: usize) -> Split {
    let per = split.c * split.h * split.w;
    Split {
        images: split.images[from * per..to * per].to_vec(),
        labels: split.labels[from..to].to_vec(),
        n: to - from,
        c: split.c,
        h: split.h,
        w: split.w,
    }
}

impl TrainEvaluator {
    /// Training on `data` with `config`; the last 10 % of the training split is held out.
    pub fn new(data: &Dataset, config: TrainConfig, device: Device) -> Result<Self, String> {
        let n = data.train.n;
        let hold = (n / 10).max(1);
        if n < 20 {
            return Err(format!("{} has only {n} training images", data.kind.name()));
        }
        let search = Dataset {
            kind: data.kind,
            train: split_off(&data.train, 0, n - hold),
            test: split_off(&data.train, n - hold, n),
        };
        Ok(TrainEvaluator {
            data: search,
            config,
            device,
            rate: None,
        })
    }

    fn work(&self, arch: &Arch) -> f64 {
        let cfg = self.net(arch);
        cfg.flops() * 1e-3 * (self.data.train.n * self.config.epochs) as f64
    }

    fn net(&self, arch: &Arch) -> Nb201Config {
        let (c, h, _) = self.data.kind.image_shape();
        Nb201Config {
            num_classes: self.data.kind.num_classes(),
            in_channels: c,
            input_size: h,
            ..Nb201Config::new(*arch)
        }
    }
}

impl Evaluator for TrainEvaluator {
    fn info(&self) -> TaskInfo {
        let name = match self.data.kind {
            DatasetKind::Cifar10 => "CIFAR-10",
            DatasetKind::Cifar100 => "CIFAR-100",
            DatasetKind::Mnist => "MNIST",
            DatasetKind::FashionMnist => "Fashion-MNIST",
        };
        TaskInfo {
            description: format!(
                "image classification on {name}, training each NAS-Bench-201 network for {} epoch(s)",
                self.config.epochs
            ),
            metric: "validation accuracy".into(),
        }
    }

    fn estimate_seconds(&self, arch: &Arch) -> f64 {
        // Until a trial has run, assume 2 GFLOP/s of training throughput (3 passes per image).
        self.work(arch) * self.rate.unwrap_or(3.0 / 2.0)
    }

    fn evaluate(&mut self, arch: &Arch) -> Evaluation {
        let t = Instant::now();
        let r = train(&self.net(arch), &self.config, &self.data, &self.device, None, &mut |_| {});
        let seconds = t.elapsed().as_secs_f64();
        match r {
            Ok(report) => {
                let work = self.work(arch);
                if work > 0.0 {
                    let rate = report.device_seconds / work;
                    self.rate = Some(self.rate.map_or(rate, |r| r.max(rate)));
                }
                Evaluation {
                    accuracy: Some(report.test_acc),
                    test_accuracy: None,
                    seconds: report.device_seconds,
                    error: None,
                }
            }
            Err(e) => Evaluation {
                accuracy: None,
                test_accuracy: None,
                seconds,
                error: Some(e.to_string()),
            },
        }
    }
}
