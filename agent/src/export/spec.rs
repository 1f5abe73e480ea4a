//! `model.json`: the architecture spec of a model folder ([`ModelSpec`]), and the record of the
//! data its network was trained on ([`DataRecord`]).

use std::path::{Path, PathBuf};

use autoagent_evaluator::data::{self, Dataset, DatasetKind};
use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::net::Nb201Config;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ExportError;
use crate::error_context::Context;

/// The `format` field of `model.json`.
pub const MODEL_FORMAT: &str = "autoagent-model";
/// The `model.json` format version this build writes (it reads this one and
/// [`MODEL_FORMAT_VERSION_NO_DATA`]).
pub const MODEL_FORMAT_VERSION: u32 = 2;
/// The earlier version, without `data` (no data check).
pub const MODEL_FORMAT_VERSION_NO_DATA: u32 = 1;
/// File names inside a model folder.
pub const SPEC_FILE: &str = "model.json";
/// The weights file of a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// `model.json` (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// [`MODEL_FORMAT_VERSION`].
    pub format_version: u32,
    /// The search space: `nb201`.
    pub space: String,
    /// The NB201 cell.
    pub arch: String,
    /// The dataset the network was trained on (`cifar10`, `cifar100`, `mnist`, `fashion-mnist`).
    pub task: String,
    /// Output classes.
    pub num_classes: usize,
    /// Input image channels (1 grey, 3 RGB).
    pub in_channels: usize,
    /// Input image side (square).
    pub input_size: usize,
    /// Channels of the first stage (C).
    pub channels: usize,
    /// Cells per stage (N).
    pub cells_per_stage: usize,
    /// Per-channel normalisation on the [0, 1] pixel scale: `(x / 255 - mean) / std`.
    pub normalization: Normalization,
    /// Class names by index, where known (empty otherwise).
    #[serde(default)]
    pub class_names: Vec<String>,
    /// The weights file, relative to the folder.
    pub weights: String,
    /// Element type of the weights.
    pub dtype: String,
    /// Accuracy (%) of these weights on the run's validation hold-out.
    pub valid_accuracy: Option<f64>,
    /// Trainable parameters.
    pub params: usize,
    /// Forward FLOPs per image (NB201 convention).
    pub flops: f64,
    /// Where the weights came from.
    pub source: Value,
    /// The data the network was trained on (version 2; `None` when unknown).
    #[serde(default)]
    pub data: Option<DataRecord>,
    /// The program that wrote the folder.
    pub created_by: String,
}

/// Where a model's training data was and its fingerprint (`data` of [`ModelSpec`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    /// The folder holding the dataset's files (absolute).
    pub dir: PathBuf,
    /// [`autoagent_evaluator::data::fingerprint`] of the dataset.
    pub fingerprint: String,
    /// Images of its training split.
    pub train_images: usize,
    /// Images of its test split.
    pub test_images: usize,
}

impl DataRecord {
    /// The record of `data`, read from the folder `dir`.
    pub fn of(data: &Dataset, dir: &Path) -> Self {
        DataRecord {
            dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
            fingerprint: data::fingerprint(data),
            train_images: data.train.n,
            test_images: data.test.n,
        }
    }

    /// The record of the dataset `kind` under the data root `root`, loaded for it; `None` when
    /// it is not there or does not load.
    pub fn read(kind: DatasetKind, root: &Path) -> Option<Self> {
        let dir = data::locate(kind, root)?;
        let dataset = data::load(kind, &dir).ok()?;
        Some(Self::of(&dataset, &dir))
    }
}

/// What a model folder is made of, besides its weights.
pub struct ModelFacts {
    /// The dataset it was trained on.
    pub kind: DatasetKind,
    /// Its network.
    pub cfg: Nb201Config,
    /// Trainable parameters.
    pub params: usize,
    /// Accuracy (%) of the weights on the validation hold-out, where measured.
    pub valid_accuracy: Option<f64>,
    /// Where the weights came from.
    pub source: Value,
    /// The training data.
    pub data: Option<DataRecord>,
}

impl ModelSpec {
    /// The spec of a model folder this build writes.
    pub fn new(facts: ModelFacts) -> Self {
        let (kind, cfg) = (facts.kind, &facts.cfg);
        let (mean, std) = kind.mean_std();
        ModelSpec {
            format: MODEL_FORMAT.into(),
            format_version: MODEL_FORMAT_VERSION,
            space: "nb201".into(),
            arch: cfg.arch.to_string(),
            task: kind.name().into(),
            num_classes: cfg.num_classes,
            in_channels: cfg.in_channels,
            input_size: cfg.input_size,
            channels: cfg.channels,
            cells_per_stage: cfg.cells_per_stage,
            normalization: Normalization {
                mean: mean.to_vec(),
                std: std.to_vec(),
            },
            class_names: class_names(kind),
            weights: WEIGHTS_FILE.into(),
            dtype: "f32".into(),
            valid_accuracy: facts.valid_accuracy,
            params: facts.params,
            flops: cfg.flops(),
            source: facts.source,
            data: facts.data,
            created_by: format!("autoagent {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Write it as `dir/model.json` (through a temporary file).
    pub fn write(&self, dir: &Path) -> Result<(), ExportError> {
        let json_path = dir.join(SPEC_FILE);
        let tmp = dir.join(".model.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &json_path).with_context(|| format!("cannot write {}", json_path.display()))?;
        Ok(())
    }
}

/// Normalisation constants of [`ModelSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
}

impl ModelSpec {
    /// The network configuration.
    pub fn net_config(&self) -> Result<Nb201Config, ExportError> {
        let cfg = Nb201Config {
            arch: Arch::parse(&self.arch).with_context(|| format!("bad arch '{}'", self.arch))?,
            channels: self.channels,
            cells_per_stage: self.cells_per_stage,
            num_classes: self.num_classes,
            in_channels: self.in_channels,
            input_size: self.input_size,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Class `i`'s name, or its index where no name is known.
    pub fn label(&self, i: usize) -> String {
        self.class_names.get(i).cloned().unwrap_or_else(|| i.to_string())
    }
}

/// Class names of a dataset, where known (index order of the official releases).
pub fn class_names(kind: DatasetKind) -> Vec<String> {
    let names: &[&str] = match kind {
        DatasetKind::Mnist => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        DatasetKind::FashionMnist => &[
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        DatasetKind::Cifar10 => &["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        DatasetKind::Cifar100 => &[],
    };
    names.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_cover_every_class_where_known() {
        for kind in DatasetKind::ALL {
            let names = class_names(kind);
            assert!(names.is_empty() || names.len() == kind.num_classes(), "{kind}");
        }
    }
}
