//! `bench budget`: what a time budget buys, side by side with what a user would pick instead, on
//! the same task, cores and wall-clock budget:
//!
//! - `autoagent`: `autoagent run` with its defaults (ASHA over 1, 3, 9, … epochs, proxy ranking,
//!   a final model retrained on train + validation);
//! - `autoagent-fixed`: the same with every trial trained `--fixed-epochs` (`--scheduler none`),
//!   the way runs spent a budget before schedulers;
//! - `optuna`: Optuna's TPE sampler and Hyperband pruner driving PyTorch training of the same
//!   networks (`benchmarks/reference/budget_optuna.py`), with the same share held back for its
//!   final model.
//!
//! Each arm gets `--budget` of wall clock (autoagent: as its device budget and its
//! `--wall-limit`), one after the other, for each seed. The table gives the final test accuracy
//! (mean ± sd over seeds), the trials, the epochs trained, the wall time and the overrun.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use autoagent_agent::budget::Limit;
use autoagent_agent::store::sqlite::SqliteStore;
use autoagent_agent::store::Store;
use clap::Args;

use crate::mean_sd;

/// Arguments of `bench budget`.
#[derive(Args, Debug, Clone)]
pub struct BudgetBenchArgs {
    /// Task: cifar10, fashion-mnist, mnist (the official files under --data-dir).
    #[arg(long, default_value = "fashion-mnist")]
    pub task: String,
    /// The dataset folder.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Wall-clock budget of each run (20m, 90s, ...).
    #[arg(long, default_value = "20m")]
    pub budget: String,
    /// Seeds per arm.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// The first seed (seeds --first-seed, --first-seed + 1, ...).
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Arms to run: autoagent, autoagent-fixed, optuna.
    #[arg(long, value_delimiter = ',', default_value = "autoagent,autoagent-fixed,optuna")]
    pub arms: Vec<String>,
    /// Epochs of every trial of the fixed-epoch arm.
    #[arg(long, default_value_t = 3)]
    pub fixed_epochs: usize,
    /// Share of the budget each arm holds back for its final model.
    #[arg(long, default_value_t = 0.25)]
    pub final_fraction: f64,
    /// Python with torch and optuna (the optuna arm).
    #[arg(long)]
    pub torch: Option<PathBuf>,
    /// The Optuna reference script (default: the copy built into the binary).
    #[arg(long)]
    pub torch_script: Option<PathBuf>,
    /// Threads of every arm.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Where the runs go (kept for `report`).
    /// Each finished run's outcome is kept there too (`ARM-seedN.json`), and a benchmark started
    /// again reuses the outcomes it finds instead of running them again (so the seeds of a long
    /// benchmark can be run in several sittings).
    #[arg(long, default_value = "runs/bench-budget")]
    pub runs: PathBuf,
    /// Write the markdown table here (with the command that produced it).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What one run of one arm gave.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Outcome {
    test_accuracy: Option<f64>,
    trials: usize,
    epochs: f64,
    wall_seconds: f64,
    overrun_seconds: f64,
}

/// The autoagent binary (this one).
fn autoagent() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the autoagent executable")
}

/// Epochs trained in a run: every rung's added epochs, and the final model's.
fn epochs_trained(dir: &Path) -> Result<f64> {
    let store = SqliteStore::open_read(&dir.join("run.db"))?;
    let mut epochs = 0usize;
    for r in store.trials()? {
        let mut done = 0;
        for rung in &r.trial.rungs {
            epochs += rung.epochs - done;
            done = rung.epochs;
        }
    }
    let fin = store.meta("final_model")?.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    Ok(epochs as f64 + fin.and_then(|f| f["epochs"].as_f64()).unwrap_or(0.0))
}

