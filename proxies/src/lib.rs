//! # autoagent-proxies
//!
//! Zero-cost NAS proxies: rank a candidate network without training it. Each proxy follows the
//! reference definition in `shared/PROXIES.md` §2 (precision, input, BatchNorm handling, loss,
//! how per-layer values are summed) and lives in its own module behind the [`Proxy`] trait;
//! [`registry`] finds them by name. Networks take part through the small instrumentation trait
//! in [`net`] ([`Candidate`] builds fresh seeded copies, [`ProxyNet`] records ReLU inputs, layer
//! outputs and features), so any search space that implements it gets every proxy.
//!
//! Scores are f64. A non-finite score is an `Ok(f64::NAN / ±inf)`: callers report it as missing
//! (never silently replaced, unlike NASLib's −1e8).

#![warn(missing_docs)]

use candle_core::Tensor;

pub mod cache;
pub mod ensemble;
pub mod fisher;
pub mod flops;
pub mod grad_norm;
pub mod grasp;
pub mod jacob_cov;
mod linalg;
pub mod naswot;
pub mod net;
pub mod params;
pub mod registry;
pub mod snip;
pub mod stats;
pub mod synflow;
pub mod zen;
pub mod zico;

pub use net::{BnHandling, Candidate, DotsSlot, DotsSource, GradSlot, GradSource, LayerDots, LayerOutput, ProxyNet, Recording, Trace, Weight};
pub use registry::{all_names, by_name};

/// Errors of proxy computation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Anything else, with its explanation.
    #[error("{0}")]
    Msg(String),
}

/// Result of proxy computation.
pub type Result<T> = std::result::Result<T, Error>;

/// One minibatch, loaded once and reused by every proxy and architecture.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `(n, c, h, w)` images, normalised.
    pub images: Tensor,
    /// `(n,)` class labels (u32).
    pub labels: Tensor,
}

/// A zero-cost proxy.
pub trait Proxy: Send + Sync {
    /// Its registry name (`synflow`, `naswot`, …).
    fn name(&self) -> &'static str;
    /// Whether the score depends on the data batch (synflow, params and flops do not), which
    /// decides whether the batch is part of its cache key.
    fn uses_data(&self) -> bool {
        true
    }
    /// Score one architecture: higher should mean better.
    fn score(&self, candidate: &dyn Candidate, batch: &Batch, seed: u64) -> Result<f64>;
}

/// Sum of `f(weight, gradient)` over the scored weights, each term an f64 scalar.
pub(crate) fn sum_over_weights(weights: &[Weight], grads: &candle_core::backprop::GradStore, f: impl Fn(&Tensor, &Tensor) -> Result<f64>) -> Result<f64> {
    let mut total = 0.0;
    for w in weights {
        if let Some(g) = grads.get(w.var.as_tensor()) {
            total += f(w.var.as_tensor(), g)?;
        }
    }
    Ok(total)
}

/// The common core of the first-order gradient proxies: a fresh float32 network, one forward
/// pass on the batch (BatchNorm with batch statistics), the cross-entropy's backward pass, then
/// `Σ f(weight, gradient)` over the scored weights.
pub(crate) fn sum_over_loss_gradients(candidate: &dyn Candidate, batch: &Batch, seed: u64, f: impl Fn(&Tensor, &Tensor) -> Result<f64>) -> Result<f64> {
    let net = candidate.build(candle_core::DType::F32, batch.images.device(), seed, false)?;
    let rec = net.forward(&batch.images, BnHandling::Batch, Trace::default())?;
    let grads = cross_entropy(&rec.logits, &batch.labels)?.backward()?;
    sum_over_weights(&net.weights(), &grads, f)
}

/// Per-`(sample, channel)` sums of `a ⊙ b` over the spatial positions, in f64, for two tensors
/// of the same `(n, k[, h, w])` shape (a rank-2 tensor has one position per channel).
///
/// On the CPU with contiguous f32 tensors this is one pass over both, plane by plane and in
/// parallel, reading the tensors' storage in place; otherwise it falls back to tensor ops.
pub(crate) fn channel_dots(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    if a.dims() != b.dims() {
        return Err(Error::Msg(format!("channel_dots: shapes {:?} and {:?} differ", a.dims(), b.dims())));
    }
    let dims = a.dims();
    let planes: usize = dims.iter().take(2).product();
    let hw: usize = dims.iter().skip(2).product();
    if a.device().is_cpu() && a.dtype() == candle_core::DType::F32 && b.dtype() == candle_core::DType::F32 {
        let (sa, la) = a.storage_and_layout();
        let (sb, lb) = b.storage_and_layout();
        if let (candle_core::Storage::Cpu(ca), candle_core::Storage::Cpu(cb), Some((a0, a1)), Some((b0, b1))) =
            (&*sa, &*sb, la.contiguous_offsets(), lb.contiguous_offsets())
        {
            let xa = &ca.as_slice::<f32>()?[a0..a1];
            let xb = &cb.as_slice::<f32>()?[b0..b1];
            use rayon::prelude::*;
            return Ok(xa.par_chunks(hw.max(1)).zip(xb.par_chunks(hw.max(1))).map(|(p, q)| dot_f32(p, q)).collect());
        }
    }
    let prod = (a * b)?;
    let per = if prod.rank() > 2 { prod.flatten_from(2)?.sum(2)? } else { prod };
    let v = to_f64_vec(&per)?;
    if v.len() != planes {
        return Err(Error::Msg(format!("channel_dots: {} sums for {planes} planes", v.len())));
    }
    Ok(v)
}

/// `Σ p_i·q_i` in 16 independent f32 lanes (so that it vectorises), combined in f64.
fn dot_f32(p: &[f32], q: &[f32]) -> f64 {
    let mut lanes = [0f32; 16];
    let (pc, pr) = p.split_at(p.len() / 16 * 16);
    let (qc, qr) = q.split_at(pc.len());
    for (x, y) in pc.chunks_exact(16).zip(qc.chunks_exact(16)) {
        for l in 0..16 {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail: f64 = pr.iter().zip(qr).map(|(x, y)| (*x as f64) * (*y as f64)).sum();
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail
}

/// Cross-entropy of logits against labels (mean over the batch), in the logits' dtype.
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

/// A tensor's elements as f64.
pub(crate) fn to_f64_vec(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}
