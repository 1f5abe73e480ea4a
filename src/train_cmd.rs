//! `autoagent train`: one architecture trained on an image dataset. The epoch kept is chosen on a
//! validation hold-out (the last 10 % of the training split, not trained on) or is the last one;
//! the test split is measured once, with the kept weights. `--out DIR` writes a model folder
//! (`predict --model DIR` reads it) and the report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use autoagent_agent::export::{DataRecord, ModelFacts, ModelSpec, SPEC_FILE, WEIGHTS_FILE};
use autoagent_evaluator::data::{self, DatasetKind};
use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::net::Nb201Config;
use autoagent_evaluator::train::{self, EpochReport, Progress, Select, Splits, TrainConfig, TrainReport};
use clap::Args;
use serde_json::{json, Value};

use crate::output::{err_line, out_line};
use crate::DataArgs;

/// Seconds between two progress lines within an epoch (`AUTOAGENT_PROGRESS_SECS` overrides,
/// for tests).
const PROGRESS_SECS: f64 = 5.0;

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Dataset: cifar10, cifar100, mnist, fashion-mnist.
    #[arg(long)]
    task: String,
    /// NB201 architecture string, e.g. '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|'.
    #[arg(long)]
    arch: String,
    /// Epochs.
    #[arg(long, default_value_t = 200)]
    epochs: usize,
    /// Training batch size.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Initial learning rate (cosine decay to 0).
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// SGD momentum (Nesterov).
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Weight decay.
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// Disable augmentation (random crop with 4-pixel padding; horizontal flips on CIFAR).
    #[arg(long)]
    no_augment: bool,
    /// Channels of the first stage.
    #[arg(long, default_value_t = 16)]
    channels: usize,
    /// Cells per stage.
    #[arg(long, default_value_t = 5)]
    cells: usize,
    /// Which epoch's weights to keep: valid (the best on a validation hold-out, the last 10 % of
    /// the training split, which is then not trained on) or last (train on the whole training
    /// split, keep the last epoch). The test split is measured once, with the kept weights.
    #[arg(long, default_value = "valid", value_parser = ["valid", "last"])]
    select: String,
    /// Device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Seed of initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write a model folder here (model.safetensors and model.json, as `export` writes them, for
    /// `predict --model DIR`) and the report (train.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArgs,
}

impl TrainArgs {
    fn train_config(&self, kind: DatasetKind) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            nesterov: true,
            weight_decay: self.weight_decay,
            augment: !self.no_augment,
            // Mirror images are still natural images; mirrored digits and clothes labels are not.
            hflip: matches!(kind, DatasetKind::Cifar10 | DatasetKind::Cifar100),
            seed: self.seed,
            ..TrainConfig::default()
        }
    }
}

/// `autoagent train`.
pub fn cmd_train(args: TrainArgs) -> Result<()> {
    let kind =
        DatasetKind::from_name(&args.task).with_context(|| format!("unknown task '{}' (available: cifar10, cifar100, mnist, fashion-mnist)", args.task))?;
    let arch = Arch::parse(&args.arch)?;
    let select: Select = args.select.parse().map_err(anyhow::Error::msg)?;
    let device = train::parse_device(&args.device)?;
    let (c, h, _) = kind.image_shape();
    let net_cfg = Nb201Config {
        arch,
        channels: args.channels,
        cells_per_stage: args.cells,
        num_classes: kind.num_classes(),
        in_channels: c,
        input_size: h,
    };
    net_cfg.validate()?;
    let cfg = args.train_config(kind);
    cfg.validate()?;
    if let Some(out) = &args.out {
        check_out(out)?;
    }
    let root = data::data_root(args.data.data_dir.as_deref());
    let dataset = data::open(kind, &root, !args.data.no_download)?;
    let held;
    let splits = match select {
        Select::Valid => {
            held = data::search_split(&dataset).map_err(anyhow::Error::msg)?;
            Splits {
                kind,
                train: &held.train,
                valid: Some(&held.test),
                test: Some(&dataset.test),
            }
        }
        Select::Last => Splits {
            kind,
            train: &dataset.train,
            valid: None,
            test: Some(&dataset.test),
        },
    };
    let valid_n = splits.valid.map_or(String::new(), |v| format!(" / {} validation", v.n));
    err_line(&format!(
        "training {arch} on {} ({} train{valid_n} / {} test images) for {} epoch(s) on {}, keeping {}; {} params, {:.2} MFLOPs",
        kind.name(),
        splits.train.n,
        dataset.test.n,
        cfg.epochs,
        args.device,
        match select {
            Select::Valid => "the best epoch on validation",
            Select::Last => "the last epoch",
        },
        net_cfg.param_count(),
        net_cfg.flops() / 1e6
    ));
    let weights = args.out.as_ref().map(|d| d.join(WEIGHTS_FILE));
    let mut printer = ProgressPrinter::new(cfg.epochs);
    let report = train::train(&net_cfg, &cfg, &splits, select, &device, weights.as_deref(), &mut |p| printer.show(p))?;
    let mut json = serde_json::to_value(&report)?;
    json["task"] = Value::from(kind.name());
    json["config"]["channels"] = Value::from(args.channels);
    json["config"]["cells"] = Value::from(args.cells);
    if let Some(dir) = &args.out {
        write_model_folder(dir, kind, net_cfg, &report, &dataset, &root)?;
        let path = dir.join("train.json");
        std::fs::write(&path, serde_json::to_string_pretty(&json)?).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        out_line(&serde_json::to_string(&json)?);
    } else {
        err_line(&summary(&report));
    }
    Ok(())
}

