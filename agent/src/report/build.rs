//! What the report computes from a run: the leaderboard, the budget and LLM use, the trial
//! states (the plots are [`super::plots`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::run::{net_for, ranked, Run};
use super::{plots, BudgetUse, LlmUse, Report, ReportError, Row};
use crate::budget::Limit;
use crate::error_context::Context;
use crate::history::Origin;
use crate::score::ScoreLabel;
use crate::store::TrialRecord;

/// Rows of the leaderboard.
const TOP: usize = 10;

/// Proxy scores of each trial by trial id.
pub(crate) type ProxiesOf = BTreeMap<usize, BTreeMap<String, Option<f64>>>;

fn origin_name(o: &Origin) -> String {
    match o {
        Origin::Random => "random".into(),
        Origin::Start => "start".into(),
        Origin::Mutation { .. } => "mutation".into(),
        Origin::Llm { exchange } => format!("llm #{exchange}"),
    }
}

/// Each trial's proxy scores: its own, completed from the stored scores of its configuration.
fn merged_proxies(run: &Run, rec: &TrialRecord) -> BTreeMap<String, Option<f64>> {
    let mut m = rec.trial.proxies.clone();
    let arch = rec.trial.config.to_string();
    for ((a, p), v) in run.scores.range((arch.clone(), String::new())..) {
        if *a != arch {
            break;
        }
        m.entry(p.clone()).or_insert(*v);
    }
    m
}

fn budget_use(run: &Run) -> BudgetUse {
    if let Some(s) = &run.summary {
        return BudgetUse {
            limit: s.budget.clone(),
            used: Some(s.budget_used),
            trials: s.trials,
            rounds: s.rounds,
            device_seconds: s.device_seconds,
            proxy_seconds: s.proxy_seconds,
            overrun_seconds: Some(s.overrun_seconds),
            stopped: Some(s.stopped.clone()),
            from_summary: true,
        };
    }
    let limit = run.config["args"]["budget"].as_str().and_then(|b| b.parse::<Limit>().ok());
    let trials = run.trials.iter().filter(|r| r.trial.state.is_finished()).count();
    let proxy_seconds = match &run.round_proxy_seconds {
        // (A fold from +0.0: an empty f64 sum is -0.0.)
        Some(r) => r.iter().fold(0.0, |a, b| a + b),
        None => run.scores_ms / 1000.0,
    };
    // A live or killed run: its trials, its proxy rounds and the work kills lost (issue 15 item 8).
    let device_seconds = run.trials.iter().fold(0.0, |a, r| a + r.trial.seconds) + proxy_seconds + run.lost_seconds;
    let used = limit.map(|l| match l {
        Limit::Trials(n) => trials as f64 / n as f64,
        Limit::Seconds(s) => device_seconds / s,
    });
    BudgetUse {
        limit: limit.map_or_else(|| "unknown".to_string(), |l| l.to_string()),
        used,
        trials,
        rounds: run.trials.iter().map(|r| r.trial.round + 1).max().unwrap_or(0),
        device_seconds,
        proxy_seconds,
        overrun_seconds: None,
        stopped: None,
        from_summary: false,
    }
}

fn llm_use(run: &Run) -> LlmUse {
    let share = |v: usize, i: usize| (v + i > 0).then(|| v as f64 / (v + i) as f64);
    if let Some(s) = &run.summary {
        let u = &s.llm;
        return LlmUse {
            exchanges: u.exchanges,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_usd: u.cost_usd,
            seconds: u.seconds,
            valid_proposals: u.valid_proposals,
            invalid_proposals: u.invalid_proposals,
            valid_share: share(u.valid_proposals, u.invalid_proposals),
            from_summary: true,
        };
    }
    let mut u = LlmUse {
        exchanges: run.exchanges.len(),
        prompt_tokens: 0,
        completion_tokens: 0,
        cost_usd: 0.0,
        seconds: 0.0,
        // Recorded proposals are the ones kept after deduplication: a lower bound.
        valid_proposals: run.llm_proposals,
        invalid_proposals: run.failed.iter().filter(|f| f.exchange.is_some()).count(),
        valid_share: None,
        from_summary: false,
    };
    for r in run.exchanges.iter().filter_map(|e| e.response.as_ref()) {
        u.prompt_tokens += r.usage.prompt_tokens;
        u.completion_tokens += r.usage.completion_tokens;
        u.cost_usd += r.cost_usd;
        u.seconds += r.latency.as_secs_f64();
    }
    u.valid_share = share(u.valid_proposals, u.invalid_proposals);
    u
}

