//! The NATS-Bench topology archive importer, on a four-architecture fixture with the structure of
//! the official `NATS-tss-v1_0-3ffb9-simple` archive (built by `fixtures/make_nats_fixture.py`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use autoagent_evaluator::nats::{self, NatsError, COLUMNS};
use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::table::Nb201Table;

const ARCHS: [&str; 4] = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|none~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|none~1|none~2|",
];

/// Accuracy columns and the fixture's code of their (hp, dataset, split): the fixture's
/// seed-averaged last-epoch accuracy is `50 + 10 * arch + 0.25 * code`. Codes 6, 9, 16 and 19
/// (cifar100 / ImageNet16-120 `ori-test`) and the first epochs are decoys no column may read.
const ACCURACY_CODES: [(&str, u32); 13] = [
    ("cifar10_valid_acc", 1),
    ("cifar10valid_test_acc", 2),
    ("cifar10_test_acc", 3),
    ("cifar100_valid_acc", 4),
    ("cifar100_test_acc", 5),
    ("imagenet16_valid_acc", 7),
    ("imagenet16_test_acc", 8),
    ("cifar10_valid_acc_12ep", 11),
    ("cifar10_test_acc_12ep", 13),
    ("cifar100_valid_acc_12ep", 14),
    ("cifar100_test_acc_12ep", 15),
    ("imagenet16_valid_acc_12ep", 17),
    ("imagenet16_test_acc_12ep", 18),
];

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nats-tss-mini")
}

