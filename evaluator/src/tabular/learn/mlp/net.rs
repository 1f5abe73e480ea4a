//! The MLP network: `layers` hidden blocks of Linear → optional BatchNorm → activation →
//! dropout, then a linear output layer (class logits, or one value). One definition serves the
//! training, the predictions of a saved model and the zero-cost proxies (see [`super::proxy`]).
//!
//! Variables are named as the proxies expect (`h{i}.weight`, `h{i}.bias`, `h{i}.bn.weight`,
//! `h{i}.bn.bias`, `h{i}.bn.running_mean`, `h{i}.bn.running_var`, `out.weight`, `out.bias`) and
//! initialised as PyTorch does (uniform ±1/√fan_in for weights and biases, γ = 1, β = 0, running
//! mean 0 and variance 1).

use candle_core::{DType, Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use autoagent_proxies::{DotsSource, GradSource, LayerDots, LayerOutput, Trace};

pub use crate::net::BnMode;
use crate::net::Recorded;

/// BatchNorm's ε and momentum (PyTorch's defaults).
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// The activation of the hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// max(0, x).
    Relu,
    /// x·Φ(x).
    Gelu,
    /// tanh(x).
    Tanh,
}

impl Activation {
    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu_erf(),
            Activation::Tanh => x.tanh(),
        }
    }
}

/// The shape of an MLP: what the proxies rank and the training builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlpShape {
    /// Input columns.
    pub inputs: usize,
    /// Outputs: the classes, or 1 for a value.
    pub outputs: usize,
    /// Hidden layers.
    pub layers: usize,
    /// Units of each hidden layer.
    pub width: usize,
    /// Activation of the hidden layers.
    pub activation: Activation,
    /// BatchNorm after each hidden linear layer.
    pub batch_norm: bool,
}

impl MlpShape {
    /// Trainable parameters.
    pub fn param_count(&self) -> usize {
        let mut n = 0;
        let mut fan_in = self.inputs;
        for _ in 0..self.layers {
            n += fan_in * self.width + self.width + if self.batch_norm { 2 * self.width } else { 0 };
            fan_in = self.width;
        }
        n + fan_in * self.outputs + self.outputs
    }

    /// Multiply-adds of one row's forward pass.
    pub fn flops(&self) -> f64 {
        let hidden = self.inputs * self.width + self.layers.saturating_sub(1) * self.width * self.width;
        let last = if self.layers == 0 { self.inputs } else { self.width };
        (hidden + last * self.outputs) as f64
    }
}

/// One BatchNorm over the columns of a `(rows, units)` input.
#[derive(Debug, Clone)]
pub(crate) struct Bn {
    pub(crate) gamma: Var,
    pub(crate) beta: Var,
    pub(crate) running_mean: Var,
    pub(crate) running_var: Var,
}

/// One hidden block's variables.
#[derive(Debug, Clone)]
pub(crate) struct Hidden {
    pub(crate) weight: Var,
    pub(crate) bias: Var,
    pub(crate) bn: Option<Bn>,
}

/// What a forward pass does besides computing the outputs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pass<'a> {
    /// What to record.
    pub(crate) trace: Trace,
    /// Multiply by these masks instead of applying the activations (one per hidden layer).
    pub(crate) masks: Option<&'a [Tensor]>,
    /// Dropout: one mask of kept units (scaled by 1/(1-p)) per hidden layer (training only).
    pub(crate) dropout: Option<&'a [Tensor]>,
}

/// An MLP with its variables.
#[derive(Debug, Clone)]
pub struct MlpNet {
    /// Its shape.
    pub shape: MlpShape,
    pub(crate) hidden: Vec<Hidden>,
    pub(crate) out_weight: Var,
    pub(crate) out_bias: Var,
}

fn uniform(rng: &mut impl Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..bound) as f32).collect()
}

fn var(values: Vec<f32>, dims: &[usize], dtype: DType, device: &Device) -> candle_core::Result<Var> {
    Var::from_tensor(&Tensor::from_vec(values, dims, device)?.to_dtype(dtype)?)
}

