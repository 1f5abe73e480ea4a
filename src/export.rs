//! `autoagent export` and `autoagent predict`: a trained trial of a run as a self-contained model
//! folder, and inference with it.
//!
//! # The model folder
//!
//! `export RUN_DIR --best --out DIR` writes two files:
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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use autoagent_agent::store::sqlite::SqliteStore;
use autoagent_agent::store::{Store, TrialRecord, TrialState};
use autoagent_agent::task::search_split;
use autoagent_agent::trial::WEIGHTS_FILE as TRIAL_WEIGHTS;
use autoagent_evaluator::data::{self, Dataset, DatasetKind, Split};
use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::net::{Model, Nb201Config};
use autoagent_evaluator::train::{parse_device, Batcher};
use candle_core::{DType, Device, Tensor};
use clap::{ArgGroup, Args};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::output::try_out_line;

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

/// Image file extensions `predict --images` reads (case-insensitive).
const IMAGE_EXTENSIONS: [&str; 9] = ["png", "pgm", "ppm", "pbm", "pnm", "pam", "bmp", "jpg", "jpeg"];

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
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json_path = dir.join(SPEC_FILE);
        let tmp = dir.join(".model.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &json_path).with_context(|| format!("cannot write {}", json_path.display()))
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
    pub fn net_config(&self) -> Result<Nb201Config> {
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

// ---------------------------------------------------------------------------------------------
// export

/// `autoagent export`.
#[derive(Args)]
pub struct ExportArgs {
    /// The run directory (holds run.db).
    run_dir: PathBuf,
    /// Export the best complete trial by validation accuracy (the default).
    #[arg(long, conflicts_with = "trial")]
    best: bool,
    /// Export this trial (its number in the run, as `report` shows it) instead of the best.
    #[arg(long)]
    trial: Option<usize>,
    /// The model folder to write (model.safetensors, model.json).
    #[arg(long)]
    out: PathBuf,
    /// Write into a folder that is not empty (model.safetensors and model.json are replaced).
    #[arg(long)]
    force: bool,
}

/// `autoagent export RUN_DIR [--best | --trial N] --out DIR [--force]`.
pub fn cmd_export(args: ExportArgs) -> Result<()> {
    let _ = args.best; // the default either way
    let dir = &args.run_dir;
    if !dir.is_dir() {
        bail!("run directory {} does not exist", dir.display());
    }
    let db = dir.join("run.db");
    if !db.is_file() {
        bail!("{} holds no run database (run.db): not a run directory", dir.display());
    }
    let store = SqliteStore::open_read(&db)?;
    let config: Value = match store.meta("config")? {
        Some(text) => serde_json::from_str(&text).with_context(|| format!("{}: the stored config is not JSON", db.display()))?,
        None => Value::Null,
    };
    let trials = store.trials()?;
    let run_task = config["args"]["task"].as_str().map(str::to_string);
    if let Some(table) = run_task.as_deref().and_then(|t| t.strip_prefix("nb201:")) {
        let arch = best_trial(&trials).map(|r| r.trial.arch.to_string()).unwrap_or_else(|| "ARCH".into());
        let dataset = match table {
            "cifar100" => "cifar100",
            _ => "cifar10",
        };
        bail!(
            "{} is a table-lookup run (task nb201:{table}): its trials were looked up in the NB201 table and have no trained weights to export; train the architecture first: autoagent train --arch '{arch}' --task {dataset} --out DIR (a model folder for predict --model DIR)",
            dir.display()
        );
    }

    let record = match args.trial {
        Some(n) => {
            let r = trials.iter().find(|r| r.trial.id == n).with_context(|| {
                let ids: Vec<String> = trials.iter().map(|r| r.trial.id.to_string()).collect();
                format!(
                    "{} has no trial {n} (its trials: {})",
                    dir.display(),
                    if ids.is_empty() { "none".into() } else { ids.join(", ") }
                )
            })?;
            if r.trial.state != TrialState::Complete {
                bail!(
                    "trial {n} of {} is {}, not complete: only complete trials are exported",
                    dir.display(),
                    r.trial.state.name()
                );
            }
            r
        }
        None => best_trial(&trials).with_context(|| format!("{} has no complete trial to export", dir.display()))?,
    };
    let id = record.trial.id;

    // The trial's spec (task, training configuration) and weights.
    let spec_rel = record.artefacts.iter().find(|a| a.ends_with("spec.json")).cloned();
    let spec: Value = match &spec_rel {
        Some(rel) => {
            let path = dir.join(rel);
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?
        }
        None => Value::Null,
    };
    let task = run_task
        .or_else(|| spec["task"].as_str().map(str::to_string))
        .with_context(|| format!("{}: the run records no task", dir.display()))?;
    let kind = DatasetKind::from_name(&task).with_context(|| format!("{}: task '{task}' has no trained weights to export", dir.display()))?;
    let weights_rel = record
        .artefacts
        .iter()
        .find(|a| a.ends_with(".safetensors"))
        .cloned()
        .unwrap_or_else(|| format!("trials/{id:04}/{TRIAL_WEIGHTS}"));
    let weights = dir.join(&weights_rel);
    if !weights.is_file() {
        bail!("trial {id} of {} has no weights ({} is missing)", dir.display(), weights.display());
    }

    // The network the weights fit: the task's inputs and classes, C and N read off the weights.
    let (channels, cells_per_stage) = skeleton_of(&weights)?;
    let (c, h, _) = kind.image_shape();
    let cfg = Nb201Config {
        arch: record.trial.arch,
        channels,
        cells_per_stage,
        num_classes: kind.num_classes(),
        in_channels: c,
        input_size: h,
    };
    cfg.validate()?;
    load_model(&cfg, &weights, &Device::Cpu).with_context(|| format!("the weights of trial {id} do not fit its network"))?;

    // The output folder.
    let out = &args.out;
    if out.exists() {
        if !out.is_dir() {
            bail!("{} exists and is not a directory", out.display());
        }
        let non_empty = std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_some();
        if non_empty && !args.force {
            bail!("{} is not empty (pass --force to write into it anyway)", out.display());
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let model_path = out.join(WEIGHTS_FILE);
    let tmp = out.join(".model.safetensors.tmp");
    std::fs::copy(&weights, &tmp).with_context(|| format!("cannot copy {} to {}", weights.display(), tmp.display()))?;
    std::fs::rename(&tmp, &model_path).with_context(|| format!("cannot write {}", model_path.display()))?;
    // The copy must be the trial's file and build the network.
    let same = std::fs::read(&weights)? == std::fs::read(&model_path).with_context(|| format!("cannot read {}", model_path.display()))?;
    if !same {
        bail!("{} differs from {} after copying", model_path.display(), weights.display());
    }
    let model = load_model(&cfg, &model_path, &Device::Cpu).with_context(|| format!("the exported {} does not load", model_path.display()))?;
    let probe = Tensor::zeros((1, c, h, h), DType::F32, &Device::Cpu)?;
    let logits = model.net.forward_t(&probe, false)?.flatten_all()?.to_vec1::<f32>()?;
    if logits.len() != cfg.num_classes || logits.iter().any(|v| !v.is_finite()) {
        bail!("the exported network gives no finite logits for {} classes", cfg.num_classes);
    }

    // The accuracy of these weights: a trial keeps its last epoch's, whose accuracy is the
    // trial's (the number the run ranked it on); a trial of an earlier build kept its best
    // epoch's (`best.safetensors`), whose accuracy is that epoch's.
    let metrics = store.metrics(id)?;
    let valid: Vec<(usize, f64)> = metrics.iter().filter(|m| m.name == "valid_acc").map(|m| (m.epoch, m.value)).collect();
    let (epoch, valid_accuracy) = if weights_rel.ends_with(TRIAL_WEIGHTS) {
        (valid.iter().map(|v| v.0).max(), record.trial.accuracy)
    } else {
        let best = valid.iter().fold(None::<(usize, f64)>, |best, &(e, v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((e, v)),
        });
        (best.map(|b| b.0), best.map(|b| b.1).or(record.trial.accuracy))
    };
    // The data the trial trained on, where it still is.
    let data_root = match spec["data_dir"].as_str().or(config["args"]["data_dir"].as_str()) {
        Some(d) => PathBuf::from(d),
        None => data::data_root(None),
    };
    let data_record = DataRecord::read(kind, &data_root);
    if data_record.is_none() {
        crate::output::err_line(&format!(
            "warning: the run's {kind} data is not under {} any more: model.json records no data fingerprint",
            data_root.display()
        ));
    }
    let run_dir_abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let spec_out = ModelSpec::new(ModelFacts {
        kind,
        cfg,
        params: model.param_count(),
        valid_accuracy,
        source: json!({
            "run_dir": run_dir_abs.display().to_string(),
            "trial": id,
            "weights": weights_rel,
            "epoch": epoch,
            "trial_accuracy": record.trial.accuracy,
            "test_accuracy": record.trial.test_accuracy,
            "train": spec["train"],
        }),
        data: data_record,
    });
    spec_out.write(out)?;
    let acc = spec_out.valid_accuracy.map(|a| format!("{a:.2} %")).unwrap_or_else(|| "unknown".into());
    crate::output::out_line(&format!(
        "exported trial {id} of {} ({}, {}, validation accuracy {acc}, {} params) to {}",
        dir.display(),
        spec_out.arch,
        spec_out.task,
        spec_out.params,
        out.display()
    ));
    Ok(())
}

/// The complete trial with the best validation accuracy (the lowest number among equals).
fn best_trial(trials: &[TrialRecord]) -> Option<&TrialRecord> {
    trials
        .iter()
        .filter(|r| r.trial.state == TrialState::Complete && r.trial.accuracy.is_some())
        .max_by(|a, b| {
            a.trial
                .accuracy
                .partial_cmp(&b.trial.accuracy)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.trial.id.cmp(&a.trial.id))
        })
}

/// C (the stem's output channels) and N (cells per stage: the index of the first reduction
/// block) of the network a weights file holds.
fn skeleton_of(path: &Path) -> Result<(usize, usize)> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| format!("cannot read the weights {}", path.display()))?;
    let stem = tensors
        .get("stem.conv.weight")
        .with_context(|| format!("{} holds no NB201 network (no stem.conv.weight)", path.display()))?;
    let channels = stem.dim(0)?;
    let first_reduction = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("cells.")?.strip_suffix(".shortcut.weight")?.parse::<usize>().ok())
        .min()
        .with_context(|| format!("{} holds no NB201 network (no reduction block)", path.display()))?;
    Ok((channels, first_reduction))
}

