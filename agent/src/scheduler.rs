//! Multi-fidelity scheduling: which trials go on to a longer training.
//!
//! A trial is evaluated at rungs of increasing fidelity, the levels of a ladder of epochs
//! (`1, 3, 9, 27` for a minimum of 1 epoch, a maximum of 27 and η = 3; the NB201 table's 12 and
//! 200 epochs on `nb201:*` tasks). The loop asks the scheduler, before each new candidate, which
//! trials are due a promotion to their next rung ([`Scheduler::promotions`]), and at which rung a
//! new candidate starts ([`Scheduler::next_new`]). A promoted trial continues from its checkpoint.
//!
//! - `none`: one rung at the maximum (every trial trains as long as every other).
//! - `sha`: synchronous successive halving (Jamieson & Talwalkar 2016): brackets of η^s trials
//!   at the lowest rung; once every trial of a bracket has finished a rung, its best 1/η go on.
//! - `hyperband` (Li et al. 2017): successive-halving brackets that start at every rung in turn
//!   (s = s_max, …, 0), with ⌈(s_max+1)/(s+1)⌉·η^s trials each, so that some candidates are
//!   trained long from the start.
//! - `asha` (Li et al. 2020): asynchronous successive halving: a trial is promoted as soon as it
//!   is in the top 1/η of the trials that finished its rung, without waiting for a bracket to
//!   fill; new candidates start at the lowest rung.
//!
//! Every decision is a function of the trials alone (the loop replays it when a run resumes).

use crate::history::{Trial, TrialState};

/// The scheduling rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// One rung at the maximum fidelity.
    None,
    /// Synchronous successive halving.
    Sha,
    /// Hyperband.
    Hyperband,
    /// Asynchronous successive halving.
    Asha,
}

impl SchedulerKind {
    /// All of them, in the order `--help` names them.
    pub const ALL: [SchedulerKind; 4] = [SchedulerKind::None, SchedulerKind::Sha, SchedulerKind::Hyperband, SchedulerKind::Asha];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::None => "none",
            SchedulerKind::Sha => "sha",
            SchedulerKind::Hyperband => "hyperband",
            SchedulerKind::Asha => "asha",
        }
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("unknown scheduler '{s}' (available: {})", names.join(", "))
        })
    }
}

/// The epochs of each rung from `min` to `max`: `min·η^i` below `max`, then `max`.
pub fn geometric_ladder(min: usize, max: usize, eta: usize) -> Result<Vec<usize>, String> {
    if min == 0 {
        return Err("--min-epochs must be at least 1".into());
    }
    if max < min {
        return Err(format!("--max-epochs ({max}) is below --min-epochs ({min})"));
    }
    if eta < 2 {
        return Err(format!("--eta must be at least 2, got {eta}"));
    }
    let mut ladder = vec![];
    let mut e = min;
    while e < max {
        ladder.push(e);
        e = e.saturating_mul(eta);
    }
    ladder.push(max);
    Ok(ladder)
}

/// A trial's place in the schedule: the rung level it starts at and its bracket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The level of its first rung.
    pub level: usize,
    /// Its bracket (`sha`, `hyperband`).
    pub bracket: Option<usize>,
}

/// A promotion due: the trial (its index in the history) and the level it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promotion {
    /// Index of the trial in the history.
    pub trial: usize,
    /// The rung level it is promoted to.
    pub level: usize,
}

/// A scheduler over a ladder of fidelities.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Scheduler {
    kind: SchedulerKind,
    ladder: Vec<usize>,
    eta: usize,
}

