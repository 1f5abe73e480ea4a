//! Implicit-GEMM "same" convolutions in f32 with AVX-512: the im2col matrix is never written.
//!
//! A stride-1 convolution whose output has the input's size computes, per sample,
//! `dst[i][q] = Σ_c Σ_t f[i][c][t] · x[c][q + shift(t)]` over the taps `t = (ki, kj)`, with
//! `shift(t) = (ki − pad)·w + (kj − pad)` and `x` taken as zero where the source pixel lies
//! outside the image. im2col + GEMM writes the `taps`-times expanded matrix of shifted windows
//! and then reads it back; here the microkernel reads the shifted windows straight from `x`,
//! with the lane masks of `im2col_simd` (per block of 16 positions and tap) switching off the
//! out-of-image lanes. These are the loads the GEMM makes of the im2col matrix, without its
//! writes.
//!
//! - A tile is `MR = 8` rows of the filter times `NV` blocks of 16 positions, in `MR·NV` zmm
//!   accumulators. Its depth loop runs tap by tap (the tap's masks and shift stay in registers)
//!   and, inside a tap, over the input channels; a tap whose masks are all off for the tile
//!   (a row of taps above the first or below the last image row) is skipped.
//! - The filter is packed once for all samples ([`PackedFilter`]) into panels of `MR` rows,
//!   `[tap][channel][row]`, so that the `MR` broadcasts of one step read one 32-byte run.
//!
//! The cell kernels use it for the forward convolution (the filter is the weight) and for the
//! input gradient (the filter is the flipped weight; the output gradients of several edges
//! leaving one node are stacked as channels of one call, so their sum is accumulated in
//! registers); `conv` uses it for the unfused convolutions of the same kind.
//!
//! The weight gradient ([`filter_grad_f32`]) is an implicit GEMM too, with the positions as its
//! depth: the input is transposed and zero-padded once per sample ([`PaddedT`]), so that tap `t`
//! of position `q` for 16 channels is one aligned row segment, and the output gradients are
//! packed position-major; each step then takes `MR` broadcasts and `NV` loads, as above.
//!
//! One thread, against im2col + our sgemm on the NB201 stage shapes (16×32², 32×16², 64×8²):
//! forward 82 → 137, 112 → 152, 115 → 160 GFLOP/s; weight gradient 83 → 135, 124 → 145,
//! 118 → 142 GFLOP/s (`cargo test -p autoagent-evaluator --lib bench_implicit -- --ignored
//! --nocapture`).

use rayon::prelude::*;

use super::conv::ConvGeom;
use super::{im2col_simd, Float};

/// Rows of a tile (and of a packed panel).
const MR: usize = 8;

/// A filter `f[i][c][t]` (`m` rows, `cin` channels, `taps` taps) packed for [`conv_same_f32`].
#[derive(Debug, Clone)]
pub(crate) struct PackedFilter {
    m: usize,
    cin: usize,
    taps: usize,
    /// Panels of `MR` rows, `[panel][tap][channel][row]`; rows past `m` are zero.
    data: Vec<f32>,
}

impl PackedFilter {
    /// Rows of the filter (output channels of the convolution).
    pub(crate) fn rows(&self) -> usize {
        self.m
    }

    /// Pack the filter whose weight for row `i`, channel `c` and tap `t` is `f(i, c, t)`.
    pub(crate) fn new(m: usize, cin: usize, taps: usize, f: impl Fn(usize, usize, usize) -> f32 + Sync) -> Self {
        Self::stacked(m, 1, cin, taps, |_, i, c, t| f(i, c, t))
    }

    /// Pack `parts` filters of `m` rows and `cin` channels, stacked as the channels
    /// `part·cin + c` of one filter; `f(part, i, c, t)` is a weight.
    pub(crate) fn stacked(m: usize, parts: usize, cin: usize, taps: usize, f: impl Fn(usize, usize, usize, usize) -> f32 + Sync) -> Self {
        let chans = parts * cin;
        let panel_len = taps * chans * MR;
        // Rows past `m` stay zero. Panels in parallel; inside one, row by row with the taps
        // innermost (a weight's taps are adjacent in both the weight and its flip).
        let mut data = vec![0.0; m.div_ceil(MR) * panel_len];
        data.par_chunks_mut(panel_len.max(1)).enumerate().for_each(|(p, panel)| {
            for r in 0..MR.min(m - p * MR) {
                for part in 0..parts {
                    for c in 0..cin {
                        for t in 0..taps {
                            panel[((t * parts + part) * cin + c) * MR + r] = f(part, p * MR + r, c, t);
                        }
                    }
                }
            }
        });
        PackedFilter { m, cin: chans, taps, data }
    }
}

