//! The final model of a tabular (`csv:PATH`) run as a model folder, and predictions with it on
//! the rows of a CSV file.
//!
//! # The tabular model folder
//!
//! `export RUN_DIR --best --out DIR` on a tabular run writes one file, `model.json`:
//!
//! ```json
//! {
//!   "format": "autoagent-tabular-model",
//!   "format_version": 1,
//!   "model": "ensemble",
//!   "schema": {
//!     "features": [{"name": "checking_balance", "kind": "categorical"}, {"name": "months_loan_duration", "kind": "numeric"}, ...],
//!     "dropped": [{"name": "id", "reason": "identifier"}],
//!     "target": {"name": "target", "problem": "binary", "classes": ["1", "2"]}
//!   },
//!   "metric": "roc_auc", "validation_score": 0.79, "test_score": 0.78,
//!   "members": [{"trial": 3, "weight": 0.6, "validation_score": 0.78, "test_score": 0.77,
//!                "pipeline": {"pipeline": {...}, "preprocessor": {...}, "model": {...}}}, ...],
//!   "source": {"run_dir": "/abs/runs/run-1", "best": 3},
//!   "created_by": "autoagent 0.1.0"
//! }
//! ```
//!
//! `model` is `ensemble` (the run's final model: the greedy ensemble's pipelines, each refit on
//! every training row, blended with `weight`), or `pipeline` (`--trial N`: one member alone,
//! weight 1; the best single pipeline is `source.best`). A member's `pipeline` is the
//! preprocessing choices and the learner's hyperparameters (`pipeline`), the fitted
//! preprocessing (`preprocessor`: imputation values, encodings' levels and means, scaling,
//! the columns kept) and the fitted model (`model`: LightGBM's model text, a linear model's
//! coefficients, or k-NN's rows), each as serde writes the evaluator's types. Scores are the
//! task's `metric` (validation: out of fold in the search; test: the run's test rows).
//!
//! `predict --model DIR --csv FILE` takes the file's columns by name as
//! [`autoagent_evaluator::tabular::schema`] documents (a feature column the file lacks is an
//! error naming it; extra columns are ignored with a warning; unseen categories are handled by
//! each encoding) and writes a CSV: `row` (the file's 0-based data row), `prediction` (the
//! class label, or the value), and for classes one `p_<class>` probability column each. When
//! the file has the target column, the task's metrics on its rows are said too.
//!
//! A reader must refuse a `format_version` it does not know.

use std::io::Write;
use std::path::{Path, PathBuf};

use autoagent_evaluator::tabular::dataset::closest;
use autoagent_evaluator::tabular::metrics::argmax;
use autoagent_evaluator::tabular::pipeline::score;
use autoagent_evaluator::tabular::{read_csv, Metric, ReadOptions, Schema};
use serde::{Deserialize, Serialize};

use super::{invalid, ExportError};
use crate::error_context::Context;
use crate::tabular_task::{FinalEnsemble, Member, FINAL_FILE};

/// `format` of a tabular model's `model.json`.
pub const TABULAR_FORMAT: &str = "autoagent-tabular-model";

/// The `format_version` this build writes and reads.
pub const TABULAR_FORMAT_VERSION: u32 = 1;

/// A tabular model folder's `model.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TabularModel {
    /// [`TABULAR_FORMAT`].
    pub format: String,
    /// [`TABULAR_FORMAT_VERSION`].
    pub format_version: u32,
    /// `ensemble` or `pipeline`.
    pub model: String,
    /// The columns the pipelines take.
    pub schema: Schema,
    /// The task's metric.
    pub metric: Metric,
    /// Out-of-fold metric.
    pub validation_score: f64,
    /// Metric on the run's test rows, when it had some.
    pub test_score: Option<f64>,
    /// The pipelines and their weights.
    pub members: Vec<Member>,
    /// Where it came from: `run_dir`, and `best`, the trial of the best single pipeline.
    pub source: serde_json::Value,
    /// The version that wrote it.
    pub created_by: String,
}

/// Whether `run_dir` is a tabular run with a final ensemble.
pub fn is_tabular_run(run_dir: &Path) -> bool {
    run_dir.join(FINAL_FILE).is_file()
}

