//! ReLU with a fused masking backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{alloc_uninit, slice, supports, Float};

/// ReLU whose backward is one fused masking pass (`gy · [x > 0]`) instead of candle's
/// compare/convert/multiply chain; the mask op is itself differentiable in `gy`.
#[derive(Debug, Clone, Copy)]
struct ReluOp;

/// `(gy, x) -> gy · [x > 0]`
#[derive(Debug, Clone, Copy)]
struct ReluMaskOp;

pub(crate) fn relu_fwd<T: Float>(x: &[T]) -> Vec<T> {
    // Every element is written below.
    let mut y = alloc_uninit::<T>(x.len());
    y.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14)).for_each(|(yc, xc)| {
        for (o, v) in yc.iter_mut().zip(xc) {
            *o = if *v > T::zero() { *v } else { T::zero() };
        }
    });
    y
}

pub(crate) fn relu_mask<T: Float>(g: &[T], x: &[T]) -> Vec<T> {
    let mut y = alloc_uninit::<T>(x.len());
    relu_mask_into(&mut y, g, x);
    y
}

/// `y = g · [x > 0]`, in parallel.
pub(crate) fn relu_mask_into<T: Float>(y: &mut [T], g: &[T], x: &[T]) {
    y.par_chunks_mut(1 << 14)
        .zip(g.par_chunks(1 << 14))
        .zip(x.par_chunks(1 << 14))
        .for_each(|((yc, gc), xc)| {
            for ((o, gv), xv) in yc.iter_mut().zip(gc).zip(xc) {
                *o = if *xv > T::zero() { *gv } else { T::zero() };
            }
        });
}

impl CustomOp1 for ReluOp {
    fn name(&self) -> &'static str {
        "autoagent-relu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(relu_fwd::<f32>(slice(s, l, "relu")?)),
            CpuStorage::F64(_) => CpuStorage::F64(relu_fwd::<f64>(slice(s, l, "relu")?)),
            _ => candle_core::bail!("relu: only f32 and f64 are supported"),
        };
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2(x, ReluMaskOp)?))
    }
}

impl CustomOp2 for ReluMaskOp {
    fn name(&self) -> &'static str {
        "autoagent-relu-mask"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(relu_mask::<f32>(slice(s1, l1, "relu")?, slice(s2, l2, "relu")?)),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(relu_mask::<f64>(slice(s1, l1, "relu")?, slice(s2, l2, "relu")?)),
            _ => candle_core::bail!("relu: only f32 and f64 tensors of one dtype are supported"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(&self, _g: &Tensor, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Linear in gy with the same mask; piecewise constant (zero derivative) in x.
        Ok((Some(grad.contiguous()?.apply_op2(x, ReluMaskOp)?), None))
    }
}

/// ReLU: our fused kernel on CPU, candle's elsewhere.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || !supports(x.dtype()) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(ReluOp)
}
