//! synflow (Tanaka et al. 2020, as used by Abdelfattah et al. 2021), PROXIES.md §2.2.
//!
//! The network in float64 with BatchNorm bypassed and every state tensor replaced by its
//! absolute value, an all-ones input of batch 1, `R = Σ logits`;
//! `S = Σ_l Σ_i |θ_i · ∂R/∂θ_i|` over convolution and linear weights. Data-independent.

use candle_core::{DType, Tensor};

use crate::{sum_over_weights, Batch, BnHandling, Candidate, Proxy, Result, Trace};

/// The synflow proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Synflow;

impl Proxy for Synflow {
    fn name(&self) -> &'static str {
        "synflow"
    }

    fn uses_data(&self) -> bool {
        false
    }

    fn score(&self, candidate: &dyn Candidate, batch: &Batch, seed: u64) -> Result<f64> {
        let net = candidate.build(DType::F64, batch.images.device(), seed, false)?;
        // The network is a fresh copy, so its signs need no restoring afterwards.
        for (_, var) in net.state() {
            var.set(&var.as_tensor().abs()?)?;
        }
        let (c, h, w) = candidate.input_shape();
        let ones = Tensor::ones((1, c, h, w), DType::F64, batch.images.device())?;
        let rec = net.forward(&ones, BnHandling::Bypass, Trace::default())?;
        let grads = rec.logits.sum_all()?.backward()?;
        sum_over_weights(&net.weights(), &grads, |w, g| Ok((w * g)?.abs()?.sum_all()?.to_scalar::<f64>()?))
    }
}
