//! `autoagent bench search --schedulers ...`: the agent's multi-fidelity schedulers compared at
//! equal training cost, at no training cost.
//!
//! The NAS-Bench-201 table holds every cell's validation accuracy after 12 and after 200 epochs:
//! two rungs of a ladder. Each run is the agent's own loop ([`autoagent_agent::runner::run_loop`])
//! with one of the schedulers, on the table task wrapped in [`EpochCharged`], which charges an
//! evaluation the epochs it trains (one epoch = one device-second, the same for every cell: the
//! table records no training times) so that a time budget of `epoch_budget × 200` seconds is a
//! budget of that many training epochs:
//!
//! - `none12`: every trial trains 12 epochs (costs 12);
//! - `none200`: every trial trains 200 epochs (costs 200);
//! - `sha`, `hyperband`, `asha`: rungs 12 and 200 with η = 3: a new trial costs 12 epochs (a
//!   hyperband bracket that starts at the top rung, 200), a promotion the 188 more.
//!
//! The chronology of a run ([`chronology`]) replays its jobs (new trials and promotions) in the
//! order they ran: the epochs spent after each, and the incumbent then, the trial trained
//! longest and, among those, the best by validation accuracy (as the agent's
//! [`autoagent_agent::history::History::best`] ranks). The table reports the incumbent's 200-epoch
//! test accuracy after 10, 25, 50 and 100 % of the budget.

use anyhow::{bail, Result};
use autoagent_agent::configspace::{Config, Space};
use autoagent_agent::history::{Trial, TrialState};
use autoagent_agent::llm_strategy::TaskInfo;
use autoagent_agent::scheduler::{Scheduler, SchedulerKind};
use autoagent_agent::task::{Evaluation, Evaluator, Fidelity, TrialLimit};
use serde::Serialize;

use crate::search_nb201::Spread;

/// The schedulers `--schedulers` takes.
pub const SCHEDULERS: [&str; 5] = ["none12", "none200", "sha", "hyperband", "asha"];

/// The epochs of the table's top rung: one "full training" of the epoch budget.
pub const FULL_EPOCHS: usize = 200;

/// The reduction factor of sha, hyperband and asha.
pub const ETA: usize = 3;

/// The shares of the budget the table reports the incumbent after.
pub const FRACTIONS: [f64; 4] = [0.10, 0.25, 0.50, 1.00];

/// The agent's scheduler `name` stands for (one of [`SCHEDULERS`]).
pub fn scheduler(name: &str) -> Result<Scheduler> {
    let (kind, ladder) = match name {
        "none12" => (SchedulerKind::None, vec![12]),
        "none200" => (SchedulerKind::None, vec![FULL_EPOCHS]),
        "sha" => (SchedulerKind::Sha, vec![12, FULL_EPOCHS]),
        "hyperband" => (SchedulerKind::Hyperband, vec![12, FULL_EPOCHS]),
        "asha" => (SchedulerKind::Asha, vec![12, FULL_EPOCHS]),
        other => bail!("unknown scheduler '{other}' in --schedulers (available: {})", SCHEDULERS.join(", ")),
    };
    Scheduler::new(kind, ladder, ETA).map_err(anyhow::Error::msg)
}

/// An evaluator that charges each evaluation the epochs it trains, as device seconds (and
/// estimates the same), and otherwise is `inner`: on the table, whose lookups cost nothing, a time
/// budget becomes a budget of training epochs.
pub struct EpochCharged<E> {
    inner: E,
}

impl<E: Evaluator> EpochCharged<E> {
    /// `inner`, charged by the epoch.
    pub fn new(inner: E) -> Self {
        EpochCharged { inner }
    }

    fn charged(mut e: Evaluation, fidelity: Fidelity) -> Evaluation {
        e.seconds = fidelity.added() as f64;
        e
    }
}

impl<E: Evaluator> Evaluator for EpochCharged<E> {
    fn info(&self) -> TaskInfo {
        self.inner.info()
    }

    fn space(&self) -> &Space {
        self.inner.space()
    }

