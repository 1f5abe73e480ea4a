//! `autoagent bench search --suite nb201`: how good an architecture each search strategy picks
//! after 10, 25, 50 and 100 evaluated architectures, with and without proxy ranking, over several
//! seeds, next to the published numbers.
//!
//! Each run is the agent's own loop ([`autoagent_agent::runner::run_loop`]) on the table-lookup
//! task: the strategy proposes `k` candidates per round, the loop drops isomorphic duplicates,
//! ranks the rest with the proxy ensemble (or, without ranking, asks for only `top_k` and takes
//! them as proposed), and looks up the 12-epoch validation accuracy of the top `top_k`. The
//! architecture picked after `n` evaluations is the best of the first `n` by that validation
//! accuracy, and the table reports its 200-epoch test accuracy, as the NB201 paper does.
//!
//! Proxy scores come from the on-disk cache shared with `bench proxies` and `run`, with one
//! proxy seed for every run, so each cell is scored once for all seeds and strategies (`bench
//! proxies --all --seeds 1` fills it ahead). With `--runs DIR` every run keeps its record (trials,
//! LLM exchanges verbatim) in `DIR/<strategy>-<ranked|plain>-s<seed>/`, and a benchmark started
//! again with the same options reuses the finished runs there instead of repeating them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use autoagent_agent::budget::{Budget, Limit};
use autoagent_agent::configspace::cell_space;
use autoagent_agent::history::Trial;
use autoagent_agent::llm::config::{build_backend, LlmConfig};
use autoagent_agent::llm::LlmBackend;
use autoagent_agent::llm_strategy::{LlmOptions, LlmStrategy};
use autoagent_agent::prompts::Prompts;
use autoagent_agent::ranker::{Ranker, RankerConfig};
use autoagent_agent::runner::{run_loop, LoopOptions, Recorder, Summary};
use autoagent_agent::scheduler::{Scheduler, SchedulerKind};
use autoagent_agent::strategy::{Evolution, LocalSearch, RandomSearch, Strategy};
use autoagent_agent::task::{Evaluator, Nb201Dataset, TableEvaluator};
use autoagent_evaluator::data::{self, DatasetKind};
use autoagent_evaluator::table::Nb201Table;
use autoagent_evaluator::train::parse_device;
use serde::{Deserialize, Serialize};

use crate::search_schedulers;

