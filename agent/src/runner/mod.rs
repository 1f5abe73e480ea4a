//! The loop: ask the strategy for `k` candidates, drop those isomorphic to an evaluated one or
//! to an earlier candidate of the round, rank the rest with the proxies, evaluate the top
//! `top_k` the budget affords, tell the strategy, record everything; until the budget is spent.
//!
//! The run directory holds `config.json` (the resolved options), `trials.jsonl` (one line per
//! trial, written before the next step starts), `failed.jsonl` (rejected proposals), `llm.jsonl`
//! (every LLM exchange verbatim, which `--replay` serves back) and `summary.json`, and the run
//! database `run.db` ([`crate::store`]), the source of truth: a trial is stored as running before
//! it starts and as finished when it ends, every round's proxy scores and their device seconds
//! are stored.
//!
//! Resuming ([`Recorder::resume`]) runs the loop again from the run's seed: strategies are
//! deterministic given their seed and what they are told, so serving back the recorded trials,
//! proxy scores (from the cache) and LLM replies rebuilds the exact state the run had, and the
//! loop goes on live from the first trial the run had not finished. A record that disagrees
//! with what the loop chooses (other code, another table) stops the resume with an error.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::budget::{Budget, Limit};
use crate::configspace::Config;

use crate::history::{History, Proposal, Trial, TrialState};
use crate::llm::Exchange;
use crate::scheduler::Scheduler;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use replay::PriorJob;

/// Options of the loop.
#[derive(Debug, Clone, Serialize)]
pub struct LoopOptions {
    /// Candidates asked per round.
    pub k: usize,
    /// Candidates evaluated per round.
    pub top_k: usize,
    /// Rounds in a row without a single new candidate before the loop gives up.
    pub max_empty_rounds: usize,
    /// Seed of the loop's own draws (the fallback candidates).
    pub seed: u64,
    /// With ranking: candidates added to every round beyond the strategy's (mutations of the
    /// best trial, or random cells before the first), for the proxies to choose among.
    pub explore: usize,
    /// Device seconds one trial may take before it is stopped (pruned); a trial may never take
    /// more than what is left of a time budget either.
    pub trial_timeout: Option<f64>,
    /// Wall-clock seconds this invocation may run (`--wall-limit`): no round or trial starts
    /// past it, and a trial is stopped (pruned) when it would run past it.
    pub wall_limit: Option<f64>,
    /// Which trials go on to a higher fidelity, and the fidelities.
    pub scheduler: Scheduler,
    /// Epochs of the final model, the best configuration retrained on the whole training split
    /// once the search ends (`None`: no final model).
    pub final_epochs: Option<usize>,
    /// The share of a time budget held back for the final model from the start.
    pub final_fraction: f64,
}

/// Errors that end a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The strategy failed (LLM unreachable, template error).
    #[error(transparent)]
    Strategy(#[from] crate::strategy::StrategyError),
    /// Writing the run directory failed.
    #[error("cannot write the run record {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The proxy cache failed.
    #[error(transparent)]
    Cache(#[from] autoagent_proxies::cache::CacheError),
    /// The run database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The loop could not make progress.
    #[error("{0}")]
    Stuck(String),
}

/// Writes the run's records: the run database `run.db` (the source of truth, see
/// [`crate::store`]) and the JSON lines files beside it (or nothing, for benchmark runs that keep
/// only their outcome).
///
/// A resumed run ([`Recorder::resume`]) replays the loop from its seed: the records the run
/// already holds are served back (`Recorder::prior_job`, [`Recorder::prior_round_seconds`])
/// and not written twice, so a finished trial, proxy score or LLM reply is never lost or repeated.
pub struct Recorder {
    files: Option<Files>,
    prior: Prior,
}

/// What a resumed run had recorded before it stopped.
#[derive(Debug, Default)]
struct Prior {
    proposals: usize,
    failed: usize,
    exchanges: usize,
    /// Trials with at least one finished rung, as those rungs leave them, by id.
    trials: std::collections::BTreeMap<usize, Trial>,
    /// The recorded jobs by number: (trial id, index of the rung).
    jobs: std::collections::BTreeMap<usize, (usize, usize)>,
    /// The candidates of each recorded round, in their order ([`Config::key`]s).
    round_keys: Vec<Vec<String>>,
    /// The final model, when it was recorded.
    final_model: Option<crate::final_model::FinalModel>,
    /// Rounds whose proxy seconds were recorded (their values stay in `Files::round_seconds`).
    rounds: usize,
    /// Device seconds of work lost to kills (see [`Meter`]).
    lost_seconds: f64,
}

/// What [`Recorder::resume`] found in the run directory.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// Trials that were running or pending when the run stopped (they are evaluated again).
    pub lost: usize,
    /// Finished trials restored.
    pub finished: usize,
    /// Proposals, rejected proposals and LLM exchanges restored.
    pub proposals: usize,
    /// Rejected proposals restored.
    pub failed: usize,
    /// The recorded LLM exchanges, in order (the resumed strategy is served these first).
    pub exchanges: Vec<Exchange>,
    /// The run's status before the resume (`running` for a run that was killed).
    pub status: Option<String>,
}

struct Files {
    dir: PathBuf,
    trials: File,
    failed: File,
    llm: File,
    store: SqliteStore,
    round_seconds: Vec<f64>,
    meter: Meter,
}

/// The metadata key prefix of a step in progress: `spending:trial:N`, `spending:round:R`.
const SPENDING: &str = "spending:";

/// How often the [`Meter`] writes the seconds of the step in progress.
const METER_TICK: Duration = Duration::from_millis(250);

/// Records the device time of the step in progress (a trial's attempt, a round's proxy scoring)
/// into `run.db` as it is spent: a thread with its own connection writes the seconds so far to
/// `spending:<step>` every [`METER_TICK`]. The step's end removes the entry (its cost is then in
/// its record); a kill leaves it, and [`Recorder::resume`] books it as lost work
/// (`lost_seconds`), which the resumed run's budget starts from. A kill loses at most one tick.
struct Meter {
    tx: Option<mpsc::Sender<MeterCmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The key of the step in progress.
    current: Option<String>,
}

