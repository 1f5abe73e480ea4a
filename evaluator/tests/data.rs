//! Tests of the datasets layer on the real fixtures in shared/data (official formats, cut down)
//! and on small files written here, plus the downloader against local HTTP servers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use autoagent_evaluator::data::{data_root, fetch, load, locate, open, sources, Checksum, DataError, Dataset, DatasetKind, Source, SourceFormat};
use flate2::write::GzEncoder;
use flate2::Compression;
use md5::{Digest, Md5};

// ---------------------------------------------------------------------------------------------
// helpers

/// The shared data folder: `AUTOAGENT_SHARED`, else `<workspace>/../shared/data`.
fn shared() -> PathBuf {
    let dir = std::env::var_os("AUTOAGENT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    assert!(
        dir.join("cifar10-mini/data_batch_1.bin").is_file(),
        "shared fixtures not found at {} (set AUTOAGENT_SHARED)",
        dir.display()
    );
    dir
}

fn fixture(name: &str) -> PathBuf {
    shared().join(name)
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

fn class_counts(labels: &[u32], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for &l in labels {
        counts[l as usize] += 1;
    }
    counts
}

/// Entries of a directory (empty if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Environment variables are process-global and tests run in threads: every test that reads or
/// writes one of ours holds this lock.
fn env_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// An IDX file: magic, dims, data.
fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Writes an MNIST-style folder with gzipped IDX files of `n_train`/`n_test` images (labels i%10)
/// and returns it; `tweak` may alter the four file contents (index as in the file list) first.
fn write_idx_set(dir: &Path, n_train: u32, n_test: u32, tweak: impl Fn(usize, &mut Vec<u8>)) {
    std::fs::create_dir_all(dir).unwrap();
    let files = [
        ("train-images-idx3-ubyte.gz", 2051, n_train, true),
        ("train-labels-idx1-ubyte.gz", 2049, n_train, false),
        ("t10k-images-idx3-ubyte.gz", 2051, n_test, true),
        ("t10k-labels-idx1-ubyte.gz", 2049, n_test, false),
    ];
    for (i, (name, magic, n, images)) in files.into_iter().enumerate() {
        let mut raw = if images {
            let data: Vec<u8> = (0..n as usize * 784).map(|j| (j % 251) as u8).collect();
            idx(magic, &[n, 28, 28], &data)
        } else {
            let data: Vec<u8> = (0..n).map(|j| (j % 10) as u8).collect();
            idx(magic, &[n], &data)
        };
        tweak(i, &mut raw);
        std::fs::write(dir.join(name), gzip(&raw)).unwrap();
    }
}

/// A CIFAR-100 binary record: coarse, fine, then 3072 pixels filled from `seed`.
fn cifar100_record(coarse: u8, fine: u8, seed: usize) -> Vec<u8> {
    let mut rec = vec![coarse, fine];
    rec.extend((0..3072).map(|j| ((j * 7 + seed * 13) % 256) as u8));
    rec
}

fn assert_same(a: &Dataset, b: &Dataset) {
    assert_eq!(a.kind, b.kind);
    assert_eq!(a.train.n, b.train.n);
    assert_eq!(a.test.n, b.test.n);
    assert!(a.train.labels == b.train.labels && a.train.images == b.train.images);
    assert!(a.test.labels == b.test.labels && a.test.images == b.test.images);
}

// ---------------------------------------------------------------------------------------------
// kinds and roots

#[test]
fn kind_names_shapes_and_constants() {
    for kind in DatasetKind::ALL {
        assert_eq!(DatasetKind::from_name(kind.name()), Some(kind));
        assert_eq!(kind.name().parse::<DatasetKind>(), Ok(kind));
        let (mean, std) = kind.mean_std();
        assert_eq!(mean.len(), kind.image_shape().0);
        assert_eq!(std.len(), kind.image_shape().0);
        assert!(mean.iter().chain(std).all(|v| *v > 0.0 && *v < 1.0));
    }
    assert_eq!(DatasetKind::from_name("fashion_mnist"), Some(DatasetKind::FashionMnist));
    assert_eq!(DatasetKind::from_name("CIFAR10"), Some(DatasetKind::Cifar10));
    assert_eq!(DatasetKind::from_name("imagenet"), None);
    assert!("svhn".parse::<DatasetKind>().unwrap_err().contains("svhn"));
    assert_eq!(DatasetKind::Cifar10.image_shape(), (3, 32, 32));
    assert_eq!(DatasetKind::FashionMnist.image_shape(), (1, 28, 28));
    assert_eq!(DatasetKind::Cifar100.num_classes(), 100);
    assert_eq!(DatasetKind::Mnist.num_classes(), 10);
    assert_eq!(DatasetKind::Cifar10.mean_std().0, &[0.4914, 0.4822, 0.4465]);
    assert_eq!(DatasetKind::Mnist.mean_std(), (&[0.1307f32][..], &[0.3081f32][..]));
}

#[test]
fn data_root_precedence() {
    let _env = env_lock();
    let saved = std::env::var_os("AUTOAGENT_DATA");
    std::env::set_var("AUTOAGENT_DATA", "/tmp/from-env");
    assert_eq!(data_root(Some(Path::new("/x/explicit"))), PathBuf::from("/x/explicit"));
    assert_eq!(data_root(None), PathBuf::from("/tmp/from-env"));
    std::env::remove_var("AUTOAGENT_DATA");
    assert!(data_root(None).ends_with("autoagent/data"));
    if let Some(dirs_cache) = dirs::cache_dir() {
        assert_eq!(data_root(None), dirs_cache.join("autoagent").join("data"));
    }
    if let Some(v) = saved {
        std::env::set_var("AUTOAGENT_DATA", v);
    }
}

#[test]
fn official_sources_without_mirror() {
    let _env = env_lock();
    let saved = std::env::var_os("AUTOAGENT_DATA_MIRROR");
    std::env::remove_var("AUTOAGENT_DATA_MIRROR");
    let c10 = sources(DatasetKind::Cifar10);
    assert_eq!(c10.len(), 1);
    assert_eq!(c10[0].url, "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz");
    assert_eq!(c10[0].checksum, Checksum::Md5("c32a1d4ab5d03f1284b67883e8d87530".into()));
    assert_eq!(c10[0].format, SourceFormat::TarGz);
    let c100 = sources(DatasetKind::Cifar100);
    assert_eq!(c100[0].file_name, "cifar-100-binary.tar.gz");
    assert_eq!(c100[0].checksum, Checksum::Md5("03b5dce01913d631647c71ecec9e9cb8".into()));
    let mnist = sources(DatasetKind::Mnist);
    assert_eq!(mnist.len(), 4);
    assert_eq!(mnist[0].url, "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz");
    assert!(mnist.iter().all(|s| s.format == SourceFormat::Gzip && s.url.ends_with(&s.file_name)));
    let fashion = sources(DatasetKind::FashionMnist);
    assert_eq!(
        fashion[3].url,
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz"
    );
    assert_eq!(fashion[0].checksum, Checksum::Md5("8d4fb7e6c68d591d4c3dfef9ec88bf0d".into()));
    if let Some(v) = saved {
        std::env::set_var("AUTOAGENT_DATA_MIRROR", v);
    }
}

// ---------------------------------------------------------------------------------------------
// real fixtures

#[test]
fn cifar10_fixture_loads_with_known_records() {
    let dir = fixture("cifar10-mini");
    let ds = load(DatasetKind::Cifar10, &dir).unwrap();
    assert_eq!(ds.kind, DatasetKind::Cifar10);
    for (split, n) in [(&ds.train, 2000), (&ds.test, 1000)] {
        assert_eq!((split.n, split.c, split.h, split.w), (n, 3, 32, 32));
        assert_eq!(split.labels.len(), n);
        assert_eq!(split.images.len(), n * 3072);
        assert_eq!(class_counts(&split.labels, 10), vec![n / 10; 10]);
    }
    // First and last records against the raw bytes: label byte, then R, G, B planes.
    let raw = std::fs::read(dir.join("data_batch_1.bin")).unwrap();
    assert_eq!(ds.train.labels[0], u32::from(raw[0]));
    assert_eq!(ds.train.image(0), &raw[1..3073]);
    assert_eq!(ds.train.labels[1999], u32::from(raw[1999 * 3073]));
    assert_eq!(ds.train.image(1999), &raw[1999 * 3073 + 1..]);
    let raw_test = std::fs::read(dir.join("test_batch.bin")).unwrap();
    assert_eq!(ds.test.labels[0], u32::from(raw_test[0]));
    assert_eq!(ds.test.image(0), &raw_test[1..3073]);
    // A real photo, not a blank: its pixels vary.
    let first = ds.train.image(0);
    assert!(first.iter().max().unwrap() - first.iter().min().unwrap() > 50);
    // The same data through open() without download.
    let opened = open(DatasetKind::Cifar10, &dir, false).unwrap();
    assert_same(&ds, &opened);
}

fn check_idx_fixture(kind: DatasetKind, folder: &str) {
    let dir = fixture(folder);
    let ds = load(kind, &dir).unwrap();
    for (split, n) in [(&ds.train, 2000), (&ds.test, 1000)] {
        assert_eq!((split.n, split.c, split.h, split.w), (n, 1, 28, 28));
        assert_eq!(split.images.len(), n * 784);
        assert_eq!(class_counts(&split.labels, 10), vec![n / 10; 10]);
    }
    for (split, images, labels) in [
        (&ds.train, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        (&ds.test, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    ] {
        let img = gunzip(&dir.join(images));
        let lab = gunzip(&dir.join(labels));
        assert_eq!(&img[..4], &[0, 0, 8, 3]);
        assert_eq!(split.image(0), &img[16..16 + 784]);
        assert_eq!(split.labels[0], u32::from(lab[8]));
        let last = split.n - 1;
        assert_eq!(split.image(last), &img[16 + last * 784..]);
        assert_eq!(split.labels[last], u32::from(lab[8 + last]));
    }
    let first = ds.train.image(0);
    assert_eq!(first[0], 0, "MNIST-style images have a black border");
    assert!(*first.iter().max().unwrap() > 200);
}

#[test]
fn mnist_fixture_loads_with_known_records() {
    check_idx_fixture(DatasetKind::Mnist, "mnist-mini");
}

#[test]
fn fashion_mnist_fixture_loads_with_known_records() {
    check_idx_fixture(DatasetKind::FashionMnist, "fashion-mnist-mini");
}

#[test]
fn uncompressed_idx_files_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("mnist-mini");
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
        std::fs::write(tmp.path().join(name), gunzip(&src.join(format!("{name}.gz")))).unwrap();
    }
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        std::fs::copy(src.join(name), tmp.path().join(name)).unwrap();
    }
    let ds = load(DatasetKind::Mnist, tmp.path()).unwrap();
    assert_same(&ds, &load(DatasetKind::Mnist, &src).unwrap());
}