fn shared() -> PathBuf {
    match std::env::var_os("AUTOAGENT_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

/// A writable copy of the fixture in `root/archive`.
fn copy_fixture(root: &Path) -> PathBuf {
    let dir = root.join("archive");
    fs::create_dir(&dir).unwrap();
    for entry in fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

fn mkdir(dir: PathBuf) -> PathBuf {
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn bz2(data: &[u8]) -> Vec<u8> {
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn imports_every_column_from_the_place_the_readme_names() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nats.csv");
    let imported = nats::import(&fixture(), &out).unwrap();
    assert_eq!(files_in(tmp.path()), ["nats.csv"]);
    assert_eq!(imported.len(), 4);
    assert_eq!(imported.num_iso_groups(), 3);

    // The header is the shipped table's, column for column.
    let text = fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().next().unwrap(), COLUMNS.join(","));
    if let Ok(shipped) = fs::read_to_string(shared().join("nb201/nb201.csv")) {
        assert_eq!(text.lines().next(), shipped.lines().next());
    }

    let t = Nb201Table::load(&out).unwrap();
    assert_eq!(t.len(), 4);
    assert_eq!(t.columns(), &COLUMNS[2..24]);
    for (i, a) in ARCHS.iter().enumerate() {
        let arch: Arch = a.parse().unwrap();
        assert_eq!(t.arch(i), Some(arch));
        assert_eq!(t.index_of(&arch), Some(i));
    }
    for arch in 0..4 {
        for (column, code) in ACCURACY_CODES {
            // Arch 3 has no 12-epoch ImageNet16-120 results.
            let expected = if arch == 3 && column.starts_with("imagenet16") && column.ends_with("_12ep") {
                None
            } else {
                Some(50.0 + 10.0 * arch as f64 + 0.25 * code as f64)
            };
            assert_eq!(t.value(arch, column).unwrap(), expected, "{column} of arch {arch}");
            assert_eq!(imported.value(arch, column), expected, "{column} of arch {arch}");
        }
        // cifar10 costs (not cifar100's or ImageNet16-120's larger classifiers), averaged over
        // the seeds as np.mean does (arch 0's three 0.1s give 0.10000000000000002); arch 2
        // stores them as numpy float64 scalars.
        let seeds = if arch == 0 { 3 } else { 2 };
        let np_mean = |x: f64| (0..seeds).map(|_| x).sum::<f64>() / seeds as f64;
        assert_eq!(
            t.value(arch, "params_M").unwrap(),
            Some(np_mean(0.1 + 0.01 * arch as f64)),
            "params of arch {arch}"
        );
        assert_eq!(t.value(arch, "flops_M").unwrap(), Some(10.0 + arch as f64), "flops of arch {arch}");
        // Not in the archive: HW-NAS-Bench latencies and the older NB201 file's numbers.
        for column in t.columns().iter().filter(|c| c.starts_with("hwnb_") || c.ends_with("_nb201file")) {
            assert_eq!(t.value(arch, column).unwrap(), None, "{column} of arch {arch}");
        }
    }
    let hwnb_empty = text.lines().skip(1).all(|l| l.split(',').skip(10).take(6).all(str::is_empty));
    assert!(hwnb_empty, "{text}");

    // Arch 3's cell is isomorphic to arch 1's: its group is 1; every other arch heads its own.
    assert_eq!(ARCHS[1].parse::<Arch>().unwrap().canonical(), ARCHS[3].parse::<Arch>().unwrap().canonical());
    assert_eq!((0..4).map(|i| t.iso_group(i).unwrap()).collect::<Vec<_>>(), [0, 1, 2, 1]);
}

#[test]
fn a_tar_of_the_archive_and_short_file_names_give_the_same_table() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = nats::read_archive(&fixture()).unwrap();

    let tar_path = tmp.path().join("NATS-tss-v1_0-3ffb9-simple.tar");
    let mut builder = tar::Builder::new(fs::File::create(&tar_path).unwrap());
    builder.append_dir_all(nats::ARCHIVE_NAME, fixture()).unwrap();
    builder.into_inner().unwrap().sync_all().unwrap();
    let out = tmp.path().join("from-tar.csv");
    let from_tar = nats::import(&tar_path, &out).unwrap();
    assert_eq!(from_tar, reference);
    assert_eq!(fs::read_to_string(&out).unwrap(), reference.to_csv());

    // `reload` falls back to `{index}.pickle.pbz2`.
    let dir = copy_fixture(tmp.path());
    fs::rename(dir.join("000003.pickle.pbz2"), dir.join("3.pickle.pbz2")).unwrap();
    assert_eq!(nats::read_archive(&dir).unwrap(), reference);

    // Given the folder above the archive (e.g. $TORCH_HOME), the error points at the archive.
    fs::rename(&dir, tmp.path().join(nats::ARCHIVE_NAME)).unwrap();
    let err = nats::read_archive(tmp.path()).unwrap_err();
    assert!(matches!(err, NatsError::MissingMeta { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("did you mean {}", tmp.path().join(nats::ARCHIVE_NAME).display())),
        "{err}"
    );
}

/// Import `archive` into an output folder that holds one older file: the import must fail with
/// an error whose message contains `needle`, and leave the folder as it was.
fn fails_cleanly(archive: &Path, needle: &str) -> NatsError {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("nb201.csv");
    fs::write(&out, "old").unwrap();
    let err = nats::import(archive, &out).unwrap_err();
    assert!(err.to_string().contains(needle), "expected '{needle}' in: {err}");
    assert_eq!(files_in(out_dir.path()), ["nb201.csv"]);
    assert_eq!(fs::read_to_string(&out).unwrap(), "old");
    err
}

#[test]
fn broken_archives_fail_with_the_file_named_and_leave_no_output() {
    let tmp = tempfile::tempdir().unwrap();

    // Truncated bzip2 stream.
    let dir = copy_fixture(&mkdir(tmp.path().join("a")));
    let f = dir.join("000002.pickle.pbz2");
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails_cleanly(&dir, "000002.pickle.pbz2");
    assert!(matches!(err, NatsError::Bzip2 { .. }), "{err}");

    // Not bzip2 at all.
    fs::write(&f, b"not compressed").unwrap();
    let err = fails_cleanly(&dir, "000002.pickle.pbz2");
    assert!(matches!(err, NatsError::Bzip2 { .. }), "{err}");

    // A valid bzip2 stream holding something that is not a pickle.
    fs::write(&f, bz2(b"\xde\xad\xbe\xef garbage")).unwrap();
    let err = fails_cleanly(&dir, "000002.pickle.pbz2");
    assert!(matches!(err, NatsError::Pickle { .. }), "{err}");

    // A pickle of the wrong shape: a list instead of the hp -> ArchResults dict.
    fs::write(&f, bz2(b"\x80\x02]q\x00.")).unwrap();
    let err = fails_cleanly(&dir, "expected a dict, found a list");
    assert!(matches!(err, NatsError::Structure { .. }), "{err}");

    // Missing meta file.
    let dir = copy_fixture(&mkdir(tmp.path().join("b")));
    fs::remove_file(dir.join("meta.pickle.pbz2")).unwrap();
    let err = fails_cleanly(&dir, "meta.pickle.pbz2");
    assert!(matches!(err, NatsError::MissingMeta { .. }), "{err}");

    // A meta file without the arch list.
    fs::write(dir.join("meta.pickle.pbz2"), bz2(b"\x80\x02}q\x00.")).unwrap();
    let err = fails_cleanly(&dir, "missing key 'meta_archs'");
    assert!(matches!(err, NatsError::Structure { .. }), "{err}");

    // A missing architecture.
    let dir = copy_fixture(&mkdir(tmp.path().join("c")));
    fs::remove_file(dir.join("000002.pickle.pbz2")).unwrap();
    let err = fails_cleanly(&dir, "000002.pickle.pbz2");
    assert!(
        matches!(
            err,
            NatsError::MissingArch {
                index: 2,
                missing: 1,
                total: 4,
                ..
            }
        ),
        "{err}"
    );

    // Files swapped: each file's arch_index / arch_str must match the meta list.
    let dir = copy_fixture(&mkdir(tmp.path().join("d")));
    fs::rename(dir.join("000000.pickle.pbz2"), dir.join("tmp")).unwrap();
    fs::rename(dir.join("000001.pickle.pbz2"), dir.join("000000.pickle.pbz2")).unwrap();
    fs::rename(dir.join("tmp"), dir.join("000001.pickle.pbz2")).unwrap();
    let err = fails_cleanly(&dir, "arch_index");
    assert!(matches!(err, NatsError::Structure { .. }), "{err}");

    // Not an archive at all.
    let err = fails_cleanly(&tmp.path().join("nowhere"), "nowhere");
    assert!(matches!(err, NatsError::Io { .. }), "{err}");
    let not_tar = tmp.path().join("x.tar");
    fs::write(&not_tar, vec![7u8; 1500]).unwrap();
    fails_cleanly(&not_tar, "x.tar");
}