    fn estimate_seconds(&self, _config: &Config, fidelity: Fidelity) -> f64 {
        fidelity.added() as f64
    }

    fn evaluate(&mut self, config: &Config, fidelity: Fidelity) -> Evaluation {
        Self::charged(self.inner.evaluate(config, fidelity), fidelity)
    }

    fn evaluate_trial(&mut self, config: &Config, trial: usize, fidelity: Fidelity, limit: Option<TrialLimit>) -> Evaluation {
        Self::charged(self.inner.evaluate_trial(config, trial, fidelity, limit), fidelity)
    }

    fn release(&mut self, trial: usize, epochs: usize) {
        self.inner.release(trial, epochs)
    }
}

/// One job of a run (a new trial or a promotion), in the order they ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The job's number.
    pub job: usize,
    /// The trial it evaluated (its id).
    pub trial: usize,
    /// Epochs the trial had trained in all at the end of it.
    pub epochs: usize,
    /// Epochs the run had spent in all after it.
    pub spent: usize,
    /// The incumbent after it (a trial id): the trial trained longest, then the best by
    /// validation accuracy, then the earliest; `None` before the first complete evaluation.
    pub incumbent: Option<usize>,
    /// The epochs the incumbent had trained.
    pub incumbent_epochs: Option<usize>,
    /// The incumbent's test accuracy (200 epochs).
    pub test_accuracy: Option<f64>,
}

/// The run's jobs in order (by `job`), with the epochs spent and the incumbent after each.
/// A job's cost is the epochs it added to its trial (a promotion continues from the trial's
/// previous rung). A failed or pruned rung costs its epochs but never makes the incumbent; a trial
/// whose promotion failed competes at its last complete rung.
pub fn chronology(trials: &[Trial]) -> Vec<Step> {
    let mut jobs: Vec<(usize, usize, usize)> = trials
        .iter()
        .enumerate()
        .flat_map(|(t, trial)| trial.rungs.iter().enumerate().map(move |(r, rung)| (rung.job, t, r)))
        .collect();
    jobs.sort_unstable();
    let mut spent = 0;
    // The incumbent's (epochs, accuracy, trial index).
    let mut best: Option<(usize, f64, usize)> = None;
    jobs.into_iter()
        .map(|(job, t, r)| {
            let trial = &trials[t];
            let rung = &trial.rungs[r];
            let before = if r == 0 { 0 } else { trial.rungs[r - 1].epochs };
            spent += rung.epochs.saturating_sub(before);
            if let (TrialState::Complete, Some(acc)) = (rung.state, rung.accuracy) {
                let better = best.is_none_or(|(e, a, i)| {
                    (rung.epochs, acc).partial_cmp(&(e, a)).is_some_and(|o| o.is_gt()) || (rung.epochs == e && acc == a && trial.id < trials[i].id)
                });
                if better {
                    best = Some((rung.epochs, acc, t));
                }
            }
            Step {
                job,
                trial: trial.id,
                epochs: rung.epochs,
                spent,
                incumbent: best.map(|(_, _, i)| trials[i].id),
                incumbent_epochs: best.map(|(e, _, _)| e),
                test_accuracy: best.and_then(|(_, _, i)| trials[i].test_accuracy),
            }
        })
        .collect()
}

/// The incumbent's test accuracy once the run had spent at most `epochs` (`None` when no job
/// fits in that, or none had completed).
pub fn incumbent_within(steps: &[Step], epochs: f64) -> Option<f64> {
    steps
        .iter()
        .take_while(|s| s.spent as f64 <= epochs + 1e-9)
        .last()
        .and_then(|s| s.test_accuracy)
}

/// The test accuracy of the last incumbent that could have been trained on to 200 epochs (from
/// its checkpoint) within `epochs` in all: what a run delivers when training its pick to the full
/// length is paid for by its budget too.
pub fn trained_within(steps: &[Step], epochs: f64) -> Option<f64> {
    steps
        .iter()
        .rev()
        .find(|s| {
            s.incumbent_epochs
                .is_some_and(|e| (s.spent + FULL_EPOCHS.saturating_sub(e)) as f64 <= epochs + 1e-9)
        })
        .and_then(|s| s.test_accuracy)
}

