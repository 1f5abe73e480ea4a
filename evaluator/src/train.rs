//! Training a network on an image dataset: SGD with Nesterov momentum, weight decay, a cosine
//! learning-rate schedule, random-crop, flip and cutout augmentation, per-channel normalisation,
//! optionally label-smoothed cross-entropy; top-1
//! accuracy on a validation split after every epoch, the weights of the best (or the last) epoch
//! kept and saved as safetensors and measured once on the test split; device time metered.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
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
    /// Cutout (DeVries & Taylor, 2017) side length `L` in pixels; 0 (the default) is off.
    ///
    /// On training batches only, after the normalisation and after the crop and flip (when
    /// `augment` is on; cutout applies without them too), each image gets a centre `(cy, cx)`
    /// drawn uniformly over its pixels from the run's seeded generator, and rows
    /// `[cy - L/2, cy + L/2)` × the same columns around `cx` (integer halves, clipped at the
    /// border) are set to 0 in every channel, i.e. to the dataset mean. As `cutout()` and
    /// `Batcher.batch()` of `benchmarks/reference/budget_optuna.py` (so an odd `L` cuts
    /// `L - 1` rows and columns, a centre near the border fewer). A run rejects an `L` larger
    /// than its images' side (an [`Error::Config`] naming it). Left out of the serialised form
    /// when 0, so configurations without cutout read and write as before.
    #[serde(skip_serializing_if = "is_zero")]
    pub cutout: usize,
    /// Label smoothing `ε` of the training loss, in [0, 1); 0 (the default) is plain
    /// cross-entropy.
    ///
    /// The loss is PyTorch's `F.cross_entropy(logits, y, label_smoothing=ε)`:
    /// `(1 - ε)·(−log p_y) + ε·mean_k(−log p_k)` over the `K` classes, averaged over the batch
    /// (the reference script's loss). The reported training loss is this smoothed loss; the
    /// accuracies are unaffected. Left out of the serialised form when 0.
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub label_smoothing: f64,
    /// Seconds from the start of training after which no epoch starts that the epochs so far
    /// say would not end in time: the training then ends early with the weights it has (the
    /// learning rate not annealed to 0) and reports the epochs it trained. `None` (the default)
    /// trains every epoch. A run's final model uses it so that a budget that ran short still
    /// leaves a model measured on the test split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<f64>,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
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
            cutout: 0,
            label_smoothing: 0.0,
            time_limit: None,
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
        if !(self.label_smoothing.is_finite() && (0.0..1.0).contains(&self.label_smoothing)) {
            return bad(format!("label smoothing must be in [0, 1), got {}", self.label_smoothing));
        }
        Ok(())
    }

    /// Reject a cutout larger than the `h`×`w` images of `name` (what [`TrainConfig::validate`]
    /// cannot check without the images).
    pub fn check_cutout(&self, h: usize, w: usize, name: &str) -> Result<()> {
        if self.cutout > h.min(w) {
            return Err(Error::Config(format!(
                "cutout {} is larger than the {h}x{w} images of {name} (at most {})",
                self.cutout,
                h.min(w)
            )));
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
        let (out, labels) = self.pixels(split, idx, aug);
        let xs = Tensor::from_vec(out, (idx.len(), split.c, split.h, split.w), device)?;
        let ys = Tensor::from_vec(labels, idx.len(), device)?;
        Ok((xs, ys))
    }

    /// A training batch: [`Batcher::batch`] with the crop and flip `crop` (`(pad, hflip)`, `None`
    /// for none), then, when `cutout_len` > 0, [`cutout`] of side `cutout_len` on every image at a centre
    /// drawn uniformly over the image from `rng` (after the batch's crop and flip draws: row, then
    /// column, image by image). With neither, the batch and the draws are those of
    /// [`Batcher::batch`] without augmentation.
    pub fn train_batch<R: Rng>(
        &self,
        split: &Split,
        idx: &[usize],
        crop: Option<(usize, bool)>,
        cutout_len: usize,
        rng: &mut R,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let (c, h, w) = (split.c, split.h, split.w);
        let (mut out, labels) = self.pixels(split, idx, crop.map(|(pad, hflip)| (pad, hflip, &mut *rng)));
        if cutout_len > 0 {
            // Zeroed in the host buffer before the batch becomes a tensor: the same as the
            // reference's multiplication by a 0/1 mask, with no tensor operation at all.
            for img in out.chunks_exact_mut(c * h * w) {
                let cy = rng.random_range(0..h);
                let cx = rng.random_range(0..w);
                cutout(img, c, h, w, cy, cx, cutout_len);
            }
        }
        let xs = Tensor::from_vec(out, (idx.len(), c, h, w), device)?;
        let ys = Tensor::from_vec(labels, idx.len(), device)?;
        Ok((xs, ys))
    }

    /// The pixels (normalised, NCHW) and labels of [`Batcher::batch`].
    fn pixels<R: Rng>(&self, split: &Split, idx: &[usize], aug: Option<(usize, bool, &mut R)>) -> (Vec<f32>, Vec<u32>) {
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
        (out, labels)
    }
}

