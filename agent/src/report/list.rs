//! What `autoagent ls DIR` lists: each run directory under `DIR` with its status, strategy,
//! trials and best trial, as an aligned table, one JSON document or JSON lines.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::format::fmt_opt;
use super::run::{open_run_db, ranked, status_of};
use super::ReportError;
use crate::error_context::{one_line, Context};
use crate::store::{Store, TrialRecord};

/// One run directory as listed.
#[derive(Debug, Serialize)]
pub struct Listed {
    /// The directory's name.
    pub name: String,
    /// Its path.
    pub path: String,
    /// `finished`, `running`, `interrupted`, ... (`unreadable` when its run.db cannot be read).
    pub status: String,
    /// The run's strategy.
    pub strategy: Option<String>,
    /// The run's task.
    pub task: Option<String>,
    /// Trials recorded.
    pub trials: usize,
    /// The best validation accuracy (%).
    pub best_accuracy: Option<f64>,
    /// The architecture that reached it.
    pub best_arch: Option<String>,
    /// Why the run could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a listing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// An aligned table with a header line.
    Table,
    /// One JSON document: a list with an object per run.
    Json,
    /// One JSON object per run, one per line.
    JsonLines,
}

/// The run directories directly under `dir` (those holding `run.db`), by name; empty when
/// there are none.
pub fn list_runs(dir: &Path) -> Result<Vec<Listed>, ReportError> {
    if !dir.is_dir() {
        if dir.exists() {
            return Err(ReportError::Invalid(format!("{} is not a directory", dir.display())));
        }
        return Err(ReportError::Invalid(format!("directory {} does not exist", dir.display())));
    }
    let mut runs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.join("run.db").is_file())
        .collect();
    runs.sort();
    Ok(runs.iter().map(|p| list_one(p)).collect())
}

fn read(dir: &Path) -> Result<(String, Value, Vec<TrialRecord>), ReportError> {
    let store = open_run_db(dir)?;
    let config: Value = store.meta("config")?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
    let status = status_of(store.meta("status")?.as_deref(), &dir.join("run.db"));
    Ok((status, config, store.trials()?))
}

fn list_one(dir: &Path) -> Listed {
    let name = dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut l = Listed {
        name,
        path: dir.display().to_string(),
        status: "unreadable".into(),
        strategy: None,
        task: None,
        trials: 0,
        best_accuracy: None,
        best_arch: None,
        error: None,
    };
    match read(dir) {
        Ok((status, config, trials)) => {
            l.status = status;
            l.strategy = config["strategy"].as_str().map(String::from);
            l.task = config["args"]["task"].as_str().map(String::from);
            l.trials = trials.len();
            if let Some(best) = ranked(&trials).first() {
                l.best_accuracy = best.trial.accuracy;
                l.best_arch = Some(best.trial.config.line());
            }
        }
        Err(e) => l.error = Some(one_line(&e)),
    }
    l
}

/// The listing as text for stdout.
pub fn render(listed: &[Listed], format: ListFormat) -> Result<String, ReportError> {
    let mut out = String::new();
    match format {
        ListFormat::Json => {
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&listed)?);
        }
        ListFormat::JsonLines => {
            for l in listed {
                let _ = writeln!(out, "{}", serde_json::to_string(l)?);
            }
        }
        ListFormat::Table => table(&mut out, listed),
    }
    Ok(out)
}

/// The aligned table: names, statuses and strategies left-aligned, numbers right-aligned, the
/// best arch (or why the run is unreadable) last.
fn table(out: &mut String, listed: &[Listed]) {
    let header = ["NAME", "STATUS", "STRATEGY", "TRIALS", "BEST ACC", "BEST ARCH"].map(String::from);
    let rows: Vec<[String; 6]> = listed
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                l.status.clone(),
                l.strategy.clone().unwrap_or_else(|| "—".into()),
                l.trials.to_string(),
                fmt_opt(l.best_accuracy, 2),
                l.best_arch.clone().or_else(|| l.error.clone()).unwrap_or_else(|| "—".into()),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String; 6]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            if i == 5 {
                s.push_str(c);
            } else if i == 3 || i == 4 {
                let _ = write!(s, "{}{c}  ", " ".repeat(pad));
            } else {
                let _ = write!(s, "{c}{}  ", " ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&header));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r));
    }
}
