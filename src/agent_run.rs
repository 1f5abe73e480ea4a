//! `autoagent run`: the agent loop from the command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use autoagent_agent::budget::{Budget, Limit};
use autoagent_agent::configspace::{cell_space, tabular_space, vision_space, Config, Space};
use autoagent_agent::history::Trial;
use autoagent_agent::llm::config::{build_backend, LlmConfig};
use autoagent_agent::llm::replay::Replay;
use autoagent_agent::llm::{Exchange, LlmBackend};
use autoagent_agent::llm_strategy::{LlmOptions, LlmStrategy};
use autoagent_agent::prompts::Prompts;
use autoagent_agent::ranker::{Ranker, RankerConfig};
use autoagent_agent::runner::{run_loop, LoopOptions, Recorder, Spent, Summary};
use autoagent_agent::scheduler::{geometric_ladder, Scheduler, SchedulerKind};
use autoagent_agent::score::ScoreLabel;
use autoagent_agent::strategy::{Evolution, LocalSearch, RandomSearch, Strategy};
use autoagent_agent::tabular_rank::TABULAR_PROXIES;
use autoagent_agent::tabular_task::{CsvOptions, TabularTask};
use autoagent_agent::task::{calibration_config, nb201_proxy_images, network, search_split, Evaluator, Nb201Dataset, TableEvaluator};
use autoagent_agent::trial::{ProcessEvaluator, TrialSpec, SPEC_VERSION};
use autoagent_evaluator::data::{self, DatasetKind};
use autoagent_evaluator::table::Nb201Table;
use autoagent_evaluator::train::{parse_device, TrainConfig};
use clap::Args;

use crate::DataArgs;

/// The proxies that rank the networks of image tasks unless `--proxies` names others.
const IMAGE_PROXIES: &str = "synflow,naswot,jacob_cov";

