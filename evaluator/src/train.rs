//! Training a network on an image dataset: SGD with Nesterov momentum, weight decay, a cosine
//! learning-rate schedule, random-crop and flip augmentation, per-channel normalisation, top-1
//! accuracy on the test split, best weights saved as safetensors, device time metered.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::net::{argmax, Model, Nb201Config};

/// Hyper-parameters of a training run. [`TrainConfig::default`] is NB201's protocol (and fills
/// the fields a deserialised configuration leaves out).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training split.
    pub epochs: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// Initial learning rate; decays to 0 along a cosine over all steps.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay, applied to every trainable parameter.
    pub weight_decay: f64,
    /// Random crops (and flips, see `hflip`) of the training images.
    pub augment: bool,
    /// Crop padding in pixels.
    pub crop_padding: usize,
    /// Random horizontal flips (with `augment`; right for natural images, wrong for digits).
    pub hflip: bool,
    /// Batch size for evaluation.
    pub eval_batch_size: usize,
    /// Seed of initialisation, shuffling and augmentation.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 200,
            batch_size: 256,
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            augment: true,
            crop_padding: 4,
            hflip: true,
            eval_batch_size: 500,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Reject values no training run can use.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight decay must be >= 0, got {}", self.weight_decay));
        }
        Ok(())
    }

    /// The learning rate at `step` of `total` (cosine from `lr` to 0, per step).
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        0.5 * self.lr * (1.0 + (std::f64::consts::PI * step as f64 / total.max(1) as f64).cos())
    }
}

/// What one epoch did.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training top-1 accuracy (%), on augmented batches.
    pub train_acc: f64,
    /// Test top-1 accuracy (%).
    pub test_acc: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Wall seconds of the epoch (training and evaluation).
    pub seconds: f64,
}

/// The outcome of [`train`].
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Architecture string.
    pub arch: String,
    /// Trainable parameters.
    pub params: usize,
    /// Forward FLOPs per image (NB201 convention).
    pub flops: f64,
    /// Epochs run.
    pub epochs: usize,
    /// Wall seconds spent training and evaluating.
    pub train_seconds: f64,
    /// Device seconds metered (the device was busy with this run for this long; CPU counts as
    /// one device).
    pub device_seconds: f64,
    /// Device the run used.
    pub device: String,
    /// Test top-1 accuracy (%) after the last epoch.
    pub test_acc: f64,
    /// Best test accuracy (%) over the epochs, and its epoch.
    pub best_test_acc: f64,
    /// Epoch of the best test accuracy.
    pub best_epoch: usize,
    /// Training images per second (training steps only).
    pub train_images_per_s: f64,
    /// The weights of the best epoch, when an output directory was given.
    pub weights: Option<PathBuf>,
    /// Per-epoch history.
    pub history: Vec<EpochReport>,
    /// The hyper-parameters.
    pub config: TrainConfig,
}

/// Normalisation constants and augmentation for one dataset, turning raw u8 images into f32
/// batches.
pub struct Batcher {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl Batcher {
    /// For a dataset with these per-channel mean and standard deviation (on the [0, 1] scale).
    pub fn new(mean: &[f32], std: &[f32]) -> Self {
        Batcher {
            mean: mean.to_vec(),
            inv_std: std.iter().map(|s| 1.0 / s).collect(),
        }
    }

