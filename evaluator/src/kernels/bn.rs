//! BatchNorm with batch statistics: fused kernels and the composite form.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{f32s, supports, Float};

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

/// Independent accumulators per reduction: enough for LLVM to vectorise the sums (two AVX
/// registers of f32) while each lane adds only `len/16` terms in `T`.
const LANES: usize = 16;

/// Sum of `x` with [`LANES`] accumulators in `T`, returned in f64.
#[inline]
fn lane_sum<T: Float>(x: &[T]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), true) = (f32s(x), avx512_available()) {
        // SAFETY: AVX-512F is present.
        return unsafe { avx512::sum(x) };
    }
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest: f64 = chunks.remainder().iter().map(|v| v.to_f64()).sum();
    for ch in chunks {
        let ch: &[T; LANES] = ch.try_into().expect("chunks of LANES");
        for l in 0..LANES {
            acc[l] += ch[l];
        }
    }
    acc.iter().map(|a| a.to_f64()).sum::<f64>() + rest
}

/// `Σ (x − m)²` with [`LANES`] accumulators in `T`, returned in f64.
#[inline]
fn lane_sq_dev<T: Float>(x: &[T], m: T) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), true) = (f32s(x), avx512_available()) {
        // SAFETY: AVX-512F is present.
        return unsafe { avx512::sq_dev(x, m.to_f64() as f32) };
    }
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest: f64 = chunks.remainder().iter().map(|v| (*v - m).to_f64().powi(2)).sum();
    for ch in chunks {
        let ch: &[T; LANES] = ch.try_into().expect("chunks of LANES");
        for l in 0..LANES {
            let d = ch[l] - m;
            acc[l] += d * d;
        }
    }
    acc.iter().map(|a| a.to_f64()).sum::<f64>() + rest
}

/// `(Σ g, Σ g·(y − m))` with [`LANES`] accumulators in `T`, returned in f64.
#[inline]
fn lane_grad_sums<T: Float>(g: &[T], y: &[T], m: T) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(g), Some(y), true) = (f32s(g), f32s(y), avx512_available()) {
        // SAFETY: AVX-512F is present.
        return unsafe { avx512::grad_sums(g, y, m.to_f64() as f32) };
    }
    let (mut sg, mut sgy) = ([T::zero(); LANES], [T::zero(); LANES]);
    let len = g.len().min(y.len());
    let full = len / LANES * LANES;
    for (gc, yc) in g[..full].chunks_exact(LANES).zip(y[..full].chunks_exact(LANES)) {
        let (gc, yc): (&[T; LANES], &[T; LANES]) = (gc.try_into().expect("chunks of LANES"), yc.try_into().expect("chunks of LANES"));
        for l in 0..LANES {
            sg[l] += gc[l];
            sgy[l] += gc[l] * (yc[l] - m);
        }
    }
    let (mut a, mut b) = (sg.iter().map(|v| v.to_f64()).sum::<f64>(), sgy.iter().map(|v| v.to_f64()).sum::<f64>());
    for i in full..len {
        a += g[i].to_f64();
        b += (g[i] * (y[i] - m)).to_f64();
    }
    (a, b)
}

