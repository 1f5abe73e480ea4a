//! `autoagent run --task csv:PATH --target COL` (issue 17): a table of the user's, searched over
//! the pipeline space under a time budget, ending with an ensemble measured on the test rows; and
//! every bad input a one-line error with exit 2.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{assert_one_line_error, autoagent_in, shared};

fn autoagent(dir: &Path, args: &[&str]) -> Output {
    autoagent_in(dir, args)
}

fn tabular(name: &str) -> String {
    shared().join("tabular").join(name).display().to_string()
}

#[test]
fn a_csv_task_searches_pipelines_and_ends_with_an_ensemble_measured_on_the_test_rows() {
    let dir = tempfile::tempdir().unwrap();
    let task = format!("csv:{}", tabular("credit_g.csv"));
    let split = tabular("splits/credit_g_seed0.json");
    let out = dir.path().join("run");
    let o = autoagent(
        dir.path(),
        &[
            "run",
            "--task",
            &task,
            "--target",
            "target",
            "--split",
            &split,
            "--budget",
            "20s",
            "--threads",
            "1",
            "--strategy",
            "random",
            "--seed",
            "1",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(s["trials"].as_u64().unwrap() >= 5, "{s}");
    // Within the budget and its 5 % allowance.
    assert!(s["budget_used"].as_f64().unwrap() <= 1.05, "{s}");
    let f = &s["final_model"];
    assert_eq!(f["state"], "complete", "{s}");
    // The test ROC-AUC of the ensemble, on rows the search never saw (peers: 0.78-0.80).
    let test = f["test_accuracy"].as_f64().unwrap();
    assert!(test > 0.70 && test <= 1.0, "{test}");
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("final/ensemble.json")).unwrap()).unwrap();
    let weights: f64 = e["members"].as_array().unwrap().iter().map(|m| m["weight"].as_f64().unwrap()).sum();
    assert!((weights - 1.0).abs() < 1e-9);
    assert_eq!(e["schema"]["target"]["classes"], serde_json::json!(["1", "2"]));
    // The best single pipeline is kept beside the blend.
    assert!(e["members"].as_array().unwrap().iter().any(|m| m["trial"] == e["best"]), "{e}");
    // Every trial left its out-of-fold predictions for the ensemble.
    assert!(out.join("trials/0000/oof.json").is_file());
    exported_ensemble_predicts_new_rows_as_the_run_measured_them(dir.path(), &out, test);
}