impl MlpNet {
    /// A fresh network of `shape`, initialised from `seed`, in `dtype` on `device`.
    pub fn new(shape: MlpShape, dtype: DType, device: &Device, seed: u64) -> candle_core::Result<MlpNet> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut hidden = Vec::with_capacity(shape.layers);
        let mut fan_in = shape.inputs;
        for _ in 0..shape.layers {
            let w = shape.width;
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            let bn = if shape.batch_norm {
                Some(Bn {
                    gamma: var(vec![1.0; w], &[w], dtype, device)?,
                    beta: var(vec![0.0; w], &[w], dtype, device)?,
                    running_mean: var(vec![0.0; w], &[w], dtype, device)?,
                    running_var: var(vec![1.0; w], &[w], dtype, device)?,
                })
            } else {
                None
            };
            hidden.push(Hidden {
                weight: var(uniform(&mut rng, w * fan_in, bound), &[w, fan_in], dtype, device)?,
                bias: var(uniform(&mut rng, w, bound), &[w], dtype, device)?,
                bn,
            });
            fan_in = w;
        }
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        let o = shape.outputs;
        Ok(MlpNet {
            shape,
            hidden,
            out_weight: var(uniform(&mut rng, o * fan_in, bound), &[o, fan_in], dtype, device)?,
            out_bias: var(uniform(&mut rng, o, bound), &[o], dtype, device)?,
        })
    }

    /// Every variable by name, in forward order: weights, biases, BatchNorm parameters and
    /// running statistics.
    pub fn named(&self) -> Vec<(String, Var)> {
        let mut v = Vec::new();
        for (i, h) in self.hidden.iter().enumerate() {
            v.push((format!("h{i}.weight"), h.weight.clone()));
            v.push((format!("h{i}.bias"), h.bias.clone()));
            if let Some(bn) = &h.bn {
                v.push((format!("h{i}.bn.weight"), bn.gamma.clone()));
                v.push((format!("h{i}.bn.bias"), bn.beta.clone()));
                v.push((format!("h{i}.bn.running_mean"), bn.running_mean.clone()));
                v.push((format!("h{i}.bn.running_var"), bn.running_var.clone()));
            }
        }
        v.push(("out.weight".into(), self.out_weight.clone()));
        v.push(("out.bias".into(), self.out_bias.clone()));
        v
    }

    /// The trainable variables (all but the running statistics).
    pub fn trainable(&self) -> Vec<Var> {
        self.named()
            .into_iter()
            .filter(|(n, _)| !crate::net::is_running_stat(n))
            .map(|(_, v)| v)
            .collect()
    }

    /// Outputs `(rows, outputs)` for a `(rows, inputs)` batch (or `(rows, inputs, 1, 1)`).
    pub fn forward(&self, x: &Tensor, mode: BnMode) -> candle_core::Result<Tensor> {
        Ok(self.forward_pass(x, mode, Pass::default())?.0)
    }

    /// Outputs for a batch, in training mode with dropout `p` (its masks drawn from `rng`, so a
    /// seeded training is repeatable).
    pub fn forward_train(&self, x: &Tensor, p: f64, rng: &mut impl Rng) -> candle_core::Result<Tensor> {
        let rows = x.dim(0)?;
        let masks: Vec<Tensor> = if p > 0.0 {
            let keep = 1.0 - p;
            let n = rows * self.shape.width;
            (0..self.hidden.len())
                .map(|_| {
                    let m: Vec<f32> = (0..n).map(|_| if rng.random::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect();
                    Tensor::from_vec(m, (rows, self.shape.width), x.device())?.to_dtype(x.dtype())
                })
                .collect::<candle_core::Result<_>>()?
        } else {
            Vec::new()
        };
        let dropout = (!masks.is_empty()).then_some(masks.as_slice());
        Ok(self.forward_pass(x, BnMode::Train, Pass { dropout, ..Pass::default() })?.0)
    }

    /// The forward pass, recording what `pass` asks for.
    pub(crate) fn forward_pass(&self, x: &Tensor, mode: BnMode, pass: Pass) -> candle_core::Result<(Tensor, Recorded)> {
        let mut rec = Recorded::default();
        let mut h = if x.rank() > 2 { x.flatten_from(1)? } else { x.clone() };
        for (i, layer) in self.hidden.iter().enumerate() {
            let fan_in = h.dim(1)?;
            let z = h.matmul(&layer.weight.t()?)?.broadcast_add(layer.bias.as_tensor())?;
            let z = record_output(&mut rec, pass.trace, z, fan_in)?;
            let z = match &layer.bn {
                Some(bn) => bn.forward(&z, mode)?,
                None => z,
            };
            if pass.trace.relu_inputs {
                rec.relu_inputs.push(z.detach());
            }
            h = match pass.masks.and_then(|m| m.get(i)) {
                Some(mask) => (&z * mask.to_dtype(z.dtype())?)?,
                None => self.shape.activation.apply(&z)?,
            };
            if let Some(mask) = pass.dropout.and_then(|m| m.get(i)) {
                h = (&h * mask)?;
            }
        }
        if pass.trace.features {
            rec.features = Some(h.clone());
        }
        let fan_in = h.dim(1)?;
        let out = h.matmul(&self.out_weight.t()?)?.broadcast_add(self.out_bias.as_tensor())?;
        let out = record_output(&mut rec, pass.trace, out, fan_in)?;
        Ok((out, rec))
    }
}