    /// Images `idx` of `split` as a normalised `(B, C, H, W)` f32 batch; with `aug`, each image
    /// is randomly cropped from its zero-padded version (padding `pad`) and, when `hflip`,
    /// flipped with probability ½, drawn from `rng`.
    pub fn batch<R: Rng>(&self, split: &Split, idx: &[usize], aug: Option<(usize, bool, &mut R)>, device: &Device) -> Result<(Tensor, Tensor)> {
        let (c, h, w) = (split.c, split.h, split.w);
        let plane = h * w;
        let mut out = vec![0f32; idx.len() * c * plane];
        let mut labels = Vec::with_capacity(idx.len());
        let mut aug = aug;
        for (b, &i) in idx.iter().enumerate() {
            labels.push(split.labels[i]);
            let img = &split.images[i * c * plane..(i + 1) * c * plane];
            let (dy, dx, flip) = match aug.as_mut() {
                Some((pad, hflip, rng)) => {
                    let p = *pad as i64;
                    (
                        rng.random_range(-p..=p) as isize,
                        rng.random_range(-p..=p) as isize,
                        *hflip && rng.random_bool(0.5),
                    )
                }
                None => (0, 0, false),
            };
            for ch in 0..c {
                let src = &img[ch * plane..(ch + 1) * plane];
                let dst = &mut out[(b * c + ch) * plane..(b * c + ch + 1) * plane];
                let (m, s) = (self.mean[ch], self.inv_std[ch]);
                // Padding is zero *before* normalisation (as torchvision pads the raw image).
                let zero = (0.0 - m) * s;
                for y in 0..h {
                    let sy = y as isize + dy;
                    let row = &mut dst[y * w..(y + 1) * w];
                    if sy < 0 || sy >= h as isize {
                        row.fill(zero);
                        continue;
                    }
                    let srow = &src[sy as usize * w..(sy as usize + 1) * w];
                    for (x, d) in row.iter_mut().enumerate() {
                        let xx = if flip { w - 1 - x } else { x };
                        let sx = xx as isize + dx;
                        *d = if sx < 0 || sx >= w as isize {
                            zero
                        } else {
                            (srow[sx as usize] as f32 / 255.0 - m) * s
                        };
                    }
                }
            }
        }
        let xs = Tensor::from_vec(out, (idx.len(), c, h, w), device)?;
        let ys = Tensor::from_vec(labels, idx.len(), device)?;
        Ok((xs, ys))
    }
}

/// SGD with momentum (PyTorch semantics): `g ← ∇ + wd·θ; b ← μ·b + g; θ ← θ − lr·(g + μ·b)`
/// with Nesterov, `θ ← θ − lr·b` without.
pub struct Sgd {
    vars: Vec<(Var, Option<Tensor>)>,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
}

impl Sgd {
    /// An optimiser over `vars`.
    pub fn new(vars: Vec<Var>, momentum: f64, nesterov: bool, weight_decay: f64) -> Self {
        Sgd {
            vars: vars.into_iter().map(|v| (v, None)).collect(),
            momentum,
            nesterov,
            weight_decay,
        }
    }