fn run_autoagent(args: &BudgetBenchArgs, arm: &str, seed: u64, seconds: f64) -> Result<Outcome> {
    let dir = args.runs.join(format!("{arm}-seed{seed}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let mut c = Command::new(autoagent()?);
    c.args(["run", "--task", &args.task, "--no-download", "--json", "--seed", &seed.to_string()])
        .arg("--budget")
        .arg(format!("{seconds}s"))
        .arg("--wall-limit")
        .arg(format!("{seconds}s"))
        .arg("--final-fraction")
        .arg(args.final_fraction.to_string())
        .arg("--data-dir")
        .arg(&args.data_dir)
        .arg("--out")
        .arg(&dir)
        // A proxy cache of its own: a run is charged the proxy time of scores another run
        // computed (so a budget buys the same ranking warm or cold), which here would be wall
        // time the arm does not spend while the other arms spend theirs.
        .arg("--proxy-cache")
        .arg(dir.join("proxy-cache.jsonl"))
        .env("RAYON_NUM_THREADS", args.threads.to_string());
    if arm == "autoagent-fixed" {
        c.args(["--scheduler", "none", "--max-epochs", &args.fixed_epochs.to_string()]);
    }
    let started = Instant::now();
    let o = c.output().context("cannot run autoagent")?;
    let wall = started.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!("{arm} seed {seed} failed: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or(""));
    }
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).context("autoagent printed no summary")?;
    let fin = &s["final_model"];
    // Without a final model, the best searched trial's model is what the run gives: its test
    // accuracy is measured by `predict` on the exported model.
    let test = match fin["test_accuracy"].as_f64() {
        Some(t) => Some(t),
        None => best_trial_test(&dir)?,
    };
    Ok(Outcome {
        test_accuracy: test,
        trials: s["trials"].as_u64().unwrap_or(0) as usize,
        epochs: epochs_trained(&dir)?,
        wall_seconds: wall,
        overrun_seconds: (wall - seconds).max(0.0),
    })
}

/// The test accuracy of a run's exported best trial.
fn best_trial_test(dir: &Path) -> Result<Option<f64>> {
    let model = dir.join("best-model");
    let ok = Command::new(autoagent()?)
        .arg("export")
        .arg(dir)
        .args(["--best", "--force", "--out"])
        .arg(&model)
        .output()?;
    if !ok.status.success() {
        return Ok(None);
    }
    let o = Command::new(autoagent()?)
        .args(["predict", "--split", "test", "--json", "--model"])
        .arg(&model)
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    Ok(v["accuracy"].as_f64())
}

fn run_optuna(args: &BudgetBenchArgs, seed: u64, seconds: f64) -> Result<Outcome> {
    let Some(python) = &args.torch else {
        bail!("the optuna arm needs --torch PYTHON (a Python with torch and optuna)");
    };
    let script = crate::ReferenceScript::new(args.torch_script.as_deref(), "budget_optuna.py")?;
    let mut c = Command::new(python);
    c.arg(script.path())
        .args(["--dataset", &args.task, "--json", "--seed", &seed.to_string()])
        .arg("--data")
        .arg(&args.data_dir)
        .arg("--budget-seconds")
        .arg(seconds.to_string())
        .arg("--final-fraction")
        .arg(args.final_fraction.to_string())
        .arg("--threads")
        .arg(args.threads.to_string())
        .env("OMP_WAIT_POLICY", "PASSIVE");
    let out = crate::run_reference(&mut c, python)?;
    let v: serde_json::Value = serde_json::from_slice(&out).context("the Optuna reference printed no JSON")?;
    Ok(Outcome {
        test_accuracy: v["final_test_accuracy"].as_f64(),
        trials: v["trials"].as_u64().unwrap_or(0) as usize,
        epochs: v["epochs_trained"].as_f64().unwrap_or(0.0) + v["final_epochs_trained"].as_f64().unwrap_or(0.0),
        wall_seconds: v["wall_seconds"].as_f64().unwrap_or(f64::NAN),
        overrun_seconds: v["overrun_seconds"].as_f64().unwrap_or(f64::NAN),
    })
}

fn row(arm: &str, outcomes: &[Outcome], seconds: f64) -> String {
    let tests: Vec<f64> = outcomes.iter().filter_map(|o| o.test_accuracy).collect();
    let (m, sd) = mean_sd(&tests);
    let each: Vec<String> = outcomes.iter().map(|o| o.test_accuracy.map_or("-".into(), |t| format!("{t:.2}"))).collect();
    let avg = |f: fn(&Outcome) -> f64| outcomes.iter().map(f).sum::<f64>() / outcomes.len().max(1) as f64;
    let worst_overrun = outcomes.iter().map(|o| o.overrun_seconds).fold(0.0, f64::max);
    format!(
        "| {arm} | {m:.2} ± {sd:.2} ({}) | {:.1} | {:.1} | {:.0} s ({:.0} %) | {worst_overrun:.1} s ({:.1} %) |",
        each.join(", "),
        avg(|o| o.trials as f64),
        avg(|o| o.epochs),
        avg(|o| o.wall_seconds),
        100.0 * avg(|o| o.wall_seconds) / seconds,
        100.0 * worst_overrun / seconds
    )
}

/// The outcome of `arm` with `seed`: the one kept in the runs folder by an earlier sitting with
/// the same task and budget, else run now (and kept).
fn outcome(args: &BudgetBenchArgs, arm: &str, seed: u64, seconds: f64) -> Result<Outcome> {
    let kept = args.runs.join(format!("{arm}-seed{seed}.json"));
    let mut key = serde_json::json!({ "task": args.task, "seconds": seconds, "final_fraction": args.final_fraction, "fixed_epochs": args.fixed_epochs });
    if arm != "optuna" {
        // Outcomes of autoagent's arms from before they scored proxies into a cache of their
        // own are not reused.
        key["proxy_cache"] = "own".into();
    }
    if let Ok(text) = std::fs::read_to_string(&kept) {
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", kept.display()))?;
        if v["key"] == key {
            eprintln!("{arm} seed {seed}: reusing {}", kept.display());
            return serde_json::from_value(v["outcome"].clone()).with_context(|| format!("{}: not an outcome", kept.display()));
        }
    }
    let o = match arm {
        "optuna" => run_optuna(args, seed, seconds)?,
        _ => run_autoagent(args, arm, seed, seconds)?,
    };
    let text = serde_json::to_string_pretty(&serde_json::json!({ "key": key, "outcome": o }))?;
    std::fs::write(&kept, text + "\n").with_context(|| format!("cannot write {}", kept.display()))?;
    Ok(o)
}

/// Run `bench budget`.
pub fn run(args: &BudgetBenchArgs) -> Result<()> {
    let seconds = match args.budget.parse::<Limit>().map_err(anyhow::Error::msg)? {
        Limit::Seconds(s) => s,
        Limit::Trials(_) => bail!("bench budget takes a time (20m, 90s), not trials"),
    };
    for arm in &args.arms {
        if !["autoagent", "autoagent-fixed", "optuna"].contains(&arm.as_str()) {
            bail!("unknown arm '{arm}' (available: autoagent, autoagent-fixed, optuna)");
        }
    }
    if args.arms.iter().any(|a| a == "optuna") && args.torch.is_none() {
        bail!("the optuna arm needs --torch PYTHON (a Python with torch and optuna)");
    }
    std::fs::create_dir_all(&args.runs).with_context(|| format!("cannot create {}", args.runs.display()))?;
    let mut rows = Vec::new();
    for arm in &args.arms {
        let mut outcomes = Vec::new();
        for seed in args.first_seed..args.first_seed + args.seeds {
            let o = outcome(args, arm, seed, seconds)?;
            eprintln!(
                "{arm} seed {seed}: test {:?}, {} trials, {:.1} epochs, {:.0} s",
                o.test_accuracy, o.trials, o.epochs, o.wall_seconds
            );
            outcomes.push(o);
        }
        rows.push(row(arm, &outcomes, seconds));
    }
    let table = format!(
        "| arm | final test accuracy % (each seed) | trials | epochs trained | wall time (of budget) | worst overrun |\n|---|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    println!("{table}");
    if let Some(out) = &args.out {
        let cmd: Vec<String> = std::env::args().collect();
        let text = format!(
            "# Time budget: autoagent against Optuna + PyTorch\n\nProduced by:\n\n```\n{}\n```\n\n{} on {}, {} s of wall clock per run, {} threads, seeds {}..{}.\n\n{table}",
            cmd.join(" "),
            args.task,
            args.data_dir.display(),
            seconds,
            args.threads,
            args.first_seed,
            args.first_seed + args.seeds - 1
        );
        std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(())
}
