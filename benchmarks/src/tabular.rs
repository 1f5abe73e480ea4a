//! `bench tabular`: autoagent on the tabular fixtures against what a user would run instead,
//! on the same fixed splits, budget and cores:
//!
//! - `autoagent`: `autoagent run --task csv:… --split …` with its defaults (the pipeline search
//!   and the greedy ensemble refit on every training row);
//! - `flaml`, `autogluon`, `defaults` (LightGBM with default parameters): fitted by
//!   `benchmarks/reference/tabular_peers.py` with a Python that has them.
//!
//! Every tool's predictions of the test rows are scored here, one way for all
//! (`autoagent_evaluator::tabular::metrics`): binary ROC-AUC, multiclass log-loss and accuracy,
//! regression RMSE and R². Each fit's wall time is its process's (autoagent: the whole run,
//! reading and the final refit included; a peer: the script's, Python's start included, and its
//! own fit time beside it). `--jobs N` runs N fits at once (give each its cores: jobs × threads ≤
//! cores). Outcomes are kept in the runs folder (`ARM-DATASET-seedN.json`) and reused by a later
//! sitting with the same budget and threads.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use autoagent_agent::budget::Limit;
use autoagent_agent::tabular_task::{TestPredictions, TEST_PREDICTIONS_FILE};
use autoagent_evaluator::tabular::dataset::same_label;
use autoagent_evaluator::tabular::pipeline::score;
use autoagent_evaluator::tabular::{read_csv, Metric, Problem, ReadOptions, SplitFile, TabularData, TargetValues};
use clap::Args;
use rayon::prelude::*;

/// The arms `bench tabular` knows.
const ARMS: [&str; 4] = ["autoagent", "flaml", "autogluon", "defaults"];

/// Arguments of `bench tabular`.
#[derive(Args, Debug, Clone)]
pub struct TabularBenchArgs {
    /// The folder of the CSV files (each with a `target` column).
    #[arg(long)]
    pub data: PathBuf,
    /// The folder of the fixed splits (`DATASET_seedN.json`).
    #[arg(long)]
    pub splits: PathBuf,
    /// Budget of each fit (a time: 60s, 2m).
    #[arg(long, default_value = "60s")]
    pub budget: String,
    /// Threads (cores) of each fit.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Datasets (default: every CSV of --data with split files).
    #[arg(long, value_delimiter = ',')]
    pub datasets: Vec<String>,
    /// Seeds of the splits.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// Tools besides autoagent: flaml, autogluon, defaults (`none`: autoagent alone).
    #[arg(long, value_delimiter = ',', default_value = "flaml,autogluon,defaults")]
    pub peers: Vec<String>,
    /// Python with the peers installed (pandas, scikit-learn, lightgbm, flaml, autogluon.tabular).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The peers' script (default: the copy built into the binary).
    #[arg(long)]
    pub peers_script: Option<PathBuf>,
    /// Fits run at once.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Where the runs and the outcomes go.
    #[arg(long, default_value = "runs/bench-tabular")]
    pub runs: PathBuf,
    /// Write the markdown tables here (with the command that produced them).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One fit of one arm on one split.
#[derive(Debug, Clone)]
struct Job {
    arm: String,
    dataset: String,
    seed: u64,
}

/// What one fit gave.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Outcome {
    /// `(metric, value)` on the test rows, the primary metric first.
    metrics: Vec<(Metric, f64)>,
    /// The process's wall time.
    wall_seconds: f64,
    /// The tool's own fit time, where it reports one.
    fit_seconds: Option<f64>,
    /// The tool's version.
    version: String,
    /// Why it gave no predictions.
    error: Option<String>,
}

/// A split's test truth, as autoagent reads the file (the classes' order is the predictions').
struct Truth {
    problem: Problem,
    values: TargetValues,
}

fn csv_of(args: &TabularBenchArgs, dataset: &str) -> PathBuf {
    args.data.join(format!("{dataset}.csv"))
}

fn split_of(args: &TabularBenchArgs, dataset: &str, seed: u64) -> PathBuf {
    args.splits.join(format!("{dataset}_seed{seed}.json"))
}

fn truth(args: &TabularBenchArgs, dataset: &str, seed: u64) -> Result<Truth> {
    let frame = read_csv(&csv_of(args, dataset), &ReadOptions::default())?;
    let split = SplitFile::read(&split_of(args, dataset, seed), frame.rows)?;
    let train = TabularData::from_frame(&frame.take(&split.train), "target", None)?;
    let test = train.like(&frame.take(&split.test))?;
    Ok(Truth {
        problem: train.target.problem,
        values: test.target.values,
    })
}

/// The metrics of `pred` (rows × classes in the truth's order, or values).
fn metrics(t: &Truth, pred: &[f64]) -> Vec<(Metric, f64)> {
    let rows: Vec<usize> = (0..t.values.len()).collect();
    let reported = Metric::default_for(t.problem).reported(t.problem);
    reported.into_iter().map(|m| (m, score(m, &t.values, &rows, pred))).collect()
}