/// Build the network of `cfg` on `device` with the weights of `path`: every variable of the
/// network must be in the file with its shape, and the file may hold nothing else.
fn load_model(cfg: &Nb201Config, path: &Path, device: &Device) -> Result<Model> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| format!("cannot read the weights {}", path.display()))?;
    let mut model = Model::new(cfg, DType::F32, device, 0)?;
    let expected: BTreeSet<String> = model.varmap.data().lock().expect("varmap lock").keys().cloned().collect();
    let found: BTreeSet<String> = tensors.keys().cloned().collect();
    if let Some(missing) = expected.difference(&found).next() {
        bail!("{} lacks the tensor {missing} of the network", path.display());
    }
    if let Some(extra) = found.difference(&expected).next() {
        bail!("{} holds a tensor the network does not have: {extra}", path.display());
    }
    drop(tensors);
    model.load(path).with_context(|| format!("cannot load {}", path.display()))?;
    Ok(model)
}

// ---------------------------------------------------------------------------------------------
// predict

/// `autoagent predict`.
#[derive(Args)]
#[command(group(ArgGroup::new("input").required(true).args(["images", "split"])))]
pub struct PredictArgs {
    /// The model folder (model.json, model.safetensors) that `export` or `train --out` wrote.
    #[arg(long)]
    model: PathBuf,
    /// Classify this image file, or every image file (png, jpg, bmp, pgm, ppm, ...) in this folder.
    #[arg(long, conflicts_with_all = ["split", "task"])]
    images: Option<PathBuf>,
    /// Dataset to measure accuracy on (default: the model's; it must be the model's).
    #[arg(long, requires = "split")]
    task: Option<String>,
    /// Split of the dataset: test, train, or valid (the last 10 % of train, the run's hold-out).
    #[arg(long, value_parser = ["test", "train", "valid"])]
    split: Option<String>,
    /// Data root or dataset folder (default: the folder the model's data came from, as model.json
    /// records it; else $AUTOAGENT_DATA, else the user cache directory).
    #[arg(long, requires = "split")]
    data_dir: Option<PathBuf>,
    /// Measure on data whose fingerprint differs from the model's training data.
    #[arg(long, requires = "split")]
    force: bool,
    /// Never download: fail when the dataset is not present.
    #[arg(long, requires = "split")]
    no_download: bool,
    /// Only the first N images of the split.
    #[arg(long, requires = "split")]
    limit: Option<usize>,
    /// JSON: one object (--split), one object per line (--images).
    #[arg(long)]
    json: bool,
    /// Device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
}

