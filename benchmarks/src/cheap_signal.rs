//! `bench cheap-signal`: how well the cheap signals of a tabular pipeline rank pipelines, on
//! the fixtures (the training rows of each dataset's split seed 0, the test rows never read):
//!
//! - MLPs: `--configs` MLP pipelines drawn from the tabular space; each zero-cost proxy's score
//!   of the untrained network on a batch of rows, against the pipeline's full validation;
//! - every other family: `--configs` pipelines drawn from the rest of the space, each validated
//!   at the lower fidelities the scheduler's rungs use on a table (a share of each fold's
//!   training rows, the trees cut to that share) and in full.
//!
//! Each cell is Spearman's ρ between the cheap signal and the full validation score (oriented:
//! larger is better), over the pipelines both scored; the time columns say what the cheap
//! signal costs against the full validation.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use autoagent_agent::configspace::{pipeline, tabular_space, Config};
use autoagent_evaluator::tabular::cheap::{at_share, proxy_scores, subsample};
use autoagent_evaluator::tabular::split::folds;
use autoagent_evaluator::tabular::{read_csv, Metric, ReadOptions, SplitFile, TabularData, Validation};
use autoagent_proxies::stats::spearman;
use clap::Args;
use rand::SeedableRng;

/// Arguments of `bench cheap-signal`.
#[derive(Args, Debug, Clone)]
pub struct CheapSignalArgs {
    /// The folder of the CSV files (each with a `target` column).
    #[arg(long)]
    pub data: PathBuf,
    /// The folder of the fixed splits (`DATASET_seedN.json`): the training rows of seed 0 are used.
    #[arg(long)]
    pub splits: PathBuf,
    /// Datasets (default: every CSV of --data with a seed-0 split).
    #[arg(long, value_delimiter = ',')]
    pub datasets: Vec<String>,
    /// Pipelines drawn per dataset, of MLPs and of the other families each.
    #[arg(long, default_value_t = 20)]
    pub configs: usize,
    /// Folds of the full validation.
    #[arg(long, default_value_t = 3)]
    pub cv: usize,
    /// Shares of the training rows of the lower fidelities.
    #[arg(long, value_delimiter = ',', default_value = "0.111,0.333")]
    pub shares: Vec<f64>,
    /// Proxies (default: all).
    #[arg(long, default_value = "all")]
    pub proxies: String,
    /// Threads of each fit.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seed of the draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the markdown tables here (with the command that produced them).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One dataset's measurements.
struct Measured {
    dataset: String,
    rows: usize,
    /// Per proxy: ρ and the pipelines it scored.
    proxies: Vec<(String, f64, usize)>,
    /// Mean seconds of an MLP's proxies (all of them) and of its full validation.
    proxy_seconds: f64,
    mlp_seconds: f64,
    /// Per share: ρ, and its seconds over the full validation's.
    shares: Vec<(f64, f64, f64)>,
}

fn datasets(args: &CheapSignalArgs) -> Result<Vec<String>> {
    if !args.datasets.is_empty() {
        return Ok(args.datasets.clone());
    }
    let mut names: Vec<String> = std::fs::read_dir(&args.data)
        .with_context(|| format!("reading {}", args.data.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".csv").map(str::to_string))
        .filter(|n| args.splits.join(format!("{n}_seed0.json")).exists())
        .collect();
    names.sort();
    Ok(names)
}

/// `n` configurations of the tabular space whose family is (`mlp`) or is not the MLP.
fn draw(n: usize, mlp: bool, seed: u64) -> Vec<Config> {
    let space = tabular_space();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    while out.len() < n {
        let c = space.sample(&mut rng);
        if (c.str("model") == Some("mlp")) == mlp {
            out.push(c);
        }
    }
    out
}

/// Spearman's ρ over the pairs where both are finite, and their count.
fn rho(cheap: &[Option<f64>], full: &[f64]) -> (f64, usize) {
    let (a, b): (Vec<f64>, Vec<f64>) = cheap
        .iter()
        .zip(full)
        .filter_map(|(c, f)| Some((*c.as_ref()?, *f)).filter(|p| p.0.is_finite() && p.1.is_finite()))
        .unzip();
    if a.len() < 3 {
        return (f64::NAN, a.len());
    }
    (spearman(&a, &b), a.len())
}

fn measure(args: &CheapSignalArgs, dataset: &str) -> Result<Measured> {
    let frame = read_csv(&args.data.join(format!("{dataset}.csv")), &ReadOptions::default())?;
    let split = SplitFile::read(&args.splits.join(format!("{dataset}_seed0.json")), frame.rows)?;
    let data = TabularData::from_frame(&frame.take(&split.train), "target", None)?;
    let metric = Metric::default_for(data.target.problem);
    let f = folds(&data.target.values, Validation::Cv { k: args.cv }, args.seed)?;
    let rows: Vec<usize> = (0..data.len()).collect();
    let proxies = autoagent_proxies::registry::parse_list(&args.proxies).map_err(anyhow::Error::msg)?;
    let full = |c: &Config, folds: &[_], share: f64| -> (f64, f64) {
        let t = Instant::now();
        let p = at_share(&pipeline(c), share);
        let s = p
            .validate(&data, folds, metric, args.threads, args.seed)
            .map_or(f64::NAN, |v| -metric.loss(v.score));
        (s, t.elapsed().as_secs_f64())
    };
    // MLPs: the proxies against the full validation.
    let mlps = draw(args.configs, true, args.seed);
    let (mut scores, mut mlp_full, mut proxy_secs, mut mlp_secs) = (Vec::new(), Vec::new(), 0.0, 0.0);
    for c in &mlps {
        let t = Instant::now();
        scores.push(proxy_scores(&pipeline(c), &data, &rows, &proxies, args.seed).unwrap_or_default());
        proxy_secs += t.elapsed().as_secs_f64();
        let (s, secs) = full(c, &f, 1.0);
        mlp_full.push(s);
        mlp_secs += secs;
    }
    let per_proxy = proxies
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let cheap: Vec<Option<f64>> = scores.iter().map(|s| s.get(k).and_then(|x| x.1)).collect();
            let (r, n) = rho(&cheap, &mlp_full);
            (p.name().to_string(), r, n)
        })
        .collect();
    // Other families: lower fidelities against the full validation.
    let others = draw(args.configs, false, args.seed + 1);
    let fulls: Vec<(f64, f64)> = others.iter().map(|c| full(c, &f, 1.0)).collect();
    let full_scores: Vec<f64> = fulls.iter().map(|x| x.0).collect();
    let full_secs: f64 = fulls.iter().map(|x| x.1).sum();
    let shares = args
        .shares
        .iter()
        .map(|&share| {
            let sub = subsample(&f, share, args.seed);
            let low: Vec<(f64, f64)> = others.iter().map(|c| full(c, &sub, share)).collect();
            let cheap: Vec<Option<f64>> = low.iter().map(|x| Some(x.0)).collect();
            (share, rho(&cheap, &full_scores).0, low.iter().map(|x| x.1).sum::<f64>() / full_secs.max(1e-9))
        })
        .collect();
    let n = mlps.len().max(1) as f64;
    Ok(Measured {
        dataset: dataset.to_string(),
        rows: data.len(),
        proxies: per_proxy,
        proxy_seconds: proxy_secs / n,
        mlp_seconds: mlp_secs / n,
        shares,
    })
}

