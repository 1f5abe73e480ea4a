//! The loop, stage by stage: ask the strategy ([`Loop::ask`]), keep the new candidates
//! ([`Loop::fresh`]), size the round to what the budget affords ([`Loop::round_size`]), rank
//! ([`Loop::rank`]), then evaluate the best-ranked candidates that fit, each preceded by the
//! promotions the scheduler has due ([`Loop::evaluate_round`], [`Loop::promote_due`]). With a
//! trial budget, the promotions still due once it is spent are run at the end ([`Loop::drain`]).

use std::time::Instant;

use super::replay::{self, Replay};
use super::{LlmUsage, LoopOptions, Recorder, RunError, Summary};
use crate::budget::{Budget, Limit};
use crate::configspace::{Config, Space};
use crate::final_model::FinalModel;
use crate::history::{History, Origin, Proposal, Rung, Trial, TrialState};
use crate::ranker::{Ranker, Scored};
use crate::scheduler::Promotion;
use crate::strategy::{Asked, Strategy};
use crate::task::{Evaluation, Evaluator, Fidelity, TrialLimit};

/// How much more than its estimate the final model's training is planned for.
const FINAL_MARGIN: f64 = 1.1;

/// The share of a time budget the final model may overrun it by, rather than be stopped.
const OVERRUN_ALLOWED: f64 = 0.05;

/// With a time budget, ranking a round may cost at most this share of the training of the
/// candidates it chooses (the round's `top_k` at their estimates): ranking 16 candidates to
/// choose 2 one-minute trainings pays, to choose 2 ten-second ones it costs more than it saves.
const RANKING_SHARE: f64 = 0.25;

/// The largest share of a time budget a new trial's first rung may be estimated to take while
/// cheaper candidates are at hand: many short first rungs (Hyperband's point), not one network
/// that eats the budget before anything is compared.
const FIRST_RUNG_SHARE: f64 = 0.125;

/// What the loop counts for the summary.
#[derive(Debug, Default)]
struct Counts {
    rounds: usize,
    duplicates: usize,
    proxy_seconds: f64,
    empty: usize,
    fallback: usize,
    explored: usize,
    /// Rounds in a row none of whose candidates the budget left affords.
    unaffordable: usize,
    /// The final model's reserve was cut to its planned need ([`Loop::release_reserve`]).
    reserve_released: bool,
}

/// The loop's parts and state.
struct Loop<'a> {
    strategy: &'a mut dyn Strategy,
    evaluator: &'a mut dyn Evaluator,
    ranker: Option<&'a mut Ranker>,
    budget: &'a mut Budget,
    options: &'a LoopOptions,
    recorder: &'a mut Recorder,
    on_trial: &'a mut dyn FnMut(&Trial, &Budget),
    history: History,
    usage: LlmUsage,
    counts: Counts,
    rng: rand_chacha::ChaCha8Rng,
    /// The task's search space (the top-up's mutations and draws).
    space: Space,
    started: Instant,
    /// Evaluations done (new trials and promotions): the number of the next.
    jobs: usize,
}

/// Run the loop until the budget is spent.
pub async fn run_loop(
    strategy: &mut dyn Strategy,
    evaluator: &mut dyn Evaluator,
    ranker: Option<&mut Ranker>,
    budget: &mut Budget,
    options: &LoopOptions,
    recorder: &mut Recorder,
    mut on_trial: impl FnMut(&Trial, &Budget),
) -> Result<(History, Summary), RunError> {
    let space = evaluator.space().clone();
    let mut l = Loop {
        strategy,
        evaluator,
        ranker,
        budget,
        options,
        recorder,
        on_trial: &mut on_trial,
        history: History::default(),
        usage: LlmUsage::default(),
        counts: Counts::default(),
        rng: <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(options.seed ^ 0x5eed_f411),
        space,
        started: Instant::now(),
        jobs: 0,
    };
    if options.final_epochs.is_some() {
        l.budget.reserve(options.final_fraction);
    }
    let stopped = l.rounds().await?;
    l.drain()?;
    l.budget.release();
    let final_model = l.final_model()?;
    l.finish(stopped, final_model)
}