/// A loaded model folder.
pub struct LoadedModel {
    /// Its `model.json`.
    pub spec: ModelSpec,
    /// The network with its weights.
    pub model: Model,
}

/// Read a model folder: `model.json` of a known format version, the weights built into the
/// network it describes.
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<LoadedModel> {
    if !dir.is_dir() {
        bail!("model folder {} does not exist", dir.display());
    }
    let json_path = dir.join(SPEC_FILE);
    if !json_path.is_file() {
        bail!("{} holds no {SPEC_FILE}: not a model folder (autoagent export writes one)", dir.display());
    }
    let text = std::fs::read_to_string(&json_path).with_context(|| format!("cannot read {}", json_path.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", json_path.display()))?;
    if value["format"] != MODEL_FORMAT {
        bail!(
            "{} is not an autoagent model spec (format is {}, expected \"{MODEL_FORMAT}\")",
            json_path.display(),
            value["format"]
        );
    }
    if value["format_version"] != MODEL_FORMAT_VERSION && value["format_version"] != MODEL_FORMAT_VERSION_NO_DATA {
        bail!(
            "{} has format version {}; this build reads versions {MODEL_FORMAT_VERSION_NO_DATA} and {MODEL_FORMAT_VERSION}",
            json_path.display(),
            value["format_version"]
        );
    }
    let spec: ModelSpec = serde_json::from_value(value).with_context(|| format!("{} is not a valid model spec", json_path.display()))?;
    if spec.space != "nb201" {
        bail!("{}: unknown search space '{}' (this build knows nb201)", json_path.display(), spec.space);
    }
    if spec.dtype != "f32" {
        bail!("{}: weights of type {} are not supported (f32 only)", json_path.display(), spec.dtype);
    }
    let (m, s) = (&spec.normalization.mean, &spec.normalization.std);
    if m.len() != spec.in_channels || s.len() != spec.in_channels || s.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        bail!(
            "{}: the normalisation needs one mean and one positive std per input channel ({})",
            json_path.display(),
            spec.in_channels
        );
    }
    let cfg = spec.net_config().with_context(|| format!("{}", json_path.display()))?;
    let weights = dir.join(&spec.weights);
    if !weights.is_file() {
        bail!("{} is missing (the weights {SPEC_FILE} names)", weights.display());
    }
    let model = load_model(&cfg, &weights, device)?;
    Ok(LoadedModel { spec, model })
}

/// The predicted class and its softmax probability of each image of `split`.
pub fn predict_split(m: &LoadedModel, split: &Split, batch_size: usize, device: &Device) -> Result<Vec<(usize, f32)>> {
    let spec = &m.spec;
    if (split.c, split.h, split.w) != (spec.in_channels, spec.input_size, spec.input_size) {
        bail!(
            "the model takes {}x{}x{} images, these are {}x{}x{}",
            spec.in_channels,
            spec.input_size,
            spec.input_size,
            split.c,
            split.h,
            split.w
        );
    }
    let batcher = Batcher::new(&spec.normalization.mean, &spec.normalization.std);
    let idx: Vec<usize> = (0..split.n).collect();
    let mut out = Vec::with_capacity(split.n);
    for chunk in idx.chunks(batch_size.max(1)) {
        let (xs, _) = batcher.batch::<rand_chacha::ChaCha8Rng>(split, chunk, None, device)?;
        let logits = m.model.net.forward_t(&xs, false)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for row in logits {
            out.push(top1(&row));
        }
    }
    Ok(out)
}

/// The argmax of `logits` (the first among equals) and its softmax probability.
fn top1(logits: &[f32]) -> (usize, f32) {
    let (best, max) = logits
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, v)| if v > bv { (i, v) } else { (bi, bv) });
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (best, (1.0 / sum) as f32)
}