/// Export the final ensemble of the tabular run `run_dir`, or its member of trial `trial`
/// alone, to the model folder `out` (which must be empty unless `force`).
pub fn export_tabular(run_dir: &Path, trial: Option<usize>, out: &Path, force: bool) -> Result<(TabularModel, String), ExportError> {
    let f = FinalEnsemble::read(run_dir).map_err(ExportError::Invalid)?;
    let run_abs = std::fs::canonicalize(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    let source = serde_json::json!({"run_dir": run_abs.display().to_string(), "best": f.best});
    let model = match trial {
        None => TabularModel::new("ensemble", &f, f.validation_score, f.test_score, f.members.clone(), source),
        Some(n) => {
            let Some(m) = f.member(n) else {
                let ids: Vec<String> = f.members.iter().map(|m| m.trial.to_string()).collect();
                return invalid(format!(
                    "trial {n} of {} is not in its final ensemble, so it was not refit on every row; the members are trials {} (the best single pipeline: {})",
                    run_dir.display(),
                    ids.join(", "),
                    f.best
                ));
            };
            let alone = Member { weight: 1.0, ..m.clone() };
            TabularModel::new("pipeline", &f, m.validation_score, m.test_score, vec![alone], source)
        }
    };
    super::from_run::prepare_out(out, force)?;
    let path = out.join(super::SPEC_FILE);
    let text = serde_json::to_string_pretty(&model)?;
    let tmp = out.join(".model.json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    let summary = model.summary(run_dir, trial, out);
    Ok((model, summary))
}

impl TabularModel {
    fn new(kind: &str, f: &FinalEnsemble, validation: f64, test: Option<f64>, members: Vec<Member>, source: serde_json::Value) -> TabularModel {
        TabularModel {
            format: TABULAR_FORMAT.to_string(),
            format_version: TABULAR_FORMAT_VERSION,
            model: kind.to_string(),
            schema: f.schema.clone(),
            metric: f.metric,
            validation_score: validation,
            test_score: test,
            members,
            source,
            created_by: format!("autoagent {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// The line that says what was exported where.
    fn summary(&self, run_dir: &Path, trial: Option<usize>, out: &Path) -> String {
        let what = match trial {
            None => format!("the final ensemble ({} pipelines, refit on every training row)", self.members.len()),
            Some(n) => format!("the pipeline of trial {n} (refit on every training row)"),
        };
        let families: Vec<&str> = self.members.iter().map(|m| m.pipeline.pipeline.learner.family()).collect();
        let test = self.test_score.map_or("no test rows".to_string(), |t| format!("test {} {t:.4}", self.metric));
        format!(
            "exported {what} of {} ({}; validation {} {:.4}, {test}) to {}",
            run_dir.display(),
            families.join(" + "),
            self.metric,
            self.validation_score,
            out.display()
        )
    }

    /// Read the `model.json` of a tabular model folder.
    pub fn read(dir: &Path) -> Result<TabularModel, ExportError> {
        let path = dir.join(super::SPEC_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        if value["format"] != TABULAR_FORMAT {
            return invalid(format!(
                "{} is not a tabular model (format is {}, expected \"{TABULAR_FORMAT}\")",
                path.display(),
                value["format"]
            ));
        }
        if value["format_version"] != TABULAR_FORMAT_VERSION {
            return invalid(format!(
                "{} has format version {}; this build reads version {TABULAR_FORMAT_VERSION}",
                path.display(),
                value["format_version"]
            ));
        }
        Ok(serde_json::from_value(value).with_context(|| format!("{} is not a tabular model this build reads", path.display()))?)
    }
}

/// Whether the model folder `dir` holds a tabular model.
pub fn is_tabular_model(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(super::SPEC_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["format"] == TABULAR_FORMAT)
}

/// What `predict --csv` is asked.
pub struct CsvPredictOptions {
    /// The model folder.
    pub model_dir: PathBuf,
    /// The rows to predict.
    pub csv: PathBuf,
    /// Missing-value tokens, separated by commas (default: those of [`ReadOptions::default`]).
    pub na: Option<String>,
    /// Threads of the learners.
    pub threads: usize,
}

/// The predictions of a CSV's rows.
pub struct CsvPredictions {
    /// The header of the output (`row,prediction[,p_<class>...]`).
    pub header: Vec<String>,
    /// One line of fields a row.
    pub rows: Vec<Vec<String>>,
    /// What to tell the user (columns ignored, values taken as missing).
    pub warnings: Vec<String>,
    /// The metrics on the rows, when the file has the target column: `(metric, value, rows)`.
    pub scores: Vec<(Metric, f64, usize)>,
}

/// Predict every row of `o.csv` with the tabular model in `o.model_dir`.
pub fn predict_csv(o: &CsvPredictOptions) -> Result<CsvPredictions, ExportError> {
    let model = TabularModel::read(&o.model_dir)?;
    let frame = read_csv(&o.csv, &ReadOptions::with_na(o.na.as_deref())).map_err(|e| ExportError::Invalid(e.to_string()))?;
    let rows: Vec<usize> = (0..frame.rows).collect();
    let taken = model.schema.take(&frame, &rows);
    if let Some(first) = taken.missing.first() {
        let hint = closest(first, &frame.names()).map(|c| format!(" (did you mean '{c}'?)")).unwrap_or_default();
        let more = match taken.missing.len() {
            1 => String::new(),
            n => format!(", and {} more: {}", n - 1, taken.missing[1..].join(", ")),
        };
        return invalid(format!(
            "{} has no column '{first}', which the model was trained on{hint}{more}",
            o.csv.display()
        ));
    }
    let mut warnings = Vec::new();
    if !taken.extra.is_empty() {
        warnings.push(format!("column(s) the model does not use, ignored: {}", taken.extra.join(", ")));
    }
    for (name, n) in &taken.not_numbers {
        warnings.push(format!("column '{name}': {n} value(s) that are not numbers taken as missing"));
    }
    let blend = blend(&model, &taken.features, &rows, o.threads)?;
    let scores = target_scores(&model, &frame, &blend)?;
    let (header, lines) = lines(&model, &blend, frame.rows);
    Ok(CsvPredictions {
        header,
        rows: lines,
        warnings,
        scores,
    })
}

/// The members' weighted predictions of `rows`.
fn blend(model: &TabularModel, features: &[autoagent_evaluator::tabular::Feature], rows: &[usize], threads: usize) -> Result<Vec<f64>, ExportError> {
    let mut out: Vec<f64> = Vec::new();
    for m in &model.members {
        let p = m
            .pipeline
            .predict(features, rows, threads)
            .map_err(|e| ExportError::Invalid(format!("trial {}'s pipeline: {e}", m.trial)))?;
        if out.is_empty() {
            out = vec![0.0; p.len()];
        }
        out.iter_mut().zip(&p).for_each(|(o, q)| *o += m.weight * q);
    }
    Ok(out)
}

/// The task's metrics on the rows whose target the file gives.
fn target_scores(model: &TabularModel, frame: &autoagent_evaluator::tabular::Frame, blend: &[f64]) -> Result<Vec<(Metric, f64, usize)>, ExportError> {
    let Some(t) = frame.column(&model.schema.target.name) else {
        return Ok(Vec::new());
    };
    let rows: Vec<usize> = (0..frame.rows).filter(|&r| !t.is_missing(r)).collect();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let y = model.schema.target.values(t, &rows).map_err(|e| ExportError::Invalid(e.to_string()))?;
    let w = model.schema.target.classes.len().max(1);
    let pred: Vec<f64> = rows.iter().flat_map(|&r| blend[r * w..(r + 1) * w].to_vec()).collect();
    let all: Vec<usize> = (0..rows.len()).collect();
    let reported = model.metric.reported(model.schema.target.problem);
    Ok(reported.into_iter().map(|m| (m, score(m, &y, &all, &pred), rows.len())).collect())
}

/// The output's header and lines.
fn lines(model: &TabularModel, blend: &[f64], n: usize) -> (Vec<String>, Vec<Vec<String>>) {
    let classes = &model.schema.target.classes;
    let mut header = vec!["row".to_string(), "prediction".to_string()];
    header.extend(classes.iter().map(|c| format!("p_{c}")));
    let w = classes.len().max(1);
    let lines = (0..n)
        .map(|r| {
            let p = &blend[r * w..(r + 1) * w];
            let mut line = vec![r.to_string()];
            if classes.is_empty() {
                line.push(format!("{}", p[0]));
            } else {
                line.push(classes[argmax(p)].clone());
                line.extend(p.iter().map(|q| format!("{q:.6}")));
            }
            line
        })
        .collect();
    (header, lines)
}

impl CsvPredictions {
    /// Write the predictions as CSV to `out`.
    pub fn write_csv(&self, out: &mut dyn Write) -> Result<(), ExportError> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(&self.header)
            .map_err(|e| ExportError::Invalid(format!("cannot write the predictions: {e}")))?;
        for line in &self.rows {
            w.write_record(line)
                .map_err(|e| ExportError::Invalid(format!("cannot write the predictions: {e}")))?;
        }
        w.flush()?;
        Ok(())
    }
}