/// `z`, or `z + probe` with a recorded zero probe when layer outputs or their output·gradient
/// sums are traced.
fn record_output(rec: &mut Recorded, trace: Trace, z: Tensor, fan_in: usize) -> candle_core::Result<Tensor> {
    if !(trace.layer_outputs || trace.layer_dots) {
        return Ok(z);
    }
    let probe = Var::zeros(z.shape(), z.dtype(), z.device())?;
    let out = (&z + probe.as_tensor())?;
    let recorded = LayerOutput {
        value: z.detach(),
        grad: GradSource::Probe(probe),
        fan_in,
    };
    if trace.layer_dots {
        rec.layer_dots.push(LayerDots {
            channels: recorded.value.dim(1)?,
            fan_in,
            source: DotsSource::Output(recorded.clone()),
        });
    }
    if trace.layer_outputs {
        rec.layer_outputs.push(recorded);
    }
    Ok(out)
}

impl Bn {
    fn forward(&self, z: &Tensor, mode: BnMode) -> candle_core::Result<Tensor> {
        let (mean, var) = match mode {
            BnMode::Bypass => return Ok(z.clone()),
            BnMode::Eval => (self.running_mean.as_tensor().unsqueeze(0)?, self.running_var.as_tensor().unsqueeze(0)?),
            BnMode::Train | BnMode::Batch => {
                let mean = z.mean_keepdim(0)?;
                let centred = z.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(0)?;
                if mode == BnMode::Train {
                    self.update_running(&mean, &var, z.dim(0)?)?;
                }
                (mean, var)
            }
        };
        let scale = (var + BN_EPS)?.sqrt()?.recip()?.broadcast_mul(&self.gamma.as_tensor().unsqueeze(0)?)?;
        z.broadcast_sub(&mean)?
            .broadcast_mul(&scale)?
            .broadcast_add(&self.beta.as_tensor().unsqueeze(0)?)
    }

    /// Fold one batch's mean and (biased) variance into the running statistics (the unbiased
    /// variance, as PyTorch does).
    fn update_running(&self, mean: &Tensor, var: &Tensor, rows: usize) -> candle_core::Result<()> {
        let unbias = if rows > 1 { rows as f64 / (rows as f64 - 1.0) } else { 1.0 };
        let m = mean.squeeze(0)?.detach();
        let v = (var.squeeze(0)?.detach() * unbias)?;
        let rm = ((self.running_mean.as_tensor() * (1.0 - BN_MOMENTUM))? + (m * BN_MOMENTUM)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - BN_MOMENTUM))? + (v * BN_MOMENTUM)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }
}

/// Softmax over the last dimension.
pub(crate) fn softmax(logits: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax(logits, D::Minus1)
}
