//! `autoagent report RUN_DIR` and `autoagent ls [DIR]`: what run directories hold, read from their
//! run databases (`run.db`) without the writer's lock, so both work on a live run too.
//!
//! The report has the run's status and configuration, a leaderboard by validation accuracy (with
//! each architecture's parameters and FLOPs and its proxy scores), the budget used, LLM usage,
//! the count of trials by state, and SVG plots drawn with `plotters`: best validation accuracy
//! against evaluated architectures and against cumulative device time, each proxy's score
//! against accuracy (with Spearman's ρ), and accuracy against parameters with the Pareto front.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use autoagent_agent::budget::Limit;
use autoagent_agent::history::{FailedProposal, Origin};
use autoagent_agent::llm::Exchange;
use autoagent_agent::runner::Summary;
use autoagent_agent::store::sqlite::SqliteStore;
use autoagent_agent::store::{Store, TrialRecord};
use autoagent_evaluator::data::DatasetKind;
use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::net::Nb201Config;
use clap::Args;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

/// Rows of the leaderboard.
const TOP: usize = 10;
/// Scores spanning at least this ratio (all positive) get a logarithmic axis.
const LOG_SPAN: f64 = 1e3;

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// The run directory (the one holding run.db).
    run_dir: PathBuf,
    /// Output: md (Markdown on stdout), html (one self-contained page on stdout) or json (one object).
    #[arg(long, default_value = "md", value_parser = ["md", "html", "json"])]
    format: String,
    /// Directory for the plots (SVG files) and a copy of the md/html report (default: RUN_DIR/report).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct LsArgs {
    /// Directory whose run directories to list.
    #[arg(default_value = "runs")]
    dir: PathBuf,
    /// One JSON document: a list with an object per run.
    #[arg(long, conflicts_with = "json_lines")]
    json: bool,
    /// One JSON object per run, one per line.
    #[arg(long)]
    json_lines: bool,
}

// ---------------------------------------------------------------------------------------------
// Reading a run.

/// Everything the report shows, read from one run database.
struct Run {
    status: String,
    config: Value,
    seed: Option<String>,
    version: Option<String>,
    summary: Option<Summary>,
    trials: Vec<TrialRecord>,
    exchanges: Vec<Exchange>,
    failed: Vec<FailedProposal>,
    /// Proposals the LLM made that were kept (recorded proposals with an LLM origin).
    llm_proposals: usize,
    /// Stored proxy scores by (arch, proxy).
    scores: BTreeMap<(String, String), Option<f64>>,
    /// Milliseconds of all stored proxy scores.
    scores_ms: f64,
    /// Proxy seconds of each round (index = round), when the run recorded them.
    round_proxy_seconds: Option<Vec<f64>>,
    /// Device seconds of work lost to kills, as the run database records them as they are spent.
    lost_seconds: f64,
}