/// Options of `autoagent bench search`.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchBenchArgs {
    /// Benchmark suite (only nb201).
    #[arg(long, default_value = "nb201")]
    pub suite: String,
    /// Dataset of the table: cifar10, cifar100 or imagenet16.
    #[arg(long, default_value = "cifar10")]
    pub dataset: String,
    /// Strategies, comma-separated: random, evolution, local, llm (llm needs --llm).
    #[arg(long, value_delimiter = ',', default_value = "random,evolution")]
    pub strategies: Vec<String>,
    /// Proxy ranking: both (each strategy with and without), on, or off.
    #[arg(long, default_value = "both")]
    pub ranking: String,
    /// Evaluated architectures per run.
    #[arg(long, default_value_t = 100)]
    pub trials: usize,
    /// Runs per strategy and ranking (seeds --seed, --seed+1, ...).
    #[arg(long, default_value_t = 10)]
    pub seeds: usize,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Evaluated architectures per run with proxy ranking (default: --trials): to check that
    /// ranking needs 4 times fewer evaluations than plain evolution's 100, 25 are enough.
    #[arg(long)]
    pub ranked_trials: Option<usize>,
    /// Runs of the llm strategy per ranking (default: --seeds); an LLM on CPU is slow.
    #[arg(long)]
    pub llm_seeds: Option<usize>,
    /// Evaluated architectures per run of the llm strategy (default: --trials).
    #[arg(long)]
    pub llm_trials: Option<usize>,
    /// Report the picked architecture after these many evaluations (those past --trials are
    /// left out; with none left, after --trials).
    #[arg(long, value_delimiter = ',', default_value = "10,25,50,100")]
    pub checkpoints: Vec<usize>,
    /// Candidates proposed per round when ranking.
    #[arg(long, default_value_t = 16)]
    pub k: usize,
    /// Candidates evaluated per round.
    #[arg(long, default_value_t = 2)]
    pub top_k: usize,
    /// Proxies of the ranking (their log-rank ensemble orders each round).
    #[arg(long, default_value = "synflow,naswot,jacob_cov")]
    pub proxies: String,
    /// Images in the proxies' batch.
    #[arg(long, default_value_t = 64)]
    pub proxy_batch_size: usize,
    /// Seed of the proxies' batch and initialisation, the same for every run.
    #[arg(long, default_value_t = 0)]
    pub proxy_seed: u64,
    /// Dataset whose images the proxies see.
    #[arg(long, default_value = "cifar10")]
    pub images: String,
    /// Candidates the loop adds to every ranked round of the llm strategy beyond the LLM's
    /// (mutations of the best trial, or random cells before the first).
    #[arg(long, default_value_t = 0)]
    pub llm_explore: usize,
    /// Score a round's candidates several at a time (true) or one after another (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub proxy_parallel: bool,
    /// Proxy score cache (default: the one `bench proxies` and `run` use).
    #[arg(long)]
    pub proxy_cache: Option<PathBuf>,
    /// The NB201 table in the interchange format (default: nb201/nb201.csv in the data cache).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Directory holding the image dataset.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Epochs of the validation accuracy the strategies see: 12 or 200.
    #[arg(long, default_value_t = 12)]
    pub fidelity: usize,
    /// Regularized evolution's population size (and the random cells local search starts from).
    #[arg(long, default_value_t = 10)]
    pub population: usize,
    /// Regularized evolution's tournament size.
    #[arg(long, default_value_t = 3)]
    pub tournament: usize,
    /// LLM backend of the llm strategy: openai or local.
    #[arg(long, default_value = "none")]
    pub llm: String,
    /// Model name sent to the server (openai), or a hub repository `owner/name` (local).
    #[arg(long)]
    pub model: Option<String>,
    /// The GGUF file in the hub repository named by --model (local).
    #[arg(long)]
    pub model_file: Option<String>,
    /// A GGUF file on disk (local).
    #[arg(long)]
    pub model_path: Option<PathBuf>,
    /// Base URL of the OpenAI-compatible server, up to /v1 (openai).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Sampling temperature of the LLM.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Trials the LLM's prompt shows: this many best and this many most recent.
    #[arg(long, default_value_t = 10)]
    pub history: usize,
    /// Do not send the reply's JSON Schema (openai; for servers without structured outputs).
    #[arg(long)]
    pub no_json_schema: bool,
    /// Device of the proxies and the local model: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Keep each run's record here and reuse the finished ones.
    #[arg(long)]
    pub runs: Option<PathBuf>,
    /// Also compare the agent's schedulers at equal training cost, comma-separated among
    /// none12, none200, sha, hyperband, asha: each strategy but llm, without proxy ranking, one
    /// run per seed and scheduler on the table's 12- and 200-epoch rungs (see --epoch-budget).
    #[arg(long, value_delimiter = ',')]
    pub schedulers: Vec<String>,
    /// The training budget of each --schedulers run, in full (200-epoch) trainings: it may spend
    /// this many times 200 epochs (a 12-epoch trial costs 12, a promotion to 200 the 188 more).
    #[arg(long, default_value_t = 25)]
    pub epoch_budget: usize,
    /// Print the results as one JSON object instead of markdown.
    #[arg(long)]
    pub json: bool,
    /// Also write the markdown table here, with the command that produced it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Published results on NB201 CIFAR-10 (test accuracy of the picked architecture).
const PUBLISHED: &[(&str, &str)] = &[
    ("random search (NB201 paper, Dong & Yang 2020)", "93.70 ± 0.36"),
    ("regularized evolution (NB201 paper)", "93.92 ± 0.30"),
    ("GPT-4-driven search (GENIUS, Zheng et al. 2023), 10 queries", "≈ 93.79"),
    ("optimum of the table", "94.37"),
];

/// What identifies a run's options: a reused run must have been made with the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunKey {
    dataset: String,
    strategy: String,
    ranked: bool,
    seed: u64,
    trials: usize,
    k: usize,
    top_k: usize,
    proxies: String,
    proxy_batch_size: usize,
    proxy_seed: u64,
    images: String,
    fidelity: usize,
    population: usize,
    tournament: usize,
    llm: Option<String>,
    temperature: Option<f32>,
    history: Option<usize>,
    #[serde(default)]
    explore: usize,
    /// The scheduler of a `--schedulers` run (its `trials` and `fidelity` are then 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduler: Option<String>,
    /// The budget of a `--schedulers` run, in full trainings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch_budget: Option<usize>,
}

/// One finished run.
struct RunResult {
    trials: Vec<Trial>,
    summary: Summary,
    wall_seconds: f64,
}

/// Mean and sample standard deviation.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// The mean.
    pub mean: f64,
    /// The sample standard deviation (0 for one value).
    pub sd: f64,
    /// The values, one per seed.
    pub per_seed: Vec<f64>,
}

impl Spread {
    /// The spread of `v` (not empty).
    pub fn of(v: Vec<f64>) -> Spread {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = if v.len() > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Spread { mean, sd, per_seed: v }
    }

    /// `mean ± sd` (the mean alone for one value).
    pub fn show(&self) -> String {
        if self.per_seed.len() > 1 {
            format!("{:.2} ± {:.2}", self.mean, self.sd)
        } else {
            format!("{:.2}", self.mean)
        }
    }
}

