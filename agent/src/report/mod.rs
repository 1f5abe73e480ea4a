//! Reports on run directories (`autoagent report RUN_DIR`) and what `autoagent ls` lists
//! ([`list`]), read from their run databases (`run.db`) without the writer's lock, so both work
//! on a live run too.
//!
//! The report has the run's status and configuration, a leaderboard by validation accuracy (with
//! each architecture's parameters and FLOPs and its proxy scores), the budget used, LLM usage,
//! the count of trials by state, and SVG plots drawn with `plotters`: best validation accuracy
//! against evaluated architectures and against cumulative device time, each proxy's score
//! against accuracy (with Spearman's ρ), and accuracy against parameters with the Pareto front.
//! It is written as Markdown, one self-contained HTML page, or one JSON object ([`Format`]).

mod build;
mod charts;
mod document;
mod format;
mod html;
pub mod list;
mod markdown;
mod plots;
mod run;
mod tables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};

use crate::error_context::{Context, Failed};
use crate::store::StoreError;

/// Why a report or a listing could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Not a run directory (or not a directory), said in one line.
    #[error("{0}")]
    Invalid(String),
    /// A plot that `plotters` could not draw.
    #[error("cannot draw the plot {key}: {reason}")]
    Plot {
        /// The plot's name (its file name without `.svg`).
        key: String,
        /// What `plotters` said.
        reason: String,
    },
    /// The run database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file that cannot be read or written, or does not parse.
    #[error(transparent)]
    Failed(#[from] Failed),
    /// JSON output.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// The output of `autoagent report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Markdown, its plots linked.
    Markdown,
    /// One self-contained HTML page, its plots inline.
    Html,
    /// One JSON object.
    Json,
}

/// What `autoagent report` is asked.
pub struct ReportOptions {
    /// The run directory (the one holding run.db).
    pub run_dir: PathBuf,
    /// The folder for the plots (SVG files) and a copy of the Markdown or HTML report.
    pub out: PathBuf,
    /// The output.
    pub format: Format,
}

/// The report of a run directory, its plots written into `opts.out`, and (Markdown and HTML)
/// a copy of it beside them (`report.md`, whose links are the plots' file names, or
/// `report.html`). Returns the text for stdout: Markdown linking the plots by their paths as
/// given, the HTML page, or the JSON object on one line.
pub fn report(opts: &ReportOptions) -> Result<String, ReportError> {
    let run = run::load(&opts.run_dir)?;
    let report = build::build(&opts.run_dir, &opts.out, &run)?;
    let out = &opts.out;
    match opts.format {
        Format::Json => Ok(format!("{}\n", report.json())),
        Format::Html => {
            let page = html::html(&report);
            save(&out.join("report.html"), &page)?;
            Ok(page)
        }
        Format::Markdown => {
            let saved = markdown::markdown(&report, &|p| p.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()));
            save(&out.join("report.md"), &saved)?;
            Ok(markdown::markdown(&report, &|p| p.path.display().to_string()))
        }
    }
}

fn save(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A row of the leaderboard.
#[derive(Serialize, Clone)]
struct Row {
    rank: usize,
    trial: usize,
    /// Its cell (empty without one).
    arch: String,
    /// Its whole configuration on one line ([`crate::configspace::Config::line`]).
    config: String,
    origin: String,
    /// Epochs of its last rung.
    epochs: usize,
    /// The loop's score (validation accuracy, or the metric oriented: larger is better).
    accuracy: f64,
    test_accuracy: Option<f64>,
    /// The validation metric as the user reads it (a loss not negated).
    value: f64,
    params_m: f64,
    flops_m: f64,
    proxies: BTreeMap<String, Option<f64>>,
    seconds: f64,
}

#[derive(Serialize)]
struct BudgetUse {
    /// The limit, as text.
    limit: String,
    /// Share of the limit used (`None` when the limit is unknown).
    used: Option<f64>,
    trials: usize,
    rounds: usize,
    device_seconds: f64,
    proxy_seconds: f64,
    overrun_seconds: Option<f64>,
    stopped: Option<String>,
    /// Taken from the stored summary (finished runs) rather than recomputed from the trials.
    from_summary: bool,
}

#[derive(Serialize)]
struct LlmUse {
    exchanges: usize,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    seconds: f64,
    valid_proposals: usize,
    invalid_proposals: usize,
    /// valid / (valid + invalid); `None` when the LLM proposed nothing.
    valid_share: Option<f64>,
    from_summary: bool,
}

#[derive(Serialize)]
struct ProxyStat {
    name: String,
    /// Spearman's ρ between the score and the validation accuracy (`None` when undefined).
    rho: Option<f64>,
    /// Trials with both a finite score and an accuracy.
    n: usize,
    log_x: bool,
    plot: Option<String>,
}

/// A plot written to `path`.
struct Plot {
    key: String,
    caption: String,
    path: PathBuf,
    svg: String,
}

/// Everything a report shows.
struct Report {
    name: String,
    run_dir: PathBuf,
    status: String,
    task: String,
    strategy: String,
    llm_backend: Option<String>,
    seed: Option<String>,
    version: Option<String>,
    stopped: Option<String>,
    trials_total: usize,
    complete: usize,
    leaderboard: Vec<Row>,
    proxy_names: Vec<String>,
    budget: BudgetUse,
    llm: LlmUse,
    states: BTreeMap<String, usize>,
    proxies: Vec<ProxyStat>,
    plots: Vec<Plot>,
    /// The run's final model (the best configuration retrained), when it has one.
    final_model: Option<crate::final_model::FinalModel>,
    /// How scores are shown (accuracy in %, or a tabular task's metric).
    score: crate::score::ScoreLabel,
    /// Whether candidates are networks (parameters, FLOPs and the Pareto plot apply).
    networks: bool,
    /// A tabular run's final ensemble, when it was built.
    ensemble: Option<crate::tabular_task::FinalEnsemble>,
}

impl Report {
    /// The report as one JSON object.
    fn json(&self) -> Value {
        json!({
            "run_dir": self.run_dir.display().to_string(),
            "status": self.status,
            "task": self.task,
            "strategy": self.strategy,
            "llm_backend": self.llm_backend,
            // A number, as the run's --seed (older records may hold something else: kept as text).
            "seed": self.seed.as_deref().map(|t| t.parse::<u64>().map_or_else(|_| Value::from(t), Value::from)),
            "version": self.version,
            "trials": self.trials_total,
            "complete": self.complete,
            "leaderboard": self.leaderboard,
            "states": self.states,
            "budget": self.budget,
            "llm": self.llm,
            "proxies": self.proxies,
            "final_model": self.final_model,
            "score": self.score,
            "ensemble": self.ensemble.as_ref().map(ensemble_json),
            "plots": self.plots.iter().map(|p| (p.key.clone(), Value::from(p.path.display().to_string()))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// A final ensemble in the JSON report: its scores and members, without the fitted models.
fn ensemble_json(e: &crate::tabular_task::FinalEnsemble) -> Value {
    json!({
        "metric": e.metric,
        "validation_score": e.validation_score,
        "test_score": e.test_score,
        "best": e.best,
        "members": e.members.iter().map(|m| json!({
            "trial": m.trial,
            "model": m.pipeline.pipeline.learner.family(),
            "weight": m.weight,
            "validation_score": m.validation_score,
            "test_score": m.test_score,
        })).collect::<Vec<_>>(),
    })
}