#[test]
fn locate_accepts_direct_and_cache_layouts() {
    let cifar = fixture("cifar10-mini");
    assert_eq!(locate(DatasetKind::Cifar10, &cifar), Some(cifar.clone()));
    assert_eq!(locate(DatasetKind::Mnist, &cifar), None);
    assert_eq!(locate(DatasetKind::Cifar10, &fixture("mnist-mini")), None);
    // The shared data root (AUTOAGENT_DATA=…/shared/data) finds the `<name>-mini` fixtures
    // (issue 15 item 17), and a full dataset beside one is preferred.
    let shared = cifar.parent().unwrap().to_path_buf();
    assert_eq!(locate(DatasetKind::Cifar10, &shared), Some(cifar.clone()));
    assert_eq!(locate(DatasetKind::Mnist, &shared), Some(fixture("mnist-mini")));
    assert_eq!(
        locate(DatasetKind::FashionMnist, &shared),
        locate(DatasetKind::FashionMnist, &shared.join("fashion-mnist"))
    );

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    assert_eq!(locate(DatasetKind::Cifar10, root), None);
    // Cache layout as the downloader writes it: root/cifar10/cifar-10-batches-bin/.
    let bin = root.join("cifar10").join("cifar-10-batches-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(cifar.join("test_batch.bin"), bin.join("test_batch.bin")).unwrap();
    assert_eq!(locate(DatasetKind::Cifar10, root), None, "no training batch yet");
    std::fs::copy(cifar.join("data_batch_1.bin"), bin.join("data_batch_3.bin")).unwrap();
    assert_eq!(locate(DatasetKind::Cifar10, root), Some(bin.clone()));
    let ds = open(DatasetKind::Cifar10, root, false).unwrap();
    assert_eq!((ds.train.n, ds.test.n), (2000, 1000));
    // A second training batch is concatenated in order.
    std::fs::copy(cifar.join("test_batch.bin"), bin.join("data_batch_5.bin")).unwrap();
    let ds = load(DatasetKind::Cifar10, root).unwrap();
    assert_eq!(ds.train.n, 3000);
    assert_eq!(ds.train.labels[2000..], ds.test.labels[..]);

    // The extracted folder directly under the root also works.
    let tmp2 = tempfile::tempdir().unwrap();
    let bin2 = tmp2.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&bin2).unwrap();
    for f in ["data_batch_1.bin", "test_batch.bin"] {
        std::fs::copy(cifar.join(f), bin2.join(f)).unwrap();
    }
    assert_eq!(locate(DatasetKind::Cifar10, tmp2.path()), Some(bin2));

    // MNIST in the cache layout root/mnist/*.gz; three of four files are not enough.
    let mnist = root.join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    for name in &names[..3] {
        std::fs::copy(fixture("mnist-mini").join(name), mnist.join(name)).unwrap();
    }
    assert_eq!(locate(DatasetKind::Mnist, root), None);
    std::fs::copy(fixture("mnist-mini").join(names[3]), mnist.join(names[3])).unwrap();
    assert_eq!(locate(DatasetKind::Mnist, root), Some(mnist));
    assert_eq!(locate(DatasetKind::FashionMnist, root), None);
}

