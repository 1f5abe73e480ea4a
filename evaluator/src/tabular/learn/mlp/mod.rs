//! A multilayer perceptron built with candle: its shape (depth, width, activation, dropout,
//! BatchNorm) is what the zero-cost proxies rank before any is trained ([`proxy`]), its training
//! is AdamW on minibatches of the pipeline's scaled columns (cross-entropy for classes, squared
//! error on the standardised target for values).
//!
//! A validated fit stops early on [`STOPPING_SHARE`] of its own training rows held out, never on
//! the fold's validation rows (their out-of-fold score would then be optimistic, and the
//! ensemble would trust it): the weights of the epoch with the lowest held-out loss are kept,
//! after [`PATIENCE`] epochs without a better one or a loss below [`CONVERGED_LOSS`]; a refit on
//! every row trains for the epochs the folds found. The fit's deadline ends any training.
//!
//! A fitted MLP keeps its variables by name as plain numbers, so that it serialises with the
//! rest of a pipeline; predictions rebuild the network from them on the CPU.

mod net;
pub mod proxy;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

pub use net::{Activation, BnMode, MlpNet, MlpShape};

use super::{finite, Fit, LearnError};
use crate::tabular::matrix::Matrix;
use crate::tabular::problem::Problem;

/// Epochs without a better validation loss before the training stops.
pub const PATIENCE: usize = 8;

/// A validation loss below this (cross-entropy, or squared error of the standardised target)
/// ends the training: the rows are fitted (a separable table's loss keeps shrinking for
/// hundreds of epochs without changing a prediction).
pub const CONVERGED_LOSS: f64 = 1e-3;

/// Rows a prediction pass takes at a time.
const PREDICT_CHUNK: usize = 4096;

/// An MLP's hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpParams {
    /// Hidden layers.
    pub layers: usize,
    /// Units of each hidden layer.
    pub width: usize,
    /// Activation of the hidden layers.
    pub activation: Activation,
    /// Dropout after each hidden layer.
    pub dropout: f64,
    /// BatchNorm after each hidden linear layer.
    pub batch_norm: bool,
    /// AdamW's step size.
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Rows a minibatch.
    pub batch_size: usize,
    /// Epochs at most (early stopping usually ends sooner).
    pub epochs: usize,
}

/// A network's variables: name, dimensions, values.
pub type Variables = Vec<(String, Vec<usize>, Vec<f32>)>;

/// A fitted MLP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedMlp {
    /// Hyperparameters.
    pub params: MlpParams,
    /// The network's shape.
    pub shape: MlpShape,
    /// Every variable: name, dimensions, values.
    pub state: Variables,
    /// The target's mean and standard deviation (values; 0 and 1 for classes).
    pub target_scale: (f64, f64),
    /// Epochs of the weights kept.
    pub epochs: usize,
}

fn err(e: candle_core::Error) -> LearnError {
    LearnError(format!("mlp: {e}"))
}

impl MlpParams {
    /// The network's shape for `inputs` columns and `outputs` outputs.
    pub fn shape(&self, inputs: usize, outputs: usize) -> MlpShape {
        MlpShape {
            inputs,
            outputs,
            layers: self.layers,
            width: self.width.max(1),
            activation: self.activation,
            batch_norm: self.batch_norm,
        }
    }
}

/// The training data as tensors.
struct Rows {
    x: Tensor,
    /// Class indices (u32) or standardised values (`(rows, 1)` f32).
    y: Tensor,
}

fn rows_of(x: &Matrix, y: &[f64], classes: bool, scale: (f64, f64)) -> Result<Rows, LearnError> {
    let xs: Vec<f32> = finite(x).into_iter().map(|v| v as f32).collect();
    let xt = Tensor::from_vec(xs, (x.rows, x.cols), &Device::Cpu).map_err(err)?;
    let yt = if classes {
        Tensor::from_vec(y.iter().map(|&c| c as u32).collect::<Vec<u32>>(), x.rows, &Device::Cpu)
    } else {
        let v: Vec<f32> = y.iter().map(|&v| ((v - scale.0) / scale.1) as f32).collect();
        Tensor::from_vec(v, (x.rows, 1), &Device::Cpu)
    };
    Ok(Rows { x: xt, y: yt.map_err(err)? })
}