#[derive(Args, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RunArgs {
    /// Task: nb201:cifar10, nb201:cifar100, nb201:imagenet16 (table lookup), cifar10, cifar100,
    /// mnist, fashion-mnist (real training), or csv:PATH (a table; with --target).
    #[arg(long, default_value = "nb201:cifar10")]
    task: String,
    /// The column to predict (csv tasks).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    /// The metric of a csv task: roc_auc, log_loss, accuracy, balanced_accuracy, rmse, mae, r2
    /// (default: roc_auc for two classes, log_loss for more, rmse for a regression).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metric: Option<String>,
    /// The problem of a csv task: binary, multiclass or regression (default: inferred from the
    /// target, see the README).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    /// A fixed split of a csv task's rows: a JSON file {"train": [rows], "test": [rows]} (0-based
    /// data rows); the test rows are measured once, by the final model.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    split: Option<PathBuf>,
    /// A csv task's test rows as a second CSV file with the same columns.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    test: Option<PathBuf>,
    /// Folds of a csv task's cross-validation (default: 5 up to 10,000 training rows, else a
    /// 20 % hold-out).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cv: Option<usize>,
    /// The fields a csv task reads as missing, separated by commas (default: the empty field,
    /// NA, ? and NaN).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    na: Option<String>,
    /// Threads of a csv task's learners (default: every core).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threads: Option<usize>,
    /// Training rows of a csv task the LLM may see, as CSV, besides the data's profile (default:
    /// none: the profile only).
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    llm_rows: usize,
    /// Budget: a trial count (200trials) or device time (50gpuh, 2h, 90m, 5min, 3600s). Device
    /// time is the time trials train on their device plus the time proxies take, summed over
    /// devices (CPU counts as one), not the wall clock (see --wall-limit); training tasks only.
    #[arg(long, default_value = "100trials")]
    budget: String,
    /// Wall-clock limit of this invocation (2h, 90m, 30s): no round or trial starts past it and a
    /// running trial is stopped (pruned) at it. Counted from the start of `run` or `resume`; the
    /// search stops short of it by the final model's reserve.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wall_limit: Option<String>,
    /// Strategy: random, evolution, local or llm (default: llm when --llm names a backend, else evolution).
    #[arg(long)]
    strategy: Option<String>,
    /// LLM backend: none, openai (any OpenAI-compatible server) or local (a GGUF model in-process).
    #[arg(long, default_value = "none")]
    llm: String,
    /// Model name sent to the server (openai), or a hub repository `owner/name` (local, with --model-file).
    #[arg(long)]
    model: Option<String>,
    /// The GGUF file in the hub repository named by --model (local).
    #[arg(long)]
    model_file: Option<String>,
    /// A GGUF file on disk (local).
    #[arg(long)]
    model_path: Option<PathBuf>,
    /// Base URL of the OpenAI-compatible server, up to /v1 (openai).
    #[arg(long)]
    base_url: Option<String>,
    /// Sampling temperature of the LLM.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Trials the LLM's prompt shows: this many best and this many most recent.
    #[arg(long, default_value_t = 10)]
    history: usize,
    /// Do not send the reply's JSON Schema (openai; for servers without structured outputs).
    #[arg(long)]
    no_json_schema: bool,
    /// Prompt templates to use instead of the embedded ones (system.j2, propose.j2, repair.j2).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Reproduce a recorded run's LLM replies instead of calling the LLM.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Candidates proposed per round.
    #[arg(long, default_value_t = 16)]
    k: usize,
    /// Candidates evaluated per round (the best by proxy ranking).
    #[arg(long, default_value_t = 2)]
    top_k: usize,
    /// With proxy ranking: candidates added to every round beyond the strategy's (mutations of
    /// the best trial, or random cells before the first), for the proxies to choose among.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    explore: usize,
    /// Turn proxy ranking off (candidates are evaluated in proposal order).
    #[arg(long)]
    no_proxies: bool,
    /// Proxies of the ranking (their log-rank ensemble orders each round; default:
    /// synflow,naswot,jacob_cov for the networks of image tasks, jacob_cov for a table's MLPs).
    #[arg(long)]
    proxies: Option<String>,
    /// Images in the proxies' batch.
    #[arg(long, default_value_t = 64)]
    proxy_batch_size: usize,
    /// Seed of the proxies' image batch and network initialisation. Fixed across runs by default,
    /// so a cell's cached score serves every run whatever its --seed.
    #[arg(long, default_value_t = 0)]
    proxy_seed: u64,
    /// Score a round's candidates several at a time (true) or one after another (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    #[serde(default = "yes")]
    proxy_parallel: bool,
    /// Proxy score cache (JSON lines, shared with `bench proxies`; default: in the user cache directory).
    #[arg(long)]
    proxy_cache: Option<PathBuf>,
    /// Dataset whose images the proxies see on nb201 tasks (default: the task's own where it is
    /// at hand, CIFAR-10 or CIFAR-100 found under the data root; else CIFAR-10, with a warning,
    /// recorded in config.json).
    #[arg(long)]
    images: Option<String>,
    /// Why the proxies see other images than the task's (filled in by the run, recorded).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    images_substituted: Option<String>,
    /// NB201 table (interchange format) for nb201 tasks (default: nb201/nb201.csv in the data cache).
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Epochs of the visible validation accuracy on nb201 tasks: 12 or 200.
    #[arg(long, default_value_t = 12)]
    fidelity: usize,
    /// Seconds a training trial may run before it is stopped (pruned); a trial is also stopped
    /// when it would exceed what is left of a time budget.
    #[arg(long)]
    trial_timeout: Option<f64>,
    /// Multi-fidelity scheduler: none (every trial trains --max-epochs), sha, hyperband or asha
    /// (default: asha on training tasks; none on nb201 tasks, whose rungs are the table's 12 and
    /// 200 epochs; none on csv tasks, whose rungs validate on 1/η², 1/η and all of each fold's
    /// training rows).
    #[arg(long)]
    #[serde(default = "scheduler_of_older_runs")]
    scheduler: Option<String>,
    /// Epochs of a trial's first rung on training tasks.
    #[arg(long, default_value_t = 1)]
    #[serde(default = "one")]
    min_epochs: usize,
    /// Epochs of a fully trained trial on training tasks, the top rung (also --epochs).
    #[arg(long, alias = "epochs", default_value_t = 27)]
    #[serde(alias = "epochs")]
    max_epochs: usize,
    /// Reduction factor of the scheduler: the best 1/eta of a rung go on, rungs grow eta-fold.
    #[arg(long, default_value_t = 3)]
    #[serde(default = "three")]
    eta: usize,
    /// Share of a time budget held back from the start for the final model: the best
    /// configuration retrained for --max-epochs on the training split with its validation
    /// hold-out, measured once on the test split (training tasks; 0: no final model).
    #[arg(long, default_value_t = 0.25)]
    #[serde(default)]
    final_fraction: f64,
    /// Narrow the task's search space: `name=values` clauses separated by `;`, values a
    /// `low:high` range or choices separated by `,` (`width=16,32; lr=0.01:0.1; augment=crop_flip`).
    /// Training tasks search the cell, width, depth, lr, weight_decay, batch, augment,
    /// cutout_length and label_smoothing (see the README's table).
    #[arg(long)]
    #[serde(default)]
    space: Option<String>,
    /// Regularized evolution's population and tournament sizes (local search starts from
    /// `--population` random cells).
    #[arg(long, default_value_t = 10)]
    population: usize,
    #[arg(long, default_value_t = 3)]
    tournament: usize,
    /// Seed of the strategy, the LLM's sampling and training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Run directory (default: runs/run-<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Size at which the run's log (run.log, JSON records) rotates to run.log.1, in MiB.
    #[arg(long, default_value_t = 10.0)]
    #[serde(default = "default_log_cap")]
    log_cap_mb: f64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    #[serde(default)]
    data: DataArgs,
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

fn three() -> usize {
    3
}

/// Runs recorded before schedulers trained every trial for the same epochs.
fn scheduler_of_older_runs() -> Option<String> {
    Some("none".into())
}

