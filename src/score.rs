//! `autoagent proxies score`: zero-cost proxy scores of NB201 architectures on real images.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use autoagent_agent::ranker::default_cache;
use autoagent_agent::task::network;
use autoagent_evaluator::data::{self, DatasetKind};
use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::proxy::{batch_id, proxy_batch, Nb201Candidate};
use autoagent_evaluator::train;
use autoagent_proxies::cache::ScoreCache;
use autoagent_proxies::registry::parse_list;
use autoagent_proxies::{Candidate, Proxy};
use clap::Args;
use rand::SeedableRng;

use crate::DataArgs;

#[derive(Args)]
pub(crate) struct ScoreArgs {
    /// Search space (only nb201 for now).
    #[arg(long, default_value = "nb201")]
    space: String,
    /// One architecture string.
    #[arg(long, conflicts_with_all = ["archs", "sample"])]
    arch: Option<String>,
    /// A file with one architecture string per line.
    #[arg(long, conflicts_with = "sample")]
    archs: Option<PathBuf>,
    /// Score K architectures sampled uniformly with --seed.
    #[arg(long)]
    sample: Option<usize>,
    /// Dataset the images come from: cifar10, cifar100, mnist, fashion-mnist.
    #[arg(long, default_value = "cifar10")]
    task: String,
    /// Comma-separated proxy names, or `all`.
    #[arg(long, default_value = "synflow,naswot,grad_norm")]
    proxies: String,
    /// Images in the proxies' batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Seed of the batch draw, the initialisation and --sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object per architecture per line.
    #[arg(long)]
    json: bool,
    /// Score several architectures at a time on the thread pool (true), or one after another
    /// (false). Side by side each score takes longer than alone, and its `ms` says so: it is the
    /// wall time of that score.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    parallel: bool,
    /// Keep scores in a cache file (JSON lines, shared with `autoagent run` and `bench
    /// proxies`): scores it holds are read, not computed again (their `ms` is from when they
    /// were computed), and new ones are appended. `--cache` alone uses the shared default file
    /// in the user cache directory. Without it nothing is written.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    cache: Option<Option<PathBuf>>,
    #[command(flatten)]
    data: DataArgs,
}

/// Architectures scored together (then printed, in order) when scoring in parallel.
const CHUNK: usize = 8;

fn archs_of(args: &ScoreArgs) -> Result<Vec<Arch>> {
    if let Some(a) = &args.arch {
        return Ok(vec![Arch::parse(a)?]);
    }
    if let Some(path) = &args.archs {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let archs = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| Arch::parse(l.trim()).with_context(|| format!("{}:{}", path.display(), i + 1)))
            .collect::<Result<Vec<_>>>()?;
        if archs.is_empty() {
            bail!("{} holds no architecture", path.display());
        }
        return Ok(archs);
    }
    match args.sample {
        Some(0) => bail!("--sample must be at least 1"),
        Some(k) => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
            Ok((0..k).map(|_| Arch::sample(&mut rng)).collect())
        }
        None => bail!("name the architectures: --arch ARCH, --archs FILE or --sample K"),
    }
}

pub(crate) fn cmd_score(args: ScoreArgs) -> Result<()> {
    if args.space != "nb201" {
        bail!("unknown search space '{}' (available: nb201)", args.space);
    }
    let kind =
        DatasetKind::from_name(&args.task).with_context(|| format!("unknown task '{}' (available: cifar10, cifar100, mnist, fashion-mnist)", args.task))?;
    let proxies = parse_list(&args.proxies).map_err(anyhow::Error::msg)?;
    let archs = archs_of(&args)?;
    let device = train::parse_device(&args.device)?;
    let root = data::data_root(args.data.data_dir.as_deref());
    let dataset = data::open(kind, &root, !args.data.no_download)?;
    let batch = proxy_batch(&dataset, args.batch_size, args.seed, &device)?;
    let batch_id = batch_id(kind, &batch, args.seed)?;
    let mut cache = match &args.cache {
        None => ScoreCache::in_memory(),
        Some(file) => {
            let path = file.clone().unwrap_or_else(|| default_cache(kind.name(), args.batch_size));
            ScoreCache::open(&path)?
        }
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(archs.len() as u64);
        bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} archs  {elapsed} (eta {eta})  {msg}").expect("valid template"));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut out = std::io::stdout().lock();
    let names: Vec<&str> = proxies.iter().map(|p| p.name()).collect();
    let proxy_refs: Vec<&dyn Proxy> = proxies.iter().map(|p| p.as_ref()).collect();
    if !args.json {
        writeln!(out, "{}\tarch", names.join("\t"))?;
    }
    for chunk in archs.chunks(if args.parallel { CHUNK } else { 1 }) {
        let candidates: Vec<Nb201Candidate> = chunk
            .iter()
            .map(|arch| Nb201Candidate::new(network(kind, &autoagent_agent::task::cell_config(*arch))))
            .collect();
        let refs: Vec<&dyn Candidate> = candidates.iter().map(|c| c as &dyn Candidate).collect();
        let grid = cache.score_grid(&proxy_refs, &refs, &batch, &batch_id, args.seed, args.parallel)?;
        cache.flush()?;
        for (arch, row) in chunk.iter().zip(grid) {
            let mut json = serde_json::Map::new();
            json.insert("arch".into(), arch.to_string().into());
            let mut ms = serde_json::Map::new();
            let mut cached = Vec::new();
            let mut cols = Vec::new();
            for (name, s) in names.iter().zip(row) {
                match (&s.value, &s.error) {
                    (Some(_), _) => {}
                    (None, Some(e)) => bar.suspend(|| errln!("warning: {name} of {arch} failed: {e}; reported as null")),
                    (None, None) => bar.suspend(|| errln!("warning: {name} of {arch} is not finite; reported as null")),
                }
                if !s.computed {
                    cached.push(serde_json::Value::from(*name));
                }
                json.insert((*name).into(), s.value.map_or(serde_json::Value::Null, serde_json::Value::from));
                ms.insert((*name).into(), serde_json::Value::from((s.ms * 1000.0).round() / 1000.0));
                cols.push(s.value.map_or("null".to_string(), fmt_score));
            }
            json.insert("ms".into(), ms.into());
            if args.cache.is_some() {
                json.insert("cached".into(), cached.into());
            }
            let written = bar.suspend(|| -> std::io::Result<()> {
                if args.json {
                    writeln!(out, "{}", serde_json::Value::Object(json))?;
                } else {
                    writeln!(out, "{}\t{arch}", cols.join("\t"))?;
                }
                out.flush()
            });
            match written {
                // A closed stdout (`| head -1`) is the end of the output.
                Err(e) if crate::output::stdout_closed(&e) => {
                    bar.finish_and_clear();
                    return Ok(());
                }
                other => other?,
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// A score for the table: six decimals, or scientific notation for magnitudes a fixed point
/// shows badly (synflow reaches 1e49).
fn fmt_score(v: f64) -> String {
    if v != 0.0 && !(1e-3..1e6).contains(&v.abs()) {
        format!("{v:.6e}")
    } else {
        format!("{v:.6}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn large_and_tiny_scores_are_printed_in_scientific_notation() {
        assert_eq!(super::fmt_score(2.2317950278482128e49), "2.231795e49");
        assert_eq!(super::fmt_score(-3.5e-7), "-3.500000e-7");
        assert_eq!(super::fmt_score(788.125), "788.125000");
        assert_eq!(super::fmt_score(0.0), "0.000000");
    }
}