/// What one run of a scheduler came to.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The incumbent's test accuracy after each of [`FRACTIONS`] of the budget.
    pub at: Vec<Option<f64>>,
    /// The incumbent's test accuracy when training it on to 200 epochs counts in the budget
    /// ([`trained_within`]).
    pub trained: Option<f64>,
    /// Trials started.
    pub trials: usize,
    /// Evaluations that trained to 200 epochs (promotions to the top rung, or trials started
    /// there).
    pub full_trainings: usize,
    /// Epochs spent in all.
    pub epochs_spent: usize,
}

impl Outcome {
    /// The outcome of a run with `trials` under a budget of `budget_epochs`.
    pub fn of(trials: &[Trial], budget_epochs: f64) -> Outcome {
        let steps = chronology(trials);
        Outcome {
            at: FRACTIONS.iter().map(|f| incumbent_within(&steps, f * budget_epochs)).collect(),
            trained: trained_within(&steps, budget_epochs),
            trials: trials.len(),
            full_trainings: trials.iter().flat_map(|t| &t.rungs).filter(|r| r.epochs == FULL_EPOCHS).count(),
            epochs_spent: steps.last().map_or(0, |s| s.spent),
        }
    }
}

/// One row: a strategy with a scheduler, over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerRow {
    /// The strategy.
    pub strategy: String,
    /// The scheduler (one of [`SCHEDULERS`]).
    pub scheduler: String,
    /// Runs.
    pub seeds: usize,
    /// Per share of the budget: the share and the incumbent's test accuracy over seeds (`None`
    /// when some run had no incumbent yet).
    pub at: Vec<(f64, Option<Spread>)>,
    /// The incumbent's test accuracy when training it on to 200 epochs counts in the budget.
    pub trained: Option<Spread>,
    /// Per run.
    pub runs: Vec<Outcome>,
    /// Wall-clock seconds of all its runs.
    pub wall_seconds: f64,
}

impl SchedulerRow {
    /// The row of `runs`.
    pub fn new(strategy: &str, scheduler: &str, runs: Vec<Outcome>, wall_seconds: f64) -> Self {
        let at = FRACTIONS
            .iter()
            .enumerate()
            .map(|(i, &f)| (f, runs.iter().map(|r| r.at[i]).collect::<Option<Vec<f64>>>().map(Spread::of)))
            .collect();
        let trained = runs.iter().map(|r| r.trained).collect::<Option<Vec<f64>>>().map(Spread::of);
        SchedulerRow {
            strategy: strategy.to_string(),
            scheduler: scheduler.to_string(),
            seeds: runs.len(),
            at,
            trained,
            runs,
            wall_seconds,
        }
    }

    fn mean_of(&self, f: impl Fn(&Outcome) -> usize) -> f64 {
        self.runs.iter().map(|r| f(r) as f64).sum::<f64>() / self.runs.len().max(1) as f64
    }
}