/// What an epoch of trial `t` took in the search: its complete rungs' seconds over the epochs
/// they reached (`None` before any).
fn epoch_seconds(t: &Trial) -> Option<f64> {
    let complete: Vec<&Rung> = t.rungs.iter().filter(|r| r.state == TrialState::Complete).collect();
    let trained = complete.last().map_or(0, |r| r.epochs);
    (trained > 0).then(|| complete.iter().map(|r| r.seconds).sum::<f64>() / trained as f64)
}

impl Loop<'_> {
    fn wall_left(&self) -> Option<f64> {
        self.options.wall_limit.map(|w| w - self.started.elapsed().as_secs_f64())
    }

    /// The wall clock the search may still use: what is left of `--wall-limit` less the final
    /// model's planned need (its retraining of the incumbent; the final model gets the rest).
    /// Not the whole reserve: `--final-fraction` is given back to the search when it can use it,
    /// which a clock that stops the search first would never let happen.
    fn search_wall_left(&self) -> Option<f64> {
        let need = match self.budget.limit {
            Limit::Seconds(_) => self.history.best(1).first().map_or(0.0, |b| self.final_reserve(b, b.epochs)),
            Limit::Trials(_) => 0.0,
        };
        self.wall_left().map(|w| w - need)
    }

    fn wall_spent(&self) -> bool {
        self.search_wall_left().is_some_and(|w| w <= 0.0)
    }

    /// Rounds until the budget, the wall clock or the candidates run out; why it stopped.
    async fn rounds(&mut self) -> Result<String, RunError> {
        loop {
            if self.budget.exhausted() {
                return Ok("budget spent".to_string());
            }
            if self.wall_spent() {
                return Ok(format!("the wall-clock limit ({:.0} s) was reached", self.options.wall_limit.unwrap_or(0.0)));
            }
            let asked = self.strategy.ask(&self.history, self.options.k).await?;
            let fresh = self.fresh(asked)?;
            if fresh.is_empty() {
                self.counts.empty += 1;
                if self.counts.empty >= self.options.max_empty_rounds {
                    return Ok(format!("no new candidate in {} rounds in a row", self.counts.empty));
                }
                continue;
            }
            self.counts.empty = 0;
            let mut fresh = fresh;
            self.reserve_for_final();
            let sized = match self.recorder.prior_round(self.counts.rounds) {
                Some(keys) => Ok(replay::recorded_order(&mut fresh, keys)),
                None => {
                    self.affordable_first(&mut fresh);
                    self.round_size(&fresh)
                }
            };
            let size = match sized {
                Ok(n) => n,
                // A space of networks of every size: the next round's may be smaller.
                Err(_) if self.release_reserve() => continue,
                Err(why) => {
                    self.counts.unaffordable += 1;
                    if self.counts.unaffordable >= self.options.max_empty_rounds {
                        return Ok(why);
                    }
                    continue;
                }
            };
            self.counts.unaffordable = 0;
            fresh.truncate(size);
            self.counts.rounds += 1;
            let round = self.counts.rounds - 1;
            tracing::info!(
                round,
                candidates = fresh.len(),
                duplicates = self.counts.duplicates,
                fallback = self.counts.fallback,
                "round"
            );
            for p in &fresh {
                self.recorder.proposal(round, p)?;
            }
            let scored = self.rank(round, &fresh)?;
            if let Some(why) = self.evaluate_round(round, &fresh, scored.as_deref())? {
                if self.release_reserve() {
                    continue;
                }
                return Ok(why);
            }
        }
    }

    /// Record what the strategy answered (LLM exchanges, rejected proposals).
    fn record_asked(&mut self, asked: &Asked) -> Result<(), RunError> {
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
            self.recorder.exchange(ex)?;
            self.usage.exchanges += 1;
            if let Some(r) = &ex.response {
                self.usage.prompt_tokens += r.usage.prompt_tokens;
                self.usage.completion_tokens += r.usage.completion_tokens;
                self.usage.cost_usd += r.cost_usd;
                self.usage.seconds += r.latency.as_secs_f64();
            }
        }
        if !asked.exchanges.is_empty() {
            self.usage.valid_proposals += asked.proposals.len();
            self.usage.invalid_proposals += asked.failed.len();
        }
        for f in &asked.failed {
            self.recorder.failed(f)?;
            self.history.failed.push(f.clone());
        }
        Ok(())
    }

    /// The round's new candidates: the strategy's, less those equivalent ([`Config::key`]: an
    /// isomorphic cell) to an evaluated one or to an earlier one of the round, topped up (see
    /// [`Loop::top_up`]).
    fn fresh(&mut self, asked: Asked) -> Result<Vec<Proposal>, RunError> {
        self.record_asked(&asked)?;
        let mut seen: Vec<String> = Vec::new();
        let mut fresh = Vec::new();
        // The task's starting points not evaluated yet go first.
        let starts: Vec<Proposal> = self
            .evaluator
            .starting_points()
            .into_iter()
            .filter(|c| !self.history.seen(c))
            .map(|config| Proposal { config, origin: Origin::Start })
            .collect();
        for p in starts.into_iter().chain(asked.proposals) {
            let c = p.config.key();
            if self.history.seen(&p.config) || seen.contains(&c) {
                self.counts.duplicates += 1;
                continue;
            }
            seen.push(c);
            fresh.push(p);
        }
        self.top_up(&mut fresh, seen);
        Ok(fresh)
    }

    /// A strategy that keeps proposing what was already evaluated (a small LLM can) must not
    /// stall the run: top the round up with mutations of the best trial, or random
    /// configurations. With ranking, `explore` more candidates join the round the same way, so
    /// the proxies choose among the strategy's proposals and configurations near the best (a
    /// small LLM's proposals are near copies of one another).
    fn top_up(&mut self, fresh: &mut Vec<Proposal>, mut seen: Vec<String>) {
        let options = self.options;
        let ranked = self.ranker.is_some() || self.evaluator.ranks();
        let wanted = options.top_k.max(fresh.len()) + if ranked { options.explore } else { 0 };
        let before = fresh.len();
        let mut tries = 0;
        while fresh.len() < wanted && tries < 100 + options.explore * 10 {
            tries += 1;
            let p = match self.history.best(1).first() {
                Some(best) => Proposal {
                    config: self.space.mutate(&best.config, &mut self.rng),
                    origin: Origin::Mutation {
                        parent: best.config.to_string(),
                    },
                },
                None => Proposal {
                    config: self.space.sample(&mut self.rng),
                    origin: Origin::Random,
                },
            };
            let c = p.config.key();
            if self.history.seen(&p.config) || seen.contains(&c) {
                continue;
            }
            seen.push(c);
            fresh.push(p);
        }
        let added = fresh.len() - before;
        let topped_up = added.min(options.top_k.saturating_sub(before));
        self.counts.fallback += topped_up;
        self.counts.explored += added - topped_up;
    }

    /// Keep enough of a time budget for the final model: the reserve is the larger of
    /// `--final-fraction` and the planned retraining of the incumbent at the epochs it was
    /// searched at (so that promoting the best trials never leaves too little to retrain the
    /// best).
    fn reserve_for_final(&mut self) {
        let (Some(_), Limit::Seconds(limit)) = (self.options.final_epochs, self.budget.limit) else {
            return;
        };
        let need = self.history.best(1).first().map_or(0.0, |b| self.final_reserve(b, b.epochs));
        let held = match self.counts.reserve_released {
            true => need,
            false => (limit * self.options.final_fraction).max(need),
        };
        self.budget.reserved = held.min(limit);
    }

    /// When the search can afford nothing more but holds back more for the final model than
    /// its planned retraining of the incumbent needs, give the search the difference (once):
    /// `true` if that freed anything.
    fn release_reserve(&mut self) -> bool {
        if self.counts.reserve_released || self.options.final_epochs.is_none() || self.history.best(1).is_empty() {
            return false;
        }
        let before = self.budget.reserved;
        self.counts.reserve_released = true;
        self.reserve_for_final();
        self.budget.reserved < before
    }

    /// The planned seconds of retraining trial `t`'s configuration for `epochs` as the final
    /// model.
    fn final_need(&self, t: &Trial, epochs: usize) -> f64 {
        if self.options.final_epochs.is_none() {
            return 0.0;
        }
        self.final_estimate(t, epochs).map_or(0.0, |s| FINAL_MARGIN * s)
    }

    /// What the budget holds back for the final model once its fraction is given back to the
    /// search: what the evaluator plans for it ([`Evaluator::final_reserve_seconds`]: a tabular
    /// ensemble's refits of several trials), with a tenth to spare, but never more than the larger
    /// of `--final-fraction` and the retraining of the incumbent alone ([`Loop::final_need`]).
    fn final_reserve(&self, t: &Trial, epochs: usize) -> f64 {
        let need = self.final_need(t, epochs);
        let (Some(_), Limit::Seconds(limit)) = (self.options.final_epochs, self.budget.limit) else {
            return need;
        };
        let planned = self
            .evaluator
            .final_reserve_seconds(&t.config, epochs.max(1), epoch_seconds(t))
            .map_or(need, |s| FINAL_MARGIN * s);
        planned.min((limit * self.options.final_fraction).max(need)).max(need)
    }

    /// The estimated seconds of retraining trial `t`'s configuration for `epochs`, from what
    /// its epochs took in the search.
    fn final_estimate(&self, t: &Trial, epochs: usize) -> Option<f64> {
        self.evaluator.estimate_final_seconds(&t.config, epochs.max(1), epoch_seconds(t))
    }

    /// The fidelity a new trial starts at now.
    fn new_fidelity(&self) -> (Fidelity, Option<usize>) {
        let start = self.options.scheduler.next_new(&self.history.trials);
        (Fidelity::new(self.options.scheduler.ladder()[start.level]), start.bracket)
    }

    /// The candidates whose evaluation the budget left affords first, those within the first
    /// rung's share ([`FIRST_RUNG_SHARE`]) before the others, each part in its order (a space of
    /// networks of every size: near the end of a budget, only small ones fit).
    fn affordable_first(&self, fresh: &mut [Proposal]) {
        let (fidelity, _) = self.new_fidelity();
        // A stable sort: each part keeps its order.
        fresh.sort_by_cached_key(|p| {
            let secs = self.evaluator.estimate_seconds(&p.config, fidelity);
            match (self.budget.affords(1, secs), self.within_share(secs)) {
                (true, true) => 0,
                (true, false) => 1,
                (false, _) => 2,
            }
        });
    }

    /// Whether a new trial estimated at `secs` for its first rung stays within the share of a
    /// time budget a first rung may take (always, with a trial budget).
    fn within_share(&self, secs: f64) -> bool {
        match self.budget.limit {
            Limit::Seconds(limit) => secs <= FIRST_RUNG_SHARE * limit,
            Limit::Trials(_) => true,
        }
    }

    /// Whether the budget affords a new trial at `secs`; while the round has candidates within
    /// the first rung's share (`capped`), only those.
    fn affords_new(&self, secs: f64, capped: bool) -> bool {
        self.budget.affords(1, secs) && (!capped || self.within_share(secs))
    }

    /// How many of the round's candidates it ranks and chooses among: all of them when the
    /// budget affords ranking them and the cheapest evaluation (and, with a time budget, the
    /// ranking costs at most [`RANKING_SHARE`] of the training it chooses, never fewer than two
    /// candidates for that); else the most that fit (ranking costs more with each), down to a
    /// single candidate evaluated unranked; `Err(why)` when not even that fits. (A resumed
    /// run's recorded rounds keep their candidates and order.)
    fn round_size(&self, fresh: &[Proposal]) -> Result<usize, String> {
        let configs: Vec<Config> = fresh.iter().map(|p| p.config.clone()).collect();
        let (fidelity, _) = self.new_fidelity();
        let estimates: Vec<f64> = configs.iter().map(|a| self.evaluator.estimate_seconds(a, fidelity)).collect();
        let cheapest = |n: usize| estimates[..n].iter().copied().fold(f64::INFINITY, f64::min);
        let ranking = |n: usize| match (&self.ranker, n) {
            (Some(r), 2..) => r.estimate_seconds(&configs[..n]),
            (None, 2..) if self.evaluator.ranks() => self.evaluator.rank_estimate_seconds(&configs[..n]),
            _ => 0.0,
        };
        // With a time budget, the ranking's cost is held to its share of the training it chooses.
        let worth = |n: usize| match self.budget.limit {
            Limit::Seconds(_) if n > 2 => {
                let mean = estimates[..n].iter().sum::<f64>() / n as f64;
                ranking(n) <= RANKING_SHARE * mean * n.min(self.options.top_k) as f64
            }
            _ => true,
        };
        if let Some(n) = (1..=configs.len())
            .rev()
            .find(|&n| self.budget.affords(1, ranking(n) + cheapest(n)) && worth(n))
        {
            return Ok(n);
        }
        Err(format!(
            "the budget left does not afford the next round (ranking ~{:.1} s and an evaluation ~{:.1} s)",
            ranking(configs.len()),
            cheapest(configs.len())
        ))
    }

    /// The proxy scores of the round's candidates (none without a ranker, or a task that ranks
    /// its own: [`Evaluator::rank`]).
    fn rank(&mut self, round: usize, fresh: &[Proposal]) -> Result<Option<Vec<Scored>>, RunError> {
        if self.ranker.is_none() && !self.evaluator.ranks() {
            return Ok(None);
        }
        let configs: Vec<Config> = fresh.iter().map(|p| p.config.clone()).collect();
        if configs.len() < 2 {
            // One candidate (all the budget left affords) is evaluated unranked.
            self.recorder.proxy_scores(round, &[], &[], 0.0)?;
            return Ok(None);
        }
        self.recorder.round_started(round);
        let (s, secs) = match self.ranker.as_deref_mut() {
            Some(r) => r.score(&configs)?,
            None => match self.evaluator.rank(&configs) {
                Some(ranked) => ranked,
                None => return Ok(None),
            },
        };
        // A resumed run's earlier rounds cost what they cost the first time (their scores now
        // come from the cache).
        let secs = self.recorder.prior_round_seconds(round).unwrap_or(secs);
        self.recorder.proxy_scores(round, &configs, &s, secs)?;
        tracing::info!(round, candidates = configs.len(), seconds = secs, "ranked");
        self.counts.proxy_seconds += secs;
        self.budget.spend(0, secs);
        Ok(Some(s))
    }

    /// Evaluate the best-ranked candidates the budget affords, skipping those that do not fit,
    /// each after the promotions due; `Some(why)` when nothing could be evaluated.
    fn evaluate_round(&mut self, round: usize, fresh: &[Proposal], scored: Option<&[Scored]>) -> Result<Option<String>, RunError> {
        let order = scored.map_or_else(|| (0..fresh.len()).collect(), crate::ranker::evaluation_order);
        let capped = self.any_within_share(fresh);
        let (mut evaluated, mut promoted) = (0, 0);
        for (pos, &i) in order.iter().enumerate() {
            if evaluated == self.options.top_k || self.budget.exhausted() || self.wall_spent() {
                break;
            }
            promoted += self.promote_due(round)?;
            self.reserve_for_final();
            if self.budget.exhausted() || self.wall_spent() {
                break;
            }
            let config = fresh[i].config.clone();
            let later: Vec<Config> = order[pos + 1..].iter().map(|&j| fresh[j].config.clone()).collect();
            let (fidelity, bracket) = self.new_fidelity();
            let id = self.history.trials.len();
            let prior = match replay::new_candidate(self.recorder.prior_job(self.jobs).as_ref(), id, round, &config, &later, evaluated)? {
                Replay::EndRound => break,
                Replay::Skip => continue,
                Replay::Recorded(t) => Some(t),
                Replay::New if !self.affords_new(self.evaluator.estimate_seconds(&config, fidelity), capped) => continue,
                Replay::New => None,
            };
            let trial = Trial {
                proxies: scored.map(|s| s[i].proxies.clone()).unwrap_or_default(),
                rank_score: scored.map(|s| s[i].rank_score),
                bracket,
                ..Trial::new(id, round, config, fresh[i].origin.clone())
            };
            self.run_new(trial, fidelity, prior)?;
            evaluated += 1;
        }
        // (Past the wall-clock limit the top of the loop says so.)
        if evaluated + promoted == 0 && !self.wall_spent() {
            return Ok(Some("the budget left does not afford the next evaluation".to_string()));
        }
        Ok(None)
    }

    /// Whether any of the round's candidates is affordable within the first rung's share (else
    /// the round takes any the budget affords: a space narrowed to large networks still runs).
    fn any_within_share(&self, fresh: &[Proposal]) -> bool {
        let (fidelity, _) = self.new_fidelity();
        fresh.iter().any(|p| {
            let secs = self.evaluator.estimate_seconds(&p.config, fidelity);
            self.affords_new(secs, true)
        })
    }

    /// Run the promotions the scheduler has due, in its order, that fit (or that the record
    /// ran); how many.
    fn promote_due(&mut self, round: usize) -> Result<usize, RunError> {
        let mut done = 0;
        let options = self.options;
        while !self.wall_spent() {
            self.reserve_for_final();
            let due = options.scheduler.promotions(&self.history.trials);
            let ladder = options.scheduler.ladder();
            let pick = match self.recorder.prior_job(self.jobs) {
                Some(prior) => replay::promotion(&prior, &due, &self.history.trials, ladder, round)?.map(|(p, r)| (p, Some(r))),
                None => due.into_iter().find(|p| self.affords_promotion(p)).map(|p| (p, None)),
            };
            let Some((p, recorded)) = pick else {
                break;
            };
            self.run_promotion(p, round, recorded)?;
            done += 1;
        }
        Ok(done)
    }

    fn promotion_fidelity(&self, p: &Promotion) -> Fidelity {
        let from = self.history.trials[p.trial].rungs.last().map_or(0, |r| r.epochs);
        Fidelity {
            from,
            to: self.options.scheduler.ladder()[p.level],
        }
    }

    /// Whether the budget affords promotion `p`, and then retraining the promoted trial as the
    /// final model at its new epochs should it become the best.
    fn affords_promotion(&self, p: &Promotion) -> bool {
        let t = &self.history.trials[p.trial];
        let fidelity = self.promotion_fidelity(p);
        let secs = self.evaluator.estimate_seconds(&t.config, fidelity);
        let more_reserve = (self.final_need(t, fidelity.to) - self.budget.reserved).max(0.0);
        match self.budget.limit {
            Limit::Seconds(_) => self.budget.affords(0, secs + more_reserve),
            Limit::Trials(_) => true,
        }
    }

    /// Evaluate trial `t` (live) at `fidelity` as the next job of `round`.
    fn evaluate(&mut self, t: &Trial, fidelity: Fidelity, round: usize) -> Result<(Rung, Evaluation), RunError> {
        self.recorder.trial_started(t, self.jobs)?;
        // The trial's share: what is left of a time budget, and the per-trial limit.
        let timeout = match (self.options.trial_timeout, self.search_wall_left()) {
            (Some(t), Some(w)) => Some(t.min(w)),
            (t, w) => t.or(w),
        };
        let share = TrialLimit::of(self.budget.seconds_left(), timeout);
        let eval = self.evaluator.evaluate_trial(&t.config, t.id, fidelity, share);
        let state = eval.state();
        let rung = Rung {
            epochs: fidelity.to,
            accuracy: eval.accuracy,
            test_accuracy: eval.test_accuracy,
            seconds: eval.seconds,
            state,
            error: eval.error.clone(),
            job: self.jobs,
            round,
        };
        Ok((rung, eval))
    }

    /// Evaluate a new trial (or serve back its record, `prior`) and tell the strategy.
    fn run_new(&mut self, mut trial: Trial, fidelity: Fidelity, prior: Option<Trial>) -> Result<(), RunError> {
        let eval = match prior {
            Some(p) => {
                trial = p;
                None
            }
            None => {
                let (rung, eval) = self.evaluate(&trial, fidelity, trial.round)?;
                trial.push_rung(rung);
                Some(eval)
            }
        };
        self.budget.spend(1, trial.seconds);
        self.finished(&trial, eval.as_ref())?;
        self.strategy.tell(&trial);
        self.history.trials.push(trial);
        Ok(())
    }

    /// Continue trial `p.trial` to its next rung (or serve back the record's rung).
    fn run_promotion(&mut self, p: Promotion, round: usize, recorded: Option<Rung>) -> Result<(), RunError> {
        let mut trial = self.history.trials[p.trial].clone();
        let fidelity = self.promotion_fidelity(&p);
        let eval = match recorded {
            Some(rung) => {
                trial.push_rung(rung);
                None
            }
            None => {
                let (rung, eval) = self.evaluate(&trial, fidelity, round)?;
                trial.push_rung(rung);
                Some(eval)
            }
        };
        let rung = trial.rungs.last().expect("just pushed").clone();
        self.budget.spend(0, rung.seconds);
        self.finished(&trial, eval.as_ref())?;
        if rung.state == TrialState::Complete {
            self.evaluator.release(trial.id, fidelity.from);
        }
        self.history.trials[p.trial] = trial;
        Ok(())
    }

    /// A job ended: log, record, report.
    fn finished(&mut self, trial: &Trial, eval: Option<&Evaluation>) -> Result<(), RunError> {
        tracing::info!(
            trial = trial.id,
            config = %trial.config,
            epochs = trial.rungs.last().map(|r| r.epochs),
            state = trial.rungs.last().map_or(trial.state.name(), |r| r.state.name()),
            accuracy = trial.accuracy,
            seconds = trial.seconds,
            restored = eval.is_none(),
            budget_used = self.budget.used_fraction(),
            "trial"
        );
        if let Some(e) = trial.rungs.last().and_then(|r| r.error.as_ref()) {
            tracing::warn!(
                trial = trial.id,
                "trial {} {}: {e}",
                trial.id,
                trial.rungs.last().map_or("", |r| r.state.name())
            );
        }
        self.recorder.trial(trial, eval, self.jobs)?;
        self.jobs += 1;
        (self.on_trial)(trial, self.budget);
        Ok(())
    }

    /// With a trial budget spent, the promotions still due (they add no trial).
    fn drain(&mut self) -> Result<(), RunError> {
        if matches!(self.budget.limit, Limit::Trials(_)) && self.budget.exhausted() {
            let round = self.counts.rounds.saturating_sub(1);
            self.promote_due(round)?;
        }
        Ok(())
    }

    /// Retrain the best configuration at full fidelity on the whole training split (or serve
    /// back the record of it, or say why not).
    fn final_model(&mut self) -> Result<Option<FinalModel>, RunError> {
        let Some(max_epochs) = self.options.final_epochs else {
            return Ok(None);
        };
        if let Some(recorded) = self.recorder.prior_final() {
            return Ok(Some(recorded));
        }
        let Some(best) = self.history.best(1).first().map(|t| (*t).clone()) else {
            return Ok(None);
        };
        let estimate = |e: usize| self.final_estimate(&best, e);
        if estimate(max_epochs).is_none() {
            return Ok(None);
        }
        // Planned with a tenth to spare (the estimate comes from the search's trials, which
        // trained on fewer images and did not measure the test split) within what is left;
        // when not even the searched epochs fit, within the overrun the final model may use.
        let planned = |e: usize| FINAL_MARGIN * estimate(e).unwrap_or(f64::INFINITY);
        let plan = crate::final_model::epochs(&best, max_epochs, self.budget.seconds_left(), planned)
            .or_else(|_| crate::final_model::epochs(&best, max_epochs, self.tolerated_seconds(), planned));
        let f = match plan {
            Err(why) => FinalModel::skipped(&best, why),
            Ok(epochs) => self.train_final(&best, epochs)?,
        };
        tracing::info!(trial = f.trial, epochs = f.epochs, state = %f.state, test_accuracy = f.test_accuracy, seconds = f.seconds, "final model");
        self.recorder.final_model(&f)?;
        Ok(Some(f))
    }

    /// The seconds left of a time budget and the overrun the final model may use rather than
    /// be lost at the last second: [`OVERRUN_ALLOWED`] less a tenth of it, for the time a
    /// stopped process takes to exit; `None` without a time limit.
    fn tolerated_seconds(&self) -> Option<f64> {
        match self.budget.limit {
            Limit::Seconds(limit) => self.budget.seconds_left().map(|l| l + 0.9 * OVERRUN_ALLOWED * limit),
            Limit::Trials(_) => None,
        }
    }

    fn train_final(&mut self, best: &Trial, epochs: usize) -> Result<FinalModel, RunError> {
        self.recorder.final_started();
        let share = TrialLimit::of(self.tolerated_seconds(), self.wall_left());
        let eval = self
            .evaluator
            .train_final(&best.config, epochs, share)
            .unwrap_or_else(|| Evaluation::failed("no final training".into()));
        self.budget.spend(0, eval.seconds);
        let state = eval.state();
        let trained = eval.epochs.unwrap_or(epochs);
        let short = (trained < epochs && eval.error.is_none())
            .then(|| format!("trained {trained} of {epochs} planned epochs: the budget ran short (the learning rate was not annealed to 0)"));
        Ok(FinalModel {
            epochs: trained,
            test_accuracy: eval.test_accuracy,
            seconds: eval.seconds,
            state: state.name().into(),
            reason: eval.error.clone().or(short),
            artefacts: eval.artefacts.clone(),
            ..FinalModel::skipped(best, String::new())
        })
    }

    fn finish(self, stopped: String, final_model: Option<FinalModel>) -> Result<(History, Summary), RunError> {
        let summary = Summary {
            strategy: self.strategy.name().to_string(),
            trials: self.history.trials.len(),
            rounds: self.counts.rounds,
            best: self.history.best(1).first().map(|t| (*t).clone()),
            budget: self.budget.limit.to_string(),
            budget_used: self.budget.used_fraction(),
            device_seconds: self.budget.seconds,
            overrun_seconds: self.budget.overrun_seconds,
            proxy_seconds: self.counts.proxy_seconds,
            lost_seconds: 0.0,
            duplicates: self.counts.duplicates,
            fallback: self.counts.fallback,
            explored: self.counts.explored,
            llm: self.usage,
            stopped,
            final_model,
        };
        let summary = self.recorder.finish(summary, self.budget)?;
        Ok((self.history, summary))
    }
}
