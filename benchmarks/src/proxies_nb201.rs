//! `autoagent bench proxies --suite nb201`: how well each zero-cost proxy ranks NAS-Bench-201
//! architectures by their benchmark accuracy, next to the published numbers.
//!
//! A seeded sample of architectures (or all 15,625) is scored on real images with every chosen
//! proxy, once per seed (seed `s` draws the image batch and initialises the networks); the
//! sample itself is the same for every seed, so the spread over seeds is the proxies' own
//! randomness. Against each requested dataset's accuracy column the table gives Spearman ρ,
//! Kendall τ-b and the top-10 % precision (the share of the proxy's top 10 % that is in the
//! benchmark's top 10 %), each as mean ± standard deviation over seeds, the published values
//! with the accuracy column each one used, and the mean milliseconds per architecture.
//!
//! Non-finite scores (degenerate cells, failures) rank below every finite score; the table counts
//! them. The ensemble row is the log-rank aggregation of [`autoagent_proxies::ensemble`],
//! computed on the same sample from its members' scores.
//!
//! Scores are cached on disk, one JSON line per (architecture, proxy, seed, batch) with its
//! milliseconds, appended and flushed after each architecture: a killed benchmark continues
//! where it stopped, and a run on a new dataset's accuracy reuses the scores of an earlier one.
//! Every architecture is scored as itself, isomorphic cells included (they are different
//! networks; see [`autoagent_proxies::cache`]), so a score never depends on what the cache saw
//! first; the batch id identifies the images, so another image folder never reuses them.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use autoagent_agent::task::network;
use autoagent_evaluator::data::{self, DatasetKind};
use autoagent_evaluator::proxy::{batch_id, proxy_batch, Nb201Candidate};
use autoagent_evaluator::table::Nb201Table;
use autoagent_evaluator::train::parse_device;
use autoagent_proxies::cache::ScoreCache;
use autoagent_proxies::ensemble::{log_rank_aggregate, ranks_finite_first};
use autoagent_proxies::registry::parse_list;
use autoagent_proxies::stats::{kendall, spearman};
use autoagent_proxies::Batch;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::json;

/// Options of `autoagent bench proxies`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxiesBenchArgs {
    /// Benchmark suite (only nb201).
    #[arg(long, default_value = "nb201")]
    pub suite: String,
    /// Whose accuracy to correlate against, comma-separated: cifar10, cifar100, imagenet16.
    #[arg(long, value_delimiter = ',', default_value = "cifar10")]
    pub dataset: Vec<String>,
    /// Correlate against this column of the table instead of the dataset's default (one dataset only).
    #[arg(long)]
    pub metric: Option<String>,
    /// The benchmark table in the interchange format (default: nb201/nb201.csv in the data
    /// cache, as `autoagent import nats` writes it).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Score K architectures drawn without replacement with --seed.
    #[arg(long, conflicts_with = "all", default_value_t = 200)]
    pub sample: usize,
    /// Score every architecture of the suite.
    #[arg(long)]
    pub all: bool,
    /// Proxies (comma-separated names, or all).
    #[arg(long, default_value = "all")]
    pub proxies: String,
    /// Members of the ensemble row (comma-separated, each among --proxies), or none.
    #[arg(long, default_value = "synflow,naswot,jacob_cov")]
    pub ensemble: String,
    /// Images in the proxies' batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Seeds per architecture (batch draw and initialisation): --seed, --seed+1, ...
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// Seed of the sample and first seed of the proxies.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Dataset the proxies' images come from.
    #[arg(long, default_value = "cifar10")]
    pub images: String,
    /// Directory holding the image dataset.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Score cache (JSON lines; default: in the user cache directory, one file per images/batch size).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Score several architectures at a time on the thread pool (true) or one after another
    /// (false); side by side, each score's recorded ms is its wall time among the others.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub parallel: bool,
    /// Print the table as one JSON object (keyed by dataset, then by proxy) instead of markdown.
    #[arg(long)]
    pub json: bool,
    /// Also write the markdown table here, with the command that produced it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Architectures scored together when scoring in parallel.
const PARALLEL_CHUNK: usize = 8;

/// A published rank correlation.
struct Published {
    proxy: &'static str,
    dataset: &'static str,
    rho: f64,
}