fn lock_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Whether a writer holds the run database's lock now.
fn writer_alive(db: &Path) -> bool {
    let Ok(f) = File::open(lock_path(db)) else {
        return false;
    };
    match f.try_lock_shared() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// The status shown: `finished`, `running` (stored as running and its writer is alive),
/// `interrupted` (stored as running, nobody writing), or whatever else was stored.
fn status_of(stored: Option<&str>, db: &Path) -> String {
    match stored {
        Some("running") if writer_alive(db) => "running".into(),
        Some("running") => "interrupted".into(),
        Some(s) => s.into(),
        None => "unknown".into(),
    }
}

/// Open `dir/run.db` for reading, with one-line errors for what is not a run directory.
fn open_run_db(dir: &Path) -> Result<SqliteStore> {
    if !dir.exists() {
        bail!("run directory {} does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let db = dir.join("run.db");
    if !db.is_file() {
        bail!("{} holds no run database (run.db): not a run directory", dir.display());
    }
    Ok(SqliteStore::open_read(&db)?)
}

fn load(dir: &Path) -> Result<Run> {
    let store = open_run_db(dir)?;
    let db = dir.join("run.db");
    let config = match store.meta("config")? {
        Some(text) => serde_json::from_str(&text).with_context(|| format!("{}: the stored config is not JSON", db.display()))?,
        None => Value::Null,
    };
    let summary = match store.meta("summary")? {
        Some(text) => match serde_json::from_str::<Summary>(&text) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("{}: the stored summary does not parse ({e}); recomputing from the trials", db.display());
                None
            }
        },
        None => None,
    };
    let round_proxy_seconds = store.meta("round_proxy_seconds")?.and_then(|t| serde_json::from_str::<Vec<f64>>(&t).ok());
    let stored_scores = store.proxy_scores()?;
    let scores_ms = stored_scores.iter().fold(0.0, |a, s| a + s.ms);
    let scores = stored_scores.into_iter().map(|s| ((s.arch, s.proxy), s.value)).collect();
    let llm_proposals = store.proposals()?.iter().filter(|p| matches!(p.proposal.origin, Origin::Llm { .. })).count();
    Ok(Run {
        status: status_of(store.meta("status")?.as_deref(), &db),
        config,
        seed: store.meta("seed")?,
        version: store.meta("version")?,
        summary,
        trials: store.trials()?,
        exchanges: store.exchanges()?,
        failed: store.failed()?,
        llm_proposals,
        scores,
        scores_ms,
        round_proxy_seconds,
        lost_seconds: autoagent_agent::runner::Spent::of(&store).map_or(0.0, |s| s.lost_seconds),
    })
}

/// The network an arch builds on `task` (C=16, N=5; the task's classes and image size).
fn net_for(task: &str, arch: Arch) -> Nb201Config {
    let (classes, channels, side) = match task.strip_prefix("nb201:") {
        Some("cifar100") => (100, 3, 32),
        Some("imagenet16") | Some("imagenet16-120") => (120, 3, 16),
        Some(_) => (10, 3, 32),
        None => match DatasetKind::from_name(task) {
            Some(k) => {
                let (c, h, _) = k.image_shape();
                (k.num_classes(), c, h)
            }
            None => (10, 3, 32),
        },
    };
    Nb201Config {
        num_classes: classes,
        in_channels: channels,
        input_size: side,
        ..Nb201Config::new(arch)
    }
}

// ---------------------------------------------------------------------------------------------
// What the report computes.

#[derive(Serialize, Clone)]
struct Row {
    rank: usize,
    trial: usize,
    arch: String,
    origin: String,
    accuracy: f64,
    test_accuracy: Option<f64>,
    params_m: f64,
    flops_m: f64,
    proxies: BTreeMap<String, Option<f64>>,
    seconds: f64,
}

#[derive(Serialize)]
struct BudgetUse {
    /// The limit, as text.
    limit: String,
    /// Share of the limit used (`None` when the limit is unknown).
    used: Option<f64>,
    trials: usize,
    rounds: usize,
    device_seconds: f64,
    proxy_seconds: f64,
    overrun_seconds: Option<f64>,
    stopped: Option<String>,
    /// Taken from the stored summary (finished runs) rather than recomputed from the trials.
    from_summary: bool,
}

#[derive(Serialize)]
struct LlmUse {
    exchanges: usize,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    seconds: f64,
    valid_proposals: usize,
    invalid_proposals: usize,
    /// valid / (valid + invalid); `None` when the LLM proposed nothing.
    valid_share: Option<f64>,
    from_summary: bool,
}

#[derive(Serialize)]
struct ProxyStat {
    name: String,
    /// Spearman's ρ between the score and the validation accuracy (`None` when undefined).
    rho: Option<f64>,
    /// Trials with both a finite score and an accuracy.
    n: usize,
    log_x: bool,
    plot: Option<String>,
}

struct Plot {
    key: String,
    caption: String,
    path: PathBuf,
    svg: String,
}

struct Report {
    name: String,
    run_dir: PathBuf,
    status: String,
    task: String,
    strategy: String,
    llm_backend: Option<String>,
    seed: Option<String>,
    version: Option<String>,
    stopped: Option<String>,
    trials_total: usize,
    complete: usize,
    leaderboard: Vec<Row>,
    proxy_names: Vec<String>,
    budget: BudgetUse,
    llm: LlmUse,
    states: BTreeMap<String, usize>,
    proxies: Vec<ProxyStat>,
    plots: Vec<Plot>,
}

fn origin_name(o: &Origin) -> String {
    match o {
        Origin::Random => "random".into(),
        Origin::Mutation { .. } => "mutation".into(),
        Origin::Llm { exchange } => format!("llm #{exchange}"),
    }
}

/// Each trial's proxy scores: its own, completed from the stored scores of its arch.
fn merged_proxies(run: &Run, rec: &TrialRecord) -> BTreeMap<String, Option<f64>> {
    let mut m = rec.trial.proxies.clone();
    let arch = rec.trial.arch.to_string();
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

/// Completed trials with an accuracy, best first (ties: the earlier trial).
fn ranked(trials: &[TrialRecord]) -> Vec<&TrialRecord> {
    let mut v: Vec<&TrialRecord> = trials.iter().filter(|r| r.trial.accuracy.is_some()).collect();
    v.sort_by(|a, b| {
        b.trial
            .accuracy
            .partial_cmp(&a.trial.accuracy)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.trial.id.cmp(&b.trial.id))
    });
    v
}

fn build(run_dir: &Path, out: &Path, run: &Run) -> Result<Report> {
    let task = run.config["args"]["task"].as_str().unwrap_or("nb201:cifar10").to_string();
    let strategy = run
        .summary
        .as_ref()
        .map(|s| s.strategy.clone())
        .or_else(|| run.config["strategy"].as_str().map(String::from))
        .unwrap_or_else(|| "unknown".into());
    let llm_backend = run.config["llm"].as_str().map(String::from);
    let mut trials: Vec<&TrialRecord> = run.trials.iter().collect();
    trials.sort_by_key(|r| r.trial.id);
    let proxies_of: BTreeMap<usize, BTreeMap<String, Option<f64>>> = trials.iter().map(|r| (r.trial.id, merged_proxies(run, r))).collect();
    let proxy_names: Vec<String> = proxies_of
        .values()
        .flat_map(|m| m.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let size_of = |arch: Arch| {
        let net = net_for(&task, arch);
        (net.param_count() as f64 / 1e6, net.flops() / 1e6)
    };
    let best = ranked(&run.trials);
    let leaderboard: Vec<Row> = best
        .iter()
        .take(TOP)
        .enumerate()
        .map(|(i, r)| {
            let (params_m, flops_m) = size_of(r.trial.arch);
            Row {
                rank: i + 1,
                trial: r.trial.id,
                arch: r.trial.arch.to_string(),
                origin: origin_name(&r.trial.origin),
                accuracy: r.trial.accuracy.unwrap_or(f64::NAN),
                test_accuracy: r.trial.test_accuracy,
                params_m,
                flops_m,
                proxies: proxies_of[&r.trial.id].clone(),
                seconds: r.trial.seconds,
            }
        })
        .collect();
    let mut states = BTreeMap::new();
    for r in &trials {
        *states.entry(r.trial.state.name().to_string()).or_insert(0usize) += 1;
    }
    let budget = budget_use(run);

    // Plots.
    std::fs::create_dir_all(out).with_context(|| format!("cannot create the report directory {}", out.display()))?;
    let mut plots = Vec::new();
    let mut proxies = Vec::new();
    let scored: Vec<&&TrialRecord> = trials.iter().filter(|r| r.trial.accuracy.is_some()).collect();
    if !scored.is_empty() {
        // (a), (b): best so far against evaluated architectures and cumulative device time.
        let (mut by_count, mut by_time, mut each_count, mut each_time) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut best_acc, mut seconds, mut rounds_paid) = (f64::NEG_INFINITY, 0.0, 0usize);
        for (i, r) in trials.iter().enumerate() {
            seconds += r.trial.seconds;
            if let Some(rps) = &run.round_proxy_seconds {
                while rounds_paid <= r.trial.round && rounds_paid < rps.len() {
                    seconds += rps[rounds_paid];
                    rounds_paid += 1;
                }
            }
            let Some(acc) = r.trial.accuracy else { continue };
            best_acc = best_acc.max(acc);
            let n = (i + 1) as f64;
            by_count.push((n, best_acc));
            each_count.push((n, acc));
            by_time.push((seconds, best_acc));
            each_time.push((seconds, acc));
        }
        plots.push(plot(
            out,
            "best_vs_trials",
            "Best validation accuracy so far against evaluated architectures",
            &Chart {
                title: "Best validation accuracy vs evaluated architectures".into(),
                x_desc: "architectures evaluated".into(),
                y_desc: "validation accuracy (%)".into(),
                log_x: false,
                points: each_count,
                points_label: "trial".into(),
                line: step(&by_count),
                line_label: "best so far".into(),
            },
        )?);
        let no_time = seconds <= 0.0;
        plots.push(plot(
            out,
            "best_vs_time",
            "Best validation accuracy so far against cumulative device time",
            &Chart {
                title: if no_time {
                    "Best validation accuracy vs device time (none recorded: table lookups)".into()
                } else {
                    "Best validation accuracy vs cumulative device time".into()
                },
                x_desc: if run.round_proxy_seconds.is_some() {
                    "cumulative device seconds (evaluations and proxy scoring)".into()
                } else {
                    "cumulative device seconds (evaluations)".into()
                },
                y_desc: "validation accuracy (%)".into(),
                log_x: false,
                points: each_time,
                points_label: "trial".into(),
                line: step(&by_time),
                line_label: "best so far".into(),
            },
        )?);
        // (c): each proxy against accuracy.
        for name in &proxy_names {
            let pts: Vec<(f64, f64)> = scored
                .iter()
                .filter_map(|r| {
                    let v = proxies_of[&r.trial.id].get(name).copied().flatten()?;
                    v.is_finite().then_some((v, r.trial.accuracy?))
                })
                .collect();
            let (xs, ys): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
            let rho = autoagent_proxies::stats::spearman(&xs, &ys);
            let rho = rho.is_finite().then_some(rho);
            let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
            let log_x = lo > 0.0 && hi / lo >= LOG_SPAN;
            let mut stat = ProxyStat {
                name: name.clone(),
                rho,
                n: pts.len(),
                log_x,
                plot: None,
            };
            if pts.len() >= 2 {
                let key = format!("proxy_{}", file_safe(name));
                let p = plot(
                    out,
                    &key,
                    &format!("{name} against validation accuracy"),
                    &Chart {
                        title: format!("{name} vs validation accuracy (Spearman ρ = {}, n = {})", fmt_rho(rho), pts.len()),
                        x_desc: if log_x {
                            format!("{name} score (log scale)")
                        } else {
                            format!("{name} score")
                        },
                        y_desc: "validation accuracy (%)".into(),
                        log_x,
                        points: pts,
                        points_label: "trial".into(),
                        line: Vec::new(),
                        line_label: String::new(),
                    },
                )?;
                stat.plot = Some(p.path.display().to_string());
                plots.push(p);
            }
            proxies.push(stat);
        }
        // (d): accuracy against parameters, with the Pareto front (max accuracy, min params).
        let mut pts: Vec<(f64, f64)> = scored.iter().map(|r| (size_of(r.trial.arch).0, r.trial.accuracy.unwrap_or(f64::NAN))).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut front: Vec<(f64, f64)> = Vec::new();
        for &(p, a) in &pts {
            if front.last().is_none_or(|&(_, fa)| a > fa) {
                front.push((p, a));
            }
        }
        plots.push(plot(
            out,
            "params_pareto",
            "Validation accuracy against parameters, with the Pareto front",
            &Chart {
                title: "Validation accuracy vs parameters (Pareto front: max accuracy, min params)".into(),
                x_desc: "parameters (M)".into(),
                y_desc: "validation accuracy (%)".into(),
                log_x: false,
                points: pts,
                points_label: "trial".into(),
                line: step(&front),
                line_label: "Pareto front".into(),
            },
        )?);
    } else {
        for name in &proxy_names {
            proxies.push(ProxyStat {
                name: name.clone(),
                rho: None,
                n: 0,
                log_x: false,
                plot: None,
            });
        }
    }
    Ok(Report {
        name: run_dir
            .file_name()
            .map_or_else(|| run_dir.display().to_string(), |n| n.to_string_lossy().into_owned()),
        run_dir: run_dir.to_path_buf(),
        status: run.status.clone(),
        task,
        strategy,
        llm_backend,
        seed: run.seed.clone(),
        version: run.version.clone(),
        stopped: budget.stopped.clone(),
        trials_total: trials.len(),
        complete: best.len(),
        leaderboard,
        proxy_names,
        budget,
        llm: llm_use(run),
        states,
        proxies,
        plots,
    })
}

/// A step line through `pts` (x ascending): flat until the next point's x, then up to its y.
fn step(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(pts.len() * 2);
    for (i, &(x, y)) in pts.iter().enumerate() {
        if i > 0 {
            out.push((x, out.last().map_or(y, |&(_, py)| py)));
        }
        out.push((x, y));
    }
    out
}

fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Plots.

struct Chart {
    title: String,
    x_desc: String,
    y_desc: String,
    log_x: bool,
    /// One dot per trial.
    points: Vec<(f64, f64)>,
    points_label: String,
    /// A highlighted line (best so far, Pareto front); empty for none.
    line: Vec<(f64, f64)>,
    line_label: String,
}

const WIDTH: u32 = 860;
const HEIGHT: u32 = 520;
const DOT: RGBColor = RGBColor(90, 110, 140);
const LINE: RGBColor = RGBColor(214, 39, 40);

fn plot(out: &Path, key: &str, caption: &str, chart: &Chart) -> Result<Plot> {
    let svg = render(chart).map_err(|e| anyhow!("cannot draw the plot {key}: {e}"))?;
    let path = out.join(format!("{key}.svg"));
    std::fs::write(&path, &svg).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Plot {
        key: key.to_string(),
        caption: caption.to_string(),
        path,
        svg,
    })
}

