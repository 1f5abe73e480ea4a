//! Reading a run directory: its run database (`run.db`), opened for reading without the writer's
//! lock, so a live run can be read too.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use autoagent_evaluator::data::DatasetKind;
use autoagent_evaluator::net::Nb201Config;
use serde_json::Value;

use super::ReportError;
use crate::error_context::Context;
use crate::history::{FailedProposal, Origin};
use crate::llm::Exchange;
use crate::runner::{Spent, Summary};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, TrialRecord};

/// Everything the report shows, read from one run database.
pub(crate) struct Run {
    pub(crate) status: String,
    pub(crate) config: Value,
    pub(crate) seed: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) summary: Option<Summary>,
    pub(crate) trials: Vec<TrialRecord>,
    pub(crate) exchanges: Vec<Exchange>,
    pub(crate) failed: Vec<FailedProposal>,
    /// Proposals the LLM made that were kept (recorded proposals with an LLM origin).
    pub(crate) llm_proposals: usize,
    /// Stored proxy scores by (arch, proxy).
    pub(crate) scores: BTreeMap<(String, String), Option<f64>>,
    /// Milliseconds of all stored proxy scores.
    pub(crate) scores_ms: f64,
    /// Proxy seconds of each round (index = round), when the run recorded them.
    pub(crate) round_proxy_seconds: Option<Vec<f64>>,
    /// Device seconds of work lost to kills, as the run database records them as they are spent.
    pub(crate) lost_seconds: f64,
}

fn lock_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Whether a writer holds the run database's lock now.
fn writer_alive(db: &Path) -> bool {
    let Ok(f) = File::open(lock_path(db)) else {
        return false;
    };
    match f.try_lock_shared() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// The status shown: `finished`, `running` (stored as running and its writer is alive),
/// `interrupted` (stored as running, nobody writing), or whatever else was stored.
pub(crate) fn status_of(stored: Option<&str>, db: &Path) -> String {
    match stored {
        Some("running") if writer_alive(db) => "running".into(),
        Some("running") => "interrupted".into(),
        Some(s) => s.into(),
        None => "unknown".into(),
    }
}

/// Open `dir/run.db` for reading, with one-line errors for what is not a run directory.
pub(crate) fn open_run_db(dir: &Path) -> Result<SqliteStore, ReportError> {
    if !dir.exists() {
        return Err(ReportError::Invalid(format!("run directory {} does not exist", dir.display())));
    }
    if !dir.is_dir() {
        return Err(ReportError::Invalid(format!("{} is not a directory", dir.display())));
    }
    let db = dir.join("run.db");
    if !db.is_file() {
        return Err(ReportError::Invalid(format!(
            "{} holds no run database (run.db): not a run directory",
            dir.display()
        )));
    }
    Ok(SqliteStore::open_read(&db)?)
}

/// The stored summary of a finished run; `None` (with a warning) when it does not parse.
fn summary_of(store: &SqliteStore, db: &Path) -> Result<Option<Summary>, ReportError> {
    let Some(text) = store.meta("summary")? else {
        return Ok(None);
    };
    match serde_json::from_str::<Summary>(&text) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            tracing::warn!("{}: the stored summary does not parse ({e}); recomputing from the trials", db.display());
            Ok(None)
        }
    }
}

pub(crate) fn load(dir: &Path) -> Result<Run, ReportError> {
    let store = open_run_db(dir)?;
    let db = dir.join("run.db");
    let config = match store.meta("config")? {
        Some(text) => serde_json::from_str(&text).with_context(|| format!("{}: the stored config is not JSON", db.display()))?,
        None => Value::Null,
    };
    let summary = summary_of(&store, &db)?;
    let round_proxy_seconds = store.meta("round_proxy_seconds")?.and_then(|t| serde_json::from_str::<Vec<f64>>(&t).ok());
    let stored_scores = store.proxy_scores()?;
    let scores_ms = stored_scores.iter().fold(0.0, |a, s| a + s.ms);
    let scores = stored_scores.into_iter().map(|s| ((s.candidate, s.proxy), s.value)).collect();
    let llm_proposals = store.proposals()?.iter().filter(|p| matches!(p.proposal.origin, Origin::Llm { .. })).count();
    Ok(Run {
        status: status_of(store.meta("status")?.as_deref(), &db),
        config,
        seed: store.meta("seed")?,
        version: store.meta("version")?,
        summary,
        trials: store.trials()?,
        exchanges: store.exchanges()?,
        failed: store.failed()?,
        llm_proposals,
        scores,
        scores_ms,
        round_proxy_seconds,
        lost_seconds: Spent::of(&store).map_or(0.0, |s| s.lost_seconds),
    })
}

/// The network a configuration builds on `task` (its cell at its width and depth, C = 16,
/// N = 5 where it has none; the task's classes and image size).
pub(crate) fn net_for(task: &str, config: &crate::configspace::Config) -> Nb201Config {
    let (classes, channels, side) = match task.strip_prefix("nb201:") {
        Some("cifar100") => (100, 3, 32),
        Some("imagenet16") | Some("imagenet16-120") => (120, 3, 16),
        Some(_) => (10, 3, 32),
        None => match DatasetKind::from_name(task) {
            Some(k) => {
                let (c, h, _) = k.image_shape();
                (k.num_classes(), c, h)
            }
            None => (10, 3, 32),
        },
    };
    let v = crate::configspace::VisionConfig::lenient(config);
    Nb201Config {
        num_classes: classes,
        in_channels: channels,
        input_size: side,
        channels: v.width,
        cells_per_stage: v.depth,
        ..Nb201Config::new(v.arch)
    }
}

/// Completed trials with an accuracy, best first: those trained longest first (as the run
/// ranks them), then by accuracy (ties: the earlier trial).
pub(crate) fn ranked(trials: &[TrialRecord]) -> Vec<&TrialRecord> {
    let mut v: Vec<&TrialRecord> = trials.iter().filter(|r| r.trial.accuracy.is_some()).collect();
    v.sort_by(|a, b| {
        b.trial
            .epochs
            .cmp(&a.trial.epochs)
            .then(b.trial.accuracy.partial_cmp(&a.trial.accuracy).unwrap_or(std::cmp::Ordering::Equal))
            .then(a.trial.id.cmp(&b.trial.id))
    });
    v
}