fn fmt(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "–".to_string()
    }
}

fn markdown(args: &CheapSignalArgs, measured: &[Measured]) -> String {
    let mut s = String::new();
    let names: Vec<&str> = measured.first().map(|m| m.proxies.iter().map(|p| p.0.as_str()).collect()).unwrap_or_default();
    s.push_str(&format!(
        "## MLP shapes: Spearman ρ of each zero-cost proxy with the {}-fold validation ({} MLP pipelines a dataset)\n\n",
        args.cv, args.configs
    ));
    s.push_str(&format!("| dataset | rows | {} | proxies s/net | training s/net |\n", names.join(" | ")));
    s.push_str(&format!("|---|---:|{}---:|---:|\n", "---:|".repeat(names.len())));
    for m in measured {
        let cells: Vec<String> = m.proxies.iter().map(|p| fmt(p.1)).collect();
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.2} |\n",
            m.dataset,
            m.rows,
            cells.join(" | "),
            m.proxy_seconds,
            m.mlp_seconds
        ));
    }
    let mean = |k: usize| {
        let v: Vec<f64> = measured.iter().map(|m| m.proxies[k].1).filter(|v| v.is_finite()).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let means: Vec<String> = (0..names.len()).map(|k| fmt(mean(k))).collect();
    s.push_str(&format!("| **mean** | | {} | | |\n\n", means.join(" | ")));
    s.push_str(&format!(
        "## Other families: Spearman ρ of a lower fidelity with the full {}-fold validation ({} pipelines a dataset), and its time over the full validation's\n\n",
        args.cv, args.configs
    ));
    let shares: Vec<String> = args.shares.iter().map(|s| format!("ρ at {:.0} % rows | time", 100.0 * s)).collect();
    s.push_str(&format!(
        "| dataset | rows | {} |\n|---|---:|{}\n",
        shares.join(" | "),
        "---:|---:|".repeat(args.shares.len())
    ));
    for m in measured {
        let cells: Vec<String> = m.shares.iter().map(|(_, r, t)| format!("{} | {:.2}", fmt(*r), t)).collect();
        s.push_str(&format!("| {} | {} | {} |\n", m.dataset, m.rows, cells.join(" | ")));
    }
    s
}

/// Run the benchmark and print (and write) its tables.
pub fn run(args: &CheapSignalArgs) -> Result<()> {
    let mut measured = Vec::new();
    for d in datasets(args)? {
        let t = Instant::now();
        let m = measure(args, &d).with_context(|| format!("dataset {d}"))?;
        let proxies: Vec<String> = m.proxies.iter().map(|p| format!("{} {}", p.0, fmt(p.1))).collect();
        let shares: Vec<String> = m.shares.iter().map(|s| format!("{:.0} % {}", 100.0 * s.0, fmt(s.1))).collect();
        eprintln!(
            "{d}: {:.0} s; MLPs: {}; lower fidelities: {}",
            t.elapsed().as_secs_f64(),
            proxies.join(", "),
            shares.join(", ")
        );
        measured.push(m);
    }
    let table = markdown(args, &measured);
    println!("{table}");
    if let Some(out) = &args.out {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        std::fs::write(out, format!("# Cheap signals of tabular pipelines\n\n`{command}`\n\n{table}")).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
