//! CPU kernels for the operations of the NB201 networks, as candle custom ops with gradients.
//!
//! Why our own: candle's CPU `conv_transpose2d`, which candle's autograd uses for the input
//! gradient of every convolution, is a plain loop (forward+backward cost about 5× a forward), and
//! its `avg_pool2d` has no padding, no `count_include_pad=False` and no backward for
//! kernel ≠ stride, which NB201's 3×3 average pool needs.
//!
//! Convolution is im2col + GEMM (the `gemm` crate, the one candle's matmul uses), parallel over
//! the samples of the batch. The three convolution maps are closed under differentiation —
//! forward `y = conv(x, w)`, input gradient `gx = conv_data(gy, w)` and weight gradient
//! `gw = conv_filter(x, gy)` are each linear in both arguments and the adjoint of one is another
//! — so every op's backward is written with the other two, and gradients of gradients (GraSP's
//! Hessian-vector product) work. Average pooling and its adjoint form the same kind of pair.
//!
//! Both f32 and f64 are supported (synflow runs in f64). On other devices the public functions
//! fall back to candle's own operations.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Geometry of a 2-D convolution over an NCHW batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConvGeom {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl ConvGeom {
    fn new(x: &[usize], wt: &[usize], stride: usize, pad: usize) -> Result<Self> {
        let (&[n, cin, h, w], &[cout, wcin, kh, kw]) = (x, wt) else {
            candle_core::bail!("conv2d expects NCHW input and OIHW weight, got {x:?} and {wt:?}")
        };
        if wcin != cin {
            candle_core::bail!("conv2d: input has {cin} channels, weight expects {wcin}")
        }
        if h + 2 * pad < kh || w + 2 * pad < kw || stride == 0 {
            candle_core::bail!("conv2d: kernel {kh}x{kw} does not fit input {h}x{w} with padding {pad}")
        }
        let ho = (h + 2 * pad - kh) / stride + 1;
        let wo = (w + 2 * pad - kw) / stride + 1;
        Ok(ConvGeom { n, cin, h, w, cout, kh, kw, stride, pad, ho, wo })
    }
    /// Rows of the im2col matrix.
    fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }
    /// Output positions per sample.
    fn p(&self) -> usize {
        self.ho * self.wo
    }
    /// A pointwise convolution needs no im2col: the input plane already is the matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    fn x_shape(&self) -> Shape {
        (self.n, self.cin, self.h, self.w).into()
    }
    fn y_shape(&self) -> Shape {
        (self.n, self.cout, self.ho, self.wo).into()
    }
    fn w_shape(&self) -> Shape {
        (self.cout, self.cin, self.kh, self.kw).into()
    }
}

/// Elements our kernels run on.
trait Float: WithDType + Default {}
impl Float for f32 {}
impl Float for f64 {}

