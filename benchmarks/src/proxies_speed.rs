//! Zero-cost proxy speed on NB201 networks in candle, side by side with PyTorch.
//!
//! For each reference architecture (the best cell 6111, a median-size cell 9631, the conv-free
//! cell 5681) and each proxy: the median wall time of one score on one batch of real CIFAR-10
//! training images (network building excluded: each proxy builds its own fresh copy inside
//! `score`, which is included, as it is part of scoring a candidate), after one untimed warm-up.
//! Achieved GFLOP/s use a nominal count per proxy in multiples of one forward pass over the batch
//! (`F` = 2 × multiply-accumulates per image × batch): synflow 3F at batch 1, naswot 1F, zen 2F,
//! jacob_cov, grad_norm, snip, fisher and zico 3F, grasp 9F (three gradient passes). They stand
//! next to a large f32 matrix product measured in the same run. With `--torch PYTHON`,
//! `benchmarks/reference/nb201_proxies_torch.py` computes the same proxies in PyTorch with the
//! same thread count, batch and images.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use autoagent_evaluator::data::{self, DatasetKind};
use autoagent_evaluator::kernels::in_pool;
use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::net::Nb201Config;
use autoagent_evaluator::proxy::{proxy_batch, Nb201Candidate};
use autoagent_proxies::registry::parse_list;
use candle_core::Device;
use serde::Serialize;

use crate::train_speed::{sgemm_gflops, DEFAULT_ARCHS};

/// Options of `autoagent bench proxies-speed`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxiesSpeedArgs {
    /// Measure only these of the reference archs (NB201 indices, comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_ARCHS.map(|a| a.0))]
    pub archs: Vec<usize>,
    /// Proxies (comma-separated names, or all).
    #[arg(long, default_value = "all")]
    pub proxies: String,
    /// Threads for candle (rayon) and PyTorch.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Images in the batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Timed repetitions per proxy (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Directory holding CIFAR-10 (official binary format).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Python interpreter with torch installed; runs the PyTorch reference side by side.
    #[arg(long)]
    pub torch: Option<PathBuf>,
    /// The reference script (default: `benchmarks/reference/nb201_proxies_torch.py` as built into the binary).
    #[arg(long)]
    pub torch_script: Option<PathBuf>,
    /// Write the markdown table here (with the command that produced it).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// NB201 index.
    pub index: usize,
    /// Proxy name.
    pub proxy: String,
    /// Our median ms.
    pub candle_ms: f64,
    /// Our score.
    pub candle_score: Option<f64>,
    /// PyTorch's median ms.
    pub torch_ms: Option<f64>,
    /// PyTorch's score.
    pub torch_score: Option<f64>,
    /// Nominal GFLOP of one score.
    pub gflop: f64,
}

/// Nominal FLOPs of one score in multiples of a forward pass over the batch (and the batch
/// size it runs at, for synflow).
fn nominal(proxy: &str) -> (f64, bool) {
    match proxy {
        "synflow" => (3.0, true),
        "naswot" => (1.0, false),
        "zen" => (2.0, false),
        "grasp" => (9.0, false),
        "params" | "flops" => (0.0, false),
        _ => (3.0, false),
    }
}

#[derive(serde::Deserialize)]
struct TorchLine {
    index: Option<usize>,
    scores: std::collections::HashMap<String, Option<f64>>,
    ms: std::collections::HashMap<String, f64>,
    torch_version: Option<String>,
}

fn run_torch(python: &PathBuf, args: &ProxiesSpeedArgs, names: &[&str], data_dir: &std::path::Path) -> Result<Vec<TorchLine>> {
    let list = crate::train_speed::arch_strings(&args.archs);
    let mut cmd = Command::new(python);
    let script = crate::ReferenceScript::new(args.torch_script.as_deref(), "nb201_proxies_torch.py")?;
    cmd.arg(script.path())
        .args(["--archs", &list])
        .args(["--proxies", &names.join(",")])
        .args(["--threads", &args.threads.to_string()])
        .args(["--batch-size", &args.batch_size.to_string()])
        .args(["--repeat", &args.repeat.to_string()])
        .arg("--data")
        .arg(data_dir);
    let stdout = crate::run_reference(&mut cmd, python)?;
    String::from_utf8_lossy(&stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).context("the PyTorch reference printed a line that is not the expected JSON"))
        .collect()
}