fn default_log_cap() -> f64 {
    10.0
}

#[derive(Args)]
pub(crate) struct ResumeArgs {
    /// The run directory of a run that stopped (killed, crashed) or finished.
    run_dir: PathBuf,
    /// A new budget (to extend a finished run); default: the run's own. In the run's own unit
    /// (trials, or a time) and not below what the run has spent (device time lost to kills
    /// included).
    #[arg(long)]
    budget: Option<String>,
    /// Wall-clock limit of this resume (2h, 90m, 30s; see `run --wall-limit`).
    #[arg(long)]
    wall_limit: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

fn backend(args: &RunArgs) -> Result<Option<Arc<dyn LlmBackend>>> {
    if let Some(dir) = &args.replay {
        let path = dir.join("llm.jsonl");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read the recorded exchanges {}", path.display()))?;
        let exchanges = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| serde_json::from_str::<Exchange>(l).with_context(|| format!("{}:{}: not a recorded exchange", path.display(), i + 1)))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Some(Arc::new(Replay::new(exchanges))));
    }
    let config = LlmConfig {
        llm: args.llm.clone(),
        model: args.model.clone(),
        model_file: args.model_file.clone(),
        model_path: args.model_path.clone(),
        base_url: args.base_url.clone(),
    };
    let live = build_backend(&config, &parse_device(&args.device)?)?;
    // A local model's call takes tens of seconds on CPU: say it is still going (not with --json).
    Ok(live.map(|b| -> Arc<dyn LlmBackend> {
        if args.json {
            return b;
        }
        let say: autoagent_agent::llm::progress::Say = Arc::new(|s: &str| errln!("{s}"));
        Arc::new(autoagent_agent::llm::progress::Announced::new(b, std::time::Duration::from_secs(10), say))
    }))
}

/// The run directory (created once the run's parts are ready).
fn run_dir_path(args: &RunArgs) -> Result<PathBuf> {
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from("runs").join(format!("run-{secs}"))
        }
    };
    if dir.join("trials.jsonl").exists() || dir.join("run.db").exists() {
        bail!("{} already holds a run (choose another --out, or `autoagent resume` it)", dir.display());
    }
    Ok(dir)
}

/// What the user sees while a run goes on: nothing with `--json`; on a terminal, one line per
/// trial above a status line (round, trials, best so far, budget left); otherwise plain lines.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    best: Option<f64>,
    label: ScoreLabel,
}

impl Progress {
    fn new(quiet: bool, label: ScoreLabel) -> Self {
        use std::io::IsTerminal;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"));
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar.set_message("starting");
            bar
        });
        Progress { bar, quiet, best: None, label }
    }

    fn trial(&mut self, t: &Trial, budget: &Budget) {
        if self.quiet {
            return;
        }
        if let Some(a) = t.accuracy {
            self.best = Some(self.best.map_or(a, |b: f64| b.max(a)));
        }
        let score = match (t.accuracy, t.state) {
            (Some(a), _) => self.label.named(a),
            (None, state) => state.name().to_string(),
        };
        let used = (budget.used_fraction() * 100.0).min(999.0);
        let epochs = if self.label.epochs { format!("{:>3} ep  ", t.epochs) } else { String::new() };
        let line = format!("trial {:>3}  {}  {epochs}{score}  budget {:.0} %", t.id, t.config.line(), used);
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.set_message(format!(
                    "round {} | {} trials | best {} | budget {:.0} % left",
                    t.round + 1,
                    t.id + 1,
                    self.best.map_or("-".to_string(), |b| self.label.show(b)),
                    (100.0 - used).max(0.0)
                ));
            }
            None => errln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// What a run is made of, built from its arguments.
struct Prepared {
    /// Seconds per training image of the calibration cell (training tasks).
    calibration: Option<f64>,
    /// How the budget will be spent (training tasks), recorded in the run database.
    plan: Option<serde_json::Value>,
    scheduler: Scheduler,
    evaluator: Box<dyn Evaluator>,
    strategy: Box<dyn Strategy>,
    strategy_name: String,
    ranker: Option<Ranker>,
    backend: Option<Arc<dyn LlmBackend>>,
}

/// Time a few training steps of the calibration network ([`calibration_config`]) on the run's
/// device and images: seconds per training image, the first estimate of every trial's cost.
fn calibrate(kind: DatasetKind, config: &TrainConfig, images: &data::Split, device: &candle_core::Device) -> Result<f64> {
    Ok(autoagent_evaluator::calibrate::seconds_per_image(
        &network(kind, &calibration_config()),
        config,
        kind,
        images,
        device,
        3,
    )?)
}

/// The task's search space (`default`), narrowed by `--space` when given.
fn search_space(default: Space, narrowing: Option<&str>) -> Result<Space> {
    match narrowing {
        Some(spec) => default.narrow(spec).map_err(|e| anyhow::anyhow!("--space: {e}")),
        None => Ok(default),
    }
}

