//! GraSP (Wang et al. 2020, with Abdelfattah et al.'s sign), PROXIES.md §2.5.
//!
//! Pass 1: `g = ∂L/∂θ` over convolution and linear weights (no graph kept). Pass 2: the gradient
//! again, with its graph, then `z = Σ_l ⟨g_l (detached), ∂L/∂θ_l⟩` and `∂z/∂θ = H·g` (the
//! Hessian-gradient product). `S = Σ −θ ⊙ Hg`: a signed sum. Cross-entropy on the batch (T = 1,
//! one iteration), BatchNorm with batch statistics.
//!
//! Two ways to get `H·g`:
//!
//! - [`Grasp`], the registered proxy: the central difference of gradients along `g`,
//!   `Hg ≈ (∇L(θ + εg) − ∇L(θ − εg)) / 2ε`, with the first-order kernels, on the network
//!   linearised in its ReLUs: the two shifted passes apply the ReLU masks of the base pass
//!   ([`ProxyNet::forward_masked`]). Autograd's Hessian treats every ReLU as fixed (its second
//!   derivative is 0); a plain finite difference does not, and on a full NB201 network a few
//!   of its millions of units always cross zero, each adding O(1)/ε to the estimate (measured
//!   on arch 6111: −2094 against the autograd value 68.2). With the masks frozen the function
//!   is smooth and the truncation error is O(ε²). On 6111 with 4 CIFAR-10 images, against
//!   float64 autograd (68.190906): float64 differences give 68.190904, float32 differences
//!   68.093, 1.4e-3 off, the same order as float32 autograd, the reference's own precision
//!   (68.120). The default is float32; `Grasp { dtype: F64 }` is the precise one. Memory stays
//!   that of a training step.
//! - [`grasp_exact`]: second-order autograd, as the reference code does. Candle keeps the graph
//!   of a backward pass only on a thread that read `CANDLE_GRAD_DO_NOT_DETACH` at its first
//!   backward pass, so this runs on a thread of its own (see [`with_graph_keeping_thread`]).
//!   It holds the graph of the whole backward pass in memory: about 0.55 GB per image for
//!   NB201 arch 6111 (35 GB at batch 64), which is why it is not the default.

use std::sync::Mutex;

use candle_core::{DType, Tensor, Var};

use crate::{cross_entropy, sum_over_weights, Batch, BnHandling, Candidate, Error, Proxy, ProxyNet, Result, Trace, Weight};

/// The GraSP proxy (finite-difference Hessian-gradient product on the ReLU-linearised network).
#[derive(Debug, Clone, Copy)]
pub struct Grasp {
    /// The precision of the network and the difference: F32 (the default, the reference's own
    /// precision) or F64.
    pub dtype: DType,
}

impl Default for Grasp {
    fn default() -> Self {
        Grasp { dtype: DType::F32 }
    }
}

/// `ε‖g‖ / ‖θ‖` of the finite difference, by precision: small enough for the O(ε²) truncation,
/// large enough that rounding (relative 1e-7 in f32, 1e-16 in f64) divided by ε stays small.
fn rel_step(dtype: DType) -> f64 {
    if dtype == DType::F64 {
        1e-7
    } else {
        3e-6
    }
}

/// The loss gradient of every scored weight (zeros where a weight gets none), with the ReLUs
/// replaced by `masks` when given.
fn gradients(net: &dyn ProxyNet, weights: &[Weight], batch: &Batch, dtype: DType, masks: Option<&[Tensor]>) -> Result<Vec<Tensor>> {
    let x = batch.images.to_dtype(dtype)?;
    let rec = match masks {
        None => net.forward(&x, BnHandling::Batch, Trace::default())?,
        Some(m) => net.forward_masked(&x, BnHandling::Batch, m)?,
    };
    let grads = cross_entropy(&rec.logits, &batch.labels)?.backward()?;
    weight_gradients(weights, &grads)
}

/// The gradient of every scored weight in `grads`, detached (zeros where a weight got none).
fn weight_gradients(weights: &[Weight], grads: &candle_core::backprop::GradStore) -> Result<Vec<Tensor>> {
    Ok(weights
        .iter()
        .map(|w| grads.get(w.var.as_tensor()).map_or_else(|| w.var.as_tensor().zeros_like(), |g| Ok(g.detach())))
        .collect::<candle_core::Result<_>>()?)
}

fn norm(ts: &[Tensor]) -> Result<f64> {
    let mut s = 0.0;
    for t in ts {
        s += t.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    }
    Ok(s.sqrt())
}

