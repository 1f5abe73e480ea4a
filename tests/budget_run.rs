//! Time budgets on training tasks (issue 16): a budget trains, promotes, retrains the best and
//! exports it, within the budget; the literal `--budget 50gpuh` plans and trains. These runs
//! measure time, so they run one at a time in this binary (apart from other tests' load).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

use common::shared;

/// Held by each test: one timed run at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn summary(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON object on stdout")
}

/// `autoagent run` of a training task on the fixture `data` with a time budget.
fn training_run(dir: &Path, data: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoagent"));
    c.args(["run", "--no-download", "--data-dir"])
        .arg(shared().join(data))
        .arg("--proxy-cache")
        .arg(dir.join("proxy-cache.jsonl"))
        .arg("--out")
        .arg(dir.join("run"))
        .args(extra)
        .env_remove("AUTOAGENT_DATA")
        .env("RAYON_NUM_THREADS", "2");
    c
}

#[test]
fn a_time_budget_trains_promotes_retrains_the_best_and_exports_it_within_the_budget() {
    // Issue 16 items 1, 2, 4: ASHA over 1, 3, 9 epochs, a quarter of the budget held back for
    // the final model; the budget is used (at least 90 %) and not overrun by more than 5 %.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Small networks (any cell and recipe), so that a 3-minute budget holds enough trials to
    // promote some.
    let args = [
        "--task",
        "mnist",
        "--budget",
        "180s",
        "--max-epochs",
        "9",
        "--k",
        "6",
        "--space",
        "width=8,16; depth=1:3",
        "--json",
    ];
    let s = summary(&training_run(dir.path(), "mnist-mini", &args).output().unwrap());
    let used = s["budget_used"].as_f64().unwrap();
    assert!(used >= 0.9 && s["overrun_seconds"].as_f64().unwrap() <= 0.05 * 180.0, "{s}");
    let db = autoagent_agent::store::sqlite::SqliteStore::open_read(&dir.path().join("run/run.db")).unwrap();
    let trials = autoagent_agent::store::Store::trials(&db).unwrap();
    assert!(trials.len() >= 3, "{s}");
    assert!(
        trials.iter().any(|r| r.trial.rungs.len() >= 2 && r.trial.rungs[1].epochs == 3),
        "a trial was promoted to 3 epochs: {s}"
    );
    let plan: serde_json::Value = serde_json::from_str(&autoagent_agent::store::Store::meta(&db, "plan").unwrap().unwrap()).unwrap();
    assert_eq!(plan["rungs"], serde_json::json!([1, 3, 9]));
    // The final model: the best configuration retrained on train + valid, measured on test.
    let f = &s["final_model"];
    assert_eq!(f["state"], "complete", "{s}");
    assert_eq!(f["trial"], s["best"]["id"]);
    assert!(f["epochs"].as_u64().unwrap() >= s["best"]["epochs"].as_u64().unwrap(), "{s}");
    // (The fixture's 1,800 images make 7 steps an epoch: the accuracy itself says little here.)
    let test = f["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&test), "{s}");
    // `export --best` gives that model, and `predict` measures the same accuracy with it.
    let model = dir.path().join("model");
    let o = Command::new(env!("CARGO_BIN_EXE_autoagent"))
        .arg("export")
        .arg(dir.path().join("run"))
        .arg("--best")
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("exported the final model"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_autoagent"))
        .args(["predict", "--split", "test", "--json", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p["accuracy"].as_f64().unwrap(), test);
    // And the report names it.
    let o = Command::new(env!("CARGO_BIN_EXE_autoagent"))
        .arg("report")
        .arg(dir.path().join("run"))
        .args(["--format", "json", "--out"])
        .arg(dir.path().join("report"))
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["final_model"]["test_accuracy"].as_f64(), Some(test));
}

#[test]
fn the_literal_50gpuh_budget_plans_and_starts_training() {
    // Issue 16 item 1: `run --task cifar10 --budget 50gpuh` trained nothing. The run prints and
    // records its plan, then trains; it is killed once its first trial has finished.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut child = training_run(dir.path(), "cifar10-mini", &["--task", "cifar10", "--budget", "50gpuh"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let db = dir.path().join("run/run.db");
    let finished = || {
        autoagent_agent::store::sqlite::SqliteStore::open_read(&db)
            .ok()
            .and_then(|s| autoagent_agent::store::Store::trials(&s).ok())
            .is_some_and(|t| t.iter().any(|r| r.trial.state == autoagent_agent::history::TrialState::Complete))
    };
    let trained = common::wait_for(600, finished);
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(trained, "no trial finished: {err}");
    assert!(err.contains("plan: scheduler asha over rungs of 1, 3, 9, 27 epochs (eta 3)"), "{err}");
    let s = autoagent_agent::store::sqlite::SqliteStore::open_read(&db).unwrap();
    let plan: serde_json::Value = serde_json::from_str(&autoagent_agent::store::Store::meta(&s, "plan").unwrap().unwrap()).unwrap();
    assert_eq!((plan["scheduler"].as_str(), plan["budget"].as_str()), (Some("asha"), Some("50gpuh")));
}