/// The run's scheduler and its rungs: on nb201 tasks the table's 12 and 200 epochs (or
/// `--fidelity` alone without a scheduler), else from `--min-epochs` to `--max-epochs`, growing
/// `--eta`-fold.
fn scheduler(args: &RunArgs) -> Result<Scheduler> {
    if args.task.starts_with("csv:") {
        let (kind, ladder) = csv_rungs(args)?;
        return Scheduler::new(kind, ladder, args.eta).map_err(anyhow::Error::msg);
    }
    let table = args.task.starts_with("nb201:");
    let kind = match &args.scheduler {
        Some(s) => s.parse::<SchedulerKind>().map_err(anyhow::Error::msg)?,
        None if table => SchedulerKind::None,
        None => SchedulerKind::Asha,
    };
    if args.max_epochs == 0 {
        bail!("--max-epochs must be at least 1");
    }
    let epochs = geometric_ladder(args.min_epochs, args.max_epochs, args.eta).map_err(anyhow::Error::msg)?;
    let ladder = match (table, kind) {
        (true, SchedulerKind::None) => vec![args.fidelity],
        (true, _) => vec![12, 200],
        (false, _) => epochs,
    };
    Scheduler::new(kind, ladder, args.eta).map_err(anyhow::Error::msg)
}

/// A csv task's scheduler and rungs: none by default (every trial validated in full, rung 1);
/// with `--scheduler`, the rungs 1, η, η² where rung r validates on r/η² of each fold's
/// training rows (boosting's trees cut alike).
fn csv_rungs(args: &RunArgs) -> Result<(SchedulerKind, Vec<usize>)> {
    let kind = args
        .scheduler
        .as_deref()
        .map(str::parse::<SchedulerKind>)
        .transpose()
        .map_err(anyhow::Error::msg)?
        .unwrap_or(SchedulerKind::None);
    if kind == SchedulerKind::None {
        return Ok((kind, vec![1]));
    }
    // (An η below 2 is refused by the ladder itself.)
    let top = args.eta.saturating_mul(args.eta).max(1);
    Ok((kind, geometric_ladder(1, top, args.eta).map_err(anyhow::Error::msg)?))
}

/// Say how a time budget will be spent on a training task, before anything is (and refuse a
/// budget that cannot pay for one lowest-rung trial): `seconds_per_image` is the calibration
/// cell's speed, `images` the training images.
fn plan(args: &RunArgs, scheduler: &Scheduler, seconds_per_image: f64, images: usize) -> Result<serde_json::Value> {
    let epoch = seconds_per_image * images as f64;
    let ladder = scheduler.ladder();
    let first = epoch * ladder[0] as f64;
    let limit: Limit = args.budget.parse().map_err(anyhow::Error::msg)?;
    if let Limit::Seconds(b) = limit {
        if b < first {
            bail!(
                "the budget ({}) is too small for one {}-epoch trial: a median NB201 cell takes ~{first:.0} device-s here; give at least --budget {}s",
                args.budget,
                ladder[0],
                first.ceil() as u64 + 1
            );
        }
    }
    let rungs: Vec<String> = ladder.iter().map(|e| e.to_string()).collect();
    let lowest = match limit {
        Limit::Seconds(b) => format!("; the budget pays for ~{:.0} median {}-epoch trials", b / first, ladder[0]),
        Limit::Trials(n) => format!("; {n} trials"),
    };
    if !args.json {
        errln!(
            "calibration: NB201's median cell trains at {:.0} images/s here (one epoch of {images} images ~{epoch:.0} s)",
            1.0 / seconds_per_image
        );
        errln!(
            "plan: scheduler {} over rungs of {} epochs (eta {}); a median cell's epoch ~{epoch:.1} s here{lowest}",
            scheduler.kind().name(),
            rungs.join(", "),
            scheduler.eta()
        );
    }
    Ok(serde_json::json!({
        "scheduler": scheduler.kind().name(),
        "rungs": ladder,
        "eta": scheduler.eta(),
        "epoch_seconds": epoch,
        "budget": args.budget,
    }))
}

/// The evaluator of a `csv:PATH` task (warnings on stderr unless `--json`).
fn csv_evaluator(args: &RunArgs, path: &str, dir: &Path, space: &Space, full_rung: usize) -> Result<Box<dyn Evaluator>> {
    let Some(target) = args.target.clone() else {
        bail!("a csv task needs --target COLUMN (the column to predict)");
    };
    let options = CsvOptions {
        path: PathBuf::from(path),
        target,
        metric: args.metric.clone(),
        problem: args.problem.clone(),
        split: args.split.clone(),
        test: args.test.clone(),
        cv: args.cv,
        na: args.na.clone(),
        threads: args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        seed: args.seed,
        llm_rows: args.llm_rows,
        proxies: (!args.no_proxies).then(|| args.proxies.clone().unwrap_or_else(|| TABULAR_PROXIES.to_string())),
        full_rung,
    };
    let (mut task, warnings) = TabularTask::from_csv(&options, dir).map_err(anyhow::Error::msg)?;
    if !args.json {
        warnings.iter().for_each(|w| errln!("warning: {w}"));
    }
    task.set_space(space.clone());
    Ok(Box::new(task))
}