/// A peer's probabilities, columns by its class labels, in the truth's class order (a class it
/// never predicts: 0).
fn in_truth_order(t: &Truth, labels: &[String], pred: &serde_json::Value) -> Result<Vec<f64>> {
    let rows = pred.as_array().context("predictions are not a list")?;
    let TargetValues::Classes { classes, .. } = &t.values else {
        return rows.iter().map(|v| v.as_f64().context("a prediction is not a number")).collect();
    };
    let column: Vec<Option<usize>> = classes.iter().map(|c| labels.iter().position(|l| same_label(l, c))).collect();
    let mut out = Vec::with_capacity(rows.len() * classes.len());
    for r in rows {
        let p = r.as_array().context("a prediction row is not a list")?;
        for col in &column {
            out.push(col.and_then(|j| p.get(j)).and_then(|v| v.as_f64()).unwrap_or(0.0));
        }
    }
    Ok(out)
}

fn run_autoagent(args: &TabularBenchArgs, job: &Job, t: &Truth, seconds: f64) -> Result<Outcome> {
    let dir = args.runs.join(format!("autoagent-{}-seed{}", job.dataset, job.seed));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let exe = std::env::current_exe().context("cannot find the autoagent executable")?;
    let mut c = Command::new(exe);
    c.arg("run")
        .arg("--task")
        .arg(format!("csv:{}", csv_of(args, &job.dataset).display()))
        .args(["--target", "target", "--json", "--seed", &job.seed.to_string()])
        .arg("--split")
        .arg(split_of(args, &job.dataset, job.seed))
        .arg("--budget")
        .arg(format!("{seconds}s"))
        .arg("--wall-limit")
        .arg(format!("{seconds}s"))
        .arg("--threads")
        .arg(args.threads.to_string())
        .arg("--out")
        .arg(&dir)
        .env("RAYON_NUM_THREADS", args.threads.to_string());
    let started = Instant::now();
    let o = c.output().context("cannot run autoagent")?;
    let wall = started.elapsed().as_secs_f64();
    if !o.status.success() {
        let why = String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").to_string();
        return Ok(Outcome {
            wall_seconds: wall,
            error: Some(why),
            ..Outcome::default()
        });
    }
    let path = dir.join(TEST_PREDICTIONS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let p: TestPredictions = serde_json::from_str(&text).with_context(|| format!("{} is not test predictions", path.display()))?;
    Ok(Outcome {
        metrics: metrics(t, &p.predictions),
        wall_seconds: wall,
        fit_seconds: None,
        version: env!("CARGO_PKG_VERSION").to_string(),
        error: None,
    })
}

fn run_peer(args: &TabularBenchArgs, job: &Job, t: &Truth, seconds: f64) -> Result<Outcome> {
    let Some(python) = &args.python else {
        bail!("the peers need --python PY (a Python with pandas, scikit-learn, lightgbm, flaml, autogluon.tabular)");
    };
    let script = crate::ReferenceScript::new(args.peers_script.as_deref(), "tabular_peers.py")?;
    let threads = args.threads.to_string();
    let mut c = Command::new(python);
    c.arg(script.path())
        .args(["--peer", &job.arm, "--target", "target", "--threads", &threads, "--seed", &job.seed.to_string()])
        .arg("--csv")
        .arg(csv_of(args, &job.dataset))
        .arg("--split")
        .arg(split_of(args, &job.dataset, job.seed))
        .args(["--problem", t.problem.name()])
        .arg("--budget-seconds")
        .arg(seconds.to_string())
        .env("OMP_NUM_THREADS", &threads)
        .env("OPENBLAS_NUM_THREADS", &threads)
        .env("MKL_NUM_THREADS", &threads);
    let started = Instant::now();
    let out = crate::run_reference(&mut c, python);
    let wall = started.elapsed().as_secs_f64();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return Ok(Outcome {
                wall_seconds: wall,
                error: Some(e.to_string()),
                ..Outcome::default()
            })
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&out).context("the peers' script printed no JSON")?;
    let labels: Vec<String> = v["classes"]
        .as_array()
        .map_or(Vec::new(), |a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect());
    let pred = in_truth_order(t, &labels, &v["predictions"])?;
    Ok(Outcome {
        metrics: metrics(t, &pred),
        wall_seconds: wall,
        fit_seconds: v["fit_seconds"].as_f64(),
        version: v["version"].as_str().unwrap_or("").to_string(),
        error: None,
    })
}

