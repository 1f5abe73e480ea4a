//! Exporting a trained trial of a run directory as a model folder.

use std::path::{Path, PathBuf};

use autoagent_evaluator::data::{self, DatasetKind};
use autoagent_evaluator::net::{Model, Nb201Config};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use super::spec::{DataRecord, ModelFacts, ModelSpec, WEIGHTS_FILE};
use super::weights::{load_model, skeleton_of};
use super::{invalid, ExportError};
use crate::error_context::Context;
use crate::final_model::FinalModel;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, TrialRecord, TrialState};
use crate::trial::WEIGHTS_FILE as TRIAL_WEIGHTS;

/// What `autoagent export` is asked.
pub struct ExportOptions {
    /// The run directory (holds run.db).
    pub run_dir: PathBuf,
    /// The trial to export (its number in the run); `None`: the best complete trial by
    /// validation accuracy.
    pub trial: Option<usize>,
    /// The model folder to write.
    pub out: PathBuf,
    /// Write into a folder that is not empty (model.safetensors and model.json are replaced).
    pub force: bool,
}

/// A model folder written by [`export_trial`].
pub struct Exported {
    /// The trial exported.
    pub trial: usize,
    /// The run directory it came from.
    pub run_dir: PathBuf,
    /// The model folder.
    pub out: PathBuf,
    /// Its `model.json`.
    pub spec: ModelSpec,
    /// Whether it is the run's final model (the best configuration retrained).
    pub final_model: bool,
    /// Its test accuracy (%), where the run measured it.
    pub test_accuracy: Option<f64>,
}

impl Exported {
    /// The line that says what was exported where.
    pub fn summary(&self) -> String {
        let s = &self.spec;
        let (what, acc) = match (self.final_model, self.test_accuracy) {
            (true, Some(t)) => ("the final model (retrained) of trial", format!("test accuracy {t:.2} %")),
            _ => (
                "trial",
                format!(
                    "validation accuracy {}",
                    s.valid_accuracy.map(|a| format!("{a:.2} %")).unwrap_or_else(|| "unknown".into())
                ),
            ),
        };
        format!(
            "exported {what} {} of {} ({}, {}, {acc}, {} params) to {}",
            self.trial,
            self.run_dir.display(),
            s.arch,
            s.task,
            s.params,
            self.out.display()
        )
    }
}

/// The run's store, its stored config and its trials.
fn open_run(dir: &Path) -> Result<(SqliteStore, Value, Vec<TrialRecord>), ExportError> {
    if !dir.is_dir() {
        return invalid(format!("run directory {} does not exist", dir.display()));
    }
    let db = dir.join("run.db");
    if !db.is_file() {
        return invalid(format!("{} holds no run database (run.db): not a run directory", dir.display()));
    }
    let store = SqliteStore::open_read(&db)?;
    let config: Value = match store.meta("config")? {
        Some(text) => serde_json::from_str(&text).with_context(|| format!("{}: the stored config is not JSON", db.display()))?,
        None => Value::Null,
    };
    let trials = store.trials()?;
    Ok((store, config, trials))
}

/// A table-lookup run has no weights: the error says how to train the architecture instead.
fn refuse_table_run(dir: &Path, run_task: Option<&str>, trials: &[TrialRecord]) -> Result<(), ExportError> {
    let Some(table) = run_task.and_then(|t| t.strip_prefix("nb201:")) else {
        return Ok(());
    };
    let arch = best_trial(trials)
        .and_then(|r| r.trial.config.cell("cell"))
        .map(|a| a.to_string())
        .unwrap_or_else(|| "ARCH".into());
    let dataset = match table {
        "cifar100" => "cifar100",
        _ => "cifar10",
    };
    invalid(format!(
        "{} is a table-lookup run (task nb201:{table}): its trials were looked up in the NB201 table and have no trained weights to export; train the architecture first: autoagent train --arch '{arch}' --task {dataset} --out DIR (a model folder for predict --model DIR)",
        dir.display()
    ))
}

/// The trial `n` (complete), or the best.
fn choose_trial<'a>(dir: &Path, trials: &'a [TrialRecord], n: Option<usize>) -> Result<&'a TrialRecord, ExportError> {
    let Some(n) = n else {
        return best_trial(trials).ok_or_else(|| ExportError::Invalid(format!("{} has no complete trial to export", dir.display())));
    };
    let Some(r) = trials.iter().find(|r| r.trial.id == n) else {
        let ids: Vec<String> = trials.iter().map(|r| r.trial.id.to_string()).collect();
        return invalid(format!(
            "{} has no trial {n} (its trials: {})",
            dir.display(),
            if ids.is_empty() { "none".into() } else { ids.join(", ") }
        ));
    };
    if r.trial.state != TrialState::Complete {
        return invalid(format!(
            "trial {n} of {} is {}, not complete: only complete trials are exported",
            dir.display(),
            r.trial.state.name()
        ));
    }
    Ok(r)
}

