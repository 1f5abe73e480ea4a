//! The proxy ranker on real CIFAR-10 images: parallel and sequential scoring give the same
//! scores, each distinct (cell, proxy) is computed once even when a round holds a cell twice,
//! and a second round reads everything from the cache.

use std::path::PathBuf;

use autoagent_agent::configspace::Config;
use autoagent_agent::ranker::{Ranker, RankerConfig};
use autoagent_agent::task::cell_config;
use autoagent_evaluator::data::DatasetKind;
use autoagent_evaluator::nb201::Arch;
use rand::SeedableRng;

fn images() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cifar10-mini")
}

fn ranker(cache: PathBuf, parallel: bool) -> Ranker {
    ranker_of("synflow,naswot,jacob_cov", cache, parallel)
}

fn ranker_of(proxies: &str, cache: PathBuf, parallel: bool) -> Ranker {
    Ranker::build(&RankerConfig {
        proxies,
        images: DatasetKind::Cifar10,
        data_root: &images(),
        download: false,
        search_split: false,
        batch_size: 16,
        seed: 0,
        cache: Some(cache),
        device: &candle_core::Device::Cpu,
        parallel,
    })
    .unwrap()
}

#[test]
fn parallel_scoring_equals_sequential_and_computes_each_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut archs: Vec<Config> = (0..5).map(|_| cell_config(Arch::sample(&mut rng))).collect();
    // The same cell twice in one round: one key, computed once.
    archs.push(archs[0].clone());
    let (seq, seq_s) = ranker(dir.path().join("a.jsonl"), false).score(&archs).unwrap();
    let mut par = ranker(dir.path().join("b.jsonl"), true);
    let (par_scores, par_s) = par.score(&archs).unwrap();
    assert!(seq_s > 0.0 && par_s > 0.0);
    for (a, b) in seq.iter().zip(&par_scores) {
        assert_eq!(a.rank_score, b.rank_score);
        for (name, v) in &a.proxies {
            let w = b.proxies[name];
            match (v, w) {
                (Some(x), Some(y)) => assert!((x - y).abs() <= 1e-9 * x.abs().max(y.abs()), "{name}: {x} vs {y}"),
                (x, y) => assert_eq!(*x, y, "{name}"),
            }
        }
    }
    // One line per distinct key: 5 cells (the sixth repeats the first) × 3 proxies.
    let lines = std::fs::read_to_string(dir.path().join("b.jsonl")).unwrap().lines().count();
    let distinct: std::collections::BTreeSet<String> = archs.iter().map(|a| a.to_string()).collect();
    assert_eq!(lines, distinct.len() * 3);
    // Everything is cached now: each score is charged the time it took when it was computed
    // (issue 15 item 5: a budget means the same with a cold or a warm cache), and the estimate
    // of the round is that exact sum.
    let estimate = par.estimate_seconds(&archs);
    let (again, s) = par.score(&archs).unwrap();
    let recorded: f64 = again.iter().flat_map(|c| c.ms.values()).sum::<f64>() / 1e3;
    assert!(s > 0.0 && (s - recorded).abs() < 1e-9, "{s} vs {recorded}");
    assert!((estimate - recorded).abs() < 1e-9, "{estimate} vs {recorded}");
    assert_eq!(again, par_scores);
}

#[test]
fn one_proxy_ranks_a_cell_without_a_finite_score_last() {
    // Issue 15 item 1: with one ranking proxy, a NaN score sorted above every number, so a cell
    // whose output ignores its input was evaluated first.
    let dir = tempfile::tempdir().unwrap();
    let mut ranker = ranker_of("jacob_cov", dir.path().join("c.jsonl"), false);
    let dead = Arch::parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|").unwrap();
    let live = Arch::parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|").unwrap();
    let (scored, _) = ranker.score(&[cell_config(dead), cell_config(live)]).unwrap();
    assert_eq!(scored[0].proxies["jacob_cov"], None, "the dead cell has no finite jacob_cov");
    let order = autoagent_agent::ranker::evaluation_order(&scored);
    assert_eq!(order[0], 1, "{scored:?}");
}
