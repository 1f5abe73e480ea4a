//! synflow (Tanaka et al. 2020, as used by Abdelfattah et al. 2021), PROXIES.md §2.2.
//!
//! The network in float64 with BatchNorm bypassed and every state tensor replaced by its
//! absolute value, an all-ones input of batch 1, `R = Σ logits`;
//! `S = Σ_l Σ_i |θ_i · ∂R/∂θ_i|` over convolution and linear weights. Data-independent.

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Tensor};
use rayon::prelude::*;

use crate::{Batch, BnHandling, Candidate, Proxy, Result, Trace};

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
            if var.device().is_cpu() && var.is_contiguous() {
                var.as_tensor().inplace_op1(&AbsInPlace)?;
            } else {
                var.set(&var.as_tensor().abs()?)?;
            }
        }
        let (c, h, w) = candidate.input_shape();
        let ones = Tensor::ones((1, c, h, w), DType::F64, batch.images.device())?;
        let rec = net.forward(&ones, BnHandling::Bypass, Trace::default())?;
        let grads = rec.logits.sum_all()?.backward()?;
        // One term per scored weight, in parallel (the weights and their gradients are mostly
        // out of cache by now: this pass is bound by memory), added in order.
        let pairs: Vec<(Tensor, Tensor)> = net
            .weights()
            .iter()
            .filter_map(|w| grads.get(w.var.as_tensor()).map(|g| (w.var.as_tensor().clone(), g.clone())))
            .collect();
        let terms: Vec<Result<f64>> = pairs.par_iter().map(|(w, g)| sum_abs_product(w, g)).collect();
        terms.into_iter().sum()
    }
}

/// `θ ← |θ|` in place on a CPU tensor (no temporary, no copy back into the variable).
struct AbsInPlace;

impl InplaceOp1 for AbsInPlace {
    fn name(&self) -> &'static str {
        "synflow-abs"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("synflow-abs: expected a contiguous tensor")
        };
        match storage {
            CpuStorage::F64(v) => v[a..b].iter_mut().for_each(|x| *x = x.abs()),
            CpuStorage::F32(v) => v[a..b].iter_mut().for_each(|x| *x = x.abs()),
            _ => candle_core::bail!("synflow-abs: expected a float tensor"),
        }
        Ok(())
    }
}

/// `Σ |w ⊙ g|`, in one pass over the two buffers when both are contiguous f64 CPU tensors (the
/// tensor ops would allocate two temporaries per layer), else with tensor ops.
fn sum_abs_product(w: &Tensor, g: &Tensor) -> Result<f64> {
    if w.shape() == g.shape() {
        let ((ws, wl), (gs, gl)) = (w.storage_and_layout(), g.storage_and_layout());
        if let (Storage::Cpu(CpuStorage::F64(wv)), Storage::Cpu(CpuStorage::F64(gv)), Some((w0, w1)), Some((g0, g1))) =
            (&*ws, &*gs, wl.contiguous_offsets(), gl.contiguous_offsets())
        {
            return Ok(wv[w0..w1].iter().zip(&gv[g0..g1]).map(|(a, b)| (a * b).abs()).sum());
        }
    }
    Ok((w * g)?.abs()?.sum_all()?.to_scalar::<f64>()?)
}
