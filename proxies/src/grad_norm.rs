//! grad_norm, PROXIES.md §2.3: `G = Σ_l ‖∂L/∂W_l‖₂`, the Frobenius norm per layer summed over
//! convolution and linear weights (not the global norm); cross-entropy on the batch, BatchNorm
//! with batch statistics.

use candle_core::DType;

use crate::{cross_entropy, sum_over_weights, Batch, BnHandling, Candidate, Proxy, Result, Trace};

/// The grad_norm proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradNorm;

impl Proxy for GradNorm {
    fn name(&self) -> &'static str {
        "grad_norm"
    }

    fn score(&self, candidate: &dyn Candidate, batch: &Batch, seed: u64) -> Result<f64> {
        let net = candidate.build(DType::F32, batch.images.device(), seed, false)?;
        let rec = net.forward(&batch.images, BnHandling::Batch, Trace::default())?;
        let grads = cross_entropy(&rec.logits, &batch.labels)?.backward()?;
        sum_over_weights(&net.weights(), &grads, |_, g| {
            Ok(g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt())
        })
    }
}
