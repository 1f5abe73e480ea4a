//! grad_norm, PROXIES.md §2.3: `G = Σ_l ‖∂L/∂W_l‖₂`, the Frobenius norm per layer summed over
//! convolution and linear weights (not the global norm); cross-entropy on the batch, BatchNorm
//! with batch statistics.

use candle_core::DType;

use crate::{sum_over_loss_gradients, Batch, Candidate, Proxy, Result};

/// The grad_norm proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradNorm;

impl Proxy for GradNorm {
    fn name(&self) -> &'static str {
        "grad_norm"
    }

    fn score(&self, candidate: &dyn Candidate, batch: &Batch, seed: u64) -> Result<f64> {
        sum_over_loss_gradients(candidate, batch, seed, |_, g| {
            Ok(g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt())
        })
    }
}
