//! Training trials in child processes (`autoagent trial --spec FILE`): a trial that panics, is
//! killed or overruns its share of the budget becomes a failed (or pruned) trial with its reason
//! and the end of its stderr, and the agent goes on; per-epoch metrics reach the run database;
//! a trial never outlives its agent.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autoagent_agent::store::sqlite::SqliteStore;
use autoagent_agent::store::{Store, TrialRecord, TrialState};
use common::{assert_one_line_error, shared, wait_for};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoagent"));
    c.env_remove("AUTOAGENT_DATA").env_remove("AUTOAGENT_TRIAL_FAULT").env("RAYON_NUM_THREADS", "2");
    c
}

fn mnist_run(out: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    // Every trial trains its --epochs (no scheduler, no final model): these tests are about
    // trials' processes.
    c.args([
        "run",
        "--task",
        "mnist",
        "--no-proxies",
        "--scheduler",
        "none",
        "--final-fraction",
        "0",
        "--seed",
        "5",
        "--data-dir",
    ])
    .arg(shared().join("mnist-mini"))
    .arg("--out")
    .arg(out)
    .args(extra)
    .arg("--json");
    c
}

fn trials(dir: &Path) -> Vec<TrialRecord> {
    SqliteStore::open_read(&dir.join("run.db")).unwrap().trials().unwrap()
}

fn ok(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn trials_run_in_child_processes_and_report_metrics_per_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let s = ok(&mnist_run(&run, &["--budget", "2trials", "--epochs", "2"]).output().unwrap());
    assert_eq!(s["trials"], 2);
    let store = SqliteStore::open_read(&run.join("run.db")).unwrap();
    for r in store.trials().unwrap() {
        assert_eq!(r.trial.state, TrialState::Complete, "{r:?}");
        let acc = r.trial.accuracy.unwrap();
        // Two epochs of metrics; the last validation accuracy is the trial's.
        let m = store.metrics(r.trial.id).unwrap();
        let names: Vec<(usize, &str)> = m.iter().map(|m| (m.epoch, m.name.as_str())).collect();
        assert_eq!(names.len(), 8, "{names:?}");
        let last_valid = m.iter().filter(|m| m.name == "valid_acc").max_by_key(|m| m.epoch).unwrap();
        assert_eq!((last_valid.epoch, last_valid.value), (2, acc));
        assert!(m.iter().any(|m| m.name == "train_loss" && m.value.is_finite() && m.value > 0.0));
        // The spec, the stderr log and the best weights are the trial's artefacts, and all its
        // directory holds (what `agent/src/trial.rs` documents).
        // With the checkpoint of its last rung (2 epochs), which a promotion would continue.
        let dir = format!("trials/{:04}", r.trial.id);
        let mut documented: Vec<String> = autoagent_agent::trial::TRIAL_FILES.map(|f| format!("{dir}/{f}")).to_vec();
        documented.push(format!("{dir}/checkpoint-e2.safetensors"));
        assert_eq!(r.artefacts, documented);
        for a in &r.artefacts {
            assert!(run.join(a).is_file(), "{a}");
        }
        let mut held: Vec<String> = std::fs::read_dir(run.join(&dir))
            .unwrap()
            .map(|e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        held.sort();
        let mut want = documented.clone();
        want.sort();
        assert_eq!(held, want);
        let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join(&r.artefacts[0])).unwrap()).unwrap();
        assert_eq!(spec["config"], serde_json::to_value(&r.trial.config).unwrap());
        assert_eq!(spec["train"]["epochs"], 2);
        assert!(std::fs::read_to_string(run.join(&r.artefacts[1])).unwrap().contains("epoch 2/2"));
        assert_eq!(r.stderr_tail, None, "a complete trial keeps no stderr tail");
    }
}

#[test]
fn a_panicking_trial_is_a_failed_trial_with_its_message_and_the_agent_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let s = ok(&mnist_run(&run, &["--budget", "2trials"])
        .env("AUTOAGENT_TRIAL_FAULT", "panic")
        .output()
        .unwrap());
    assert_eq!(s["trials"], 2);
    assert!(s["best"].is_null());
    for r in trials(&run) {
        assert_eq!(r.trial.state, TrialState::Failed);
        let e = r.trial.error.as_deref().unwrap();
        assert!(e.starts_with("the trial process exited with code 101: "), "{e}");
        assert!(e.contains("injected fault"), "{e}");
        assert!(r.stderr_tail.as_deref().unwrap().contains("panicked"), "{:?}", r.stderr_tail);
    }
}

/// Pids of processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

fn trial_needle(run: &Path) -> String {
    format!("trial --spec {}", run.join("trials").display())
}

