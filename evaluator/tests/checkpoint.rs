//! Continued training: a run that stops after some epochs leaves a checkpoint (weights, momentum,
//! epochs done) that a later run continues from, as a promoted trial does.

use std::path::{Path, PathBuf};

use autoagent_evaluator::data::{self, search_split, Dataset, DatasetKind};
use autoagent_evaluator::net::Nb201Config;
use autoagent_evaluator::train::{train_with, Select, Splits, TrainConfig, TrainFiles, TrainReport};
use candle_core::Device;

mod support;
use support::small_net;

fn mnist() -> Dataset {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist-mini");
    let data = data::open(DatasetKind::Mnist, &dir, false).expect("the MNIST fixture");
    search_split(&data).unwrap()
}

fn run(data: &Dataset, epochs: usize, resume: Option<&Path>, checkpoint: Option<&Path>) -> Result<TrainReport, String> {
    let cfg = TrainConfig {
        epochs,
        batch_size: 64,
        hflip: false,
        ..TrainConfig::default()
    };
    let splits = Splits {
        kind: data.kind,
        train: &data.train,
        valid: Some(&data.test),
        test: None,
    };
    let files = TrainFiles {
        resume,
        checkpoint,
        ..TrainFiles::default()
    };
    train_with(&small_net(data.kind), &cfg, &splits, Select::Last, &Device::Cpu, &files, &mut |_| {}).map_err(|e| e.to_string())
}

fn tmp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    (dir, p)
}

#[test]
fn a_continued_training_starts_from_the_checkpoint_and_anneals_its_own_stretch() {
    let data = mnist();
    let (_d, first) = tmp("e1.safetensors");
    let one = run(&data, 1, None, Some(&first)).unwrap();
    assert!(first.is_file());
    assert_eq!((one.start_epoch, one.epochs, one.history.len()), (0, 1, 1));
    // Continued to 3 epochs: epochs 2 and 3 are trained, from the first's weights.
    let (_d2, second) = tmp("e3.safetensors");
    let three = run(&data, 3, Some(&first), Some(&second)).unwrap();
    assert_eq!((three.start_epoch, three.epochs), (1, 3));
    assert_eq!(three.history.iter().map(|e| e.epoch).collect::<Vec<_>>(), vec![2, 3]);
    // The stretch anneals from the initial rate: its first epoch ends above half of it, its
    // last near zero.
    assert!(
        three.history[0].lr > 0.05 && three.history[1].lr < 0.01,
        "{:?}",
        three.history.iter().map(|e| e.lr).collect::<Vec<_>>()
    );
    // The continued network starts where the first left off: after its first continued epoch
    // it is well above what one epoch from scratch gave, since it has trained two.
    let from_scratch_again = run(&data, 1, None, None).unwrap();
    assert_eq!(from_scratch_again.valid_acc, one.valid_acc, "training is deterministic");
    assert!(
        three.valid_acc.unwrap() > one.valid_acc.unwrap() + 10.0,
        "{:?} {:?}",
        one.valid_acc,
        three.valid_acc
    );
    // The same continuation twice gives the same network (the checkpoint holds everything).
    let again = run(&data, 3, Some(&first), None).unwrap();
    assert_eq!(again.valid_acc, three.valid_acc);
}

#[test]
fn a_checkpoint_that_does_not_fit_is_a_clear_error() {
    let data = mnist();
    let (_d, path) = tmp("e2.safetensors");
    run(&data, 2, None, Some(&path)).unwrap();
    // Nothing left to train.
    let e = run(&data, 2, Some(&path), None).unwrap_err();
    assert!(e.contains("2 epochs done") && e.contains("asks for 2"), "{e}");
    // Another network.
    let cfg = TrainConfig {
        epochs: 3,
        ..TrainConfig::default()
    };
    let wide = Nb201Config {
        channels: 16,
        ..small_net(data.kind)
    };
    let splits = Splits::search(&data);
    let files = TrainFiles {
        resume: Some(&path),
        ..TrainFiles::default()
    };
    let e = train_with(&wide, &cfg, &splits, Select::Last, &Device::Cpu, &files, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("checkpoint") && e.contains("shape"), "{e}");
    // No file.
    let e = run(&data, 3, Some(&path.with_file_name("missing")), None).unwrap_err();
    assert!(e.contains("no such file"), "{e}");
}
