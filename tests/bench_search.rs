//! `autoagent bench search` end to end on the real NB201 table (and CIFAR-10 images for the
//! ranked runs): the picked accuracies match the run records and the table, finished runs are
//! reused, and bad inputs are one-line errors.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use common::{assert_one_line_error, shared};

fn bench(dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoagent"));
    c.args(["bench", "search", "--truth"])
        .arg(shared().join("nb201/nb201.csv"))
        .arg("--data-dir")
        .arg(shared().join("cifar10-mini"))
        .arg("--proxy-cache")
        .arg(dir.join("proxy-cache.jsonl"))
        .args(extra)
        .env_remove("AUTOAGENT_DATA")
        .env("RAYON_NUM_THREADS", "2");
    c
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON object on stdout")
}

fn column(name: &str) -> HashMap<String, f64> {
    let mut rdr = csv::Reader::from_path(shared().join("nb201/nb201.csv")).unwrap();
    let h = rdr.headers().unwrap().clone();
    let (a, c) = (h.iter().position(|x| x == "arch_str").unwrap(), h.iter().position(|x| x == name).unwrap());
    rdr.records().map(|r| r.unwrap()).map(|r| (r[a].to_string(), r[c].parse().unwrap())).collect()
}

/// The test accuracy of the best of the first `n` trials of a run record by the table's 12-epoch
/// validation accuracy (the earliest on ties), computed from the table alone.
fn picked(run: &Path, n: usize, valid: &HashMap<String, f64>, test: &HashMap<String, f64>) -> f64 {
    let text = std::fs::read_to_string(run.join("trials.jsonl")).unwrap();
    let archs: Vec<String> = text
        .lines()
        .take(n)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["config"]["cell"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(archs.len(), n);
    let mut best: Option<&String> = None;
    for a in &archs {
        if best.is_none_or(|b| valid[a] > valid[b]) {
            best = Some(a);
        }
    }
    test[best.unwrap()]
}

#[test]
fn plain_search_picks_match_the_table_and_finished_runs_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let args = [
        "--ranking",
        "off",
        "--strategies",
        "random,evolution",
        "--seeds",
        "2",
        "--trials",
        "30",
        "--checkpoints",
        // Issue 15 item 13: a checkpoint past --trials is left out, not an error.
        "5,30,100",
        "--json",
        "--runs",
        runs.to_str().unwrap(),
    ];
    let first = json(&bench(dir.path(), &args).output().unwrap());
    let rows = first["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let (valid, test) = (column("cifar10_valid_acc_12ep"), column("cifar10_test_acc"));
    for row in rows {
        assert_eq!(row["ranked"], false);
        assert_eq!(row["at"].as_array().unwrap().len(), 2, "checkpoint 100 > --trials 30 is left out");
        let strategy = row["strategy"].as_str().unwrap();
        for (ci, n) in [5usize, 30].into_iter().enumerate() {
            let spread = &row["at"][ci];
            assert_eq!(spread[0], n);
            let per_seed = spread[1]["per_seed"].as_array().unwrap();
            for (s, v) in per_seed.iter().enumerate() {
                let expected = picked(&runs.join(format!("{strategy}-plain-s{s}")), n, &valid, &test);
                assert!(
                    (v.as_f64().unwrap() - expected).abs() < 1e-9,
                    "{strategy} seed {s} after {n}: {v} vs {expected}"
                );
            }
            let mean = per_seed.iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / 2.0;
            assert!((spread[1]["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
        }
        let curve: Vec<f64> = row["mean_curve"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(curve.len(), 30);
    }

    // Again with the same options: every run is read back, not repeated.
    let stamp = std::fs::metadata(runs.join("random-plain-s0/trials.jsonl")).unwrap().modified().unwrap();
    let again = json(&bench(dir.path(), &args).output().unwrap());
    assert_eq!(first["rows"], again["rows"]);
    assert_eq!(std::fs::metadata(runs.join("random-plain-s0/trials.jsonl")).unwrap().modified().unwrap(), stamp);

    // Other options on the same records: refused, and the records stay.
    let mut other = args.to_vec();
    other[7] = "40";
    other[9] = "5,40";
    assert_one_line_error(&bench(dir.path(), &other).output().unwrap(), "made with other options");
    assert_eq!(std::fs::metadata(runs.join("random-plain-s0/trials.jsonl")).unwrap().modified().unwrap(), stamp);
}

#[test]
fn ranked_search_scores_candidates_with_the_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let o = bench(
        dir.path(),
        &[
            "--ranking",
            "on",
            "--strategies",
            "random",
            "--seeds",
            "1",
            "--trials",
            "4",
            "--k",
            "4",
            "--checkpoints",
            "2,4",
            "--json",
            "--runs",
            runs.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let r = json(&o);
    assert_eq!(r["rows"][0]["ranked"], true);
    let text = std::fs::read_to_string(runs.join("random-ranked-s0/trials.jsonl")).unwrap();
    let trials: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(trials.len(), 4);
    for t in &trials {
        assert!(t["rank_score"].is_number(), "{t}");
        for p in ["synflow", "naswot", "jacob_cov"] {
            assert!(t["proxies"].get(p).is_some(), "{t}");
        }
    }
    // Each round evaluates its candidates in the ensemble's order.
    for pair in trials.chunks(2) {
        assert!(pair[0]["rank_score"].as_f64().unwrap() >= pair[1]["rank_score"].as_f64().unwrap());
    }
    // Every proxy score went to the cache (8 candidates x 3 proxies, fewer if isomorphic).
    let cached = std::fs::read_to_string(dir.path().join("proxy-cache.jsonl")).unwrap();
    assert!(cached.lines().count() >= 12, "{cached}");
}

/// Issue 16 item 2: `--schedulers` adds the comparison at equal training epochs; ASHA really
/// promotes on the table's 12- and 200-epoch rungs, and no run spends more than its budget.
#[test]
fn schedulers_are_compared_at_equal_training_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--strategies",
        "random",
        "--ranking",
        "off",
        "--trials",
        "10",
        "--seeds",
        "2",
        "--schedulers",
        "none12,asha",
        "--epoch-budget",
        "5",
    ];
    let o = bench(dir.path(), &args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = String::from_utf8(o.stdout).unwrap();
    assert!(md.contains("## Schedulers at equal training cost"), "{md}");
    assert!(md.contains("| random | none12 |") && md.contains("| random | asha |"), "{md}");

    let mut with_json = args.to_vec();
    with_json.push("--json");
    let r = json(&bench(dir.path(), &with_json).output().unwrap());
    let s = &r["schedulers"];
    assert_eq!(s["budget_epochs"], 1000);
    let rows = s["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["scheduler"].as_str().unwrap()).collect::<Vec<_>>(), ["none12", "asha"]);
    for row in rows {
        let runs = row["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        for run in runs {
            let (trials, full, spent) = (
                run["trials"].as_u64().unwrap(),
                run["full_trainings"].as_u64().unwrap(),
                run["epochs_spent"].as_u64().unwrap(),
            );
            // Within the budget, and not far below it (the next job would not fit).
            assert!(spent <= 1000 && spent > 1000 - 200, "{run}");
            match row["scheduler"].as_str().unwrap() {
                "none12" => assert_eq!((trials, full, spent), (83, 0, 996), "{run}"),
                _ => {
                    assert!(full >= 2, "asha promoted: {run}");
                    assert_eq!(spent, 12 * trials + 188 * full, "{run}");
                }
            }
        }
        // After the whole budget every run has an incumbent.
        let last = row["at"].as_array().unwrap().last().unwrap();
        assert_eq!(last[0], 1.0);
        assert_eq!(last[1]["per_seed"].as_array().unwrap().len(), 2);
        // And one that could still be trained on to 200 epochs within it.
        assert_eq!(row["trained"]["per_seed"].as_array().unwrap().len(), 2);
    }
    // none12's incumbent after its whole budget is the run's best 12-epoch cell, as in the
    // main table's pick after 83 evaluations, which uses the same seeds and strategy.
    let none12 = &rows[0]["at"][3][1]["per_seed"];
    let mut more = args.to_vec();
    more[5] = "83";
    more.extend(["--checkpoints", "83", "--json"]);
    let plain = json(&bench(dir.path(), &more).output().unwrap());
    assert_eq!(plain["rows"][0]["at"][0][0], 83);
    assert_eq!(plain["rows"][0]["at"][0][1]["per_seed"], *none12);
}

#[test]
fn bad_inputs_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| bench(dir.path(), extra).output().unwrap();
    assert_one_line_error(&run(&["--strategies", "annealing"]), "unknown strategy 'annealing'");
    assert_one_line_error(&run(&["--checkpoints", "0,10"]), "--checkpoints must be at least 1");
    assert_one_line_error(&run(&["--strategies", "llm"]), "the llm strategy needs an LLM");
    assert_one_line_error(&run(&["--ranking", "sometimes"]), "bad --ranking 'sometimes'");
    assert_one_line_error(&run(&["--dataset", "svhn"]), "unknown NB201 dataset 'svhn'");
    assert_one_line_error(&run(&["--suite", "nb101"]), "unknown suite 'nb101'");
    assert_one_line_error(&run(&["--top-k", "5", "--k", "4"]), "cannot exceed --k");
    assert_one_line_error(&run(&["--schedulers", "pbt"]), "unknown scheduler 'pbt'");
    assert_one_line_error(&run(&["--schedulers", "asha", "--epoch-budget", "0"]), "--epoch-budget must be at least 1");
    let o = Command::new(env!("CARGO_BIN_EXE_autoagent"))
        .args(["bench", "search", "--truth", "/nonexistent/nb201.csv"])
        .output()
        .unwrap();
    assert_one_line_error(&o, "no NB201 table at /nonexistent/nb201.csv");
}