/// Test accuracy of the architecture picked after each number of evaluations: entry `n - 1` is
/// the test accuracy of the best of the first `n` trials by the visible accuracy (the earliest on
/// ties). Failed trials count as evaluations but are never picked; before the first success the
/// entry is NaN.
pub fn picked_curve(trials: &[Trial]) -> Vec<f64> {
    let mut best: Option<(f64, f64)> = None;
    trials
        .iter()
        .map(|t| {
            if let (Some(v), Some(test)) = (t.accuracy, t.test_accuracy) {
                if best.is_none_or(|(bv, _)| v > bv) {
                    best = Some((v, test));
                }
            }
            best.map_or(f64::NAN, |(_, test)| test)
        })
        .collect()
}

/// The smallest number of evaluations `n` at which `curve[n - 1] >= target`.
fn evals_to_reach(curve: &[f64], target: f64) -> Option<usize> {
    curve.iter().position(|&a| a >= target - 1e-9).map(|i| i + 1)
}

/// One row: a strategy with or without ranking, over seeds.
#[derive(Debug, Clone, Serialize)]
struct Row {
    strategy: String,
    ranked: bool,
    seeds: usize,
    trials: usize,
    /// Per checkpoint.
    at: Vec<(usize, Spread)>,
    /// Mean over seeds of the picked test accuracy after each number of evaluations.
    mean_curve: Vec<f64>,
    /// Share of LLM proposals that were valid, when the strategy used an LLM.
    llm_valid_share: Option<f64>,
    llm_proposals: usize,
    /// Share of the evaluated architectures that the LLM proposed (the rest came from the loop's
    /// fallback mutations when a round held too few new candidates).
    llm_evaluated_share: Option<f64>,
    /// Candidates the loop added because a round held too few new ones.
    fallback: usize,
    /// Candidates the loop added to ranked rounds (`--llm-explore`).
    explored: usize,
    proxy_seconds: f64,
    wall_seconds: f64,
}