/// Build a run's parts. `calibration` is the speed the run measured before (a resume), else it
/// is measured now; [`Prepared::calibration`] holds it either way, for the run database.
fn prepare(args: &RunArgs, backend: Option<Arc<dyn LlmBackend>>, dir: &Path, calibration: Option<f64>) -> Result<Prepared> {
    let mut measured = None;
    if args.k == 0 || args.top_k == 0 {
        bail!("--k and --top-k must be at least 1");
    }
    if !(args.log_cap_mb.is_finite() && args.log_cap_mb > 0.0) {
        bail!("--log-cap-mb must be a positive number");
    }
    if !(0.0..1.0).contains(&args.final_fraction) {
        bail!("--final-fraction must be in [0, 1), got {}", args.final_fraction);
    }
    if args.trial_timeout.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
        bail!("--trial-timeout must be a positive number of seconds");
    }
    let table_task = args.task.starts_with("nb201:");
    let csv_task = args.task.starts_with("csv:");
    let default_space = match (table_task, csv_task) {
        (true, _) => cell_space(),
        (_, true) => tabular_space(),
        _ => vision_space(),
    };
    let space = search_space(default_space, args.space.as_deref())?;
    let device = parse_device(&args.device)?;
    let root = data::data_root(args.data.data_dir.as_deref());
    let prompts = Arc::new(Prompts::load(args.prompts.as_deref())?);
    let scheduler = scheduler(args)?;
    let mut plan_json = None;

    // The task.
    let (evaluator, image_kind): (Box<dyn Evaluator>, DatasetKind) = if let Some(ds) = args.task.strip_prefix("nb201:") {
        let dataset = Nb201Dataset::from_name(ds).with_context(|| format!("unknown NB201 dataset '{ds}' (available: cifar10, cifar100, imagenet16)"))?;
        let table = Arc::new(Nb201Table::load_or_default(args.truth.as_deref())?.0);
        let name = args.images.as_deref().unwrap_or("cifar10");
        let images = DatasetKind::from_name(name).with_context(|| format!("unknown image dataset '{name}'"))?;
        let mut evaluator = TableEvaluator::new(table, dataset, scheduler.ladder()).map_err(anyhow::Error::msg)?;
        evaluator.set_space(space.clone());
        (Box::new(evaluator), images)
    } else if let Some(path) = args.task.strip_prefix("csv:") {
        (
            csv_evaluator(args, path, dir, &space, *scheduler.ladder().last().unwrap_or(&1))?,
            DatasetKind::Cifar10,
        )
    } else {
        let kind = DatasetKind::from_name(&args.task).with_context(|| {
            format!(
                "unknown task '{}' (available: nb201:cifar10, nb201:cifar100, nb201:imagenet16, cifar10, cifar100, mnist, fashion-mnist)",
                args.task
            )
        })?;
        // The data is checked (and downloaded) here; each trial reads it in its own process.
        let data = data::open(kind, &root, !args.data.no_download)?;
        let search = search_split(&data).map_err(anyhow::Error::msg)?;
        let all_images = data.train.n;
        drop(data);
        let images = search.train.n;
        let config = TrainConfig {
            epochs: args.max_epochs,
            seed: args.seed,
            hflip: matches!(kind, DatasetKind::Cifar10 | DatasetKind::Cifar100),
            ..TrainConfig::default()
        };
        config.validate()?;
        let seconds_per_image = match calibration {
            Some(recorded) => recorded,
            None => calibrate(kind, &config, &search.train, &device)?,
        };
        plan_json = Some(plan(args, &scheduler, seconds_per_image, images)?);
        let spec = TrialSpec {
            version: SPEC_VERSION,
            trial: 0,
            task: kind.name().to_string(),
            config: Config::new(),
            data_dir: Some(std::path::absolute(&root).unwrap_or(root.clone())),
            download: false,
            train: config,
            device: args.device.clone(),
            out: None,
            resume: None,
            checkpoint: None,
            final_model: false,
            watch_stdin: true,
        };
        let exe = std::env::current_exe().context("cannot find the autoagent executable to run trials with")?;
        let mut evaluator = ProcessEvaluator::new(exe, dir.to_path_buf(), spec, images)?;
        evaluator.set_space(space.clone());
        evaluator.calibrate(seconds_per_image);
        evaluator.set_epochs(scheduler.ladder()[0], args.max_epochs);
        evaluator.set_final_images(all_images);
        measured = Some(seconds_per_image);
        (Box::new(evaluator), kind)
    };

    // The strategy, over the task's space.
    let strategy_name = args
        .strategy
        .clone()
        .unwrap_or_else(|| if backend.is_some() { "llm" } else { "evolution" }.to_string());
    let strategy: Box<dyn Strategy> = match strategy_name.as_str() {
        "random" => Box::new(RandomSearch::new(space, args.seed)),
        "local" => Box::new(LocalSearch::new(space, args.seed, args.population)),
        "evolution" => {
            if args.population == 0 || args.tournament == 0 {
                bail!("--population and --tournament must be at least 1");
            }
            Box::new(Evolution::new(space, args.seed, args.population, args.tournament))
        }
        "llm" => {
            let Some(b) = backend.clone() else {
                bail!("--strategy llm needs an LLM: --llm openai --model NAME [--base-url URL], or --llm local --model-path FILE.gguf");
            };
            let options = LlmOptions {
                temperature: args.temperature,
                seed: args.seed,
                json_schema: !args.no_json_schema,
                show_best: args.history,
                show_recent: args.history,
                ..LlmOptions::default()
            };
            Box::new(LlmStrategy::new(b, prompts.clone(), evaluator.info(), space, options, 0))
        }
        other => bail!("unknown strategy '{other}' (available: random, evolution, local, llm)"),
    };

    // Proxy ranking.
    // (A csv task ranks its MLPs itself: see `TabularTask`.)
    let ranker = if args.no_proxies || csv_task {
        None
    } else {
        Some(Ranker::build(&RankerConfig {
            proxies: args.proxies.as_deref().unwrap_or(IMAGE_PROXIES),
            images: image_kind,
            data_root: &root,
            download: !args.data.no_download,
            // Training tasks hold out the end of the training split for selection.
            search_split: !args.task.starts_with("nb201:"),
            batch_size: args.proxy_batch_size,
            seed: args.proxy_seed,
            cache: args.proxy_cache.clone(),
            device: &device,
            parallel: args.proxy_parallel,
        })?)
    };
    Ok(Prepared {
        calibration: measured,
        plan: plan_json,
        scheduler,
        evaluator,
        strategy,
        strategy_name,
        ranker,
        backend,
    })
}