/// Abdelfattah et al., ICLR 2021, Table 1 (|ρ|, all 15,625 archs, one batch of 64, seed 42;
/// accuracy: cifar10-valid trained / ori-test for CIFAR-10, x-test for the others).
const ABDELFATTAH: &[Published] = [
    p("grad_norm", 0.594, 0.637, 0.578),
    p("snip", 0.596, 0.637, 0.578),
    p("grasp", 0.514, 0.547, 0.549),
    p("fisher", 0.360, 0.385, 0.327),
    p("synflow", 0.737, 0.763, 0.751),
    p("jacob_cov", 0.731, 0.704, 0.701),
]
.as_flattened();

/// NAS-Bench-Suite-Zero (Krishnakumar et al., NeurIPS 2022), ρ recomputed from its released
/// per-arch scores against NASLib's `val_accuracy` (9,445 nets for CIFAR-10 and ImageNet16-120,
/// 725 for CIFAR-100).
const SUITE_ZERO: &[Published] = [
    p("synflow", 0.732, 0.762, 0.725),
    p("naswot", 0.792, 0.814, 0.795),
    p("jacob_cov", 0.818, 0.725, 0.781),
    p("params", 0.747, 0.744, 0.718),
    p("flops", 0.714, 0.722, 0.690),
    p("grad_norm", 0.550, 0.648, 0.543),
    p("snip", 0.552, 0.658, 0.542),
    p("grasp", 0.491, 0.552, 0.521),
    p("fisher", 0.501, 0.555, 0.485),
    // Suite-Zero has no CIFAR-100 zen value.
    p("zen", 0.101, f64::NAN, 0.112),
]
.as_flattened();

const fn p(proxy: &'static str, c10: f64, c100: f64, in16: f64) -> [Published; 3] {
    [
        Published {
            proxy,
            dataset: "cifar10",
            rho: c10,
        },
        Published {
            proxy,
            dataset: "cifar100",
            rho: c100,
        },
        Published {
            proxy,
            dataset: "imagenet16",
            rho: in16,
        },
    ]
}

fn published(list: &[Published], proxy: &str, dataset: &str) -> Option<f64> {
    list.iter()
        .find(|p| p.proxy == proxy && p.dataset == dataset)
        .map(|p| p.rho)
        .filter(|r| !r.is_nan())
}

/// The accuracy columns of one dataset: the default one (Abdelfattah et al.'s) and, where the
/// table has it, the 200-epoch validation accuracy (closest to Suite-Zero's label).
fn dataset_columns(name: &str) -> Result<(&'static str, &'static str, Option<&'static str>)> {
    Ok(match name {
        "cifar10" => ("CIFAR-10", "cifar10valid_test_acc", Some("cifar10_valid_acc")),
        "cifar100" => ("CIFAR-100", "cifar100_test_acc", Some("cifar100_valid_acc")),
        "imagenet16" | "imagenet16-120" => ("ImageNet16-120", "imagenet16_test_acc", Some("imagenet16_valid_acc")),
        other => bail!("unknown dataset '{other}' (available: cifar10, cifar100, imagenet16)"),
    })
}

/// Mean and sample standard deviation over seeds.
#[derive(Debug, Clone, Serialize)]
struct Spread {
    mean: f64,
    sd: f64,
    per_seed: Vec<f64>,
}

impl Spread {
    fn of(v: Vec<f64>) -> Spread {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = if v.len() > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Spread { mean, sd, per_seed: v }
    }

    fn show(&self) -> String {
        if self.mean.is_nan() {
            "—".into()
        } else if self.per_seed.len() > 1 {
            format!("{:.3} ± {:.3}", self.mean, self.sd)
        } else {
            format!("{:.3}", self.mean)
        }
    }
}

/// Share of the top `⌈n/10⌉` by `score` that is also in the top `⌈n/10⌉` by `truth`.
fn top10_precision(score: &[f64], truth: &[f64]) -> f64 {
    let n = score.len();
    let k = n.div_ceil(10);
    let top = |v: &[f64]| {
        let r = ranks_finite_first(v);
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| r[b].total_cmp(&r[a]).then(a.cmp(&b)));
        idx.truncate(k);
        idx
    };
    let (a, b) = (top(score), top(truth));
    a.iter().filter(|i| b.contains(i)).count() as f64 / k as f64
}