/// `dst (m×n) = lhs (m×k) · rhs (k×n)` (+ `dst` when `acc`), all given by (row, column) strides.
#[allow(clippy::too_many_arguments)]
fn gemm<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_rs: usize,
    acc: bool,
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    threads: usize,
) {
    debug_assert!(dst.len() >= (m - 1) * dst_rs + n);
    debug_assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the slices cover every element addressed through the given strides (checked above
    // in debug builds; the callers derive all sizes from one `ConvGeom`), and `dst` does not
    // alias the inputs since it is borrowed mutably.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// Unfold one sample `x (cin×h×w)` into `col (k×p)`.
fn im2col<T: Float>(g: &ConvGeom, x: &[T], col: &mut [T]) {
    let p = g.p();
    for c in 0..g.cin {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &mut col[((c * g.kh + ki) * g.kw + kj) * p..][..p];
                for oy in 0..g.ho {
                    let out = &mut row[oy * g.wo..(oy + 1) * g.wo];
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        out.fill(T::zero());
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let shift = kj as isize - g.pad as isize;
                    if g.stride == 1 {
                        // Columns ox with 0 <= ox + shift < w are copied as one run.
                        let lo = (-shift).max(0) as usize;
                        let hi = ((g.w as isize - shift).min(g.wo as isize)).max(lo as isize) as usize;
                        out[..lo].fill(T::zero());
                        out[hi..].fill(T::zero());
                        let s0 = (lo as isize + shift) as usize;
                        out[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                    } else {
                        for (ox, o) in out.iter_mut().enumerate() {
                            let ix = (ox * g.stride) as isize + shift;
                            *o = if ix < 0 || ix >= g.w as isize { T::zero() } else { src[ix as usize] };
                        }
                    }
                }
            }
        }
    }
}

/// Fold `col (k×p)` back onto one sample `x (cin×h×w)`, adding overlapping entries (`x` must be
/// zeroed by the caller).
fn col2im<T: Float>(g: &ConvGeom, col: &[T], x: &mut [T]) {
    let p = g.p();
    for c in 0..g.cin {
        let plane = &mut x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &col[((c * g.kh + ki) * g.kw + kj) * p..][..p];
                for oy in 0..g.ho {
                    let src = &row[oy * g.wo..(oy + 1) * g.wo];
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let shift = kj as isize - g.pad as isize;
                    if g.stride == 1 {
                        // Columns ox with 0 <= ox + shift < w, added as one contiguous run.
                        let lo = (-shift).max(0) as usize;
                        let hi = ((g.w as isize - shift).min(g.wo as isize)).max(lo as isize) as usize;
                        let d0 = (lo as isize + shift) as usize;
                        for (d, v) in dst[d0..d0 + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                            *d += *v;
                        }
                        continue;
                    }
                    for (ox, &v) in src.iter().enumerate() {
                        let ix = (ox * g.stride) as isize + shift;
                        if ix >= 0 && ix < g.w as isize {
                            dst[ix as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

/// How to spread a batch over the rayon pool: whole samples per thread when there are enough of
/// them, otherwise the threads inside each GEMM.
fn inner_threads(batch: usize) -> usize {
    let t = rayon::current_num_threads();
    if batch >= t {
        1
    } else {
        t
    }
}

fn conv_fwd<T: Float>(g: &ConvGeom, x: &[T], w: &[T]) -> Vec<T> {
    let (k, p) = (g.k(), g.p());
    let mut y = vec![T::zero(); g.n * g.cout * p];
    let threads = inner_threads(g.n);
    let xs = g.cin * g.h * g.w;
    y.par_chunks_mut(g.cout * p).enumerate().for_each_init(
        || if g.pointwise() { Vec::new() } else { vec![T::zero(); k * p] },
        |col, (i, yi)| {
            let xi = &x[i * xs..(i + 1) * xs];
            let rhs: &[T] = if g.pointwise() {
                xi
            } else {
                im2col(g, xi, col);
                col
            };
            gemm(g.cout, p, k, yi, p, false, w, (k, 1), rhs, (p, 1), threads);
        },
    );
    y
}

/// `gx = conv_data(gy, w)`: the input gradient (the adjoint of [`conv_fwd`] in `x`).
fn conv_data<T: Float>(g: &ConvGeom, gy: &[T], w: &[T]) -> Vec<T> {
    let (k, p) = (g.k(), g.p());
    let xs = g.cin * g.h * g.w;
    let mut gx = vec![T::zero(); g.n * xs];
    let threads = inner_threads(g.n);
    gx.par_chunks_mut(xs).enumerate().for_each_init(
        || if g.pointwise() { Vec::new() } else { vec![T::zero(); k * p] },
        |col, (i, gxi)| {
            let gyi = &gy[i * g.cout * p..(i + 1) * g.cout * p];
            // wᵀ (k×cout) · gy_i (cout×p)
            if g.pointwise() {
                gemm(k, p, g.cout, gxi, p, false, w, (1, k), gyi, (p, 1), threads);
            } else {
                gemm(k, p, g.cout, col, p, false, w, (1, k), gyi, (p, 1), threads);
                col2im(g, col, gxi);
            }
        },
    );
    gx
}

/// `gw = conv_filter(x, gy) = Σᵢ gy_i · col(x_i)ᵀ`: the weight gradient.
fn conv_filter<T: Float>(g: &ConvGeom, x: &[T], gy: &[T]) -> Vec<T> {
    let (k, p) = (g.k(), g.p());
    let xs = g.cin * g.h * g.w;
    let threads = inner_threads(g.n);
    let chunks = rayon::current_num_threads().min(g.n).max(1);
    let per = g.n.div_ceil(chunks);
    let partials: Vec<Vec<T>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut acc = vec![T::zero(); g.cout * k];
            let mut col = if g.pointwise() { Vec::new() } else { vec![T::zero(); k * p] };
            for i in c * per..((c + 1) * per).min(g.n) {
                let xi = &x[i * xs..(i + 1) * xs];
                let gyi = &gy[i * g.cout * p..(i + 1) * g.cout * p];
                let colr: &[T] = if g.pointwise() {
                    xi
                } else {
                    im2col(g, xi, &mut col);
                    &col
                };
                // gy_i (cout×p) · colᵀ (p×k)
                gemm(g.cout, k, p, &mut acc, k, true, gyi, (p, 1), colr, (1, p), threads);
            }
            acc
        })
        .collect();
    let mut out = partials[0].clone();
    for part in &partials[1..] {
        for (o, v) in out.iter_mut().zip(part) {
            *o += *v;
        }
    }
    out
}

fn slice<'a, T: Float>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [T]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: expected a contiguous tensor")
    };
    Ok(&T::cpu_storage_as_slice(s)?[a..b])
}

/// Which of the three convolution maps an op computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvMap {
    /// `(x, w) -> y`
    Fwd,
    /// `(gy, w) -> gx`
    Data,
    /// `(x, gy) -> gw`
    Filter,
}

#[derive(Debug, Clone, Copy)]
struct ConvOp {
    map: ConvMap,
    geom: ConvGeom,
}

impl ConvOp {
    fn run<T: Float>(&self, a: &[T], b: &[T]) -> (Vec<T>, Shape) {
        let g = &self.geom;
        match self.map {
            ConvMap::Fwd => (conv_fwd(g, a, b), g.y_shape()),
            ConvMap::Data => (conv_data(g, a, b), g.x_shape()),
            ConvMap::Filter => (conv_filter(g, a, b), g.w_shape()),
        }
    }
    fn with(&self, map: ConvMap) -> ConvOp {
        ConvOp { map, ..*self }
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        match self.map {
            ConvMap::Fwd => "autoagent-conv2d",
            ConvMap::Data => "autoagent-conv2d-data",
            ConvMap::Filter => "autoagent-conv2d-filter",
        }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let (v, s) = self.run::<f32>(slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
                Ok((CpuStorage::F32(v), s))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let (v, s) = self.run::<f64>(slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
                Ok((CpuStorage::F64(v), s))
            }
            _ => candle_core::bail!("{}: only f32 and f64 tensors of one dtype are supported", self.name()),
        }
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let op = |map: ConvMap, u: &Tensor, v: &Tensor| u.apply_op2(v, self.with(map));
        Ok(match self.map {
            // y = conv(x, w): gx = data(gy, w), gw = filter(x, gy)
            ConvMap::Fwd => (Some(op(ConvMap::Data, &grad, b)?), Some(op(ConvMap::Filter, a, &grad)?)),
            // gx = data(gy, w): d gy = conv(u, w), d w = filter(u, gy)
            ConvMap::Data => (Some(op(ConvMap::Fwd, &grad, b)?), Some(op(ConvMap::Filter, &grad, a)?)),
            // gw = filter(x, gy): d x = data(gy, v), d gy = conv(x, v)
            ConvMap::Filter => (Some(op(ConvMap::Data, b, &grad)?), Some(op(ConvMap::Fwd, a, &grad)?)),
        })
    }
}

/// 2-D convolution of an NCHW batch with an OIHW weight, no bias, square stride and zero padding.
///
/// On CPU this runs our im2col+GEMM kernels (with gradients of any order); on other devices
/// candle's `conv2d`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.conv2d(w, pad, stride, 1, 1);
    }
    let geom = ConvGeom::new(x.dims(), w.dims(), stride, pad)?;
    x.contiguous()?.apply_op2(&w.contiguous()?, ConvOp { map: ConvMap::Fwd, geom })
}