fn config_json(args: &RunArgs, prepared: &Prepared) -> Result<String> {
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "args": args,
        "strategy": prepared.strategy_name,
        "llm": prepared.backend.as_ref().map(|b| b.describe()),
        "score": prepared.evaluator.score_label(),
        "version": env!("CARGO_PKG_VERSION"),
    }))?)
}

/// Send the log records into the run directory's `run.log` (rotated to `run.log.1` past
/// `--log-cap-mb`).
fn open_log(args: &RunArgs, dir: &Path) -> Result<()> {
    let cap = (args.log_cap_mb * 1024.0 * 1024.0) as u64;
    autoagent_agent::logs::set_run_log(&dir.join("run.log"), cap).with_context(|| format!("cannot open the log {}", dir.join("run.log").display()))
}

/// Run the loop into `recorder` and print the summary.
fn execute(args: &RunArgs, dir: &Path, mut prepared: Prepared, mut recorder: Recorder) -> Result<()> {
    let limit: Limit = args.budget.parse().map_err(anyhow::Error::msg)?;
    let mut budget = Budget::new(limit);
    // A resumed run's budget starts from the work its kills lost (the recorded work is served
    // back and paid again as it is).
    budget.spend(0, recorder.lost_seconds());
    let options = LoopOptions {
        k: args.k,
        top_k: args.top_k,
        max_empty_rounds: 3,
        seed: args.seed,
        trial_timeout: args.trial_timeout,
        explore: args.explore,
        wall_limit: wall_limit(args)?,
        scheduler: prepared.scheduler.clone(),
        final_epochs: (!args.task.starts_with("nb201:") && args.final_fraction > 0.0).then_some(if args.task.starts_with("csv:") {
            1
        } else {
            args.max_epochs
        }),
        final_fraction: args.final_fraction,
    };
    let label = prepared.evaluator.score_label();
    let mut progress = Progress::new(args.json, label.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let result = rt.block_on(run_loop(
        prepared.strategy.as_mut(),
        prepared.evaluator.as_mut(),
        prepared.ranker.as_mut(),
        &mut budget,
        &options,
        &mut recorder,
        |t, b| progress.trial(t, b),
    ));
    progress.finish();
    let (_, summary) = result?;
    tracing::info!(trials = summary.trials, rounds = summary.rounds, stopped = %summary.stopped, "run ended");
    report(&summary, dir, args.json, &label)?;
    if summary.trials == 0 {
        bail!("the run evaluated no trial: {} (give a larger --budget or --wall-limit)", summary.stopped);
    }
    Ok(())
}

/// `--wall-limit` in seconds.
fn wall_limit(args: &RunArgs) -> Result<Option<f64>> {
    let Some(w) = &args.wall_limit else {
        return Ok(None);
    };
    match w.parse::<Limit>().map_err(|e| anyhow::anyhow!("{}", e.replace("budget", "--wall-limit")))? {
        Limit::Seconds(s) => Ok(Some(s)),
        Limit::Trials(_) => bail!("bad --wall-limit '{w}': give a time (2h, 90m, 30s), not trials"),
    }
}

/// Refuse a time budget on a table task: its lookups record no training time, so a time there
/// would limit nothing (issue 15 item 5).
fn check_budget_unit(args: &RunArgs) -> Result<()> {
    let limit: Limit = args.budget.parse().map_err(anyhow::Error::msg)?;
    if args.task.starts_with("nb201:") && matches!(limit, Limit::Seconds(_)) {
        bail!(
            "a time budget ('{}') does not limit a table task ({}): its lookups cost no training time; use a trial budget, e.g. --budget 100trials",
            args.budget,
            args.task
        );
    }
    wall_limit(args)?;
    Ok(())
}

/// Fill in the proxies' images of an nb201 task when `--images` is not given
/// ([`nb201_proxy_images`]), saying once on stderr when they are not the task's own; the choice
/// and the reason go into the recorded arguments, so a resume sees the same images. The
/// warning is printed by the caller once the run's arguments are known to be good.
fn resolve_images(args: &mut RunArgs) {
    let dataset = args.task.strip_prefix("nb201:").and_then(Nb201Dataset::from_name);
    let (Some(dataset), None, false) = (dataset, &args.images, args.no_proxies) else {
        return;
    };
    let (kind, note) = nb201_proxy_images(dataset, &data::data_root(args.data.data_dir.as_deref()));
    args.images = Some(kind.name().to_string());
    args.images_substituted = note;
}

pub(crate) fn cmd_run(mut args: RunArgs) -> Result<()> {
    check_budget_unit(&args)?;
    resolve_images(&mut args);
    // The scheduler is recorded by name, so a resume uses the same whatever the defaults become.
    let kind = scheduler(&args)?.kind();
    args.scheduler = Some(kind.name().to_string());
    let backend = backend(&args)?;
    let dir = run_dir_path(&args)?;
    let prepared = prepare(&args, backend, &dir, None)?;
    if let Some(note) = &args.images_substituted {
        errln!("warning: {note}");
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create the run directory {}", dir.display()))?;
    if prepared.backend.is_none() && args.strategy.is_none() {
        errln!("no LLM configured (--llm none): searching with regularized evolution");
    }
    let config = config_json(&args, &prepared)?;
    std::fs::write(dir.join("config.json"), &config).with_context(|| format!("cannot write {}", dir.join("config.json").display()))?;
    open_log(&args, &dir)?;
    let mut recorder = Recorder::create(&dir)?;
    recorder.meta("config", &config)?;
    recorder.meta("seed", &args.seed.to_string())?;
    if let Some(c) = prepared.calibration {
        recorder.meta("calibration", &c.to_string())?;
    }
    if let Some(p) = &prepared.plan {
        recorder.meta("plan", &p.to_string())?;
    }
    recorder.meta("version", env!("CARGO_PKG_VERSION"))?;
    recorder.meta("status", "running")?;
    execute(&args, &dir, prepared, recorder)
}

/// `autoagent resume RUN_DIR`: continue a run that stopped. The loop starts again from the run's
/// seed with the run's own options; what the run recorded is served back (finished trials, the
/// proxy scores from the cache, the LLM's replies) so the strategy's state (population, LLM
/// history) is rebuilt exactly, trials that were running are evaluated again, and the run goes
/// on live from where it stopped.
pub(crate) fn cmd_resume(args: ResumeArgs) -> Result<()> {
    let dir = &args.run_dir;
    if !dir.is_dir() {
        bail!("no run directory at {}", dir.display());
    }
    if let Some(b) = &args.budget {
        check_new_budget(dir, b.parse().map_err(anyhow::Error::msg)?)?;
    }
    let (mut recorder, resumed) = Recorder::resume(dir)?;
    let config = match recorder.get_meta("config")? {
        Some(c) => c,
        None => std::fs::read_to_string(dir.join("config.json")).with_context(|| format!("{} records no configuration", dir.display()))?,
    };
    let value: serde_json::Value = serde_json::from_str(&config).context("the run's recorded configuration is not JSON")?;
    let mut run_args: RunArgs = serde_json::from_value(value["args"].clone()).context("the run's recorded configuration does not parse")?;
    run_args.json = args.json;
    run_args.wall_limit = args.wall_limit.clone();
    wall_limit(&run_args)?;
    if resumed.status.as_deref() == Some("finished") && args.budget.is_none() {
        errln!(
            "{} has finished ({} trials): nothing to resume (pass --budget to extend it)",
            dir.display(),
            resumed.finished
        );
        return Ok(());
    }
    if let Some(b) = &args.budget {
        run_args.budget = b.clone();
    }
    let live = backend(&run_args)?;
    let backend: Option<Arc<dyn LlmBackend>> = match live {
        Some(live) if !resumed.exchanges.is_empty() => Some(Arc::new(Replay::new(resumed.exchanges.clone()).then(live))),
        other => other,
    };
    open_log(&run_args, dir)?;
    tracing::info!(run = %dir.display(), finished = resumed.finished, lost = resumed.lost, exchanges = resumed.exchanges.len(), "resuming");
    let recorded = recorder.get_meta("calibration")?.and_then(|v| v.parse::<f64>().ok());
    let prepared = prepare(&run_args, backend, dir, recorded)?;
    let config = config_json(&run_args, &prepared)?;
    recorder.meta("config", &config)?;
    if !args.json {
        errln!(
            "resuming {}: {} finished trials, {} proposals and {} LLM exchanges restored; {} interrupted trial(s) evaluated again; \
             {:.1} device-s of work lost to kills counted in the budget",
            dir.display(),
            resumed.finished,
            resumed.proposals,
            resumed.exchanges.len(),
            resumed.lost,
            recorder.lost_seconds()
        );
    }
    recorder.meta("status", "running")?;
    execute(&run_args, dir, prepared, recorder)
}

/// Refuse a new budget for `resume` before anything is written: one in another unit than the
/// run's, or below what the run has spent. (A database that cannot be read is left to
/// [`Recorder::resume`] to report.)
fn check_new_budget(dir: &Path, new: Limit) -> Result<()> {
    let Ok(Some(spent)) = Spent::read(dir) else {
        return Ok(());
    };
    let store = autoagent_agent::store::sqlite::SqliteStore::open_read(&dir.join("run.db"))?;
    let recorded = autoagent_agent::store::Store::meta(&store, "config")?
        .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
        .and_then(|c| c["args"]["budget"].as_str().and_then(|b| b.parse::<Limit>().ok()));
    match recorded {
        Some(recorded) => spent.check_resume_budget(recorded, new).map_err(anyhow::Error::msg),
        None => Ok(()),
    }
}

fn report(s: &Summary, dir: &Path, json: bool, label: &ScoreLabel) -> Result<()> {
    if json {
        let mut v = serde_json::to_value(s)?;
        v["run_dir"] = dir.display().to_string().into();
        v["score"] = serde_json::to_value(label)?;
        outln!("{v}");
        return Ok(());
    }
    outln!(
        "run {} ({}): {} trials in {} rounds, {}",
        dir.display(),
        s.strategy,
        s.trials,
        s.rounds,
        s.stopped
    );
    if let Some(b) = &s.best {
        let epochs = if label.epochs { format!("  {} epochs", b.epochs) } else { String::new() };
        outln!(
            "best: {}{epochs}  validation {}{}",
            b.config.line(),
            label.named(b.accuracy.unwrap_or(f64::NAN)),
            b.test_accuracy.map(|t| format!("  test {}", label.show(t))).unwrap_or_default()
        );
    }
    if let Some(f) = &s.final_model {
        let ensemble = f.artefacts.iter().any(|a| a == autoagent_agent::tabular_task::FINAL_FILE);
        let line = match (f.is_complete(), f.test_accuracy) {
            (true, Some(t)) if ensemble => format!(
                "final model: a greedy ensemble of the trials, refit on every training row ({}): test {} ({:.1} s)",
                autoagent_agent::tabular_task::FINAL_FILE,
                label.named(t),
                f.seconds
            ),
            (true, None) if ensemble => format!(
                "final model: a greedy ensemble of the trials, refit on every training row ({}; no test rows given) ({:.1} s)",
                autoagent_agent::tabular_task::FINAL_FILE,
                f.seconds
            ),
            (true, Some(t)) => format!(
                "final model: trial {}'s configuration retrained for {} epochs on the training split with its validation hold-out: test {t:.2} ({:.1} s)",
                f.trial, f.epochs, f.seconds
            ),
            _ => format!("final model: {} ({})", f.state, f.reason.as_deref().unwrap_or("no reason recorded")),
        };
        outln!("{line}");
    }
    let lost = if s.lost_seconds > 0.0 {
        format!(", lost to kills {:.1} s", s.lost_seconds)
    } else {
        String::new()
    };
    outln!(
        "budget {}: {:.1} % used, {:.1} device-s (proxies {:.1} s{lost}), overrun {:.1} s",
        s.budget,
        s.budget_used * 100.0,
        s.device_seconds,
        s.proxy_seconds,
        s.overrun_seconds
    );
    if s.fallback > 0 {
        outln!(
            "{} candidates were added by the loop (mutations of the best) because rounds held too few new ones",
            s.fallback
        );
    }
    if s.llm.exchanges > 0 {
        let total = s.llm.valid_proposals + s.llm.invalid_proposals;
        outln!(
            "LLM: {} exchanges, {} + {} tokens, ${:.4}, {:.1} s; {}/{} proposals valid",
            s.llm.exchanges,
            s.llm.prompt_tokens,
            s.llm.completion_tokens,
            s.llm.cost_usd,
            s.llm.seconds,
            s.llm.valid_proposals,
            total
        );
    }
    Ok(())
}
