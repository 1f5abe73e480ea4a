//! Training speed of NB201 networks in candle, side by side with PyTorch.
//!
//! For each architecture: forward time per batch (BatchNorm with batch statistics, as in
//! training), forward+backward time per batch (cross-entropy, full backward), and training
//! throughput (SGD steps at the training batch size, images/s); achieved GFLOP/s from the
//! network's multiply-accumulates (×2; forward+backward counted as 3× forward, the usual
//! approximation), next to a large f32 matrix product measured in the same run. With
//! `--torch PYTHON`, the reference script `benchmarks/reference/nb201_torch.py` runs the same
//! networks with the same thread count and the table shows both.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use autoagent_evaluator::kernels::in_pool;
use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::net::{BnMode, Model, Nb201Config};
use autoagent_evaluator::train::Sgd;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The architectures measured by default: `(NB201 index, arch string, role)`.
pub const DEFAULT_ARCHS: [(usize, &str, &str); 3] = [
    (
        6111,
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
        "best (CIFAR-10 94.37 %)",
    ),
    (
        9631,
        "|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|",
        "mid-size (median params)",
    ),
    (
        5681,
        "|skip_connect~0|+|avg_pool_3x3~0|skip_connect~1|+|skip_connect~0|avg_pool_3x3~1|skip_connect~2|",
        "conv-free",
    ),
];

/// Options of `autoagent bench train-speed`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainSpeedArgs {
    /// Measure only these of the reference archs (NB201 indices, comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_ARCHS.map(|a| a.0))]
    pub archs: Vec<usize>,
    /// Threads for candle (rayon) and PyTorch.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Batch size of the forward and forward+backward timings.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Batch size of the training-throughput loop.
    #[arg(long, default_value_t = 256)]
    pub train_batch: usize,
    /// Timed iterations per measurement (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed SGD steps for the throughput.
    #[arg(long, default_value_t = 5)]
    pub train_steps: usize,
    /// Python interpreter with torch installed; runs the PyTorch reference side by side.
    #[arg(long)]
    pub torch: Option<PathBuf>,
    /// The reference script (default: `benchmarks/reference/nb201_torch.py` as built into the binary).
    #[arg(long)]
    pub torch_script: Option<PathBuf>,
    /// Write the markdown table here (with the command that produced it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the measurements as one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Measurements of one network in one framework.
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct Speed {
    /// Forward ms per batch.
    pub fwd_ms: f64,
    /// Forward + backward ms per batch.
    pub fwdbwd_ms: f64,
    /// Training images per second.
    pub train_images_per_s: f64,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// NB201 index.
    pub index: usize,
    /// Arch string.
    pub arch: String,
    /// What the arch stands for.
    pub role: String,
    /// Trainable parameters.
    pub params: usize,
    /// Forward FLOPs per image (2 × MACs of convolutions and classifier).
    pub flops_per_image: f64,
    /// candle's timings.
    pub candle: Speed,
    /// PyTorch's timings, when it ran.
    pub torch: Option<Speed>,
}

/// The whole benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Threads used by both frameworks.
    pub threads: usize,
    /// Batch sizes.
    pub batch: usize,
    /// Training batch size.
    pub train_batch: usize,
    /// GFLOP/s of a 2048³ f32 matmul in candle (gemm crate) in this run.
    pub candle_matmul_gflops: f64,
    /// GFLOP/s of the same product with our AVX-512 kernel (what our convolutions use).
    pub sgemm_matmul_gflops: f64,
    /// The same in PyTorch.
    pub torch_matmul_gflops: Option<f64>,
    /// PyTorch version.
    pub torch_version: Option<String>,
    /// Rows.
    pub rows: Vec<Row>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time_ms<F: FnMut() -> Result<()>>(warmup: usize, iters: usize, mut f: F) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut v = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(v))
}

fn random_batch(n: usize, seed: u64, dev: &Device) -> Result<(Tensor, Tensor)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let xs: Vec<f32> = (0..n * 3 * 32 * 32).map(|_| rng.random_range(-2.0..2.0)).collect();
    let ys: Vec<u32> = (0..n).map(|_| rng.random_range(0..10)).collect();
    Ok((Tensor::from_vec(xs, (n, 3, 32, 32), dev)?, Tensor::from_vec(ys, n, dev)?))
}

/// GFLOP/s of an n×n by n×n f32 matrix product in candle.
pub fn matmul_gflops(n: usize, warmup: usize, iters: usize) -> Result<f64> {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (n, n), &dev)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &dev)?;
    let ms = time_ms(warmup, iters, || {
        a.matmul(&b)?;
        Ok(())
    })?;
    Ok(2.0 * (n as f64).powi(3) / (ms * 1e-3) / 1e9)
}

