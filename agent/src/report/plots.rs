//! The report's plots: best validation accuracy so far against evaluated architectures and
//! against cumulative device time, each proxy's score against accuracy (with Spearman's ρ), and
//! accuracy against parameters with the Pareto front.

use std::path::Path;

use super::build::ProxiesOf;
use super::charts::{plot, step, Chart};
use super::format::{file_safe, fmt_rho};
use super::run::{net_for, Run};
use super::{Plot, ProxyStat, ReportError};
use crate::score::ScoreLabel;
use crate::store::TrialRecord;

/// Scores spanning at least this ratio (all positive) get a logarithmic axis.
const LOG_SPAN: f64 = 1e3;

/// What the plots are drawn from.
pub(crate) struct Inputs<'a> {
    /// The folder the SVG files go to.
    pub(crate) out: &'a Path,
    pub(crate) run: &'a Run,
    pub(crate) task: &'a str,
    /// Every trial, by id.
    pub(crate) trials: &'a [&'a TrialRecord],
    pub(crate) proxies_of: &'a ProxiesOf,
    pub(crate) proxy_names: &'a [String],
    /// How scores are shown.
    pub(crate) score: &'a ScoreLabel,
    /// Whether candidates are networks (the Pareto plot of parameters applies).
    pub(crate) networks: bool,
}

/// The plots and the proxies' statistics.
pub(crate) struct Drawn {
    pub(crate) plots: Vec<Plot>,
    pub(crate) proxies: Vec<ProxyStat>,
}

/// Every plot of the report (none when no trial has an accuracy), written into `inp.out`.
pub(crate) fn draw(inp: &Inputs) -> Result<Drawn, ReportError> {
    let scored: Vec<&TrialRecord> = inp.trials.iter().copied().filter(|r| r.trial.accuracy.is_some()).collect();
    if scored.is_empty() {
        let proxies = inp.proxy_names.iter().map(|name| unplotted(name, None, 0, false)).collect();
        return Ok(Drawn { plots: Vec::new(), proxies });
    }
    let mut plots = progress(inp)?;
    let mut proxies = Vec::new();
    for name in inp.proxy_names {
        let (stat, p) = proxy(inp, name, &scored)?;
        proxies.push(stat);
        plots.extend(p);
    }
    if inp.networks {
        plots.push(pareto(inp, &scored)?);
    }
    Ok(Drawn { plots, proxies })
}

fn unplotted(name: &str, rho: Option<f64>, n: usize, log_x: bool) -> ProxyStat {
    ProxyStat {
        name: name.to_string(),
        rho,
        n,
        log_x,
        plot: None,
    }
}

/// (a), (b): best so far against evaluated architectures and cumulative device time.
fn progress(inp: &Inputs) -> Result<Vec<Plot>, ReportError> {
    let (mut by_count, mut by_time, mut each_count, mut each_time) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut best_acc, mut seconds, mut rounds_paid) = (f64::NEG_INFINITY, 0.0, 0usize);
    for (i, r) in inp.trials.iter().enumerate() {
        seconds += r.trial.seconds;
        if let Some(rps) = &inp.run.round_proxy_seconds {
            while rounds_paid <= r.trial.round && rounds_paid < rps.len() {
                seconds += rps[rounds_paid];
                rounds_paid += 1;
            }
        }
        let Some(acc) = r.trial.accuracy else { continue };
        best_acc = best_acc.max(acc);
        let (n, best, acc) = ((i + 1) as f64, inp.score.value(best_acc), inp.score.value(acc));
        by_count.push((n, best));
        each_count.push((n, acc));
        by_time.push((seconds, best));
        each_time.push((seconds, acc));
    }
    let what = format!("validation {}", inp.score.words());
    let by_trials = plot(
        inp.out,
        "best_vs_trials",
        &format!("Best {what} so far against evaluated candidates"),
        &Chart {
            title: format!("Best {what} vs evaluated candidates"),
            x_desc: "candidates evaluated".into(),
            log_x: false,
            points: each_count,
            line: step(&by_count),
            line_label: "best so far".into(),
        },
    )?;
    let by_seconds = plot(
        inp.out,
        "best_vs_time",
        &format!("Best {what} so far against cumulative device time"),
        &Chart {
            title: if seconds <= 0.0 {
                format!("Best {what} vs device time (none recorded: table lookups)")
            } else {
                format!("Best {what} vs cumulative device time")
            },
            x_desc: if inp.run.round_proxy_seconds.is_some() {
                "cumulative device seconds (evaluations and proxy scoring)".into()
            } else {
                "cumulative device seconds (evaluations)".into()
            },
            log_x: false,
            points: each_time,
            line: step(&by_time),
            line_label: "best so far".into(),
        },
    )?;
    Ok(vec![by_trials, by_seconds])
}

/// (c): the proxy `name` against accuracy: its statistics, and its plot where two trials or more
/// have a finite score.
fn proxy(inp: &Inputs, name: &str, scored: &[&TrialRecord]) -> Result<(ProxyStat, Option<Plot>), ReportError> {
    let pts: Vec<(f64, f64)> = scored
        .iter()
        .filter_map(|r| {
            let v = inp.proxies_of[&r.trial.id].get(name).copied().flatten()?;
            v.is_finite().then_some((v, r.trial.accuracy?))
        })
        .collect();
    let (xs, ys): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
    let rho = autoagent_proxies::stats::spearman(&xs, &ys);
    let rho = rho.is_finite().then_some(rho);
    let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
    let log_x = lo > 0.0 && hi / lo >= LOG_SPAN;
    let mut stat = unplotted(name, rho, pts.len(), log_x);
    if pts.len() < 2 {
        return Ok((stat, None));
    }
    let n = pts.len();
    let p = plot(
        inp.out,
        &format!("proxy_{}", file_safe(name)),
        &format!("{name} against validation accuracy"),
        &Chart {
            title: format!("{name} vs validation accuracy (Spearman ρ = {}, n = {n})", fmt_rho(rho)),
            x_desc: if log_x {
                format!("{name} score (log scale)")
            } else {
                format!("{name} score")
            },
            log_x,
            points: pts,
            line: Vec::new(),
            line_label: String::new(),
        },
    )?;
    stat.plot = Some(p.path.display().to_string());
    Ok((stat, Some(p)))
}

/// (d): accuracy against parameters, with the Pareto front (max accuracy, min params).
fn pareto(inp: &Inputs, scored: &[&TrialRecord]) -> Result<Plot, ReportError> {
    let params_m = |r: &TrialRecord| net_for(inp.task, &r.trial.config).param_count() as f64 / 1e6;
    let mut pts: Vec<(f64, f64)> = scored.iter().map(|r| (params_m(r), r.trial.accuracy.unwrap_or(f64::NAN))).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let mut front: Vec<(f64, f64)> = Vec::new();
    for &(p, a) in &pts {
        if front.last().is_none_or(|&(_, fa)| a > fa) {
            front.push((p, a));
        }
    }
    plot(
        inp.out,
        "params_pareto",
        "Validation accuracy against parameters, with the Pareto front",
        &Chart {
            title: "Validation accuracy vs parameters (Pareto front: max accuracy, min params)".into(),
            x_desc: "parameters (M)".into(),
            log_x: false,
            points: pts,
            line: step(&front),
            line_label: "Pareto front".into(),
        },
    )
}
