//! Cutout and label smoothing in real training runs on the Fashion-MNIST fixture, and the
//! configurations that name them (or, written before them, do not).

use std::path::Path;

use autoagent_evaluator::data::{self, search_split, Dataset, DatasetKind, Split};
use autoagent_evaluator::train::{train, Select, Splits, TrainConfig, TrainReport};
use autoagent_evaluator::Error;
use candle_core::Device;

mod support;
use support::small_net;

fn fashion() -> Dataset {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/fashion-mnist-mini");
    let data = data::open(DatasetKind::FashionMnist, &dir, false).expect("the Fashion-MNIST fixture");
    search_split(&data).unwrap()
}

/// The first `n` images of `s`.
fn head(s: &Split, n: usize) -> Split {
    let n = n.min(s.n);
    Split {
        images: s.images[..n * s.image_len()].to_vec(),
        labels: s.labels[..n].to_vec(),
        n,
        ..s.clone()
    }
}

/// Two epochs on 256 training images, validated on 128, with `cfg` over these defaults.
fn run(data: &Dataset, cfg: TrainConfig) -> Result<TrainReport, Error> {
    let (train_split, valid) = (head(&data.train, 256), head(&data.test, 128));
    let splits = Splits {
        kind: data.kind,
        train: &train_split,
        valid: Some(&valid),
        test: None,
    };
    train(&small_net(data.kind), &cfg, &splits, Select::Last, &Device::Cpu, None, &mut |_| {})
}

fn cfg(augment: bool, cutout: usize, label_smoothing: f64) -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 64,
        augment,
        hflip: false,
        seed: 5,
        cutout,
        label_smoothing,
        ..TrainConfig::default()
    }
}

/// Every epoch's training loss and validation accuracy, as bits.
fn trace(r: &TrainReport) -> Vec<(u64, u64)> {
    r.history.iter().map(|e| (e.train_loss.to_bits(), e.valid_acc.unwrap().to_bits())).collect()
}

#[test]
fn cutout_and_label_smoothing_train_deterministically() {
    let data = fashion();
    let a = run(&data, cfg(true, 8, 0.1)).unwrap();
    assert_eq!(a.history.len(), 2);
    for e in &a.history {
        assert!(e.train_loss.is_finite() && e.train_loss > 0.0, "epoch {}: loss {}", e.epoch, e.train_loss);
        assert!(e.valid_acc.unwrap().is_finite());
    }
    // The report keeps the hyper-parameters.
    assert_eq!((a.config.cutout, a.config.label_smoothing), (8, 0.1));
    // The same seed, the same run, bit for bit.
    let b = run(&data, cfg(true, 8, 0.1)).unwrap();
    assert_eq!(trace(&a), trace(&b));
    // Another seed, another run.
    let c = run(&data, TrainConfig { seed: 6, ..cfg(true, 8, 0.1) }).unwrap();
    assert_ne!(trace(&a), trace(&c));
}

#[test]
fn each_regulariser_changes_the_run() {
    let data = fashion();
    let plain = trace(&run(&data, cfg(true, 0, 0.0)).unwrap());
    let cut = trace(&run(&data, cfg(true, 8, 0.0)).unwrap());
    let smooth = trace(&run(&data, cfg(true, 0, 0.1)).unwrap());
    assert_ne!(plain, cut, "cutout changed nothing");
    assert_ne!(plain, smooth, "label smoothing changed nothing");
    assert_ne!(cut, smooth);
    // Label smoothing changes the very first batch's loss: the first epoch's loss differs already.
    assert_ne!(plain[0].0, smooth[0].0);
    // Cutout without crop and flip is applied too.
    let no_aug = trace(&run(&data, cfg(false, 0, 0.0)).unwrap());
    let no_aug_cut = trace(&run(&data, cfg(false, 8, 0.0)).unwrap());
    assert_ne!(no_aug, no_aug_cut, "cutout was ignored without crop and flip");
    // Both off is the run of a configuration that never heard of them.
    let old: TrainConfig = serde_json::from_str(r#"{"epochs": 2, "batch_size": 64, "hflip": false, "seed": 5}"#).unwrap();
    assert_eq!(trace(&run(&data, old).unwrap()), plain);
}

#[test]
fn a_cutout_larger_than_the_images_is_rejected() {
    let data = fashion();
    match run(&data, cfg(true, 29, 0.0)) {
        Err(Error::Config(m)) => assert!(m.contains("cutout 29") && m.contains("28x28"), "{m}"),
        other => panic!("cutout 29 on 28x28 images: {:?}", other.map(|r| r.history.len())),
    }
    // The whole image is allowed.
    run(
        &data,
        TrainConfig {
            epochs: 1,
            ..cfg(true, 28, 0.0)
        },
    )
    .unwrap();
    // Smoothing of 1 or more never starts.
    let e = run(&data, cfg(true, 0, 1.0)).unwrap_err().to_string();
    assert!(e.contains("label smoothing must be in [0, 1)"), "{e}");
}

#[test]
fn configurations_without_the_new_fields_read_as_off() {
    let old = r#"{"epochs": 3, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "nesterov": true,
        "weight_decay": 0.0005, "augment": true, "crop_padding": 4, "hflip": false,
        "eval_batch_size": 500, "seed": 7}"#;
    let cfg: TrainConfig = serde_json::from_str(old).unwrap();
    assert_eq!(cfg.cutout, 0);
    assert_eq!(cfg.label_smoothing.to_bits(), 0f64.to_bits());
    assert_eq!((cfg.epochs, cfg.batch_size, cfg.seed), (3, 128, 7));
    let empty: TrainConfig = serde_json::from_str("{}").unwrap();
    assert_eq!((empty.cutout, empty.label_smoothing), (0, 0.0));
    // Off, they are left out of the written form, which is what it was before them.
    let written = serde_json::to_value(&cfg).unwrap();
    assert!(written.get("cutout").is_none() && written.get("label_smoothing").is_none(), "{written}");
    // On, they are written and read back.
    let on = TrainConfig {
        cutout: 16,
        label_smoothing: 0.15,
        ..cfg
    };
    let json = serde_json::to_string(&on).unwrap();
    assert!(json.contains("\"cutout\":16") && json.contains("\"label_smoothing\":0.15"), "{json}");
    let back: TrainConfig = serde_json::from_str(&json).unwrap();
    assert_eq!((back.cutout, back.label_smoothing), (16, 0.15));
    // Misspelt fields are still refused.
    assert!(serde_json::from_str::<TrainConfig>(r#"{"cut_out": 8}"#).is_err());
}