fn padded(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if log {
        return (lo / 1.5, hi * 1.5);
    }
    let span = hi - lo;
    if span <= 0.0 && lo == 0.0 {
        return (0.0, 1.0);
    }
    let pad = if span > 0.0 { span * 0.05 } else { lo.abs().max(1.0) * 0.05 };
    // Counts, seconds and sizes start at 0: no negative padding below them.
    let floor = if lo >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
    ((lo - pad).max(floor), hi + pad)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn render(c: &Chart) -> std::result::Result<String, String> {
    let all = c.points.iter().chain(&c.line);
    let (xl, xh, yl, yh) = all.fold(
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY),
        |(a, b, cc, d), &(x, y)| (a.min(x), b.max(x), cc.min(y), d.max(y)),
    );
    let (x0, x1) = padded(xl, xh, c.log_x);
    let (y0, y1) = padded(yl, yh, false);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&c.title, ("sans-serif", 20))
            .margin(18)
            .x_label_area_size(48)
            .y_label_area_size(64);
        if c.log_x {
            let mut chart = builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1).map_err(err)?;
            draw_body(&mut chart, c).map_err(err)?;
        } else {
            let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
            draw_body(&mut chart, c).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn draw_body<'a, 'b: 'a, X>(chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, RangedCoordf64>>, c: &Chart) -> std::result::Result<(), String>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(c.x_desc.as_str())
        .y_desc(c.y_desc.as_str())
        .x_label_formatter(&|v| fmt_num(*v, 3))
        .y_label_formatter(&|v| fmt_num(*v, 3))
        .light_line_style(RGBColor(238, 238, 238))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(c.points.iter().map(|&(x, y)| Circle::new((x, y), 3, DOT.mix(0.75).filled())))
        .map_err(err)?
        .label(c.points_label.as_str())
        .legend(|(x, y)| Circle::new((x + 10, y), 3, DOT.filled()));
    if !c.line.is_empty() {
        chart
            .draw_series(LineSeries::new(c.line.iter().copied(), LINE.stroke_width(2)))
            .map_err(err)?
            .label(c.line_label.as_str())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], LINE.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Formatting.

/// `v` with about `sig` significant digits: scientific for very large or small magnitudes.
fn fmt_num(v: f64, sig: i32) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{:.*e}", (sig - 1).max(0) as usize, v);
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.trim_end_matches('0').trim_end_matches('.')
        } else {
            mantissa
        };
        return format!("{mantissa}e{exp}");
    }
    let decimals = (sig - 1 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn fmt_rho(rho: Option<f64>) -> String {
    rho.map_or_else(|| "n/a".into(), |r| format!("{r:.3}"))
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.decimals$}"))
}

