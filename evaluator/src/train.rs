//! Training a network on an image dataset: SGD with Nesterov momentum, weight decay, a cosine
//! learning-rate schedule, random-crop and flip augmentation, per-channel normalisation; top-1
//! accuracy on a validation split after every epoch, the weights of the best (or the last) epoch
//! kept and saved as safetensors and measured once on the test split; device time metered.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, DatasetKind, Split};
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

/// Which epoch's weights a training run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Select {
    /// The epoch with the best accuracy on the validation split (the first among equals).
    #[default]
    Valid,
    /// The last epoch.
    Last,
}

impl Select {
    /// `valid` or `last`.
    pub fn name(&self) -> &'static str {
        match self {
            Select::Valid => "valid",
            Select::Last => "last",
        }
    }
}

impl std::str::FromStr for Select {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "valid" => Ok(Select::Valid),
            "last" => Ok(Select::Last),
            other => Err(format!("unknown selection '{other}' (valid or last)")),
        }
    }
}

/// The splits of a training run.
#[derive(Debug, Clone, Copy)]
pub struct Splits<'a> {
    /// The dataset the splits come from.
    pub kind: DatasetKind,
    /// Trained on.
    pub train: &'a Split,
    /// Measured after every epoch (the validation hold-out); [`Select::Valid`] keeps its best epoch.
    pub valid: Option<&'a Split>,
    /// Measured once, with the kept weights, after the training.
    pub test: Option<&'a Split>,
}

impl<'a> Splits<'a> {
    /// A search split ([`crate::data::search_split`]: the training part, the validation hold-out
    /// as its `test`): trained on its `train`, validated on its hold-out, no test split.
    pub fn search(data: &'a Dataset) -> Self {
        Splits {
            kind: data.kind,
            train: &data.train,
            valid: Some(&data.test),
            test: None,
        }
    }
}

/// What a training run reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A training step ended: step `batch` of `batches` of epoch `epoch`; `loss` is the epoch's
    /// mean training loss so far.
    Batch {
        /// 1-based epoch number.
        epoch: usize,
        /// 1-based step within the epoch.
        batch: usize,
        /// Steps per epoch.
        batches: usize,
        /// Mean training loss of the epoch so far.
        loss: f64,
    },
    /// An epoch ended.
    Epoch(&'a EpochReport),
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
    /// Top-1 accuracy (%) on the validation split, when there is one.
    pub valid_acc: Option<f64>,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Wall seconds of the epoch (training and validation).
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
    /// Epochs trained in all (those of a checkpoint it continued included).
    pub epochs: usize,
    /// Epochs done before this run (by the checkpoint it continued; 0 for a fresh run).
    pub start_epoch: usize,
    /// Wall seconds spent training and evaluating.
    pub train_seconds: f64,
    /// Device seconds metered (the device was busy with this run for this long; CPU counts as
    /// one device).
    pub device_seconds: f64,
    /// Device the run used.
    pub device: String,
    /// How the kept weights were chosen.
    pub select: Select,
    /// Images trained on.
    pub train_images: usize,
    /// Images of the validation split (0 without one).
    pub valid_images: usize,
    /// Images of the test split (0 without one).
    pub test_images: usize,
    /// The epoch whose weights were kept.
    pub selected_epoch: usize,
    /// Validation accuracy (%) of the kept weights, without a validation split `None`.
    pub valid_acc: Option<f64>,
    /// Test accuracy (%) of the kept weights, measured once after the training; without a test
    /// split `None`.
    pub test_acc: Option<f64>,
    /// Training images per second (training steps only).
    pub train_images_per_s: f64,
    /// The file the kept weights were saved to, when one was given.
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

    /// The momentum buffer of every variable, in the order of [`Sgd::new`] (`None` before its
    /// first step).
    pub fn buffers(&self) -> Vec<Option<Tensor>> {
        self.vars.iter().map(|(_, b)| b.clone()).collect()
    }

    /// Set the momentum buffers (as [`Sgd::buffers`] gave them).
    pub fn set_buffers(&mut self, buffers: Vec<Option<Tensor>>) -> Result<()> {
        if buffers.len() != self.vars.len() {
            return Err(Error::Config(format!("{} momentum buffers for {} variables", buffers.len(), self.vars.len())));
        }
        for ((var, slot), b) in self.vars.iter_mut().zip(buffers) {
            if let Some(b) = &b {
                if b.shape() != var.shape() {
                    return Err(Error::Config(format!("a momentum buffer of shape {:?} for a variable of shape {:?}", b.shape(), var.shape())));
                }
            }
            *slot = b;
        }
        Ok(())
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

/// Check that `splits` suit the network and the selection.
fn check_splits(net_cfg: &Nb201Config, splits: &Splits, select: Select) -> Result<()> {
    let (c, h, w) = splits.kind.image_shape();
    let name = splits.kind.name();
    if (c, h, w) != (net_cfg.in_channels, net_cfg.input_size, net_cfg.input_size) {
        return Err(Error::Config(format!(
            "network expects {}x{}x{} inputs, dataset {name} has {c}x{h}x{w}",
            net_cfg.in_channels, net_cfg.input_size, net_cfg.input_size,
        )));
    }
    let empty = |s: Option<&Split>| s.is_some_and(|s| s.n == 0);
    if splits.train.n == 0 || empty(splits.valid) || empty(splits.test) {
        return Err(Error::Config(format!("dataset {name} has an empty split")));
    }
    if select == Select::Valid && splits.valid.is_none() {
        return Err(Error::Config("selecting the best epoch on validation needs a validation split".into()));
    }
    Ok(())
}

/// Save `model` to `path` (written to a temporary name and renamed, so a crash never leaves a
/// half-written file under that name).
fn save_weights(model: &Model, path: &Path) -> Result<()> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e| Error::Io { path: p, source: e }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    model.save(&tmp)?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// One SGD step on the images `chunk` of `split` (augmented with `aug`): the batch's mean loss
/// and how many of its images the network classified right before the update.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgd_step<R: Rng>(
    model: &Model,
    opt: &mut Sgd,
    batcher: &Batcher,
    split: &Split,
    chunk: &[usize],
    aug: Option<(usize, bool, &mut R)>,
    lr: f64,
    device: &Device,
) -> Result<(f64, usize)> {
    let (xs, ys) = batcher.batch(split, chunk, aug, device)?;
    let (logits, loss) = crate::kernels::in_pool(|| -> Result<(Tensor, Tensor)> {
        let logits = model.net.forward_t(&xs, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &ys)?;
        opt.step(&loss, lr)?;
        Ok((logits, loss))
    })?;
    let pred = argmax(&logits)?;
    let right = pred.iter().zip(ys.to_vec1::<u32>()?).filter(|(p, y)| **p == *y).count();
    Ok((loss.to_scalar::<f32>()? as f64, right))
}

/// Where a training run starts from and what it leaves besides its report.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainFiles<'a> {
    /// Save the kept weights here.
    pub weights: Option<&'a Path>,
    /// Continue from this checkpoint ([`crate::checkpoint`]): its epochs are done, the run
    /// trains the rest up to `epochs`.
    pub resume: Option<&'a Path>,
    /// Save a checkpoint of the last epoch here (weights, momentum, epochs done).
    pub checkpoint: Option<&'a Path>,
}

