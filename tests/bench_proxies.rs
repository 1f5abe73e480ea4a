//! `autoagent bench proxies` end to end on the real NB201 table and CIFAR-10 images: the numbers
//! it prints, its cache, resuming after `kill -9`, and its errors.

mod common;

use std::collections::HashMap;

use common::{assert_one_line_error, shared};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bench(cache: &Path, extra: &[&str]) -> Command {
    bench_on(&shared().join("cifar10-mini"), cache, extra)
}

/// `bench proxies` with the images of `data`.
fn bench_on(data: &Path, cache: &Path, extra: &[&str]) -> Command {
    let truth = shared().join("nb201/nb201.csv");
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoagent"));
    c.args(["bench", "proxies", "--suite", "nb201", "--truth"])
        .arg(truth)
        .arg("--data-dir")
        .arg(data)
        .arg("--cache")
        .arg(cache)
        .args(extra)
        .env_remove("AUTOAGENT_DATA")
        .env("RAYON_NUM_THREADS", "2");
    c
}

fn ok(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON object on stdout")
}

/// Spearman ρ with average ranks, written independently of the crate under test.
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        v.iter()
            .map(|x| {
                let below = v.iter().filter(|y| *y < x).count() as f64;
                let equal = v.iter().filter(|y| *y == x).count() as f64;
                below + (equal + 1.0) / 2.0
            })
            .collect()
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn table_column(name: &str) -> Vec<f64> {
    let mut rdr = csv::Reader::from_path(shared().join("nb201/nb201.csv")).unwrap();
    let col = rdr.headers().unwrap().iter().position(|h| h == name).unwrap();
    rdr.records().map(|r| r.unwrap()[col].parse().unwrap()).collect()
}

fn cache_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn the_table_holds_the_rank_correlations_of_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("scores.jsonl");
    let args = [
        "--dataset",
        "cifar10,cifar100",
        "--sample",
        "24",
        "--seeds",
        "2",
        "--proxies",
        "synflow,params,flops",
        "--ensemble",
        "synflow,params",
        "--json",
    ];
    let v = ok(&bench(&cache, &args).output().unwrap());
    let c10 = &v["cifar10"];
    assert_eq!(c10["metric"], "cifar10valid_test_acc");
    let idx: Vec<usize> = c10["arch_indices"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as usize).collect();
    assert_eq!(idx.len(), 24);
    // params ρ against the table's own columns, recomputed here.
    let (params, acc) = (table_column("params_M"), table_column("cifar10valid_test_acc"));
    let expected = spearman(
        &idx.iter().map(|&i| params[i]).collect::<Vec<_>>(),
        &idx.iter().map(|&i| acc[i]).collect::<Vec<_>>(),
    );
    let got = &c10["proxies"]["params"]["spearman"];
    assert!((got["mean"].as_f64().unwrap() - expected).abs() < 1e-9, "{got} vs {expected}");
    assert_eq!(got["per_seed"].as_array().unwrap().len(), 2);
    assert_eq!(got["sd"].as_f64().unwrap(), 0.0, "params cannot depend on the seed");
    assert_eq!(c10["proxies"]["synflow"]["published_abdelfattah"], 0.737);
    assert!(c10["proxies"]["ensemble(synflow+params)"]["spearman"]["mean"].as_f64().unwrap() > 0.3);
    let c100 = &v["cifar100"];
    assert_eq!(c100["metric"], "cifar100_test_acc");
    assert_eq!(c100["arch_indices"], c10["arch_indices"]);

    // Every score is cached once; a second run computes nothing and prints the same table.
    let lines = cache_lines(&cache);
    let mut seen = HashMap::new();
    for l in &lines {
        *seen.entry((l["key"].to_string(), l["proxy"].to_string(), l["seed"].to_string())).or_insert(0) += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "a score was computed twice");
    assert!(seen.len() <= 24 * 3 * 2 && seen.len() >= 20 * 3 * 2, "{} cached scores", seen.len());
    let again = ok(&bench(&cache, &args).output().unwrap());
    assert_eq!(cache_lines(&cache).len(), lines.len());
    assert_eq!(
        again["cifar10"]["proxies"]["synflow"]["spearman"],
        v["cifar10"]["proxies"]["synflow"]["spearman"]
    );
}

