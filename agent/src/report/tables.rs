//! The report's tables, as (header, rows): Markdown and HTML render the same ones.

use super::format::{fmt_num, fmt_opt, fmt_rho, fmt_share, states_in_order};
use super::Report;

/// A table of the report as (header, rows).
pub(crate) type Table = (Vec<String>, Vec<Vec<String>>);

fn header(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

pub(crate) fn overview(r: &Report) -> Table {
    let mut rows = vec![
        vec!["status".into(), r.status.clone()],
        vec!["task".into(), r.task.clone()],
        vec!["strategy".into(), r.strategy.clone()],
        vec!["LLM".into(), r.llm_backend.clone().unwrap_or_else(|| "none".into())],
        vec!["seed".into(), r.seed.clone().unwrap_or_else(|| "—".into())],
        vec!["version".into(), r.version.clone().unwrap_or_else(|| "—".into())],
        vec!["trials".into(), format!("{} ({} complete)", r.trials_total, r.complete)],
    ];
    if let Some(s) = &r.stopped {
        rows.push(vec!["stopped".into(), s.clone()]);
    }
    (vec!["".into(), "".into()], rows)
}

pub(crate) fn leaderboard(r: &Report) -> Table {
    let (valid, test) = if r.score == crate::score::ScoreLabel::accuracy() {
        ("valid acc (%)".to_string(), "test acc (%)".to_string())
    } else {
        (format!("valid {}", r.score.name), format!("test {}", r.score.name))
    };
    let mut head = header(&["rank", "trial", "configuration"]);
    if r.score.epochs {
        head.push("epochs".into());
    }
    head.extend([valid, test]);
    if r.networks {
        head.extend(["params (M)".to_string(), "FLOPs (M)".to_string()]);
    }
    head.extend(r.proxy_names.iter().cloned());
    head.push("device s".into());
    let rows = r
        .leaderboard
        .iter()
        .map(|row| {
            let mut v = vec![row.rank.to_string(), row.trial.to_string(), row.config.clone()];
            if r.score.epochs {
                v.push(row.epochs.to_string());
            }
            v.push(r.score.show(row.accuracy));
            v.push(row.test_accuracy.map_or_else(|| "—".into(), |t| r.score.show(t)));
            if r.networks {
                v.extend([format!("{:.3}", row.params_m), format!("{:.2}", row.flops_m)]);
            }
            v.extend(
                r.proxy_names
                    .iter()
                    .map(|p| row.proxies.get(p).copied().flatten().map_or_else(|| "—".into(), |x| fmt_num(x, 4))),
            );
            v.push(format!("{:.1}", row.seconds));
            v
        })
        .collect();
    (head, rows)
}

/// A tabular run's final ensemble, in a sentence.
pub(crate) fn ensemble(e: &crate::tabular_task::FinalEnsemble) -> String {
    let best = e.member(e.best);
    let test = e
        .test_score
        .map_or("no test rows were given".to_string(), |t| format!("test {} {t:.4}, measured once", e.metric));
    let single = best
        .and_then(|m| m.test_score)
        .map_or(String::new(), |t| format!(" (the best single pipeline alone: test {t:.4})"));
    format!(
        "A greedy ensemble (Caruana et al. 2004) of {} pipelines over the trials' out-of-fold predictions, each refit on every \
         training row: validation {} {:.4} (out of fold), {test}{single}. The best single pipeline, trial {}, is kept beside it. \
         `export --best` gives the ensemble, `export --trial N` one member.",
        e.members.len(),
        e.metric,
        e.validation_score,
        e.best
    )
}

/// A tabular run's final ensemble, a row a member.
pub(crate) fn members(e: &crate::tabular_task::FinalEnsemble) -> Table {
    let metric = e.metric.to_string();
    let rows = e
        .members
        .iter()
        .map(|m| {
            vec![
                m.trial.to_string(),
                m.pipeline.pipeline.learner.family().to_string(),
                format!("{:.3}", m.weight),
                format!("{:.4}", m.validation_score),
                fmt_opt(m.test_score, 4),
            ]
        })
        .collect();
    (
        header(&["trial", "model", "weight", &format!("valid {metric}"), &format!("test {metric}")]),
        rows,
    )
}

/// The final model, in a sentence.
pub(crate) fn final_model(f: &crate::final_model::FinalModel) -> String {
    match (f.is_complete(), f.test_accuracy) {
        (true, Some(t)) => format!(
            "Trial {}'s configuration ({}), searched at {} epochs ({} % validation accuracy), retrained for {} epochs on the \
             training split with its validation hold-out: {t:.2} % test accuracy, measured once ({:.1} device-s). `export --best` gives this model.",
            f.trial,
            f.config.line(),
            f.search_epochs,
            f.search_accuracy.map_or("—".into(), |a| format!("{a:.2}")),
            f.epochs,
            f.seconds
        ),
        _ => format!(
            "Not trained ({}): {}. `export --best` gives the best searched trial.",
            f.state,
            f.reason.as_deref().unwrap_or("no reason recorded")
        ),
    }
}

pub(crate) fn budget(r: &Report) -> Table {
    let b = &r.budget;
    let row = vec![
        b.limit.clone(),
        b.used.map_or_else(|| "—".into(), |u| format!("{:.1} %", u * 100.0)),
        b.trials.to_string(),
        b.rounds.to_string(),
        format!("{:.1}", b.device_seconds),
        format!("{:.1}", b.proxy_seconds),
        fmt_opt(b.overrun_seconds, 1),
    ];
    (header(&["limit", "used", "trials", "rounds", "device s", "proxy s", "overrun s"]), vec![row])
}

pub(crate) fn llm(r: &Report) -> Table {
    let u = &r.llm;
    let row = vec![
        u.exchanges.to_string(),
        u.prompt_tokens.to_string(),
        u.completion_tokens.to_string(),
        format!("{:.4}", u.cost_usd),
        format!("{:.1}", u.seconds),
        fmt_share(u),
    ];
    let head = header(&["exchanges", "prompt tokens", "completion tokens", "cost (USD)", "seconds", "valid proposals"]);
    (head, vec![row])
}

pub(crate) fn states(r: &Report) -> Table {
    let s = states_in_order(&r.states);
    (s.iter().map(|(k, _)| k.clone()).collect(), vec![s.iter().map(|(_, n)| n.to_string()).collect()])
}

pub(crate) fn proxies(r: &Report) -> Table {
    let rows = r
        .proxies
        .iter()
        .map(|p| vec![p.name.clone(), fmt_rho(p.rho), p.n.to_string(), if p.log_x { "log" } else { "linear" }.into()])
        .collect();
    (header(&["proxy", "Spearman ρ", "n", "x axis"]), rows)
}

/// The heading of the leaderboard section.
pub(crate) fn leaderboard_heading(r: &Report) -> String {
    if r.leaderboard.is_empty() {
        return "Leaderboard".into();
    }
    format!(
        "Leaderboard (top {} of {} complete trials by validation {})",
        r.leaderboard.len(),
        r.complete,
        r.score.words()
    )
}

/// The heading of the budget section.
pub(crate) fn budget_heading(r: &Report) -> String {
    let note = if r.budget.from_summary {
        ""
    } else {
        " (recomputed from the trials: the run has no summary)"
    };
    format!("Budget{note}")
}

/// The heading of the LLM section.
pub(crate) fn llm_heading(r: &Report) -> String {
    format!("LLM usage{}", if r.llm.from_summary { "" } else { " (recomputed from the exchanges)" })
}