/// `--out DIR` must not hold a model already (checked before the training).
fn check_out(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("{} exists and is not a directory", out.display());
    }
    for name in [SPEC_FILE, WEIGHTS_FILE] {
        if out.join(name).exists() {
            bail!("{} already holds a model ({name}): choose another --out", out.display());
        }
    }
    Ok(())
}

/// The kept weights (already at `dir/model.safetensors`) as a model folder: `model.json`.
fn write_model_folder(dir: &Path, kind: DatasetKind, cfg: Nb201Config, report: &TrainReport, dataset: &data::Dataset, root: &Path) -> Result<()> {
    let data_dir = data::locate(kind, root).unwrap_or_else(|| root.to_path_buf());
    let spec = ModelSpec::new(ModelFacts {
        kind,
        cfg,
        params: report.params,
        valid_accuracy: report.valid_acc,
        source: json!({
            "command": "train",
            "select": report.select,
            "epoch": report.selected_epoch,
            "test_accuracy": report.test_acc,
            "train": report.config,
        }),
        data: Some(DataRecord::of(dataset, &data_dir)),
    });
    Ok(spec.write(dir)?)
}

/// The last line of a training run.
fn summary(r: &TrainReport) -> String {
    let pct = |a: Option<f64>| a.map_or("-".to_string(), |a| format!("{a:.2} %"));
    let kept = match r.select {
        Select::Valid => format!("kept epoch {} (validation {})", r.selected_epoch, pct(r.valid_acc)),
        Select::Last => format!("kept the last epoch ({})", r.selected_epoch),
    };
    format!("{kept}: test accuracy {}, {:.1} s on {}", pct(r.test_acc), r.train_seconds, r.device)
}

/// Progress on stderr: a line per epoch, and within an epoch a line every few seconds.
struct ProgressPrinter {
    epochs: usize,
    every: Duration,
    last: Instant,
}

impl ProgressPrinter {
    fn new(epochs: usize) -> Self {
        let secs = std::env::var("AUTOAGENT_PROGRESS_SECS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .unwrap_or(PROGRESS_SECS);
        ProgressPrinter {
            epochs,
            every: Duration::from_secs_f64(secs),
            last: Instant::now(),
        }
    }

    fn show(&mut self, p: Progress) {
        match p {
            Progress::Batch { epoch, batch, batches, loss } => {
                if batch < batches && self.last.elapsed() >= self.every {
                    err_line(&format!("epoch {epoch}/{}  batch {batch}/{batches}  loss {loss:.4}", self.epochs));
                    self.last = Instant::now();
                }
            }
            Progress::Epoch(e) => {
                err_line(&epoch_line(e, self.epochs));
                self.last = Instant::now();
            }
        }
    }
}

fn epoch_line(e: &EpochReport, epochs: usize) -> String {
    let valid = e.valid_acc.map_or(String::new(), |v| format!("  valid {v:6.2}%"));
    format!(
        "epoch {:>3}/{epochs}  loss {:.4}  train {:6.2}%{valid}  lr {:.5}  {:.1}s",
        e.epoch, e.train_loss, e.train_acc, e.lr, e.seconds
    )
}