/// Whether the f32 reductions take their AVX-512 path.
#[cfg(target_arch = "x86_64")]
fn avx512_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// The f32 reductions of BatchNorm with explicit AVX-512 (LLVM leaves the portable lane loops
/// scalar): four vectors of 16 lanes each for independent additions, lanes summed in f64.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    /// Sum of the 64 lanes: the four vectors added in f32, their 16 lanes in f64.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn lanes_f64(acc: [__m512; 4]) -> f64 {
        let v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        _mm512_reduce_add_pd(_mm512_add_pd(lo, hi))
    }

    /// `Σ f(x[i], y[i])` over equal-length slices (`y` may be `x`), `f` applied to 16 lanes at a
    /// time and summed into four accumulators; the tail through masked loads (lanes past the end
    /// read as 0, so `f` must map (0, 0) to 0, or the mask is applied to its result).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn reduce(x: &[f32], y: &[f32], f: impl Fn(__m512, __m512) -> __m512) -> f64 {
        let n = x.len().min(y.len());
        let mut acc = [_mm512_setzero_ps(); 4];
        let (xp, yp) = (x.as_ptr(), y.as_ptr());
        let mut i = 0;
        while i + 64 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: elements `i + 16k ..< i + 16k + 16 <= n` of both slices.
                let (xv, yv) = unsafe {
                    (
                        _mm512_maskz_loadu_ps(0xffff, xp.add(i + 16 * k)),
                        _mm512_maskz_loadu_ps(0xffff, yp.add(i + 16 * k)),
                    )
                };
                *a = _mm512_add_ps(*a, f(xv, yv));
            }
            i += 64;
        }
        while i < n {
            let m = if n - i >= 16 { 0xffff } else { ((1u32 << (n - i)) - 1) as __mmask16 };
            // SAFETY: the lanes left on are elements `< n` of both slices.
            let (xv, yv) = unsafe { (_mm512_maskz_loadu_ps(m, xp.add(i)), _mm512_maskz_loadu_ps(m, yp.add(i))) };
            acc[0] = _mm512_mask_add_ps(acc[0], m, acc[0], f(xv, yv));
            i += 16;
        }
        lanes_f64(acc)
    }

    /// `Σ x`.
    #[target_feature(enable = "avx512f")]
    pub(super) fn sum(x: &[f32]) -> f64 {
        reduce(x, x, |v, _| v)
    }

    /// `Σ (x − m)²`.
    #[target_feature(enable = "avx512f")]
    pub(super) fn sq_dev(x: &[f32], m: f32) -> f64 {
        let mv = _mm512_set1_ps(m);
        reduce(x, x, |v, _| {
            let d = _mm512_sub_ps(v, mv);
            _mm512_mul_ps(d, d)
        })
    }

    /// `(Σ g, Σ g·(y − m))`.
    #[target_feature(enable = "avx512f")]
    pub(super) fn grad_sums(g: &[f32], y: &[f32], m: f32) -> (f64, f64) {
        let n = g.len().min(y.len());
        let mv = _mm512_set1_ps(m);
        let (mut sg, mut sgy) = ([_mm512_setzero_ps(); 4], [_mm512_setzero_ps(); 4]);
        let (gp, yp) = (g.as_ptr(), y.as_ptr());
        let mut i = 0;
        while i < n {
            for k in 0..4 {
                let at = i + 16 * k;
                let m = if at >= n {
                    0
                } else if n - at >= 16 {
                    0xffff
                } else {
                    ((1u32 << (n - at)) - 1) as __mmask16
                };
                // SAFETY: the lanes left on are elements `< n` of both slices.
                let (gv, yv) = unsafe { (_mm512_maskz_loadu_ps(m, gp.wrapping_add(at)), _mm512_maskz_loadu_ps(m, yp.wrapping_add(at))) };
                sg[k] = _mm512_add_ps(sg[k], gv);
                // Lanes off have g = 0, so they add 0.
                sgy[k] = _mm512_fmadd_ps(gv, _mm512_sub_ps(yv, mv), sgy[k]);
            }
            i += 64;
        }
        (lanes_f64(sg), lanes_f64(sgy))
    }
}

/// Mean and `M2 = Σ (x − mean)²` of one plane (the second pass reads the plane while it is
/// still in cache). Per-plane sums in `T` are short (at most a few thousand terms); the planes
/// are combined in f64 by [`stats_from_planes`].
pub(crate) fn plane_moments<T: Float>(x: &[T]) -> (f64, f64) {
    let mean = lane_sum(x) / x.len() as f64;
    (mean, lane_sq_dev(x, T::from_f64(mean)))
}

/// Per-channel batch statistics from the [`plane_moments`] of every `(sample, channel)` plane,
/// laid out sample-major (`n·c` entries of `hw` elements each): Chan's parallel combination,
/// `M2 = Σ M2ₚ + hw·Σ (meanₚ − mean)²`.
pub(crate) fn stats_from_planes(parts: &[(f64, f64)], c: usize, hw: usize, eps: f64) -> BnStats {
    let n = parts.len() / c;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let m = (0..n).map(|i| parts[i * c + ch].0).sum::<f64>() / n as f64;
        let m2: f64 = (0..n)
            .map(|i| {
                let (pm, pm2) = parts[i * c + ch];
                pm2 + hw as f64 * (pm - m) * (pm - m)
            })
            .sum();
        mean[ch] = m;
        var[ch] = m2 / (n * hw) as f64;
    }
    let invstd = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    BnStats { mean, var, invstd }
}

/// Per-channel `(Σ gy, Σ gy·x̂)` of a BatchNorm's output gradient `gy` and input `x`.
pub(crate) fn grad_sums<T: Float>(x: &[T], gy: &[T], (c, hw): (usize, usize), st: &BnStats) -> Vec<(f64, f64)> {
    let parts: Vec<(f64, f64)> = x
        .par_chunks(hw)
        .zip(gy.par_chunks(hw))
        .enumerate()
        .with_min_len(64)
        .map(|(plane, (xp, gp))| lane_grad_sums(gp, xp, T::from_f64(st.mean[plane % c])))
        .collect();
    (0..c)
        .map(|ch| {
            let (mut sg, mut sgx) = (0.0, 0.0);
            for p in parts.iter().skip(ch).step_by(c) {
                sg += p.0;
                sgx += p.1;
            }
            (sg, sgx * st.invstd[ch])
        })
        .collect()
}

/// The per-channel affine map `dx = a·gy + cx·x + b` of the BatchNorm input gradient:
/// `dx = γ·invstd·(gy − Σgy/M − x̂·Σ(gy·x̂)/M)` with `x̂ = (x − μ)·invstd`, `M = n·hw`.
pub(crate) fn bwd_coefficients(g: &[f64], sums: &[(f64, f64)], st: &BnStats, count: f64) -> Vec<[f64; 3]> {
    sums.iter()
        .enumerate()
        .map(|(ch, &(sg, sgx))| {
            let (m, is) = (st.mean[ch], st.invstd[ch]);
            let k = g[ch] * is;
            [k, -k * sgx / count * is, -k * sg / count + k * sgx / count * m * is]
        })
        .collect()
}