/// Run the benchmark and print (and optionally write) its table.
pub fn run(args: &SearchBenchArgs) -> Result<()> {
    if args.suite != "nb201" {
        bail!("unknown suite '{}' (available: nb201)", args.suite);
    }
    let dataset = Nb201Dataset::from_name(&args.dataset)
        .with_context(|| format!("unknown NB201 dataset '{}' (available: cifar10, cifar100, imagenet16)", args.dataset))?;
    if args.seeds == 0 || args.trials == 0 || args.k == 0 || args.top_k == 0 {
        bail!("--seeds, --trials, --k and --top-k must be at least 1");
    }
    if args.top_k > args.k {
        bail!("--top-k ({}) cannot exceed --k ({})", args.top_k, args.k);
    }
    if args.population == 0 || args.tournament == 0 {
        bail!("--population and --tournament must be at least 1");
    }
    if args.llm_seeds == Some(0) || args.llm_trials == Some(0) || args.ranked_trials == Some(0) {
        bail!("--llm-seeds, --llm-trials and --ranked-trials must be at least 1");
    }
    let mut checkpoints = args.checkpoints.clone();
    checkpoints.sort_unstable();
    checkpoints.dedup();
    if checkpoints.first() == Some(&0) {
        bail!("--checkpoints must be at least 1");
    }
    // Checkpoints past --trials (the default's 25, 50, 100 with --trials 10) are dropped; the
    // run's end is the checkpoint when none is left.
    let past: Vec<String> = checkpoints.iter().filter(|&&n| n > args.trials).map(usize::to_string).collect();
    if !past.is_empty() {
        eprintln!("note: checkpoints {} are past --trials {} and left out", past.join(", "), args.trials);
    }
    checkpoints.retain(|&n| n <= args.trials);
    if checkpoints.is_empty() {
        checkpoints.push(args.trials);
    }
    let rankings: Vec<bool> = match args.ranking.as_str() {
        "both" => vec![true, false],
        "on" => vec![true],
        "off" => vec![false],
        other => bail!("bad --ranking '{other}' (use both, on or off)"),
    };
    for s in &args.strategies {
        if !["random", "evolution", "local", "llm"].contains(&s.as_str()) {
            bail!("unknown strategy '{s}' (available: random, evolution, local, llm)");
        }
    }
    if args.strategies.is_empty() {
        bail!("name at least one strategy");
    }
    let mut schedulers = Vec::new();
    for name in &args.schedulers {
        let name = name.trim();
        search_schedulers::scheduler(name)?;
        if !schedulers.contains(&name) {
            schedulers.push(name);
        }
    }
    if !schedulers.is_empty() && args.epoch_budget == 0 {
        bail!("--epoch-budget must be at least 1");
    }
    let device = parse_device(&args.device)?;
    let wants_llm = args.strategies.iter().any(|s| s == "llm");
    let backend: Option<Arc<dyn LlmBackend>> = if wants_llm {
        let config = LlmConfig {
            llm: args.llm.clone(),
            model: args.model.clone(),
            model_file: args.model_file.clone(),
            model_path: args.model_path.clone(),
            base_url: args.base_url.clone(),
        };
        match build_backend(&config, &device)? {
            Some(b) => Some(b),
            None => bail!("the llm strategy needs an LLM: --llm openai --model NAME [--base-url URL], or --llm local --model-path FILE.gguf"),
        }
    } else {
        None
    };
    let prompts = Arc::new(Prompts::load(None)?);

    let table = Arc::new(Nb201Table::load_or_default(args.truth.as_deref())?.0);
    // Validates the columns (and the fidelity) before any run starts.
    TableEvaluator::new(table.clone(), dataset, &[args.fidelity]).map_err(anyhow::Error::msg)?;
    if !schedulers.is_empty() {
        TableEvaluator::new(table.clone(), dataset, &[12, search_schedulers::FULL_EPOCHS]).map_err(anyhow::Error::msg)?;
    }

    let mut ranker = if rankings.contains(&true) {
        let kind = DatasetKind::from_name(&args.images).with_context(|| format!("unknown image dataset '{}'", args.images))?;
        let root = data::data_root(args.data_dir.as_deref());
        Some(Ranker::build(&RankerConfig {
            proxies: &args.proxies,
            images: kind,
            data_root: &root,
            download: true,
            search_split: false,
            batch_size: args.proxy_batch_size,
            seed: args.proxy_seed,
            cache: args.proxy_cache.clone(),
            device: &device,
            parallel: args.proxy_parallel,
        })?)
    } else {
        None
    };

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let mut rows = Vec::new();
    for strategy_name in &args.strategies {
        let (seeds, base_trials) = if strategy_name == "llm" {
            (args.llm_seeds.unwrap_or(args.seeds), args.llm_trials.unwrap_or(args.trials))
        } else {
            (args.seeds, args.trials)
        };
        for &ranked in &rankings {
            let trials = if ranked {
                base_trials.min(args.ranked_trials.unwrap_or(base_trials))
            } else {
                base_trials
            };
            let mut results = Vec::new();
            for s in 0..seeds as u64 {
                let seed = args.seed + s;
                let key = RunKey {
                    dataset: args.dataset.clone(),
                    strategy: strategy_name.clone(),
                    ranked,
                    seed,
                    trials,
                    k: if ranked { args.k } else { args.top_k },
                    top_k: args.top_k,
                    proxies: if ranked { args.proxies.clone() } else { String::new() },
                    proxy_batch_size: args.proxy_batch_size,
                    proxy_seed: args.proxy_seed,
                    images: args.images.clone(),
                    fidelity: args.fidelity,
                    population: args.population,
                    tournament: args.tournament,
                    llm: backend.as_ref().filter(|_| strategy_name == "llm").map(|b| b.describe()),
                    temperature: (strategy_name == "llm").then_some(args.temperature),
                    history: (strategy_name == "llm").then_some(args.history),
                    explore: if strategy_name == "llm" && ranked { args.llm_explore } else { 0 },
                    scheduler: None,
                    epoch_budget: None,
                };
                let dir = args
                    .runs
                    .as_ref()
                    .map(|r| r.join(format!("{strategy_name}-{}-s{seed}", if ranked { "ranked" } else { "plain" })));
                let result = match dir.as_deref().map(|d| reuse(d, &key)).transpose()?.flatten() {
                    Some(r) => r,
                    None => {
                        let strategy: Box<dyn Strategy> = match classic_strategy(args, strategy_name, seed) {
                            Some(s) => s,
                            None => {
                                let evaluator = TableEvaluator::new(table.clone(), dataset, &[args.fidelity]).map_err(anyhow::Error::msg)?;
                                let options = LlmOptions {
                                    temperature: args.temperature,
                                    seed,
                                    json_schema: !args.no_json_schema,
                                    show_best: args.history,
                                    show_recent: args.history,
                                    ..LlmOptions::default()
                                };
                                Box::new(LlmStrategy::new(
                                    backend.clone().expect("checked above"),
                                    prompts.clone(),
                                    evaluator.info(),
                                    cell_space(),
                                    options,
                                    0,
                                ))
                            }
                        };
                        let mut evaluator = TableEvaluator::new(table.clone(), dataset, &[args.fidelity]).map_err(anyhow::Error::msg)?;
                        let scheduler = Scheduler::new(SchedulerKind::None, vec![key.fidelity], 3).map_err(anyhow::Error::msg)?;
                        let ranker = if ranked { ranker.as_mut() } else { None };
                        one_run(
                            &rt,
                            strategy,
                            &mut evaluator,
                            ranker,
                            &key,
                            dir.as_deref(),
                            Limit::Trials(key.trials),
                            scheduler,
                        )?
                    }
                };
                let curve = picked_curve(&result.trials);
                eprintln!(
                    "{strategy_name:>9} {:>6} seed {seed}: {} trials, picked test acc {} ({:.1} s)",
                    if ranked { "ranked" } else { "plain" },
                    result.trials.len(),
                    checkpoints
                        .iter()
                        .filter(|&&n| n <= trials)
                        .map(|&n| format!("@{n} {:.2}", curve.get(n - 1).or(curve.last()).copied().unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    result.wall_seconds
                );
                results.push(result);
            }
            rows.push(row(strategy_name, ranked, &results, &checkpoints, trials));
        }
    }

    let scheduler_rows = scheduler_rows(args, &rt, &table, dataset, &schedulers)?;

    let mut md = markdown(args, &rows, &checkpoints);
    if !scheduler_rows.is_empty() {
        md.push_str(&search_schedulers::markdown(&args.dataset, args.top_k, args.epoch_budget, &scheduler_rows));
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "suite": args.suite,
                "dataset": args.dataset,
                "trials": args.trials,
                "seeds": args.seeds,
                "k": args.k,
                "top_k": args.top_k,
                "proxies": args.proxies,
                "rows": rows,
                "schedulers": (!schedulers.is_empty()).then(|| serde_json::json!({
                    "epoch_budget": args.epoch_budget,
                    "budget_epochs": args.epoch_budget * search_schedulers::FULL_EPOCHS,
                    "fractions": search_schedulers::FRACTIONS,
                    "rows": scheduler_rows,
                })),
            })
        );
    } else {
        print!("{md}");
    }
    if let Some(out) = &args.out {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let text = format!("# NAS-Bench-201 search benchmark\n\nProduced by:\n\n```\n{command}\n```\n\n{md}");
        std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(())
}

