//! Average pooling and its adjoint.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{slice, Float};

/// Geometry of a 2-D average pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolOp {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
    pub(crate) count_pad: bool,
    /// false: `x -> y` (the pool); true: `gy -> gx` (its adjoint).
    pub(crate) adjoint: bool,
}

impl PoolOp {
    /// The divisor of output position `(oy, ox)` and the input window it covers.
    pub(crate) fn window(&self, oy: usize, ox: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>, usize) {
        let y0 = (oy * self.stride) as isize - self.pad as isize;
        let x0 = (ox * self.stride) as isize - self.pad as isize;
        let ys = y0.max(0) as usize..((y0 + self.k as isize).min(self.h as isize)) as usize;
        let xs = x0.max(0) as usize..((x0 + self.k as isize).min(self.w as isize)) as usize;
        let count = if self.count_pad { self.k * self.k } else { ys.len() * xs.len() };
        (ys, xs, count)
    }

    /// Stride 1 with a centred window (`k = 2·pad + 1`, output size = input size): the pool is a
    /// separable box sum times a per-position scale, and its adjoint the same box sum of the
    /// scaled gradient.
    pub(crate) fn centred(&self) -> bool {
        self.stride == 1 && self.k == 2 * self.pad + 1
    }

    pub(crate) fn run_centred<T: Float>(&self, src: &[T]) -> (Vec<T>, Shape) {
        let (h, w, p) = (self.h, self.w, self.pad);
        let valid = |i: usize, n: usize| (i + p + 1).min(n) - i.saturating_sub(p);
        let inv: Vec<T> = (0..h * w)
            .map(|i| {
                let count = if self.count_pad { self.k * self.k } else { valid(i / w, h) * valid(i % w, w) };
                T::from_f64(1.0 / count as f64)
            })
            .collect();
        let mut out = vec![T::zero(); src.len()];
        out.par_chunks_mut(h * w)
            .zip(src.par_chunks(h * w))
            .with_min_len(super::conv::per_thread(self.n * self.c))
            .for_each_init(
                || (vec![T::zero(); h * w], vec![T::zero(); h * w]),
                |(scaled, rows), (op, sp)| {
                    let input: &[T] = if self.adjoint {
                        for ((d, v), s) in scaled.iter_mut().zip(sp).zip(&inv) {
                            *d = *v * *s;
                        }
                        scaled
                    } else {
                        sp
                    };
                    // Horizontal window sums, then vertical ones.
                    for y in 0..h {
                        let (r, o) = (&input[y * w..(y + 1) * w], &mut rows[y * w..(y + 1) * w]);
                        if p == 1 && w >= 2 {
                            // The 3-wide window as three shifted slices (vectorises).
                            o[0] = r[0] + r[1];
                            o[w - 1] = r[w - 2] + r[w - 1];
                            for (((d, a), b), c) in o[1..w - 1].iter_mut().zip(&r[..w - 2]).zip(&r[1..w - 1]).zip(&r[2..]) {
                                *d = *a + *b + *c;
                            }
                            continue;
                        }
                        for x in 0..w {
                            let mut acc = T::zero();
                            for v in &r[x.saturating_sub(p)..(x + p + 1).min(w)] {
                                acc += *v;
                            }
                            o[x] = acc;
                        }
                    }
                    for y in 0..h {
                        let o = &mut op[y * w..(y + 1) * w];
                        for yy in y.saturating_sub(p)..(y + p + 1).min(h) {
                            for (d, v) in o.iter_mut().zip(&rows[yy * w..(yy + 1) * w]) {
                                *d += *v;
                            }
                        }
                        if !self.adjoint {
                            for (d, s) in o.iter_mut().zip(&inv[y * w..(y + 1) * w]) {
                                *d *= *s;
                            }
                        }
                    }
                },
            );
        (out, (self.n, self.c, h, w).into())
    }