    /// One step with learning rate `lr`, from the gradients of `loss`.
    pub fn step(&mut self, loss: &Tensor, lr: f64) -> Result<()> {
        let grads = loss.backward()?;
        for (var, buf) in self.vars.iter_mut() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Gradients carry the graph that computed them: detach, or the momentum buffer would
            // keep every past step's activations alive.
            let g = g.detach();
            let w = var.as_tensor().detach();
            let g = if self.weight_decay > 0.0 { (g + (&w * self.weight_decay)?)? } else { g };
            let update = if self.momentum > 0.0 {
                let b = match buf.take() {
                    Some(b) => ((b * self.momentum)? + &g)?,
                    None => g.clone(),
                };
                let u = if self.nesterov { (&g + (&b * self.momentum)?)? } else { b.clone() };
                *buf = Some(b);
                u
            } else {
                g
            };
            var.set(&(w - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// Top-1 accuracy (%) of `model` on `split`, BatchNorm in inference mode.
pub fn evaluate(model: &Model, split: &Split, batcher: &Batcher, batch_size: usize, device: &Device) -> Result<f64> {
    let mut correct = 0usize;
    let idx: Vec<usize> = (0..split.n).collect();
    for chunk in idx.chunks(batch_size) {
        let (xs, ys) = batcher.batch::<rand_chacha::ChaCha8Rng>(split, chunk, None, device)?;
        let pred = argmax(&crate::kernels::in_pool(|| model.net.forward_t(&xs, false))?)?;
        let ys = ys.to_vec1::<u32>()?;
        correct += pred.iter().zip(&ys).filter(|(p, y)| p == y).count();
    }
    Ok(100.0 * correct as f64 / split.n.max(1) as f64)
}

/// Train a freshly initialised network of shape `net_cfg` on `data` and evaluate it after every
/// epoch. With `out_dir`, the best epoch's weights go to `out_dir/best.safetensors` (written to a
/// temporary name and renamed, so a crash never leaves a half-written file under that name).
/// `on_epoch` sees each epoch's report as it finishes.
pub fn train(
    net_cfg: &Nb201Config,
    cfg: &TrainConfig,
    data: &Dataset,
    device: &Device,
    out_dir: Option<&Path>,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> Result<TrainReport> {
    cfg.validate()?;
    let (c, h, w) = data.kind.image_shape();
    if (c, h, w) != (net_cfg.in_channels, net_cfg.input_size, net_cfg.input_size) {
        return Err(Error::Config(format!(
            "network expects {}x{}x{} inputs, dataset {} has {c}x{h}x{w}",
            net_cfg.in_channels,
            net_cfg.input_size,
            net_cfg.input_size,
            data.kind.name()
        )));
    }
    if data.train.n == 0 || data.test.n == 0 {
        return Err(Error::Config(format!("dataset {} has an empty split", data.kind.name())));
    }
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
    }
    let model = Model::new(net_cfg, DType::F32, device, cfg.seed)?;
    let (mean, std) = data.kind.mean_std();
    let batcher = Batcher::new(mean, std);
    let mut opt = Sgd::new(
        model.trainable().into_iter().map(|(_, v)| v).collect(),
        cfg.momentum,
        cfg.nesterov,
        cfg.weight_decay,
    );
    let steps_per_epoch = data.train.n.div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_da7a);
    let mut history = Vec::new();
    let (mut best_acc, mut best_epoch) = (f64::NEG_INFINITY, 0);
    let mut weights = None;
    let mut step = 0usize;
    let mut train_secs = 0.0;
    let started = Instant::now();
    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..data.train.n).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        let mut lr = cfg.lr;
        for chunk in order.chunks(cfg.batch_size) {
            let aug = cfg.augment.then_some((cfg.crop_padding, cfg.hflip, &mut rng));
            let (xs, ys) = batcher.batch(&data.train, chunk, aug, device)?;
            lr = cfg.lr_at(step, total_steps);
            let (logits, loss) = crate::kernels::in_pool(|| -> Result<(Tensor, Tensor)> {
                let logits = model.net.forward_t(&xs, true)?;
                let loss = candle_nn::loss::cross_entropy(&logits, &ys)?;
                opt.step(&loss, lr)?;
                Ok((logits, loss))
            })?;
            step += 1;
            let l = loss.to_scalar::<f32>()? as f64;
            if !l.is_finite() {
                return Err(Error::Config(format!(
                    "training diverged: loss is {l} at epoch {epoch}; lower the learning rate"
                )));
            }
            loss_sum += l * chunk.len() as f64;
            let pred = argmax(&logits)?;
            correct += pred.iter().zip(ys.to_vec1::<u32>()?).filter(|(p, y)| **p == *y).count();
            seen += chunk.len();
        }
        train_secs += t0.elapsed().as_secs_f64();
        let test_acc = evaluate(&model, &data.test, &batcher, cfg.eval_batch_size, device)?;
        let report = EpochReport {
            epoch,
            train_loss: loss_sum / seen as f64,
            train_acc: 100.0 * correct as f64 / seen as f64,
            test_acc,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        on_epoch(&report);
        if test_acc > best_acc {
            best_acc = test_acc;
            best_epoch = epoch;
            if let Some(dir) = out_dir {
                let tmp = dir.join(".best.safetensors.tmp");
                let path = dir.join("best.safetensors");
                model.save(&tmp)?;
                std::fs::rename(&tmp, &path).map_err(|e| Error::Io {
                    path: path.display().to_string(),
                    source: e,
                })?;
                weights = Some(path);
            }
        }
        history.push(report);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(TrainReport {
        arch: net_cfg.arch.to_string(),
        params: model.param_count(),
        flops: net_cfg.flops(),
        epochs: cfg.epochs,
        train_seconds: elapsed,
        device_seconds: elapsed,
        device: device_name(device),
        test_acc: history.last().map(|r| r.test_acc).unwrap_or(0.0),
        best_test_acc: best_acc,
        best_epoch,
        train_images_per_s: (data.train.n * cfg.epochs) as f64 / train_secs.max(1e-9),
        weights,
        history,
        config: cfg.clone(),
    })
}

/// Parse `cpu` or `cuda:N` (also `cuda` for `cuda:0`).
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => Ok(Device::new_cuda(n)?),
            None => Err(Error::Device(s.to_string())),
        },
    }
}

/// A short name of a device (`cpu`, `cuda:0`).
pub fn device_name(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