/// DeVries & Taylor's cutout on one normalised `c`×`h`×`w` image (CHW): rows
/// `[cy - length/2, cy + length/2)` × columns `[cx - length/2, cx + length/2)` (integer halves,
/// clipped at the border) set to 0 in every channel, as `cutout()` of
/// `benchmarks/reference/budget_optuna.py`. `length` 0 changes nothing.
pub fn cutout(img: &mut [f32], c: usize, h: usize, w: usize, cy: usize, cx: usize, length: usize) {
    assert_eq!(img.len(), c * h * w, "cutout: an image of {} values is not {c}x{h}x{w}", img.len());
    let half = length / 2;
    let (r0, r1) = (cy.saturating_sub(half), (cy + half).min(h));
    let (c0, c1) = (cx.saturating_sub(half), (cx + half).min(w));
    if r0 >= r1 || c0 >= c1 {
        return;
    }
    for plane in img.chunks_exact_mut(h * w) {
        for row in plane.chunks_exact_mut(w).take(r1).skip(r0) {
            row[c0..c1].fill(0.0);
        }
    }
}

/// The training loss: PyTorch's `F.cross_entropy(logits, targets, label_smoothing=eps)` on
/// `(B, K)` logits and `B` u32 targets, i.e. `(1 - eps)·NLL + eps·mean_k(−log softmax_k)`,
/// averaged over the batch. `eps` 0 is exactly [`candle_nn::loss::cross_entropy`].
pub fn smoothed_cross_entropy(logits: &Tensor, targets: &Tensor, eps: f64) -> Result<Tensor> {
    if eps == 0.0 {
        return Ok(candle_nn::loss::cross_entropy(logits, targets)?);
    }
    if logits.rank() != 2 {
        return Err(Error::Config(format!(
            "cross-entropy expects (batch, classes) logits, got shape {:?}",
            logits.dims()
        )));
    }
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = candle_nn::loss::nll(&logp, targets)?;
    // mean over the batch and the classes = mean over the batch of mean_k.
    let uniform = logp.mean_all()?;
    Ok((nll.affine(1.0 - eps, 0.0)? + uniform.affine(-eps, 0.0)?)?)
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
                    return Err(Error::Config(format!(
                        "a momentum buffer of shape {:?} for a variable of shape {:?}",
                        b.shape(),
                        var.shape()
                    )));
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

/// One SGD step on the images `chunk` of `split`, augmented as `cfg` says (crop and flip with
/// `augment`, `cutout`; drawn from `rng`) and with `cfg`'s label smoothing: the batch's mean
/// (smoothed) loss and how many of its images the network classified right before the update.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgd_step<R: Rng>(
    model: &Model,
    opt: &mut Sgd,
    batcher: &Batcher,
    split: &Split,
    chunk: &[usize],
    cfg: &TrainConfig,
    rng: &mut R,
    lr: f64,
    device: &Device,
) -> Result<(f64, usize)> {
    let crop = cfg.augment.then_some((cfg.crop_padding, cfg.hflip));
    let (xs, ys) = batcher.train_batch(split, chunk, crop, cfg.cutout, rng, device)?;
    let (logits, loss) = crate::kernels::in_pool(|| -> Result<(Tensor, Tensor)> {
        let logits = model.net.forward_t(&xs, true)?;
        let loss = smoothed_cross_entropy(&logits, &ys, cfg.label_smoothing)?;
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
    let files = TrainFiles {
        weights,
        ..TrainFiles::default()
    };
    train_with(net_cfg, cfg, splits, select, device, &files, progress)
}

/// Whether the next epoch would end past `limit` seconds, at the mean length of the epochs in
/// `history`, `elapsed` seconds into the training (never before the first epoch).
fn out_of_time(limit: Option<f64>, elapsed: f64, history: &[EpochReport]) -> bool {
    match (limit, history.is_empty()) {
        (Some(limit), false) => elapsed + history.iter().map(|r| r.seconds).sum::<f64>() / history.len() as f64 > limit,
        _ => false,
    }
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
    cfg.check_cutout(splits.train.h, splits.train.w, splits.kind.name())?;
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
        if out_of_time(cfg.time_limit, started.elapsed().as_secs_f64(), &history) {
            break;
        }
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
    let trained = history.last().map_or(start_epoch, |r| r.epoch);
    if let Some(path) = files.checkpoint {
        crate::checkpoint::save(&t.model, &t.opt, trained, path)?;
    }
    let (selected_epoch, valid_acc) = match best {
        Some((epoch, acc, snapshot)) => {
            snapshot.restore(&mut t.model)?;
            (epoch, Some(acc))
        }
        None => (trained, history.last().and_then(|r| r.valid_acc)),
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
        epochs: trained,
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
        train_images_per_s: (splits.train.n * (trained - start_epoch)) as f64 / train_secs.max(1e-9),
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
            lr = cfg.lr_at(self.step, total_steps);
            let (l, right) = sgd_step(
                &self.model,
                &mut self.opt,
                &self.batcher,
                self.train,
                chunk,
                cfg,
                &mut self.rng,
                lr,
                self.device,
            )?;
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

#[cfg(test)]
mod tests {

    #[test]
    fn a_time_limit_stops_before_an_epoch_that_would_end_past_it() {
        let epoch = |seconds| EpochReport {
            epoch: 1,
            train_loss: 0.0,
            train_acc: 0.0,
            valid_acc: None,
            lr: 0.0,
            seconds,
        };
        assert!(!out_of_time(None, 1e9, &[epoch(10.0)]));
        assert!(!out_of_time(Some(1.0), 5.0, &[]), "the first epoch always runs");
        assert!(!out_of_time(Some(30.0), 20.0, &[epoch(8.0), epoch(12.0)]));
        assert!(out_of_time(Some(30.0), 21.0, &[epoch(8.0), epoch(12.0)]));
    }
    use super::*;
    use rand_chacha::ChaCha8Rng;

    fn zeros(img: &[f32]) -> usize {
        img.iter().filter(|v| **v == 0.0).count()
    }

    #[test]
    fn cutout_at_a_corner_is_clipped_as_the_reference() {
        // The reference's self-check: L = 4 centred at (0, 5) on a 6x6 image of ones zeroes rows
        // [-2, 2) and columns [3, 7), clipped: rows 0-1, columns 3-5.
        let mut img = vec![1f32; 36];
        cutout(&mut img, 1, 6, 6, 0, 5, 4);
        assert_eq!(zeros(&img), 6);
        for y in 0..6 {
            for x in 0..6 {
                let cut = y < 2 && x >= 3;
                assert_eq!(img[y * 6 + x], if cut { 0.0 } else { 1.0 }, "pixel ({y}, {x})");
            }
        }
    }

    #[test]
    fn cutout_inside_zeroes_a_square_in_every_channel() {
        let mut img = vec![1f32; 3 * 36];
        cutout(&mut img, 3, 6, 6, 3, 3, 4);
        for ch in 0..3 {
            let plane = &img[ch * 36..(ch + 1) * 36];
            assert_eq!(zeros(plane), 16, "channel {ch}");
            for y in 0..6 {
                for x in 0..6 {
                    let cut = (1..5).contains(&y) && (1..5).contains(&x);
                    assert_eq!(plane[y * 6 + x], if cut { 0.0 } else { 1.0 }, "channel {ch} pixel ({y}, {x})");
                }
            }
        }
        // An odd side cuts 2 * (L / 2) rows and columns, as the reference does.
        let mut img = vec![1f32; 64];
        cutout(&mut img, 1, 8, 8, 4, 4, 5);
        assert_eq!(zeros(&img), 16);
        // Length 0 and 1 change nothing; the whole image at most.
        for l in [0, 1] {
            let mut img = vec![1f32; 36];
            cutout(&mut img, 1, 6, 6, 2, 2, l);
            assert_eq!(zeros(&img), 0);
        }
        let mut img = vec![1f32; 36];
        cutout(&mut img, 1, 6, 6, 3, 3, 6);
        assert_eq!(zeros(&img), 36);
    }

    /// A small split of arbitrary pixels.
    fn split(n: usize, c: usize, h: usize, w: usize) -> Split {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        Split {
            images: (0..n * c * h * w).map(|_| rng.random::<u8>()).collect(),
            labels: (0..n as u32).map(|i| i % 10).collect(),
            n,
            c,
            h,
            w,
        }
    }

    #[test]
    fn train_batch_without_cutout_is_the_plain_batch() {
        let s = split(6, 3, 8, 8);
        let batcher = Batcher::new(&[0.4, 0.5, 0.6], &[0.2, 0.25, 0.3]);
        let idx = [4, 0, 2];
        for crop in [None, Some((2, true)), Some((4, false))] {
            let (mut r1, mut r2) = (ChaCha8Rng::seed_from_u64(9), ChaCha8Rng::seed_from_u64(9));
            let (a, la) = batcher.train_batch(&s, &idx, crop, 0, &mut r1, &Device::Cpu).unwrap();
            let aug = crop.map(|(p, f)| (p, f, &mut r2));
            let (b, lb) = batcher.batch(&s, &idx, aug, &Device::Cpu).unwrap();
            let bits = |t: &Tensor| {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&a), bits(&b), "crop {crop:?}");
            assert_eq!(la.to_vec1::<u32>().unwrap(), lb.to_vec1::<u32>().unwrap());
            // The same draws: the generators are where they were.
            assert_eq!(r1.random::<u64>(), r2.random::<u64>(), "crop {crop:?}");
        }
    }

    #[test]
    fn train_batch_cuts_out_after_crop_flip_and_normalisation() {
        let (c, h, w, l) = (3, 8, 8, 4);
        let s = split(5, c, h, w);
        let batcher = Batcher::new(&[0.4, 0.5, 0.6], &[0.2, 0.25, 0.3]);
        let idx = [0, 1, 2, 3, 4];
        for crop in [None, Some((2, true))] {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let (got, _) = batcher.train_batch(&s, &idx, crop, l, &mut rng, &Device::Cpu).unwrap();
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // The same batch by hand: the crop and flip draws, then a centre (row, column) per image.
            let mut want_rng = ChaCha8Rng::seed_from_u64(11);
            let aug = crop.map(|(p, f)| (p, f, &mut want_rng));
            let (plain, _) = batcher.batch(&s, &idx, aug, &Device::Cpu).unwrap();
            let mut want = plain.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let plain = want.clone();
            let mut cut_somewhere = false;
            for img in want.chunks_exact_mut(c * h * w) {
                let (cy, cx) = (want_rng.random_range(0..h), want_rng.random_range(0..w));
                cutout(img, c, h, w, cy, cx, l);
                cut_somewhere |= cy > 0 && cx > 0;
            }
            assert!(cut_somewhere);
            assert_eq!(got, want, "crop {crop:?}");
            assert_ne!(got, plain, "crop {crop:?}: nothing was cut out");
            // Every image lost at most L x L pixels per channel, to 0, the same ones in each channel.
            for (g, p) in got.chunks_exact(c * h * w).zip(plain.chunks_exact(c * h * w)) {
                assert!(g.iter().zip(p).all(|(g, p)| g == p || *g == 0.0));
                let masks: Vec<Vec<bool>> = (0..c).map(|ch| (0..h * w).map(|i| g[ch * h * w + i] != p[ch * h * w + i]).collect()).collect();
                assert!(masks.iter().all(|m| m.iter().filter(|b| **b).count() <= l * l));
                assert!(masks.windows(2).all(|m| m[0] == m[1]));
            }
            assert_eq!(rng.random::<u64>(), want_rng.random::<u64>());
        }
    }

    /// −log softmax of one row, in f64.
    fn neg_log_softmax(row: &[f64]) -> Vec<f64> {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        row.iter().map(|v| lse - v).collect()
    }

    #[test]
    fn smoothed_cross_entropy_is_pytorchs() {
        let rows = [[1.0f64, 2.0, 0.5], [0.2, -1.0, 3.0]];
        let ys = [1u32, 0];
        let logits = Tensor::new(&[[1.0f32, 2.0, 0.5], [0.2, -1.0, 3.0]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&ys, &Device::Cpu).unwrap();
        let loss = |eps: f64, l: &Tensor, t: &Tensor| smoothed_cross_entropy(l, t, eps).unwrap().to_scalar::<f32>().unwrap() as f64;
        // Closed form: (1 - eps) * (-log p_y) + eps * mean_k(-log p_k), averaged over the rows.
        let closed = |eps: f64| {
            rows.iter()
                .zip(ys)
                .map(|(r, y)| {
                    let nl = neg_log_softmax(r);
                    (1.0 - eps) * nl[y as usize] + eps * nl.iter().sum::<f64>() / 3.0
                })
                .sum::<f64>()
                / 2.0
        };
        // By hand (python, math.log/exp): the first row alone with eps 0.1, the batch with 0 and 0.1.
        let first = loss(0.1, &logits.narrow(0, 0, 1).unwrap(), &targets.narrow(0, 0, 1).unwrap());
        assert!((first - 0.5477021174412785).abs() < 1e-6, "{first}");
        assert!((closed(0.0) - 1.6702599808789607).abs() < 1e-12);
        assert!((closed(0.1) - 1.6852599808789608).abs() < 1e-12);
        for eps in [0.0, 0.1, 0.25, 0.9] {
            let got = loss(eps, &logits, &targets);
            assert!((got - closed(eps)).abs() < 1e-6, "eps {eps}: {got} vs {}", closed(eps));
        }
        // eps 0 is the plain cross-entropy, bit for bit.
        let plain = candle_nn::loss::cross_entropy(&logits, &targets).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!((loss(0.0, &logits, &targets) as f32).to_bits(), plain.to_bits());
        // And in f64 (logits given in f64: 0.2 as an f32 is not 0.2).
        let l64 = Tensor::new(&rows, &Device::Cpu).unwrap();
        let got = smoothed_cross_entropy(&l64, &targets, 0.1).unwrap().to_scalar::<f64>().unwrap();
        assert!((got - closed(0.1)).abs() < 1e-12, "{got}");
    }

    #[test]
    fn smoothed_cross_entropy_gradient_targets_the_smoothed_labels() {
        // d loss / d logits = (softmax - ((1 - eps) * onehot + eps / K)) / B.
        let eps = 0.2;
        let row = [0.3f64, -0.7, 1.1, 0.0];
        let z = Var::new(&[[0.3f64, -0.7, 1.1, 0.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[2u32], &Device::Cpu).unwrap();
        let loss = smoothed_cross_entropy(z.as_tensor(), &y, eps).unwrap();
        let grad = loss
            .backward()
            .unwrap()
            .get(z.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let nl = neg_log_softmax(&row);
        for k in 0..4 {
            let want = (-nl[k]).exp() - (if k == 2 { 1.0 - eps } else { 0.0 } + eps / 4.0);
            assert!((grad[k] - want).abs() < 1e-12, "class {k}: {} vs {want}", grad[k]);
        }
    }

    #[test]
    fn validate_rejects_bad_label_smoothing() {
        for eps in [-0.1, 1.0, 1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let cfg = TrainConfig {
                label_smoothing: eps,
                ..TrainConfig::default()
            };
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains("label smoothing must be in [0, 1)"), "{eps}: {e}");
        }
        for eps in [0.0, 0.1, 0.999] {
            TrainConfig {
                label_smoothing: eps,
                ..TrainConfig::default()
            }
            .validate()
            .unwrap();
        }
    }

    #[test]
    fn check_cutout_rejects_more_than_the_image_side() {
        let cfg = |l| TrainConfig {
            cutout: l,
            ..TrainConfig::default()
        };
        cfg(0).check_cutout(28, 28, "fashion-mnist").unwrap();
        cfg(28).check_cutout(28, 28, "fashion-mnist").unwrap();
        let e = cfg(29).check_cutout(28, 28, "fashion-mnist").unwrap_err();
        assert!(matches!(e, Error::Config(_)));
        let e = e.to_string();
        assert!(e.contains("cutout 29") && e.contains("28x28") && e.contains("fashion-mnist"), "{e}");
    }
}