#[test]
fn a_killed_benchmark_resumes_without_scoring_anything_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("scores.jsonl");
    let args = ["--sample", "30", "--seeds", "1", "--proxies", "naswot,params", "--ensemble", "none", "--json"];
    let mut child = bench(&cache, &args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    while cache_lines(&cache).len() < 8 {
        assert!(t.elapsed() < Duration::from_secs(120), "no scores after two minutes");
        assert!(child.try_wait().unwrap().is_none(), "finished before it could be killed");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = cache_lines(&cache).len();
    assert!(before < 60, "killed too late ({before} scores)");
    let resumed = ok(&bench(&cache, &args).output().unwrap());
    let lines = cache_lines(&cache);
    let mut seen = HashMap::new();
    for l in &lines {
        *seen.entry((l["key"].to_string(), l["proxy"].to_string())).or_insert(0) += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "a score was computed twice after the resume");
    // The resumed table equals an uninterrupted run's.
    let fresh = ok(&bench(&dir.path().join("fresh.jsonl"), &args).output().unwrap());
    assert_eq!(
        resumed["cifar10"]["proxies"]["naswot"]["spearman"],
        fresh["cifar10"]["proxies"]["naswot"]["spearman"]
    );
    assert_eq!(
        resumed["cifar10"]["proxies"]["naswot"]["kendall"],
        fresh["cifar10"]["proxies"]["naswot"]["kendall"]
    );
}

#[test]
fn bad_inputs_fail_with_one_line_and_leave_the_cache_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("scores.jsonl");
    let run = |extra: &[&str]| bench(&cache, extra).output().unwrap();
    assert_one_line_error(&run(&["--dataset", "mnist"]), "unknown dataset 'mnist'");
    assert_one_line_error(
        &run(&["--proxies", "synflow,params", "--ensemble", "synflow,naswot"]),
        "ensemble member 'naswot'",
    );
    assert_one_line_error(&run(&["--sample", "5"]), "--sample must be at least 10");
    assert_one_line_error(&run(&["--proxies", "synflow,bogus"]), "unknown proxy `bogus`");
    assert_one_line_error(
        &run(&["--metric", "no_such_column", "--proxies", "params,flops", "--ensemble", "none"]),
        "no column 'no_such_column'",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_autoagent"))
        .args(["bench", "proxies", "--truth", "/nonexistent/nb201.csv"])
        .output()
        .unwrap();
    assert_one_line_error(&o, "no NB201 table at /nonexistent/nb201.csv");
    // A corrupt line in the middle of the cache: refused, and the file is kept as it was.
    let text = "{\"key\":\"k\",\"proxy\":\"params\",\"seed\":0,\"batch\":\"\",\"value\":1.0,\"ms\":0.0}\nnot json\n{\"key\":\"k2\",\"proxy\":\"params\",\"seed\":0,\"batch\":\"\",\"value\":1.0,\"ms\":0.0}\n";
    std::fs::write(&cache, text).unwrap();
    assert_one_line_error(&run(&["--proxies", "params,flops", "--ensemble", "none"]), "corrupt at line 2");
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), text);
}

#[test]
fn scores_on_one_image_folder_are_never_served_for_another() {
    // The fixture, and another folder of real CIFAR-10 records (the fixture's second half).
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("scores.jsonl");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let records = std::fs::read(shared().join("cifar10-mini/data_batch_1.bin")).unwrap();
    std::fs::write(other.join("data_batch_1.bin"), &records[1000 * 3073..]).unwrap();
    std::fs::copy(shared().join("cifar10-mini/test_batch.bin"), other.join("test_batch.bin")).unwrap();
    let args = ["--sample", "10", "--seeds", "1", "--proxies", "naswot,params", "--ensemble", "none", "--json"];
    let on_fixture = ok(&bench(&cache, &args).output().unwrap());
    let first = cache_lines(&cache);
    assert_eq!(first.len(), 20);
    let on_other = ok(&bench_on(&other, &cache, &args).output().unwrap());
    let lines = cache_lines(&cache);
    // naswot is computed again on the other images (under another batch id); params is served.
    let naswot: Vec<&serde_json::Value> = lines.iter().filter(|l| l["proxy"] == "naswot").collect();
    assert_eq!(naswot.len(), 20, "naswot scores of one folder were served for the other");
    assert_eq!(lines.len(), 30);
    assert_ne!(naswot[0]["batch"], naswot[10]["batch"]);
    assert_ne!(
        on_fixture["cifar10"]["proxies"]["naswot"]["spearman"],
        on_other["cifar10"]["proxies"]["naswot"]["spearman"]
    );
}
