//! The proxy ranker's batch: its cache id identifies the images (another folder of CIFAR-10
//! records never reuses the scores of the fixture's), and on training tasks it is drawn from the
//! search-training part of the split only, never from the validation hold-out.

use std::path::{Path, PathBuf};

use autoagent_agent::ranker::{Ranker, RankerConfig};
use autoagent_evaluator::data::DatasetKind;
use autoagent_evaluator::nb201::Arch;

const RECORD: usize = 3073;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cifar10-mini")
}

/// A CIFAR-10 folder in `dir` holding the given training records (label byte then pixels).
fn cifar_folder(dir: &Path, records: &[Vec<u8>]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("data_batch_1.bin"), records.concat()).unwrap();
    std::fs::copy(fixture().join("test_batch.bin"), dir.join("test_batch.bin")).unwrap();
    dir.to_path_buf()
}

fn fixture_records() -> Vec<Vec<u8>> {
    std::fs::read(fixture().join("data_batch_1.bin"))
        .unwrap()
        .chunks(RECORD)
        .map(<[u8]>::to_vec)
        .collect()
}

fn ranker(data_root: &Path, cache: &Path, search_split: bool, batch_size: usize) -> Ranker {
    Ranker::build(&RankerConfig {
        proxies: "naswot,synflow",
        images: DatasetKind::Cifar10,
        data_root,
        download: false,
        search_split,
        batch_size,
        seed: 0,
        cache: Some(cache.to_path_buf()),
        device: &candle_core::Device::Cpu,
        parallel: false,
    })
    .unwrap()
}

fn cache_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_batch_id_identifies_the_images_and_no_folder_is_served_anothers_scores() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("scores.jsonl");
    // Another folder of real CIFAR-10 records: the fixture's second half.
    let other = cifar_folder(&dir.path().join("other"), &fixture_records()[1000..]);
    let archs = [autoagent_agent::task::cell_config(
        Arch::parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|").unwrap(),
    )];
    let mut a = ranker(&fixture(), &cache, false, 16);
    let b = ranker(&other, &cache, false, 16);
    assert_ne!(a.batch_id(), b.batch_id(), "two folders of images, one id");
    assert_eq!(
        a.batch_id(),
        ranker(&fixture(), &cache, false, 16).batch_id(),
        "the same images must keep their id"
    );
    assert!(a.batch_id().starts_with("cifar10:b16:s0:"), "{}", a.batch_id());
    let (on_a, seconds) = a.score(&archs).unwrap();
    assert!(seconds > 0.0);
    assert_eq!(cache_lines(&cache).len(), 2);
    // The other folder's ranker, on the same cache file reopened: naswot (which sees the
    // images) is computed again on its own images; synflow (data-free) is served.
    let mut b = ranker(&other, &cache, false, 16);
    let (on_b, _) = b.score(&archs).unwrap();
    let lines = cache_lines(&cache);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[2]["proxy"], "naswot");
    assert_eq!(lines[2]["batch"], b.batch_id());
    assert_ne!(on_a[0].proxies["naswot"], on_b[0].proxies["naswot"]);
    // Served from the file (within an ulp: floats do not yet round-trip exactly through it).
    let (sa, sb) = (on_a[0].proxies["synflow"].unwrap(), on_b[0].proxies["synflow"].unwrap());
    assert!((sa - sb).abs() <= 1e-12 * sa.abs(), "{sa} vs {sb}");
}

#[test]
fn on_training_tasks_the_batch_never_holds_a_hold_out_image() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("scores.jsonl");
    // 200 real records: the last 20 (the hold-out, the last 10 %) relabelled 9, the others 0-8,
    // so a batch's labels tell where its images came from.
    let mut records: Vec<Vec<u8>> = fixture_records().into_iter().take(200).collect();
    for (i, r) in records.iter_mut().enumerate() {
        r[0] = if i >= 180 { 9 } else { r[0] % 9 };
    }
    let root = cifar_folder(&dir.path().join("labelled"), &records);
    let labels = |r: &Ranker| r.batch().labels.to_vec1::<u32>().unwrap();
    // The whole search-training part: not one hold-out image.
    let search = ranker(&root, &cache, true, 180);
    assert!(labels(&search).iter().all(|&l| l != 9), "{:?}", labels(&search));
    // One more image than the search-training part holds: refused, not taken from the hold-out.
    let too_many = Ranker::build(&RankerConfig {
        proxies: "naswot",
        images: DatasetKind::Cifar10,
        data_root: &root,
        download: false,
        search_split: true,
        batch_size: 181,
        seed: 0,
        cache: Some(cache.clone()),
        device: &candle_core::Device::Cpu,
        parallel: false,
    });
    assert!(too_many.is_err());
    // What the batch was before (the whole training split): hold-out images and their labels.
    let whole = ranker(&root, &cache, false, 180);
    assert!(labels(&whole).contains(&9));
}