/// `out = a·g + cx·x + b` per `(sample, channel)` plane of `hw` elements, the channels of the
/// planes cycling through `coef`: the BatchNorm input gradient from the output gradient `g`
/// (see [`bwd_coefficients`]).
pub(crate) fn input_gradient_into<T: Float>(out: &mut [T], g: &[T], x: &[T], coef: &[[T; 3]], hw: usize) {
    for (plane, ((o, gp), xp)) in out.chunks_mut(hw).zip(g.chunks(hw)).zip(x.chunks(hw)).enumerate() {
        let [a, cx, b] = coef[plane % coef.len()];
        for ((o, gv), xv) in o.iter_mut().zip(gp).zip(xp) {
            *o = a * *gv + cx * *xv + b;
        }
    }
}

/// Per `(sample, channel)` plane of `hw` elements: `Σ x·(a·g + cx·x + b)`, the output `x` times
/// its gradient as [`input_gradient_into`] would write it (the channels of the planes cycling
/// through `coef`), without writing the gradient out; in 16 independent lanes per plane,
/// combined in f64, in parallel over planes.
pub(crate) fn input_gradient_dots<T: Float>(g: &[T], x: &[T], coef: &[[f64; 3]], hw: usize) -> Vec<f64> {
    let coef: Vec<[T; 3]> = coef.iter().map(|a| a.map(T::from_f64)).collect();
    let c = coef.len();
    g.par_chunks(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .map(|(plane, (gp, xp))| {
            let [a, cx, b] = coef[plane % c];
            let mut lanes = [T::zero(); 16];
            let body = gp.len() / 16 * 16;
            for (gc, xc) in gp[..body].chunks_exact(16).zip(xp[..body].chunks_exact(16)) {
                let (gc, xc): (&[T; 16], &[T; 16]) = (gc.try_into().expect("chunks of 16"), xc.try_into().expect("chunks of 16"));
                for l in 0..16 {
                    lanes[l] += xc[l] * (a * gc[l] + cx * xc[l] + b);
                }
            }
            let tail: f64 = gp[body..]
                .iter()
                .zip(&xp[body..])
                .map(|(&gv, &xv)| (xv * (a * gv + cx * xv + b)).to_f64())
                .sum();
            lanes.iter().map(|v| v.to_f64()).sum::<f64>() + tail
        })
        .collect()
}

/// [`input_gradient_into`] over a whole batch, in parallel over planes.
pub(crate) fn input_gradient_par<T: Float>(out: &mut [T], g: &[T], x: &[T], coef: &[[f64; 3]], hw: usize) {
    let coef: Vec<[T; 3]> = coef.iter().map(|a| a.map(T::from_f64)).collect();
    let c = coef.len();
    out.par_chunks_mut(hw)
        .zip(g.par_chunks(hw))
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(plane, ((o, gp), xp))| {
            input_gradient_into(o, gp, xp, &coef[plane % c..plane % c + 1], hw);
        });
}

pub(crate) fn bn_fwd<T: Float>(x: &[T], g: &[T], b: &[T], (n, c, hw): (usize, usize, usize), eps: f64) -> (Vec<T>, BnStats) {
    debug_assert_eq!(x.len(), n * c * hw);
    let parts: Vec<(f64, f64)> = x.par_chunks(hw).with_min_len(64).map(plane_moments).collect();
    let stats = stats_from_planes(&parts, c, hw, eps);
    let mut y = super::alloc_uninit::<T>(x.len());
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(plane, (yp, xp))| {
        let ch = plane % c;
        let scale = g[ch].to_f64() * stats.invstd[ch];
        let shift = b[ch].to_f64() - stats.mean[ch] * scale;
        let (scale, shift) = (T::from_f64(scale), T::from_f64(shift));
        for (o, v) in yp.iter_mut().zip(xp) {
            *o = *v * scale + shift;
        }
    });
    (y, stats)
}

pub(crate) fn bn_bwd<T: Float>(x: &[T], gy: &[T], g: &[T], (n, c, hw): (usize, usize, usize), st: &BnStats) -> Vec<T> {
    let sums = grad_sums(x, gy, (c, hw), st);
    let gamma: Vec<f64> = g.iter().map(|v| v.to_f64()).collect();
    let coef = bwd_coefficients(&gamma, &sums, st, (n * hw) as f64);
    let total = x.len();
    let mut out = super::alloc_uninit::<T>(total + 2 * c);
    let (dx, dparams) = out.split_at_mut(total);
    input_gradient_par(dx, gy, x, &coef, hw);
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

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = dims_nc_hw(l1)?;
        let out = dispatch!(self.name(); (s1, l1), (s2, l2), (s3, l3) => |x, g, b| {
            let (y, stats) = bn_fwd(x, g, b, dims, self.eps);
            *self.stats.lock().expect("bn stats") = stats;
            Ok::<_, candle_core::Error>(y)
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, gamma: &Tensor, _beta: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
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

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
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