/// The test rows of credit_g's seed-0 split as a file of their own, with a column the model
/// does not know, and a row whose category training never saw.
fn test_rows_file(dir: &Path) -> std::path::PathBuf {
    let split: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tabular("splits/credit_g_seed0.json")).unwrap()).unwrap();
    let text = std::fs::read_to_string(tabular("credit_g.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = format!("{},note\n", lines[0]);
    for r in split["test"].as_array().unwrap() {
        out.push_str(&format!("{},x\n", lines[r.as_u64().unwrap() as usize + 1]));
    }
    let path = dir.join("new-rows.csv");
    std::fs::write(&path, out).unwrap();
    path
}

/// `export --best` writes the final ensemble, `predict --csv` gives the run's test score on the
/// same rows, and a file without one of the model's columns is a one-line error.
fn exported_ensemble_predicts_new_rows_as_the_run_measured_them(dir: &Path, run: &Path, test: f64) {
    let model = dir.join("model");
    let o = autoagent(dir, &["export", run.to_str().unwrap(), "--best", "--out", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("exported the final ensemble"));
    let rows = test_rows_file(dir);
    let preds = dir.join("preds.csv");
    let o = autoagent(
        dir,
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--csv",
            rows.to_str().unwrap(),
            "--out",
            preds.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("ignored: note"), "{err}");
    assert!(err.contains(&format!("roc_auc {test:.4} on the 200 row(s)")), "{err} (run: {test})");
    let text = std::fs::read_to_string(&preds).unwrap();
    assert_eq!(text.lines().next(), Some("row,prediction,p_1,p_2"));
    assert_eq!(text.lines().count(), 201);
    // A category training never saw, and rows without the target: predicted all the same.
    let text = std::fs::read_to_string(&rows).unwrap();
    let header = text.lines().next().unwrap();
    let purpose = header.split(',').position(|c| c == "purpose").unwrap();
    let target = header.split(',').position(|c| c == "target").unwrap();
    let mut odd = format!("{header}\n");
    for line in text.lines().skip(1).take(3) {
        let mut f: Vec<&str> = line.split(',').collect();
        f[purpose] = "time travel";
        f[target] = "";
        odd.push_str(&(f.join(",") + "\n"));
    }
    let odd_path = dir.join("odd.csv");
    std::fs::write(&odd_path, odd).unwrap();
    let o = autoagent(dir, &["predict", "--model", model.to_str().unwrap(), "--csv", odd_path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 4);
    // A column the model was trained on is missing.
    let drop_purpose = |l: &str| {
        let kept: Vec<&str> = l.split(',').enumerate().filter(|&(i, _)| i != purpose).map(|(_, v)| v).collect();
        kept.join(",") + "\n"
    };
    let without: String = text.lines().map(drop_purpose).collect();
    let without_path = dir.join("without.csv");
    std::fs::write(&without_path, without).unwrap();
    let o = autoagent(dir, &["predict", "--model", model.to_str().unwrap(), "--csv", without_path.to_str().unwrap()]);
    assert_one_line_error(&o, "has no column 'purpose', which the model was trained on");
    assert_one_line_error(
        &autoagent(dir, &["predict", "--model", dir.to_str().unwrap(), "--csv", rows.to_str().unwrap()]),
        "holds no tabular model",
    );
}

#[test]
fn bad_tables_and_options_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        format!("csv:{}", p.display())
    };
    let run = |task: &str, extra: &[&str]| {
        let mut args = vec!["run", "--task", task, "--budget", "5s", "--threads", "1"];
        args.extend_from_slice(extra);
        autoagent(dir.path(), &args)
    };
    let good = format!("csv:{}", tabular("diabetes_pima.csv"));
    assert_one_line_error(&run(&good, &[]), "a csv task needs --target COLUMN");
    assert_one_line_error(&run(&good, &["--target", "targte"]), "no column 'targte' in the data (did you mean 'target'?)");
    let ragged = write("ragged.csv", b"a,b,t\n1,2,x\n3,y\n");
    assert_one_line_error(&run(&ragged, &["--target", "t"]), "line 3 has 2 fields, the header has 3");
    let latin = write("latin.csv", b"a,t\n1,caf\xe9\n2,x\n");
    assert_one_line_error(&run(&latin, &["--target", "t"]), "line 2 is not UTF-8");
    assert_one_line_error(&run(&write("empty.csv", b""), &["--target", "t"]), "the file is empty");
    assert_one_line_error(&run(&write("header.csv", b"a,t\n"), &["--target", "t"]), "no data rows");
    assert_one_line_error(&run(&write("dup.csv", b"a,a,t\n1,2,3\n"), &["--target", "t"]), "'a' appears twice");
    let constant = write("constant.csv", b"a,t\n1,k\n2,k\n3,k\n");
    assert_one_line_error(&run(&constant, &["--target", "t"]), "every row has the value 'k'");
    let lonely = write("lonely.csv", b"a,t\n5,x\n3,x\n8,x\n1,y\n9,x\n2,y\n7,z\n");
    assert_one_line_error(&run(&lonely, &["--target", "t"]), "class 'z' has one row");
    let missing = write("missing.csv", b"a,b,t\n1,,x\n2,,y\n3,,x\n4,,y\n");
    let o = run(&missing, &["--target", "t", "--problem", "regression"]);
    assert_one_line_error(&o, "a regression needs numbers, and 'x' is not one");
    assert_one_line_error(
        &run(&good, &["--target", "target", "--metric", "rmse"]),
        "--metric rmse does not apply to a binary problem",
    );
    assert_one_line_error(&run(&good, &["--target", "target", "--metric", "f1"]), "unknown metric 'f1'");
    assert_one_line_error(
        &run(&good, &["--target", "target", "--cv", "1"]),
        "--cv 1: cross-validation needs at least 2 folds",
    );
    let split = tabular("splits/diabetes_pima_seed0.json");
    assert_one_line_error(
        &run(&good, &["--target", "target", "--split", &split, "--test", "x.csv"]),
        "give --split or --test, not both",
    );
    let bad_split = dir.path().join("split.json");
    std::fs::write(&bad_split, r#"{"train": [0, 1], "test": [1]}"#).unwrap();
    assert_one_line_error(
        &run(&good, &["--target", "target", "--split", bad_split.to_str().unwrap()]),
        "row 1 is in both train and test",
    );
    assert_one_line_error(&run("csv:/nonexistent.csv", &["--target", "t"]), "/nonexistent.csv");
}

/// What a csv run decided: each trial's id, configuration and score, and the final model's
/// test score and ensemble.
fn decided(dir: &Path) -> (Vec<String>, serde_json::Value, serde_json::Value) {
    let trials = std::fs::read_to_string(dir.join("trials.jsonl")).unwrap();
    let mut lines: Vec<String> = trials
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {} {}", v["id"], v["config"], v["accuracy"])
        })
        .collect();
    lines.sort();
    lines.dedup();
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("final/ensemble.json")).unwrap()).unwrap();
    let weights: Vec<f64> = e["members"].as_array().unwrap().iter().map(|m| m["weight"].as_f64().unwrap()).collect();
    (lines, summary["final_model"]["test_accuracy"].clone(), serde_json::json!(weights))
}