/// The top [`TOP`] of `best` (ranked trials) as leaderboard rows.
fn leaderboard(task: &str, best: &[&TrialRecord], proxies_of: &ProxiesOf, score: &ScoreLabel, networks: bool) -> Vec<Row> {
    best.iter()
        .take(TOP)
        .enumerate()
        .map(|(i, r)| {
            let (params, flops) = if networks {
                let net = net_for(task, &r.trial.config);
                (net.param_count() as f64 / 1e6, net.flops() / 1e6)
            } else {
                (f64::NAN, f64::NAN)
            };
            Row {
                rank: i + 1,
                trial: r.trial.id,
                arch: r.trial.config.cell("cell").map(|a| a.to_string()).unwrap_or_default(),
                config: r.trial.config.line(),
                origin: origin_name(&r.trial.origin),
                epochs: r.trial.epochs,
                accuracy: r.trial.accuracy.unwrap_or(f64::NAN),
                test_accuracy: r.trial.test_accuracy,
                value: score.value(r.trial.accuracy.unwrap_or(f64::NAN)),
                params_m: params,
                flops_m: flops,
                proxies: proxies_of[&r.trial.id].clone(),
                seconds: r.trial.seconds,
            }
        })
        .collect()
}

/// The report of `run` (read from `run_dir`), its plots written into `out`.
pub(crate) fn build(run_dir: &Path, out: &Path, run: &Run) -> Result<Report, ReportError> {
    let task = run.config["args"]["task"].as_str().unwrap_or("nb201:cifar10").to_string();
    let strategy = run
        .summary
        .as_ref()
        .map(|s| s.strategy.clone())
        .or_else(|| run.config["strategy"].as_str().map(String::from))
        .unwrap_or_else(|| "unknown".into());
    let mut trials: Vec<&TrialRecord> = run.trials.iter().collect();
    trials.sort_by_key(|r| r.trial.id);
    let proxies_of: ProxiesOf = trials.iter().map(|r| (r.trial.id, merged_proxies(run, r))).collect();
    let proxy_names: Vec<String> = proxies_of
        .values()
        .flat_map(|m| m.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let best = ranked(&run.trials);
    let mut states = BTreeMap::new();
    for r in &trials {
        *states.entry(r.trial.state.name().to_string()).or_insert(0usize) += 1;
    }
    let budget = budget_use(run);
    let score = ScoreLabel::of_config(&run.config);
    let networks = !task.starts_with("csv:");
    std::fs::create_dir_all(out).with_context(|| format!("cannot create the report directory {}", out.display()))?;
    let drawn = plots::draw(&plots::Inputs {
        out,
        run,
        task: &task,
        trials: &trials,
        proxies_of: &proxies_of,
        proxy_names: &proxy_names,
        score: &score,
        networks,
    })?;
    Ok(Report {
        name: run_dir
            .file_name()
            .map_or_else(|| run_dir.display().to_string(), |n| n.to_string_lossy().into_owned()),
        run_dir: run_dir.to_path_buf(),
        status: run.status.clone(),
        leaderboard: leaderboard(&task, &best, &proxies_of, &score, networks),
        task,
        strategy,
        llm_backend: run.config["llm"].as_str().map(String::from),
        seed: run.seed.clone(),
        version: run.version.clone(),
        stopped: budget.stopped.clone(),
        trials_total: trials.len(),
        complete: best.len(),
        proxy_names,
        budget,
        llm: llm_use(run),
        states,
        proxies: drawn.proxies,
        plots: drawn.plots,
        final_model: run.summary.as_ref().and_then(|s| s.final_model.clone()),
        ensemble: crate::tabular_task::FinalEnsemble::read(run_dir).ok(),
        score,
        networks,
    })
}