/// The complete trial trained longest (a scheduler's incumbent), then with the best validation
/// accuracy (the lowest number among equals).
fn best_trial(trials: &[TrialRecord]) -> Option<&TrialRecord> {
    trials
        .iter()
        .filter(|r| r.trial.state == TrialState::Complete && r.trial.accuracy.is_some())
        .max_by(|a, b| {
            a.trial
                .epochs
                .cmp(&b.trial.epochs)
                .then(a.trial.accuracy.partial_cmp(&b.trial.accuracy).unwrap_or(std::cmp::Ordering::Equal))
                .then(b.trial.id.cmp(&a.trial.id))
        })
}

/// The run's final model when it was trained ([`crate::final_model`]): the record of its
/// source trial with the final model's files, and the final model.
fn final_record(store: &SqliteStore, trials: &[TrialRecord]) -> Result<Option<(TrialRecord, FinalModel)>, ExportError> {
    let Some(text) = store.meta("final_model")? else {
        return Ok(None);
    };
    let f: FinalModel = serde_json::from_str(&text).with_context(|| "the run's final model record is not readable".to_string())?;
    if !f.is_complete() {
        return Ok(None);
    }
    let Some(source) = trials.iter().find(|r| r.trial.id == f.trial) else {
        return Ok(None);
    };
    let record = TrialRecord {
        artefacts: f.artefacts.clone(),
        ..source.clone()
    };
    Ok(Some((record, f)))
}

/// The trial's spec (task, training configuration), `null` when it kept none.
fn trial_spec(dir: &Path, record: &TrialRecord) -> Result<Value, ExportError> {
    let Some(rel) = record.artefacts.iter().find(|a| a.ends_with("spec.json")) else {
        return Ok(Value::Null);
    };
    let path = dir.join(rel);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?)
}

/// The network the weights fit: the task's inputs and classes, C and N read off the weights.
fn network_of(record: &TrialRecord, kind: DatasetKind, weights: &Path) -> Result<Nb201Config, ExportError> {
    let (channels, cells_per_stage) = skeleton_of(weights)?;
    let (c, h, _) = kind.image_shape();
    let arch = record.trial.config.cell("cell").ok_or_else(|| {
        ExportError::Invalid(format!(
            "trial {} has no cell to build its network from ({})",
            record.trial.id, record.trial.config
        ))
    })?;
    let cfg = Nb201Config {
        arch,
        channels,
        cells_per_stage,
        num_classes: kind.num_classes(),
        in_channels: c,
        input_size: h,
    };
    cfg.validate()?;
    let id = record.trial.id;
    load_model(&cfg, weights, &Device::Cpu).with_context(|| format!("the weights of trial {id} do not fit its network"))?;
    Ok(cfg)
}