/// A finished run recorded in `dir` with the same options, if there is one. A directory
/// holding a run with other options is an error (nothing is overwritten); an unfinished run
/// (no summary) is cleared and made again.
fn reuse(dir: &Path, key: &RunKey) -> Result<Option<RunResult>> {
    if let Ok(f) = std::fs::File::open(dir.join("bench-run.lock")) {
        if let Err(std::fs::TryLockError::WouldBlock) = f.try_lock() {
            bail!("{} is being run by another process; wait for it, or choose another --runs", dir.display());
        }
    }
    let key_path = dir.join("bench-run.json");
    if !key_path.is_file() {
        if dir.join("trials.jsonl").exists() {
            bail!("{} holds a run this benchmark did not make (choose another --runs)", dir.display());
        }
        return Ok(None);
    }
    let text = std::fs::read_to_string(&key_path).with_context(|| format!("cannot read {}", key_path.display()))?;
    let stored: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", key_path.display()))?;
    let stored_key: RunKey =
        serde_json::from_value(stored["key"].clone()).with_context(|| format!("{} does not describe a benchmark run", key_path.display()))?;
    if &stored_key != key {
        bail!(
            "{} holds a run made with other options ({}); choose another --runs",
            dir.display(),
            serde_json::to_string(&stored_key)?
        );
    }
    let summary_path = dir.join("summary.json");
    if !summary_path.is_file() {
        // Killed before it finished: start it again from nothing.
        for f in ["trials.jsonl", "failed.jsonl", "llm.jsonl", "run.db", "run.db-wal", "run.db-shm"] {
            let p = dir.join(f);
            if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
        return Ok(None);
    }
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(&summary_path)?).with_context(|| format!("{} is not a run summary", summary_path.display()))?;
    let trials_path = dir.join("trials.jsonl");
    let trials = std::fs::read_to_string(&trials_path)
        .with_context(|| format!("cannot read {}", trials_path.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str::<Trial>(l).with_context(|| format!("{}:{}: not a trial", trials_path.display(), i + 1)))
        .collect::<Result<Vec<_>>>()?;
    // A line per job: a promoted trial's last line holds all its rungs.
    let trials: Vec<Trial> = trials
        .into_iter()
        .map(|t| (t.id, t))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_values()
        .collect();
    if trials.len() != summary.trials {
        bail!("{} holds {} trials but its summary says {}", dir.display(), trials.len(), summary.trials);
    }
    let wall_seconds = stored["wall_seconds"].as_f64().unwrap_or(f64::NAN);
    Ok(Some(RunResult { trials, summary, wall_seconds }))
}

/// The strategy `name` (random, evolution, local) of seed `seed`; `None` for llm.
fn classic_strategy(args: &SearchBenchArgs, name: &str, seed: u64) -> Option<Box<dyn Strategy>> {
    Some(match name {
        "random" => Box::new(RandomSearch::new(cell_space(), seed)),
        "evolution" => Box::new(Evolution::new(cell_space(), seed, args.population, args.tournament)),
        "local" => Box::new(LocalSearch::new(cell_space(), seed, args.population)),
        _ => return None,
    })
}

/// The `--schedulers` rows: for each strategy but llm and each scheduler, one run per seed
/// without proxy ranking, on the table's 12- and 200-epoch rungs charged by the epoch, under a
/// budget of `--epoch-budget` full trainings (see [`search_schedulers`]).
fn scheduler_rows(
    args: &SearchBenchArgs,
    rt: &tokio::runtime::Runtime,
    table: &Arc<Nb201Table>,
    dataset: Nb201Dataset,
    schedulers: &[&str],
) -> Result<Vec<search_schedulers::SchedulerRow>> {
    let mut rows = Vec::new();
    if schedulers.is_empty() {
        return Ok(rows);
    }
    if args.strategies.iter().any(|s| s == "llm") {
        eprintln!("note: the scheduler comparison leaves the llm strategy out");
    }
    let budget_epochs = (args.epoch_budget * search_schedulers::FULL_EPOCHS) as f64;
    for strategy_name in args.strategies.iter().filter(|s| *s != "llm") {
        for &name in schedulers {
            let mut outcomes = Vec::new();
            let mut wall = 0.0;
            for s in 0..args.seeds as u64 {
                let seed = args.seed + s;
                let key = RunKey {
                    dataset: args.dataset.clone(),
                    strategy: strategy_name.clone(),
                    ranked: false,
                    seed,
                    trials: 0,
                    k: args.top_k,
                    top_k: args.top_k,
                    proxies: String::new(),
                    proxy_batch_size: args.proxy_batch_size,
                    proxy_seed: args.proxy_seed,
                    images: args.images.clone(),
                    fidelity: 0,
                    population: args.population,
                    tournament: args.tournament,
                    llm: None,
                    temperature: None,
                    history: None,
                    explore: 0,
                    scheduler: Some(name.to_string()),
                    epoch_budget: Some(args.epoch_budget),
                };
                let dir = args.runs.as_ref().map(|r| r.join(format!("{strategy_name}-{name}-s{seed}")));
                let result = match dir.as_deref().map(|d| reuse(d, &key)).transpose()?.flatten() {
                    Some(r) => r,
                    None => {
                        let strategy = classic_strategy(args, strategy_name, seed).expect("llm is left out");
                        let table = TableEvaluator::new(table.clone(), dataset, &[12, search_schedulers::FULL_EPOCHS]).map_err(anyhow::Error::msg)?;
                        let mut evaluator = search_schedulers::EpochCharged::new(table);
                        let scheduler = search_schedulers::scheduler(name)?;
                        one_run(
                            rt,
                            strategy,
                            &mut evaluator,
                            None,
                            &key,
                            dir.as_deref(),
                            Limit::Seconds(budget_epochs),
                            scheduler,
                        )?
                    }
                };
                let outcome = search_schedulers::Outcome::of(&result.trials, budget_epochs);
                eprintln!(
                    "{strategy_name:>9} {name:>9} seed {seed}: {} trials, {} 200-epoch trainings, {} epochs, incumbent test acc {} ({:.1} s)",
                    outcome.trials,
                    outcome.full_trainings,
                    outcome.epochs_spent,
                    search_schedulers::FRACTIONS
                        .iter()
                        .zip(&outcome.at)
                        .map(|(f, a)| format!("@{:.0}% {}", f * 100.0, a.map_or("—".into(), |a| format!("{a:.2}"))))
                        .collect::<Vec<_>>()
                        .join(" "),
                    result.wall_seconds
                );
                wall += result.wall_seconds;
                outcomes.push(outcome);
            }
            rows.push(search_schedulers::SchedulerRow::new(strategy_name, name, outcomes, wall));
        }
    }
    Ok(rows)
}

/// One run of the loop under `limit` with `scheduler` (recorded in `dir` when given).
#[allow(clippy::too_many_arguments)]
fn one_run(
    rt: &tokio::runtime::Runtime,
    mut strategy: Box<dyn Strategy>,
    evaluator: &mut dyn Evaluator,
    ranker: Option<&mut Ranker>,
    key: &RunKey,
    dir: Option<&Path>,
    limit: Limit,
    scheduler: Scheduler,
) -> Result<RunResult> {
    // Held while the run is made: another benchmark on the same --runs leaves it alone.
    let mut _lock = None;
    let mut recorder = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            let lock = std::fs::File::create(d.join("bench-run.lock")).with_context(|| format!("cannot lock {}", d.display()))?;
            if let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock() {
                bail!("{} is being run by another process; wait for it, or choose another --runs", d.display());
            }
            _lock = Some(lock);
            let key_path = d.join("bench-run.json");
            std::fs::write(&key_path, serde_json::json!({ "key": key }).to_string()).with_context(|| format!("cannot write {}", key_path.display()))?;
            Recorder::create(d)?
        }
        None => Recorder::discard(),
    };
    let mut budget = Budget::new(limit);
    let options = LoopOptions {
        k: key.k,
        top_k: key.top_k,
        max_empty_rounds: 3,
        seed: key.seed,
        trial_timeout: None,
        explore: key.explore,
        wall_limit: None,
        scheduler,
        // No final model: nothing of a time budget is held back for one.
        final_epochs: None,
        final_fraction: 0.0,
    };
    let started = Instant::now();
    let (history, summary) = rt.block_on(run_loop(strategy.as_mut(), evaluator, ranker, &mut budget, &options, &mut recorder, |_, _| {}))?;
    let wall_seconds = started.elapsed().as_secs_f64();
    if let Some(d) = dir {
        // Written last: its wall time marks the run as reusable together with summary.json.
        let key_path = d.join("bench-run.json");
        std::fs::write(&key_path, serde_json::json!({ "key": key, "wall_seconds": wall_seconds }).to_string())
            .with_context(|| format!("cannot write {}", key_path.display()))?;
    }
    Ok(RunResult {
        trials: history.trials,
        summary,
        wall_seconds,
    })
}

