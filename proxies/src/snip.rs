//! snip (Lee et al. 2019), PROXIES.md §2.4: with a multiplicative mask `c = 1` on every weight,
//! `∂L/∂c = W ⊙ ∂L/∂W`, so `S = Σ_l Σ_i |θ_i · ∂L/∂θ_i|`; cross-entropy on the batch, BatchNorm
//! with batch statistics.

use candle_core::DType;

use crate::{cross_entropy, sum_over_weights, Batch, BnHandling, Candidate, Proxy, Result, Trace};

/// The snip proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snip;

impl Proxy for Snip {
    fn name(&self) -> &'static str {
        "snip"
    }

    fn score(&self, candidate: &dyn Candidate, batch: &Batch, seed: u64) -> Result<f64> {
        let net = candidate.build(DType::F32, batch.images.device(), seed, false)?;
        let rec = net.forward(&batch.images, BnHandling::Batch, Trace::default())?;
        let grads = cross_entropy(&rec.logits, &batch.labels)?.backward()?;
        sum_over_weights(&net.weights(), &grads, |w, g| {
            Ok((w.to_dtype(DType::F64)? * g.to_dtype(DType::F64)?)?.abs()?.sum_all()?.to_scalar::<f64>()?)
        })
    }
}