/// Run the benchmark and print (and optionally write) the table.
pub fn run(args: &ProxiesSpeedArgs) -> Result<()> {
    if args.threads == 0 || args.batch_size == 0 || args.repeat == 0 {
        bail!("--threads, --batch-size and --repeat must be positive");
    }
    autoagent_evaluator::kernels::set_threads(args.threads);
    let proxies = parse_list(&args.proxies).map_err(anyhow::Error::msg)?;
    let names: Vec<&str> = proxies.iter().map(|p| p.name()).collect();
    let root = data::data_root(args.data_dir.as_deref());
    let dataset = data::open(DatasetKind::Cifar10, &root, false)?;
    let data_dir = data::locate(DatasetKind::Cifar10, &root).unwrap_or(root.clone());
    let batch = proxy_batch(&dataset, args.batch_size, 0, &Device::Cpu)?;
    let sgemm = sgemm_gflops(2048, 1, 7)?;
    let mut cells = Vec::new();
    for &index in &args.archs {
        let Some(&(_, arch, _)) = DEFAULT_ARCHS.iter().find(|a| a.0 == index) else {
            bail!("arch {index} is not one of the reference archs {:?}", DEFAULT_ARCHS.map(|a| a.0));
        };
        let cfg = Nb201Config::new(Arch::parse(arch)?);
        let fwd_gflop = 2.0 * cfg.macs() / 1e9;
        let cand = Nb201Candidate::new(cfg);
        for p in &proxies {
            eprintln!("candle: {} on {index}", p.name());
            let score = in_pool(|| p.score(&cand, &batch, 0)).ok().filter(|v| v.is_finite());
            let mut times = Vec::new();
            for _ in 0..args.repeat {
                let t = Instant::now();
                in_pool(|| p.score(&cand, &batch, 0))?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let (mult, batch_one) = nominal(p.name());
            let images = if batch_one { 1.0 } else { args.batch_size as f64 };
            cells.push(Cell {
                index,
                proxy: p.name().to_string(),
                candle_ms: times[times.len() / 2],
                candle_score: score,
                torch_ms: None,
                torch_score: None,
                gflop: mult * fwd_gflop * images,
            });
        }
    }
    let mut torch_version = None;
    if let Some(py) = &args.torch {
        eprintln!("torch: the same proxies");
        for line in run_torch(py, args, &names, &data_dir)? {
            torch_version = torch_version.or(line.torch_version.clone());
            for c in cells.iter_mut().filter(|c| Some(c.index) == line.index) {
                c.torch_ms = line.ms.get(&c.proxy).copied();
                c.torch_score = line.scores.get(&c.proxy).copied().flatten();
            }
        }
    }
    let md = markdown(&cells, args, sgemm, torch_version.as_deref());
    print!("{md}");
    if let Some(path) = &args.out {
        let cmd: Vec<String> = std::env::args().collect();
        let text = format!(
            "# Zero-cost proxy speed: candle vs PyTorch on CPU\n\nProduced by:\n\n```\n{}\n```\n\n{md}",
            cmd.join(" ")
        );
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".to_string(), |v| format!("{v:.digits$}"))
}

fn fmt_score(v: Option<f64>) -> String {
    match v {
        None => "—".to_string(),
        Some(v) if v != 0.0 && !(1e-3..1e6).contains(&v.abs()) => format!("{v:.4e}"),
        Some(v) => format!("{v:.4}"),
    }
}

fn markdown(cells: &[Cell], args: &ProxiesSpeedArgs, sgemm: f64, torch: Option<&str>) -> String {
    let mut s = format!(
        "{} threads, batch {} of real CIFAR-10 training images, median of {} runs after a warm-up. Large f32 matmul (2048³, our AVX-512 sgemm, fastest of 7): {sgemm:.1} GFLOP/s{}.\n\n",
        args.threads,
        args.batch_size,
        args.repeat,
        torch.map_or(String::new(), |v| format!("; PyTorch {v}"))
    );
    s.push_str("| arch | proxy | candle ms | PyTorch ms | speed vs PyTorch | candle GFLOP/s | % of matmul | candle score | PyTorch score |\n|---|---|---|---|---|---|---|---|---|\n");
    for c in cells {
        let gf = if c.gflop > 0.0 { Some(c.gflop / (c.candle_ms * 1e-3)) } else { None };
        let speed = c.torch_ms.map(|t| format!("{:.2}×", t / c.candle_ms));
        s.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} |\n",
            c.index,
            c.proxy,
            c.candle_ms,
            fmt_opt(c.torch_ms, 1),
            speed.unwrap_or_else(|| "—".into()),
            fmt_opt(gf, 1),
            gf.map_or("—".into(), |g| format!("{:.0} %", 100.0 * g / sgemm)),
            fmt_score(c.candle_score),
            fmt_score(c.torch_score),
        ));
    }
    s.push_str("\nGFLOP/s use nominal counts in forward passes over the batch: synflow 3 (batch 1, float64), naswot 1, zen 2, grasp 9, the others 3. Speed above 1 means candle is faster. Scores differ between the frameworks because initialisation and augmentation draws differ; their definitions are the same.\n");
    s
}