fn fmt_share(u: &LlmUse) -> String {
    match u.valid_share {
        Some(s) => format!("{:.1} % ({} of {})", s * 100.0, u.valid_proposals, u.valid_proposals + u.invalid_proposals),
        None => "—".into(),
    }
}

/// Escape a Markdown table cell (arch strings hold `|`).
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STATE_ORDER: [&str; 6] = ["complete", "failed", "pruned", "lost", "running", "pending"];

fn states_in_order(states: &BTreeMap<String, usize>) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = STATE_ORDER.iter().filter_map(|s| states.get(*s).map(|n| (s.to_string(), *n))).collect();
    v.extend(states.iter().filter(|(k, _)| !STATE_ORDER.contains(&k.as_str())).map(|(k, n)| (k.clone(), *n)));
    v
}

/// A table of the report as (header, rows); Markdown and HTML render the same ones.
type Table = (Vec<String>, Vec<Vec<String>>);

fn overview(r: &Report) -> Table {
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

fn leaderboard_table(r: &Report) -> Table {
    let mut header: Vec<String> = ["rank", "trial", "arch", "valid acc (%)", "test acc (%)", "params (M)", "FLOPs (M)"]
        .map(String::from)
        .to_vec();
    header.extend(r.proxy_names.iter().cloned());
    header.push("device s".into());
    let rows = r
        .leaderboard
        .iter()
        .map(|row| {
            let mut v = vec![
                row.rank.to_string(),
                row.trial.to_string(),
                row.arch.clone(),
                format!("{:.2}", row.accuracy),
                fmt_opt(row.test_accuracy, 2),
                format!("{:.3}", row.params_m),
                format!("{:.2}", row.flops_m),
            ];
            v.extend(
                r.proxy_names
                    .iter()
                    .map(|p| row.proxies.get(p).copied().flatten().map_or_else(|| "—".into(), |x| fmt_num(x, 4))),
            );
            v.push(format!("{:.1}", row.seconds));
            v
        })
        .collect();
    (header, rows)
}

fn budget_table(r: &Report) -> Table {
    let b = &r.budget;
    let header = ["limit", "used", "trials", "rounds", "device s", "proxy s", "overrun s"]
        .map(String::from)
        .to_vec();
    let row = vec![
        b.limit.clone(),
        b.used.map_or_else(|| "—".into(), |u| format!("{:.1} %", u * 100.0)),
        b.trials.to_string(),
        b.rounds.to_string(),
        format!("{:.1}", b.device_seconds),
        format!("{:.1}", b.proxy_seconds),
        fmt_opt(b.overrun_seconds, 1),
    ];
    (header, vec![row])
}

fn llm_table(r: &Report) -> Table {
    let u = &r.llm;
    let header = ["exchanges", "prompt tokens", "completion tokens", "cost (USD)", "seconds", "valid proposals"]
        .map(String::from)
        .to_vec();
    let row = vec![
        u.exchanges.to_string(),
        u.prompt_tokens.to_string(),
        u.completion_tokens.to_string(),
        format!("{:.4}", u.cost_usd),
        format!("{:.1}", u.seconds),
        fmt_share(u),
    ];
    (header, vec![row])
}

fn states_table(r: &Report) -> Table {
    let s = states_in_order(&r.states);
    (s.iter().map(|(k, _)| k.clone()).collect(), vec![s.iter().map(|(_, n)| n.to_string()).collect()])
}

fn proxies_table(r: &Report) -> Table {
    let header = ["proxy", "Spearman ρ", "n", "x axis"].map(String::from).to_vec();
    let rows = r
        .proxies
        .iter()
        .map(|p| vec![p.name.clone(), fmt_rho(p.rho), p.n.to_string(), if p.log_x { "log" } else { "linear" }.into()])
        .collect();
    (header, rows)
}

fn md_table(out: &mut String, (header, rows): &Table) {
    let line = |cells: &[String]| format!("| {} |", cells.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(out, "{}", line(header));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
    out.push('\n');
}

fn html_table(out: &mut String, (header, rows): &Table) {
    out.push_str("<table>\n");
    if header.iter().any(|h| !h.is_empty()) {
        let _ = writeln!(
            out,
            "<tr>{}</tr>",
            header.iter().map(|h| format!("<th>{}</th>", html_escape(h))).collect::<String>()
        );
    }
    for r in rows {
        let _ = writeln!(out, "<tr>{}</tr>", r.iter().map(|c| format!("<td>{}</td>", html_escape(c))).collect::<String>());
    }
    out.push_str("</table>\n");
}

/// A plot as a Markdown image; `link` gives the path to show.
fn md_image(out: &mut String, p: &Plot, link: &dyn Fn(&Plot) -> String) {
    let target = link(p);
    let target = if target.contains(' ') { format!("<{target}>") } else { target };
    let _ = writeln!(out, "![{}]({target})\n", p.caption);
}

fn leaderboard_heading(r: &Report) -> String {
    if r.leaderboard.is_empty() {
        return "Leaderboard".into();
    }
    format!(
        "Leaderboard (top {} of {} complete trials by validation accuracy)",
        r.leaderboard.len(),
        r.complete
    )
}

fn markdown(r: &Report, link: &dyn Fn(&Plot) -> String) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Run report: {}\n", r.name);
    md_table(&mut s, &overview(r));
    let _ = writeln!(s, "## {}\n", leaderboard_heading(r));
    if r.leaderboard.is_empty() {
        s.push_str("No complete trial yet.\n\n");
    } else {
        md_table(&mut s, &leaderboard_table(r));
    }
    let _ = writeln!(
        s,
        "## Budget{}\n",
        if r.budget.from_summary {
            ""
        } else {
            " (recomputed from the trials: the run has no summary)"
        }
    );
    md_table(&mut s, &budget_table(r));
    let _ = writeln!(s, "## LLM usage{}\n", if r.llm.from_summary { "" } else { " (recomputed from the exchanges)" });
    md_table(&mut s, &llm_table(r));
    s.push_str("## Trial states\n\n");
    if r.states.is_empty() {
        s.push_str("No trial yet.\n\n");
    } else {
        md_table(&mut s, &states_table(r));
    }
    s.push_str("## Plots\n\n");
    if r.plots.is_empty() {
        s.push_str("No plot: no trial has an accuracy yet.\n\n");
    }
    for p in r.plots.iter().filter(|p| !p.key.starts_with("proxy_")) {
        md_image(&mut s, p, link);
    }
    if !r.proxies.is_empty() {
        s.push_str("### Proxies against validation accuracy\n\n");
        md_table(&mut s, &proxies_table(r));
        for p in r.plots.iter().filter(|p| p.key.starts_with("proxy_")) {
            md_image(&mut s, p, link);
        }
    }
    s
}

fn html(r: &Report) -> String {
    let mut s = String::new();
    let title = html_escape(&format!("Run report: {}", r.name));
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 2em; color: #222; }}\n\
         table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}\n\
         th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }}\n\
         th {{ background: #f3f3f3; }}\n\
         figure {{ margin: 1em 0; }}\n\
         </style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    html_table(&mut s, &overview(r));
    let _ = writeln!(s, "<h2>{}</h2>", html_escape(&leaderboard_heading(r)));
    if r.leaderboard.is_empty() {
        s.push_str("<p>No complete trial yet.</p>\n");
    } else {
        html_table(&mut s, &leaderboard_table(r));
    }
    let _ = writeln!(
        s,
        "<h2>Budget{}</h2>",
        if r.budget.from_summary {
            ""
        } else {
            " (recomputed from the trials: the run has no summary)"
        }
    );
    html_table(&mut s, &budget_table(r));
    let _ = writeln!(
        s,
        "<h2>LLM usage{}</h2>",
        if r.llm.from_summary { "" } else { " (recomputed from the exchanges)" }
    );
    html_table(&mut s, &llm_table(r));
    s.push_str("<h2>Trial states</h2>\n");
    if r.states.is_empty() {
        s.push_str("<p>No trial yet.</p>\n");
    } else {
        html_table(&mut s, &states_table(r));
    }
    s.push_str("<h2>Plots</h2>\n");
    let figure = |s: &mut String, p: &Plot| {
        let svg = p.svg.trim_start();
        let svg = match svg.strip_prefix("<?xml") {
            Some(rest) => rest.split_once("?>").map_or(rest, |(_, b)| b).trim_start(),
            None => svg,
        };
        let _ = writeln!(
            s,
            "<figure id=\"{}\">\n{svg}\n<figcaption>{}</figcaption>\n</figure>",
            p.key,
            html_escape(&p.caption)
        );
    };
    for p in r.plots.iter().filter(|p| !p.key.starts_with("proxy_")) {
        figure(&mut s, p);
    }
    if !r.proxies.is_empty() {
        s.push_str("<h3>Proxies against validation accuracy</h3>\n");
        html_table(&mut s, &proxies_table(r));
        for p in r.plots.iter().filter(|p| p.key.starts_with("proxy_")) {
            figure(&mut s, p);
        }
    }
    s.push_str("</body>\n</html>\n");
    s
}

fn json_report(r: &Report) -> Value {
    json!({
        "run_dir": r.run_dir.display().to_string(),
        "status": r.status,
        "task": r.task,
        "strategy": r.strategy,
        "llm_backend": r.llm_backend,
        // A number, as the run's --seed (older records may hold something else: kept as text).
        "seed": r.seed.as_deref().map(|t| t.parse::<u64>().map_or_else(|_| Value::from(t), Value::from)),
        "version": r.version,
        "trials": r.trials_total,
        "complete": r.complete,
        "leaderboard": r.leaderboard,
        "states": r.states,
        "budget": r.budget,
        "llm": r.llm,
        "proxies": r.proxies,
        "plots": r.plots.iter().map(|p| (p.key.clone(), Value::from(p.path.display().to_string()))).collect::<serde_json::Map<_, _>>(),
    })
}

pub(crate) fn cmd_report(args: ReportArgs) -> Result<()> {
    let run = load(&args.run_dir)?;
    let out = args.out.clone().unwrap_or_else(|| args.run_dir.join("report"));
    let report = build(&args.run_dir, &out, &run)?;
    match args.format.as_str() {
        "json" => {
            outln!("{}", serde_json::to_string(&json_report(&report))?);
        }
        "html" => {
            let page = html(&report);
            let path = out.join("report.html");
            std::fs::write(&path, &page).with_context(|| format!("cannot write {}", path.display()))?;
            crate::output::out_text(&page);
        }
        _ => {
            // The copy in the report directory links the plots beside it; stdout's links are the
            // paths as given.
            let saved = markdown(&report, &|p| p.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()));
            let path = out.join("report.md");
            std::fs::write(&path, saved).with_context(|| format!("cannot write {}", path.display()))?;
            crate::output::out_text(&markdown(&report, &|p| p.path.display().to_string()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ls.

#[derive(Serialize)]
struct Listed {
    name: String,
    path: String,
    status: String,
    strategy: Option<String>,
    task: Option<String>,
    trials: usize,
    best_accuracy: Option<f64>,
    best_arch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn list_one(dir: &Path) -> Listed {
    let name = dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut l = Listed {
        name,
        path: dir.display().to_string(),
        status: "unreadable".into(),
        strategy: None,
        task: None,
        trials: 0,
        best_accuracy: None,
        best_arch: None,
        error: None,
    };
    let read = || -> Result<(String, Value, Vec<TrialRecord>)> {
        let store = open_run_db(dir)?;
        let config: Value = store.meta("config")?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
        let status = status_of(store.meta("status")?.as_deref(), &dir.join("run.db"));
        Ok((status, config, store.trials()?))
    };
    match read() {
        Ok((status, config, trials)) => {
            l.status = status;
            l.strategy = config["strategy"].as_str().map(String::from);
            l.task = config["args"]["task"].as_str().map(String::from);
            l.trials = trials.len();
            if let Some(best) = ranked(&trials).first() {
                l.best_accuracy = best.trial.accuracy;
                l.best_arch = Some(best.trial.arch.to_string());
            }
        }
        Err(e) => l.error = Some(format!("{e:#}")),
    }
    l
}

pub(crate) fn cmd_ls(args: LsArgs) -> Result<()> {
    let dir = &args.dir;
    if !dir.is_dir() {
        if dir.exists() {
            bail!("{} is not a directory", dir.display());
        }
        bail!("directory {} does not exist", dir.display());
    }
    let mut runs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.join("run.db").is_file())
        .collect();
    runs.sort();
    if runs.is_empty() {
        errln!("no runs in {} (a run directory holds run.db)", dir.display());
        if args.json {
            outln!("[]");
        }
        return Ok(());
    }
    let listed: Vec<Listed> = runs.iter().map(|p| list_one(p)).collect();
    let mut out = String::new();
    if args.json {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&listed)?);
    } else if args.json_lines {
        for l in &listed {
            let _ = writeln!(out, "{}", serde_json::to_string(l)?);
        }
    } else {
        let header = ["NAME", "STATUS", "STRATEGY", "TRIALS", "BEST ACC", "BEST ARCH"].map(String::from);
        let rows: Vec<[String; 6]> = listed
            .iter()
            .map(|l| {
                [
                    l.name.clone(),
                    l.status.clone(),
                    l.strategy.clone().unwrap_or_else(|| "—".into()),
                    l.trials.to_string(),
                    fmt_opt(l.best_accuracy, 2),
                    l.best_arch.clone().or_else(|| l.error.clone()).unwrap_or_else(|| "—".into()),
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..6)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0))
            .collect();
        let line = |cells: &[String; 6]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = widths[i] - c.chars().count();
                if i == 5 {
                    s.push_str(c);
                } else if i == 3 || i == 4 {
                    let _ = write!(s, "{}{c}  ", " ".repeat(pad));
                } else {
                    let _ = write!(s, "{c}{}  ", " ".repeat(pad));
                }
            }
            s.trim_end().to_string()
        };
        let _ = writeln!(out, "{}", line(&header));
        for r in &rows {
            let _ = writeln!(out, "{}", line(r));
        }
    }
    crate::output::out_text(&out);
    Ok(())
}