fn loss(out: &Tensor, y: &Tensor, classes: bool) -> candle_core::Result<Tensor> {
    if classes {
        candle_nn::loss::cross_entropy(out, y)
    } else {
        candle_nn::loss::mse(out, y)
    }
}

/// The mean and standard deviation of a target's values (0 and 1 for classes).
fn target_scale(y: &[f64], classes: bool) -> (f64, f64) {
    if classes || y.is_empty() {
        return (0.0, 1.0);
    }
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / y.len() as f64;
    (mean, if var > 1e-24 { var.sqrt() } else { 1.0 })
}

/// Fit an MLP on `x` and `y` (see the module's documentation).
pub fn fit(params: &MlpParams, x: &Matrix, y: &[f64], fit: &Fit) -> Result<FittedMlp, LearnError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(fit.threads.max(1))
        .build()
        .map_err(|e| LearnError(e.to_string()))?;
    pool.install(|| train(params, x, y, fit))
}

/// The share of a validated fit's training rows its early stopping is measured on.
pub const STOPPING_SHARE: f64 = 0.15;

/// The fewest training rows a validated fit holds rows out of for early stopping (fewer: it
/// trains its `epochs` in full).
pub const MIN_STOPPING_ROWS: usize = 40;

/// A seeded split of `n` rows into those trained on and the [`STOPPING_SHARE`] held out.
fn hold_out(n: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut all: Vec<usize> = (0..n).collect();
    all.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5709));
    let held = ((n as f64 * STOPPING_SHARE).round() as usize).clamp(1, n - 1);
    let (h, t) = all.split_at(held);
    let (mut t, mut h) = (t.to_vec(), h.to_vec());
    t.sort_unstable();
    h.sort_unstable();
    (t, h)
}

/// What the epochs found: the epoch of the best validation loss and its weights.
struct Best {
    loss: f64,
    epoch: usize,
    state: Option<Variables>,
}

fn train(params: &MlpParams, x: &Matrix, y: &[f64], fit: &Fit) -> Result<FittedMlp, LearnError> {
    let classes = fit.problem != Problem::Regression;
    let scale = target_scale(y, classes);
    let shape = params.shape(x.cols, if classes { fit.classes.max(2) } else { 1 });
    let net = MlpNet::new(shape, DType::F32, &Device::Cpu, fit.seed).map_err(err)?;
    // A validated fit stops early on rows of its own training rows: stopping on the fold's
    // validation rows would choose the epoch on the rows the out-of-fold score is taken on (an
    // optimistic score the ensemble then trusts).
    let (rows, valid) = match fit.valid {
        Some(_) if x.rows >= MIN_STOPPING_ROWS => {
            let (train, held) = hold_out(x.rows, fit.seed);
            let pick = |r: &[usize]| r.iter().map(|&i| y[i]).collect::<Vec<f64>>();
            let t = rows_of(&x.take_rows(&train), &pick(&train), classes, scale)?;
            (t, Some(rows_of(&x.take_rows(&held), &pick(&held), classes, scale)?))
        }
        _ => (rows_of(x, y, classes, scale)?, None),
    };
    let mut opt = AdamW::new(
        net.trainable(),
        ParamsAdamW {
            lr: params.learning_rate,
            weight_decay: params.weight_decay,
            ..ParamsAdamW::default()
        },
    )
    .map_err(err)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(fit.seed ^ 0x6d6c70);
    let mut order: Vec<u32> = (0..rows.x.dim(0).map_err(err)? as u32).collect();
    let mut best = Best {
        loss: f64::INFINITY,
        epoch: 0,
        state: None,
    };
    let mut epochs = 0;
    for epoch in 1..=params.epochs.max(1) {
        order.shuffle(&mut rng);
        if !one_epoch(&net, &mut opt, &rows, &order, params, classes, &mut rng)? {
            break;
        }
        epochs = epoch;
        if let Some(v) = &valid {
            let l = loss(&net.forward(&v.x, BnMode::Eval).map_err(err)?, &v.y, classes)
                .and_then(|l| l.to_scalar::<f32>())
                .map_err(err)? as f64;
            if l.is_finite() && l < best.loss - 1e-7 {
                best = Best {
                    loss: l,
                    epoch,
                    state: Some(state_of(&net)?),
                };
            }
            if !l.is_finite() || epoch - best.epoch >= PATIENCE || best.loss < CONVERGED_LOSS {
                break;
            }
        }
        if fit.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            break;
        }
    }
    let (state, epochs) = match best.state {
        Some(s) => (s, best.epoch),
        None if valid.is_some() || epochs == 0 => return Err(LearnError("mlp: the training diverged (no finite loss)".into())),
        None => (state_of(&net)?, epochs),
    };
    Ok(FittedMlp {
        params: params.clone(),
        shape,
        state,
        target_scale: scale,
        epochs,
    })
}

