//! Convolution: im2col + GEMM, and the three maps (forward, data gradient, filter gradient)
//! as candle ops closed under differentiation.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::implicit::PackedFilter;
use super::{slice, Float};

/// Geometry of a 2-D convolution over an NCHW batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub(crate) n: usize,
    pub(crate) cin: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) cout: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
}

impl ConvGeom {
    pub(crate) fn new(x: &[usize], wt: &[usize], stride: usize, pad: usize) -> Result<Self> {
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
        Ok(ConvGeom {
            n,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            stride,
            pad,
            ho,
            wo,
        })
    }
    /// A stride-1 convolution of `n` samples of `cin × h × w` to `cout` channels with a `k × k`
    /// kernel and padding `k / 2`: for odd `k` its output has the input's size.
    pub(crate) fn same(n: usize, cin: usize, cout: usize, h: usize, w: usize, k: usize) -> Self {
        ConvGeom {
            n,
            cin,
            h,
            w,
            cout,
            kh: k,
            kw: k,
            stride: 1,
            pad: k / 2,
            ho: h,
            wo: w,
        }
    }

    /// Rows of the im2col matrix.
    pub(crate) fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }
    /// Output positions per sample.
    pub(crate) fn p(&self) -> usize {
        self.ho * self.wo
    }
    /// Stride 1, output the size of the input, square odd kernel with padding `k/2`.
    pub(crate) fn same_odd(&self) -> bool {
        self.stride == 1 && self.kh == self.kw && self.kh % 2 == 1 && self.pad == self.kh / 2 && self.ho == self.h && self.wo == self.w
    }
    /// A pointwise convolution needs no im2col: the input plane already is the matrix.
    pub(crate) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    pub(crate) fn x_shape(&self) -> Shape {
        (self.n, self.cin, self.h, self.w).into()
    }
    pub(crate) fn y_shape(&self) -> Shape {
        (self.n, self.cout, self.ho, self.wo).into()
    }
    pub(crate) fn w_shape(&self) -> Shape {
        (self.cout, self.cin, self.kh, self.kw).into()
    }
}

/// Unfold one sample `x (cin×h×w)` into `col (k×p)`.
pub(crate) fn im2col<T: Float>(g: &ConvGeom, x: &[T], col: &mut [T]) {
    im2col_map::<T, false>(g, x, col)
}

/// Copy `src` into `dst`, through a ReLU when `RELU`.
#[inline]
fn copy_map<T: Float, const RELU: bool>(dst: &mut [T], src: &[T]) {
    if RELU {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = if *s > T::zero() { *s } else { T::zero() };
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// The f32 views of an f32 input and output (`None` for f64).
fn as_f32<'a, T: Float>(x: &'a [T], col: &'a mut [T]) -> Option<(&'a [f32], &'a mut [f32])> {
    if T::DTYPE != candle_core::DType::F32 {
        return None;
    }
    // SAFETY: T is f32 (checked through its dtype), so the casts are identities.
    unsafe {
        Some((
            std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()),
            std::slice::from_raw_parts_mut(col.as_mut_ptr().cast::<f32>(), col.len()),
        ))
    }
}

