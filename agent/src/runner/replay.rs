//! How a resumed run serves its record back. The loop numbers its evaluations (jobs: new
//! trials and promotions, in the order they ran); at each step, the record's job of the next
//! number says what the run did there before it stopped, and what it passed over (a candidate
//! or a promotion that did not fit the budget then, whatever the estimates say now).

use autoagent_evaluator::nb201::Arch;

use super::RunError;
use crate::history::{Rung, Trial};
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
        job.trial.arch,
        job.rung().round
    ))
}

/// The next new candidate `arch` of `round` (trial number `id`), `later` the round's candidates
/// after it, `evaluated` new trials of the round so far.
pub(crate) fn new_candidate(prior: Option<&PriorJob>, id: usize, round: usize, arch: &Arch, later: &[Arch], evaluated: usize) -> Result<Replay, RunError> {
    let Some(job) = prior else {
        return Ok(Replay::New);
    };
    let prior_round = job.rung().round;
    let same = |a: &Arch| a.canonical() == job.trial.arch.canonical();
    if job.rung > 0 {
        return if prior_round > round && evaluated > 0 {
            Ok(Replay::EndRound)
        } else {
            Err(diverged(job, format!("a new trial of {arch}"), round))
        };
    }
    if prior_round == round && job.trial.id == id && same(arch) {
        return Ok(Replay::Recorded(job.trial.clone()));
    }
    if prior_round == round && later.iter().any(same) {
        return Ok(Replay::Skip);
    }
    if prior_round > round && evaluated > 0 {
        return Ok(Replay::EndRound);
    }
    Err(diverged(job, arch.to_string(), round))
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
