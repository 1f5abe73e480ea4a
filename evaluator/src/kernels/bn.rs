//! BatchNorm with batch statistics: fused kernels and the composite form.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{supports, Float};

/// Per-channel statistics of one BatchNorm forward pass, kept for its backward pass.
#[derive(Debug, Clone, Default)]
pub(crate) struct BnStats {
    pub(crate) mean: Vec<f64>,
    /// Biased batch variance.
    pub(crate) var: Vec<f64>,
    pub(crate) invstd: Vec<f64>,
}

/// Fused BatchNorm with batch statistics: `(x, γ, β) -> γ·(x − μ)/√(σ² + ε) + β` per channel.
#[derive(Debug, Clone)]
struct BnOp {
    eps: f64,
    stats: Arc<Mutex<BnStats>>,
}

/// The gradient of [`BnOp`]: `(x, gy, γ) -> [dx, dγ, dβ]`, packed in one flat tensor.
#[derive(Debug, Clone)]
struct BnBwdOp {
    stats: Arc<Mutex<BnStats>>,
}

pub(crate) fn dims_nc_hw(l: &Layout) -> Result<(usize, usize, usize)> {
    match l.dims() {
        &[n, c, h, w] => Ok((n, c, h * w)),
        d => candle_core::bail!("batch norm expects an NCHW tensor, got {d:?}"),
    }
}

pub(crate) fn bn_fwd<T: Float>(x: &[T], g: &[T], b: &[T], (n, c, hw): (usize, usize, usize), eps: f64) -> (Vec<T>, BnStats) {
    let count = (n * hw) as f64;
    let per_channel: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut sum = 0.0;
            for i in 0..n {
                sum += x[(i * c + ch) * hw..][..hw].iter().map(|v| v.to_f64()).sum::<f64>();
            }
            let mean = sum / count;
            let mut sq = 0.0;
            for i in 0..n {
                sq += x[(i * c + ch) * hw..][..hw].iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>();
            }
            (mean, sq / count)
        })
        .collect();
    let mean: Vec<f64> = per_channel.iter().map(|p| p.0).collect();
    let var: Vec<f64> = per_channel.iter().map(|p| p.1).collect();
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(plane, (yp, xp))| {
        let ch = plane % c;
        let scale = g[ch].to_f64() * invstd[ch];
        let shift = b[ch].to_f64() - mean[ch] * scale;
        let (scale, shift) = (T::from_f64(scale), T::from_f64(shift));
        for (o, v) in yp.iter_mut().zip(xp) {
            *o = *v * scale + shift;
        }
    });
    (y, BnStats { mean, var, invstd })
}

pub(crate) fn bn_bwd<T: Float>(x: &[T], gy: &[T], g: &[T], (n, c, hw): (usize, usize, usize), st: &BnStats) -> Vec<T> {
    let count = (n * hw) as f64;
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (m, is) = (st.mean[ch], st.invstd[ch]);
            let (mut sg, mut sgx) = (0.0, 0.0);
            for i in 0..n {
                let off = (i * c + ch) * hw;
                for (xv, gv) in x[off..off + hw].iter().zip(&gy[off..off + hw]) {
                    let gv = gv.to_f64();
                    sg += gv;
                    sgx += gv * (xv.to_f64() - m) * is;
                }
            }
            (sg, sgx)
        })
        .collect();
    let total = x.len();
    let mut out = vec![T::zero(); total + 2 * c];
    let (dx, dparams) = out.split_at_mut(total);
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dp)| {
        let ch = plane % c;
        let off = plane * hw;
        let (m, is) = (st.mean[ch], st.invstd[ch]);
        let (sg, sgx) = sums[ch];
        let k = g[ch].to_f64() * is;
        // dx = γ·invstd·(gy − Σgy/M − x̂·Σ(gy·x̂)/M), with x̂ = (x − μ)·invstd
        let a = T::from_f64(k);
        let bconst = T::from_f64(-k * sg / count + k * sgx / count * m * is);
        let cx = T::from_f64(-k * sgx / count * is);
        for ((d, xv), gv) in dp.iter_mut().zip(&x[off..off + hw]).zip(&gy[off..off + hw]) {
            *d = a * *gv + cx * *xv + bconst;
        }
    });
    for ch in 0..c {
        dparams[ch] = T::from_f64(sums[ch].1);
        dparams[c + ch] = T::from_f64(sums[ch].0);
    }
    out
}

impl CustomOp3 for BnOp {
    fn name(&self) -> &'static str {
        "autoagent-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = dims_nc_hw(l1)?;
        let out = dispatch!(self.name(); (s1, l1), (s2, l2), (s3, l3) => |x, g, b| {
            let (y, stats) = bn_fwd(x, g, b, dims, self.eps);
            *self.stats.lock().expect("bn stats") = stats;
            Ok::<_, candle_core::Error>(y)
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let packed = x.apply_op3_no_bwd(&grad, gamma, &BnBwdOp { stats: self.stats.clone() })?;
        let (total, c) = (x.elem_count(), gamma.elem_count());
        let dx = packed.narrow(0, 0, total)?.reshape(x.shape())?;
        let dg = packed.narrow(0, total, c)?;
        let db = packed.narrow(0, total + c, c)?;
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

impl CustomOp3 for BnBwdOp {
    fn name(&self) -> &'static str {
        "autoagent-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = dims_nc_hw(l1)?;
        let st = self.stats.lock().expect("bn stats").clone();
        let out = dispatch!(self.name(); (s1, l1), (s2, l2), (s3, l3) => |x, gy, g| Ok::<_, candle_core::Error>(bn_bwd(x, gy, g, dims, &st)));
        let len = l1.shape().elem_count() + 2 * dims.1;
        Ok((out, Shape::from(len)))
    }
}

/// BatchNorm of an NCHW batch with the batch's own statistics: returns the normalised output
/// and the per-channel batch mean and biased variance (for running-statistics updates).
///
/// On CPU this is one fused kernel forward and one backward (first-order gradients only: a
/// gradient of this gradient is refused by candle with a clear error; use
/// [`batch_norm_composite`] where second-order gradients are needed). Elsewhere it is the
/// composite form.
pub fn batch_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<(Tensor, Vec<f64>, Vec<f64>)> {
    if !x.device().is_cpu() || !supports(x.dtype()) {
        return batch_norm_composite(x, gamma, beta, eps);
    }
    let stats = Arc::new(Mutex::new(BnStats::default()));
    let op = BnOp { eps, stats: stats.clone() };
    let y = x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let st = stats.lock().expect("bn stats").clone();
    Ok((y, st.mean, st.var))
}

/// BatchNorm with batch statistics from candle's differentiable primitives (any device, any
/// order of gradients, slower).
pub fn batch_norm_composite(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<(Tensor, Vec<f64>, Vec<f64>)> {
    let (n, c, h, w) = x.dims4()?;
    let count = (n * h * w) as f64;
    let mean = (x.sum_keepdim((0, 2, 3))? / count)?;
    let var = (x.broadcast_sub(&mean)?.sqr()?.sum_keepdim((0, 2, 3))? / count)?;
    let shape = (1, c, 1, 1);
    let scale = (&var + eps)?.sqrt()?.recip()?.broadcast_mul(&gamma.reshape(shape)?)?;
    let shift = (beta.reshape(shape)? - mean.broadcast_mul(&scale)?)?;
    let y = x.broadcast_mul(&scale)?.broadcast_add(&shift)?;
    let to_vec = |t: &Tensor| -> Result<Vec<f64>> { t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>() };
    Ok((y, to_vec(&mean)?, to_vec(&var)?))
}