/// Train a freshly initialised network of shape `net_cfg` on `splits.train`, measure it on
/// `splits.valid` after every epoch, keep the weights of the epoch `select` chooses (the best on
/// validation, or the last), then measure those once on `splits.test`. With `weights`, the kept
/// weights are saved to that file. `progress` sees every step and every epoch as it ends.
pub fn train(
    net_cfg: &Nb201Config,
    cfg: &TrainConfig,
    splits: &Splits,
    select: Select,
    device: &Device,
    weights: Option<&Path>,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainReport> {
    let files = TrainFiles { weights, ..TrainFiles::default() };
    train_with(net_cfg, cfg, splits, select, device, &files, progress)
}

/// [`train`], possibly continued from a checkpoint and leaving one (see [`TrainFiles`]).
///
/// The learning rate follows a cosine from `cfg.lr` to 0 over the epochs this call trains: a
/// run continued from epoch `e` to `cfg.epochs` anneals again from `cfg.lr` (a warm restart, as
/// SGDR does), so every stretch of training ends annealed and its validation accuracy is that
/// of a finished training, which is what a scheduler compares candidates on.
pub fn train_with(
    net_cfg: &Nb201Config,
    cfg: &TrainConfig,
    splits: &Splits,
    select: Select,
    device: &Device,
    files: &TrainFiles,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainReport> {
    cfg.validate()?;
    check_splits(net_cfg, splits, select)?;
    let started = Instant::now();
    let mut t = Trainer::new(net_cfg, cfg, splits, device, files.resume)?;
    if t.done >= cfg.epochs {
        return Err(Error::Config(format!(
            "the checkpoint has {} epochs done, the training asks for {} in all",
            t.done, cfg.epochs
        )));
    }
    let start_epoch = t.done;
    let mut history: Vec<EpochReport> = Vec::new();
    // The best epoch on validation so far: its number, accuracy and weights.
    let mut best: Option<(usize, f64, Snapshot)> = None;
    let mut train_secs = 0.0;
    for epoch in start_epoch + 1..=cfg.epochs {
        let t0 = Instant::now();
        let (train_loss, train_acc, lr) = t.epoch(epoch, progress)?;
        train_secs += t0.elapsed().as_secs_f64();
        let valid_acc = match splits.valid {
            Some(v) => Some(evaluate(&t.model, v, &t.batcher, cfg.eval_batch_size, device)?),
            None => None,
        };
        let report = EpochReport {
            epoch,
            train_loss,
            train_acc,
            valid_acc,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        progress(Progress::Epoch(&report));
        if let (Select::Valid, Some(acc)) = (select, valid_acc) {
            if best.as_ref().is_none_or(|(_, b, _)| acc > *b) {
                best = Some((epoch, acc, Snapshot::of(&t.model)?));
            }
        }
        history.push(report);
    }
    if let Some(path) = files.checkpoint {
        crate::checkpoint::save(&t.model, &t.opt, cfg.epochs, path)?;
    }
    let (selected_epoch, valid_acc) = match best {
        Some((epoch, acc, snapshot)) => {
            snapshot.restore(&mut t.model)?;
            (epoch, Some(acc))
        }
        None => (cfg.epochs, history.last().and_then(|r| r.valid_acc)),
    };
    if let Some(path) = files.weights {
        save_weights(&t.model, path)?;
    }
    let test_acc = match splits.test {
        Some(s) => Some(evaluate(&t.model, s, &t.batcher, cfg.eval_batch_size, device)?),
        None => None,
    };
    let elapsed = started.elapsed().as_secs_f64();
    Ok(TrainReport {
        arch: net_cfg.arch.to_string(),
        params: t.model.param_count(),
        flops: net_cfg.flops(),
        epochs: cfg.epochs,
        start_epoch,
        train_seconds: elapsed,
        device_seconds: elapsed,
        device: device_name(device),
        select,
        train_images: splits.train.n,
        valid_images: splits.valid.map_or(0, |s| s.n),
        test_images: splits.test.map_or(0, |s| s.n),
        selected_epoch,
        valid_acc,
        test_acc,
        train_images_per_s: (splits.train.n * (cfg.epochs - start_epoch)) as f64 / train_secs.max(1e-9),
        weights: files.weights.map(Path::to_path_buf),
        history,
        config: cfg.clone(),
    })
}

/// The state of a training run between epochs.
struct Trainer<'a> {
    model: Model,
    opt: Sgd,
    batcher: Batcher,
    rng: rand_chacha::ChaCha8Rng,
    cfg: &'a TrainConfig,
    train: &'a Split,
    device: &'a Device,
    /// Epochs done before this run (from a checkpoint).
    done: usize,
    /// Steps taken in this run.
    step: usize,
}

impl<'a> Trainer<'a> {
    fn new(net_cfg: &Nb201Config, cfg: &'a TrainConfig, splits: &Splits<'a>, device: &'a Device, resume: Option<&Path>) -> Result<Self> {
        let mut model = Model::new(net_cfg, DType::F32, device, cfg.seed)?;
        let (mean, std) = splits.kind.mean_std();
        let mut opt = Sgd::new(
            model.trainable().into_iter().map(|(_, v)| v).collect(),
            cfg.momentum,
            cfg.nesterov,
            cfg.weight_decay,
        );
        let done = match resume {
            Some(path) => crate::checkpoint::load(&mut model, &mut opt, path, device)?,
            None => 0,
        };
        // A continued run draws other shuffles and crops than the epochs it continues.
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_da7a ^ (done as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Ok(Trainer {
            model,
            opt,
            batcher: Batcher::new(mean, std),
            rng,
            cfg,
            train: splits.train,
            device,
            done,
            step: 0,
        })
    }

    /// Train epoch `epoch`: its mean loss, training accuracy (%) and last learning rate.
    fn epoch(&mut self, epoch: usize, progress: &mut dyn FnMut(Progress)) -> Result<(f64, f64, f64)> {
        let cfg = self.cfg;
        let steps_per_epoch = self.train.n.div_ceil(cfg.batch_size);
        let total_steps = steps_per_epoch * (cfg.epochs - self.done);
        let mut order: Vec<usize> = (0..self.train.n).collect();
        order.shuffle(&mut self.rng);
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        let mut lr = cfg.lr;
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let aug = cfg.augment.then_some((cfg.crop_padding, cfg.hflip, &mut self.rng));
            lr = cfg.lr_at(self.step, total_steps);
            let (l, right) = sgd_step(&self.model, &mut self.opt, &self.batcher, self.train, chunk, aug, lr, self.device)?;
            self.step += 1;
            if !l.is_finite() {
                return Err(Error::Config(format!(
                    "training diverged: loss is {l} at epoch {epoch}; lower the learning rate"
                )));
            }
            loss_sum += l * chunk.len() as f64;
            correct += right;
            seen += chunk.len();
            progress(Progress::Batch {
                epoch,
                batch: b + 1,
                batches: steps_per_epoch,
                loss: loss_sum / seen as f64,
            });
        }
        Ok((loss_sum / seen as f64, 100.0 * correct as f64 / seen as f64, lr))
    }
}

/// A copy of every variable of a model (weights and BatchNorm running statistics).
struct Snapshot(Vec<(String, Tensor)>);

impl Snapshot {
    fn of(model: &Model) -> Result<Self> {
        let data = model.varmap.data().lock().expect("varmap lock");
        let vars = data.iter().map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?))).collect::<Result<_>>()?;
        Ok(Snapshot(vars))
    }

    fn restore(self, model: &mut Model) -> Result<()> {
        let data = model.varmap.data().lock().expect("varmap lock");
        for (name, t) in self.0 {
            if let Some(v) = data.get(&name) {
                v.set(&t)?;
            }
        }
        Ok(())
    }
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
