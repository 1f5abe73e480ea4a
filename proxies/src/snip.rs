//! snip (Lee et al. 2019), PROXIES.md §2.4: with a multiplicative mask `c = 1` on every weight,
//! `∂L/∂c = W ⊙ ∂L/∂W`, so `S = Σ_l Σ_i |θ_i · ∂L/∂θ_i|`; cross-entropy on the batch, BatchNorm
//! with batch statistics.

use candle_core::DType;

use crate::{sum_over_loss_gradients, Batch, Candidate, Proxy, Result};

/// The snip proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snip;

impl Proxy for Snip {
    fn name(&self) -> &'static str {
        "snip"
    }

    fn score(&self, candidate: &dyn Candidate, batch: &Batch, seed: u64) -> Result<f64> {
        sum_over_loss_gradients(candidate, batch, seed, |w, g| {
            Ok((w.to_dtype(DType::F64)? * g.to_dtype(DType::F64)?)?.abs()?.sum_all()?.to_scalar::<f64>()?)
        })
    }
}