impl Scheduler {
    /// `kind` over `ladder` (epochs, increasing) with reduction factor `eta`. With `none` only
    /// the ladder's top rung is used.
    pub fn new(kind: SchedulerKind, ladder: Vec<usize>, eta: usize) -> Result<Self, String> {
        if ladder.is_empty() || ladder.windows(2).any(|w| w[0] >= w[1]) || ladder[0] == 0 {
            return Err(format!("the rungs must be increasing epoch counts from 1 on, got {ladder:?}"));
        }
        if eta < 2 {
            return Err(format!("--eta must be at least 2, got {eta}"));
        }
        let ladder = if kind == SchedulerKind::None {
            vec![*ladder.last().expect("not empty")]
        } else {
            ladder
        };
        Ok(Scheduler { kind, ladder, eta })
    }

    /// The rule.
    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// Epochs of each rung level.
    pub fn ladder(&self) -> &[usize] {
        &self.ladder
    }

    /// The reduction factor.
    pub fn eta(&self) -> usize {
        self.eta
    }

    /// The rung level of a trial's rung of `epochs` (`None` when not on the ladder).
    pub fn level_of(&self, epochs: usize) -> Option<usize> {
        self.ladder.iter().position(|&e| e == epochs)
    }

    fn s_max(&self) -> usize {
        self.ladder.len() - 1
    }

    /// Bracket `b`'s first level and size (`sha`, `hyperband`).
    fn bracket(&self, b: usize) -> (usize, usize) {
        let s_max = self.s_max();
        let s = match self.kind {
            SchedulerKind::Hyperband => s_max - b % (s_max + 1),
            _ => s_max,
        };
        let n = ((s_max + 1) as f64 / (s + 1) as f64).ceil() as usize * self.eta.pow(s as u32);
        (s_max - s, n)
    }

    /// Where the next new trial starts, given the trials so far.
    pub fn next_new(&self, trials: &[Trial]) -> Start {
        match self.kind {
            SchedulerKind::None | SchedulerKind::Asha => Start { level: 0, bracket: None },
            SchedulerKind::Sha | SchedulerKind::Hyperband => {
                let last = trials.iter().filter_map(|t| t.bracket).max().unwrap_or(0);
                let members = trials.iter().filter(|t| t.bracket == Some(last)).count();
                let b = if members < self.bracket(last).1 { last } else { last + 1 };
                Start {
                    level: self.bracket(b).0,
                    bracket: Some(b),
                }
            }
        }
    }

    /// The promotions due now, in the order to run them.
    pub fn promotions(&self, trials: &[Trial]) -> Vec<Promotion> {
        match self.kind {
            SchedulerKind::None => vec![],
            SchedulerKind::Asha => self.asha(trials),
            SchedulerKind::Sha | SchedulerKind::Hyperband => {
                let last = trials.iter().filter_map(|t| t.bracket).max();
                (0..=last.unwrap_or(0)).flat_map(|b| self.synchronous(trials, b)).collect()
            }
        }
    }

    /// ASHA: from the second-highest rung down, the trials in the top ⌊n/η⌋ of the n that
    /// finished a rung, not yet promoted.
    fn asha(&self, trials: &[Trial]) -> Vec<Promotion> {
        let all: Vec<usize> = (0..trials.len()).collect();
        (0..self.s_max()).rev().flat_map(|level| self.top_of(trials, &all, level, None)).collect()
    }

    /// Successive halving in bracket `b`: once all of a rung's trials finished it, its best
    /// go on.
    fn synchronous(&self, trials: &[Trial], b: usize) -> Vec<Promotion> {
        let (start, n) = self.bracket(b);
        let members: Vec<usize> = (0..trials.len()).filter(|&i| trials[i].bracket == Some(b)).collect();
        let mut due = Vec::new();
        for (i, level) in (start..self.s_max()).enumerate() {
            let expected = n / self.eta.pow(i as u32);
            let keep = n / self.eta.pow(i as u32 + 1);
            due.extend(self.top_of(trials, &members, level, Some((expected, keep.max(1)))));
        }
        due
    }