/// Correlation of one score vector (non-finite values ranked last) with the truth.
fn correlations(score: &[f64], truth: &[f64]) -> (f64, f64, f64) {
    let r = ranks_finite_first(score);
    (spearman(&r, truth), kendall(&r, truth), top10_precision(score, truth))
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
struct Row {
    archs: usize,
    non_finite: usize,
    spearman: Spread,
    kendall: Spread,
    top10_precision: Spread,
    spearman_valid: Option<Spread>,
    published_abdelfattah: Option<f64>,
    published_suite_zero: Option<f64>,
    ms_per_arch: Option<f64>,
    beats_params: Option<bool>,
}

pub use autoagent_agent::ranker::default_cache;

/// Run the benchmark and print (and optionally write) its table.
pub fn run(args: &ProxiesBenchArgs) -> Result<()> {
    if args.suite != "nb201" {
        bail!("unknown suite '{}' (available: nb201)", args.suite);
    }
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if args.dataset.is_empty() {
        bail!("name at least one --dataset");
    }
    if args.metric.is_some() && args.dataset.len() > 1 {
        bail!("--metric applies to one --dataset at a time");
    }
    let datasets = args
        .dataset
        .iter()
        .map(|d| dataset_columns(d).map(|c| (d.clone(), c)))
        .collect::<Result<Vec<_>>>()?;
    let proxies = parse_list(&args.proxies).map_err(anyhow::Error::msg)?;
    let names: Vec<&'static str> = proxies.iter().map(|p| p.name()).collect();
    let members: Vec<&'static str> = if args.ensemble.trim() == "none" {
        Vec::new()
    } else {
        let listed = parse_list(&args.ensemble).map_err(anyhow::Error::msg)?;
        let m: Vec<&'static str> = listed.iter().map(|p| p.name()).collect();
        if let Some(missing) = m.iter().find(|n| !names.contains(n)) {
            bail!("ensemble member '{missing}' is not among --proxies (add it there, or pass --ensemble none)");
        }
        if m.len() < 2 {
            bail!("an ensemble needs at least two members (or --ensemble none)");
        }
        m
    };

    let (table, truth_path) = Nb201Table::load_or_default(args.truth.as_deref())?;
    let mut metrics = Vec::new();
    for (name, (label, default, valid)) in &datasets {
        let metric = args.metric.clone().unwrap_or_else(|| default.to_string());
        if !table.columns().contains(&metric) {
            bail!("{} has no column '{metric}' (columns: {})", truth_path.display(), table.columns().join(", "));
        }
        // The validation column only counts where the table fills it.
        let valid = valid.filter(|v| args.metric.is_none() && (0..table.len()).all(|i| matches!(table.value(i, v), Ok(Some(_)))));
        metrics.push((name.clone(), *label, metric, valid));
    }

    let n_total = table.len();
    let indices: Vec<usize> = if args.all {
        (0..n_total).collect()
    } else {
        if args.sample < 10 {
            bail!("--sample must be at least 10 (rank correlations of fewer architectures mean little)");
        }
        if args.sample > n_total {
            bail!("--sample {} exceeds the {n_total} architectures of the table (use --all)", args.sample);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
        rand::seq::index::sample(&mut rng, n_total, args.sample).into_vec()
    };

    let kind = DatasetKind::from_name(&args.images)
        .with_context(|| format!("unknown image dataset '{}' (available: cifar10, cifar100, mnist, fashion-mnist)", args.images))?;
    let device = parse_device(&args.device)?;
    let root = data::data_root(args.data_dir.as_deref());
    let dataset = data::open(kind, &root, true)?;
    let seeds: Vec<u64> = (0..args.seeds as u64).map(|s| args.seed + s).collect();
    let batches: Vec<(u64, String, Batch)> = seeds
        .iter()
        .map(|&s| {
            let batch = proxy_batch(&dataset, args.batch_size, s, &device)?;
            Ok((s, batch_id(kind, &batch, s)?, batch))
        })
        .collect::<Result<_>>()?;
    let cache_path = args.cache.clone().unwrap_or_else(|| default_cache(kind.name(), args.batch_size));
    let mut cache = ScoreCache::open(&cache_path)?;

    // scores[proxy][seed][arch], ms[proxy] = (sum, count) over computed entries.
    let mut scores = vec![vec![vec![f64::NAN; indices.len()]; seeds.len()]; proxies.len()];
    let mut ms = vec![(0.0f64, 0usize); proxies.len()];
    let bar = progress(indices.len());
    let started = Instant::now();
    let (mut computed, mut reused) = (0usize, 0usize);
    let proxy_refs: Vec<&dyn autoagent_proxies::Proxy> = proxies.iter().map(|p| p.as_ref()).collect();
    let chunk = if args.parallel { PARALLEL_CHUNK } else { 1 };
    for start in (0..indices.len()).step_by(chunk) {
        let part = start..(start + chunk).min(indices.len());
        let archs: Vec<_> = part
            .clone()
            .map(|ai| table.arch(indices[ai]).expect("sampled index within the table"))
            .collect();
        let candidates: Vec<Nb201Candidate> = archs
            .iter()
            .map(|arch| Nb201Candidate::new(network(kind, &autoagent_agent::task::cell_config(*arch))))
            .collect();
        let refs: Vec<&dyn autoagent_proxies::Candidate> = candidates.iter().map(|c| c as &dyn autoagent_proxies::Candidate).collect();
        for (si, (seed, batch_id, batch)) in batches.iter().enumerate() {
            let grid = cache.score_grid(&proxy_refs, &refs, batch, batch_id, *seed, args.parallel)?;
            for ((ai, arch), row) in part.clone().zip(&archs).zip(grid) {
                for (pi, scored) in row.into_iter().enumerate() {
                    if let Some(e) = &scored.error {
                        bar.suspend(|| eprintln!("warning: {} of {arch} (seed {seed}) failed: {e}", proxies[pi].name()));
                    }
                    if scored.computed {
                        computed += 1;
                    } else {
                        reused += 1;
                    }
                    scores[pi][si][ai] = scored.value.unwrap_or(f64::NAN);
                    ms[pi].0 += scored.ms;
                    ms[pi].1 += 1;
                }
            }
        }
        cache.flush()?;
        bar.inc(part.len() as u64);
        if bar.is_hidden() && (part.end / 50 > part.start / 50 || part.end == indices.len()) {
            eprintln!("scored {}/{} archs ({:.0} s)", part.end, indices.len(), started.elapsed().as_secs_f64());
        }
    }
    bar.finish_and_clear();
    tracing::info!("{computed} scores computed, {reused} from {}", cache_path.display());

    // Table per dataset.
    let mut md = String::new();
    let mut js = serde_json::Map::new();
    for (name, label, metric, valid) in &metrics {
        let truth: Vec<f64> = indices.iter().map(|&i| table.value(i, metric).ok().flatten().unwrap_or(f64::NAN)).collect();
        let truth_valid: Option<Vec<f64>> = valid.map(|v| indices.iter().map(|&i| table.value(i, v).ok().flatten().unwrap_or(f64::NAN)).collect());
        let mut rows: Vec<(String, Row)> = Vec::new();
        let mut row_of = |label: String, per_seed: &[Vec<f64>], ms_per_arch: Option<f64>, pub_name: Option<&str>| {
            let stats: Vec<(f64, f64, f64)> = per_seed.iter().map(|s| correlations(s, &truth)).collect();
            let valid_rho = truth_valid
                .as_ref()
                .map(|tv| Spread::of(per_seed.iter().map(|s| spearman(&ranks_finite_first(s), tv)).collect()));
            let non_finite = per_seed.iter().map(|s| s.iter().filter(|x| !x.is_finite()).count()).max().unwrap_or(0);
            rows.push((
                label,
                Row {
                    archs: indices.len(),
                    non_finite,
                    spearman: Spread::of(stats.iter().map(|s| s.0).collect()),
                    kendall: Spread::of(stats.iter().map(|s| s.1).collect()),
                    top10_precision: Spread::of(stats.iter().map(|s| s.2).collect()),
                    spearman_valid: valid_rho,
                    published_abdelfattah: pub_name.and_then(|p| published(ABDELFATTAH, p, name)),
                    published_suite_zero: pub_name.and_then(|p| published(SUITE_ZERO, p, name)),
                    ms_per_arch,
                    beats_params: None,
                },
            ));
        };
        for (pi, p) in names.iter().enumerate() {
            let mean_ms = (ms[pi].1 > 0).then(|| ms[pi].0 / ms[pi].1 as f64);
            row_of(p.to_string(), &scores[pi], mean_ms, Some(p));
        }
        if !members.is_empty() {
            let idx: Vec<usize> = members
                .iter()
                .map(|m| names.iter().position(|n| n == m).expect("member among proxies"))
                .collect();
            let per_seed: Vec<Vec<f64>> = (0..seeds.len())
                .map(|si| {
                    let cols: Vec<&[f64]> = idx.iter().map(|&pi| scores[pi][si].as_slice()).collect();
                    log_rank_aggregate(&cols)
                })
                .collect();
            let mean_ms = idx.iter().map(|&pi| (ms[pi].1 > 0).then(|| ms[pi].0 / ms[pi].1 as f64)).sum::<Option<f64>>();
            row_of(format!("ensemble({})", members.join("+")), &per_seed, mean_ms, None);
        }
        let params_rho = rows.iter().find(|(n, _)| n == "params").map(|(_, r)| r.spearman.mean);
        if let Some(pr) = params_rho {
            for (n, r) in rows.iter_mut() {
                if n != "params" {
                    r.beats_params = Some(r.spearman.mean > pr);
                }
            }
        }
        // The baselines over the whole table, to show how representative the sample is.
        let full_truth: Vec<f64> = (0..n_total).map(|i| table.value(i, metric).ok().flatten().unwrap_or(f64::NAN)).collect();
        let mut full = Vec::new();
        for (col, label) in [("params_M", "params"), ("flops_M", "flops")] {
            if table.columns().iter().any(|c| c == col) {
                let v: Vec<f64> = (0..n_total).map(|i| table.value(i, col).ok().flatten().unwrap_or(f64::NAN)).collect();
                full.push((label, spearman(&v, &full_truth), kendall(&v, &full_truth)));
            }
        }
        md.push_str(&render(label, metric, *valid, &rows, &full, n_total, &indices, &seeds, (name, kind.name())));
        js.insert(
            name.clone(),
            json!({
                "dataset": label,
                "metric": metric,
                "valid_metric": valid,
                "images": kind.name(),
                "archs": indices.len(),
                "arch_indices": indices,
                "seeds": seeds,
                "batch_size": args.batch_size,
                "proxies": rows.iter().map(|(n, r)| (n.clone(), serde_json::to_value(r).expect("row serialises"))).collect::<serde_json::Map<_, _>>(),
                "full_space": full.iter().map(|(n, rho, tau)| (n.to_string(), json!({"spearman": rho, "kendall": tau}))).collect::<serde_json::Map<_, _>>(),
            }),
        );
    }

    if args.json {
        println!("{}", serde_json::Value::Object(js));
    } else {
        print!("{md}");
    }
    if let Some(out) = &args.out {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let text = format!(
            "# Zero-cost proxies on NAS-Bench-201\n\nProduced by:\n\n```\n{command}\n```\n\n{}\n{md}{}",
            intro(),
            legend()
        );
        write_atomically(out, &text)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

fn progress(len: usize) -> indicatif::ProgressBar {
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(len as u64);
        bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} archs  {elapsed} (eta {eta})").expect("valid template"));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("out")));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn intro() -> &'static str {
    "Each proxy scores the same seeded sample of architectures once per seed (the seed draws the \
image batch and initialises the networks); ρ (Spearman), τ (Kendall τ-b) and top-10 % precision \
are means ± standard deviations over seeds. Non-finite scores rank below every finite one. The \
ensemble row is the log-rank aggregation of its members (`proxies/src/ensemble.rs`), label-free.\n"
}

fn legend() -> &'static str {
    "\nPublished values (from `shared/PROXIES.md` §1): **Abdelfattah** = Abdelfattah et al., ICLR 2021, Table 1: \
|ρ| over all 15,625 archs, one batch of 64, accuracy `cifar10valid_test_acc` (cifar10-valid trained, \
ori-test) for CIFAR-10 and the x-test accuracy for CIFAR-100 and ImageNet16-120, each computed \
with that dataset's images. **Suite-Zero** = NAS-Bench-Suite-Zero's released scores, ρ against \
NASLib's `val_accuracy` on 9,445 nets without cut-off branches (CIFAR-10, ImageNet16-120) and 725 \
nets (CIFAR-100); we compare it with our ρ on the table's validation accuracy where the table has \
one. A ✓ marks |Δ| ≤ 0.03. \"vs params\": whether the proxy's ρ beats the parameter count's on the \
same sample.\n"
}

#[allow(clippy::too_many_arguments)]
fn render(
    label: &str,
    metric: &str,
    valid: Option<&str>,
    rows: &[(String, Row)],
    full: &[(&str, f64, f64)],
    n_total: usize,
    indices: &[usize],
    seeds: &[u64],
    (dataset_name, images): (&str, &str),
) -> String {
    let mut s = format!(
        "\n## {label}: accuracy `{metric}`{}\n\n{} of {n_total} architectures, seeds {:?}, scored on {images} images{}. ms/arch: the mean time of a score when it was computed (scores read from the cache keep theirs; scores computed several architectures at a time, the default, count their wall time side by side).\n\n",
        valid.map(|v| format!(" (validation: `{v}`)")).unwrap_or_default(),
        indices.len(),
        seeds,
        if images != dataset_name {
            " (not this dataset's own images: the accuracy is another dataset's)"
        } else {
            ""
        }
    );
    s.push_str("| proxy | non-finite | ρ | τ | top-10 % | Abdelfattah ρ (Δ) |");
    if valid.is_some() {
        s.push_str(" ρ on validation acc |");
    }
    s.push_str(" Suite-Zero ρ (Δ) | ms/arch | vs params |\n|---|---|---|---|---|---|");
    if valid.is_some() {
        s.push_str("---|");
    }
    s.push_str("---|---|---|\n");
    for (name, r) in rows {
        let delta = |ours: f64, theirs: Option<f64>| match theirs {
            Some(t) => {
                let d = ours - t;
                format!("{t:.3} ({d:+.3}{})", if d.abs() <= 0.03 { " ✓" } else { "" })
            }
            None => "—".into(),
        };
        let bold = name.starts_with("ensemble");
        let b = |x: String| if bold { format!("**{x}**") } else { x };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |",
            b(name.clone()),
            r.non_finite,
            b(r.spearman.show()),
            r.kendall.show(),
            r.top10_precision.show(),
            delta(r.spearman.mean.abs(), r.published_abdelfattah),
        ));
        if let Some(v) = &r.spearman_valid {
            s.push_str(&format!(" {} |", v.show()));
        }
        let sz_ours = r.spearman_valid.as_ref().map_or(r.spearman.mean, |v| v.mean);
        s.push_str(&format!(
            " {} | {} | {} |\n",
            delta(sz_ours, r.published_suite_zero),
            r.ms_per_arch.map_or("—".into(), |m| format!("{m:.0}")),
            match r.beats_params {
                Some(true) => "beats",
                Some(false) => "does not beat",
                None => "—",
            }
        ));
    }
    if !full.is_empty() {
        s.push_str(&format!("\nOver all {n_total} architectures of the table: "));
        let parts: Vec<String> = full.iter().map(|(n, rho, tau)| format!("{n} ρ {rho:.3}, τ {tau:.3}")).collect();
        s.push_str(&parts.join("; "));
        s.push_str(".\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top10_precision_counts_the_overlap() {
        let truth: Vec<f64> = (0..20).map(f64::from).collect();
        assert_eq!(top10_precision(&truth, &truth), 1.0);
        let reversed: Vec<f64> = truth.iter().map(|x| -x).collect();
        assert_eq!(top10_precision(&reversed, &truth), 0.0);
        // Top 2 of 20: one of the two is right.
        let mut half = truth.clone();
        half.swap(19, 0);
        assert_eq!(top10_precision(&half, &truth), 0.5);
    }

    #[test]
    fn published_lookup() {
        assert_eq!(published(ABDELFATTAH, "synflow", "cifar10"), Some(0.737));
        assert_eq!(published(SUITE_ZERO, "naswot", "imagenet16"), Some(0.795));
        assert_eq!(published(ABDELFATTAH, "naswot", "cifar10"), None);
    }

    #[test]
    fn spread_of_seeds() {
        let s = Spread::of(vec![0.7, 0.8, 0.9]);
        assert!((s.mean - 0.8).abs() < 1e-12 && (s.sd - 0.1).abs() < 1e-12);
        assert_eq!(Spread::of(vec![0.5]).sd, 0.0);
    }
}