/// `autoagent predict --model DIR (--images FOLDER | --split S ...)`.
pub fn cmd_predict(args: PredictArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let device = parse_device(&args.device)?;
    let m = load_model_dir(&args.model, &device)?;
    match (&args.images, &args.split) {
        (Some(folder), _) => predict_images(&m, folder, &args, &device),
        (None, Some(split)) => predict_dataset(&m, split, &args, &device),
        (None, None) => bail!("give --images FOLDER or --split test|train|valid"),
    }
}

fn predict_dataset(m: &LoadedModel, split_name: &str, args: &PredictArgs, device: &Device) -> Result<()> {
    let spec = &m.spec;
    let kind = DatasetKind::from_name(&spec.task).with_context(|| format!("the model's task '{}' is not a dataset", spec.task))?;
    if let Some(t) = &args.task {
        let asked = DatasetKind::from_name(t).with_context(|| format!("unknown task '{t}' (available: cifar10, cifar100, mnist, fashion-mnist)"))?;
        if asked != kind {
            bail!("the model was trained on {kind}, not {asked}: its classes are {kind}'s");
        }
    }
    let root = match (&args.data_dir, &spec.data) {
        (Some(d), _) => d.clone(),
        (None, Some(rec)) if rec.dir.is_dir() => rec.dir.clone(),
        (None, _) => data::data_root(None),
    };
    let dataset = data::open(kind, &root, !args.no_download)?;
    check_data(spec, &args.model, &root, &dataset, args.force)?;
    let mut split = match split_name {
        "train" => dataset.train,
        "test" => dataset.test,
        "valid" => search_split(&dataset).map_err(anyhow::Error::msg)?.test,
        other => bail!("unknown split '{other}' (test, train or valid)"),
    };
    if let Some(n) = args.limit {
        split = head(&split, n);
    }
    if split.n == 0 {
        bail!("the {kind} {split_name} split holds no images");
    }
    let preds = predict_split(m, &split, args.batch_size, device)?;
    let classes = spec.num_classes;
    let (mut n_of, mut ok_of) = (vec![0usize; classes], vec![0usize; classes]);
    for (&(p, _), &y) in preds.iter().zip(&split.labels) {
        let y = y as usize;
        if y < classes {
            n_of[y] += 1;
            ok_of[y] += usize::from(p == y);
        }
    }
    let correct: usize = ok_of.iter().sum();
    let accuracy = 100.0 * correct as f64 / split.n as f64;
    let pct = |ok: usize, n: usize| (n > 0).then(|| 100.0 * ok as f64 / n as f64);
    if args.json {
        let per_class: Vec<Value> = (0..classes)
            .map(|c| json!({"class": c, "label": spec.label(c), "n": n_of[c], "correct": ok_of[c], "accuracy": pct(ok_of[c], n_of[c])}))
            .collect();
        let obj = json!({
            "task": kind.name(),
            "split": split_name,
            "n": split.n,
            "correct": correct,
            "accuracy": accuracy,
            "per_class": per_class,
            "predictions": preds.iter().map(|p| p.0).collect::<Vec<_>>(),
        });
        try_out_line(&obj.to_string())?;
    } else if try_out_line(&format!("accuracy {accuracy:.2} % ({correct}/{}) on the {kind} {split_name} split", split.n))? {
        for c in 0..classes {
            if let Some(a) = pct(ok_of[c], n_of[c]) {
                if !try_out_line(&format!("{c}\t{}\t{a:.2} %\t({}/{})", spec.label(c), ok_of[c], n_of[c]))? {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// The data is what the model was trained on (its fingerprint is the recorded one), unless
/// `force`; a model that records none is measured with a note.
fn check_data(spec: &ModelSpec, model: &Path, root: &Path, dataset: &Dataset, force: bool) -> Result<()> {
    let Some(rec) = &spec.data else {
        crate::output::err_line(&format!(
            "note: {} records no fingerprint of its training data (format version {}): the data under {} is not checked",
            model.join(SPEC_FILE).display(),
            spec.format_version,
            root.display()
        ));
        return Ok(());
    };
    let found = data::fingerprint(dataset);
    if found != rec.fingerprint && !force {
        bail!(
            "{} holds other data than the model {} was trained on ({}: {} train / {} test images, {}; here: {} / {}, {}); pass --force to measure anyway",
            root.display(),
            model.display(),
            rec.dir.display(),
            rec.train_images,
            rec.test_images,
            rec.fingerprint,
            dataset.train.n,
            dataset.test.n,
            found
        );
    }
    Ok(())
}

/// The first `n` images of `split`.
fn head(split: &Split, n: usize) -> Split {
    let n = n.min(split.n);
    Split {
        images: split.images[..n * split.image_len()].to_vec(),
        labels: split.labels[..n].to_vec(),
        n,
        c: split.c,
        h: split.h,
        w: split.w,
    }
}

fn predict_images(m: &LoadedModel, folder: &Path, args: &PredictArgs, device: &Device) -> Result<()> {
    let spec = &m.spec;
    let files = image_files(folder)?;
    let (c, s) = (spec.in_channels, spec.input_size);
    let mut images = Vec::with_capacity(files.len() * c * s * s);
    for path in &files {
        images.extend(read_image(path, c, s)?);
    }
    let split = Split {
        images,
        labels: vec![0; files.len()],
        n: files.len(),
        c,
        h: s,
        w: s,
    };
    let preds = predict_split(m, &split, args.batch_size, device)?;
    for (path, &(class, p)) in files.iter().zip(&preds) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let line = if args.json {
            json!({"file": name, "class": class, "label": spec.label(class), "probability": p}).to_string()
        } else {
            format!("{name}\t{}\t{p:.4}", spec.label(class))
        };
        if !try_out_line(&line)? {
            break;
        }
    }
    Ok(())
}

/// `path` itself when it is a file, else the image files directly in the folder `path` (by
/// extension), sorted by name.
fn image_files(folder: &Path) -> Result<Vec<PathBuf>> {
    if folder.is_file() {
        return Ok(vec![folder.to_path_buf()]);
    }
    if !folder.is_dir() {
        bail!("image file or folder {} does not exist", folder.display());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("cannot read {}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no image files ({})", folder.display(), IMAGE_EXTENSIONS.join(", "));
    }
    Ok(files)
}

/// One image file as `c` planes of `side × side` bytes (grey for one channel, R, G, B for
/// three), resized (bilinear) when its size differs.
fn read_image(path: &Path, c: usize, side: usize) -> Result<Vec<u8>> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .with_context(|| format!("cannot decode the image {}", path.display()))?;
    let side32 = side as u32;
    let filter = image::imageops::FilterType::Triangle;
    match c {
        1 => {
            let mut g = img.to_luma8();
            if g.dimensions() != (side32, side32) {
                g = image::imageops::resize(&g, side32, side32, filter);
            }
            Ok(g.into_raw())
        }
        3 => {
            let mut rgb = img.to_rgb8();
            if rgb.dimensions() != (side32, side32) {
                rgb = image::imageops::resize(&rgb, side32, side32, filter);
            }
            let plane = side * side;
            let mut chw = vec![0u8; 3 * plane];
            for (i, px) in rgb.pixels().enumerate() {
                for ch in 0..3 {
                    chw[ch * plane + i] = px.0[ch];
                }
            }
            Ok(chw)
        }
        other => bail!("the model takes images of {other} channels; only 1 (grey) and 3 (RGB) are supported"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top1_is_the_argmax_with_its_softmax_probability() {
        let (c, p) = top1(&[1.0, 3.0, 2.0]);
        assert_eq!(c, 1);
        let e = |v: f64| v.exp();
        let want = e(3.0) / (e(1.0) + e(3.0) + e(2.0));
        assert!((p as f64 - want).abs() < 1e-6, "{p} vs {want}");
        assert_eq!(top1(&[5.0, 5.0]).0, 0);
    }

    #[test]
    fn class_names_cover_every_class_where_known() {
        for kind in DatasetKind::ALL {
            let names = class_names(kind);
            assert!(names.is_empty() || names.len() == kind.num_classes(), "{kind}");
        }
    }
}