/// The outcome of `job`: the one kept in the runs folder with the same budget and threads, else
/// run now (and kept).
fn outcome(args: &TabularBenchArgs, job: &Job, seconds: f64) -> Result<Outcome> {
    let kept = args.runs.join(format!("{}-{}-seed{}.json", job.arm, job.dataset, job.seed));
    let key = serde_json::json!({ "seconds": seconds, "threads": args.threads });
    if let Ok(text) = std::fs::read_to_string(&kept) {
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", kept.display()))?;
        if v["key"] == key && v["outcome"]["error"].is_null() {
            return serde_json::from_value(v["outcome"].clone()).with_context(|| format!("{}: not an outcome", kept.display()));
        }
    }
    let t = truth(args, &job.dataset, job.seed)?;
    let o = match job.arm.as_str() {
        "autoagent" => run_autoagent(args, job, &t, seconds)?,
        _ => run_peer(args, job, &t, seconds)?,
    };
    let text = serde_json::to_string_pretty(&serde_json::json!({ "key": key, "outcome": o }))?;
    std::fs::write(&kept, text + "\n").with_context(|| format!("cannot write {}", kept.display()))?;
    Ok(o)
}

/// The datasets: those asked, else every CSV of the data folder with a seed-0 split.
fn datasets(args: &TabularBenchArgs) -> Result<Vec<String>> {
    if !args.datasets.is_empty() {
        return Ok(args.datasets.clone());
    }
    let mut names: Vec<String> = std::fs::read_dir(&args.data)
        .with_context(|| format!("cannot read {}", args.data.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.path()
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
                .filter(|_| e.path().extension().is_some_and(|x| x == "csv"))
        })
        .filter(|n| split_of(args, n, 0).is_file())
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("{} holds no CSV with a split in {}", args.data.display(), args.splits.display());
    }
    Ok(names)
}

/// The budget in seconds and the peers asked, checked.
fn check(args: &TabularBenchArgs) -> Result<(f64, Vec<String>)> {
    let seconds = match args.budget.parse::<Limit>().map_err(anyhow::Error::msg)? {
        Limit::Seconds(s) => s,
        Limit::Trials(_) => bail!("bench tabular takes a time (60s, 2m), not trials"),
    };
    let peers: Vec<String> = args.peers.iter().filter(|p| !p.is_empty() && *p != "none").cloned().collect();
    for p in &peers {
        if !ARMS[1..].contains(&p.as_str()) {
            bail!("unknown peer '{p}' (available: flaml, autogluon, defaults, none)");
        }
    }
    if !peers.is_empty() && args.python.is_none() {
        bail!("the peers need --python PY (scripts/setup-peers.sh installs them), or --peers none for autoagent alone");
    }
    if args.jobs == 0 || args.threads == 0 {
        bail!("--jobs and --threads must be at least 1");
    }
    Ok((seconds, peers))
}

/// Run `bench tabular`.
pub fn run(args: &TabularBenchArgs) -> Result<()> {
    let (seconds, peers) = check(args)?;
    let names = datasets(args)?;
    std::fs::create_dir_all(&args.runs).with_context(|| format!("cannot create {}", args.runs.display()))?;
    let arms: Vec<String> = std::iter::once("autoagent".to_string()).chain(peers).collect();
    let mut jobs = Vec::new();
    for d in &names {
        for &seed in &args.seeds {
            for a in &arms {
                jobs.push(Job {
                    arm: a.clone(),
                    dataset: d.clone(),
                    seed,
                });
            }
        }
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.jobs).build()?;
    let outcomes: Vec<Result<Outcome>> = pool.install(|| {
        jobs.par_iter()
            .map(|j| {
                let o = outcome(args, j, seconds);
                match &o {
                    Ok(o) => eprintln!(
                        "{} {} seed {}: {:?} in {:.1} s{}",
                        j.arm,
                        j.dataset,
                        j.seed,
                        o.metrics,
                        o.wall_seconds,
                        o.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                    ),
                    Err(e) => eprintln!("{} {} seed {}: {e}", j.arm, j.dataset, j.seed),
                }
                o
            })
            .collect()
    });
    let results: Vec<(Job, Outcome)> = jobs.into_iter().zip(outcomes).map(|(j, o)| o.map(|o| (j, o))).collect::<Result<_>>()?;
    let text = crate::tabular_table::tables(
        &results
            .iter()
            .map(|(j, o)| (j.arm.as_str(), j.dataset.as_str(), j.seed, o.into()))
            .collect::<Vec<_>>(),
        seconds,
    );
    println!("{text}");
    if let Some(out) = &args.out {
        let cmd: Vec<String> = std::env::args().collect();
        let doc = format!(
            "# Tabular AutoML: autoagent against FLAML, AutoGluon and a default LightGBM\n\nProduced by:\n\n```\n{}\n```\n\n{} s a fit, {} thread(s) a fit, {} fit(s) at once, seeds {:?} of the fixed splits in {}.\n\n{text}",
            cmd.join(" "),
            seconds,
            args.threads,
            args.jobs,
            args.seeds,
            args.splits.display()
        );
        std::fs::write(out, doc).with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(())
}

impl From<&Outcome> for crate::tabular_table::Fit {
    fn from(o: &Outcome) -> Self {
        crate::tabular_table::Fit {
            metrics: o.metrics.clone(),
            wall_seconds: o.wall_seconds,
            fit_seconds: o.fit_seconds,
            version: o.version.clone(),
            failed: o.error.is_some(),
        }
    }
}
