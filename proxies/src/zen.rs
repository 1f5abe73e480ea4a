//! Zen-NAS score (Lin et al. 2021, NASLib's `zen`), PROXIES.md §2.9.
//!
//! Convolution and linear weights re-drawn from N(0, 1), biases 0, BatchNorm γ = 1, β = 0;
//! `x₁, x₂ ~ N(0, 1)` with the batch's shape (only the shape of the data is used) and
//! `x̃ = x₁ + 0.01·x₂`; `F` = the feature map before global average pooling, BatchNorm in train
//! mode (batch statistics, running statistics updated by both passes);
//! `Δ = mean_n Σ_chw |F(x₁) − F(x̃)|`; `S = ln Δ + Σ_BN ln √(mean_c running_var)`. One repeat.

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};

use crate::{to_f64_vec, Batch, BnHandling, Candidate, Error, Proxy, Result, Trace};

/// The Zen-NAS proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Zen;

/// The mixup coefficient of the perturbed input.
const MIXUP: f64 = 0.01;

impl Proxy for Zen {
    fn name(&self) -> &'static str {
        "zen"
    }

    fn score(&self, candidate: &dyn Candidate, batch: &Batch, seed: u64) -> Result<f64> {
        let dev = batch.images.device();
        let net = candidate.build(DType::F32, dev, seed, false)?;
        let weight_names: std::collections::HashSet<String> = net.weights().into_iter().map(|w| w.name).collect();
        // Gaussian re-initialisation and inputs, seeded.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut normal = |shape: &candle_core::Shape| -> Result<Tensor> {
            let v: Vec<f32> = (0..shape.elem_count()).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)).collect();
            Ok(Tensor::from_vec(v, shape, dev)?)
        };
        for (name, var) in net.state() {
            let t = var.as_tensor();
            let fresh = if weight_names.contains(&name) {
                normal(t.shape())?
            } else if name.ends_with("running_mean") || name.ends_with("running_var") {
                continue;
            } else if name.ends_with("bn.weight") {
                t.ones_like()?
            } else {
                // biases and BatchNorm β
                t.zeros_like()?
            };
            var.set(&fresh.to_dtype(t.dtype())?)?;
        }
        let shape = batch.images.shape();
        let x1 = normal(shape)?;
        let x2 = normal(shape)?;
        let mixed = (&x1 + (x2 * MIXUP)?)?;
        let trace = Trace {
            features: true,
            ..Trace::default()
        };
        let f1 = net.forward(&x1, BnHandling::Train, trace)?.features;
        let f2 = net.forward(&mixed, BnHandling::Train, trace)?.features;
        let (Some(f1), Some(f2)) = (f1, f2) else {
            return Err(Error::Msg("zen: the network did not record its features".into()));
        };
        let delta = (f1 - f2)?
            .abs()?
            .flatten_from(1)?
            .sum(1)?
            .mean_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        let mut bn = 0.0;
        for rv in net.bn_running_vars() {
            let v = to_f64_vec(&rv)?;
            bn += (v.iter().sum::<f64>() / v.len() as f64).sqrt().ln();
        }
        Ok(delta.ln() + bn)
    }
}