enum MeterCmd {
    Start(String),
    Stop(mpsc::Sender<()>),
}

impl Meter {
    fn spawn(db: PathBuf) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || meter_thread(&db, rx));
        Meter {
            tx: Some(tx),
            thread: Some(thread),
            current: None,
        }
    }

    fn send(&self, cmd: MeterCmd) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(cmd).is_ok())
    }

    fn start(&mut self, step: String) {
        let key = format!("{SPENDING}{step}");
        self.send(MeterCmd::Start(key.clone()));
        self.current = Some(key);
    }

    /// Stop metering; returns the step's key once the meter has written its last.
    fn stop(&mut self) -> Option<String> {
        let key = self.current.take()?;
        let (ack, done) = mpsc::channel();
        if self.send(MeterCmd::Stop(ack)) {
            let _ = done.recv();
        }
        Some(key)
    }
}

impl Drop for Meter {
    /// The thread ends (what it wrote last stays, as after a kill).
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn meter_thread(db: &Path, rx: mpsc::Receiver<MeterCmd>) {
    let mut store = SqliteStore::open_beside_writer(db)
        .inspect_err(|e| tracing::warn!("device time will not be recorded as it is spent: {e}"))
        .ok();
    let mut current: Option<(String, Instant)> = None;
    loop {
        let cmd = match current {
            Some(_) => rx.recv_timeout(METER_TICK),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match cmd {
            Ok(MeterCmd::Start(key)) => current = Some((key, Instant::now())),
            Ok(MeterCmd::Stop(ack)) => {
                current = None;
                let _ = ack.send(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let (Some((key, t)), Some(s)) = (&current, store.as_mut()) else {
            continue;
        };
        if let Err(e) = s.set_meta(key, &t.elapsed().as_secs_f64().to_string()) {
            tracing::warn!("device time will not be recorded as it is spent: {e}");
            store = None;
        }
    }
}

/// The proxy seconds of each recorded round.
fn recorded_round_seconds(store: &SqliteStore) -> Result<Vec<f64>, RunError> {
    match store.meta("round_proxy_seconds")? {
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            RunError::Store(crate::store::StoreError::Decode {
                what: "meta round_proxy_seconds".into(),
                reason: e.to_string(),
            })
        }),
        None => Ok(Vec::new()),
    }
}

/// The seconds of the `spending:*` entries (`pending`) whose step has no record: the trial's rung
/// is not finished (`rungs(n)` says how many rungs of trial `n` are; a key `trial:N:R` is rung R
/// of trial N, `trial:N` its first), the round's proxy seconds are not among the `rounds`
/// recorded. That work was lost to a kill.
fn unrecorded_seconds(pending: &[(String, String)], rungs: impl Fn(usize) -> usize, rounds: usize) -> f64 {
    let unrecorded_rung = |step: &str| {
        let (n, r) = step.split_once(':').unwrap_or((step, "0"));
        match (n.parse::<usize>(), r.parse::<usize>()) {
            (Ok(n), Ok(r)) => rungs(n) <= r,
            _ => true,
        }
    };
    pending
        .iter()
        .filter(|(key, _)| match key.strip_prefix(SPENDING).and_then(|s| s.split_once(':')) {
            Some(("trial", step)) => unrecorded_rung(step),
            Some(("round", r)) => r.parse::<usize>().map_or(true, |r| r >= rounds),
            _ => true,
        })
        .map(|(_, v)| v.parse::<f64>().unwrap_or(0.0))
        .fold(0.0, |a, b| a + b)
}

/// The stored trials that have a finished rung, as their finished rungs leave them (a trial
/// killed during a promotion stands at its last finished rung).
fn settled_trials(store: &SqliteStore) -> Result<Vec<Trial>, RunError> {
    Ok(store.trials()?.into_iter().filter_map(|r| r.trial.settled()).collect())
}

fn recorded_lost_seconds(store: &SqliteStore) -> Result<f64, RunError> {
    Ok(store.meta("lost_seconds")?.and_then(|v| v.parse().ok()).unwrap_or(0.0))
}

/// What a run has spent, as its database records it: what a resumed run's budget starts from.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Spent {
    /// Finished trials (complete, failed or pruned): what a trial budget counts.
    pub trials: usize,
    /// Device seconds: the finished trials', the proxy rounds' and the work lost to kills.
    pub seconds: f64,
    /// Of which proxy scoring (recorded rounds).
    pub proxy_seconds: f64,
    /// Of which work lost to kills: attempts of trials, and proxy rounds, that never finished.
    pub lost_seconds: f64,
    /// Rounds recorded.
    pub rounds: usize,
}

impl Spent {
    /// What the run database `dir/run.db` records as spent, read without changing anything
    /// (`None` when there is no database).
    pub fn read(dir: &Path) -> Result<Option<Self>, RunError> {
        let db = dir.join("run.db");
        if !db.is_file() {
            return Ok(None);
        }
        Ok(Some(Spent::of(&SqliteStore::open_read(&db)?)?))
    }

    /// What `store` records as spent.
    pub fn of(store: &SqliteStore) -> Result<Self, RunError> {
        let finished = settled_trials(store)?;
        let rounds = recorded_round_seconds(store)?;
        let proxy_seconds = rounds.iter().fold(0.0, |a, b| a + b);
        let pending = store.meta_prefixed(SPENDING)?;
        let rungs = |n: usize| finished.iter().find(|t| t.id == n).map_or(0, |t| t.rungs.len());
        let lost_seconds = recorded_lost_seconds(store)? + unrecorded_seconds(&pending, rungs, rounds.len());
        let trial_seconds = finished.iter().fold(0.0, |a, t| a + t.seconds);
        let trial_seconds = trial_seconds + recorded_final(store)?.map_or(0.0, |f| f.seconds);
        Ok(Spent {
            trials: finished.len(),
            seconds: trial_seconds + proxy_seconds + lost_seconds,
            proxy_seconds,
            lost_seconds,
            rounds: rounds.len().max(finished.iter().map(|t| t.round + 1).max().unwrap_or(0)),
        })
    }

    /// Whether a run with the budget `recorded` may be resumed with the budget `new`: in the same
    /// unit (trials count trials, a time budget device seconds; neither converts into the
    /// other), and not below what was spent.
    pub fn check_resume_budget(&self, recorded: Limit, new: Limit) -> Result<(), String> {
        match (recorded, new) {
            (Limit::Trials(_), Limit::Trials(n)) if n < self.trials => Err(format!(
                "the new budget ({new}) is below what the run has spent ({} trials): give at least {}trials",
                self.trials, self.trials
            )),
            (Limit::Seconds(_), Limit::Seconds(s)) if s < self.seconds => Err(format!(
                "the new budget ({new}) is below what the run has spent ({:.1} device-s, work lost to kills included): give more, e.g. --budget {}s",
                self.seconds,
                self.seconds.ceil() as u64 + 60
            )),
            (Limit::Trials(_), Limit::Trials(_)) | (Limit::Seconds(_), Limit::Seconds(_)) => Ok(()),
            (Limit::Trials(_), Limit::Seconds(_)) => Err(format!(
                "the run has a trial budget ({recorded}): resume it with a budget in trials (it has spent {} trials), not a time",
                self.trials
            )),
            (Limit::Seconds(_), Limit::Trials(_)) => Err(format!(
                "the run has a time budget ({recorded}): resume it with a time budget (it has spent {:.1} device-s), not trials",
                self.seconds
            )),
        }
    }
}

/// The final model recorded in the run database.
fn recorded_final(store: &SqliteStore) -> Result<Option<crate::final_model::FinalModel>, RunError> {
    match store.meta(FINAL_KEY)? {
        Some(text) => Ok(Some(serde_json::from_str(&text).map_err(|e| {
            RunError::Store(crate::store::StoreError::Decode {
                what: format!("meta {FINAL_KEY}"),
                reason: e.to_string(),
            })
        })?)),
        None => Ok(None),
    }
}

/// The metadata key of the final model.
const FINAL_KEY: &str = "final_model";

/// The keys of each round's proposals, in their order.
fn round_keys(proposals: &[crate::store::ProposalRecord]) -> Vec<Vec<String>> {
    let mut rounds: Vec<Vec<String>> = Vec::new();
    for p in proposals {
        if rounds.len() <= p.round {
            rounds.resize(p.round + 1, Vec::new());
        }
        rounds[p.round].push(p.proposal.config.key());
    }
    rounds
}

fn open_append(path: &Path) -> Result<File, RunError> {
    OpenOptions::new().create(true).append(true).open(path).map_err(|source| RunError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Replace `path` with `lines` (one JSON value per line) through a temporary file and a rename,
/// so a kill leaves either the old file or the new one.
fn rewrite_lines<T: Serialize>(path: &Path, lines: &[T]) -> Result<(), RunError> {
    let io = |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("jsonl.tmp");
    let mut text = String::new();
    for l in lines {
        text.push_str(&serde_json::to_string(l).expect("records serialise"));
        text.push('\n');
    }
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl Recorder {
    /// Create the record files in `dir` (which must exist): the JSON lines files and the run
    /// database `run.db` (see [`crate::store`]), which holds the same records.
    pub fn create(dir: &Path) -> Result<Self, RunError> {
        Ok(Recorder {
            files: Some(Files {
                dir: dir.to_path_buf(),
                trials: open_append(&dir.join("trials.jsonl"))?,
                failed: open_append(&dir.join("failed.jsonl"))?,
                llm: open_append(&dir.join("llm.jsonl"))?,
                store: SqliteStore::open(&dir.join("run.db"))?,
                round_seconds: Vec::new(),
                meter: Meter::spawn(dir.join("run.db")),
            }),
            prior: Prior::default(),
        })
    }

    /// Reopen the records of a run that stopped (killed, crashed, out of budget) to continue it:
    /// takes the run database's writer lock (a run still alive holds it: [`crate::store::StoreError::Locked`]),
    /// marks the trials that were running as lost, and rewrites the JSON lines files from the
    /// database, which is the source of truth (a kill between the two writes leaves them behind).
    pub fn resume(dir: &Path) -> Result<(Self, Resumed), RunError> {
        let db = dir.join("run.db");
        if !db.is_file() {
            return Err(RunError::Stuck(format!("{} holds no run database (run.db): nothing to resume", dir.display())));
        }
        let mut store = SqliteStore::open(&db)?;
        let status = store.meta("status")?;
        let lost = store.mark_lost()?;
        let trials = store.trials()?;
        let proposals = store.proposals()?;
        let failed = store.failed()?;
        let mut exchanges = store.exchanges()?;
        // An exchange that got no reply (the server failed, which ended the run) is asked again.
        while exchanges.last().is_some_and(|e| e.response.is_none()) {
            exchanges.pop();
        }
        let round_seconds = recorded_round_seconds(&store)?;
        let rounds = round_seconds.len();
        let final_model = recorded_final(&store)?;
        let finished: std::collections::BTreeMap<usize, Trial> = trials.into_iter().filter_map(|r| r.trial.settled()).map(|t| (t.id, t)).collect();
        let jobs = finished
            .values()
            .flat_map(|t| t.rungs.iter().enumerate().map(|(i, r)| (r.job, (t.id, i))))
            .collect();
        // What the killed run was spending on steps that have no record is lost work: booked
        // once, in one transaction with the removal of its entries.
        let pending = store.meta_prefixed(SPENDING)?;
        let rungs = |n: usize| finished.get(&n).map_or(0, |t| t.rungs.len());
        let lost_seconds = recorded_lost_seconds(&store)? + unrecorded_seconds(&pending, rungs, rounds);
        if !pending.is_empty() {
            let keys: Vec<String> = pending.into_iter().map(|(k, _)| k).collect();
            store.replace_meta(&keys, "lost_seconds", &lost_seconds.to_string())?;
        }
        let finished_list: Vec<&Trial> = finished.values().collect();
        rewrite_lines(&dir.join("trials.jsonl"), &finished_list)?;
        rewrite_lines(&dir.join("failed.jsonl"), &failed)?;
        rewrite_lines(&dir.join("llm.jsonl"), &exchanges)?;
        let resumed = Resumed {
            lost,
            finished: finished.len(),
            proposals: proposals.len(),
            failed: failed.len(),
            exchanges: exchanges.clone(),
            status,
        };
        let recorder = Recorder {
            files: Some(Files {
                dir: dir.to_path_buf(),
                trials: open_append(&dir.join("trials.jsonl"))?,
                failed: open_append(&dir.join("failed.jsonl"))?,
                llm: open_append(&dir.join("llm.jsonl"))?,
                store,
                round_seconds,
                meter: Meter::spawn(db),
            }),
            prior: Prior {
                proposals: proposals.len(),
                failed: failed.len(),
                exchanges: exchanges.len(),
                trials: finished,
                jobs,
                round_keys: round_keys(&proposals),
                final_model,
                rounds,
                lost_seconds,
            },
        };
        Ok((recorder, resumed))
    }

    /// Store a metadata value in the run database (the resolved configuration, ...).
    pub fn meta(&mut self, key: &str, value: &str) -> Result<(), RunError> {
        match self.files.as_mut() {
            Some(f) => Ok(f.store.set_meta(key, value)?),
            None => Ok(()),
        }
    }

    /// A metadata value of the run database.
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, RunError> {
        match self.files.as_ref() {
            Some(f) => Ok(f.store.meta(key)?),
            None => Ok(None),
        }
    }

    /// A recorder that writes nothing.
    pub fn discard() -> Self {
        Recorder {
            files: None,
            prior: Prior::default(),
        }
    }

    /// The job number `job` of the run before it was resumed.
    pub(crate) fn prior_job(&self, job: usize) -> Option<PriorJob> {
        let &(id, rung) = self.prior.jobs.get(&job)?;
        let trial = self.prior.trials.get(&id)?.after_rungs(rung + 1);
        Some(PriorJob { trial, rung })
    }

    /// Device seconds of work lost to kills before the run was resumed (trial attempts and proxy
    /// rounds that never finished): a resumed run's budget starts from them.
    pub fn lost_seconds(&self) -> f64 {
        self.prior.lost_seconds
    }

    /// The final model recorded before the run was resumed.
    pub(crate) fn prior_final(&self) -> Option<crate::final_model::FinalModel> {
        self.prior.final_model.clone()
    }

    /// The final model's training starts (metered).
    fn final_started(&mut self) {
        if let Some(f) = self.files.as_mut() {
            f.meter.start(FINAL_KEY.to_string());
        }
    }

    /// Record the final model.
    fn final_model(&mut self, m: &crate::final_model::FinalModel) -> Result<(), RunError> {
        if let Some(f) = self.files.as_mut() {
            f.store.set_meta(FINAL_KEY, &serde_json::to_string(m).expect("records serialise"))?;
        }
        self.step_ended()
    }

    /// The candidates of `round` before the run was resumed ([`Config::key`]s, in order).
    pub(crate) fn prior_round(&self, round: usize) -> Option<&[String]> {
        self.prior.round_keys.get(round).map(Vec::as_slice)
    }

    /// The device seconds the proxies took in `round` before the run was resumed.
    pub fn prior_round_seconds(&self, round: usize) -> Option<f64> {
        if round >= self.prior.rounds {
            return None;
        }
        self.files.as_ref()?.round_seconds.get(round).copied()
    }

    fn line<T: Serialize>(&mut self, pick: fn(&mut Files) -> &mut File, name: &str, value: &T) -> Result<(), RunError> {
        let Some(files) = self.files.as_mut() else {
            return Ok(());
        };
        let path = files.dir.join(name);
        let file = pick(files);
        let text = serde_json::to_string(value).expect("records serialise");
        writeln!(file, "{text}")
            .and_then(|_| file.flush())
            .map_err(|source| RunError::Io { path, source })
    }

    /// Trial `t` is about to be evaluated as job `job` (a new trial or its next rung): stored
    /// as running, so a run killed now knows to evaluate it again.
    fn trial_started(&mut self, t: &Trial, job: usize) -> Result<(), RunError> {
        if self.prior.jobs.contains_key(&job) {
            return Ok(());
        }
        if let Some(f) = self.files.as_mut() {
            f.store.put_trial(&crate::store::TrialRecord {
                trial: Trial {
                    state: TrialState::Running,
                    ..t.clone()
                },
                artefacts: Vec::new(),
                stderr_tail: None,
            })?;
            f.meter.start(format!("trial:{}:{}", t.id, t.rungs.len()));
        }
        Ok(())
    }

    /// The step in progress ended and its record is written: its meter entry goes.
    fn step_ended(&mut self) -> Result<(), RunError> {
        if let Some(f) = self.files.as_mut() {
            if let Some(key) = f.meter.stop() {
                f.store.delete_meta(&key)?;
            }
        }
        Ok(())
    }

    /// Round `round`'s proxy scoring starts (metered unless the round was recorded before).
    pub fn round_started(&mut self, round: usize) {
        if let Some(f) = self.files.as_mut().filter(|f| round >= f.round_seconds.len()) {
            f.meter.start(format!("round:{round}"));
        }
    }

    /// Job `job` of trial `t` ended (its rung is the trial's last).
    fn trial(&mut self, t: &Trial, eval: Option<&crate::task::Evaluation>, job: usize) -> Result<(), RunError> {
        if self.prior.jobs.contains_key(&job) {
            return Ok(());
        }
        if let Some(f) = self.files.as_mut() {
            if let Some(e) = eval {
                for (epoch, name, value) in &e.metrics {
                    f.store.add_metric(&crate::store::Metric {
                        trial: t.id,
                        epoch: *epoch,
                        name: name.clone(),
                        value: *value,
                    })?;
                }
            }
            f.store.put_trial(&crate::store::TrialRecord {
                trial: t.clone(),
                artefacts: eval.map(|e| e.artefacts.clone()).unwrap_or_default(),
                stderr_tail: eval.and_then(|e| e.stderr_tail.clone()).filter(|_| t.state != TrialState::Complete),
            })?;
        }
        self.step_ended()?;
        self.line(|f| &mut f.trials, "trials.jsonl", t)
    }

    fn failed(&mut self, failed: &crate::history::FailedProposal) -> Result<(), RunError> {
        if self.prior.failed > 0 {
            self.prior.failed -= 1;
            return Ok(());
        }
        if let Some(f) = self.files.as_mut() {
            f.store.add_failed(failed)?;
        }
        self.line(|f| &mut f.failed, "failed.jsonl", failed)
    }

    fn exchange(&mut self, e: &Exchange) -> Result<(), RunError> {
        if e.index < self.prior.exchanges {
            return Ok(());
        }
        if let Some(f) = self.files.as_mut() {
            f.store.add_exchange(e)?;
        }
        self.line(|f| &mut f.llm, "llm.jsonl", e)
    }

    fn proposal(&mut self, round: usize, p: &Proposal) -> Result<(), RunError> {
        if self.prior.proposals > 0 {
            self.prior.proposals -= 1;
            return Ok(());
        }
        if let Some(f) = self.files.as_mut() {
            f.store.add_proposal(round, p)?;
        }
        Ok(())
    }

    /// The proxy scores of a round's candidates and the seconds computing them took.
    fn proxy_scores(&mut self, round: usize, configs: &[Config], scored: &[crate::ranker::Scored], seconds: f64) -> Result<(), RunError> {
        let Some(f) = self.files.as_mut() else {
            return Ok(());
        };
        if round < f.round_seconds.len() {
            return Ok(());
        }
        for (config, s) in configs.iter().zip(scored) {
            for (proxy, value) in &s.proxies {
                f.store.put_proxy_score(&crate::store::ProxyScore {
                    candidate: config.to_string(),
                    proxy: proxy.clone(),
                    value: *value,
                    ms: s.ms.get(proxy).copied().unwrap_or(0.0),
                })?;
            }
        }
        f.round_seconds.push(seconds);
        let text = serde_json::to_string(&f.round_seconds).expect("numbers serialise");
        f.store.set_meta("round_proxy_seconds", &text)?;
        self.step_ended()
    }

    /// The run's summary, rebuilt from the run database (what the loop saw, `s`, may be less
    /// than the run holds: a resumed loop that stopped before it had served back every recorded
    /// trial): the trials, the best one, the rounds, the device seconds (lost work included)
    /// and the budget's use come from `run.db`; written to `summary.json` and the database.
    pub fn finish(&mut self, mut s: Summary, budget: &Budget) -> Result<Summary, RunError> {
        let Some(files) = self.files.as_ref() else {
            return Ok(s);
        };
        let spent = Spent::of(&files.store)?;
        let history = History {
            trials: settled_trials(&files.store)?,
            ..History::default()
        };
        s.trials = spent.trials;
        s.best = history.best(1).first().map(|t| (*t).clone());
        s.rounds = s.rounds.max(spent.rounds);
        s.device_seconds = spent.seconds;
        s.proxy_seconds = spent.proxy_seconds;
        s.lost_seconds = spent.lost_seconds;
        s.budget_used = match budget.limit {
            Limit::Trials(n) => spent.trials as f64 / n as f64,
            Limit::Seconds(limit) => {
                s.overrun_seconds = s.overrun_seconds.max(spent.seconds - limit);
                spent.seconds / limit
            }
        };
        self.summary(&s)?;
        Ok(s)
    }

    /// Write `summary.json` (and the summary into the run database).
    fn summary(&mut self, s: &Summary) -> Result<(), RunError> {
        let Some(files) = self.files.as_mut() else {
            return Ok(());
        };
        files.store.set_meta("summary", &serde_json::to_string(s).expect("summary serialises"))?;
        files.store.set_meta("status", "finished")?;
        let path = files.dir.join("summary.json");
        std::fs::write(&path, serde_json::to_string_pretty(s).expect("summary serialises")).map_err(|source| RunError::Io { path, source })
    }
}

/// LLM usage of a run.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct LlmUsage {
    /// Exchanges made.
    pub exchanges: usize,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// Cost in US dollars.
    pub cost_usd: f64,
    /// Seconds waiting for replies.
    pub seconds: f64,
    /// Valid candidates the LLM proposed.
    pub valid_proposals: usize,
    /// Invalid ones.
    pub invalid_proposals: usize,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Summary {
    /// The strategy.
    pub strategy: String,
    /// Trials evaluated.
    pub trials: usize,
    /// Rounds run.
    pub rounds: usize,
    /// The best trial by the visible accuracy.
    pub best: Option<Trial>,
    /// Budget limit, as text.
    pub budget: String,
    /// Share of the budget used.
    pub budget_used: f64,
    /// Device seconds used (evaluations and proxy scoring).
    pub device_seconds: f64,
    /// Largest overrun of the limit, in seconds.
    pub overrun_seconds: f64,
    /// Device seconds spent scoring proxies.
    pub proxy_seconds: f64,
    /// Device seconds of work lost to kills (trial attempts and proxy rounds that never
    /// finished), counted in `device_seconds`.
    #[serde(default)]
    pub lost_seconds: f64,
    /// Candidates dropped as isomorphic to evaluated ones or duplicates within a round.
    pub duplicates: usize,
    /// Candidates the loop added itself (mutations of the best trial, or random cells) because
    /// the strategy's round held fewer than `top_k` new ones.
    pub fallback: usize,
    /// Candidates the loop added to ranked rounds (`explore`).
    #[serde(default)]
    pub explored: usize,
    /// LLM usage.
    pub llm: LlmUsage,
    /// Why the loop stopped.
    pub stopped: String,
    /// The final model (the best configuration retrained), when the task has one.
    #[serde(default)]
    pub final_model: Option<crate::final_model::FinalModel>,
}

mod replay;
mod stages;

pub use stages::run_loop;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Limit;
    use crate::configspace::Space;
    use crate::history::Origin;
    use crate::llm_strategy::TaskInfo;
    use crate::scheduler::SchedulerKind;
    use crate::strategy::RandomSearch;
    use crate::task::{cell_config, Evaluation, Evaluator, Fidelity};
    use autoagent_evaluator::nb201::Arch;

    /// The NB201 table's space: a cell alone.
    fn cells() -> &'static Space {
        static SPACE: std::sync::OnceLock<Space> = std::sync::OnceLock::new();
        SPACE.get_or_init(crate::configspace::cell_space)
    }

    fn cell(config: &Config) -> Arch {
        config.cell("cell").expect("a cell")
    }

    /// Loop options of the tests: `k` candidates a round, the best 2 evaluated.
    fn test_options(k: usize, seed: u64) -> LoopOptions {
        LoopOptions {
            k,
            top_k: 2,
            max_empty_rounds: 3,
            seed,
            trial_timeout: None,
            explore: 0,
            wall_limit: None,
            scheduler: Scheduler::new(SchedulerKind::None, vec![1], 3).unwrap(),
            final_epochs: None,
            final_fraction: 0.0,
        }
    }

    /// Evaluations that cost `actual` device seconds each and are announced at `estimate`.
    struct Costed {
        actual: f64,
        estimate: f64,
    }

    impl Evaluator for Costed {
        fn info(&self) -> TaskInfo {
            TaskInfo {
                description: "costed".into(),
                metric: "accuracy".into(),
                profile: None,
            }
        }

        fn space(&self) -> &Space {
            cells()
        }

        fn estimate_seconds(&self, _config: &Config, _fidelity: Fidelity) -> f64 {
            self.estimate
        }

        fn evaluate(&mut self, config: &Config, _fidelity: Fidelity) -> Evaluation {
            Evaluation {
                accuracy: Some(cell(config).ops.iter().filter(|o| o.name() == "nor_conv_3x3").count() as f64),
                test_accuracy: None,
                seconds: self.actual,
                ..Evaluation::default()
            }
        }
    }

    fn run(limit: Limit, actual: f64, estimate: f64) -> Summary {
        let mut strategy = RandomSearch::new(cells().clone(), 3);
        let mut evaluator = Costed { actual, estimate };
        let mut budget = Budget::new(limit);
        let options = test_options(4, 3);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (history, summary) = rt
            .block_on(run_loop(
                &mut strategy,
                &mut evaluator,
                None,
                &mut budget,
                &options,
                &mut Recorder::discard(),
                |_, _| {},
            ))
            .unwrap();
        assert_eq!(history.trials.len(), summary.trials);
        summary
    }

    #[test]
    fn a_time_budget_stops_before_a_step_that_would_not_fit() {
        // Exact estimates: nine 10-s trials fit in 95 s, the tenth is never started.
        let s = run(Limit::Seconds(95.0), 10.0, 10.0);
        assert_eq!(s.trials, 9);
        assert_eq!(s.overrun_seconds, 0.0);
        assert!((s.budget_used - 90.0 / 95.0).abs() < 1e-9);
        assert!(s.stopped.contains("does not afford"), "{}", s.stopped);
        // Estimates 2 s short: the last step overruns by at most its own misestimate.
        let s = run(Limit::Seconds(95.0), 12.0, 10.0);
        assert_eq!(s.trials, 8);
        assert!(s.overrun_seconds <= 2.0 + 1e-9, "{}", s.overrun_seconds);
        assert!(s.budget_used <= 1.0 + 2.0 / 95.0 + 1e-9);
        // A trial budget: exactly that many, whatever they cost.
        let s = run(Limit::Trials(7), 10.0, 10.0);
        assert_eq!(s.trials, 7);
        assert_eq!(s.stopped, "budget spent");
    }

    /// Evaluations of 1 s; cells of odd ordinal are announced (and cost) `dear` seconds (by
    /// default far more than any budget), or every cell is when `all_dear`.
    struct Priced {
        all_dear: bool,
        dear: f64,
    }

    impl Priced {
        fn new(all_dear: bool) -> Self {
            Priced { all_dear, dear: 1e9 }
        }
    }

    impl Evaluator for Priced {
        fn info(&self) -> TaskInfo {
            Costed { actual: 0.0, estimate: 0.0 }.info()
        }

        fn space(&self) -> &Space {
            cells()
        }

        fn estimate_seconds(&self, config: &Config, _fidelity: Fidelity) -> f64 {
            if self.all_dear || cell(config).ordinal() % 2 == 1 {
                self.dear
            } else {
                1.0
            }
        }

        fn evaluate(&mut self, config: &Config, fidelity: Fidelity) -> Evaluation {
            Evaluation {
                seconds: self.estimate_seconds(config, fidelity),
                ..Costed { actual: 0.0, estimate: 0.0 }.evaluate(config, fidelity)
            }
        }
    }

    fn run_priced(recorder: &mut Recorder, limit: Limit, all_dear: bool) -> (History, Summary) {
        run_priced_by(recorder, limit, &mut Priced::new(all_dear))
    }

    fn run_priced_by(recorder: &mut Recorder, limit: Limit, evaluator: &mut Priced) -> (History, Summary) {
        let mut strategy = RandomSearch::new(cells().clone(), 5);
        let mut budget = Budget::new(limit);
        let options = test_options(8, 5);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run_loop(&mut strategy, evaluator, None, &mut budget, &options, recorder, |_, _| {}))
            .unwrap()
    }

    #[test]
    fn a_round_evaluates_the_best_ranked_candidates_that_fit_and_a_resume_replays_them() {
        // Issue 15 item 7: a round whose first candidate did not fit ended the run.
        let tmp = tempfile::tempdir().unwrap();
        let (history, s) = run_priced(&mut Recorder::create(tmp.path()).unwrap(), Limit::Seconds(30.0), false);
        assert_eq!(s.trials, 30, "{}", s.stopped);
        assert!(history.trials.iter().all(|t| cell(&t.config).ordinal() % 2 == 0));
        assert_eq!(s.stopped, "budget spent");
        // A resume whose estimates now say nothing fits serves the recorded trials back (they
        // fitted when they ran) instead of skipping them or calling the run diverged.
        let (mut recorder, _) = Recorder::resume(tmp.path()).unwrap();
        let (again, s2) = run_priced(&mut recorder, Limit::Seconds(30.0), true);
        assert_eq!(again.trials.len(), 30);
        assert_eq!(s2.best, s.best);
    }

    #[test]
    fn new_trials_within_a_share_of_a_time_budget_go_first_and_dear_ones_run_when_nothing_else_fits() {
        // 10-s first rungs are a quarter of a 40-s budget, past the share a first rung may take
        // while 1-s candidates are at hand (the fixture's 5m run spent 41 % on one trial).
        let tmp = tempfile::tempdir().unwrap();
        let mut recorder = Recorder::create(tmp.path()).unwrap();
        let (history, s) = run_priced_by(&mut recorder, Limit::Seconds(40.0), &mut Priced { all_dear: false, dear: 10.0 });
        assert!(history.trials.iter().all(|t| cell(&t.config).ordinal() % 2 == 0), "{:?}", history.trials);
        assert_eq!(s.trials, 40);
        // A space of dear networks only still trains.
        let tmp = tempfile::tempdir().unwrap();
        let mut recorder = Recorder::create(tmp.path()).unwrap();
        let (_, s) = run_priced_by(&mut recorder, Limit::Seconds(40.0), &mut Priced { all_dear: true, dear: 10.0 });
        assert_eq!(s.trials, 4, "{}", s.stopped);
    }

    fn run_into(recorder: &mut Recorder, limit: Limit) -> Result<Summary, RunError> {
        let mut strategy = RandomSearch::new(cells().clone(), 3);
        let mut evaluator = Costed { actual: 10.0, estimate: 10.0 };
        let mut budget = Budget::new(limit);
        budget.spend(0, recorder.lost_seconds());
        let options = test_options(4, 3);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run_loop(&mut strategy, &mut evaluator, None, &mut budget, &options, recorder, |_, _| {}))
            .map(|(_, s)| s)
    }

    /// Evaluations whose accuracy grows with the cell's 3x3 convolutions and the epochs, costing
    /// their added epochs in seconds; every (trial, fidelity) asked is kept.
    #[derive(Default)]
    struct Epochal {
        asked: Vec<(usize, Fidelity)>,
    }

    impl Evaluator for Epochal {
        fn info(&self) -> TaskInfo {
            Costed { actual: 0.0, estimate: 0.0 }.info()
        }

        fn space(&self) -> &Space {
            cells()
        }

        fn estimate_seconds(&self, _config: &Config, fidelity: Fidelity) -> f64 {
            fidelity.added() as f64
        }

        fn evaluate(&mut self, config: &Config, fidelity: Fidelity) -> Evaluation {
            let convs = Costed { actual: 0.0, estimate: 0.0 }.evaluate(config, fidelity).accuracy.unwrap();
            Evaluation {
                accuracy: Some(10.0 * convs + fidelity.to as f64),
                seconds: fidelity.added() as f64,
                ..Evaluation::default()
            }
        }

        fn evaluate_trial(&mut self, config: &Config, trial: usize, fidelity: Fidelity, _limit: Option<crate::task::TrialLimit>) -> Evaluation {
            self.asked.push((trial, fidelity));
            self.evaluate(config, fidelity)
        }
    }

    fn run_asha(recorder: &mut Recorder, limit: Limit) -> (History, Vec<(usize, Fidelity)>) {
        let mut strategy = RandomSearch::new(cells().clone(), 7);
        let mut evaluator = Epochal::default();
        let mut budget = Budget::new(limit);
        let options = LoopOptions {
            scheduler: Scheduler::new(SchedulerKind::Asha, vec![1, 3, 9], 3).unwrap(),
            ..test_options(4, 7)
        };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (history, _) = rt
            .block_on(run_loop(&mut strategy, &mut evaluator, None, &mut budget, &options, recorder, |_, _| {}))
            .unwrap();
        (history, evaluator.asked)
    }

    /// Each trial's rungs: (job, epochs, accuracy).
    fn rungs(h: &History) -> Vec<Vec<(usize, usize, Option<f64>)>> {
        h.trials
            .iter()
            .map(|t| t.rungs.iter().map(|r| (r.job, r.epochs, r.accuracy)).collect())
            .collect()
    }

    #[test]
    fn asha_in_the_loop_promotes_continues_from_checkpoints_and_a_resume_replays_every_rung() {
        let tmp = tempfile::tempdir().unwrap();
        let (h, asked) = run_asha(&mut Recorder::create(tmp.path()).unwrap(), Limit::Trials(9));
        // 9 new trials at 1 epoch. A trial goes on to 3 epochs whenever it is in the top third of
        // those that finished 1 epoch so far (ASHA: 4 did, trial 0 early on, when fewer had
        // finished), to 9 when in the top third of those at 3 (the last ones once the trial
        // budget is spent: promotions add no trial).
        assert_eq!(h.trials.len(), 9);
        let depth = |n: usize| h.trials.iter().filter(|t| t.rungs.len() == n).count();
        assert_eq!((depth(1), depth(2), depth(3)), (5, 3, 1), "{:?}", rungs(&h));
        // A promotion continues from the epochs its trial had done.
        for (trial, f) in &asked {
            let t = &h.trials[*trial];
            let i = t.rungs.iter().position(|r| r.epochs == f.to).unwrap();
            assert_eq!(f.from, if i == 0 { 0 } else { t.rungs[i - 1].epochs });
        }
        assert_eq!(asked.len(), 14);
        // Jobs are numbered in the order they ran, new trials and promotions alike.
        let mut jobs: Vec<usize> = h.trials.iter().flat_map(|t| t.rungs.iter().map(|r| r.job)).collect();
        jobs.sort();
        assert_eq!(jobs, (0..14).collect::<Vec<_>>());
        // The incumbent is the trial trained longest.
        assert_eq!(h.best(1)[0].epochs, 9);
        // Resumed with a larger budget: every recorded rung is served back (nothing evaluated
        // again) and the run goes on as a run with that budget from the start does.
        let (mut r, _) = Recorder::resume(tmp.path()).unwrap();
        let (again, asked_again) = run_asha(&mut r, Limit::Trials(15));
        let (clean, _) = run_asha(&mut Recorder::discard(), Limit::Trials(15));
        assert_eq!(rungs(&again), rungs(&clean));
        assert!(
            asked_again.iter().all(|(t, f)| *t >= 9 || f.from > 0 && !asked.contains(&(*t, *f))),
            "{asked_again:?}"
        );
    }

    #[test]
    fn the_summary_is_rebuilt_from_the_run_database() {
        let tmp = tempfile::tempdir().unwrap();
        let first = run_into(&mut Recorder::create(tmp.path()).unwrap(), Limit::Trials(6)).unwrap();
        assert_eq!(first.trials, 6);
        // A resumed loop that sees only 3 of the 6 recorded trials: the summary still holds 6.
        let (mut recorder, _) = Recorder::resume(tmp.path()).unwrap();
        let s = run_into(&mut recorder, Limit::Trials(3)).unwrap();
        assert_eq!(s.trials, 6);
        assert_eq!(s.best, first.best);
        assert_eq!(s.device_seconds, first.device_seconds);
        let file: Summary = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("summary.json")).unwrap()).unwrap();
        assert_eq!(file.trials, 6);
        assert_eq!(file.best, first.best);
    }

    #[test]
    fn work_lost_to_a_kill_is_recorded_as_it_is_spent_and_booked_once() {
        let tmp = tempfile::tempdir().unwrap();
        let config = cell_config(Arch::sample(&mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1)));
        let spending = |dir: &Path| SqliteStore::open_read(&dir.join("run.db")).unwrap().meta_prefixed(SPENDING).unwrap();
        let metered = |dir: &Path| {
            let seen = spending(dir);
            assert_eq!(seen.len(), 1, "{seen:?}");
            let v: f64 = seen[0].1.parse().unwrap();
            assert!((0.6 - METER_TICK.as_secs_f64() - 0.01..=1.0).contains(&v), "{seen:?}");
            v
        };
        {
            // A trial attempt killed after 0.6 s (the recorder is dropped without its record).
            let mut r = Recorder::create(tmp.path()).unwrap();
            let t = Trial {
                state: TrialState::Running,
                ..Trial::new(0, 0, config.clone(), Origin::Random)
            };
            r.trial_started(&t, 0).unwrap();
            std::thread::sleep(Duration::from_millis(600));
        }
        let trial = metered(tmp.path());
        // What a resume's budget check reads, before anything is written.
        assert_eq!(Spent::read(tmp.path()).unwrap().unwrap().lost_seconds, trial);
        {
            // Resumed: booked as lost work, which the budget starts from. Then a round of proxy
            // scoring is killed after 0.6 s.
            let (mut r, _) = Recorder::resume(tmp.path()).unwrap();
            assert_eq!(r.lost_seconds(), trial);
            assert!(spending(tmp.path()).is_empty());
            r.round_started(0);
            std::thread::sleep(Duration::from_millis(600));
        }
        let round = metered(tmp.path());
        let (r, _) = Recorder::resume(tmp.path()).unwrap();
        assert_eq!(r.lost_seconds(), trial + round);
        drop(r);
        // Resumed again: nothing is booked twice.
        let (r, _) = Recorder::resume(tmp.path()).unwrap();
        assert_eq!(r.lost_seconds(), trial + round);
    }

    #[test]
    fn a_resumed_time_budget_counts_the_work_lost_to_kills() {
        let tmp = tempfile::tempdir().unwrap();
        let first = run_into(&mut Recorder::create(tmp.path()).unwrap(), Limit::Seconds(95.0)).unwrap();
        assert_eq!(first.trials, 9);
        // 45 s were lost to kills (as the meter records them): extended to 200 s, the run has
        // 200 - 90 - 45 s left, 6 more trials of 10 s (not 11).
        let (mut r, _) = Recorder::resume(tmp.path()).unwrap();
        r.meta("lost_seconds", "45").unwrap();
        drop(r);
        let (mut r, _) = Recorder::resume(tmp.path()).unwrap();
        assert_eq!(r.lost_seconds(), 45.0);
        let s = run_into(&mut r, Limit::Seconds(200.0)).unwrap();
        assert_eq!(s.lost_seconds, 45.0);
        assert_eq!(s.trials, 15, "45 + 15 x 10 s = 195 s of 200");
        assert_eq!(s.device_seconds, 195.0);
        assert_eq!(s.budget_used, 195.0 / 200.0);
    }

    #[test]
    fn a_new_budget_for_a_resume_is_in_the_run_s_unit_and_not_below_what_was_spent() {
        let spent = Spent {
            trials: 3,
            seconds: 120.0,
            ..Spent::default()
        };
        assert!(spent.check_resume_budget(Limit::Trials(3), Limit::Trials(3)).is_ok());
        assert!(spent.check_resume_budget(Limit::Trials(3), Limit::Trials(5)).is_ok());
        let e = spent.check_resume_budget(Limit::Trials(3), Limit::Trials(1)).unwrap_err();
        assert!(e.contains("below what the run has spent (3 trials)"), "{e}");
        assert!(spent.check_resume_budget(Limit::Seconds(100.0), Limit::Seconds(300.0)).is_ok());
        let e = spent.check_resume_budget(Limit::Seconds(100.0), Limit::Seconds(60.0)).unwrap_err();
        assert!(e.contains("below what the run has spent (120.0 device-s"), "{e}");
        let e = spent.check_resume_budget(Limit::Trials(3), Limit::Seconds(7200.0)).unwrap_err();
        assert!(e.contains("trial budget"), "{e}");
        let e = spent.check_resume_budget(Limit::Seconds(100.0), Limit::Trials(9)).unwrap_err();
        assert!(e.contains("time budget"), "{e}");
    }
}
