//! How fast a network trains here: a few real SGD steps timed on the device, so that a run's
//! first estimate of a trial's cost is a measurement rather than a constant.

use std::time::Instant;

use candle_core::{DType, Device};
use rand::SeedableRng;

use crate::data::{DatasetKind, Split};
use crate::error::{Error, Result};
use crate::net::{Model, Nb201Config};
use crate::train::{sgd_step, Batcher, Sgd, TrainConfig};

/// Seconds per training image of `net_cfg` with `cfg`'s batch size, augmentation and optimiser,
/// on images of `split` (of `kind`) on `device`: one untimed step (allocation, kernel choice),
/// then the mean of `steps` timed steps (at least one).
pub fn seconds_per_image(net_cfg: &Nb201Config, cfg: &TrainConfig, kind: DatasetKind, split: &Split, device: &Device, steps: usize) -> Result<f64> {
    if split.n == 0 {
        return Err(Error::Config("cannot time training on an empty split".into()));
    }
    cfg.check_cutout(split.h, split.w, kind.name())?;
    let model = Model::new(net_cfg, DType::F32, device, cfg.seed)?;
    let (mean, std) = kind.mean_std();
    let batcher = Batcher::new(mean, std);
    let mut opt = Sgd::new(
        model.trainable().into_iter().map(|(_, v)| v).collect(),
        cfg.momentum,
        cfg.nesterov,
        cfg.weight_decay,
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let batch: Vec<usize> = (0..cfg.batch_size).map(|i| i % split.n).collect();
    let mut step = |rng: &mut rand_chacha::ChaCha8Rng| sgd_step(&model, &mut opt, &batcher, split, &batch, cfg, rng, cfg.lr, device);
    step(&mut rng)?;
    let started = Instant::now();
    for _ in 0..steps.max(1) {
        step(&mut rng)?;
    }
    Ok(started.elapsed().as_secs_f64() / (steps.max(1) * batch.len()) as f64)
}
