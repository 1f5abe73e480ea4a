//! `autoagent export` and `autoagent predict`: the arguments, handed to
//! `autoagent_agent::export` (which documents the model folder), and what it returns printed.

use std::path::PathBuf;

use anyhow::{bail, Result};
use autoagent_agent::export::{self, CsvPredictOptions, ExportOptions, LoadedModel, SplitOptions};
use autoagent_evaluator::train::parse_device;
use candle_core::Device;
use clap::{ArgGroup, Args};

use crate::output::{err_line, out_line, try_out_line};

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
    if export::is_tabular_run(&args.run_dir) {
        let (_, summary) = export::export_tabular(&args.run_dir, args.trial, &args.out, args.force)?;
        out_line(&summary);
        return Ok(());
    }
    let opts = ExportOptions {
        run_dir: args.run_dir,
        trial: args.trial,
        out: args.out,
        force: args.force,
    };
    let exported = export::export_trial(&opts, &mut |w| err_line(w))?;
    out_line(&exported.summary());
    Ok(())
}

/// `autoagent predict`.
#[derive(Args)]
#[command(group(ArgGroup::new("input").required(true).args(["images", "split", "csv"])))]
pub struct PredictArgs {
    /// The model folder (model.json, model.safetensors) that `export` or `train --out` wrote.
    #[arg(long)]
    model: PathBuf,
    /// Predict every row of this CSV file with a tabular model (columns by name, as in training).
    #[arg(long, conflicts_with_all = ["images", "split"])]
    csv: Option<PathBuf>,
    /// Write the CSV predictions to this file instead of standard output.
    #[arg(long, requires = "csv")]
    out: Option<PathBuf>,
    /// The fields the CSV reads as missing, separated by commas (default: the empty field, NA, ?
    /// and NaN; give what the run was given).
    #[arg(long, requires = "csv")]
    na: Option<String>,
    /// Threads of the tabular model's learners.
    #[arg(long, default_value_t = 1)]
    threads: usize,
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

/// `autoagent predict --model DIR (--images FOLDER | --split S ...)`.
pub fn cmd_predict(args: PredictArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(csv) = &args.csv {
        return predict_csv(csv, &args);
    }
    let device = parse_device(&args.device)?;
    let m = export::load_model_dir(&args.model, &device)?;
    let lines = match (&args.images, &args.split) {
        (Some(path), _) => export::predict_images(&m, path, args.batch_size, &device)?
            .iter()
            .map(|p| p.line(args.json))
            .collect(),
        (None, Some(split)) => predict_split(&m, split, &args, &device)?,
        (None, None) => bail!("give --images FOLDER or --split test|train|valid"),
    };
    for line in &lines {
        if !try_out_line(line)? {
            break;
        }
    }
    Ok(())
}

/// The lines of `predict --split`.
fn predict_split(m: &LoadedModel, split: &str, args: &PredictArgs, device: &Device) -> Result<Vec<String>> {
    let opts = SplitOptions {
        model_dir: args.model.clone(),
        task: args.task.clone(),
        split: split.parse()?,
        data_dir: args.data_dir.clone(),
        force: args.force,
        download: !args.no_download,
        limit: args.limit,
        batch_size: args.batch_size,
    };
    Ok(export::measure_split(m, &opts, device, &mut |n| err_line(n))?.lines(args.json))
}

/// `predict --model DIR --csv FILE [--out FILE]`: the predictions as CSV, warnings and the
/// metrics (when the file has the target column) on standard error.
fn predict_csv(csv: &std::path::Path, args: &PredictArgs) -> Result<()> {
    if !export::is_tabular_model(&args.model) {
        bail!(
            "{} holds no tabular model (export a csv: run with autoagent export RUN_DIR --best --out DIR)",
            args.model.display()
        );
    }
    let p = export::predict_csv(&CsvPredictOptions {
        model_dir: args.model.clone(),
        csv: csv.to_path_buf(),
        na: args.na.clone(),
        threads: args.threads.max(1),
    })?;
    for w in &p.warnings {
        err_line(&format!("warning: {w}"));
    }
    match &args.out {
        Some(path) => {
            let mut f = std::fs::File::create(path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            p.write_csv(&mut f)?;
            err_line(&format!("{} predictions written to {}", p.rows.len(), path.display()));
        }
        None => p.write_csv(&mut std::io::stdout().lock())?,
    }
    for (metric, value, rows) in &p.scores {
        err_line(&format!("{metric} {value:.4} on the {rows} row(s) with a target value"));
    }
    Ok(())
}