/// The section "Schedulers at equal training cost" of the benchmark's markdown.
pub fn markdown(dataset: &str, top_k: usize, epoch_budget: usize, rows: &[SchedulerRow]) -> String {
    let budget = epoch_budget * FULL_EPOCHS;
    let seeds = rows.first().map_or(0, |r| r.seeds);
    let mut md = format!(
        "\n## Schedulers at equal training cost\n\nNAS-Bench-201 {dataset}: test accuracy (%, mean ± sd over {seeds} seeds) of the incumbent after 10, 25, 50 and 100 % of a budget of {epoch_budget} full trainings ({epoch_budget} × {FULL_EPOCHS} = {budget} training epochs), per strategy (no proxy ranking, {top_k} candidates per round) and scheduler. The incumbent is the trial trained longest, then the best by validation accuracy at that length (as the agent ranks its best trial); the table's 12- and 200-epoch validation accuracies are the two rungs. `none12`: every trial trains 12 epochs; `none200`: every trial trains 200; `sha`, `hyperband`, `asha`: the agent's schedulers over rungs 12 and 200 with η = {ETA} (a new trial costs 12 epochs, a hyperband bracket started at the top rung 200, a promotion the 188 more). An epoch costs the same for every cell (the table records no training times), so the budget counts epochs. A 12-epoch incumbent (all of `none12`'s, and the others' before their first promotion) was never trained 200 epochs: its test accuracy presumes a training the budget did not pay for. The column \"100 %, pick trained\" charges it: the last incumbent that could still be trained on to 200 epochs (188 more from its checkpoint) within the whole budget. Trials and 200-epoch trainings are means per run; epochs spent is the most any run spent.\n\n| strategy | scheduler |"
    );
    for f in FRACTIONS {
        md.push_str(&format!(" {:.0} % ({:.0} ep) |", f * 100.0, f * budget as f64));
    }
    md.push_str(" 100 %, pick trained | trials | 200-epoch trainings | epochs spent | wall s |\n|---|---|");
    for _ in FRACTIONS {
        md.push_str("---|");
    }
    md.push_str("---|---|---|---|---|\n");
    for r in rows {
        md.push_str(&format!("| {} | {} |", r.strategy, r.scheduler));
        for (_, s) in &r.at {
            md.push_str(&format!(" {} |", s.as_ref().map_or("—".to_string(), Spread::show)));
        }
        md.push_str(&format!(
            " {} | {:.1} | {:.1} | {} | {:.1} |\n",
            r.trained.as_ref().map_or("—".to_string(), Spread::show),
            r.mean_of(|o| o.trials),
            r.mean_of(|o| o.full_trainings),
            r.runs.iter().map(|o| o.epochs_spent).max().unwrap_or(0),
            r.wall_seconds
        ));
    }
    // The best scheduler of each strategy at each share of the budget.
    let mut strategies: Vec<&str> = rows.iter().map(|r| r.strategy.as_str()).collect();
    strategies.dedup();
    if rows.iter().map(|r| &r.scheduler).collect::<std::collections::BTreeSet<_>>().len() > 1 {
        md.push_str("\nBest scheduler by mean test accuracy of the incumbent:\n\n| strategy |");
        for f in FRACTIONS {
            md.push_str(&format!(" {:.0} % |", f * 100.0));
        }
        md.push_str(" 100 %, pick trained |\n|---|");
        for _ in 0..=FRACTIONS.len() {
            md.push_str("---|");
        }
        md.push('\n');
        for s in strategies {
            md.push_str(&format!("| {s} |"));
            for i in 0..=FRACTIONS.len() {
                let best = rows
                    .iter()
                    .filter(|r| r.strategy == s)
                    .filter_map(|r| if i < FRACTIONS.len() { r.at[i].1.as_ref() } else { r.trained.as_ref() }.map(|sp| (r.scheduler.as_str(), sp.mean)))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                match best {
                    Some((name, mean)) => md.push_str(&format!(" {name} ({mean:.2}) |")),
                    None => md.push_str(" — |"),
                }
            }
            md.push('\n');
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoagent_agent::history::{Origin, Rung};
    use autoagent_agent::task::cell_config;
    use autoagent_evaluator::nb201::Arch;

    /// Trial `id` with test accuracy `test` and rungs (job, epochs, validation accuracy or
    /// failed).
    fn trial(id: usize, test: f64, rungs: &[(usize, usize, Option<f64>)]) -> Trial {
        let mut t = Trial::new(id, 0, cell_config(Arch::from_ordinal(id)), Origin::Random);
        for &(job, epochs, acc) in rungs {
            t.push_rung(Rung {
                epochs,
                accuracy: acc,
                test_accuracy: Some(test),
                seconds: 0.0,
                state: if acc.is_some() { TrialState::Complete } else { TrialState::Failed },
                job,
                ..Rung::default()
            });
        }
        t
    }

    #[test]
    fn the_chronology_replays_jobs_in_order_and_ranks_longer_training_first() {
        // Trials are listed in the order they started; jobs interleave with promotions.
        let trials = vec![
            trial(0, 90.0, &[(0, 12, Some(70.0)), (3, 200, Some(85.0))]),
            trial(1, 93.0, &[(1, 12, Some(80.0)), (5, 200, None)]),
            trial(2, 94.0, &[(2, 12, Some(75.0))]),
            trial(3, 91.0, &[(4, 12, Some(99.0))]),
            trial(4, 92.0, &[(6, 200, Some(85.0))]),
        ];
        let steps = chronology(&trials);
        type Row = (usize, usize, usize, Option<usize>, Option<f64>);
        let got: Vec<Row> = steps.iter().map(|s| (s.job, s.trial, s.spent, s.incumbent, s.test_accuracy)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0, 12, Some(0), Some(90.0)),
                // Better at 12 epochs.
                (1, 1, 24, Some(1), Some(93.0)),
                (2, 2, 36, Some(1), Some(93.0)),
                // Trial 0's promotion adds 188 epochs; at 200 epochs it beats every 12-epoch trial.
                (3, 0, 224, Some(0), Some(90.0)),
                // A 12-epoch trial never displaces a 200-epoch one, however accurate.
                (4, 3, 236, Some(0), Some(90.0)),
                // A failed promotion costs its epochs and changes nothing.
                (5, 1, 424, Some(0), Some(90.0)),
                // A tie at 200 epochs keeps the earlier trial.
                (6, 4, 624, Some(0), Some(90.0)),
            ]
        );
        assert_eq!(incumbent_within(&steps, 11.0), None);
        assert_eq!(incumbent_within(&steps, 223.9), Some(93.0));
        assert_eq!(incumbent_within(&steps, 224.0), Some(90.0));
        assert_eq!(
            steps.iter().map(|s| s.incumbent_epochs).collect::<Vec<_>>(),
            [12, 12, 12, 200, 200, 200, 200].map(Some)
        );
        // Training a 12-epoch incumbent on to 200 epochs costs 188 more: trial 0, the incumbent
        // after job 0 (12 epochs spent), is ready at 200; trial 1, after job 1 (24), at 212;
        // trial 0 promoted is ready when its job ends (224).
        assert_eq!(trained_within(&steps, 199.0), None);
        assert_eq!(trained_within(&steps, 211.0), Some(90.0));
        assert_eq!(trained_within(&steps, 212.0), Some(93.0));
        assert_eq!(trained_within(&steps, 223.0), Some(93.0));
        assert_eq!(trained_within(&steps, 224.0), Some(90.0));
        let o = Outcome::of(&trials, 1000.0);
        assert_eq!(o.at, vec![Some(93.0), Some(90.0), Some(90.0), Some(90.0)]);
        assert_eq!(o.trained, Some(90.0));
        assert_eq!((o.trials, o.full_trainings, o.epochs_spent), (5, 3, 624));
    }

    #[test]
    fn a_row_has_no_mean_where_a_run_had_no_incumbent_yet() {
        let runs = vec![
            Outcome {
                at: vec![None, Some(90.0), Some(91.0), Some(92.0)],
                trained: Some(92.0),
                trials: 2,
                full_trainings: 2,
                epochs_spent: 400,
            },
            Outcome {
                at: vec![Some(89.0), Some(91.0), Some(91.0), Some(94.0)],
                trained: Some(94.0),
                trials: 4,
                full_trainings: 1,
                epochs_spent: 236,
            },
        ];
        let row = SchedulerRow::new("random", "sha", runs, 0.0);
        assert!(row.at[0].1.is_none());
        assert_eq!(row.at[1].1.as_ref().unwrap().mean, 90.5);
        let md = markdown("cifar10", 2, 2, &[row]);
        assert!(
            md.contains("| random | sha | — | 90.50 ± 0.71 | 91.00 ± 0.00 | 93.00 ± 1.41 | 93.00 ± 1.41 | 3.0 | 1.5 | 400 |"),
            "{md}"
        );
    }

    /// A table-like task: free lookups, the accuracy a function of the cell and the epochs.
    struct Lookup {
        space: Space,
        limits: Vec<Option<TrialLimit>>,
    }

    impl Evaluator for Lookup {
        fn info(&self) -> TaskInfo {
            TaskInfo {
                description: "lookups".into(),
                metric: "accuracy".into(),
                profile: None,
            }
        }

        fn space(&self) -> &Space {
            &self.space
        }

        fn estimate_seconds(&self, _config: &Config, _fidelity: Fidelity) -> f64 {
            0.0
        }

        fn evaluate(&mut self, config: &Config, fidelity: Fidelity) -> Evaluation {
            let arch = config.cell("cell").unwrap();
            let convs = arch.to_string().matches("conv").count() as f64;
            Evaluation {
                accuracy: Some(10.0 * convs + fidelity.to as f64 / 10.0),
                test_accuracy: Some(convs),
                ..Evaluation::default()
            }
        }

        fn evaluate_trial(&mut self, config: &Config, _trial: usize, fidelity: Fidelity, limit: Option<TrialLimit>) -> Evaluation {
            self.limits.push(limit);
            self.evaluate(config, fidelity)
        }
    }

    #[test]
    fn the_loop_spends_a_time_budget_of_epochs_and_never_more() {
        use autoagent_agent::budget::{Budget, Limit};
        use autoagent_agent::runner::{run_loop, LoopOptions, Recorder};
        use autoagent_agent::strategy::RandomSearch;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for name in SCHEDULERS {
            let mut evaluator = EpochCharged::new(Lookup {
                space: autoagent_agent::configspace::cell_space(),
                limits: Vec::new(),
            });
            let mut strategy = RandomSearch::new(autoagent_agent::configspace::cell_space(), 1);
            let mut budget = Budget::new(Limit::Seconds(1000.0));
            let options = LoopOptions {
                k: 2,
                top_k: 2,
                max_empty_rounds: 3,
                seed: 1,
                trial_timeout: None,
                explore: 0,
                wall_limit: None,
                scheduler: scheduler(name).unwrap(),
                final_epochs: None,
                final_fraction: 0.0,
            };
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
            let steps = chronology(&history.trials);
            let spent = steps.last().unwrap().spent;
            // Each job was charged the epochs it trained, and the budget holds them all.
            assert_eq!(spent as f64, budget.seconds, "{name}");
            assert!(budget.seconds <= 1000.0 && summary.overrun_seconds == 0.0, "{name}: {}", budget.seconds);
            for t in &history.trials {
                let mut from = 0;
                for r in &t.rungs {
                    assert_eq!(r.seconds, (r.epochs - from) as f64, "{name}");
                    from = r.epochs;
                }
            }
            // The trial's share of what is left reaches the task.
            assert!(evaluator.inner.limits.iter().all(|l| l.is_some_and(|l| !l.timeout)));
            let o = Outcome::of(&history.trials, 1000.0);
            match name {
                "none12" => assert_eq!((o.trials, o.full_trainings, spent), (83, 0, 996)),
                "none200" => assert_eq!((o.trials, o.full_trainings, spent), (5, 5, 1000)),
                // Promoted: a 200-epoch trial is the incumbent at the end.
                _ => {
                    assert!(o.full_trainings >= 3 && o.trials > o.full_trainings, "{name}: {o:?}");
                    assert_eq!(steps.last().map(|s| history.trials[s.incumbent.unwrap()].epochs), Some(FULL_EPOCHS), "{name}");
                }
            }
        }
    }

    #[test]
    fn every_scheduler_name_is_known() {
        for name in SCHEDULERS {
            let s = scheduler(name).unwrap();
            assert_eq!(*s.ladder().last().unwrap(), if name == "none12" { 12 } else { FULL_EPOCHS });
        }
        assert!(scheduler("pbt")
            .unwrap_err()
            .to_string()
            .contains("available: none12, none200, sha, hyperband, asha"));
    }
}