#[test]
fn missing_data_without_download_tells_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let err = open(DatasetKind::Cifar100, tmp.path(), false).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("--data-dir") && msg.contains("AUTOAGENT_DATA"), "{msg}");
    assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
    assert!(!msg.contains('\n'));
    assert!(entries(tmp.path()).is_empty(), "nothing created");
    let err = load(DatasetKind::Mnist, tmp.path()).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("train-images-idx3-ubyte.gz"));
}

// ---------------------------------------------------------------------------------------------
// CIFAR-100 (no fixture: written here)

#[test]
fn cifar100_binary_uses_fine_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar100").join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    let mut train = Vec::new();
    for i in 0..300 {
        train.extend(cifar100_record((i % 20) as u8, (i % 100) as u8, i));
    }
    let mut test = Vec::new();
    for i in 0..100 {
        test.extend(cifar100_record(19 - (i % 20) as u8, (99 - i) as u8, 1000 + i));
    }
    std::fs::write(dir.join("train.bin"), &train).unwrap();
    std::fs::write(dir.join("test.bin"), &test).unwrap();

    let ds = open(DatasetKind::Cifar100, tmp.path(), false).unwrap();
    assert_eq!(ds.kind, DatasetKind::Cifar100);
    assert_eq!((ds.train.n, ds.train.c, ds.train.h, ds.train.w), (300, 3, 32, 32));
    assert_eq!(ds.test.n, 100);
    assert_eq!(class_counts(&ds.train.labels, 100), vec![3; 100]);
    assert_eq!(ds.train.labels[..3], [0, 1, 2]);
    assert_eq!(ds.test.labels[..2], [99, 98]);
    assert_eq!(ds.train.image(7), &cifar100_record(7, 7, 7)[2..]);
    assert_eq!(ds.test.image(99), &cifar100_record(0, 0, 1099)[2..]);

    // Fine label 100 is out of range; coarse label 20 is reported too.
    let mut bad = test.clone();
    bad[5 * 3074 + 1] = 100;
    std::fs::write(dir.join("test.bin"), &bad).unwrap();
    match load(DatasetKind::Cifar100, &dir).unwrap_err() {
        DataError::LabelOutOfRange { path, index, label, classes } => {
            assert_eq!((index, label, classes), (5, 100, 100));
            assert_eq!(path, dir.join("test.bin"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut bad = test.clone();
    bad[2 * 3074] = 20;
    std::fs::write(dir.join("test.bin"), &bad).unwrap();
    let err = load(DatasetKind::Cifar100, &dir).unwrap_err();
    assert!(matches!(&err, DataError::Corrupt { reason, .. } if reason.contains("coarse")), "{err}");
    // A CIFAR-10 file is not a CIFAR-100 file: 3073 does not divide into 3074-byte records.
    std::fs::copy(fixture("cifar10-mini").join("test_batch.bin"), dir.join("test.bin")).unwrap();
    let err = load(DatasetKind::Cifar100, &dir).unwrap_err();
    assert!(matches!(&err, DataError::Corrupt { reason, .. } if reason.contains("3074")), "{err}");
}

// ---------------------------------------------------------------------------------------------
// corrupt inputs

/// A CIFAR-10 folder with `train` as data_batch_1.bin and the fixture's test batch.
fn cifar10_dir_with(train: &[u8]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("data_batch_1.bin"), train).unwrap();
    std::fs::copy(fixture("cifar10-mini/test_batch.bin"), tmp.path().join("test_batch.bin")).unwrap();
    tmp
}

#[test]
fn truncated_cifar_file_is_rejected() {
    let raw = std::fs::read(fixture("cifar10-mini/data_batch_1.bin")).unwrap();
    let tmp = cifar10_dir_with(&raw[..3073 * 3 + 100]);
    let err = load(DatasetKind::Cifar10, tmp.path()).unwrap_err();
    match &err {
        DataError::Corrupt { path, reason } => {
            assert_eq!(path, &tmp.path().join("data_batch_1.bin"));
            assert!(reason.contains("3073") && reason.contains(&(3073 * 3 + 100).to_string()));
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("data_batch_1.bin") && !msg.contains('\n'), "{msg}");
    // Empty files are rejected too.
    let tmp = cifar10_dir_with(&[]);
    let err = load(DatasetKind::Cifar10, tmp.path()).unwrap_err();
    assert!(matches!(&err, DataError::Corrupt { reason, .. } if reason.contains("empty")), "{err}");
}

#[test]
fn cifar10_label_out_of_range_is_rejected() {
    let mut raw = std::fs::read(fixture("cifar10-mini/data_batch_1.bin")).unwrap();
    raw.truncate(3073 * 10);
    raw[3073 * 4] = 10;
    let tmp = cifar10_dir_with(&raw);
    match load(DatasetKind::Cifar10, tmp.path()).unwrap_err() {
        DataError::LabelOutOfRange { index, label, classes, .. } => {
            assert_eq!((index, label, classes), (4, 10, 10));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn idx_set_written_here_loads() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_set(tmp.path(), 20, 10, |_, _| {});
    let ds = load(DatasetKind::FashionMnist, tmp.path()).unwrap();
    assert_eq!((ds.train.n, ds.test.n), (20, 10));
    assert_eq!(ds.train.labels[13], 3);
    assert_eq!(ds.train.image(1)[0], (784 % 251) as u8);
}

#[test]
fn wrong_idx_magic_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    // Image file carrying the label magic (and so the wrong rank).
    write_idx_set(tmp.path(), 20, 10, |i, raw| {
        if i == 0 {
            raw[3] = 1;
        }
    });
    let err = load(DatasetKind::Mnist, tmp.path()).unwrap_err();
    match &err {
        DataError::Corrupt { path, reason } => {
            assert!(path.ends_with("train-images-idx3-ubyte.gz"));
            assert!(reason.contains("magic"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Not an IDX file at all (wrong type byte).
    write_idx_set(tmp.path(), 20, 10, |i, raw| {
        if i == 3 {
            raw[2] = 0x0d;
        }
    });
    let err = load(DatasetKind::Mnist, tmp.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::Corrupt { path, reason }
            if path.ends_with("t10k-labels-idx1-ubyte.gz") && reason.contains("magic")),
        "{err}"
    );
}

#[test]
fn idx_count_mismatch_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    // 20 training images, 19 training labels.
    write_idx_set(tmp.path(), 20, 10, |i, raw| {
        if i == 1 {
            *raw = idx(2049, &[19], &[1; 19]);
        }
    });
    match load(DatasetKind::Mnist, tmp.path()).unwrap_err() {
        DataError::CountMismatch {
            n_images,
            n_labels,
            images,
            labels,
        } => {
            assert_eq!((n_images, n_labels), (20, 19));
            assert!(images.ends_with("train-images-idx3-ubyte.gz"));
            assert!(labels.ends_with("train-labels-idx1-ubyte.gz"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn idx_label_out_of_range_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx_set(tmp.path(), 20, 10, |i, raw| {
        if i == 3 {
            raw[8 + 6] = 12;
        }
    });
    match load(DatasetKind::Mnist, tmp.path()).unwrap_err() {
        DataError::LabelOutOfRange { path, index, label, classes } => {
            assert!(path.ends_with("t10k-labels-idx1-ubyte.gz"));
            assert_eq!((index, label, classes), (6, 12, 10));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn idx_bad_dims_length_and_gzip_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    // 27x28 images.
    write_idx_set(tmp.path(), 20, 10, |i, raw| {
        if i == 2 {
            *raw = idx(2051, &[10, 27, 28], &vec![0; 10 * 27 * 28]);
        }
    });
    let err = load(DatasetKind::Mnist, tmp.path()).unwrap_err();
    assert!(matches!(&err, DataError::Corrupt { reason, .. } if reason.contains("27x28")), "{err}");
    // Header promises more data than the file holds.
    write_idx_set(tmp.path(), 20, 10, |i, raw| {
        if i == 0 {
            raw.truncate(raw.len() - 784);
        }
    });
    let err = load(DatasetKind::Mnist, tmp.path()).unwrap_err();
    assert!(matches!(&err, DataError::Corrupt { reason, .. } if reason.contains("20x28x28")), "{err}");
    // A gzip stream cut short.
    write_idx_set(tmp.path(), 20, 10, |_, _| {});
    let path = tmp.path().join("train-images-idx3-ubyte.gz");
    let gz = std::fs::read(&path).unwrap();
    std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
    let err = load(DatasetKind::Mnist, tmp.path()).unwrap_err();
    assert!(matches!(&err, DataError::Corrupt { reason, .. } if reason.contains("gzip")), "{err}");
}

// ---------------------------------------------------------------------------------------------
// downloads against local servers

/// A tiny_http server on 127.0.0.1 serving fixed bodies by path (404 otherwise), recording the
/// paths requested.
struct TestServer {
    server: Arc<tiny_http::Server>,
    base: String,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn new(files: HashMap<String, Vec<u8>>) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, hits, stop) = (server.clone(), hits.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(100)) else {
                        continue;
                    };
                    let path = request.url().to_string();
                    hits.lock().unwrap().push(path.clone());
                    let _ = match files.get(&path) {
                        Some(body) => request.respond(tiny_http::Response::from_data(body.clone())),
                        None => request.respond(tiny_http::Response::from_string("not found").with_status_code(404)),
                    };
                }
            })
        };
        TestServer {
            server,
            base: format!("http://127.0.0.1:{port}"),
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw server that answers one connection with `response` (headers and body as given) and
/// closes it.
fn raw_server(response: Vec<u8>) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(&response);
        let _ = stream.flush();
        // Dropping the stream closes the connection.
    });
    (format!("http://127.0.0.1:{port}"), handle)
}

/// `cifar-10-binary.tar.gz` built from the fixture, laid out as `cifar-10-batches-bin/...`.
fn cifar10_archive() -> &'static [u8] {
    static ARCHIVE: OnceLock<Vec<u8>> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for name in ["batches.meta.txt", "data_batch_1.bin", "test_batch.bin"] {
            tar.append_path_with_name(fixture("cifar10-mini").join(name), format!("cifar-10-batches-bin/{name}"))
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    })
}

fn cifar10_source(url: String, checksum: Checksum) -> Source {
    Source {
        url,
        file_name: "cifar-10-binary.tar.gz".into(),
        checksum,
        format: SourceFormat::TarGz,
    }
}

#[test]
fn fetch_cifar10_archive_then_load() {
    let archive = cifar10_archive();
    let server = TestServer::new(HashMap::from([("/cifar-10-binary.tar.gz".to_string(), archive.to_vec())]));
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("cifar10");
    let source = cifar10_source(server.url("/cifar-10-binary.tar.gz"), Checksum::Md5(md5_hex(archive).to_uppercase()));
    let out = fetch(&source, &dest).unwrap();
    assert_eq!(out, dest.join("cifar-10-batches-bin"));
    assert_eq!(entries(&dest), vec!["cifar-10-batches-bin".to_string()], "no temp files left");
    let mut files = entries(&out);
    files.sort();
    assert_eq!(files, ["batches.meta.txt", "data_batch_1.bin", "test_batch.bin"]);
    assert_eq!(locate(DatasetKind::Cifar10, tmp.path()), Some(out.clone()));
    let ds = load(DatasetKind::Cifar10, tmp.path()).unwrap();
    assert_same(&ds, &load(DatasetKind::Cifar10, &fixture("cifar10-mini")).unwrap());
    // Fetching again replaces the folder; SHA-256 works as well.
    let source = cifar10_source(source.url.clone(), Checksum::Sha256(sha256_hex(archive)));
    assert_eq!(fetch(&source, &dest).unwrap(), out);
    assert_eq!(entries(&dest).len(), 1);
    assert_eq!(server.hits().len(), 2);
}

/// After a failed download nothing may be left that `locate` accepts: here, nothing at all.
fn assert_nothing_left(root: &Path, dest: &Path) {
    assert_eq!(entries(dest), Vec::<String>::new(), "left behind in {}", dest.display());
    assert_eq!(locate(DatasetKind::Cifar10, root), None);
}

#[test]
fn fetch_truncated_body_leaves_nothing() {
    let archive = cifar10_archive();
    let half = &archive[..archive.len() / 2];
    // Content-Length announces the whole archive, the server sends half and closes.
    let mut response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", archive.len()).into_bytes();
    response.extend_from_slice(half);
    let (base, handle) = raw_server(response);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("cifar10");
    let source = cifar10_source(format!("{base}/cifar-10-binary.tar.gz"), Checksum::Md5(md5_hex(archive)));
    let err = fetch(&source, &dest).unwrap_err();
    handle.join().unwrap();
    assert!(matches!(err, DataError::Download { .. }), "{err:?}");
    assert!(err.to_string().contains("cifar-10-binary.tar.gz"), "{err}");
    assert_nothing_left(tmp.path(), &dest);

    // Without Content-Length the early close looks like a complete body: the checksum catches it.
    let mut response = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    response.extend_from_slice(half);
    let (base, handle) = raw_server(response);
    let source = cifar10_source(format!("{base}/cifar-10-binary.tar.gz"), Checksum::Md5(md5_hex(archive)));
    let err = fetch(&source, &dest).unwrap_err();
    handle.join().unwrap();
    assert!(matches!(err, DataError::Checksum { .. }), "{err:?}");
    assert_nothing_left(tmp.path(), &dest);
}

#[test]
fn fetch_checksum_mismatch_leaves_nothing() {
    let archive = cifar10_archive();
    let server = TestServer::new(HashMap::from([("/cifar-10-binary.tar.gz".to_string(), archive.to_vec())]));
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("cifar10");
    let source = cifar10_source(server.url("/cifar-10-binary.tar.gz"), Checksum::Md5("c32a1d4ab5d03f1284b67883e8d87530".into()));
    let err = fetch(&source, &dest).unwrap_err();
    match &err {
        DataError::Checksum {
            algorithm, expected, actual, ..
        } => {
            assert_eq!(*algorithm, "md5");
            assert_eq!(expected, "c32a1d4ab5d03f1284b67883e8d87530");
            assert_eq!(actual, &md5_hex(archive));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_nothing_left(tmp.path(), &dest);
}

#[test]
fn fetch_corrupt_archive_leaves_nothing() {
    // Right checksum, but the gzip stream breaks off in the middle of the tar.
    let archive = cifar10_archive();
    let broken = archive[..archive.len() * 2 / 3].to_vec();
    let server = TestServer::new(HashMap::from([("/c.tar.gz".to_string(), broken.clone())]));
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("cifar10");
    let source = cifar10_source(server.url("/c.tar.gz"), Checksum::Md5(md5_hex(&broken)));
    let err = fetch(&source, &dest).unwrap_err();
    assert!(matches!(err, DataError::Archive { .. }), "{err:?}");
    assert_nothing_left(tmp.path(), &dest);
    // Not gzip at all.
    let junk = b"<html>this is not an archive</html>".to_vec();
    let server = TestServer::new(HashMap::from([("/c.tar.gz".to_string(), junk.clone())]));
    let source = cifar10_source(server.url("/c.tar.gz"), Checksum::Md5(md5_hex(&junk)));
    let err = fetch(&source, &dest).unwrap_err();
    assert!(matches!(err, DataError::Archive { .. }), "{err:?}");
    assert_nothing_left(tmp.path(), &dest);
}

#[test]
fn fetch_http_404_is_an_error() {
    let server = TestServer::new(HashMap::new());
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("cifar10");
    let source = cifar10_source(server.url("/nope.tar.gz"), Checksum::Md5("00".repeat(16)));
    let err = fetch(&source, &dest).unwrap_err();
    match &err {
        DataError::Download { url, reason } => {
            assert_eq!(url, &source.url);
            assert!(reason.contains("404"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_nothing_left(tmp.path(), &dest);
    assert_eq!(server.hits(), ["/nope.tar.gz"]);
}

#[test]
fn fetch_connection_refused_is_an_error() {
    // A port that was just free: nobody listens on it.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("mnist");
    let source = Source {
        url: format!("http://127.0.0.1:{port}/train-images-idx3-ubyte.gz"),
        file_name: "train-images-idx3-ubyte.gz".into(),
        checksum: Checksum::Md5("00".repeat(16)),
        format: SourceFormat::Gzip,
    };
    let err = fetch(&source, &dest).unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&port.to_string()) && !msg.contains('\n'), "{msg}");
    assert!(entries(&dest).is_empty());
}

/// The four fixture files of `folder`, keyed by `/<prefix><name>`.
fn idx_files(folder: &str, prefix: &str) -> HashMap<String, Vec<u8>> {
    [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    .into_iter()
    .map(|name| (format!("/{prefix}{name}"), std::fs::read(fixture(folder).join(name)).unwrap()))
    .collect()
}

#[test]
fn fetch_mnist_gz_files_then_load() {
    let files = idx_files("mnist-mini", "mirror/");
    let server = TestServer::new(files.clone());
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("mnist");
    for (path, body) in &files {
        let name = path.trim_start_matches("/mirror/").to_string();
        let source = Source {
            url: server.url(path),
            checksum: Checksum::Md5(md5_hex(body)),
            file_name: name.clone(),
            format: SourceFormat::Gzip,
        };
        let out = fetch(&source, &dest).unwrap();
        assert_eq!(out, dest.join(&name));
        assert_eq!(&std::fs::read(&out).unwrap(), body, "stored as downloaded (still gzipped)");
    }
    assert_eq!(entries(&dest).len(), 4, "no temp files left: {:?}", entries(&dest));
    let ds = open(DatasetKind::Mnist, tmp.path(), false).unwrap();
    assert_same(&ds, &load(DatasetKind::Mnist, &fixture("mnist-mini")).unwrap());
}

#[test]
fn open_downloads_from_mirror() {
    let _env = env_lock();
    let saved = std::env::var_os("AUTOAGENT_DATA_MIRROR");
    let mut files = idx_files("fashion-mnist-mini", "m/fashion-mnist/");
    files.insert("/m/cifar-10-binary.tar.gz".into(), cifar10_archive().to_vec());
    let server = TestServer::new(files);

    // `{dataset}` in the mirror picks the dataset's folder; sources() keeps names and checksums.
    std::env::set_var("AUTOAGENT_DATA_MIRROR", format!("{}/m/{{dataset}}/", server.base));
    let fashion = sources(DatasetKind::FashionMnist);
    assert_eq!(fashion[0].url, server.url("/m/fashion-mnist/train-images-idx3-ubyte.gz"));
    assert_eq!(fashion[0].checksum, Checksum::Md5("8d4fb7e6c68d591d4c3dfef9ec88bf0d".into()));

    // The mirror serves the cut-down fixture, not the official file: open() asks the mirror,
    // then rejects the file for its checksum and leaves nothing behind.
    let tmp = tempfile::tempdir().unwrap();
    let err = open(DatasetKind::FashionMnist, tmp.path(), true).unwrap_err();
    assert!(matches!(&err, DataError::Checksum { url, .. } if url.starts_with(&server.base)), "{err:?}");
    assert_eq!(server.hits(), ["/m/fashion-mnist/train-images-idx3-ubyte.gz"]);
    assert!(entries(tmp.path()).is_empty(), "left: {:?}", entries(tmp.path()));

    // A plain base URL: file names appended to it.
    std::env::set_var("AUTOAGENT_DATA_MIRROR", format!("{}/m", server.base));
    let err = open(DatasetKind::Cifar10, tmp.path(), true).unwrap_err();
    assert!(matches!(&err, DataError::Checksum { .. }), "{err:?}");
    assert_eq!(server.hits().last().unwrap(), "/m/cifar-10-binary.tar.gz");
    assert!(entries(tmp.path()).is_empty());
    // A mirror without the file: HTTP 404, reported with the mirror URL.
    let err = open(DatasetKind::Cifar100, tmp.path(), true).unwrap_err();
    assert!(
        matches!(&err, DataError::Download { url, reason }
            if url == &server.url("/m/cifar-100-binary.tar.gz") && reason.contains("404")),
        "{err:?}"
    );
    assert!(entries(tmp.path()).is_empty());

    // Data already present: open() does not download anything.
    let before = server.hits().len();
    let ds = open(DatasetKind::FashionMnist, &fixture("fashion-mnist-mini"), true).unwrap();
    assert_eq!(ds.train.n, 2000);
    assert_eq!(server.hits().len(), before);

    match saved {
        Some(v) => std::env::set_var("AUTOAGENT_DATA_MIRROR", v),
        None => std::env::remove_var("AUTOAGENT_DATA_MIRROR"),
    }
}

/// Loading speed on a full-size CIFAR-10 layout (5 x 10,000 training records built from the
/// fixture). Writes 180 MB, so it is ignored by default:
/// `cargo test -p autoagent-evaluator --test data -- --ignored --nocapture`.
#[test]
#[ignore]
fn full_size_cifar10_loads_quickly() {
    let raw = std::fs::read(fixture("cifar10-mini/data_batch_1.bin")).unwrap();
    let batch: Vec<u8> = raw.iter().copied().cycle().take(raw.len() * 5).collect();
    let tmp = tempfile::tempdir().unwrap();
    for i in 1..=5 {
        std::fs::write(tmp.path().join(format!("data_batch_{i}.bin")), &batch).unwrap();
    }
    std::fs::write(tmp.path().join("test_batch.bin"), &batch).unwrap();
    let start = std::time::Instant::now();
    let ds = load(DatasetKind::Cifar10, tmp.path()).unwrap();
    let elapsed = start.elapsed();
    eprintln!("loaded {} + {} CIFAR-10 images in {elapsed:?}", ds.train.n, ds.test.n);
    assert_eq!((ds.train.n, ds.test.n), (50_000, 10_000));
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}