/// A channel pitch for planes of `hw` floats: `hw` rounded up to 16 lanes, plus 16 when that
/// is a multiple of 1 KiB, so that consecutive channels start in different L1 cache sets.
pub(crate) fn pitch(hw: usize) -> usize {
    let p = hw.div_ceil(16) * 16;
    if p.is_multiple_of(256) {
        p + 16
    } else {
        p
    }
}

/// The planes of `hw` elements in `x` (through a ReLU when `relu`), into `out` at a channel
/// pitch of `pitch` (see [`pitch`]); the elements between planes are left as they are.
pub(crate) fn copy_pitched<T: Float>(x: &[T], hw: usize, pitch: usize, out: &mut [T], relu: bool) {
    for (src, dst) in x.chunks_exact(hw).zip(out.chunks_mut(pitch)) {
        if relu {
            for (d, v) in dst.iter_mut().zip(src) {
                *d = if *v > T::zero() { *v } else { T::zero() };
            }
        } else {
            dst[..hw].copy_from_slice(src);
        }
    }
}

/// Whether [`conv_same_f32`] runs on this CPU (it needs AVX-512F) and is not switched off by
/// `AUTOAGENT_IM2COL=1` (which sends these convolutions back through im2col + GEMM, for A/B
/// measurements).
pub(crate) fn available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| im2col_simd::available() && std::env::var_os("AUTOAGENT_IM2COL").is_none_or(|v| v != "1"))
}