/// Geometry of a 2-D average pool.
#[derive(Debug, Clone, Copy)]
struct PoolOp {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
    count_pad: bool,
    /// false: `x -> y` (the pool); true: `gy -> gx` (its adjoint).
    adjoint: bool,
}

impl PoolOp {
    /// The divisor of output position `(oy, ox)` and the input window it covers.
    fn window(&self, oy: usize, ox: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>, usize) {
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
    fn centred(&self) -> bool {
        self.stride == 1 && self.k == 2 * self.pad + 1
    }

    fn run_centred<T: Float>(&self, src: &[T]) -> (Vec<T>, Shape) {
        let (h, w, p) = (self.h, self.w, self.pad);
        let valid = |i: usize, n: usize| (i + p + 1).min(n) - i.saturating_sub(p);
        let inv: Vec<T> = (0..h * w)
            .map(|i| {
                let count = if self.count_pad { self.k * self.k } else { valid(i / w, h) * valid(i % w, w) };
                T::from_f64(1.0 / count as f64)
            })
            .collect();
        let mut out = vec![T::zero(); src.len()];
        out.par_chunks_mut(h * w).zip(src.par_chunks(h * w)).for_each_init(
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

    fn run<T: Float>(&self, src: &[T]) -> (Vec<T>, Shape) {
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
        let op = PoolOp { adjoint: !self.adjoint, ..*self };
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
    let op = PoolOp { n, c, h, w, k: kernel, stride, pad, ho, wo, count_pad: count_include_pad, adjoint: false };
    x.contiguous()?.apply_op1(op)
}

/// The same pool from candle's differentiable primitives, for devices without our kernels:
/// the sum of the k² shifted windows of the zero-padded input, divided by the per-position count.
fn avg_pool2d_generic(
    x: &Tensor,
    k: usize,
    stride: usize,
    pad: usize,
    count_include_pad: bool,
    (ho, wo): (usize, usize),
) -> Result<Tensor> {
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
    let geom = PoolOp { n: 1, c: 1, h, w, k, stride, pad, ho, wo, count_pad: count_include_pad, adjoint: false };
    let counts: Vec<f64> = (0..ho * wo).map(|i| geom.window(i / wo, i % wo).2 as f64).collect();
    let counts = Tensor::from_vec(counts, (1, 1, ho, wo), x.device())?.to_dtype(x.dtype())?;
    sum.broadcast_div(&counts)
}

/// Per-channel statistics of one BatchNorm forward pass, kept for its backward pass.
#[derive(Debug, Clone, Default)]
struct BnStats {
    mean: Vec<f64>,
    /// Biased batch variance.
    var: Vec<f64>,
    invstd: Vec<f64>,
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

fn dims_nc_hw(l: &Layout) -> Result<(usize, usize, usize)> {
    match l.dims() {
        &[n, c, h, w] => Ok((n, c, h * w)),
        d => candle_core::bail!("batch norm expects an NCHW tensor, got {d:?}"),
    }
}

fn bn_fwd<T: Float>(x: &[T], g: &[T], b: &[T], (n, c, hw): (usize, usize, usize), eps: f64) -> (Vec<T>, BnStats) {
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

fn bn_bwd<T: Float>(x: &[T], gy: &[T], g: &[T], (n, c, hw): (usize, usize, usize), st: &BnStats) -> Vec<T> {
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
        let (out, stats) = match s1 {
            CpuStorage::F32(_) => {
                let (y, st) = bn_fwd::<f32>(slice(s1, l1, "bn")?, slice(s2, l2, "bn")?, slice(s3, l3, "bn")?, dims, self.eps);
                (CpuStorage::F32(y), st)
            }
            CpuStorage::F64(_) => {
                let (y, st) = bn_fwd::<f64>(slice(s1, l1, "bn")?, slice(s2, l2, "bn")?, slice(s3, l3, "bn")?, dims, self.eps);
                (CpuStorage::F64(y), st)
            }
            _ => candle_core::bail!("batch norm: only f32 and f64 are supported"),
        };
        *self.stats.lock().expect("bn stats") = stats;
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
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(bn_bwd::<f32>(slice(s1, l1, "bn")?, slice(s2, l2, "bn")?, slice(s3, l3, "bn")?, dims, &st)),
            CpuStorage::F64(_) => CpuStorage::F64(bn_bwd::<f64>(slice(s1, l1, "bn")?, slice(s2, l2, "bn")?, slice(s3, l3, "bn")?, dims, &st)),
            _ => candle_core::bail!("batch norm: only f32 and f64 are supported"),
        };
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

/// ReLU whose backward is one fused masking pass (`gy · [x > 0]`) instead of candle's
/// compare/convert/multiply chain; the mask op is itself differentiable in `gy`.
#[derive(Debug, Clone, Copy)]
struct ReluOp;

/// `(gy, x) -> gy · [x > 0]`
#[derive(Debug, Clone, Copy)]
struct ReluMaskOp;

fn relu_fwd<T: Float>(x: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14)).for_each(|(yc, xc)| {
        for (o, v) in yc.iter_mut().zip(xc) {
            *o = if *v > T::zero() { *v } else { T::zero() };
        }
    });
    y
}

fn relu_mask<T: Float>(g: &[T], x: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(1 << 14).zip(g.par_chunks(1 << 14)).zip(x.par_chunks(1 << 14)).for_each(|((yc, gc), xc)| {
        for ((o, gv), xv) in yc.iter_mut().zip(gc).zip(xc) {
            *o = if *xv > T::zero() { *gv } else { T::zero() };
        }
    });
    y
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

/// What a fused ReLU→Conv→BatchNorm forward pass keeps for its backward pass.
struct ConvBnSaved<T> {
    /// ReLU output (the convolution's input), when the unit has a ReLU.
    r: Option<Vec<T>>,
    /// Convolution output (BatchNorm's input).
    y: Vec<T>,
    gamma: Vec<T>,
    stats: BnStats,
}

type Stash = Arc<Mutex<Option<Box<dyn std::any::Any + Send>>>>;

/// Fused `(x, w, [γ; β]) -> BN(conv(relu?(x), w))` with batch statistics: one graph node
/// instead of three, so candle's autograd allocates and accumulates one input gradient instead
/// of three.
#[derive(Clone)]
struct ConvBnOp {
    geom: ConvGeom,
    relu: bool,
    eps: f64,
    saved: Stash,
}

/// The gradient of [`ConvBnOp`]: `(x, w, gz) -> [gx | gw | gγ | gβ]` (flat).
#[derive(Clone)]
struct ConvBnBwdOp {
    geom: ConvGeom,
    relu: bool,
    saved: Stash,
}

impl ConvBnOp {
    fn run<T: Float>(&self, x: &[T], w: &[T], gb: &[T]) -> Vec<T> {
        let g = &self.geom;
        let r = self.relu.then(|| relu_fwd(x));
        let y = conv_fwd(g, r.as_deref().unwrap_or(x), w);
        let (z, stats) = bn_fwd(&y, &gb[..g.cout], &gb[g.cout..], (g.n, g.cout, g.p()), self.eps);
        let saved = ConvBnSaved { r, y, gamma: gb[..g.cout].to_vec(), stats };
        *self.saved.lock().expect("conv-bn stash") = Some(Box::new(saved));
        z
    }
}

impl ConvBnBwdOp {
    fn run<T: Float>(&self, x: &[T], w: &[T], gz: &[T]) -> Result<Vec<T>> {
        let g = &self.geom;
        let guard = self.saved.lock().expect("conv-bn stash");
        let Some(saved) = guard.as_ref().and_then(|b| b.downcast_ref::<ConvBnSaved<T>>()) else {
            candle_core::bail!("fused conv-bn: backward without a matching forward pass")
        };
        let ylen = saved.y.len();
        let packed = bn_bwd(&saved.y, gz, &saved.gamma, (g.n, g.cout, g.p()), &saved.stats);
        let (gy, gparams) = packed.split_at(ylen);
        let input = saved.r.as_deref().unwrap_or(x);
        let gw = conv_filter(g, input, gy);
        let gr = conv_data(g, gy, w);
        let gx = if self.relu { relu_mask(&gr, x) } else { gr };
        let mut out = gx;
        out.reserve(gw.len() + gparams.len());
        out.extend_from_slice(&gw);
        out.extend_from_slice(gparams);
        Ok(out)
    }
}

impl CustomOp3 for ConvBnOp {
    fn name(&self) -> &'static str {
        "autoagent-relu-conv-bn"
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
        let n = self.name();
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(self.run::<f32>(slice(s1, l1, n)?, slice(s2, l2, n)?, slice(s3, l3, n)?))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(self.run::<f64>(slice(s1, l1, n)?, slice(s2, l2, n)?, slice(s3, l3, n)?))
            }
            _ => candle_core::bail!("{n}: only f32 and f64 tensors of one dtype are supported"),
        };
        Ok((out, self.geom.y_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = ConvBnBwdOp { geom: self.geom, relu: self.relu, saved: self.saved.clone() };
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &op)?;
        let (nx, nw, ngb) = (x.elem_count(), w.elem_count(), gb.elem_count());
        let gx = packed.narrow(0, 0, nx)?.reshape(x.shape())?;
        let gw = packed.narrow(0, nx, nw)?.reshape(w.shape())?;
        let ggb = packed.narrow(0, nx + nw, ngb)?.reshape(gb.shape())?;
        Ok((Some(gx), Some(gw), Some(ggb)))
    }
}

impl CustomOp3 for ConvBnBwdOp {
    fn name(&self) -> &'static str {
        "autoagent-relu-conv-bn-backward"
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
        let n = self.name();
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(self.run::<f32>(slice(s1, l1, n)?, slice(s2, l2, n)?, slice(s3, l3, n)?)?)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(self.run::<f64>(slice(s1, l1, n)?, slice(s2, l2, n)?, slice(s3, l3, n)?)?)
            }
            _ => candle_core::bail!("{n}: only f32 and f64 tensors of one dtype are supported"),
        };
        let len = out_len(&out);
        Ok((out, Shape::from(len)))
    }
}

