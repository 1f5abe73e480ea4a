//! End-to-end runs of the `autoagent` binary on the real fixtures in `../shared/data`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BEST: &str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|";
const SMALL: &str = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|none~2|";

fn shared() -> PathBuf {
    match std::env::var_os("AUTOAGENT_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    }
}

fn autoagent(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoagent"));
    c.args(args)
        .env_remove("AUTOAGENT_DATA")
        .env_remove("AUTOAGENT_DATA_MIRROR")
        .env("RAYON_NUM_THREADS", "2");
    c
}

fn run(args: &[&str]) -> Output {
    autoagent(args).output().expect("run autoagent")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed command: exit code 2 and exactly one line on stderr, starting with `error:`.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "expected '{needle}' in: {err}");
    assert!(o.stdout.is_empty());
}

fn cifar_args<'a>(arch: &'a str, data: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["train", "--task", "cifar10", "--arch", arch, "--data-dir", data, "--no-download"];
    v.extend_from_slice(extra);
    v
}

#[test]
fn space_sample_prints_valid_seeded_architectures() {
    let a = run(&["space", "sample", "--space", "nb201", "-n", "25", "--seed", "7"]);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = run(&["space", "sample", "--space", "nb201", "-n", "25", "--seed", "7"]);
    let c = run(&["space", "sample", "--space", "nb201", "-n", "25", "--seed", "8"]);
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(a.stdout, c.stdout);
    let text = String::from_utf8(a.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 25);
    for l in &lines {
        assert!(autoagent_evaluator::nb201::Arch::parse(l).is_ok(), "{l}");
    }
    let u = run(&["space", "sample", "-n", "300", "--seed", "1", "--unique"]);
    let text = String::from_utf8(u.stdout).unwrap();
    let canon: std::collections::HashSet<String> = text.lines().map(|l| autoagent_evaluator::nb201::Arch::parse(l).unwrap().canonical()).collect();
    assert_eq!(canon.len(), 300);
    assert_one_line_error(&run(&["space", "sample", "--space", "darts", "-n", "2"]), "unknown search space 'darts'");
}