fn row(strategy: &str, ranked: bool, results: &[RunResult], checkpoints: &[usize], trials: usize) -> Row {
    let curves: Vec<Vec<f64>> = results
        .iter()
        .map(|r| {
            // A run that stopped early keeps its last pick for the evaluations it did not make.
            let mut c = picked_curve(&r.trials);
            let last = c.last().copied().unwrap_or(f64::NAN);
            c.resize(trials, last);
            c
        })
        .collect();
    let mean_curve: Vec<f64> = (0..trials).map(|i| curves.iter().map(|c| c[i]).sum::<f64>() / curves.len() as f64).collect();
    let at = checkpoints
        .iter()
        .filter(|&&n| n <= trials)
        .map(|&n| (n, Spread::of(curves.iter().map(|c| c[n - 1]).collect())))
        .collect();
    let (valid, invalid) = results
        .iter()
        .fold((0, 0), |(v, i), r| (v + r.summary.llm.valid_proposals, i + r.summary.llm.invalid_proposals));
    let exchanges: usize = results.iter().map(|r| r.summary.llm.exchanges).sum();
    Row {
        strategy: strategy.to_string(),
        ranked,
        seeds: results.len(),
        trials,
        at,
        mean_curve,
        llm_valid_share: (exchanges > 0).then(|| valid as f64 / (valid + invalid).max(1) as f64),
        llm_proposals: valid + invalid,
        llm_evaluated_share: (exchanges > 0).then(|| {
            let all: usize = results.iter().map(|r| r.trials.len()).sum();
            let by_llm: usize = results
                .iter()
                .flat_map(|r| &r.trials)
                .filter(|t| matches!(t.origin, autoagent_agent::history::Origin::Llm { .. }))
                .count();
            by_llm as f64 / all.max(1) as f64
        }),
        fallback: results.iter().map(|r| r.summary.fallback).sum(),
        explored: results.iter().map(|r| r.summary.explored).sum(),
        proxy_seconds: results.iter().map(|r| r.summary.proxy_seconds).sum(),
        wall_seconds: results.iter().map(|r| r.wall_seconds).sum(),
    }
}

