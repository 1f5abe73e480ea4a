//! ZiCo (Li et al., ICLR 2023, the official `compute_zico.py`), PROXIES.md §2.10.
//!
//! The batch is split into two minibatches; for each, a forward pass (BatchNorm with batch
//! statistics), cross-entropy, and a backward pass whose convolution and linear weight gradients
//! are stored. As in the official loop, gradients are never zeroed between minibatches, so the
//! vector stored for minibatch `b` is the running sum over minibatches `1..=b`. Per weight,
//! `μ = mean_b |g_b|` and `σ = std_b g_b` (population); only weights with `σ ≠ 0` count;
//! `s_l = Σ μ/σ` per layer and `ZiCo = Σ_l ln s_l`, skipping layers with `s_l = 0`.

use candle_core::DType;

use crate::{cross_entropy, to_f64_vec, Batch, BnHandling, Candidate, Error, Proxy, Result, Trace};

/// The ZiCo proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Zico;

/// Minibatches the batch is split into (the paper's two).
const SPLITS: usize = 2;

/// ZiCo from per-minibatch gradients: `grads[b][l]` is layer `l`'s gradient (flattened) as
/// stored after minibatch `b`.
pub fn zico_from_gradients(grads: &[Vec<Vec<f64>>]) -> f64 {
    let layers = grads.first().map_or(0, Vec::len);
    let b = grads.len() as f64;
    let mut total = 0.0;
    for l in 0..layers {
        let len = grads[0][l].len();
        let mut s = 0.0;
        for i in 0..len {
            let vals: Vec<f64> = grads.iter().map(|g| g[l][i]).collect();
            let mean_abs = vals.iter().map(|v| v.abs()).sum::<f64>() / b;
            let mean = vals.iter().sum::<f64>() / b;
            let std = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / b).sqrt();
            if std != 0.0 {
                s += mean_abs / std;
            }
        }
        if s != 0.0 {
            total += s.ln();
        }
    }
    total
}

impl Proxy for Zico {
    fn name(&self) -> &'static str {
        "zico"
    }

    fn score(&self, candidate: &dyn Candidate, batch: &Batch, seed: u64) -> Result<f64> {
        let n = batch.images.dim(0)?;
        if n < SPLITS {
            return Err(Error::Msg(format!("zico needs at least {SPLITS} images in the batch, got {n}")));
        }
        let net = candidate.build(DType::F32, batch.images.device(), seed, false)?;
        let weights = net.weights();
        let per = n / SPLITS;
        let mut stored: Vec<Vec<Vec<f64>>> = Vec::new();
        let mut running: Vec<Vec<f64>> = weights.iter().map(|w| vec![0.0; w.var.elem_count()]).collect();
        for b in 0..SPLITS {
            let len = if b + 1 == SPLITS { n - b * per } else { per };
            let x = batch.images.narrow(0, b * per, len)?;
            let y = batch.labels.narrow(0, b * per, len)?;
            let rec = net.forward(&x, BnHandling::Batch, Trace::default())?;
            let grads = cross_entropy(&rec.logits, &y)?.backward()?;
            for (acc, w) in running.iter_mut().zip(&weights) {
                if let Some(g) = grads.get(w.var.as_tensor()) {
                    for (a, v) in acc.iter_mut().zip(to_f64_vec(g)?) {
                        *a += v;
                    }
                }
            }
            stored.push(running.clone());
        }
        Ok(zico_from_gradients(&stored))
    }
}