    pub(crate) fn run<T: Float>(&self, src: &[T]) -> (Vec<T>, Shape) {
        if self.centred() {
            return self.run_centred(src);
        }
        let (ins, outs) = (self.h * self.w, self.ho * self.wo);
        if !self.adjoint {
            let mut y = vec![T::zero(); self.n * self.c * outs];
            y.par_chunks_mut(outs).zip(src.par_chunks(ins)).for_each(|(yp, xp)| {
                for oy in 0..self.ho {
                    for ox in 0..self.wo {
                        let (ys, xs, count) = self.window(oy, ox);
                        let mut s = T::zero();
                        for iy in ys {
                            for v in &xp[iy * self.w + xs.start..iy * self.w + xs.end] {
                                s += *v;
                            }
                        }
                        yp[oy * self.wo + ox] = s / T::from_f64(count as f64);
                    }
                }
            });
            (y, (self.n, self.c, self.ho, self.wo).into())
        } else {
            let mut x = vec![T::zero(); self.n * self.c * ins];
            x.par_chunks_mut(ins).zip(src.par_chunks(outs)).for_each(|(xp, gp)| {
                for oy in 0..self.ho {
                    for ox in 0..self.wo {
                        let (ys, xs, count) = self.window(oy, ox);
                        let v = gp[oy * self.wo + ox] / T::from_f64(count as f64);
                        for iy in ys {
                            for d in &mut xp[iy * self.w + xs.start..iy * self.w + xs.end] {
                                *d += v;
                            }
                        }
                    }
                }
            });
            (x, (self.n, self.c, self.h, self.w).into())
        }
    }
}

impl CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        if self.adjoint {
            "autoagent-avg-pool2d-adjoint"
        } else {
            "autoagent-avg-pool2d"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => {
                let (v, sh) = self.run::<f32>(slice(s, l, self.name())?);
                Ok((CpuStorage::F32(v), sh))
            }
            CpuStorage::F64(_) => {
                let (v, sh) = self.run::<f64>(slice(s, l, self.name())?);
                Ok((CpuStorage::F64(v), sh))
            }
            _ => candle_core::bail!("{}: only f32 and f64 are supported", self.name()),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = PoolOp {
            adjoint: !self.adjoint,
            ..*self
        };
        Ok(Some(grad.contiguous()?.apply_op1(op)?))
    }
}

/// 2-D average pooling of an NCHW batch: square `kernel`, `stride`, zero `pad`; with
/// `count_include_pad == false` each window is divided by the number of real (unpadded) inputs
/// it covers, as in NB201's `avg_pool_3x3`. Differentiable to any order.
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize, pad: usize, count_include_pad: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if stride == 0 || h + 2 * pad < kernel || w + 2 * pad < kernel || pad * 2 > kernel {
        candle_core::bail!("avg_pool2d: invalid kernel {kernel}, stride {stride}, pad {pad} for {h}x{w}")
    }
    let ho = (h + 2 * pad - kernel) / stride + 1;
    let wo = (w + 2 * pad - kernel) / stride + 1;
    if !x.device().is_cpu() {
        return avg_pool2d_generic(x, kernel, stride, pad, count_include_pad, (ho, wo));
    }
    let op = PoolOp {
        n,
        c,
        h,
        w,
        k: kernel,
        stride,
        pad,
        ho,
        wo,
        count_pad: count_include_pad,
        adjoint: false,
    };
    x.contiguous()?.apply_op1(op)
}

/// The same pool from candle's differentiable primitives, for devices without our kernels:
/// the sum of the k² shifted windows of the zero-padded input, divided by the per-position count.
pub(crate) fn avg_pool2d_generic(x: &Tensor, k: usize, stride: usize, pad: usize, count_include_pad: bool, (ho, wo): (usize, usize)) -> Result<Tensor> {
    if stride == k && pad == 0 {
        return x.avg_pool2d(k);
    }
    let (_, _, h, w) = x.dims4()?;
    let xp = x.pad_with_zeros(2, pad, pad)?.pad_with_zeros(3, pad, pad)?;
    let mut sum: Option<Tensor> = None;
    for i in 0..k {
        for j in 0..k {
            let win = xp.narrow(2, i, (ho - 1) * stride + 1)?.narrow(3, j, (wo - 1) * stride + 1)?;
            let win = if stride > 1 {
                let rows: Vec<u32> = (0..ho).map(|r| (r * stride) as u32).collect();
                let cols: Vec<u32> = (0..wo).map(|c| (c * stride) as u32).collect();
                let r = Tensor::new(rows, x.device())?;
                let c = Tensor::new(cols, x.device())?;
                win.contiguous()?.index_select(&r, 2)?.contiguous()?.index_select(&c, 3)?
            } else {
                win
            };
            sum = Some(match sum {
                None => win,
                Some(s) => (s + win)?,
            });
        }
    }
    let sum = sum.expect("kernel >= 1");
    let geom = PoolOp {
        n: 1,
        c: 1,
        h,
        w,
        k,
        stride,
        pad,
        ho,
        wo,
        count_pad: count_include_pad,
        adjoint: false,
    };
    let counts: Vec<f64> = (0..ho * wo).map(|i| geom.window(i / wo, i % wo).2 as f64).collect();
    let counts = Tensor::from_vec(counts, (1, 1, ho, wo), x.device())?.to_dtype(x.dtype())?;
    sum.broadcast_div(&counts)
}