fn out_len(s: &CpuStorage) -> usize {
    match s {
        CpuStorage::F32(v) => v.len(),
        CpuStorage::F64(v) => v.len(),
        _ => 0,
    }
}

/// Fused `[ReLU →] Conv (no bias) → BatchNorm with batch statistics` on CPU, with first-order
/// gradients; returns the output and the batch mean and biased variance of the convolution's
/// output. `gamma_beta` is `[γ; β]` concatenated (2·cout values).
pub fn relu_conv_bn(
    x: &Tensor,
    w: &Tensor,
    gamma_beta: &Tensor,
    stride: usize,
    pad: usize,
    relu: bool,
    eps: f64,
) -> Result<(Tensor, Vec<f64>, Vec<f64>)> {
    let geom = ConvGeom::new(x.dims(), w.dims(), stride, pad)?;
    if !x.device().is_cpu() || !supports(x.dtype()) || gamma_beta.elem_count() != 2 * geom.cout {
        candle_core::bail!("relu_conv_bn: needs f32/f64 CPU tensors and 2·cout BatchNorm parameters")
    }
    let saved: Stash = Arc::new(Mutex::new(None));
    let op = ConvBnOp { geom, relu, eps, saved: saved.clone() };
    let z = x.contiguous()?.apply_op3(&w.contiguous()?, &gamma_beta.contiguous()?, op)?;
    let guard = saved.lock().expect("conv-bn stash");
    let stats = guard
        .as_ref()
        .and_then(|b| {
            b.downcast_ref::<ConvBnSaved<f32>>()
                .map(|s| s.stats.clone())
                .or_else(|| b.downcast_ref::<ConvBnSaved<f64>>().map(|s| s.stats.clone()))
        })
        .expect("forward pass saved its statistics");
    Ok((z, stats.mean, stats.var))
}