#[test]
fn a_csv_run_killed_at_random_moments_resumes_to_what_a_clean_run_gives() {
    use rand::{Rng, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let task = format!("csv:{}", tabular("diabetes_pima.csv"));
    let split = tabular("splits/diabetes_pima_seed0.json");
    let args = |out: &Path| -> Vec<String> {
        [
            "run",
            "--task",
            &task,
            "--target",
            "target",
            "--split",
            &split,
            "--budget",
            "40trials",
            "--threads",
            "1",
            "--seed",
            "3",
            "--json",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect()
    };
    let clean = tmp.path().join("clean");
    let o = autoagent(tmp.path(), &args(&clean).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = decided(&clean);
    assert!(want.0.len() >= 40, "{}", want.0.len());

    let run = tmp.path().join("killed");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let mut kills = 0;
    for start in 0..40 {
        let mut c = Command::new(env!("CARGO_BIN_EXE_autoagent"));
        c.current_dir(tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        match start {
            0 => c.args(args(&run)),
            _ => c.arg("resume").arg(&run).arg("--json"),
        };
        let mut child = c.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(300..1500)));
        let alive = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let _ = child.wait();
        if !alive {
            break;
        }
        kills += 1;
        if kills == 5 {
            break;
        }
    }
    assert!(kills >= 1, "the run finished before any kill");
    let o = autoagent(tmp.path(), &["resume", run.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(decided(&run), want, "after {kills} kills");
}

/// `--scheduler asha` on a table: trials start on a ninth of each fold's training rows, the best
/// go on to a third and to all of them, and only the validations in full join the ensemble;
/// the round's MLPs carry the proxy score that ranked them.
#[test]
fn a_csv_task_with_a_scheduler_promotes_from_row_subsamples_and_ranks_its_mlps_by_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let task = format!("csv:{}", tabular("diabetes_pima.csv"));
    let split = tabular("splits/diabetes_pima_seed0.json");
    let out = dir.path().join("run");
    let o = autoagent(
        dir.path(),
        &[
            "run",
            "--task",
            &task,
            "--target",
            "target",
            "--split",
            &split,
            "--budget",
            "24trials",
            "--scheduler",
            "asha",
            "--threads",
            "1",
            "--strategy",
            "random",
            "--seed",
            "2",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out.join("trials.jsonl")).unwrap();
    // A line a rung: each trial's last line is where it ended.
    let mut last = std::collections::BTreeMap::new();
    for l in text.lines() {
        let t: serde_json::Value = serde_json::from_str(l).unwrap();
        last.insert(t["id"].as_u64().unwrap(), t);
    }
    let trials: Vec<serde_json::Value> = last.into_values().collect();
    let rungs = |t: &serde_json::Value| -> Vec<u64> { t["rungs"].as_array().unwrap().iter().map(|r| r["epochs"].as_u64().unwrap()).collect() };
    assert!(trials.iter().any(|t| rungs(t).first() == Some(&1)), "new trials start at rung 1");
    let full: Vec<u64> = trials
        .iter()
        .filter(|t| rungs(t).last() == Some(&9))
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert!(trials.iter().any(|t| rungs(t) == [1, 3, 9] || rungs(t) == [1, 3]), "a promotion");
    // A trial at a lower rung left no out-of-fold file; the ensemble's members are full ones.
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("final/ensemble.json")).unwrap()).unwrap();
    for m in e["members"].as_array().unwrap() {
        assert!(full.contains(&m["trial"].as_u64().unwrap()), "member {} was not validated in full", m["trial"]);
    }
    for t in trials.iter().filter(|t| rungs(t).last() != Some(&9)) {
        assert!(!out.join(format!("trials/{:04}/oof.json", t["id"].as_u64().unwrap())).exists());
    }
    // The MLPs of ranked rounds were scored by the table's proxy (jacob_cov).
    let mlps: Vec<&serde_json::Value> = trials.iter().filter(|t| t["config"]["model"] == "mlp").collect();
    assert!(!mlps.is_empty());
    assert!(mlps.iter().any(|t| t["proxies"]["jacob_cov"].is_number()), "{mlps:?}");
}