/// GFLOP/s of an n×n by n×n f32 matrix product with our AVX-512 kernel, rows split over the
/// rayon threads (the kernel our convolutions use): the fastest of `iters` runs, as the
/// machine's large-matmul rate that the networks' rates are compared with.
pub fn sgemm_gflops(n: usize, warmup: usize, iters: usize) -> Result<f64> {
    use rayon::prelude::*;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let a: Vec<f32> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let b: Vec<f32> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut c = vec![0f32; n * n];
    let rows = n.div_ceil(rayon::current_num_threads());
    let mut product = || {
        c.par_chunks_mut(rows * n).enumerate().for_each(|(i, dst)| {
            let m = dst.len() / n;
            autoagent_evaluator::sgemm::sgemm(m, n, n, dst, n, false, &a[i * rows * n..], (n, 1), &b, (n, 1));
        });
    };
    for _ in 0..warmup {
        product();
    }
    let mut best = f64::INFINITY;
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        product();
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// Measure one architecture in candle.
pub fn measure_candle(arch: &Arch, args: &TrainSpeedArgs) -> Result<Speed> {
    let dev = Device::Cpu;
    let cfg = Nb201Config::new(*arch);
    let model = Model::new(&cfg, DType::F32, &dev, 0)?;
    let (xs, ys) = random_batch(args.batch, 1, &dev)?;
    // Each pass runs on a thread of the pool, as training does (`kernels::in_pool`).
    let fwd_ms = time_ms(args.warmup, args.iters, || {
        in_pool(|| model.net.forward_mode(&xs, BnMode::Batch))?;
        Ok(())
    })?;
    let fwdbwd_ms = time_ms(args.warmup, args.iters, || {
        in_pool(|| -> Result<()> {
            let logits = model.net.forward_mode(&xs, BnMode::Batch)?;
            candle_nn::loss::cross_entropy(&logits, &ys)?.backward()?;
            Ok(())
        })
    })?;
    let mut opt = Sgd::new(model.trainable().into_iter().map(|(_, v)| v).collect(), 0.9, true, 5e-4);
    let (txs, tys) = random_batch(args.train_batch, 2, &dev)?;
    let mut step = || -> Result<()> {
        in_pool(|| -> Result<()> {
            let logits = model.net.forward_t(&txs, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &tys)?;
            opt.step(&loss, 0.01)?;
            Ok(())
        })
    };
    step()?;
    let t = Instant::now();
    for _ in 0..args.train_steps.max(1) {
        step()?;
    }
    let train_images_per_s = (args.train_batch * args.train_steps.max(1)) as f64 / t.elapsed().as_secs_f64();
    Ok(Speed {
        fwd_ms,
        fwdbwd_ms,
        train_images_per_s,
    })
}

#[derive(serde::Deserialize)]
struct TorchArch {
    index: usize,
    fwd_ms: f64,
    fwdbwd_ms: f64,
    train_images_per_s: f64,
}

#[derive(serde::Deserialize)]
struct TorchReport {
    torch_version: String,
    matmul_gflops: f64,
    archs: Vec<TorchArch>,
}

fn run_torch(python: &PathBuf, args: &TrainSpeedArgs, indices: &[usize]) -> Result<TorchReport> {
    let list: Vec<String> = indices.iter().map(|i| i.to_string()).collect();
    let mut cmd = Command::new(python);
    let script = crate::ReferenceScript::new(args.torch_script.as_deref(), "nb201_torch.py")?;
    cmd.arg(script.path())
        .args(["--archs", &list.join(",")])
        .args(["--arch-strings", &arch_strings(indices)])
        .args(["--threads", &args.threads.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .args(["--train-batch", &args.train_batch.to_string()])
        .args(["--iters", &args.iters.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--train-batches", &args.train_steps.to_string()])
        .arg("--json");
    let stdout = crate::run_reference(&mut cmd, python)?;
    serde_json::from_slice(&stdout).context("the PyTorch reference printed no valid JSON")
}

/// `INDEX=ARCH;…` of reference archs, so the script needs no NB201 table of its own.
pub(crate) fn arch_strings(indices: &[usize]) -> String {
    let pairs = indices
        .iter()
        .filter_map(|i| DEFAULT_ARCHS.iter().find(|a| a.0 == *i))
        .map(|(i, a, _)| format!("{i}={a}"));
    pairs.collect::<Vec<_>>().join(";")
}

/// Run the benchmark and print (and optionally write) the table.
pub fn run(args: &TrainSpeedArgs) -> Result<()> {
    if args.threads == 0 || args.batch == 0 || args.train_batch == 0 {
        bail!("--threads, --batch and --train-batch must be positive");
    }
    autoagent_evaluator::kernels::set_threads(args.threads);
    let candle_matmul_gflops = matmul_gflops(2048, 1, 5)?;
    let sgemm_matmul_gflops = sgemm_gflops(2048, 1, 7)?;
    let mut rows = Vec::new();
    for &index in &args.archs {
        let Some(&(_, arch, role)) = DEFAULT_ARCHS.iter().find(|a| a.0 == index) else {
            bail!("arch {index} is not one of the reference archs {:?}", DEFAULT_ARCHS.map(|a| a.0));
        };
        let a = Arch::parse(arch)?;
        let cfg = Nb201Config::new(a);
        eprintln!("candle: measuring {index} ({role})");
        let candle = measure_candle(&a, args)?;
        rows.push(Row {
            index,
            arch: arch.to_string(),
            role: role.to_string(),
            params: cfg.param_count(),
            flops_per_image: 2.0 * cfg.macs(),
            candle,
            torch: None,
        });
    }
    let (mut torch_matmul_gflops, mut torch_version) = (None, None);
    if let Some(py) = &args.torch {
        eprintln!("torch: measuring the same networks");
        let idx: Vec<usize> = rows.iter().map(|r| r.index).collect();
        let t = run_torch(py, args, &idx)?;
        torch_matmul_gflops = Some(t.matmul_gflops);
        torch_version = Some(t.torch_version);
        for a in t.archs {
            if let Some(r) = rows.iter_mut().find(|r| r.index == a.index) {
                r.torch = Some(Speed {
                    fwd_ms: a.fwd_ms,
                    fwdbwd_ms: a.fwdbwd_ms,
                    train_images_per_s: a.train_images_per_s,
                });
            }
        }
    }
    let report = Report {
        threads: args.threads,
        batch: args.batch,
        train_batch: args.train_batch,
        candle_matmul_gflops,
        sgemm_matmul_gflops,
        torch_matmul_gflops,
        torch_version,
        rows,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", markdown(&report));
    }
    if let Some(path) = &args.out {
        let cmd: Vec<String> = std::env::args().collect();
        let text = format!(
            "# Training speed: candle vs PyTorch on CPU\n\nProduced by:\n\n```\n{}\n```\n\n{}",
            cmd.join(" "),
            markdown(&report)
        );
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The report as a markdown table.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let gf = |flops: f64, ms: f64| flops / (ms * 1e-3) / 1e9;
    s.push_str(&format!(
        "{} threads, batch {} (forward, forward+backward), training batch {}. Large f32 matmul (2048³): candle {:.1} GFLOP/s, our AVX-512 sgemm {:.1} GFLOP/s{}.\n\n",
        r.threads,
        r.batch,
        r.train_batch,
        r.candle_matmul_gflops,
        r.sgemm_matmul_gflops,
        match (r.torch_matmul_gflops, &r.torch_version) {
            (Some(g), Some(v)) => format!(", PyTorch {v} {g:.1} GFLOP/s"),
            _ => String::new(),
        }
    ));
    // The machine's large-matmul rate: the faster of our kernel and PyTorch's in this run.
    let peak = r.sgemm_matmul_gflops.max(r.torch_matmul_gflops.unwrap_or(0.0));
    s.push_str("| arch | params | MFLOP/img | framework | fwd ms | fwd+bwd ms | train img/s | fwd GFLOP/s | fwd+bwd GFLOP/s | fwd+bwd % of matmul | fwd+bwd speed vs PyTorch |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for row in &r.rows {
        let f = row.flops_per_image * r.batch as f64;
        let mut line = |name: &str, sp: &Speed, ratio: String| {
            s.push_str(&format!(
                "| {} {} | {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} % | {} |\n",
                row.index,
                row.role,
                row.params,
                row.flops_per_image / 1e6,
                name,
                sp.fwd_ms,
                sp.fwdbwd_ms,
                sp.train_images_per_s,
                gf(f, sp.fwd_ms),
                gf(3.0 * f, sp.fwdbwd_ms),
                100.0 * gf(3.0 * f, sp.fwdbwd_ms) / peak,
                ratio
            ));
        };
        let ratio = match &row.torch {
            Some(t) => format!("{:.2}×", t.fwdbwd_ms / row.candle.fwdbwd_ms),
            None => "—".into(),
        };
        line("candle", &row.candle, ratio);
        if let Some(t) = &row.torch {
            line("PyTorch", t, "".into());
        }
    }
    s.push_str("\nGFLOP/s count 2 × multiply-accumulates of convolutions and the classifier; forward+backward counts 3 × forward. The matmul rates are the fastest of 7 products after a warm-up; \"% of matmul\" is forward+backward GFLOP/s over the faster of ours and PyTorch's. The last column is PyTorch's forward+backward time over candle's: above 1 candle is faster.\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_archs_are_the_tables_rows_and_what_they_claim() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/nb201/nb201.csv");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
        for (index, arch, _) in DEFAULT_ARCHS {
            assert_eq!(rows[index][0], index.to_string());
            assert_eq!(rows[index][1], arch, "index {index}");
        }
        // 6111 has the best CIFAR-10 test accuracy (tied with an isomorphic cell); 5681 has no convolution; 9631 sits at the
        // median parameter count.
        let acc = |r: &Vec<&str>| r[3].parse::<f64>().unwrap();
        let best = rows.iter().map(acc).fold(f64::MIN, f64::max);
        assert_eq!(acc(&rows[6111]), best);
        assert!(!DEFAULT_ARCHS[2].1.contains("conv"));
        let mut params: Vec<f64> = rows.iter().map(|r| r[8].parse().unwrap()).collect();
        params.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(rows[9631][8].parse::<f64>().unwrap(), params[params.len() / 2]);
    }
}
