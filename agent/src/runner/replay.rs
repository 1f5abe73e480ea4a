//! How a resumed run serves its record back. The loop numbers its evaluations (jobs: new
//! trials and promotions, in the order they ran); at each step, the record's job of the next
//! number says what the run did there before it stopped, and what it passed over (a candidate
//! or a promotion that did not fit the budget then, whatever the estimates say now).

use super::RunError;
use crate::configspace::Config;
use crate::history::{Proposal, Rung, Trial};
use crate::scheduler::Promotion;

/// A recorded job: the trial as it stood after it, and which of its rungs it ran.
#[derive(Debug, Clone)]
pub(crate) struct PriorJob {
    /// The trial after the job.
    pub trial: Trial,
    /// The index of the job's rung in the trial's rungs (0: the trial was new).
    pub rung: usize,
}

impl PriorJob {
    fn rung(&self) -> &Rung {
        &self.trial.rungs[self.rung]
    }
}

/// What a resumed run does with the next candidate of a round.
pub(crate) enum Replay {
    /// Not recorded: evaluate it if it fits.
    New,
    /// Recorded: serve the record back (it fitted then, whatever the estimate says now).
    Recorded(Trial),
    /// The record evaluated a later candidate of this round: this one did not fit then.
    Skip,
    /// The record's next job belongs to a later round: this round's evaluations are done.
    EndRound,
}

fn diverged(job: &PriorJob, what: String, round: usize) -> RunError {
    RunError::Stuck(format!(
        "the resumed run diverged from its record at trial {}: it chose {what} in round {round} where the record has {} in round {} \
         (was the run's code, proxy cache or table changed?)",
        job.trial.id,
        job.trial.config,
        job.rung().round
    ))
}

/// The next new candidate `config` of `round` (trial number `id`), `later` the round's
/// candidates after it, `evaluated` new trials of the round so far.
pub(crate) fn new_candidate(
    prior: Option<&PriorJob>,
    id: usize,
    round: usize,
    config: &Config,
    later: &[Config],
    evaluated: usize,
) -> Result<Replay, RunError> {
    let Some(job) = prior else {
        return Ok(Replay::New);
    };
    let prior_round = job.rung().round;
    let key = job.trial.config.key();
    let same = |c: &Config| c.key() == key;
    if job.rung > 0 {
        return if prior_round > round && evaluated > 0 {
            Ok(Replay::EndRound)
        } else {
            Err(diverged(job, format!("a new trial of {config}"), round))
        };
    }
    if prior_round == round && job.trial.id == id && same(config) {
        return Ok(Replay::Recorded(job.trial.clone()));
    }
    if prior_round == round && later.iter().any(same) {
        return Ok(Replay::Skip);
    }
    if prior_round > round && evaluated > 0 {
        return Ok(Replay::EndRound);
    }
    Err(diverged(job, config.to_string(), round))
}

/// Put a recorded round's candidates in their recorded order (`keys`, [`Config::key`]s; the
/// run may have moved those its budget afforded first) and keep as many as it had; those not
/// found keep their place after them (the run then diverges, and says so where it evaluates).
pub(crate) fn recorded_order(fresh: &mut Vec<Proposal>, keys: &[String]) -> usize {
    let mut rest = std::mem::take(fresh);
    for key in keys {
        if let Some(i) = rest.iter().position(|p| p.config.key() == *key) {
            fresh.push(rest.remove(i));
        }
    }
    fresh.extend(rest);
    keys.len().min(fresh.len())
}

/// Which of the promotions `due` (in the scheduler's order; `trials` the history) the record
/// ran next in `round`: `Ok(Some((promotion, rung)))` to serve back, `Ok(None)` when the record
/// went on with a new trial (or a later round) instead.
pub(crate) fn promotion(prior: &PriorJob, due: &[Promotion], trials: &[Trial], ladder: &[usize], round: usize) -> Result<Option<(Promotion, Rung)>, RunError> {
    if prior.rung == 0 || prior.rung().round > round {
        return Ok(None);
    }
    let epochs = prior.rung().epochs;
    match due.iter().find(|p| trials[p.trial].id == prior.trial.id && ladder[p.level] == epochs) {
        Some(p) => Ok(Some((*p, prior.rung().clone()))),
        None => Err(diverged(prior, "other promotions".into(), round)),
    }
}