/// The output folder: created, and empty unless `force`.
pub(super) fn prepare_out(out: &Path, force: bool) -> Result<(), ExportError> {
    if out.exists() {
        if !out.is_dir() {
            return invalid(format!("{} exists and is not a directory", out.display()));
        }
        let non_empty = std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_some();
        if non_empty && !force {
            return invalid(format!("{} is not empty (pass --force to write into it anyway)", out.display()));
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    Ok(())
}

/// Copy `weights` into `out` (through a temporary file); the copy must be the trial's file and
/// build a network that gives finite logits.
fn copy_weights(weights: &Path, out: &Path, cfg: &Nb201Config) -> Result<Model, ExportError> {
    let model_path = out.join(WEIGHTS_FILE);
    let tmp = out.join(".model.safetensors.tmp");
    std::fs::copy(weights, &tmp).with_context(|| format!("cannot copy {} to {}", weights.display(), tmp.display()))?;
    std::fs::rename(&tmp, &model_path).with_context(|| format!("cannot write {}", model_path.display()))?;
    let same = std::fs::read(weights)? == std::fs::read(&model_path).with_context(|| format!("cannot read {}", model_path.display()))?;
    if !same {
        return invalid(format!("{} differs from {} after copying", model_path.display(), weights.display()));
    }
    let model = load_model(cfg, &model_path, &Device::Cpu).with_context(|| format!("the exported {} does not load", model_path.display()))?;
    let probe = Tensor::zeros((1, cfg.in_channels, cfg.input_size, cfg.input_size), DType::F32, &Device::Cpu)?;
    let logits = model.net.forward_t(&probe, false)?.flatten_all()?.to_vec1::<f32>()?;
    if logits.len() != cfg.num_classes || logits.iter().any(|v| !v.is_finite()) {
        return invalid(format!("the exported network gives no finite logits for {} classes", cfg.num_classes));
    }
    Ok(model)
}

/// The epoch and validation accuracy of the weights: a trial keeps its last epoch's, whose
/// accuracy is the trial's (the number the run ranked it on); a trial of an earlier build kept
/// its best epoch's (`best.safetensors`), whose accuracy is that epoch's.
fn accuracy_of(store: &SqliteStore, record: &TrialRecord, weights_rel: &str) -> Result<(Option<usize>, Option<f64>), ExportError> {
    let metrics = store.metrics(record.trial.id)?;
    let valid: Vec<(usize, f64)> = metrics.iter().filter(|m| m.name == "valid_acc").map(|m| (m.epoch, m.value)).collect();
    if weights_rel.ends_with(TRIAL_WEIGHTS) {
        return Ok((valid.iter().map(|v| v.0).max(), record.trial.accuracy));
    }
    let best = valid.iter().fold(None::<(usize, f64)>, |best, &(e, v)| match best {
        Some((_, b)) if b >= v => best,
        _ => Some((e, v)),
    });
    Ok((best.map(|b| b.0), best.map(|b| b.1).or(record.trial.accuracy)))
}

/// The trial's weights file: relative to the run directory, and joined to it.
fn weights_of(dir: &Path, record: &TrialRecord) -> Result<(String, PathBuf), ExportError> {
    let id = record.trial.id;
    let weights_rel = record
        .artefacts
        .iter()
        .find(|a| a.ends_with(".safetensors"))
        .cloned()
        .unwrap_or_else(|| format!("trials/{id:04}/{TRIAL_WEIGHTS}"));
    let weights = dir.join(&weights_rel);
    if !weights.is_file() {
        return invalid(format!("trial {id} of {} has no weights ({} is missing)", dir.display(), weights.display()));
    }
    Ok((weights_rel, weights))
}

/// The record of the data the trial trained on (the trial spec's data folder, else the run's,
/// else the default root), where it still is; `warn` hears when it is not.
fn trial_data(kind: DatasetKind, spec: &Value, config: &Value, warn: &mut dyn FnMut(&str)) -> Option<DataRecord> {
    let data_root = match spec["data_dir"].as_str().or(config["args"]["data_dir"].as_str()) {
        Some(d) => PathBuf::from(d),
        None => data::data_root(None),
    };
    let data_record = DataRecord::read(kind, &data_root);
    if data_record.is_none() {
        warn(&format!(
            "warning: the run's {kind} data is not under {} any more: model.json records no data fingerprint",
            data_root.display()
        ));
    }
    data_record
}

/// Export a complete trial of a run (`opts.trial`, else the best) as a model folder in
/// `opts.out`: its weights copied and checked, and `model.json`. `warn` hears what is missing
/// but does not stop the export (the run's data gone: no data fingerprint).
pub fn export_trial(opts: &ExportOptions, warn: &mut dyn FnMut(&str)) -> Result<Exported, ExportError> {
    let dir = &opts.run_dir;
    let (store, config, trials) = open_run(dir)?;
    let run_task = config["args"]["task"].as_str().map(str::to_string);
    refuse_table_run(dir, run_task.as_deref(), &trials)?;
    // The best model of a run is its final model when it has one.
    let final_model = match opts.trial {
        None => final_record(&store, &trials)?,
        Some(_) => None,
    };
    let record = match &final_model {
        Some((r, _)) => r,
        None => choose_trial(dir, &trials, opts.trial)?,
    };
    let id = record.trial.id;
    let spec = trial_spec(dir, record)?;
    let Some(task) = run_task.or_else(|| spec["task"].as_str().map(str::to_string)) else {
        return invalid(format!("{}: the run records no task", dir.display()));
    };
    let Some(kind) = DatasetKind::from_name(&task) else {
        return invalid(format!("{}: task '{task}' has no trained weights to export", dir.display()));
    };
    let (weights_rel, weights) = weights_of(dir, record)?;
    let cfg = network_of(record, kind, &weights)?;
    prepare_out(&opts.out, opts.force)?;
    let model = copy_weights(&weights, &opts.out, &cfg)?;
    let (epoch, valid_accuracy) = match &final_model {
        // Trained on the validation hold-out too: no validation accuracy.
        Some((_, f)) => (Some(f.epochs), None),
        None => accuracy_of(&store, record, &weights_rel)?,
    };
    let test_accuracy = final_model.as_ref().map_or(record.trial.test_accuracy, |(_, f)| f.test_accuracy);
    let data_record = trial_data(kind, &spec, &config, warn);
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
            "test_accuracy": test_accuracy,
            "final_model": final_model.is_some(),
            "train": spec["train"],
        }),
        data: data_record,
    });
    spec_out.write(&opts.out)?;
    Ok(Exported {
        final_model: final_model.is_some(),
        test_accuracy,
        trial: id,
        run_dir: dir.clone(),
        out: opts.out.clone(),
        spec: spec_out,
    })
}
