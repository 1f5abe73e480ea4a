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
//! registers).

use super::conv::ConvGeom;
use super::im2col_simd;

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
    pub(crate) fn new(m: usize, cin: usize, taps: usize, f: impl Fn(usize, usize, usize) -> f32) -> Self {
        Self::stacked(m, 1, cin, taps, |_, i, c, t| f(i, c, t))
    }

    /// Pack `parts` filters of `m` rows and `cin` channels, stacked as the channels
    /// `part·cin + c` of one filter; `f(part, i, c, t)` is a weight.
    pub(crate) fn stacked(m: usize, parts: usize, cin: usize, taps: usize, f: impl Fn(usize, usize, usize, usize) -> f32) -> Self {
        let chans = parts * cin;
        let panels = m.div_ceil(MR);
        let mut data = Vec::with_capacity(panels * taps * chans * MR);
        for p in 0..panels {
            let rows = MR.min(m - p * MR);
            for t in 0..taps {
                for part in 0..parts {
                    for c in 0..cin {
                        for r in 0..MR {
                            data.push(if r < rows { f(part, p * MR + r, c, t) } else { 0.0 });
                        }
                    }
                }
            }
        }
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
    assert!((f.cin == 0 || x.len() >= (f.cin - 1) * pitch + hw) && dst.len() >= f.m * hw, "conv_same_f32: buffers too short");
    if f.m == 0 || hw == 0 {
        return;
    }
    im2col_simd::with_masks(g, |masks| {
        #[cfg(target_arch = "x86_64")]
        {
            let geo = avx512::Geo {
                hw,
                pitch,
                w: g.w,
                kw: g.kw,
                pad: g.pad,
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    use super::MR;

    /// One call's geometry, as raw parts.
    pub(super) struct Geo {
        pub hw: usize,
        /// Distance between the channels of `x`.
        pub pitch: usize,
        pub w: usize,
        pub kw: usize,
        pub pad: usize,
        pub taps: usize,
        pub cin: usize,
        pub blocks: usize,
        /// Lanes of the last block inside the plane.
        pub tail: u16,
        /// `[block][tap]` lane masks of the geometry.
        pub masks: *const u16,
        pub x: *const f32,
    }

    impl Geo {
        /// Flat offset of the source pixel of tap `t`. Inlined: a call inside the tile's loops
        /// would spill every accumulator (all vector registers are caller-saved).
        #[inline(always)]
        fn shift(&self, t: usize) -> isize {
            (t / self.kw) as isize * self.w as isize - (self.pad * self.w) as isize + (t % self.kw) as isize - self.pad as isize
        }
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
            let mut bp = geo.x.wrapping_offset((b0 * 16) as isize + geo.shift(t));
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
}
