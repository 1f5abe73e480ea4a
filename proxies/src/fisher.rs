//! fisher (Turner et al. 2020, Theis et al. 2018), PROXIES.md §2.6.
//!
//! For every convolution and linear layer, its output `z` (before BatchNorm) and `∂L/∂z` from a
//! cross-entropy backward pass (BatchNorm with batch statistics): per sample `n` and output
//! channel `k`, `g_nk = Σ_hw z·∂L/∂z`; `Δ_k = ½·mean_n g_nk²`; each channel's `|Δ_k|` is counted
//! once per weight of that channel, so `S = Σ_l fan_in_l · Σ_k |Δ_lk|`.

use candle_core::DType;

use crate::{cross_entropy, Batch, BnHandling, Candidate, Proxy, Result, Trace};

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
            layer_dots: true,
            ..Trace::default()
        };
        let rec = net.forward(&batch.images, BnHandling::Batch, trace)?;
        let grads = cross_entropy(&rec.logits, &batch.labels)?.backward()?;
        let mut total = 0.0;
        for layer in &rec.layer_dots {
            // g_nk = Σ_hw z·∂L/∂z (n × k, row-major), then Δ_k = ½·mean_n g_nk².
            let Some(per) = layer.dots(&grads)? else { continue };
            let k = layer.channels;
            let n = per.len() / k.max(1);
            let mut channel_sum = 0.0;
            for c in 0..k {
                let sq: f64 = (0..n).map(|i| per[i * k + c] * per[i * k + c]).sum();
                channel_sum += (0.5 * sq / n as f64).abs();
            }
            total += layer.fan_in as f64 * channel_sum;
        }
        Ok(total)
    }
}