fn markdown(args: &SearchBenchArgs, rows: &[Row], checkpoints: &[usize]) -> String {
    let mut md = String::new();
    md.push_str(&format!(
        "NAS-Bench-201 {}: test accuracy (%, mean ± sd over {} seeds unless a row says otherwise) of the architecture each strategy picks (best {}-epoch validation accuracy so far) after n evaluated architectures. Ranked: {} candidates per round ranked by the log-rank ensemble of {} (batch {} of {} images, proxy seed {}), top {} evaluated; plain: the strategy proposes {} per round and all are evaluated.\n\n",
        args.dataset, args.seeds, args.fidelity, args.k, args.proxies, args.proxy_batch_size, args.images, args.proxy_seed, args.top_k, args.top_k
    ));
    md.push_str("| strategy | proxy ranking |");
    for n in checkpoints {
        md.push_str(&format!(" n = {n} |"));
    }
    md.push_str(" LLM valid | evaluated from the LLM | loop fallback | proxy s | wall s |\n|---|---|");
    for _ in checkpoints {
        md.push_str("---|");
    }
    md.push_str("---|---|---|---|---|\n");
    let goal = |ranked: bool, n: usize, mean: f64| -> &'static str {
        if !ranked || args.dataset != "cifar10" {
            return "";
        }
        match n {
            10 if mean >= 93.6 => " ✓",
            10 => " ✗",
            50 if mean >= 93.9 => " ✓",
            50 => " ✗",
            _ => "",
        }
    };
    for r in rows {
        let mut label = if r.seeds == args.seeds && r.trials == args.trials {
            r.strategy.clone()
        } else {
            format!("{} ({} seed{}, {} trials)", r.strategy, r.seeds, if r.seeds == 1 { "" } else { "s" }, r.trials)
        };
        if r.explored > 0 {
            label.push_str(&format!(", +{} explored candidates", r.explored));
        }
        md.push_str(&format!("| {label} | {} |", if r.ranked { "yes" } else { "no" }));
        for n in checkpoints {
            match r.at.iter().find(|(m, _)| m == n) {
                Some((_, s)) => md.push_str(&format!(" {}{} |", s.show(), goal(r.ranked, *n, s.mean))),
                None => md.push_str(" — |"),
            }
        }
        md.push_str(&format!(
            " {} | {} | {} | {:.1} | {:.1} |\n",
            r.llm_valid_share.map_or("—".into(), |v| format!("{:.1} % of {}", v * 100.0, r.llm_proposals)),
            r.llm_evaluated_share.map_or("—".into(), |v| format!("{:.0} %", v * 100.0)),
            r.fallback,
            r.proxy_seconds,
            r.wall_seconds
        ));
    }
    if args.dataset == "cifar10" {
        md.push_str("\nPublished (CIFAR-10 test accuracy of the picked architecture):\n\n| method | accuracy |\n|---|---|\n");
        for (m, a) in PUBLISHED {
            md.push_str(&format!("| {m} | {a} |\n"));
        }
        md.push_str("\nGoals with proxy ranking: ≥ 93.6 at n = 10 and ≥ 93.9 at n = 50 (✓/✗ above).\n");
    }
    // How many evaluations the ranked runs need to match plain evolution.
    if let Some(reference) = rows.iter().find(|r| r.strategy == "evolution" && !r.ranked) {
        let ranked: Vec<&Row> = rows.iter().filter(|r| r.ranked).collect();
        if !ranked.is_empty() {
            md.push_str("\nEvaluations a ranked strategy needs for its mean pick to match plain evolution's mean pick after n evaluations (and how many times fewer):\n\n| strategy |");
            let targets: Vec<usize> = checkpoints.iter().copied().filter(|&n| n <= reference.trials).collect();
            for n in &targets {
                md.push_str(&format!(" evolution@{n} ({:.2}) |", reference.mean_curve[n - 1]));
            }
            md.push_str("\n|---|");
            for _ in &targets {
                md.push_str("---|");
            }
            md.push('\n');
            for r in ranked {
                md.push_str(&format!("| {} (ranked) |", r.strategy));
                for &n in &targets {
                    match evals_to_reach(&r.mean_curve, reference.mean_curve[n - 1]) {
                        Some(m) => md.push_str(&format!(" {m} ({:.1}×) |", n as f64 / m as f64)),
                        None => md.push_str(&format!(" not within {} |", r.trials)),
                    }
                }
                md.push('\n');
            }
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoagent_agent::history::{Origin, TrialState};
    use autoagent_evaluator::nb201::Arch;

    fn t(id: usize, acc: Option<f64>, test: f64) -> Trial {
        Trial {
            id,
            round: 0,
            config: autoagent_agent::task::cell_config(
                Arch::parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|").unwrap(),
            ),
            origin: Origin::Random,
            proxies: Default::default(),
            rank_score: None,
            accuracy: acc,
            test_accuracy: Some(test),
            seconds: 0.0,
            state: if acc.is_some() { TrialState::Complete } else { TrialState::Failed },
            error: None,
            epochs: 12,
            rungs: Vec::new(),
            bracket: None,
        }
    }

    #[test]
    fn the_pick_is_the_best_by_validation_and_reports_its_test_accuracy() {
        let trials = vec![
            t(0, None, 0.0),
            t(1, Some(80.0), 90.0),
            t(2, Some(85.0), 89.0),
            t(3, Some(85.0), 95.0),
            t(4, Some(70.0), 99.0),
        ];
        let c = picked_curve(&trials);
        assert!(c[0].is_nan());
        // Validation decides, not test; the earlier of two equal validations stays picked.
        assert_eq!(&c[1..], &[90.0, 89.0, 89.0, 89.0]);
        assert_eq!(evals_to_reach(&c, 89.5), Some(2));
        assert_eq!(evals_to_reach(&c, 91.0), None);
    }
}
