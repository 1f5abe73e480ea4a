//! fisher (Turner et al. 2020, Theis et al. 2018), PROXIES.md §2.6.
//!
//! For every convolution and linear layer, its output `z` (before BatchNorm) and `∂L/∂z` from a
//! cross-entropy backward pass (BatchNorm with batch statistics): per sample `n` and output
//! channel `k`, `g_nk = Σ_hw z·∂L/∂z`; `Δ_k = ½·mean_n g_nk²`; each channel's `|Δ_k|` is counted
//! once per weight of that channel, so `S = Σ_l fan_in_l · Σ_k |Δ_lk|`.

use candle_core::DType;

use crate::{cross_entropy, to_f64_vec, Batch, BnHandling, Candidate, Proxy, Result, Trace};

/// The fisher proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fisher;

impl Proxy for Fisher {
    fn name(&self) -> &'static str {
        "fisher"
    }

    fn score(&self, candidate: &dyn Candidate, batch: &Batch, seed: u64) -> Result<f64> {
        let net = candidate.build(DType::F32, batch.images.device(), seed, false)?;
        let trace = Trace {
            layer_outputs: true,
            ..Trace::default()
        };
        let rec = net.forward(&batch.images, BnHandling::Batch, trace)?;
        let grads = cross_entropy(&rec.logits, &batch.labels)?.backward()?;
        let mut total = 0.0;
        for out in &rec.layer_outputs {
            let Some(g) = out.gradient(&grads) else { continue };
            // (n, k[, h, w]) → (n, k): the spatial sums (a few thousand terms) in the network's
            // dtype, everything after in f64.
            let prod = (&out.value * g)?;
            let per = if prod.rank() == 4 { prod.sum((2, 3))? } else { prod }.to_dtype(DType::F64)?;
            let n = per.dim(0)? as f64;
            let delta = (per.sqr()?.sum(0)? * (0.5 / n))?;
            let channel_sum: f64 = to_f64_vec(&delta)?.iter().map(|d| d.abs()).sum();
            total += out.fan_in as f64 * channel_sum;
        }
        Ok(total)
    }
}
