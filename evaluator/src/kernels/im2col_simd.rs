//! im2col of stride-1 "same" convolutions with AVX-512 masked loads.
//!
//! Each im2col row `(c, ki, kj)` is the input plane read at a flat shift of `dy·w + dx`
//! (`dy = ki − pad`, `dx = kj − pad`), with the positions whose source falls outside the image
//! set to zero. Per block of 16 output positions that is one masked load (out-of-image lanes
//! are masked off, so they read as zero and never touch memory) and one store: no separate
//! zero fills, no per-row copies, no libc calls, and the ReLU of a ReLU→Conv edge is one
//! `max` on the way. The masks depend only on the geometry and are computed once per call.

use super::conv::ConvGeom;

/// Whether [`im2col_same_f32`] can run on this CPU.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Lane masks: for every block of 16 output positions and every tap `(ki, kj)`, the lanes whose
/// source pixel lies inside the image (the last block's lanes past `h·w` are off too).
fn masks(g: &ConvGeom) -> Vec<u16> {
    let (h, w, hw) = (g.h as isize, g.w as isize, g.h * g.w);
    let taps = g.kh * g.kw;
    let blocks = hw.div_ceil(16);
    let mut out = vec![0u16; blocks * taps];
    for b in 0..blocks {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let (dy, dx) = (ki as isize - g.pad as isize, kj as isize - g.pad as isize);
                let mut m = 0u16;
                for l in 0..16 {
                    let q = b * 16 + l;
                    if q >= hw {
                        break;
                    }
                    let (oy, ox) = ((q / g.w) as isize, (q % g.w) as isize);
                    if (0..h).contains(&(oy + dy)) && (0..w).contains(&(ox + dx)) {
                        m |= 1 << l;
                    }
                }
                out[b * taps + ki * g.kw + kj] = m;
            }
        }
    }
    out
}

/// im2col of one sample `x (cin×h×w)` into `col (cin·kh·kw × h·w)` for a stride-1 convolution
/// whose output has the input's size; through a ReLU when `relu`.
///
/// # Panics
///
/// If the CPU lacks AVX-512F (check [`available`]) or the geometry is not stride-1 "same".
pub(crate) fn im2col_same_f32(g: &ConvGeom, x: &[f32], col: &mut [f32], relu: bool) {
    assert!(available(), "im2col_same_f32 needs AVX-512F");
    assert!(g.stride == 1 && g.ho == g.h && g.wo == g.w, "im2col_same_f32: not a stride-1 same convolution");
    let hw = g.h * g.w;
    assert!(x.len() >= g.cin * hw && col.len() >= g.k() * hw, "im2col_same_f32: buffers too short");
    with_masks(g, |masks| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is present (asserted above); the sizes were checked above and the
        // masks belong to this geometry.
        unsafe {
            if relu {
                avx512::run::<true>(g, x, col, masks)
            } else {
                avx512::run::<false>(g, x, col, masks)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (masks, relu);
    })
}

/// Run `f` on the lane masks of `g`'s geometry ([`masks`]: `[block][tap]`), computed once per
/// geometry and thread.
pub(super) fn with_masks<R>(g: &ConvGeom, f: impl FnOnce(&[u16]) -> R) -> R {
    MASKS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let key = (g.h, g.w, g.kh, g.kw, g.pad);
        let at = match cache.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                if cache.len() == MASK_CACHE {
                    cache.remove(0);
                }
                cache.push((key, masks(g)));
                cache.len() - 1
            }
        };
        f(&cache[at].1)
    })
}

/// Geometries whose masks a thread keeps (a network has a few: per stage, 1×1 and 3×3).
const MASK_CACHE: usize = 16;

/// `(h, w, kh, kw, pad)`: what the masks depend on.
type MaskKey = (usize, usize, usize, usize, usize);

thread_local! {
    /// The masks of the geometries this thread unfolded last.
    static MASKS: std::cell::RefCell<Vec<(MaskKey, Vec<u16>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::ConvGeom;

    /// # Safety
    ///
    /// AVX-512F must be available; `x` holds `cin·h·w` and `col` `cin·kh·kw·h·w` elements;
    /// `masks` comes from [`super::masks`] for `g`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run<const RELU: bool>(g: &ConvGeom, x: &[f32], col: &mut [f32], masks: &[u16]) {
        let hw = g.h * g.w;
        let taps = g.kh * g.kw;
        let blocks = hw.div_ceil(16);
        let zero = _mm512_setzero_ps();
        let tail: u16 = if hw.is_multiple_of(16) { 0xffff } else { (1u16 << (hw % 16)) - 1 };
        for c in 0..g.cin {
            let plane = x.as_ptr().wrapping_add(c * hw);
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let t = ki * g.kw + kj;
                    let shift = (ki as isize - g.pad as isize) * g.w as isize + (kj as isize - g.pad as isize);
                    let row = col.as_mut_ptr().wrapping_add((c * taps + t) * hw);
                    for b in 0..blocks {
                        let m = masks[b * taps + t];
                        // Lanes outside the image are masked off: they are not read (no fault
                        // even where the shifted address leaves the plane) and come back as 0.
                        let src = plane.wrapping_offset((b * 16) as isize + shift);
                        let mut v = _mm512_maskz_loadu_ps(m, src);
                        if RELU {
                            v = _mm512_max_ps(v, zero);
                        }
                        let dst = row.wrapping_add(b * 16);
                        if b + 1 < blocks || tail == 0xffff {
                            _mm512_mask_storeu_ps(dst, 0xffff, v);
                        } else {
                            _mm512_mask_storeu_ps(dst, tail, v);
                        }
                    }
                }
            }
        }
    }
}
