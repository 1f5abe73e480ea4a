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

use serde::Serialize;

use crate::budget::Budget;
use autoagent_evaluator::nb201::Arch;

use crate::history::{History, Origin, Proposal, Trial, TrialState};
use crate::llm::Exchange;
use crate::ranker::Ranker;
use crate::store::Store;
use crate::strategy::Strategy;
use crate::task::Evaluator;

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
/// already holds are served back ([`Recorder::prior_trial`], [`Recorder::prior_round_seconds`])
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
    /// Finished trials by id (complete, failed or pruned).
    finished: std::collections::BTreeMap<usize, Trial>,
    /// Rounds whose proxy seconds were recorded (their values stay in `Files::round_seconds`).
    rounds: usize,
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
    store: crate::store::sqlite::SqliteStore,
    round_seconds: Vec<f64>,
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
                store: crate::store::sqlite::SqliteStore::open(&dir.join("run.db"))?,
                round_seconds: Vec::new(),
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
        let mut store = crate::store::sqlite::SqliteStore::open(&db)?;
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
        let round_seconds: Vec<f64> = match store.meta("round_proxy_seconds")? {
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                RunError::Store(crate::store::StoreError::Decode {
                    what: "meta round_proxy_seconds".into(),
                    reason: e.to_string(),
                })
            })?,
            None => Vec::new(),
        };
        let rounds = round_seconds.len();
        let finished: std::collections::BTreeMap<usize, Trial> = trials
            .into_iter()
            .filter(|r| r.trial.state.is_finished())
            .map(|r| (r.trial.id, r.trial))
            .collect();
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
            }),
            prior: Prior {
                proposals: proposals.len(),
                failed: failed.len(),
                exchanges: exchanges.len(),
                finished,
                rounds,
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

    /// The finished trial `id` of the run before it was resumed.
    pub fn prior_trial(&self, id: usize) -> Option<&Trial> {
        self.prior.finished.get(&id)
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

    /// A trial is about to be evaluated: stored as running, so a run killed now knows to
    /// evaluate it again.
    fn trial_started(&mut self, t: &Trial) -> Result<(), RunError> {
        if self.prior.finished.contains_key(&t.id) {
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
        }
        Ok(())
    }

    fn trial(&mut self, t: &Trial, eval: Option<&crate::task::Evaluation>) -> Result<(), RunError> {
        if self.prior.finished.contains_key(&t.id) {
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
    fn proxy_scores(&mut self, round: usize, archs: &[Arch], scored: &[crate::ranker::Scored], seconds: f64) -> Result<(), RunError> {
        let Some(f) = self.files.as_mut() else {
            return Ok(());
        };
        if round < f.round_seconds.len() {
            return Ok(());
        }
        for (arch, s) in archs.iter().zip(scored) {
            for (proxy, value) in &s.proxies {
                f.store.put_proxy_score(&crate::store::ProxyScore {
                    arch: arch.to_string(),
                    proxy: proxy.clone(),
                    value: *value,
                    ms: s.ms.get(proxy).copied().unwrap_or(0.0),
                })?;
            }
        }
        f.round_seconds.push(seconds);
        let text = serde_json::to_string(&f.round_seconds).expect("numbers serialise");
        f.store.set_meta("round_proxy_seconds", &text)?;
        Ok(())
    }

    /// Write `summary.json` (and the summary into the run database).
    pub fn summary(&mut self, s: &Summary) -> Result<(), RunError> {
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
}

/// Run the loop until the budget is spent.
pub async fn run_loop(
    strategy: &mut dyn Strategy,
    evaluator: &mut dyn Evaluator,
    mut ranker: Option<&mut Ranker>,
    budget: &mut Budget,
    options: &LoopOptions,
    recorder: &mut Recorder,
    mut on_trial: impl FnMut(&Trial, &Budget),
) -> Result<(History, Summary), RunError> {
    let mut history = History::default();
    let mut usage = LlmUsage::default();
    let (mut rounds, mut duplicates, mut proxy_seconds, mut empty, mut fallback) = (0usize, 0usize, 0.0f64, 0usize, 0usize);
    let mut explored = 0usize;
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(options.seed ^ 0x5eed_f411);
    let stopped;
    loop {
        if budget.exhausted() {
            stopped = "budget spent".to_string();
            break;
        }
        let asked = strategy.ask(&history, options.k).await;
        let asked = match asked {
            Ok(a) => a,
            Err(e) => return Err(e.into()),
        };
        for ex in &asked.exchanges {
            tracing::info!(
                exchange = ex.index,
                kind = %ex.kind,
                prompt_tokens = ex.response.as_ref().map(|r| r.usage.prompt_tokens),
                completion_tokens = ex.response.as_ref().map(|r| r.usage.completion_tokens),
                seconds = ex.response.as_ref().map(|r| r.latency.as_secs_f64()),
                error = ex.error.as_deref(),
                "llm exchange"
            );
            recorder.exchange(ex)?;
            usage.exchanges += 1;
            if let Some(r) = &ex.response {
                usage.prompt_tokens += r.usage.prompt_tokens;
                usage.completion_tokens += r.usage.completion_tokens;
                usage.cost_usd += r.cost_usd;
                usage.seconds += r.latency.as_secs_f64();
            }
        }
        let from_llm = !asked.exchanges.is_empty();
        if from_llm {
            usage.valid_proposals += asked.proposals.len();
            usage.invalid_proposals += asked.failed.len();
        }
        for f in &asked.failed {
            recorder.failed(f)?;
            history.failed.push(f.clone());
        }
        // Deduplicate by canonical form, against the history and within the round.
        let mut seen: Vec<String> = Vec::new();
        let mut fresh = Vec::new();
        for p in asked.proposals {
            let c = p.arch.canonical();
            if history.seen(&p.arch) || seen.contains(&c) {
                duplicates += 1;
                continue;
            }
            seen.push(c);
            fresh.push(p);
        }
        // A strategy that keeps proposing what was already evaluated (a small LLM can) must not
        // stall the run: top the round up with mutations of the best trial, or random cells.
        // With ranking, `explore` more candidates join the round the same way, so the proxies
        // choose among the strategy's proposals and cells near the best (a small LLM's proposals
        // are near copies of one another).
        let wanted = options.top_k.max(fresh.len()) + if ranker.is_some() { options.explore } else { 0 };
        let before = fresh.len();
        let mut tries = 0;
        while fresh.len() < wanted && tries < 100 + options.explore * 10 {
            tries += 1;
            let p = match history.best(1).first() {
                Some(best) => Proposal {
                    arch: best.arch.mutate(&mut rng),
                    origin: Origin::Mutation { parent: best.arch.to_string() },
                },
                None => Proposal {
                    arch: Arch::sample(&mut rng),
                    origin: Origin::Random,
                },
            };
            let c = p.arch.canonical();
            if history.seen(&p.arch) || seen.contains(&c) {
                continue;
            }
            seen.push(c);
            fresh.push(p);
        }
        let added = fresh.len() - before;
        let topped_up = added.min(options.top_k.saturating_sub(before));
        fallback += topped_up;
        explored += added - topped_up;
        if fresh.is_empty() {
            empty += 1;
            if empty >= options.max_empty_rounds {
                stopped = format!("no new candidate in {empty} rounds in a row");
                break;
            }
            continue;
        }
        empty = 0;
        // Plan the round before spending: ranking the candidates and at least one evaluation
        // must fit in what is left.
        let archs: Vec<_> = fresh.iter().map(|p| p.arch).collect();
        let cheapest = archs.iter().map(|a| evaluator.estimate_seconds(a)).fold(f64::INFINITY, f64::min);
        let ranking = ranker.as_deref().map_or(0.0, |r| r.estimate_seconds(&archs));
        if !budget.affords(1, ranking + cheapest) {
            stopped = format!("the budget left does not afford the next round (ranking ~{ranking:.1} s and an evaluation ~{cheapest:.1} s)");
            break;
        }
        rounds += 1;
        tracing::info!(round = rounds - 1, candidates = fresh.len(), duplicates, fallback, "round");
        for p in &fresh {
            recorder.proposal(rounds - 1, p)?;
        }
        // Rank.
        let scored = match ranker.as_deref_mut() {
            Some(r) => {
                let (s, secs) = r.score(&archs)?;
                // A resumed run's earlier rounds cost what they cost the first time (their scores
                // now come from the cache).
                let secs = recorder.prior_round_seconds(rounds - 1).unwrap_or(secs);
                recorder.proxy_scores(rounds - 1, &archs, &s, secs)?;
                tracing::info!(round = rounds - 1, candidates = archs.len(), seconds = secs, "ranked");
                proxy_seconds += secs;
                budget.spend(0, secs);
                Some(s)
            }
            None => None,
        };
        let mut order: Vec<usize> = (0..fresh.len()).collect();
        if let Some(s) = &scored {
            order.sort_by(|&a, &b| s[b].rank_score.total_cmp(&s[a].rank_score).then(a.cmp(&b)));
        }
        // Evaluate the top candidates the budget affords.
        let mut evaluated = 0;
        for &i in order.iter().take(options.top_k) {
            if budget.exhausted() {
                break;
            }
            let arch = fresh[i].arch;
            let estimate = evaluator.estimate_seconds(&arch);
            if !budget.affords(1, estimate) {
                break;
            }
            let mut trial = Trial {
                id: history.trials.len(),
                round: rounds - 1,
                arch,
                origin: fresh[i].origin.clone(),
                proxies: scored.as_ref().map(|s| s[i].proxies.clone()).unwrap_or_default(),
                rank_score: scored.as_ref().map(|s| s[i].rank_score),
                accuracy: None,
                test_accuracy: None,
                seconds: 0.0,
                state: TrialState::Running,
                error: None,
            };
            let mut extras = None;
            match recorder.prior_trial(trial.id) {
                // Resumed: the run evaluated this trial before it stopped.
                Some(prior) => {
                    if prior.arch.canonical() != arch.canonical() {
                        return Err(RunError::Stuck(format!(
                            "the resumed run diverged from its record at trial {}: it chose {} where the record has {} \
                             (was the run's code, proxy cache or table changed?)",
                            trial.id, arch, prior.arch
                        )));
                    }
                    trial = prior.clone();
                }
                None => {
                    recorder.trial_started(&trial)?;
                    // The trial's share: what is left of a time budget, and the per-trial limit.
                    let share = crate::task::TrialLimit::of(budget.seconds_left(), options.trial_timeout);
                    let eval = evaluator.evaluate_trial(&arch, trial.id, share);
                    trial.accuracy = eval.accuracy;
                    trial.test_accuracy = eval.test_accuracy;
                    trial.seconds = eval.seconds;
                    trial.state = if eval.pruned {
                        TrialState::Pruned
                    } else if eval.error.is_some() {
                        TrialState::Failed
                    } else {
                        TrialState::Complete
                    };
                    trial.error = eval.error.clone();
                    extras = Some(eval);
                }
            }
            budget.spend(1, trial.seconds);
            tracing::info!(
                trial = trial.id,
                arch = %trial.arch,
                state = trial.state.name(),
                accuracy = trial.accuracy,
                seconds = trial.seconds,
                restored = extras.is_none(),
                budget_used = budget.used_fraction(),
                "trial"
            );
            if let Some(e) = &trial.error {
                tracing::warn!(trial = trial.id, "trial {} {}: {e}", trial.id, trial.state.name());
            }
            recorder.trial(&trial, extras.as_ref())?;
            strategy.tell(&trial);
            on_trial(&trial, budget);
            history.trials.push(trial);
            evaluated += 1;
        }
        if evaluated == 0 {
            stopped = "the budget left does not afford the next evaluation".to_string();
            break;
        }
    }
    let summary = Summary {
        strategy: strategy.name().to_string(),
        trials: history.trials.len(),
        rounds,
        best: history.best(1).first().map(|t| (*t).clone()),
        budget: budget.limit.to_string(),
        budget_used: budget.used_fraction(),
        device_seconds: budget.seconds,
        overrun_seconds: budget.overrun_seconds,
        proxy_seconds,
        duplicates,
        fallback,
        explored,
        llm: usage,
        stopped,
    };
    recorder.summary(&summary)?;
    Ok((history, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Limit;
    use crate::llm_strategy::TaskInfo;
    use crate::strategy::RandomSearch;
    use crate::task::Evaluation;

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
            }
        }

        fn estimate_seconds(&self, _arch: &Arch) -> f64 {
            self.estimate
        }

        fn evaluate(&mut self, arch: &Arch) -> Evaluation {
            Evaluation {
                accuracy: Some(arch.ops.iter().filter(|o| o.name() == "nor_conv_3x3").count() as f64),
                test_accuracy: None,
                seconds: self.actual,
                ..Evaluation::default()
            }
        }
    }

    fn run(limit: Limit, actual: f64, estimate: f64) -> Summary {
        let mut strategy = RandomSearch::new(3);
        let mut evaluator = Costed { actual, estimate };
        let mut budget = Budget::new(limit);
        let options = LoopOptions {
            k: 4,
            top_k: 2,
            max_empty_rounds: 3,
            seed: 3,
            trial_timeout: None,
            explore: 0,
        };
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
}
