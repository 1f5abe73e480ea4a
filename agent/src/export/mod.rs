//! A trained trial of a run as a self-contained model folder (`autoagent export`: [`export_trial`]),
//! and inference with it (`autoagent predict`: [`load_model_dir`], [`measure_split`],
//! [`predict_images`]); a tabular run's final ensemble likewise ([`export_tabular`], [`predict_csv`]:
//! the `tabular` module documents its folder).
//!
//! # The model folder
//!
//! [`export_trial`] (`export RUN_DIR --best --out DIR`) writes two files:
//!
//! * `model.safetensors`: a byte-for-byte copy of the trial's weights (`weights.safetensors`, its
//!   last epoch, whose validation accuracy is the trial's; runs before format version 2 kept the
//!   best epoch's as `best.safetensors`): every variable of the network, f32, under the names the
//!   evaluator gives them (`stem.conv.weight`, `cells.{i}.e{t}{s}.conv.weight`,
//!   `cells.{i}.conv_a.bn.running_mean`, `lastact.bn.weight`, `classifier.bias`, ...), BatchNorm
//!   running statistics included.
//! * `model.json`: the architecture spec ([`ModelSpec`]), enough to rebuild the network and
//!   feed it images:
//!
//! ```json
//! {
//!   "format": "autoagent-model",
//!   "format_version": 2,
//!   "space": "nb201",
//!   "arch": "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
//!   "task": "mnist",
//!   "num_classes": 10,
//!   "in_channels": 1,
//!   "input_size": 28,
//!   "channels": 16,
//!   "cells_per_stage": 5,
//!   "normalization": { "mean": [0.1307], "std": [0.3081] },
//!   "class_names": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
//!   "weights": "model.safetensors",
//!   "dtype": "f32",
//!   "valid_accuracy": 91.5,
//!   "params": 1073290,
//!   "flops": 105912576.0,
//!   "source": { "run_dir": "/abs/runs/run-1", "trial": 2, "weights": "trials/0002/weights.safetensors",
//!               "epoch": 1, "trial_accuracy": 91.5, "train": { "epochs": 1, ... } },
//!   "data": { "dir": "/abs/data/mnist", "fingerprint": "sha256:…", "train_images": 2000, "test_images": 1000 },
//!   "created_by": "autoagent 0.1.0"
//! }
//! ```
//!
//! `autoagent train --out DIR` writes the same folder (its `source` names the command, the kept
//! epoch and the test accuracy of the kept weights).
//!
//! The network is the NAS-Bench-201 skeleton (`autoagent_evaluator::net`): stem conv 3×3 to
//! `channels` (C), three stages of `cells_per_stage` (N) cells at C, 2C, 4C with a residual
//! reduction block between stages, BN, ReLU, global average pool, linear classifier. An input
//! image is `in_channels × input_size × input_size`, pixels scaled to [0, 1] and normalised per
//! channel (R, G, B order for colour) as `(x − mean) / std`. `valid_accuracy` is the accuracy
//! of these weights on the run's validation hold-out (the last 10 % of the training split);
//! `predict --split valid` measures it again.
//!
//! `data` (version 2) is the folder the training data was read from and a fingerprint of it
//! (`autoagent_evaluator::data::fingerprint`: SHA-256 of the splits' sizes and labels):
//! `predict --split` reads that folder unless `--data-dir` names another, and refuses data with
//! another fingerprint unless `--force`. It is `null` when the data was not at hand at export.
//! Version 1 (no `data`) is still read, without the check.
//!
//! A reader must refuse a `format_version` it does not know.

mod folder;
mod from_run;
mod images;
mod predict;
mod spec;
mod tabular;
mod weights;

pub use folder::{load_model_dir, LoadedModel};
pub use from_run::{export_trial, ExportOptions, Exported};
pub use images::{predict_images, ImagePrediction};
pub use predict::{measure_split, predict_split, ClassScore, SplitChoice, SplitOptions, SplitScore};
pub use spec::{
    class_names, DataRecord, ModelFacts, ModelSpec, Normalization, MODEL_FORMAT, MODEL_FORMAT_VERSION, MODEL_FORMAT_VERSION_NO_DATA, SPEC_FILE, WEIGHTS_FILE,
};
pub use tabular::{
    export_tabular, is_tabular_model, is_tabular_run, predict_csv, CsvPredictOptions, CsvPredictions, TabularModel, TABULAR_FORMAT, TABULAR_FORMAT_VERSION,
};

use crate::error_context::Failed;
use crate::store::StoreError;

/// Why a model folder could not be written or read, or a prediction not made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// What is wrong with the run, the model folder, the images or the request, in one line.
    #[error("{0}")]
    Invalid(String),
    /// A step that failed, and why.
    #[error(transparent)]
    Failed(#[from] Failed),
    /// The run database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Building or running the network.
    #[error(transparent)]
    Evaluator(#[from] autoagent_evaluator::Error),
    /// Finding or reading a dataset.
    #[error(transparent)]
    Data(#[from] autoagent_evaluator::data::DataError),
    /// Tensors.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Files.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// An [`ExportError::Invalid`] as an `Err`.
fn invalid<T>(message: String) -> Result<T, ExportError> {
    Err(ExportError::Invalid(message))
}