    /// Among `members`, those that finished `level`: when `sync` = (expected, keep) and fewer
    /// than `expected` did, none; else the best `keep` (ASHA: ⌊finished/η⌋), less those already
    /// promoted or whose rung did not complete.
    fn top_of(&self, trials: &[Trial], members: &[usize], level: usize, sync: Option<(usize, usize)>) -> Vec<Promotion> {
        let epochs = self.ladder[level];
        let finished: Vec<(usize, f64)> = members
            .iter()
            .filter_map(|&i| {
                let r = trials[i].rungs.iter().find(|r| r.epochs == epochs && r.state.is_finished())?;
                let acc = if r.state == TrialState::Complete {
                    r.accuracy.unwrap_or(f64::NEG_INFINITY)
                } else {
                    f64::NEG_INFINITY
                };
                Some((i, acc))
            })
            .collect();
        let keep = match sync {
            Some((expected, _)) if finished.len() < expected => return vec![],
            Some((_, keep)) => keep,
            None => finished.len() / self.eta,
        };
        let mut ranked = finished;
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .take(keep)
            .filter(|&(i, acc)| acc.is_finite() && trials[i].rungs.last().is_some_and(|r| r.epochs == epochs))
            .map(|(i, _)| Promotion { trial: i, level: level + 1 })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Origin, Rung};
    use autoagent_evaluator::nb201::Arch;

    fn trial(id: usize, bracket: Option<usize>, rungs: &[(usize, f64)]) -> Trial {
        let arch = Arch::from_ordinal(id % 15625);
        Trial {
            rungs: rungs
                .iter()
                .enumerate()
                .map(|(j, &(epochs, acc))| Rung {
                    epochs,
                    accuracy: Some(acc),
                    state: TrialState::Complete,
                    job: id * 10 + j,
                    ..Rung::default()
                })
                .collect(),
            bracket,
            ..Trial::new(id, 0, crate::task::cell_config(arch), Origin::Random)
        }
    }

    #[test]
    fn the_ladder_grows_by_eta_up_to_the_maximum() {
        assert_eq!(geometric_ladder(1, 27, 3).unwrap(), vec![1, 3, 9, 27]);
        assert_eq!(geometric_ladder(1, 20, 3).unwrap(), vec![1, 3, 9, 20]);
        assert_eq!(geometric_ladder(2, 2, 3).unwrap(), vec![2]);
        assert!(geometric_ladder(5, 2, 3).unwrap_err().contains("below --min-epochs"));
        assert!(geometric_ladder(0, 2, 3).unwrap_err().contains("at least 1"));
        assert!(geometric_ladder(1, 9, 1).unwrap_err().contains("--eta"));
        assert_eq!("asha".parse::<SchedulerKind>(), Ok(SchedulerKind::Asha));
        assert!("pbt".parse::<SchedulerKind>().unwrap_err().contains("available: none, sha, hyperband, asha"));
    }

    #[test]
    fn asha_promotes_the_top_third_of_a_rung_as_soon_as_it_can() {
        let s = Scheduler::new(SchedulerKind::Asha, vec![1, 3, 9], 3).unwrap();
        // Two trials at rung 1: ⌊2/3⌋ = 0 promotions.
        let mut t = vec![trial(0, None, &[(1, 50.0)]), trial(1, None, &[(1, 60.0)])];
        assert!(s.promotions(&t).is_empty());
        // A third: the best of three goes on.
        t.push(trial(2, None, &[(1, 40.0)]));
        assert_eq!(s.promotions(&t), vec![Promotion { trial: 1, level: 1 }]);
        // Once promoted (it has a rung at 3), nothing is due until six have finished rung 1.
        t[1] = trial(1, None, &[(1, 60.0), (3, 70.0)]);
        assert!(s.promotions(&t).is_empty());
        for (i, acc) in [(3, 10.0), (4, 65.0), (5, 20.0)] {
            t.push(trial(i, None, &[(1, acc)]));
        }
        assert_eq!(s.promotions(&t), vec![Promotion { trial: 4, level: 1 }]);
        // The highest rung first.
        t[4] = trial(4, None, &[(1, 65.0), (3, 68.0)]);
        t[0] = trial(0, None, &[(1, 50.0), (3, 80.0)]);
        t.extend((6..9).map(|i| trial(i, None, &[(1, 1.0)])));
        assert_eq!(s.promotions(&t), vec![Promotion { trial: 0, level: 2 }]);
        assert_eq!(s.next_new(&t), Start { level: 0, bracket: None });
    }