/// `S = Σ −θ ⊙ hg`.
fn score_from(weights: &[Weight], thetas: &[Tensor], hg: &[Tensor]) -> Result<f64> {
    let mut s = 0.0;
    for ((_, t), h) in weights.iter().zip(thetas).zip(hg) {
        s -= (t.to_dtype(DType::F64)? * h.to_dtype(DType::F64)?)?.sum_all()?.to_scalar::<f64>()?;
    }
    Ok(s)
}

impl Proxy for Grasp {
    fn name(&self) -> &'static str {
        "grasp"
    }

    fn score(&self, candidate: &dyn Candidate, batch: &Batch, seed: u64) -> Result<f64> {
        let dtype = self.dtype;
        let net = candidate.build(dtype, batch.images.device(), seed, false)?;
        let weights = net.weights();
        let thetas: Vec<Tensor> = weights.iter().map(|w| w.var.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
        // The base pass records the ReLU inputs: their masks freeze the linearisation.
        let x = batch.images.to_dtype(dtype)?;
        let rec = net.forward(
            &x,
            BnHandling::Batch,
            Trace {
                relu_inputs: true,
                ..Trace::default()
            },
        )?;
        let masks: Vec<Tensor> = rec.relu_inputs.iter().map(|r| r.gt(0.0)).collect::<candle_core::Result<_>>()?;
        let grads = cross_entropy(&rec.logits, &batch.labels)?.backward()?;
        let g = weight_gradients(&weights, &grads)?;
        drop((rec, grads));
        let gnorm = norm(&g)?;
        if gnorm == 0.0 {
            return Ok(0.0); // Hg = H·0 = 0
        }
        let eps = rel_step(dtype) * norm(&thetas)?.max(1.0) / gnorm;
        let shifted = |sign: f64| -> Result<Vec<Tensor>> {
            for ((w, t), gi) in weights.iter().zip(&thetas).zip(&g) {
                w.var.set(&(t + (gi * (sign * eps))?)?)?;
            }
            gradients(net.as_ref(), &weights, batch, dtype, Some(&masks))
        };
        let plus = shifted(1.0)?;
        let minus = shifted(-1.0)?;
        for (w, t) in weights.iter().zip(&thetas) {
            w.var.set(t)?;
        }
        let hg: Vec<Tensor> = plus
            .iter()
            .zip(&minus)
            .map(|(p, m)| ((p - m)? / (2.0 * eps)).map_err(Error::from))
            .collect::<Result<_>>()?;
        score_from(&weights, &thetas, &hg)
    }
}

/// GraSP with the Hessian-gradient product from second-order autograd, in `dtype` (the
/// reference's way; memory-hungry, see the module docs).
pub fn grasp_exact(candidate: &dyn Candidate, batch: &Batch, seed: u64, dtype: DType) -> Result<f64> {
    with_graph_keeping_thread(|| {
        let net = candidate.build(dtype, batch.images.device(), seed, true)?;
        let weights = net.weights();
        let g = gradients(net.as_ref(), &weights, batch, dtype, None)?;
        // Pass 2: the gradient with its graph, z = Σ ⟨g, ∇L⟩, then ∂z/∂θ = H·g.
        let x = batch.images.to_dtype(dtype)?;
        let rec = net.forward(&x, BnHandling::Batch, Trace::default())?;
        let grads = cross_entropy(&rec.logits, &batch.labels)?.backward()?;
        let mut z: Option<Tensor> = None;
        for (w, g) in weights.iter().zip(&g) {
            let Some(gf) = grads.get(w.var.as_tensor()) else { continue };
            let term = (g * gf)?.sum_all()?;
            z = Some(match z {
                None => term,
                Some(acc) => (acc + term)?,
            });
        }
        let Some(z) = z else { return Ok(0.0) };
        let hg = z.backward()?;
        sum_over_weights(&weights, &hg, |w, h| {
            Ok(-(w.to_dtype(DType::F64)? * h.to_dtype(DType::F64)?)?.sum_all()?.to_scalar::<f64>()?)
        })
    })
}

/// Serialises the moments when the process environment holds `CANDLE_GRAD_DO_NOT_DETACH`.
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Run `f` on a new thread whose backward passes keep their graphs (second-order gradients),
/// while every other thread keeps candle's default (detached gradients).
pub fn with_graph_keeping_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // The variable is set only while this lock is held and only until the new thread has
        // read it (candle reads it once per thread, at the thread's first backward pass).
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let handle = scope.spawn(move || {
            // A first, trivial backward pass fixes this thread's setting.
            let primed = Var::new(1f64, &candle_core::Device::Cpu)
                .and_then(|v| (v.as_tensor() * 2.0)?.backward())
                .is_ok();
            let _ = ready_tx.send(primed);
            f()
        });
        let _ = ready_rx.recv();
        std::env::remove_var("CANDLE_GRAD_DO_NOT_DETACH");
        drop(guard);
        handle.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