#[test]
fn bad_inputs_fail_with_one_line_and_exit_code_2() {
    let data = shared().join("cifar10-mini");
    let data = data.to_str().unwrap();
    assert_one_line_error(
        &run(&["train", "--task", "imagenet", "--arch", BEST, "--data-dir", data]),
        "unknown task 'imagenet'",
    );
    assert_one_line_error(&run(&cifar_args("|nor_conv_3x3~0|+|nor_conv_3x3~0|", data, &[])), "invalid architecture");
    assert_one_line_error(
        &run(&cifar_args("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", data, &[])),
        "unknown operation 'conv_5x5'",
    );
    assert_one_line_error(&run(&cifar_args(BEST, data, &["--epochs", "0"])), "epochs must be at least 1");
    assert_one_line_error(&run(&cifar_args(BEST, data, &["--lr=-1"])), "learning rate must be positive");
    assert_one_line_error(&run(&cifar_args(BEST, data, &["--device", "tpu"])), "unknown device 'tpu'");
    // Without the cuda feature candle refuses CUDA devices; either way it is a clean error.
    let o = run(&cifar_args(BEST, data, &["--device", "cuda:0"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Missing data: an empty data root and no download.
    let empty = tempfile::tempdir().unwrap();
    let o = run(&cifar_args(BEST, empty.path().to_str().unwrap(), &[]));
    assert_one_line_error(&o, "CIFAR-10 not found");
    // Clap's usage errors are one line too (issue 15 item 17): a negative number reaches the
    // check of its value, an unknown flag and a malformed number are named.
    assert_one_line_error(&run(&cifar_args(BEST, data, &["--lr", "-1"])), "learning rate must be positive");
    assert_one_line_error(&run(&cifar_args(BEST, data, &["--momentum", "-0.5"])), "momentum must be in [0, 1)");
    assert_one_line_error(&run(&["train", "--bogus"]), "unexpected argument '--bogus'");
    assert_one_line_error(&run(&cifar_args(BEST, data, &["--epochs", "abc"])), "invalid value 'abc' for '--epochs");
    assert_one_line_error(&run(&cifar_args(BEST, data, &["--select", "best"])), "invalid value 'best' for '--select");
    assert_one_line_error(&run(&["train", "--arch", BEST]), "--task <TASK>");
    // --help and --version still print and succeed.
    let help = run(&["train", "--help"]);
    assert!(
        help.status.success() && String::from_utf8_lossy(&help.stdout).contains("--select"),
        "{}",
        stderr(&help)
    );
    assert!(run(&["--version"]).status.success());
}

#[test]
fn a_download_that_fails_leaves_nothing_behind() {
    // Nothing listens on this port: the download fails at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let root = tempfile::tempdir().unwrap();
    let o = autoagent(&["train", "--task", "mnist", "--arch", SMALL, "--data-dir", root.path().to_str().unwrap()])
        .env("AUTOAGENT_DATA_MIRROR", format!("http://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    assert_one_line_error(&o, "download of http://127.0.0.1");
    let left: Vec<_> = walk(root.path());
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn train_json(out: &Path, seed: &str) -> serde_json::Value {
    let data = shared().join("cifar10-mini");
    let o = run(&cifar_args(
        SMALL,
        data.to_str().unwrap(),
        &[
            "--epochs",
            "2",
            "--channels",
            "8",
            "--cells",
            "1",
            "--batch-size",
            "64",
            "--seed",
            seed,
            "--json",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("epoch   1/2") && err.contains("epoch   2/2"),
        "progress per epoch on stderr: {err}"
    );
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "exactly one JSON object on stdout: {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn train_learns_on_real_cifar10_and_is_reproducible() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let a = train_json(d1.path(), "3");
    for key in ["arch", "params", "flops", "epochs", "train_seconds", "test_acc", "device_seconds"] {
        assert!(a.get(key).is_some(), "missing {key}: {a}");
    }
    assert_eq!(a["arch"], SMALL);
    assert_eq!(a["epochs"], 2);
    assert_eq!(a["task"], "cifar10");
    let acc = a["test_acc"].as_f64().unwrap();
    // 1000 held-back real CIFAR-10 images, 10 balanced classes: chance is 10 %.
    assert!(acc > 20.0, "test accuracy {acc} after 2 epochs");
    let params = a["params"].as_u64().unwrap();
    let cfg = autoagent_evaluator::net::Nb201Config {
        channels: 8,
        cells_per_stage: 1,
        ..autoagent_evaluator::net::Nb201Config::new(autoagent_evaluator::nb201::Arch::parse(SMALL).unwrap())
    };
    assert_eq!(params as usize, cfg.param_count());
    // The kept weights as safetensors, with every variable of the network.
    let weights = d1.path().join("model.safetensors");
    let tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    assert!(tensors.contains_key("classifier.weight") && tensors.contains_key("stem.bn.running_var"));
    let n: usize = tensors.iter().filter(|(k, _)| !k.contains("running")).map(|(_, t)| t.elem_count()).sum();
    assert_eq!(n as u64, params);
    assert!(d1.path().join("train.json").exists());
    // Same seed, same result, bit for bit; another seed differs.
    let b = train_json(d2.path(), "3");
    let (ha, hb) = (a["history"].as_array().unwrap(), b["history"].as_array().unwrap());
    assert_eq!(ha.len(), 2);
    for (x, y) in ha.iter().zip(hb) {
        for key in ["train_loss", "train_acc", "valid_acc", "lr"] {
            assert_eq!(x[key], y[key], "{key} differs between two runs with one seed");
        }
    }
    assert_eq!(std::fs::read(&weights).unwrap(), std::fs::read(d2.path().join("model.safetensors")).unwrap());
}

/// A cell whose first epoch is the better one on validation with seed 0 (`mnist_train`'s
/// network, batch 256, 2 epochs): the kept weights are not the last ones.
const EARLY: &str = "|skip_connect~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|";

fn mnist_train(arch: &str, extra: &[&str], env: &[(&str, &str)]) -> (serde_json::Value, String) {
    let data = shared().join("mnist-mini");
    let mut args = vec![
        "train",
        "--task",
        "mnist",
        "--arch",
        arch,
        "--data-dir",
        data.to_str().unwrap(),
        "--no-download",
    ];
    args.extend_from_slice(&["--channels", "4", "--cells", "1", "--json"]);
    args.extend_from_slice(extra);
    let mut cmd = autoagent(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "exactly one JSON object on stdout: {text}");
    (serde_json::from_str(&text).unwrap(), stderr(&o))
}

fn predict_acc(model: &Path, split: &str) -> f64 {
    let data = shared().join("mnist-mini");
    let o = run(&[
        "predict",
        "--json",
        "--split",
        split,
        "--model",
        model.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["accuracy"].as_f64().unwrap()
}

/// Issue 15 items 2 and 17: `train` keeps the epoch that is best on a validation hold-out (the
/// last 10 % of the training split, not trained on), never on test, and measures the kept
/// weights on test once; `--select last` trains on everything and keeps the last epoch. Its
/// `--out` folder is a model folder `predict` reads, and gives back both accuracies.
#[test]
fn train_selects_on_a_validation_hold_out_and_writes_a_model_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    let (v, err) = mnist_train(
        EARLY,
        &["--epochs", "2", "--seed", "0", "--out", out.to_str().unwrap()],
        &[("AUTOAGENT_PROGRESS_SECS", "0")],
    );
    assert_eq!(
        (&v["train_images"], &v["valid_images"], &v["test_images"]),
        (&1800.into(), &200.into(), &1000.into()),
        "{v}"
    );
    assert_eq!(v["select"], "valid");
    assert_eq!((&v["config"]["channels"], &v["config"]["cells"]), (&4.into(), &1.into()), "{v}");
    let history = v["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    // No per-epoch test number: the test split is not looked at before the end.
    assert!(history.iter().all(|e| e.get("test_acc").is_none() && e["valid_acc"].is_f64()), "{v}");
    let valid: Vec<f64> = history.iter().map(|e| e["valid_acc"].as_f64().unwrap()).collect();
    assert!(valid[0] > valid[1], "the fixture's first epoch is the better one: {valid:?}");
    assert_eq!(v["selected_epoch"], 1, "{v}");
    assert_eq!(v["valid_acc"].as_f64().unwrap(), valid[0]);
    assert!(v.get("best_test_acc").is_none() && v.get("best_epoch").is_none(), "{v}");
    // Progress within an epoch (every AUTOAGENT_PROGRESS_SECS), then per epoch, on stderr only.
    assert!(err.contains("epoch 1/2  batch 1/8  loss "), "{err}");
    assert!(err.contains("epoch   2/2  loss ") && err.contains("valid "), "{err}");
    // The folder: predict reads it and measures the kept weights (epoch 1's, restored after
    // epoch 2) again, on the hold-out and on the test split.
    for f in ["model.json", "model.safetensors", "train.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert_eq!(predict_acc(&out, "valid"), v["valid_acc"].as_f64().unwrap());
    assert_eq!(predict_acc(&out, "test"), v["test_acc"].as_f64().unwrap());
    let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(spec["valid_accuracy"], v["valid_acc"]);
    assert_eq!((&spec["channels"], &spec["cells_per_stage"]), (&4.into(), &1.into()));
    assert_eq!(spec["source"]["epoch"], v["selected_epoch"]);
    // A folder that holds a model already is refused before any training.
    let o = run(&["train", "--task", "mnist", "--arch", SMALL, "--out", out.to_str().unwrap()]);
    assert_one_line_error(&o, "already holds a model");

    // --select last: the whole training split, the last epoch, no validation number.
    let (l, _) = mnist_train(SMALL, &["--epochs", "1", "--batch-size", "64", "--select", "last"], &[]);
    assert_eq!((&l["train_images"], &l["valid_images"]), (&2000.into(), &0.into()), "{l}");
    assert_eq!(
        (&l["select"], &l["selected_epoch"], &l["valid_acc"]),
        (&"last".into(), &1.into(), &serde_json::Value::Null)
    );
    assert!(l["test_acc"].as_f64().unwrap() > 0.0, "{l}");
}

#[test]
fn train_runs_on_grey_28x28_images() {
    for task in ["mnist", "fashion-mnist"] {
        let dir = shared().join(format!("{task}-mini"));
        let o = run(&[
            "train",
            "--task",
            task,
            "--arch",
            SMALL,
            "--data-dir",
            dir.to_str().unwrap(),
            "--no-download",
            "--epochs",
            "2",
            "--channels",
            "8",
            "--cells",
            "1",
            "--batch-size",
            "64",
            "--json",
        ]);
        assert!(o.status.success(), "{task}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["test_acc"].as_f64().unwrap() > 20.0, "{task}: {v}");
    }
}

#[test]
fn proxies_score_prints_one_json_line_per_arch_with_nulls_for_undefined_scores() {
    let data = shared().join("cifar10-mini");
    let data = data.to_str().unwrap();
    let best = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|";
    let dead = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|";
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("archs.txt");
    std::fs::write(&list, format!("{best}\n\n{dead}\n")).unwrap();
    let o = run(&[
        "proxies",
        "score",
        "--archs",
        list.to_str().unwrap(),
        "--proxies",
        "synflow,jacob_cov,params",
        "--batch-size",
        "8",
        "--data-dir",
        data,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["arch"], best);
    assert!(lines[0]["synflow"].as_f64().unwrap() > 1e30);
    assert!(lines[0]["jacob_cov"].as_f64().unwrap() < -8.0);
    assert_eq!(lines[0]["params"].as_f64().unwrap(), 1.073466);
    assert!(lines[0]["ms"]["synflow"].as_f64().unwrap() > 0.0);
    // The dead network's jacob_cov is undefined: null, with a warning, never a made-up number.
    assert!(lines[1]["jacob_cov"].is_null());
    assert!(stderr(&o).contains("jacob_cov of |none~0|"), "{}", stderr(&o));
    // Unknown proxy names are an error, not silently skipped.
    assert_one_line_error(
        &run(&["proxies", "score", "--arch", best, "--proxies", "synflow,bogus", "--data-dir", data]),
        "unknown proxy `bogus`",
    );
}

#[test]
fn proxies_score_in_parallel_equals_one_at_a_time_and_a_cache_file_serves_a_second_run() {
    let data = shared().join("cifar10-mini");
    let data = data.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("scores.jsonl");
    let score = |parallel: &str, cache: Option<&Path>| -> Vec<serde_json::Value> {
        let mut args = vec![
            "proxies",
            "score",
            "--sample",
            "10",
            "--seed",
            "5",
            "--proxies",
            "synflow,naswot,params",
            "--batch-size",
            "8",
            "--data-dir",
            data,
            "--json",
            "--parallel",
            parallel,
        ];
        if let Some(c) = cache {
            args.extend(["--cache", c.to_str().unwrap()]);
        }
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let strip = |rows: &[serde_json::Value]| -> Vec<serde_json::Value> {
        rows.iter()
            .map(|r| {
                let mut r = r.clone();
                let o = r.as_object_mut().unwrap();
                o.remove("ms");
                o.remove("cached");
                r
            })
            .collect()
    };
    let one = score("false", None);
    let par = score("true", None);
    assert_eq!(one.len(), 10);
    assert_eq!(strip(&one), strip(&par), "scores do not depend on scoring side by side");
    assert!(one[0].get("cached").is_none());

    // First run with a cache file: everything computed and appended.
    let first = score("true", Some(&cache));
    assert_eq!(strip(&first), strip(&one));
    assert!(first.iter().all(|r| r["cached"].as_array().unwrap().is_empty()));
    let lines = std::fs::read_to_string(&cache).unwrap().lines().count();
    // At most one line per (cell, proxy); isomorphic cells share synflow's and naswot's.
    assert!((20..=30).contains(&lines), "{lines}");
    // Second run: every score read back, nothing appended, the same values and stored ms.
    let second = score("true", Some(&cache));
    assert_eq!(strip(&second), strip(&one));
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(b["cached"].as_array().unwrap().len(), 3, "{b}");
        assert_eq!(a["ms"], b["ms"]);
    }
    assert_eq!(std::fs::read_to_string(&cache).unwrap().lines().count(), lines);

    // A cache file that cannot be created (its folder is a file): one line naming it, the OS's
    // reason once, exit 2, and the file in the way untouched.
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, "keep me").unwrap();
    let bad = blocker.join("scores.jsonl");
    let o = run(&[
        "proxies",
        "score",
        "--sample",
        "2",
        "--batch-size",
        "8",
        "--data-dir",
        data,
        "--cache",
        bad.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, "score cache");
    assert_eq!(stderr(&o).matches("os error").count(), 1, "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&blocker).unwrap(), "keep me");
}

#[test]
fn import_nats_converts_the_fixture_archive_and_fails_cleanly_without_meta() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("evaluator/tests/fixtures/nats-tss-mini");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nb201.csv");
    let o = run(&["import", "nats", "--from", fixture.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("imported 4 architectures (3 isomorphism classes)"), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 5);
    assert!(rows[0].starts_with("arch_index,arch_str,cifar10_valid_acc,cifar10_test_acc,"), "{}", rows[0]);
    assert!(rows[0].ends_with(",cifar10valid_test_acc,iso_group"), "{}", rows[0]);
    assert!(
        rows[4].starts_with("3,|avg_pool_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|none~1|none~2|,80.25,80.75,"),
        "{}",
        rows[4]
    );
    assert!(rows[4].ends_with(",80.5,1"), "{}", rows[4]);

    // An archive folder without its meta file: one error line naming it, no output.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out2 = dir.path().join("other.csv");
    let o = run(&["import", "nats", "--from", empty.to_str().unwrap(), "--out", out2.to_str().unwrap()]);
    assert_one_line_error(&o, "no meta.pickle.pbz2");
    assert!(!out2.exists());
    assert_eq!(walk(dir.path()).len(), 1, "{:?}", walk(dir.path()));
}