/// `dst[i][q] (+)= Σ_c Σ_t f[i][c][t] · x[c][q + shift(t)]` for one sample: `x` is `f.cin`
/// planes of `g.h × g.w`, `pitch` floats apart (the geometry's own `cin` and `cout` are not
/// used), `dst` is `f.m` contiguous planes of the same size; `+=` when `acc`.
///
/// A pitch a little over the plane (see [`pitch`]) keeps the planes' windows of one tile from
/// crowding into the same L1 cache sets, as planes of a power-of-two size 4 KiB apart do.
///
/// # Panics
///
/// If the CPU lacks AVX-512F (check [`available`]), if `g` is not a stride-1 convolution whose
/// output has the input's size, if the filter's taps are not `g.kh · g.kw`, or if a buffer is too
/// short.
pub(crate) fn conv_same_f32(g: &ConvGeom, f: &PackedFilter, x: &[f32], pitch: usize, dst: &mut [f32], acc: bool) {
    assert!(available(), "conv_same_f32 needs AVX-512F");
    assert!(g.stride == 1 && g.ho == g.h && g.wo == g.w, "conv_same_f32: not a stride-1 same convolution");
    assert_eq!(f.taps, g.kh * g.kw, "conv_same_f32: filter taps do not match the kernel");
    let hw = g.h * g.w;
    assert!(pitch >= hw, "conv_same_f32: channel pitch {pitch} < {hw} positions");
    assert!(
        (f.cin == 0 || x.len() >= (f.cin - 1) * pitch + hw) && dst.len() >= f.m * hw,
        "conv_same_f32: buffers too short"
    );
    if f.m == 0 || hw == 0 {
        return;
    }
    // Each tap's flat offset, computed once (a division per tap and tile cost ~10 % on
    // 16-channel planes).
    let shifts: Vec<isize> = (0..f.taps)
        .map(|t| (t / g.kw) as isize * g.w as isize - (g.pad * g.w) as isize + (t % g.kw) as isize - g.pad as isize)
        .collect();
    im2col_simd::with_masks(g, |masks| {
        #[cfg(target_arch = "x86_64")]
        {
            let geo = avx512::Geo {
                hw,
                pitch,
                shifts: shifts.as_ptr(),
                taps: f.taps,
                cin: f.cin,
                blocks: hw.div_ceil(16),
                tail: if hw.is_multiple_of(16) { 0xffff } else { (1u16 << (hw % 16)) - 1 },
                masks: masks.as_ptr(),
                x: x.as_ptr(),
            };
            // SAFETY: AVX-512F is present (asserted above); `x` holds `cin` planes and `dst`
            // `m` planes of `hw` (asserted above); the masks belong to this geometry, so every
            // lane they leave on reads a pixel of `x`; `dst` is borrowed mutably.
            unsafe {
                if hw >= 1024 {
                    avx512::run::<3>(&geo, &f.data, f.m, dst.as_mut_ptr(), acc)
                } else {
                    avx512::run::<2>(&geo, &f.data, f.m, dst.as_mut_ptr(), acc)
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (masks, acc);
    })
}

/// The input of a weight gradient, transposed and zero-padded: position-major planes
/// `((h + 2p)·(w + 2p)) × c` (row `(y + p)·(w + 2p) + x + p` holds the `c` channels of pixel
/// `(y, x)`), with zero borders, so that every tap of every output position reads one
/// contiguous row. Reused across samples: the borders are zeroed once.
#[derive(Debug)]
pub(crate) struct PaddedT {
    h: usize,
    w: usize,
    pad: usize,
    c: usize,
    data: Vec<f32>,
}

impl PaddedT {
    /// A zeroed buffer for `c` channels of `h × w` with a border of `pad`.
    pub(crate) fn new(c: usize, h: usize, w: usize, pad: usize) -> Self {
        PaddedT {
            h,
            w,
            pad,
            c,
            data: vec![0.0; (h + 2 * pad) * (w + 2 * pad) * c],
        }
    }

    /// Fill the interior with `relu(x)` (when `relu`) of one sample `x (c × h·w)`.
    ///
    /// # Panics
    ///
    /// If `x` is too short or the CPU lacks AVX-512F.
    pub(crate) fn fill(&mut self, x: &[f32], relu: bool) {
        assert!(available(), "PaddedT::fill needs AVX-512F");
        let hw = self.h * self.w;
        assert!(x.len() >= self.c * hw, "PaddedT::fill: input too short");
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present; the sizes were checked above and by construction.
        unsafe {
            avx512::fill_padded_t(self, x, relu)
        }
    }
}

/// `dst[i][t·c + ch] (+)= Σ_{y,x} g[i][y·w + x] · relu(x)[ch][(y, x) + tap t]`: the weight
/// gradients of `m` output rows (several edges' BatchNorm input gradients `g`, stacked at a
/// row pitch of `g_pitch`) against one padded transposed input, laid out `[row][tap][channel]`;
/// `+=` when `acc` (the sum over samples). An implicit GEMM as [`conv_same_f32`], with the
/// positions as its depth: per step `MR` broadcasts of `g` and `NV` loads of the input's rows,
/// one per (tap, 16 channels), so no im2col is written.
///
/// # Panics
///
/// If the CPU lacks AVX-512F, `c` is not a multiple of 16, `k` is not the padding's odd kernel,
/// or a buffer is too short.
pub(crate) fn filter_grad_f32(k: usize, xt: &PaddedT, m: usize, g: &[f32], g_pitch: usize, dst: &mut [f32], acc: bool) {
    assert!(available(), "filter_grad_f32 needs AVX-512F");
    let (h, w, c) = (xt.h, xt.w, xt.c);
    assert!(c.is_multiple_of(16), "filter_grad_f32: {c} channels, not a multiple of 16");
    assert!(
        k % 2 == 1 && xt.pad == k / 2,
        "filter_grad_f32: kernel {k} does not match the padding {}",
        xt.pad
    );
    let taps = k * k;
    assert!(
        m == 0 || (g.len() >= (m - 1) * g_pitch + h * w && g_pitch >= h * w),
        "filter_grad_f32: gradient too short"
    );
    assert!(dst.len() >= m * taps * c, "filter_grad_f32: output too short");
    if m == 0 || h * w == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present; the sizes were checked above.
    unsafe {
        avx512::filter_grad(k, xt, m, g, g_pitch, dst, acc)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! Full-width loads and stores are written as masked ones with every lane on: with debug
    //! assertions (our dev profile) `_mm512_loadu_ps` and `_mm512_storeu_ps` go through
    //! `ptr::read_unaligned` and friends, checks and a copy through the stack, which spill the
    //! accumulators; a masked load or store is one instruction.
    use core::arch::x86_64::*;

    use super::MR;

    /// One call's geometry, as raw parts.
    pub(super) struct Geo {
        pub hw: usize,
        /// Distance between the channels of `x`.
        pub pitch: usize,
        /// Flat offset of the source pixel of each tap.
        pub shifts: *const isize,
        pub taps: usize,
        pub cin: usize,
        pub blocks: usize,
        /// Lanes of the last block inside the plane.
        pub tail: u16,
        /// `[block][tap]` lane masks of the geometry.
        pub masks: *const u16,
        pub x: *const f32,
    }

    /// All tiles: blocks of positions outside, panels of rows inside (a tile's window of `x`
    /// stays in L1 while the panels pass).
    ///
    /// # Safety
    ///
    /// AVX-512F must be available; `geo` describes valid planes and masks (as checked by
    /// `conv_same_f32`), `a` is the packed filter of `m` rows, and `dst` holds `m · hw` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run<const NV: usize>(geo: &Geo, a: &[f32], m: usize, dst: *mut f32, acc: bool) {
        let panel_len = geo.taps * geo.cin * MR;
        let mut b0 = 0;
        while b0 < geo.blocks {
            for p in 0..m.div_ceil(MR) {
                let c = dst.wrapping_add(p * MR * geo.hw + b0 * 16);
                // SAFETY: forwarded; panel `p` lies inside `a`, and rows `p·MR ..< m` of `dst`
                // from column `16·b0` are in bounds.
                unsafe { tile::<NV>(geo, a.as_ptr().wrapping_add(p * panel_len), b0, c, MR.min(m - p * MR), acc) };
            }
            b0 += NV;
        }
    }

    /// One tile: rows `0 ..< mr` of the panel at `a`, blocks `b0 ..< b0 + NV` (those inside the
    /// plane), stored to (or added into, when `acc`) `c`, which points at the tile's first row
    /// and column in `dst`.
    ///
    /// # Safety
    ///
    /// As for [`run`]; `a` is a whole packed panel and `c` a valid tile of `dst`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const NV: usize>(geo: &Geo, a: *const f32, b0: usize, c: *mut f32, mr: usize, acc: bool) {
        let mut sum = [[_mm512_setzero_ps(); NV]; MR];
        let mut ap = a;
        for t in 0..geo.taps {
            let mut mk = [0 as __mmask16; NV];
            let mut any = 0;
            unroll!(v < NV => {
                let b = b0 + v;
                // SAFETY: entry (b, t) of the `[block][tap]` mask table.
                mk[v] = if b < geo.blocks { unsafe { *geo.masks.wrapping_add(b * geo.taps + t) } } else { 0 };
                any |= mk[v];
            });
            if any == 0 {
                ap = ap.wrapping_add(geo.cin * MR);
                continue;
            }
            // Lanes that the masks switch off are neither read nor faulted on, so the shifted
            // window may start before the plane or run past it (wrapping arithmetic).
            // SAFETY: `shifts` holds one offset per tap.
            let mut bp = geo.x.wrapping_offset((b0 * 16) as isize + unsafe { *geo.shifts.wrapping_add(t) });
            for _ in 0..geo.cin {
                let mut bv = [_mm512_setzero_ps(); NV];
                unroll!(v < NV => {
                    // SAFETY: the lanes left on are pixels of this channel's plane.
                    bv[v] = unsafe { _mm512_maskz_loadu_ps(mk[v], bp.wrapping_add(16 * v)) };
                });
                unroll!(r < MR => {
                    // SAFETY: element (tap, channel, r) of the panel.
                    let av = _mm512_broadcastss_ps(unsafe { _mm_load_ss(ap.wrapping_add(r)) });
                    unroll!(v < NV => { sum[r][v] = _mm512_fmadd_ps(av, bv[v], sum[r][v]); });
                });
                ap = ap.wrapping_add(MR);
                bp = bp.wrapping_add(geo.pitch);
            }
        }
        unroll!(r < MR => {
            if r < mr {
                let row = c.wrapping_add(r * geo.hw);
                unroll!(v < NV => {
                    let b = b0 + v;
                    if b < geo.blocks {
                        let m = if b + 1 == geo.blocks { geo.tail } else { 0xffff };
                        let p = row.wrapping_add(16 * v);
                        // SAFETY: row `r < mr`, the lanes of block `b` inside the plane.
                        unsafe {
                            let y = if acc { _mm512_add_ps(sum[r][v], _mm512_maskz_loadu_ps(m, p)) } else { sum[r][v] };
                            _mm512_mask_storeu_ps(p, m, y);
                        }
                    }
                });
            }
        });
    }

    /// [`super::PaddedT::fill`]: 16×16 blocks (channels × pixels of a row) transposed in
    /// registers.
    ///
    /// # Safety
    ///
    /// AVX-512F must be available; `x` holds `c · h · w` floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fill_padded_t(t: &mut super::PaddedT, x: &[f32], relu: bool) {
        let (h, w, c, pad) = (t.h, t.w, t.c, t.pad);
        let (hw, w2) = (h * w, w + 2 * pad);
        let zero = _mm512_setzero_ps();
        let xp = x.as_ptr();
        let dp = t.data.as_mut_ptr();
        for c0 in (0..c).step_by(16) {
            let cm = 16.min(c - c0);
            let cmask = ((1u32 << cm) - 1) as __mmask16;
            for y in 0..h {
                for x0 in (0..w).step_by(16) {
                    let xm = 16.min(w - x0);
                    let lmask = ((1u32 << xm) - 1) as __mmask16;
                    let mut rows = [zero; 16];
                    for (ch, row) in rows.iter_mut().enumerate().take(cm) {
                        // SAFETY: channel `c0 + ch < c`, pixels `x0 ..< x0 + xm` of row `y`.
                        let v = unsafe { _mm512_maskz_loadu_ps(lmask, xp.wrapping_add((c0 + ch) * hw + y * w + x0)) };
                        *row = if relu { _mm512_max_ps(v, zero) } else { v };
                    }
                    for (j, col) in crate::sgemm::transpose16(&rows).iter().enumerate().take(xm) {
                        let at = ((y + pad) * w2 + x0 + j + pad) * c + c0;
                        // SAFETY: an interior row of the padded buffer, channels `c0 ..< c0 + cm`.
                        unsafe { _mm512_mask_storeu_ps(dp.wrapping_add(at), cmask, *col) };
                    }
                }
            }
        }
    }

    /// [`super::filter_grad_f32`] on checked arguments. The rows of `g` are first packed
    /// position-major in blocks of 16 (`[block][position][16 rows]`, by in-register transposes),
    /// so that a tile's `MR` broadcasts per step read one contiguous run.
    ///
    /// # Safety
    ///
    /// AVX-512F must be available and the arguments as `filter_grad_f32` checks them.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn filter_grad(k: usize, xt: &super::PaddedT, m: usize, g: &[f32], g_pitch: usize, dst: &mut [f32], acc: bool) {
        const NV: usize = 3;
        let (h, w, c) = (xt.h, xt.w, xt.c);
        let hw = h * w;
        let w2 = w + 2 * xt.pad;
        let taps = k * k;
        let c16 = c / 16;
        let vectors = taps * c16;
        let row_len = taps * c;
        let blocks = m.div_ceil(16);
        // The buffer is taken out of the thread-local for the call (a closure would not inherit
        // this function's target features).
        let mut buf = PACKED.with(|b| b.take());
        {
            if buf.len() < blocks * hw * 16 {
                buf.resize(blocks * hw * 16, 0.0);
            }
            let pk = buf.as_mut_ptr();
            let gp = g.as_ptr();
            let zero = _mm512_setzero_ps();
            for b in 0..blocks {
                let rows = 16.min(m - 16 * b);
                let mut q0 = 0;
                while q0 < hw {
                    let qn = 16.min(hw - q0);
                    let qmask = ((1u32 << qn) - 1) as __mmask16;
                    let mut x = [zero; 16];
                    for (r, xr) in x.iter_mut().enumerate().take(rows) {
                        // SAFETY: row `16b + r < m`, positions `q0 ..< q0 + qn <= hw`.
                        *xr = unsafe { _mm512_maskz_loadu_ps(qmask, gp.wrapping_add((16 * b + r) * g_pitch + q0)) };
                    }
                    for (j, col) in crate::sgemm::transpose16(&x).iter().enumerate().take(qn) {
                        // SAFETY: position `q0 + j < hw` of block `b` of the buffer.
                        unsafe { _mm512_mask_storeu_ps(pk.wrapping_add((b * hw + q0 + j) * 16), 0xffff, *col) };
                    }
                    q0 += 16;
                }
            }
            let xp = xt.data.as_ptr();
            let dp = dst.as_mut_ptr();
            // Positions in chunks whose rows of the input and the packed gradient stay in L1
            // while every tile passes over them; tiles accumulate across chunks.
            const CHUNK: usize = 128;
            let mut q0 = 0;
            while q0 < hw {
                let qn = CHUNK.min(hw - q0);
                let load = acc || q0 > 0;
                let mut v0 = 0;
                while v0 < vectors {
                    // Per vector of the tile: its offset in a padded row block (dead vectors read
                    // the first one of the current row, which exists, and are never stored).
                    let mut off = [0usize; NV];
                    let mut live = [false; NV];
                    for v in 0..NV {
                        let j = v0 + v;
                        if j < vectors {
                            let (t, blk) = (j / c16, j % c16);
                            off[v] = ((t / k) * w2 + t % k) * c + 16 * blk;
                            live[v] = true;
                        }
                    }
                    let mut i0 = 0;
                    while i0 < m {
                        let mr = MR.min(m - i0);
                        let mut sum = [[_mm512_setzero_ps(); NV]; MR];
                        let tile = dp.wrapping_add(i0 * row_len + 16 * v0);
                        if load {
                            unroll!(r < MR => {
                                unroll!(v < NV => {
                                    if r < mr && live[v] {
                                        // SAFETY: row `i0 + r < m`, vector `v0 + v` of the output.
                                        sum[r][v] = unsafe { _mm512_maskz_loadu_ps(0xffff, tile.wrapping_add(r * row_len + 16 * v)) };
                                    }
                                });
                            });
                        }
                        // This panel's 8 rows within its block of 16 (rows past `m` are zero).
                        let mut ap = pk.wrapping_add(((i0 / 16) * hw + q0) * 16 + i0 % 16).cast_const();
                        // One flat loop over the positions (nested loops made LLVM spill the
                        // accumulators); the padded input skips its border at each row's end.
                        let (o0, o1, o2) = (off[0], off[1], off[2]);
                        let skip = (w2 - w) * c;
                        let mut x = q0 % w;
                        let mut bp = xp.wrapping_add(((q0 / w) * w2 + x) * c);
                        for _ in 0..qn {
                            // SAFETY: rows of the padded input.
                            let bv = unsafe {
                                [
                                    _mm512_maskz_loadu_ps(0xffff, bp.wrapping_add(o0)),
                                    _mm512_maskz_loadu_ps(0xffff, bp.wrapping_add(o1)),
                                    _mm512_maskz_loadu_ps(0xffff, bp.wrapping_add(o2)),
                                ]
                            };
                            unroll!(r < MR => {
                                // SAFETY: row `r` of this position in the packed block.
                                let a = _mm512_broadcastss_ps(unsafe { _mm_load_ss(ap.wrapping_add(r)) });
                                unroll!(v < NV => { sum[r][v] = _mm512_fmadd_ps(a, bv[v], sum[r][v]); });
                            });
                            ap = ap.wrapping_add(16);
                            bp = bp.wrapping_add(c);
                            x += 1;
                            if x == w {
                                x = 0;
                                bp = bp.wrapping_add(skip);
                            }
                        }
                        unroll!(r < MR => {
                            unroll!(v < NV => {
                                if r < mr && live[v] {
                                    // SAFETY: row `i0 + r < m`, vector `v0 + v` of the output.
                                    unsafe { _mm512_mask_storeu_ps(tile.wrapping_add(r * row_len + 16 * v), 0xffff, sum[r][v]) };
                                }
                            });
                        });
                        i0 += MR;
                    }
                    v0 += NV;
                }
                q0 += qn;
            }
        }
        PACKED.with(|b| b.replace(buf));
    }

    thread_local! {
        /// The packed gradient rows of [`filter_grad`], reused across calls on this thread.
        static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
}