/// [`im2col`] of `relu(x)` when `RELU` (the ReLU of a ReLU→Conv edge, fused into the copy).
pub(crate) fn im2col_map<T: Float, const RELU: bool>(g: &ConvGeom, x: &[T], col: &mut [T]) {
    let p = g.p();
    if g.stride == 1 && g.ho == g.h && g.wo == g.w {
        if let Some((x32, col32)) = as_f32(x, col) {
            if super::im2col_simd::available() {
                return super::im2col_simd::im2col_same_f32(g, x32, col32, RELU);
            }
        }
        return im2col_same::<T, RELU>(g, x, col);
    }
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
                        copy_map::<T, RELU>(&mut out[lo..hi], &src[s0..s0 + (hi - lo)]);
                    } else {
                        for (ox, o) in out.iter_mut().enumerate() {
                            let ix = (ox * g.stride) as isize + shift;
                            let v = if ix < 0 || ix >= g.w as isize { T::zero() } else { src[ix as usize] };
                            *o = if RELU && v < T::zero() { T::zero() } else { v };
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col`] for stride 1 and "same" padding: each im2col row is the input plane shifted by
/// `dy·w + dx`, so it is one block copy, after which the rows and columns that fell outside the
/// image (including the elements the flat shift wrapped around the row ends) are zeroed.
fn im2col_same<T: Float, const RELU: bool>(g: &ConvGeom, x: &[T], col: &mut [T]) {
    let (h, w) = (g.h, g.w);
    let hw = h * w;
    for c in 0..g.cin {
        let plane = &x[c * hw..(c + 1) * hw];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &mut col[((c * g.kh + ki) * g.kw + kj) * hw..][..hw];
                let (dy, dx) = (ki as isize - g.pad as isize, kj as isize - g.pad as isize);
                let oy0 = (-dy).max(0) as usize;
                let oy1 = (h as isize - dy).clamp(0, h as isize) as usize;
                row[..oy0 * w].fill(T::zero());
                row[oy1.max(oy0) * w..].fill(T::zero());
                if oy1 <= oy0 {
                    continue;
                }
                let start = (oy0 as isize + dy) * w as isize + dx;
                let len = (oy1 - oy0) * w;
                let lo = (-start).max(0) as usize;
                let hi = (hw as isize - start).min(len as isize).max(lo as isize) as usize;
                let dst = &mut row[oy0 * w..oy1 * w];
                let s0 = (start + lo as isize) as usize;
                copy_map::<T, RELU>(&mut dst[lo..hi], &plane[s0..s0 + (hi - lo)]);
                dst[..lo].fill(T::zero());
                dst[hi..].fill(T::zero());
                // Columns whose source lies left or right of the image.
                let (zl, zr) = ((-dx).max(0) as usize, dx.max(0) as usize);
                if zl + zr > 0 {
                    for r in dst.chunks_mut(w) {
                        r[..zl.min(w)].fill(T::zero());
                        r[w - zr.min(w)..].fill(T::zero());
                    }
                }
            }
        }
    }
}

/// Fold `col (k×p)` back onto one sample `x (cin×h×w)`, adding overlapping entries (`x` must be
/// zeroed by the caller).
pub(crate) fn col2im<T: Float>(g: &ConvGeom, col: &[T], x: &mut [T]) {
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

/// Samples per rayon job: one contiguous share per thread, so the per-job scratch buffers
/// (`for_each_init`) are allocated once per thread and call, not once per sample.
pub(crate) fn per_thread(items: usize) -> usize {
    items.div_ceil(rayon::current_num_threads()).max(1)
}

/// How to spread a batch over the rayon pool: whole samples per thread when there are enough of
/// them, otherwise the threads inside each GEMM.
pub(crate) fn inner_threads(batch: usize) -> usize {
    let t = rayon::current_num_threads();
    if batch >= t {
        1
    } else {
        t
    }
}

/// Run `f(scratch, i, out_i)` for every sample `i` and its chunk `out_i` of `out` (`chunk`
/// elements each): in parallel over the samples, with one scratch per rayon job, when the batch
/// fills the pool (`threads` = 1); otherwise (a batch smaller than the pool, `threads` > 1, as
/// synflow's batch of one) one after the other on the calling thread, whose GEMMs then spread
/// over the pool themselves — so that no job is handed to the pool just to run one sample.
fn for_each_sample<T: Float, S>(
    out: &mut [T],
    chunk: usize,
    n: usize,
    threads: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    if threads > 1 {
        let mut scratch = init();
        for (i, oi) in out.chunks_mut(chunk).enumerate() {
            f(&mut scratch, i, oi);
        }
    } else {
        out.par_chunks_mut(chunk)
            .enumerate()
            .with_min_len(per_thread(n))
            .for_each_init(init, |scratch, (i, oi)| f(scratch, i, oi));
    }
}

pub(crate) fn conv_fwd<T: Float>(g: &ConvGeom, x: &[T], w: &[T]) -> Vec<T> {
    let threads = inner_threads(g.n);
    if use_shifted(g, threads) {
        return shifted::conv_fwd(g, x, w, threads);
    }
    let (k, p) = (g.k(), g.p());
    // Every element is written by the GEMM (no accumulation), every scratch one by im2col.
    let mut y = super::alloc_uninit::<T>(g.n * g.cout * p);
    let xs = g.cin * g.h * g.w;
    if let Some(w32) = implicit_same(g).then(|| super::f32s(w)).flatten() {
        let taps = g.kh * g.kw;
        let packed = PackedFilter::new(g.cout, g.cin, taps, |co, ci, t| w32[(co * g.cin + ci) * taps + t]);
        implicit_per_sample(g, x, g.cin, &packed, &mut y);
        return y;
    }
    for_each_sample(
        &mut y,
        g.cout * p,
        g.n,
        threads,
        || super::alloc_uninit::<T>(if g.pointwise() { 0 } else { k * p }),
        |col, i, yi| {
            let xi = &x[i * xs..(i + 1) * xs];
            let rhs: &[T] = if g.pointwise() {
                xi
            } else {
                im2col(g, xi, col);
                col
            };
            T::matmul(g.cout, p, k, yi, p, false, w, (k, 1), rhs, (p, 1), threads);
        },
    );
    y
}

/// `gx = conv_data(gy, w)`: the input gradient (the adjoint of [`conv_fwd`] in `x`).
pub(crate) fn conv_data<T: Float>(g: &ConvGeom, gy: &[T], w: &[T]) -> Vec<T> {
    let threads = inner_threads(g.n);
    if use_shifted(g, threads) {
        return shifted::conv_data(g, gy, w, threads);
    }
    if g.same_odd() && !g.pointwise() {
        return conv_data_same(g, gy, w);
    }
    let (k, p) = (g.k(), g.p());
    let xs = g.cin * g.h * g.w;
    // col2im adds into `gx`; a pointwise GEMM writes all of it.
    let mut gx = if g.pointwise() {
        super::alloc_uninit::<T>(g.n * xs)
    } else {
        vec![T::zero(); g.n * xs]
    };
    for_each_sample(
        &mut gx,
        xs,
        g.n,
        threads,
        || super::alloc_uninit::<T>(if g.pointwise() { 0 } else { k * p }),
        |col, i, gxi| {
            let gyi = &gy[i * g.cout * p..(i + 1) * g.cout * p];
            // wᵀ (k×cout) · gy_i (cout×p)
            if g.pointwise() {
                T::matmul(k, p, g.cout, gxi, p, false, w, (1, k), gyi, (p, 1), threads);
            } else {
                T::matmul(k, p, g.cout, col, p, false, w, (1, k), gyi, (p, 1), threads);
                col2im(g, col, gxi);
            }
        },
    );
    gx
}

/// Whether a convolution runs as an implicit GEMM ([`super::implicit`]): f32 on AVX-512, stride-1
/// "same" with a kernel larger than 1×1, and a batch that fills the pool (smaller ones take
/// `shifted`).
fn implicit_same(g: &ConvGeom) -> bool {
    g.same_odd() && !g.pointwise() && super::implicit::available() && inner_threads(g.n) == 1
}

/// `out_i = filter ⊛ src_i` for every sample, in parallel over the samples: `src` holds `chans`
/// planes per sample, copied to a cache-friendly pitch first where the planes are 1 KiB
/// multiples ([`super::implicit::pitch`]). `T` must be f32 (the caller holds an f32 filter).
fn implicit_per_sample<T: Float>(g: &ConvGeom, src: &[T], chans: usize, filter: &PackedFilter, out: &mut [T]) {
    let p = g.h * g.w;
    let pitch = super::implicit::pitch(p);
    let (ss, os) = (chans * p, filter.rows() * p);
    let src = super::f32s(src).expect("implicit convolutions run on f32");
    let out = super::f32s_mut(out).expect("implicit convolutions run on f32");
    out.par_chunks_mut(os).enumerate().with_min_len(per_thread(g.n)).for_each_init(
        || vec![0f32; if pitch == p { 0 } else { chans * pitch }],
        |wide, (i, oi)| {
            let si = &src[i * ss..(i + 1) * ss];
            if pitch == p {
                super::implicit::conv_same_f32(g, filter, si, p, oi, false);
            } else {
                super::implicit::copy_pitched(si, p, pitch, wide, false);
                super::implicit::conv_same_f32(g, filter, wide, pitch, oi, false);
            }
        },
    );
}

/// `w (cout, cin, kh, kw)` → `w' (cin, cout, kh, kw)` with the taps reversed: the weight of the
/// input gradient of a stride-1 "same" convolution seen as a convolution of the output gradient.
pub(crate) fn flip_weight<T: Float>(w: &[T], cout: usize, cin: usize, taps: usize) -> Vec<T> {
    let mut out = super::alloc_uninit(w.len());
    // `w` is read in order (it is usually cold by the backward pass, and sequential reads are
    // what the prefetchers follow); each tap row lands reversed at its place in `w'`.
    for (i, src) in w.chunks_exact(taps).enumerate() {
        let (co, ci) = (i / cin, i % cin);
        let dst = &mut out[(ci * cout + co) * taps..][..taps];
        for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
            *d = *s;
        }
    }
    out
}

/// [`conv_data`] of a stride-1 "same" convolution with an odd square kernel: the input gradient
/// is the convolution of `gy` with the flipped weight, `gx_i = w' · im2col(gy_i)` — a GEMM with
/// `cin` rows and depth `cout·k²` instead of one with depth `cout` plus a col2im scatter.
fn conv_data_same<T: Float>(g: &ConvGeom, gy: &[T], w: &[T]) -> Vec<T> {
    let p = g.p();
    let taps = g.kh * g.kw;
    // The geometry of the convolution of gy (cout channels) producing gx (cin channels).
    let back = ConvGeom {
        cin: g.cout,
        cout: g.cin,
        ..*g
    };
    let depth = back.k();
    let xs = g.cin * p;
    let mut gx = super::alloc_uninit::<T>(g.n * xs);
    if let Some(w32) = implicit_same(g).then(|| super::f32s(w)).flatten() {
        let packed = PackedFilter::new(g.cin, g.cout, taps, |ci, co, t| w32[(co * g.cin + ci) * taps + taps - 1 - t]);
        implicit_per_sample(&back, gy, g.cout, &packed, &mut gx);
        return gx;
    }
    let flipped = flip_weight(w, g.cout, g.cin, taps);
    let threads = inner_threads(g.n);
    for_each_sample(
        &mut gx,
        xs,
        g.n,
        threads,
        || super::alloc_uninit::<T>(depth * p),
        |col, i, gxi| {
            im2col(&back, &gy[i * g.cout * p..(i + 1) * g.cout * p], col);
            T::matmul(g.cin, p, depth, gxi, p, false, &flipped, (depth, 1), col, (p, 1), threads);
        },
    );
    gx
}

/// `gw = conv_filter(x, gy) = Σᵢ gy_i · col(x_i)ᵀ`: the weight gradient.
pub(crate) fn conv_filter<T: Float>(g: &ConvGeom, x: &[T], gy: &[T]) -> Vec<T> {
    let threads = inner_threads(g.n);
    if use_shifted(g, threads) {
        return shifted::conv_filter(g, x, gy, threads);
    }
    let (k, p) = (g.k(), g.p());
    let xs = g.cin * g.h * g.w;
    // The sum over samples of `range`, the first product written, the others accumulated.
    let partial = |range: std::ops::Range<usize>| {
        let mut acc = super::alloc_uninit::<T>(g.cout * k);
        let mut col = super::alloc_uninit::<T>(if g.pointwise() { 0 } else { k * p });
        let mut first = true;
        for i in range {
            let xi = &x[i * xs..(i + 1) * xs];
            let gyi = &gy[i * g.cout * p..(i + 1) * g.cout * p];
            let colr: &[T] = if g.pointwise() {
                xi
            } else {
                im2col(g, xi, &mut col);
                &col
            };
            // gy_i (cout×p) · colᵀ (p×k)
            T::matmul(g.cout, k, p, &mut acc, k, !first, gyi, (p, 1), colr, (1, p), threads);
            first = false;
        }
        if first {
            acc.fill(T::zero());
        }
        acc
    };
    if threads > 1 {
        // A batch smaller than the pool: the GEMMs use the threads, samples run in turn.
        return partial(0..g.n);
    }
    let chunks = rayon::current_num_threads().min(g.n).max(1);
    let per = g.n.div_ceil(chunks);
    let mut partials: Vec<Vec<T>> = (0..chunks).into_par_iter().map(|c| partial(c * per..((c + 1) * per).min(g.n))).collect();
    let mut out = partials.swap_remove(0);
    for part in &partials {
        for (o, v) in out.iter_mut().zip(part) {
            *o += *v;
        }
    }
    out
}

/// Whether a convolution takes the [`shifted`] path: a batch smaller than the pool
/// (`threads` > 1), stride 1, "same" padding, a kernel larger than 1×1, and at least 8 input
/// and output channels (each tap's product has depth `cin` or `cout`, too shallow below that).
fn use_shifted(g: &ConvGeom, threads: usize) -> bool {
    threads > 1 && g.same_odd() && !g.pointwise() && g.cin >= 8 && g.cout >= 8
}

/// Stride-1 "same" convolutions of a batch smaller than the pool (synflow's batch of one)
/// without im2col.
///
/// Planes are zero-padded to `h2 × w2 = (h + 2·pad) × (w + 2·pad)`, and outputs are computed
/// in the padded row pitch: output `(oy, ox)` at `q = oy·w2 + ox`. Tap `t = (ki, kj)` of every
/// output then reads the padded input at the fixed offset `ki·w2 + kj`, so row `(c, t)` of the
/// im2col matrix is the window of padded plane `c` that starts `offset(t)` into it: the forward
/// and input-gradient convolutions are one GEMM each whose `rhs` rows are read in place from
/// the padded planes ([`Float::matmul_rows`], a table of row offsets). The weight gradient is
/// one GEMM per tap, with the shifted padded planes as `lhs` and `gy` (transposed into the
/// padded pitch) as `rhs`. The `np = (h - 1)·w2 + w` positions cover every output; the
/// `w2 - w` between two rows are junk, dropped when the result is compacted to `h × w` (and
/// zero in `gy`). For a 3×3 kernel this replaces the 9× copy of im2col by a padded copy.
///
/// Each call is split into runs of output rows (output channels for the forward and weight
/// gradient, input channels for the input gradient) that the calling thread and a pool thread
/// take as they come free (`kernels::par_parts`).
mod shifted {
    use std::ops::Range;
    use std::sync::Mutex;

    use super::super::{alloc_uninit, par_parts, Float};
    use super::ConvGeom;

    /// The padded geometry of one convolution.
    struct Shifted {
        h: usize,
        w: usize,
        pad: usize,
        kw: usize,
        taps: usize,
        w2: usize,
        plane2: usize,
        np: usize,
    }

    impl Shifted {
        fn new(g: &ConvGeom) -> Self {
            let w2 = g.w + 2 * g.pad;
            Shifted {
                h: g.h,
                w: g.w,
                pad: g.pad,
                kw: g.kw,
                taps: g.kh * g.kw,
                w2,
                plane2: (g.h + 2 * g.pad) * w2,
                np: (g.h - 1) * w2 + g.w,
            }
        }

        /// Offset of tap `t` in a padded plane: every position reads `q + offset(t)`.
        fn offset(&self, t: usize) -> usize {
            (t / self.kw) * self.w2 + t % self.kw
        }

        /// The implicit im2col of `c` padded planes: row `(ch, t)` starts at
        /// `ch·plane2 + offset(t)`.
        fn rows(&self, c: usize) -> Vec<usize> {
            (0..c).flat_map(|ch| (0..self.taps).map(move |t| ch * self.plane2 + self.offset(t))).collect()
        }

        /// Planes of `h × w` zero-padded to `h2 × w2`.
        fn pad<T: Float>(&self, x: &[T]) -> Vec<T> {
            let planes = x.len() / (self.h * self.w);
            let mut out = alloc_uninit::<T>(planes * self.plane2);
            for (src, dst) in x.chunks_exact(self.h * self.w).zip(out.chunks_exact_mut(self.plane2)) {
                // `rest` starts at the first element of the image: padded row `pad`, column `pad`.
                let (top, rest) = dst.split_at_mut(self.pad * self.w2 + self.pad);
                top.fill(T::zero());
                for (oy, row) in src.chunks_exact(self.w).enumerate() {
                    let at = oy * self.w2;
                    rest[at..at + self.w].copy_from_slice(row);
                    // The right border of this row and the left one of the next.
                    let end = (at + self.w2).min(rest.len());
                    rest[at + self.w..end].fill(T::zero());
                }
                rest[(self.h - 1) * self.w2 + self.w..].fill(T::zero());
            }
            out
        }

        /// Rows of `np` positions in the padded pitch → rows of `h·w` outputs.
        fn compact<T: Float>(&self, src: &[T], dst: &mut [T]) {
            for (s, d) in src.chunks_exact(self.np).zip(dst.chunks_exact_mut(self.h * self.w)) {
                for (oy, row) in d.chunks_exact_mut(self.w).enumerate() {
                    row.copy_from_slice(&s[oy * self.w2..oy * self.w2 + self.w]);
                }
            }
        }

        /// `gy (c × h·w)` → `(np × c)`, transposed into the padded pitch, junk positions zero.
        fn spread_transposed<T: Float>(&self, gy: &[T], c: usize) -> Vec<T> {
            let mut out = alloc_uninit::<T>(self.np * c);
            let hw = self.h * self.w;
            for oy in 0..self.h {
                // Row `oy` of every channel (c × w, rows `hw` apart) → positions `oy·w2 ..`.
                T::transpose(c, self.w, &gy[oy * self.w..], hw, &mut out[oy * self.w2 * c..], c, false);
                let junk_end = ((oy + 1) * self.w2 * c).min(out.len());
                out[(oy * self.w2 + self.w) * c..junk_end].fill(T::zero());
            }
            out
        }
    }

    /// Run `f(rows, out_rows)` on runs of consecutive rows of `out` (`row_len` elements each),
    /// spread over the calling thread and the pool ([`par_parts`]): runs of a multiple of 8 rows
    /// (a GEMM tile's height), about two per thread.
    fn par_rows<T: Float>(out: &mut [T], row_len: usize, threads: usize, f: impl Fn(Range<usize>, &mut [T]) + Sync) {
        let rows = out.len() / row_len;
        let per = rows.div_ceil(2 * threads).div_ceil(8).max(1) * 8;
        let chunks: Vec<Mutex<&mut [T]>> = out.chunks_mut(per * row_len).map(Mutex::new).collect();
        par_parts(chunks.len(), &|i| {
            let mut chunk = chunks[i].lock().unwrap_or_else(|e| e.into_inner());
            let len = chunk.len() / row_len;
            f(i * per..i * per + len, &mut chunk);
        });
    }

    /// `y[co][q] = Σ_ci Σ_t w[co][ci][t] · xpad[ci][q + offset(t)]`: `w (cout × cin·taps)`
    /// times the implicit im2col of the padded input, split over `co`.
    pub(super) fn conv_fwd<T: Float>(g: &ConvGeom, x: &[T], w: &[T], threads: usize) -> Vec<T> {
        let s = Shifted::new(g);
        let (xs, ys, kk) = (g.cin * g.h * g.w, g.cout * g.p(), g.cin * s.taps);
        let rows = s.rows(g.cin);
        let mut y = alloc_uninit::<T>(g.n * ys);
        for (xi, yi) in x.chunks_exact(xs).zip(y.chunks_exact_mut(ys)) {
            let xpad = s.pad(xi);
            par_rows(yi, g.p(), threads, |cos, out| {
                let mut acc = alloc_uninit::<T>(cos.len() * s.np);
                T::matmul_rows(cos.len(), s.np, kk, &mut acc, s.np, false, &w[cos.start * kk..], (kk, 1), &xpad, &rows, 1);
                s.compact(&acc, out);
            });
        }
        y
    }

    /// `gx[ci][q] = Σ_co Σ_t w[co][ci][taps - 1 - t] · gypad[co][q + offset(t)]` (the input
    /// gradient is the convolution of `gy` with the flipped kernel): the flipped weight
    /// `(cin × cout·taps)` times the implicit im2col of the padded `gy`, split over `ci`.
    pub(super) fn conv_data<T: Float>(g: &ConvGeom, gy: &[T], w: &[T], threads: usize) -> Vec<T> {
        let s = Shifted::new(g);
        let (xs, ys, kk) = (g.cin * g.h * g.w, g.cout * g.p(), g.cout * s.taps);
        let rows = s.rows(g.cout);
        let mut gx = alloc_uninit::<T>(g.n * xs);
        for (gyi, gxi) in gy.chunks_exact(ys).zip(gx.chunks_exact_mut(xs)) {
            let gpad = s.pad(gyi);
            par_rows(gxi, g.p(), threads, |cis, out| {
                // This share's rows of the flipped weight, w'[ci][co][t] = w[co][ci][taps - 1 - t],
                // reading `w` in order (it is out of cache by the backward pass).
                let mut flipped = alloc_uninit::<T>(cis.len() * kk);
                for co in 0..g.cout {
                    let src = &w[(co * g.cin + cis.start) * s.taps..(co * g.cin + cis.end) * s.taps];
                    for (j, taps) in src.chunks_exact(s.taps).enumerate() {
                        let dst = &mut flipped[j * kk + co * s.taps..][..s.taps];
                        for (d, v) in dst.iter_mut().zip(taps.iter().rev()) {
                            *d = *v;
                        }
                    }
                }
                let mut acc = alloc_uninit::<T>(cis.len() * s.np);
                T::matmul_rows(cis.len(), s.np, kk, &mut acc, s.np, false, &flipped, (kk, 1), &gpad, &rows, 1);
                s.compact(&acc, out);
            });
        }
        gx
    }

    /// `gw[co][ci][t] = Σ_i Σ_q xpad_i[ci][q + offset(t)] · gy_i[co][q]` (junk positions of `gy`
    /// zero), split over `co`: each share computes `tw[ci][t][co]` for its output channels, one
    /// GEMM per tap with the padded planes as `lhs`, and transposes it into its rows of `gw`
    /// (so that the transpose reads what its own thread just wrote).
    pub(super) fn conv_filter<T: Float>(g: &ConvGeom, x: &[T], gy: &[T], threads: usize) -> Vec<T> {
        let s = Shifted::new(g);
        let (xs, ys, kk) = (g.cin * g.h * g.w, g.cout * g.p(), g.cin * s.taps);
        // Written by the first sample's transposes, added to by the others.
        let mut gw = if g.n == 0 {
            vec![T::zero(); g.cout * kk]
        } else {
            alloc_uninit::<T>(g.cout * kk)
        };
        for (i, (xi, gyi)) in x.chunks_exact(xs).zip(gy.chunks_exact(ys)).enumerate() {
            let xpad = s.pad(xi);
            let gyt = s.spread_transposed(gyi, g.cout);
            par_rows(&mut gw, kk, threads, |cos, out| {
                let cp = cos.len();
                let mut tw = alloc_uninit::<T>(kk * cp);
                for t in 0..s.taps {
                    let lhs = &xpad[s.offset(t)..];
                    T::matmul(
                        g.cin,
                        cp,
                        s.np,
                        &mut tw[t * cp..],
                        s.taps * cp,
                        false,
                        lhs,
                        (s.plane2, 1),
                        &gyt[cos.start..],
                        (g.cout, 1),
                        1,
                    );
                }
                T::transpose(kk, cp, &tw, cp, out, kk, i > 0);
            });
        }
        gw
    }
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
        // (gradient of the first operand, of the second)
        let (ga, gb) = match self.map {
            // y = conv(x, w): gx = data(gy, w), gw = filter(x, gy)
            ConvMap::Fwd => ((ConvMap::Data, &grad, b), (ConvMap::Filter, a, &grad)),
            // gx = data(gy, w): d gy = conv(u, w), d w = filter(u, gy)
            ConvMap::Data => ((ConvMap::Fwd, &grad, b), (ConvMap::Filter, &grad, a)),
            // gw = filter(x, gy): d x = data(gy, v), d gy = conv(x, v)
            ConvMap::Filter => ((ConvMap::Data, b, &grad), (ConvMap::Fwd, a, &grad)),
        };
        // An operand that depends on no variable (the network's input) needs no gradient.
        let grad_of = |needed: &Tensor, (map, u, v): (ConvMap, &Tensor, &Tensor)| needed.track_op().then(|| op(map, u, v)).transpose();
        Ok((grad_of(a, ga)?, grad_of(b, gb)?))
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