/// One pass over the rows in `order`, a minibatch at a time; `false` when the loss stopped
/// being finite.
fn one_epoch(
    net: &MlpNet,
    opt: &mut AdamW,
    rows: &Rows,
    order: &[u32],
    params: &MlpParams,
    classes: bool,
    rng: &mut impl rand::Rng,
) -> Result<bool, LearnError> {
    for chunk in order.chunks(params.batch_size.max(1)) {
        // BatchNorm has no statistics of a single row.
        if chunk.len() < 2 && params.batch_norm {
            continue;
        }
        let idx = Tensor::from_slice(chunk, chunk.len(), &Device::Cpu).map_err(err)?;
        let (xb, yb) = (rows.x.index_select(&idx, 0).map_err(err)?, rows.y.index_select(&idx, 0).map_err(err)?);
        let l = loss(&net.forward_train(&xb, params.dropout, rng).map_err(err)?, &yb, classes).map_err(err)?;
        if !l.to_scalar::<f32>().map_err(err)?.is_finite() {
            return Ok(false);
        }
        opt.backward_step(&l).map_err(err)?;
    }
    Ok(true)
}

fn state_of(net: &MlpNet) -> Result<Variables, LearnError> {
    net.named()
        .into_iter()
        .map(|(name, v)| {
            let t = v.as_tensor();
            Ok((name, t.dims().to_vec(), t.flatten_all().and_then(|f| f.to_vec1::<f32>()).map_err(err)?))
        })
        .collect()
}

impl FittedMlp {
    /// The network with the fitted variables.
    pub fn network(&self) -> Result<MlpNet, LearnError> {
        let net = MlpNet::new(self.shape, DType::F32, &Device::Cpu, 0).map_err(err)?;
        for (name, var) in net.named() {
            let Some((_, dims, values)) = self.state.iter().find(|(n, _, _)| *n == name) else {
                return Err(LearnError(format!("mlp: the saved model has no variable {name}")));
            };
            let t = Tensor::from_slice(values, dims.as_slice(), &Device::Cpu).map_err(err)?;
            var.set(&t).map_err(err)?;
        }
        Ok(net)
    }

    /// Predictions for `x`: rows × classes probabilities, or one value a row.
    pub fn predict(&self, x: &Matrix, threads: usize) -> Result<Vec<f64>, LearnError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(|e| LearnError(e.to_string()))?;
        pool.install(|| {
            let net = self.network()?;
            let xs: Vec<f32> = finite(x).into_iter().map(|v| v as f32).collect();
            let mut out = Vec::with_capacity(x.rows * self.shape.outputs);
            for (k, chunk) in xs.chunks(PREDICT_CHUNK * x.cols.max(1)).enumerate() {
                let n = (x.rows - k * PREDICT_CHUNK).min(PREDICT_CHUNK);
                let xt = Tensor::from_slice(chunk, (n, x.cols), &Device::Cpu).map_err(err)?;
                let o = net.forward(&xt, BnMode::Eval).map_err(err)?;
                let o = if self.shape.outputs > 1 { net::softmax(&o).map_err(err)? } else { o };
                out.extend(o.flatten_all().and_then(|f| f.to_vec1::<f32>()).map_err(err)?.into_iter().map(f64::from));
            }
            if self.shape.outputs == 1 {
                let (mean, std) = self.target_scale;
                out.iter_mut().for_each(|v| *v = *v * std + mean);
            }
            Ok(out)
        })
    }
}