    #[test]
    fn a_failed_or_pruned_rung_takes_a_place_but_is_never_promoted() {
        let s = Scheduler::new(SchedulerKind::Asha, vec![1, 3], 3).unwrap();
        let mut t: Vec<Trial> = (0..3).map(|i| trial(i, None, &[(1, 10.0 * i as f64)])).collect();
        t[2].rungs[0].state = TrialState::Pruned;
        // The pruned trial (best by its partial number) counts among the three that finished
        // the rung, so one goes on: the best complete one.
        assert_eq!(s.promotions(&t), vec![Promotion { trial: 1, level: 1 }]);
        t[1].rungs[0].state = TrialState::Failed;
        assert_eq!(s.promotions(&t), vec![Promotion { trial: 0, level: 1 }]);
    }

    #[test]
    fn sha_waits_for_its_bracket_then_keeps_the_best_third() {
        let s = Scheduler::new(SchedulerKind::Sha, vec![1, 3, 9], 3).unwrap();
        let mut t = Vec::new();
        for i in 0..9 {
            assert_eq!(s.next_new(&t), Start { level: 0, bracket: Some(0) }, "trial {i}");
            assert!(s.promotions(&t).is_empty());
            t.push(trial(i, Some(0), &[(1, i as f64)]));
        }
        // The bracket is full: the 10th trial opens bracket 1; the best 3 of bracket 0 go on.
        assert_eq!(s.next_new(&t).bracket, Some(1));
        assert_eq!(s.promotions(&t).iter().map(|p| p.trial).collect::<Vec<_>>(), vec![8, 7, 6]);
        t[8] = trial(8, Some(0), &[(1, 8.0), (3, 30.0)]);
        t[7] = trial(7, Some(0), &[(1, 7.0), (3, 40.0)]);
        // Rung 3 is not complete (6 is still to run): only 6's promotion is due.
        assert_eq!(s.promotions(&t), vec![Promotion { trial: 6, level: 1 }]);
        t[6] = trial(6, Some(0), &[(1, 6.0), (3, 35.0)]);
        assert_eq!(s.promotions(&t), vec![Promotion { trial: 7, level: 2 }]);
    }

    #[test]
    fn hyperband_brackets_start_at_every_rung_in_turn() {
        let s = Scheduler::new(SchedulerKind::Hyperband, vec![1, 3, 9], 3).unwrap();
        // s_max = 2: brackets of 9 trials at rung 0, 3·... = ⌈3/2⌉·3 = 6 at rung 1, 3 at rung 2.
        assert_eq!(s.bracket(0), (0, 9));
        assert_eq!(s.bracket(1), (1, 6));
        assert_eq!(s.bracket(2), (2, 3));
        assert_eq!(s.bracket(3), (0, 9));
        let t: Vec<Trial> = (0..9).map(|i| trial(i, Some(0), &[(1, i as f64)])).collect();
        assert_eq!(s.next_new(&t), Start { level: 1, bracket: Some(1) });
    }

    #[test]
    fn none_uses_the_top_rung_only() {
        let s = Scheduler::new(SchedulerKind::None, vec![1, 3, 9], 3).unwrap();
        assert_eq!(s.ladder(), &[9]);
        let t: Vec<Trial> = (0..9).map(|i| trial(i, None, &[(9, i as f64)])).collect();
        assert!(s.promotions(&t).is_empty());
        assert!(Scheduler::new(SchedulerKind::Asha, vec![3, 1], 3).is_err());
    }
}