#[test]
fn a_trial_killed_by_signal_is_a_failed_trial_and_the_next_one_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let child = mnist_run(&run, &["--budget", "2trials", "--epochs", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let needle = trial_needle(&run);
    let mut pids = Vec::new();
    assert!(wait_for(60, || {
        pids = processes_with(&needle);
        !pids.is_empty()
    }));
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill").arg("-9").arg(pids[0].to_string()).status().unwrap();
    let s = ok(&child.wait_with_output().unwrap());
    assert_eq!(s["trials"], 2);
    let t = trials(&run);
    assert_eq!(t[0].trial.state, TrialState::Failed);
    assert!(t[0].trial.error.as_deref().unwrap().contains("killed (SIGKILL"), "{:?}", t[0].trial.error);
    assert_eq!(t[1].trial.state, TrialState::Complete);
}

#[test]
fn a_trial_over_its_share_of_the_budget_is_stopped_and_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let started = Instant::now();
    let s = ok(&mnist_run(&run, &["--budget", "2trials", "--epochs", "50", "--trial-timeout", "2"])
        .output()
        .unwrap());
    // Two trials of 50 epochs would take minutes; each is stopped after 2 s.
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(s["trials"], 2);
    for r in trials(&run) {
        assert_eq!(r.trial.state, TrialState::Pruned);
        assert!(r.trial.accuracy.is_none());
        assert!(
            r.trial.error.as_deref().unwrap().contains("the trial reached --trial-timeout (2.0 s)"),
            "{:?}",
            r.trial.error
        );
        assert!(r.trial.seconds >= 2.0 && r.trial.seconds < 10.0, "{}", r.trial.seconds);
    }
    // No trial process is left behind.
    assert!(wait_for(10, || processes_with(&trial_needle(&run)).is_empty()));
    assert_one_line_error(&mnist_run(&tmp.path().join("r2"), &["--trial-timeout=-1"]).output().unwrap(), "--trial-timeout");
}

#[test]
fn a_trial_dies_with_its_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut agent = mnist_run(&run, &["--budget", "2trials", "--epochs", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let needle = trial_needle(&run);
    assert!(wait_for(60, || !processes_with(&needle).is_empty()));
    agent.kill().unwrap(); // SIGKILL: the agent cannot clean up
    agent.wait().unwrap();
    assert!(wait_for(10, || processes_with(&needle).is_empty()), "the trial outlived its agent");
}

fn spec_file(dir: &Path, body: serde_json::Value) -> PathBuf {
    let p = dir.join("spec.json");
    std::fs::write(&p, body.to_string()).unwrap();
    p
}

#[test]
fn the_trial_command_reads_a_spec_and_prints_its_events() {
    let tmp = tempfile::tempdir().unwrap();
    let arch = "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|none~0|skip_connect~1|avg_pool_3x3~2|";
    let spec = spec_file(
        tmp.path(),
        serde_json::json!({
            "version": 2, "trial": 4, "task": "mnist", "config": {"cell": arch, "width": 8, "depth": 1, "label_smoothing": 0.1},
            "data_dir": shared().join("mnist-mini"), "train": {"epochs": 1, "seed": 2, "batch_size": 128},
            "out": tmp.path().join("out"),
        }),
    );
    let o = bin().args(["trial", "--spec"]).arg(&spec).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l.strip_prefix("@autoagent-trial ").expect("every stdout line is an event")).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["started", "epoch", "finished"]);
    assert_eq!(events[2]["accuracy"], events[1]["valid_acc"]);
    assert!(tmp.path().join("out/weights.safetensors").is_file());

    // Bad specs: one line, exit 2.
    let bad = |body: serde_json::Value, needle: &str| {
        let p = spec_file(tmp.path(), body);
        assert_one_line_error(&bin().args(["trial", "--spec"]).arg(&p).output().unwrap(), needle);
    };
    bad(
        serde_json::json!({"version": 1, "task": "mnist", "arch": arch}),
        "spec version 1 is not supported",
    );
    bad(
        serde_json::json!({"version": 2, "task": "mnist", "config": {"cell": arch}, "epochs": 3}),
        "unknown field `epochs`",
    );
    bad(
        serde_json::json!({"version": 2, "task": "imagenet", "config": {"cell": arch}}),
        "unknown task 'imagenet'",
    );
    bad(
        serde_json::json!({"version": 2, "task": "mnist", "config": {"cell": "|conv~0|"}}),
        "bad config in the spec: parameter 'cell'",
    );
    bad(
        serde_json::json!({"version": 2, "task": "mnist", "config": {"cell": arch, "width": 12}}),
        "width",
    );
    bad(
        serde_json::json!({"version": 2, "task": "mnist", "config": {"cell": arch, "colour": "red"}}),
        "unknown parameter 'colour'",
    );
    bad(
        serde_json::json!({"version": 2, "task": "mnist", "config": {"cell": arch}, "data_dir": tmp.path().join("nowhere")}),
        "mnist",
    );
    assert_one_line_error(
        &bin().args(["trial", "--spec"]).arg(tmp.path().join("none.json")).output().unwrap(),
        "cannot read the trial spec",
    );
}

#[test]
fn a_flooding_trial_keeps_a_bounded_log_with_its_last_words_and_the_run_log_rotates() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let s = ok(&mnist_run(&run, &["--budget", "1trials", "--log-cap-mb", "0.0005"])
        .env("AUTOAGENT_TRIAL_FAULT", "flood")
        .output()
        .unwrap());
    assert_eq!(s["trials"], 1);
    let t = &trials(&run)[0];
    assert_eq!(t.trial.state, TrialState::Failed);
    assert!(
        t.trial.error.as_deref().unwrap().contains("injected fault after a flood"),
        "{:?}",
        t.trial.error
    );
    // 8 MiB written; the log keeps its first MiB, a marker and the last words.
    let log = std::fs::read_to_string(run.join("trials/0000/stderr.log")).unwrap();
    assert!(log.len() < (1 << 20) + 8000, "{}", log.len());
    assert!(log.contains("bytes left out"));
    assert!(log.contains("panicked"));
    // The run's own log: JSON records, rotated past its cap (524 bytes here).
    let cur = std::fs::read_to_string(run.join("run.log")).unwrap();
    let old = std::fs::read_to_string(run.join("run.log.1")).unwrap();
    assert!(cur.len() <= 524 && old.len() <= 524, "{} {}", cur.len(), old.len());
    for l in old.lines().chain(cur.lines()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
    }
    assert!(cur.contains("\"message\":\"run ended\""), "{cur}");
}