/// Use `threads` threads for CPU work: configures rayon's global pool (which our kernels and
/// candle's matmul share) when it has not been started yet; returns whether it was configured.
/// Call it before any tensor work.
pub fn set_threads(threads: usize) -> bool {
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().is_ok()
}

/// Whether our CPU kernels cover a dtype (f32 and f64; everything else goes to candle's ops).
pub fn supports(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.dims(), b.dims());
        (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    const CASES: [(usize, usize, usize, usize, usize, usize, usize); 6] = [
        // n, cin, cout, hw, k, stride, pad
        (2, 3, 4, 7, 3, 1, 1),
        (3, 4, 5, 8, 3, 2, 1),
        (2, 4, 3, 6, 1, 1, 0),
        (1, 2, 3, 9, 1, 2, 0),
        (4, 3, 2, 5, 3, 1, 0),
        (1, 5, 4, 4, 3, 1, 1), // batch below the thread count: threads inside the GEMM
    ];

    #[test]
    fn conv_forward_and_gradients_match_candle() {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
            for (i, &(n, cin, cout, hw, k, s, p)) in CASES.iter().enumerate() {
                let x = Var::from_tensor(&randn(&[n, cin, hw, hw], i as u64, dtype)).unwrap();
                let w = Var::from_tensor(&randn(&[cout, cin, k, k], 100 + i as u64, dtype)).unwrap();
                let ours = conv2d(&x, &w, s, p).unwrap();
                let theirs = x.conv2d(&w, p, s, 1, 1).unwrap();
                assert!(max_diff(&ours, &theirs) < tol, "forward case {i}");
                // A loss that weighs every output differently.
                let u = randn(ours.dims(), 200 + i as u64, dtype);
                let g1 = (&ours * &u).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = (&theirs * &u).unwrap().sum_all().unwrap().backward().unwrap();
                assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < tol, "dx case {i}");
                assert!(max_diff(g1.get(&w).unwrap(), g2.get(&w).unwrap()) < tol, "dw case {i}");
            }
        }
    }

    #[test]
    fn second_order_gradients_match_finite_differences() {
        // f(w) = <d/dx <conv(x, w), u>, v>, linear in w: its gradient is filter(v, u) — check it
        // numerically, which exercises the backward of the data-gradient op.
        let (n, cin, cout, hw) = (2, 3, 2, 5);
        let dtype = DType::F64;
        let x = Var::from_tensor(&randn(&[n, cin, hw, hw], 1, dtype)).unwrap();
        let w = Var::from_tensor(&randn(&[cout, cin, 3, 3], 2, dtype)).unwrap();
        let u = randn(&[n, cout, hw, hw], 3, dtype);
        let v = randn(&[n, cin, hw, hw], 4, dtype);
        let f = |w: &Tensor| -> (Tensor, Tensor) {
            let y = conv2d(&x, w, 1, 1).unwrap();
            let g = (&y * &u).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = g.get(&x).unwrap().clone();
            ((&gx * &v).unwrap().sum_all().unwrap(), gx)
        };
        let (val, _) = f(&w);
        let grads = val.backward().unwrap();
        let analytic = grads.get(&w).expect("second-order gradient w.r.t. w").clone();
        let wv: Vec<f64> = w.flatten_all().unwrap().to_vec1().unwrap();
        let an: Vec<f64> = analytic.flatten_all().unwrap().to_vec1().unwrap();
        for j in [0, 7, 20, 53] {
            let mut wp = wv.clone();
            wp[j] += 1e-4;
            let mut wm = wv.clone();
            wm[j] -= 1e-4;
            let fp = f(&Tensor::from_vec(wp, w.dims(), &Device::Cpu).unwrap()).0.to_scalar::<f64>().unwrap();
            let fm = f(&Tensor::from_vec(wm, w.dims(), &Device::Cpu).unwrap()).0.to_scalar::<f64>().unwrap();
            let num = (fp - fm) / 2e-4;
            assert!((num - an[j]).abs() < 1e-6 * (1.0 + num.abs()), "j={j}: {num} vs {}", an[j]);
        }
    }

    fn naive_pool(x: &[f64], (n, c, h, w): (usize, usize, usize, usize), k: usize, s: usize, p: usize, inc: bool) -> Vec<f64> {
        let ho = (h + 2 * p - k) / s + 1;
        let wo = (w + 2 * p - k) / s + 1;
        let mut out = vec![0.0; n * c * ho * wo];
        for b in 0..n * c {
            for oy in 0..ho {
                for ox in 0..wo {
                    let (mut sum, mut cnt) = (0.0, 0);
                    for dy in 0..k {
                        for dx in 0..k {
                            let iy = (oy * s + dy) as isize - p as isize;
                            let ix = (ox * s + dx) as isize - p as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                sum += x[b * h * w + iy as usize * w + ix as usize];
                                cnt += 1;
                            }
                        }
                    }
                    out[b * ho * wo + oy * wo + ox] = sum / if inc { (k * k) as f64 } else { cnt as f64 };
                }
            }
        }
        out
    }

    #[test]
    fn avg_pool_matches_a_naive_loop_and_its_gradient_is_the_adjoint() {
        for &(k, s, p, inc) in &[(3, 1, 1, false), (3, 1, 1, true), (2, 2, 0, true), (3, 2, 1, false)] {
            let dims = (2, 3, 6, 6);
            let x = Var::from_tensor(&randn(&[2, 3, 6, 6], 9, DType::F64)).unwrap();
            let y = avg_pool2d(&x, k, s, p, inc).unwrap();
            let xv: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
            let want = naive_pool(&xv, dims, k, s, p, inc);
            let got: Vec<f64> = y.flatten_all().unwrap().to_vec1().unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12);
            }
            // <pool(x), u> = <x, adjoint(u)>: the gradient of the former in x is adjoint(u).
            let u = randn(y.dims(), 10, DType::F64);
            let g = (&y * &u).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = g.get(&x).unwrap();
            let lhs = (&y * &u).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            let rhs = (x.as_tensor() * gx).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            assert!((lhs - rhs).abs() < 1e-10, "k={k} s={s} p={p}");
            // And the generic path (used off-CPU) computes the same.
            let (ho, wo) = (y.dim(2).unwrap(), y.dim(3).unwrap());
            let generic = avg_pool2d_generic(&x, k, s, p, inc, (ho, wo)).unwrap();
            assert!(max_diff(&generic, &y) < 1e-12);
        }
    }

    #[test]
    fn fused_batch_norm_and_relu_match_the_composite_forms() {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
            let x = Var::from_tensor(&(randn(&[4, 3, 5, 5], 1, dtype) * 3.0).unwrap()).unwrap();
            let g = Var::from_tensor(&randn(&[3], 2, dtype)).unwrap();
            let b = Var::from_tensor(&randn(&[3], 3, dtype)).unwrap();
            let (y1, m1, v1) = batch_norm(&x, &g, &b, 1e-5).unwrap();
            let (y2, m2, v2) = batch_norm_composite(&x, &g, &b, 1e-5).unwrap();
            assert!(max_diff(&y1, &y2) < tol);
            for (a, c) in m1.iter().zip(&m2).chain(v1.iter().zip(&v2)) {
                assert!((a - c).abs() < tol);
            }
            let u = randn(y1.dims(), 4, dtype);
            // Push the output through the fused ReLU too, to test both backward passes.
            let l1 = (relu(&y1).unwrap() * &u).unwrap().sum_all().unwrap().backward().unwrap();
            let l2 = (y2.relu().unwrap() * &u).unwrap().sum_all().unwrap().backward().unwrap();
            for var in [&x, &g, &b] {
                assert!(max_diff(l1.get(var).unwrap(), l2.get(var).unwrap()) < tol);
            }
        }
    }

    /// Per-op timings on the first NB201 stage's shape (batch 64, 16×32×32); run with
    /// `cargo test -p autoagent-evaluator --lib bench_ops -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_ops() {
        let time = |name: &str, f: &mut dyn FnMut()| {
            f();
            let t = std::time::Instant::now();
            for _ in 0..10 {
                f();
            }
            eprintln!("{name:<28} {:8.3} ms", t.elapsed().as_secs_f64() * 100.0);
        };
        let x = Var::from_tensor(&randn(&[64, 16, 32, 32], 1, DType::F32)).unwrap();
        let w3 = Var::from_tensor(&randn(&[16, 16, 3, 3], 2, DType::F32)).unwrap();
        let w1 = Var::from_tensor(&randn(&[16, 16, 1, 1], 2, DType::F32)).unwrap();
        let g = Var::from_tensor(&randn(&[16], 3, DType::F32)).unwrap();
        let u = randn(&[64, 16, 32, 32], 4, DType::F32);
        let geom = ConvGeom::new(&[64, 16, 32, 32], &[16, 16, 3, 3], 1, 1).unwrap();
        let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let wv: Vec<f32> = w3.flatten_all().unwrap().to_vec1().unwrap();
        time("raw conv_fwd", &mut || { conv_fwd(&geom, &xv, &wv); });
        time("raw conv_data", &mut || { conv_data(&geom, &xv, &wv); });
        time("raw conv_filter", &mut || { conv_filter(&geom, &xv, &xv); });
        time("conv3x3 fwd", &mut || { conv2d(&x, &w3, 1, 1).unwrap(); });
        time("conv3x3 fwd+bwd", &mut || { (conv2d(&x, &w3, 1, 1).unwrap() * &u).unwrap().sum_all().unwrap().backward().unwrap(); });
        time("conv1x1 fwd", &mut || { conv2d(&x, &w1, 1, 0).unwrap(); });
        time("bn fwd", &mut || { batch_norm(&x, &g, &g, 1e-5).unwrap(); });
        time("bn fwd+bwd", &mut || { (batch_norm(&x, &g, &g, 1e-5).unwrap().0 * &u).unwrap().sum_all().unwrap().backward().unwrap(); });
        time("relu fwd", &mut || { relu(&x).unwrap(); });
        time("pool3 fwd", &mut || { avg_pool2d(&x, 3, 1, 1, false).unwrap(); });
        time("pool3 fwd+bwd", &mut || { (avg_pool2d(&x, 3, 1, 1, false).unwrap() * &u).unwrap().sum_all().unwrap().backward().unwrap(); });
        time("add", &mut || { (x.as_tensor() + &u).unwrap(); });
        time("mul+sum (loss stand-in)", &mut || { (x.as_tensor() * &u).unwrap().sum_all().unwrap(); });
        time("zeros_like", &mut || { x.zeros_like().unwrap(); });
        time("mul+sum fwd+bwd (baseline)", &mut || { (x.as_tensor() * &u).unwrap().sum_all().unwrap().backward().unwrap(); });
    }

    #[test]
    fn fused_relu_conv_bn_matches_the_separate_ops() {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F32 { 2e-4 } else { 1e-10 };
            for &(stride, k, relu_first) in &[(1, 3, true), (2, 3, true), (1, 1, true), (1, 3, false)] {
                let x = Var::from_tensor(&randn(&[3, 4, 6, 6], 11, dtype)).unwrap();
                let w = Var::from_tensor(&randn(&[5, 4, k, k], 12, dtype)).unwrap();
                let g = Var::from_tensor(&randn(&[5], 13, dtype)).unwrap();
                let b = Var::from_tensor(&randn(&[5], 14, dtype)).unwrap();
                let gb = Tensor::cat(&[g.as_tensor(), b.as_tensor()], 0).unwrap();
                let (z1, m1, v1) = relu_conv_bn(&x, &w, &gb, stride, k / 2, relu_first, 1e-5).unwrap();
                let xin = if relu_first { relu(&x).unwrap() } else { x.as_tensor().clone() };
                let (z2, m2, v2) = batch_norm(&conv2d(&xin, &w, stride, k / 2).unwrap(), &g, &b, 1e-5).unwrap();
                assert!(max_diff(&z1, &z2) < tol);
                for (a, c) in m1.iter().zip(&m2).chain(v1.iter().zip(&v2)) {
                    assert!((a - c).abs() < tol);
                }
                let u = randn(z1.dims(), 15, dtype);
                let g1 = (&z1 * &u).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = (&z2 * &u).unwrap().sum_all().unwrap().backward().unwrap();
                for var in [&x, &w, &g, &b] {
                    assert!(max_diff(g1.get(var).unwrap(), g2.get(var).unwrap()) < tol, "stride {stride} k {k}");
                }
            }
        }
    }
}
