//! The images the proxies rank with on NB201 table tasks: the task's own dataset when it is at
//! hand, else CIFAR-10 with one warning, recorded in the run's config.json.

#[allow(dead_code)] // assert_one_line_error is not used here
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::shared;

/// A 2-trial `run` of `task` ranked by `params` with images from `data`, into `dir/run`.
fn run(dir: &Path, task: &str, data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoagent"))
        .args(["run", "--task", task, "--budget", "2trials", "--strategy", "random", "--k", "2", "--top-k", "1"])
        .args(["--proxies", "params", "--json", "--no-download", "--truth"])
        .arg(shared().join("nb201/nb201.csv"))
        .arg("--data-dir")
        .arg(data)
        .arg("--proxy-cache")
        .arg(dir.join("cache.jsonl"))
        .arg("--out")
        .arg(dir.join("run"))
        .env_remove("AUTOAGENT_DATA")
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap()
}

fn warnings(o: &Output) -> Vec<String> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .map(String::from)
        .collect()
}

fn recorded_args(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("run/config.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["args"].clone()
}

#[test]
fn imagenet16_and_a_missing_cifar100_rank_with_cifar10_images_and_say_so_once() {
    let cifar10 = shared().join("cifar10-mini");
    for (task, name) in [("nb201:imagenet16", "ImageNet16-120"), ("nb201:cifar100", "CIFAR-100")] {
        let dir = tempfile::tempdir().unwrap();
        let w = warnings(&run(dir.path(), task, &cifar10));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains(name) && w[0].contains("CIFAR-10 images"), "{}", w[0]);
        let args = recorded_args(dir.path());
        assert_eq!(args["images"], "cifar10");
        assert!(args["images_substituted"].as_str().unwrap().contains(name), "{args}");
    }
    // nb201:cifar10 uses its own images, without a word.
    let dir = tempfile::tempdir().unwrap();
    assert!(warnings(&run(dir.path(), "nb201:cifar10", &cifar10)).is_empty());
    let args = recorded_args(dir.path());
    assert_eq!(args["images"], "cifar10");
    assert!(args.get("images_substituted").is_none());
}

#[test]
fn nb201_cifar100_ranks_with_cifar100_images_where_they_are() {
    // A CIFAR-100 folder (binary format: coarse label, fine label, 3,072 pixels) made of real
    // CIFAR-10 fixture images; its labels are the CIFAR-10 ones spread over 0-99.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar100");
    std::fs::create_dir_all(&data).unwrap();
    let records = std::fs::read(shared().join("cifar10-mini/data_batch_1.bin")).unwrap();
    let cifar100: Vec<u8> = records
        .chunks(3073)
        .take(150)
        .enumerate()
        .flat_map(|(i, r)| [vec![0, r[0] * 10 + (i % 10) as u8], r[1..].to_vec()].concat())
        .collect();
    std::fs::write(data.join("train.bin"), &cifar100[..100 * 3074]).unwrap();
    std::fs::write(data.join("test.bin"), &cifar100[100 * 3074..]).unwrap();
    let w = warnings(&run(dir.path(), "nb201:cifar100", &data));
    assert!(w.is_empty(), "{w:?}");
    let args = recorded_args(dir.path());
    assert_eq!(args["images"], "cifar100");
    assert!(args.get("images_substituted").is_none());
    // The networks ranked have CIFAR-100's 100 classes: their cached keys say so.
    let cache = std::fs::read_to_string(dir.path().join("cache.jsonl")).unwrap();
    assert!(cache.lines().all(|l| l.contains("K100")), "{cache}");
}
