//! Single-precision matrix multiply for the convolution kernels, fast on x86-64 CPUs with
//! AVX-512F.
//!
//! [`sgemm`] computes `dst (m×n) = lhs (m×k) · rhs (k×n)` (optionally added to `dst`) on one
//! thread, for any strides of `lhs` and `rhs`. Where AVX-512F is detected at run time it uses the
//! code below (stable `core::arch` intrinsics, Rust ≥ 1.89, inside `#[target_feature]` functions,
//! so the crate's own target stays x86-64-v3); everywhere else (other CPUs, other architectures)
//! it calls the `gemm` crate, as [`sgemm_fallback`] does.
//!
//! The AVX-512 path is the GotoBLAS/BLIS scheme, in row-major terms:
//!
//! - `k` is cut into balanced blocks of at most 384, `n` into blocks whose packed `rhs` fits in
//!   about 1 MiB of L2;
//! - a microkernel keeps an `MR × NR` tile of `dst` (`NR = 16·NV`) in `MR·NV` zmm accumulators
//!   and, per step of `k`, loads `NV` vectors of a row of `rhs` and broadcasts `MR` elements of a
//!   column of `lhs`; ragged right edges use masked loads and stores, ragged bottom edges skip
//!   rows. The tile shape is chosen per call among five, `(MR, NV)` = (8, 3), (12, 2), (6, 4),
//!   (8, 2), (8, 1), to waste the least on edges (the NB201 shapes have `n` a multiple of 16, 32
//!   or 48 and `m` of 8 or 12);
//! - `rhs` is read in place when it is row-major and at most 8 panels of `lhs` share it (as in
//!   the forward convolution, where `m` is the few output channels); otherwise each block is
//!   packed into `NR`-wide panels, 64-byte aligned and zero padded (a copy when row-major, 16×16
//!   in-register transposes when column-major, a gather otherwise);
//! - `lhs` is read in place when row- or column-major (broadcasts need no layout), unless the
//!   cache lines a panel keeps in L1 would crowd into a few cache sets (rows 4 KiB apart);
//!   otherwise, and for a ragged last panel, panels of `MR` rows are packed;
//! - when `rhs` is column-major (the weight gradient's `colᵀ`) and transposing all of it would
//!   cost more than transposing the result, the product is computed transposed,
//!   `dstᵀ = rhsᵀ · lhsᵀ`, into a scratch buffer that is then added into `dst` by 16×16 blocks.
//!
//! Buffers are thread-local and reused, so a call allocates only when it needs more room than
//! any earlier call on the same thread (at most about 1 MiB of packed `rhs`, one `lhs` panel and
//! an `m × n` scratch per thread).
//!
//! Our dev profile keeps debug assertions, which add run-time checks to `ptr::add`,
//! `ptr::read_unaligned` and friends; in the hot loops those checks spill the accumulators, so
//! the code uses `wrapping_add` and masked loads and stores instead.

#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::transpose16;

/// Largest block of `k` the AVX-512 path multiplies at once.
#[cfg(target_arch = "x86_64")]
const KC_MAX: usize = 384;

/// Budget for one packed block of `rhs`, in bytes (it stays in L2 while all of `lhs` passes).
#[cfg(target_arch = "x86_64")]
const B_BLOCK_BYTES: usize = 1 << 20;

/// dst (m×n, row stride dst_rs, unit column stride) = lhs (m×k) · rhs (k×n)  [+ dst when acc]
///
/// `lhs` and `rhs` are given by (row stride, column stride) in elements; any strides work,
/// including transposed views. Single-threaded.
///
/// # Panics
///
/// If a slice is too short for the elements its strides address, or if `dst_rs < n` with more
/// than one row.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    check_args(m, n, k, dst, dst_rs, lhs, lhs_strides, rhs, rhs_strides);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            let p = avx512::Problem {
                m,
                n,
                k,
                dst: dst.as_mut_ptr(),
                dst_rs,
                acc,
                a: lhs.as_ptr(),
                a_rs: lhs_strides.0,
                a_cs: lhs_strides.1,
                b: rhs.as_ptr(),
                b_rs: rhs_strides.0,
                b_cs: rhs_strides.1,
            };
            // SAFETY: AVX-512F was detected just above. `check_args` proved that every element
            // the strides address lies inside its slice, and that the rows of `dst` do not
            // overlap; `dst` is borrowed mutably, so it aliases neither input.
            unsafe { avx512::sgemm(&p) };
            return;
        }
    }
    fallback(m, n, k, dst, dst_rs, acc, lhs, lhs_strides, rhs, rhs_strides);
}

/// [`sgemm`] through the `gemm` crate (single-threaded), whatever the CPU: the path taken where
/// AVX-512F is missing. Public for tests and benchmarks only.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn sgemm_fallback(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    check_args(m, n, k, dst, dst_rs, lhs, lhs_strides, rhs, rhs_strides);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    fallback(m, n, k, dst, dst_rs, acc, lhs, lhs_strides, rhs, rhs_strides);
}

/// Index one past the last element addressed by a `rows × cols` matrix with the given strides
/// (both dimensions non-zero), or `None` on overflow.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    (rows - 1).checked_mul(rs)?.checked_add((cols - 1).checked_mul(cs)?)?.checked_add(1)
}

#[allow(clippy::too_many_arguments)]
fn check_args(
    m: usize,
    n: usize,
    k: usize,
    dst: &[f32],
    dst_rs: usize,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(m == 1 || dst_rs >= n, "sgemm: dst row stride {dst_rs} < n = {n}");
    let need = extent(m, n, dst_rs, 1).expect("sgemm: dst extent overflows");
    assert!(dst.len() >= need, "sgemm: dst has {} elements, needs {need}", dst.len());
    if k == 0 {
        return;
    }
    let need = extent(m, k, lhs_rs, lhs_cs).expect("sgemm: lhs extent overflows");
    assert!(lhs.len() >= need, "sgemm: lhs has {} elements, needs {need}", lhs.len());
    let need = extent(k, n, rhs_rs, rhs_cs).expect("sgemm: rhs extent overflows");
    assert!(rhs.len() >= need, "sgemm: rhs has {} elements, needs {need}", rhs.len());
}

/// The `gemm` crate on checked arguments with `m, n, k > 0`, single-threaded (the kernels'
/// own wrapper of it, shared with the f64 path).
#[allow(clippy::too_many_arguments)]
fn fallback(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    crate::kernels::gemm_crate(m, n, k, dst, dst_rs, acc, lhs, lhs_strides, rhs, rhs_strides, 1)
}

/// Overrides of the AVX-512 path's automatic choices, so that tests can reach every code path
/// (each test thread sets its own); always the defaults outside tests.
#[derive(Clone, Copy, Debug, Default)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Force {
    /// Index into the tile shapes.
    variant: Option<usize>,
    /// Whether to compute the transposed product.
    swap: Option<bool>,
    /// Whether to read row-major `rhs` in place.
    direct_b: Option<bool>,
    /// Pack every panel of `lhs`.
    pack_a: bool,
}

#[cfg(test)]
thread_local! {
    static FORCE: std::cell::Cell<Force> = std::cell::Cell::new(Force::default());
}

#[cfg(target_arch = "x86_64")]
fn forced() -> Force {
    #[cfg(test)]
    return FORCE.with(|f| f.get());
    #[cfg(not(test))]
    Force::default()
}

/// A 64-byte aligned line of floats: the unit of the packing buffers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A growable, 64-byte aligned buffer of floats.
#[cfg(target_arch = "x86_64")]
#[derive(Default)]
struct AlignedBuf(Vec<Line>);

#[cfg(target_arch = "x86_64")]
impl AlignedBuf {
    /// At least `len` floats, contents unspecified (but initialised).
    fn get(&mut self, len: usize) -> &mut [f32] {
        let lines = len.div_ceil(16);
        if self.0.len() < lines {
            self.0.resize(lines, Line([0.0; 16]));
        }
        // SAFETY: `Line` is `repr(C)` around `[f32; 16]` with no padding (64 bytes), so the
        // vector's storage is `16 · len()` initialised, suitably aligned floats, borrowed
        // mutably through `self` for the lifetime of the returned slice.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<f32>(), self.0.len() * 16) }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::cell::RefCell;

    use core::arch::x86_64::*;

    use super::{AlignedBuf, B_BLOCK_BYTES, KC_MAX};

    /// One checked call, as raw parts.
    pub(super) struct Problem {
        pub m: usize,
        pub n: usize,
        pub k: usize,
        pub dst: *mut f32,
        pub dst_rs: usize,
        pub acc: bool,
        pub a: *const f32,
        pub a_rs: usize,
        pub a_cs: usize,
        pub b: *const f32,
        pub b_rs: usize,
        pub b_cs: usize,
    }

    thread_local! {
        /// Packed `rhs` block and packed `lhs` panel, reused across calls on this thread.
        static BUFS: RefCell<(AlignedBuf, AlignedBuf, AlignedBuf)> = RefCell::new(Default::default());
    }

    /// Tile shapes `(MR, NV)` compiled, with their relative speed (measured on the NB201
    /// shapes; 24 accumulators are the sweet spot of the 32 zmm registers).
    const VARIANTS: [(usize, usize, f64); 5] = [(8, 3, 1.0), (12, 2, 0.95), (6, 4, 0.97), (8, 2, 0.93), (8, 1, 0.8)];

    /// # Safety
    ///
    /// AVX-512F must be available, `m, n, k > 0`, and the pointers with their strides must
    /// address valid memory as `check_args` verifies; `dst` must not overlap the inputs.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sgemm(p: &Problem) {
        BUFS.with(|bufs| {
            // Fresh buffers if this thread's are somehow in use (they never are: the kernels
            // call nothing that could re-enter).
            let mut fresh = None;
            let mut guard = bufs.try_borrow_mut().ok();
            let (bbuf, abuf, tbuf) = match guard.as_deref_mut() {
                Some((b, a, t)) => (b, a, t),
                None => {
                    let f = fresh.insert(<(AlignedBuf, AlignedBuf, AlignedBuf)>::default());
                    (&mut f.0, &mut f.1, &mut f.2)
                }
            };
            // SAFETY (both branches): forwarded from this function's contract; the transposed
            // problem reads the same memory through swapped strides and writes the scratch
            // buffer, which holds `m · n` floats and aliases nothing else.
            unsafe {
                if swap(p) {
                    let t = tbuf.get(p.m * p.n).as_mut_ptr();
                    let q = Problem {
                        m: p.n,
                        n: p.m,
                        k: p.k,
                        dst: t,
                        dst_rs: p.m,
                        acc: false,
                        a: p.b,
                        a_rs: p.b_cs,
                        a_cs: p.b_rs,
                        b: p.a,
                        b_rs: p.a_cs,
                        b_cs: p.a_rs,
                    };
                    dispatch(&q, bbuf, abuf);
                    add_transposed(t, p);
                } else {
                    dispatch(p, bbuf, abuf);
                }
            }
        });
    }

    /// Whether to compute `dstᵀ = rhsᵀ · lhsᵀ` into a scratch buffer and transpose it into `dst`:
    /// worth it when `rhs` is column-major (packing it means transposing all `k × n` of it) and
    /// the transposed problem moves less (`lhs`, `k × m`, and the result, `m × n`).
    fn swap(p: &Problem) -> bool {
        let auto = p.b_rs == 1 && p.b_cs != 1 && p.m * p.n + p.k * p.m < p.k * p.n;
        super::forced().swap.unwrap_or(auto)
    }

    /// Pick a tile shape for the problem and run it.
    ///
    /// # Safety
    ///
    /// As for [`sgemm`].
    #[target_feature(enable = "avx512f")]
    unsafe fn dispatch(p: &Problem, bbuf: &mut AlignedBuf, abuf: &mut AlignedBuf) {
        let mut best = (f64::INFINITY, 0);
        for (i, &(mr, nv, speed)) in VARIANTS.iter().enumerate() {
            let nr = 16 * nv;
            let mut work = (p.m.div_ceil(mr) * mr * p.n.div_ceil(nr) * nr) as f64 / speed;
            if p.a_cs == 1 && p.a_rs != 1 && lines_per_set(p.a_rs, mr) > 8 {
                // Row-major `lhs` whose rows crowd into few cache sets: `run` would transpose
                // it into packed panels, element by element.
                work *= 3.0;
            }
            if work < best.0 {
                best = (work, i);
            }
        }
        let v = super::forced().variant.unwrap_or(best.1);
        // SAFETY: forwarded from this function's contract.
        unsafe {
            match v {
                0 => run::<8, 3>(p, bbuf, abuf),
                1 => run::<12, 2>(p, bbuf, abuf),
                2 => run::<6, 4>(p, bbuf, abuf),
                3 => run::<8, 2>(p, bbuf, abuf),
                _ => run::<8, 1>(p, bbuf, abuf),
            }
        }
    }

    /// `dst (+)= tᵀ`, where `t` is `n × m` row-major (row stride `m`).
    ///
    /// # Safety
    ///
    /// `t` must hold `m · n` floats; `dst` as in `p`.
    #[target_feature(enable = "avx512f")]
    unsafe fn add_transposed(t: *const f32, p: &Problem) {
        let mut i0 = 0;
        while i0 < p.m {
            let im = 16.min(p.m - i0);
            let imask = ((1u32 << im) - 1) as __mmask16;
            let mut j0 = 0;
            while j0 < p.n {
                let jn = 16.min(p.n - j0);
                let jmask = ((1u32 << jn) - 1) as __mmask16;
                let mut x = [_mm512_setzero_ps(); 16];
                for (c, xc) in x.iter_mut().enumerate().take(jn) {
                    // SAFETY: row `j0 + c < n` of `t`, columns `i0 ..< i0 + im`.
                    *xc = unsafe { _mm512_maskz_loadu_ps(imask, t.wrapping_add((j0 + c) * p.m + i0)) };
                }
                for (r, &y) in transpose16(&x).iter().enumerate().take(im) {
                    let d = p.dst.wrapping_add((i0 + r) * p.dst_rs + j0);
                    // SAFETY: row `i0 + r < m` of `dst`, columns `j0 ..< j0 + jn`.
                    unsafe {
                        let y = if p.acc { _mm512_add_ps(y, _mm512_maskz_loadu_ps(jmask, d)) } else { y };
                        _mm512_mask_storeu_ps(d, jmask, y);
                    }
                }
                j0 += 16;
            }
            i0 += 16;
        }
    }

    /// `_mm512_loadu_ps`, which goes through `ptr::read_unaligned`: with debug assertions on
    /// (our dev profile) that brings a run-time overlap check and a copy through the stack,
    /// where a masked load is one instruction.
    ///
    /// # Safety
    ///
    /// 16 floats at `p` must be readable.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn loadu(p: *const f32) -> __m512 {
        // SAFETY: forwarded.
        unsafe { _mm512_maskz_loadu_ps(0xFFFF, p) }
    }

    /// `_mm512_storeu_ps` without the checks, as [`loadu`].
    ///
    /// # Safety
    ///
    /// 16 floats at `p` must be writable.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn storeu(p: *mut f32, x: __m512) {
        // SAFETY: forwarded.
        unsafe { _mm512_mask_storeu_ps(p, 0xFFFF, x) }
    }

    /// Write mask for the `v`-th vector of a panel with `nr` valid columns.
    #[inline(always)]
    fn lane_mask(nr: usize, v: usize) -> __mmask16 {
        let valid = nr.saturating_sub(16 * v).min(16);
        ((1u32 << valid) - 1) as __mmask16
    }

    /// Split `total` into `ceil(total / max)` blocks of nearly equal size, rounded up to a
    /// multiple of `unit`; returns the block size.
    fn balanced(total: usize, max: usize, unit: usize) -> usize {
        let blocks = total.div_ceil(max.max(1));
        total.div_ceil(blocks).div_ceil(unit) * unit
    }

    /// The blocked product with tile `MR × 16·NV`.
    ///
    /// # Safety
    ///
    /// As for [`sgemm`].
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const MR: usize, const NV: usize>(p: &Problem, bbuf: &mut AlignedBuf, abuf: &mut AlignedBuf) {
        let nr_full = 16 * NV;
        let kc_max = balanced(p.k, KC_MAX, 1);
        let nc_max = balanced(p.n, (B_BLOCK_BYTES / 4 / kc_max).max(nr_full), nr_full);
        let force = super::forced();
        // Row-major `rhs` is read in place when few panels of `lhs` share it (packing would
        // cost more than it saves).
        let b_direct = p.b_cs == 1 && force.direct_b.unwrap_or(p.m.div_ceil(MR) <= 8);
        let bpack = if b_direct {
            std::ptr::null_mut()
        } else {
            bbuf.get(kc_max * nc_max.div_ceil(nr_full) * nr_full).as_mut_ptr()
        };
        let apack = abuf.get(kc_max * MR).as_mut_ptr();
        // `lhs` is read in place when it is row-major (the microkernel broadcasts each element,
        // so any layout with unit stride along a panel works) or column-major, unless the
        // lines a panel keeps in L1 would crowd into a few cache sets; otherwise (and for a
        // ragged last panel, whose missing rows would be read out of bounds) panels are packed.
        let a_rows = p.a_cs == 1 && lines_per_set(p.a_rs, MR) <= 8 && !force.pack_a;
        let a_cols = p.a_rs == 1 && lines_per_set(p.a_cs, kc_max) <= 4 && !force.pack_a;
        let mut k0 = 0;
        while k0 < p.k {
            let kc = kc_max.min(p.k - k0);
            let load_c = p.acc || k0 > 0;
            let mut j0 = 0;
            while j0 < p.n {
                let nc = nc_max.min(p.n - j0);
                if !b_direct {
                    // SAFETY: the buffer holds `kc_max · ceil(nc_max / NR) · NR` floats, and
                    // the source block lies inside `rhs`.
                    unsafe { pack_b::<NV>(p, k0, kc, j0, nc, bpack) };
                }
                let mut i0 = 0;
                while i0 < p.m {
                    let mr = MR.min(p.m - i0);
                    // `A` panel as (pointer, row stride, column stride).
                    let a_at = p.a.wrapping_add(i0 * p.a_rs + k0 * p.a_cs);
                    let (a, a_rs, a_cs) = if mr == MR && (a_rows || a_cols) {
                        (a_at, p.a_rs, p.a_cs)
                    } else {
                        // SAFETY: rows `i0..i0 + mr` and columns `k0..k0 + kc` of `lhs` are in
                        // bounds; the packed panel holds `kc_max · MR` floats.
                        unsafe { pack_a::<MR>(p, i0, mr, k0, kc, apack) };
                        (apack.cast_const(), 1, MR)
                    };
                    let mut jp = 0;
                    while jp < nc {
                        let nr = nr_full.min(nc - jp);
                        let c = p.dst.wrapping_add(i0 * p.dst_rs + j0 + jp);
                        // SAFETY: the panel of `lhs` has `MR` readable rows of `kc` elements,
                        // the panel of `rhs` `kc` rows of `nr` (packed: `NR`) floats, and the
                        // `mr × nr` tile of `dst` at row `i0`, column `j0 + jp` is in bounds.
                        unsafe {
                            if b_direct {
                                let b = p.b.wrapping_add(k0 * p.b_rs + j0 + jp);
                                if a_cs == 1 {
                                    kernel::<MR, NV, true, false>(kc, a, a_rs, a_cs, b, p.b_rs, c, p.dst_rs, mr, nr, load_c);
                                } else {
                                    kernel::<MR, NV, false, false>(kc, a, a_rs, a_cs, b, p.b_rs, c, p.dst_rs, mr, nr, load_c);
                                }
                            } else {
                                let b = bpack.wrapping_add(jp * kc).cast_const();
                                if a_cs == 1 {
                                    kernel::<MR, NV, true, true>(kc, a, a_rs, a_cs, b, nr_full, c, p.dst_rs, mr, nr, load_c);
                                } else {
                                    kernel::<MR, NV, false, true>(kc, a, a_rs, a_cs, b, nr_full, c, p.dst_rs, mr, nr, load_c);
                                }
                            }
                        }
                        jp += nr_full;
                    }
                    i0 += MR;
                }
                j0 += nc;
            }
            k0 += kc;
        }
    }

    /// Most cache lines that `count` addresses `stride` floats apart put into one set of the
    /// L1 data cache (64 sets of 64-byte lines: 48 KiB, 12 ways on Golden Cove).
    fn lines_per_set(stride: usize, count: usize) -> usize {
        let bytes = stride.wrapping_mul(4);
        if !bytes.is_multiple_of(64) {
            // Misaligned strides walk through the sets.
            return count.div_ceil(64);
        }
        let (mut x, mut y) = ((bytes / 64) % 64, 64);
        while x != 0 {
            (x, y) = (y % x, x);
        }
        // `y` = gcd(step in sets, 64): the addresses visit 64 / y sets.
        count.div_ceil(64 / y)
    }

    /// `dst[..mr, ..nr] (+)= A · B` for one `MR × 16·NV` tile.
    ///
    /// `A` is `MR` rows of `kc`, element `(r, t)` at `a + r·a_rs + t·a_cs`, where `a_cs` is 1
    /// when `ROWS` (row-major, read in place) and `a_rs` is 1 otherwise (packed panels, with
    /// `a_cs = MR`, or column-major matrices read in place). `B` is `kc` rows of `16·NV` floats
    /// `b_rs` apart: when `B_PACKED`, a packed panel (64-byte aligned, `b_rs = 16·NV`), otherwise
    /// row-major `rhs` read in place, of which only the first `nr` columns are read. `dst` rows
    /// are `c_rs` apart; only the first `mr` rows and `nr` columns are touched (read too when
    /// `load_c`).
    ///
    /// Never inlined: each instance then gets the whole register file to itself (inlined into
    /// the loops of [`run`], LLVM merged instances and spilled accumulators).
    ///
    /// # Safety
    ///
    /// AVX-512F must be available and the three regions above valid (all `MR` rows of `A`).
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const MR: usize, const NV: usize, const ROWS: bool, const B_PACKED: bool>(
        kc: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        c_rs: usize,
        mr: usize,
        nr: usize,
        load_c: bool,
    ) {
        // Everything indexed by row or vector is unrolled by `unroll!`, so that the
        // accumulators are only ever indexed by constants and stay in registers (LLVM does not
        // fully unroll the stores by itself, and one variable index puts the whole array in
        // memory). Wrapping pointer arithmetic: it cannot overflow (the addresses are valid)
        // and keeps debug builds free of checks.
        let a_step = if ROWS { 1 } else { a_cs };
        let b_step = if B_PACKED { 16 * NV } else { b_rs };
        let mut bmask = [0 as __mmask16; NV];
        unroll!(v < NV => { bmask[v] = lane_mask(nr, v); });
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        let mut ap = a;
        let mut bp = b;
        for _ in 0..kc {
            let mut bv = [_mm512_setzero_ps(); NV];
            unroll!(v < NV => {
                bv[v] = if B_PACKED {
                    // SAFETY: inside the packed panel, 64-byte aligned (rows are 64·NV bytes).
                    unsafe { _mm512_load_ps(bp.wrapping_add(16 * v)) }
                } else {
                    // SAFETY: the unmasked lanes are columns `< nr` of the current row of `B`.
                    unsafe { _mm512_maskz_loadu_ps(bmask[v], bp.wrapping_add(16 * v)) }
                };
            });
            unroll!(r < MR => {
                let off = if ROWS { r.wrapping_mul(a_rs) } else { r };
                // SAFETY: element (r, t) of the `A` panel.
                let av = _mm512_broadcastss_ps(unsafe { _mm_load_ss(ap.wrapping_add(off)) });
                unroll!(v < NV => { acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]); });
            });
            // The last step leaves these one past their regions, hence `wrapping_add`.
            ap = ap.wrapping_add(a_step);
            bp = bp.wrapping_add(b_step);
        }
        // Full tiles store straight from registers, ragged ones through a copy on the stack.
        if mr == MR && nr == 16 * NV {
            unroll!(r < MR => {
                let cr = c.wrapping_add(r.wrapping_mul(c_rs));
                unroll!(v < NV => {
                    let cp = cr.wrapping_add(16 * v);
                    // SAFETY: row `r`, columns `16v ..< 16v + 16` of a full tile.
                    unsafe {
                        let x = if load_c { _mm512_add_ps(acc[r][v], loadu(cp)) } else { acc[r][v] };
                        storeu(cp, x);
                    }
                });
            });
        } else {
            let mut tmp = [[_mm512_setzero_ps(); NV]; MR];
            unroll!(r < MR => { unroll!(v < NV => { tmp[r][v] = acc[r][v]; }); });
            // SAFETY: forwarded; `tmp` holds the tile.
            unsafe { store_ragged::<MR, NV>(&tmp, c, c_rs, mr, nr, load_c) };
        }
    }

    /// Store (or add, when `load_c`) the first `mr` rows and `nr` columns of a tile to `c`.
    ///
    /// # Safety
    ///
    /// As for [`kernel`].
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    unsafe fn store_ragged<const MR: usize, const NV: usize>(tile: &[[__m512; NV]; MR], c: *mut f32, c_rs: usize, mr: usize, nr: usize, load_c: bool) {
        for (r, row) in tile.iter().enumerate().take(mr) {
            for (v, &x) in row.iter().enumerate() {
                let mask = lane_mask(nr, v);
                if mask == 0 {
                    break;
                }
                // Masked lanes are neither read nor written (nor can they fault); the pointer
                // itself may lie past `dst`, hence `wrapping_add`.
                let cp = c.wrapping_add(r * c_rs + 16 * v);
                // SAFETY: the unmasked lanes are row `r < mr`, columns `< nr` of the tile.
                unsafe {
                    let x = if load_c { _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, cp)) } else { x };
                    _mm512_mask_storeu_ps(cp, mask, x);
                }
            }
        }
    }

    /// Pack rows `i0..i0 + mr` (`mr ≤ MR`), columns `k0..k0 + kc` of `lhs` `k`-major into `out`
    /// (`kc · MR` floats), zero-padding rows `mr..MR`.
    ///
    /// # Safety
    ///
    /// The block must lie inside `lhs` and `out` must hold `kc · MR` floats.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_a<const MR: usize>(p: &Problem, i0: usize, mr: usize, k0: usize, kc: usize, out: *mut f32) {
        // SAFETY: the caller guarantees `out` holds `kc · MR` floats.
        let out = unsafe { std::slice::from_raw_parts_mut(out, kc * MR) };
        if p.a_rs == 1 && MR <= 16 {
            // One masked vector per column: the lanes past `mr` are neither read nor kept.
            let load = ((1u32 << mr) - 1) as __mmask16;
            let store = ((1u32 << MR) - 1) as __mmask16;
            for (t, o) in out.chunks_exact_mut(MR).enumerate() {
                // SAFETY: elements (i0 ..< i0 + mr, k0 + t) are consecutive and inside `lhs`;
                // `o` holds the `MR` lanes stored.
                unsafe {
                    let x = _mm512_maskz_loadu_ps(load, p.a.wrapping_add(i0 + (k0 + t) * p.a_cs));
                    _mm512_mask_storeu_ps(o.as_mut_ptr(), store, x);
                }
            }
        } else {
            for (t, o) in out.chunks_exact_mut(MR).enumerate() {
                for (r, x) in o.iter_mut().enumerate() {
                    // SAFETY: element (i0 + r, k0 + t) with r < mr is inside `lhs`.
                    *x = if r < mr {
                        unsafe { *p.a.add((i0 + r) * p.a_rs + (k0 + t) * p.a_cs) }
                    } else {
                        0.0
                    };
                }
            }
        }
    }

    /// Pack rows `k0..k0 + kc`, columns `j0..j0 + nc` of `rhs` into panels of `16·NV` columns
    /// (`kc` rows each, consecutive), zero-padding the last panel.
    ///
    /// # Safety
    ///
    /// The block must lie inside `rhs`; `out` must be 64-byte aligned and hold
    /// `kc · ceil(nc / NR) · NR` floats.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_b<const NV: usize>(p: &Problem, k0: usize, kc: usize, j0: usize, nc: usize, out: *mut f32) {
        let nr_full = 16 * NV;
        let mut jp = 0;
        while jp < nc {
            let nr = nr_full.min(nc - jp);
            // SAFETY: panel `jp / NR` of the buffer.
            let panel = unsafe { out.add(jp * kc) };
            let j = j0 + jp;
            if p.b_cs == 1 {
                for t in 0..kc {
                    let src = p.b.wrapping_add((k0 + t) * p.b_rs + j);
                    for v in 0..NV {
                        let mask = lane_mask(nr, v);
                        // SAFETY: the unmasked lanes are columns `j + 16v ..< j + nr` of row
                        // `k0 + t`, inside `rhs`; masked lanes are not read. The store is an
                        // aligned full vector of the panel.
                        unsafe {
                            let x = _mm512_maskz_loadu_ps(mask, src.wrapping_add(16 * v));
                            _mm512_store_ps(panel.add(t * nr_full + 16 * v), x);
                        }
                    }
                }
            } else if p.b_rs == 1 {
                // Columns are contiguous in `k`: transpose 16×16 blocks. Column `c` of the
                // block starts at `col0 + c·b_cs`, row `t` of the panel block at `dst0 + t·NR`.
                for v in 0..NV {
                    let cols = nr.saturating_sub(16 * v).min(16);
                    let col0 = p.b.wrapping_add((j + 16 * v).wrapping_mul(p.b_cs).wrapping_add(k0));
                    let dst0 = panel.wrapping_add(16 * v);
                    // Blocks start where column 0 is 64-byte aligned (so is every column when
                    // `b_cs` is a multiple of 16, as for im2col matrices): each load then reads
                    // one cache line, used whole, however many columns share a cache set.
                    let head = (16 - (col0 as usize / 4) % 16) % 16;
                    let mut t0 = 0;
                    while t0 < kc {
                        let kt = if t0 == 0 && head > 0 { head.min(kc) } else { 16.min(kc - t0) };
                        let src = col0.wrapping_add(t0);
                        let dst = dst0.wrapping_add(t0 * nr_full);
                        // SAFETY: rows `k0 + t0 ..< k0 + t0 + kt` of columns `j + 16v ..< j + 16v
                        // + cols` are inside `rhs`; rows `t0 ..< t0 + kt` of vector `v` of the
                        // panel are inside the buffer and 64-byte aligned.
                        unsafe {
                            if cols == 16 && kt == 16 {
                                transpose_full(src, p.b_cs, dst, nr_full);
                            } else {
                                transpose_edge(src, p.b_cs, cols, kt, dst, nr_full);
                            }
                        }
                        t0 += kt;
                    }
                }
            } else {
                for t in 0..kc {
                    for l in 0..nr_full {
                        // SAFETY: element (k0 + t, j + l) with l < nr is inside `rhs`; the
                        // destination is inside the panel.
                        unsafe {
                            *panel.add(t * nr_full + l) = if l < nr { *p.b.add((k0 + t) * p.b_rs + (j + l) * p.b_cs) } else { 0.0 };
                        }
                    }
                }
            }
            jp += nr_full;
        }
    }

    /// Copy the 16×16 block whose column `c` holds 16 floats at `src + c·src_cs` into the 16
    /// aligned rows `dst + t·dst_rs`, transposed.
    ///
    /// # Safety
    ///
    /// Both regions must be valid; `dst` and `dst_rs · 4` must be multiples of 64 bytes.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    unsafe fn transpose_full(src: *const f32, src_cs: usize, dst: *mut f32, dst_rs: usize) {
        let mut x = [_mm512_setzero_ps(); 16];
        for (c, xc) in x.iter_mut().enumerate() {
            // SAFETY: column `c` of the block.
            *xc = unsafe { loadu(src.wrapping_add(c * src_cs)) };
        }
        for (t, &y) in transpose16(&x).iter().enumerate() {
            // SAFETY: row `t` of the destination, aligned.
            unsafe { _mm512_store_ps(dst.wrapping_add(t * dst_rs), y) };
        }
    }

    /// [`transpose_full`] for a ragged block: `cols ≤ 16` columns of `kt ≤ 16` floats; missing
    /// columns become zeros in the `kt` rows written.
    ///
    /// # Safety
    ///
    /// As for [`transpose_full`], for the smaller regions.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    unsafe fn transpose_edge(src: *const f32, src_cs: usize, cols: usize, kt: usize, dst: *mut f32, dst_rs: usize) {
        let kmask = ((1u32 << kt) - 1) as __mmask16;
        let mut x = [_mm512_setzero_ps(); 16];
        for (c, xc) in x.iter_mut().enumerate().take(cols) {
            // SAFETY: the first `kt` floats of column `c < cols`; masked lanes are not read.
            *xc = unsafe { _mm512_maskz_loadu_ps(kmask, src.wrapping_add(c * src_cs)) };
        }
        for (t, &y) in transpose16(&x).iter().enumerate().take(kt) {
            // SAFETY: row `t < kt` of the destination, aligned.
            unsafe { _mm512_store_ps(dst.wrapping_add(t * dst_rs), y) };
        }
    }

    /// Transpose a 16×16 block held as 16 rows.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) fn transpose16(r: &[__m512; 16]) -> [__m512; 16] {
        // Within each 128-bit lane: 4×4 transposes of every group of four rows.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let (a, b, c, d) = (r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]);
            let t0 = _mm512_castps_pd(_mm512_unpacklo_ps(a, b));
            let t1 = _mm512_castps_pd(_mm512_unpackhi_ps(a, b));
            let t2 = _mm512_castps_pd(_mm512_unpacklo_ps(c, d));
            let t3 = _mm512_castps_pd(_mm512_unpackhi_ps(c, d));
            // u[4q + g], lane l: rows 4g..4g+4 at column 4l + q.
            u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
            u[4 + g] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
            u[8 + g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
            u[12 + g] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
        }
        // Then a 4×4 transpose of 128-bit lanes for each q: output row 4l + q gathers lane l
        // of u[4q + 0..4].
        let mut y = [_mm512_setzero_ps(); 16];
        for q in 0..4 {
            let (u0, u1, u2, u3) = (u[4 * q], u[4 * q + 1], u[4 * q + 2], u[4 * q + 3]);
            let v0 = _mm512_shuffle_f32x4::<0x88>(u0, u1);
            let v1 = _mm512_shuffle_f32x4::<0xDD>(u0, u1);
            let v2 = _mm512_shuffle_f32x4::<0x88>(u2, u3);
            let v3 = _mm512_shuffle_f32x4::<0xDD>(u2, u3);
            y[q] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
            y[4 + q] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
            y[8 + q] = _mm512_shuffle_f32x4::<0xDD>(v0, v2);
            y[12 + q] = _mm512_shuffle_f32x4::<0xDD>(v1, v3);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn fill(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn naive(
        m: usize,
        n: usize,
        k: usize,
        dst: &mut [f32],
        dst_rs: usize,
        acc: bool,
        lhs: &[f32],
        (ars, acs): (usize, usize),
        rhs: &[f32],
        (brs, bcs): (usize, usize),
    ) {
        for i in 0..m {
            for j in 0..n {
                let mut s = if acc { dst[i * dst_rs + j] as f64 } else { 0.0 };
                for t in 0..k {
                    s += lhs[i * ars + t * acs] as f64 * rhs[t * brs + j * bcs] as f64;
                }
                dst[i * dst_rs + j] = s as f32;
            }
        }
    }

    type Gemm = fn(usize, usize, usize, &mut [f32], usize, bool, &[f32], (usize, usize), &[f32], (usize, usize));

    /// Layout of a `rows × cols` operand: 0 row-major, 1 column-major, 2 row-major with a padded
    /// row stride, 3 general strides (neither unit). Returns (strides, length).
    fn layout(kind: usize, rows: usize, cols: usize) -> ((usize, usize), usize) {
        let s = match kind {
            0 => (cols, 1),
            1 => (1, rows),
            2 => (cols + 3, 1),
            _ => (2, 2 * rows + 1),
        };
        (s, extent(rows.max(1), cols.max(1), s.0, s.1).unwrap())
    }

    #[allow(clippy::too_many_arguments)]
    fn check(f: Gemm, m: usize, n: usize, k: usize, la: usize, lb: usize, acc: bool, pad: usize, seed: u64) {
        let (sa, na) = layout(la, m, k);
        let (sb, nb) = layout(lb, k, n);
        let dst_rs = n + pad;
        let lhs = fill(na, seed);
        let rhs = fill(nb, seed + 1);
        let init = fill(m * dst_rs, seed + 2);
        let mut want = init.clone();
        let mut got = init.clone();
        naive(m, n, k, &mut want, dst_rs, acc, &lhs, sa, &rhs, sb);
        f(m, n, k, &mut got, dst_rs, acc, &lhs, sa, &rhs, sb);
        let tol = 1e-5 * (k as f32 + 4.0);
        for i in 0..m {
            for j in 0..dst_rs {
                let (w, g) = (want[i * dst_rs + j], got[i * dst_rs + j]);
                if j >= n {
                    // Padding between rows is never touched.
                    assert_eq!(g.to_bits(), init[i * dst_rs + j].to_bits(), "padding at ({i},{j}) changed");
                } else {
                    assert!(
                        (w - g).abs() <= tol,
                        "m={m} n={n} k={k} lhs={la} rhs={lb} acc={acc} pad={pad}: ({i},{j}) want {w} got {g}"
                    );
                }
            }
        }
    }

    const SIZES: [usize; 14] = [1, 3, 7, 8, 9, 15, 16, 17, 33, 47, 48, 49, 100, 129];

    fn sweep(f: Gemm) {
        let mut seed = 1;
        // Every size in each dimension with the others fixed, all layouts and modes.
        for &s in &SIZES {
            for (m, n, k) in [(s, 37, 19), (13, s, 23), (11, 29, s), (s, s, s)] {
                for la in 0..4 {
                    for lb in 0..4 {
                        for acc in [false, true] {
                            let pad = if (la + lb) % 2 == 0 { 0 } else { 5 };
                            check(f, m, n, k, la, lb, acc, pad, seed);
                            seed += 3;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sgemm_matches_naive_on_ragged_shapes() {
        sweep(sgemm);
    }

    #[test]
    fn sgemm_fallback_matches_naive_on_ragged_shapes() {
        sweep(sgemm_fallback);
    }

    /// Blocks of `k` (> 384) and of `n` (past the L2 budget), and each tile variant.
    #[test]
    fn sgemm_matches_naive_across_blocks_and_variants() {
        let mut seed = 1000;
        for (m, n, k) in [
            (8, 48 * 3, 900),    // 8×48 tiles, three blocks of k
            (24, 96, 385),       // 12×32 tiles
            (6, 64, 50),         // 6×64 tiles
            (16, 1024 + 5, 577), // two blocks of k, several blocks of n
            (64, 256, 288),      // forward, stage 2
            (288, 256, 32),      // input gradient, stage 2
            (32, 288, 256),      // weight gradient, stage 2
            (5, 7, 1300),
        ] {
            for (la, lb) in [(0, 0), (1, 0), (0, 1), (3, 3)] {
                for acc in [false, true] {
                    check(sgemm, m, n, k, la, lb, acc, 2, seed);
                    seed += 3;
                }
            }
        }
    }

    /// Every tile shape, with and without the transposed product, `rhs` read in place or
    /// packed, `lhs` read in place or packed.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn sgemm_matches_naive_in_every_mode() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut seed = 9000;
        for variant in 0..5 {
            for swap in [false, true] {
                for direct_b in [false, true] {
                    for pack_a in [false, true] {
                        let force = Force {
                            variant: Some(variant),
                            swap: Some(swap),
                            direct_b: Some(direct_b),
                            pack_a,
                        };
                        FORCE.with(|f| f.set(force));
                        for s in [1, 9, 17, 49, 100] {
                            for (m, n, k) in [(s, 37, 19), (13, s, 23), (11, 29, s)] {
                                for la in 0..4 {
                                    for lb in 0..4 {
                                        let acc = (la + lb + s) % 2 == 0;
                                        check(sgemm, m, n, k, la, lb, acc, (la + 2 * lb) % 3, seed);
                                        seed += 3;
                                    }
                                }
                            }
                        }
                        // Several blocks of `k` and `n`; rows 4 KiB apart (cache-set crowding).
                        for (m, n, k, la, lb) in [(5, 7, 1300, 0, 0), (16, 1029, 577, 0, 1), (16, 144, 1024, 0, 1), (16, 1024, 144, 0, 0)] {
                            check(sgemm, m, n, k, la, lb, true, 1, seed);
                            seed += 3;
                        }
                    }
                }
            }
        }
        FORCE.with(|f| f.set(Force::default()));
    }

    /// The NB201 convolution shapes, through the exact strides the kernels use.
    #[test]
    fn sgemm_matches_naive_on_conv_shapes() {
        let mut seed = 5000;
        for (cout, cin, p) in [(16, 3, 1024), (16, 16, 1024), (32, 32, 256), (64, 64, 64), (32, 16, 256)] {
            for k in [cin * 9, cin] {
                // forward: w (cout×k) · col (k×p)
                check(sgemm, cout, p, k, 0, 0, false, 0, seed);
                // input gradient: wᵀ (k×cout) · gy (cout×p)
                check(sgemm, k, p, cout, 1, 0, false, 0, seed + 1);
                // weight gradient: gy (cout×p) · colᵀ (p×k), accumulated
                check(sgemm, cout, k, p, 0, 1, true, 0, seed + 2);
                seed += 3;
            }
        }
    }

    /// Without `acc`, `dst` is written, never read: NaN already there does not leak through.
    #[test]
    fn sgemm_overwrites_dst_without_acc() {
        for (m, n, k, la, lb) in [(16, 1024, 144, 0, 0), (13, 50, 40, 1, 0), (16, 144, 1024, 0, 1), (7, 9, 700, 3, 3)] {
            let (sa, na) = layout(la, m, k);
            let (sb, nb) = layout(lb, k, n);
            let (lhs, rhs) = (fill(na, 1), fill(nb, 2));
            let mut want = vec![0.0f32; m * n];
            naive(m, n, k, &mut want, n, false, &lhs, sa, &rhs, sb);
            for f in [sgemm as Gemm, sgemm_fallback] {
                let mut got = vec![f32::NAN; m * n];
                f(m, n, k, &mut got, n, false, &lhs, sa, &rhs, sb);
                let tol = 1e-5 * (k as f32 + 4.0);
                assert!(want.iter().zip(&got).all(|(w, g)| (w - g).abs() <= tol), "m={m} n={n} k={k}");
            }
        }
    }

    #[test]
    fn sgemm_handles_empty_dimensions() {
        let mut dst = vec![7.0f32; 6];
        sgemm(2, 3, 0, &mut dst, 3, true, &[], (0, 1), &[], (3, 1));
        assert_eq!(dst, [7.0; 6]);
        sgemm(2, 3, 0, &mut dst, 3, false, &[], (0, 1), &[], (3, 1));
        assert_eq!(dst, [0.0; 6]);
        sgemm(0, 3, 4, &mut [], 3, false, &[], (4, 1), &[0.0; 12], (3, 1));
        sgemm(2, 0, 4, &mut [], 0, false, &[0.0; 8], (4, 1), &[], (0, 1));
    }

    #[test]
    #[should_panic(expected = "rhs has")]
    fn sgemm_rejects_short_slices() {
        let mut dst = vec![0.0f32; 4];
        sgemm(2, 2, 3, &mut dst, 2, false, &[0.0; 6], (3, 1), &[0.0; 5], (2, 1));
    }

    /// Best GFLOP/s of `f` on one shape over a few timed rounds.
    fn gflops(f: Gemm, m: usize, n: usize, k: usize, la: usize, lb: usize, acc: bool) -> f64 {
        let (sa, na) = layout(la, m, k);
        let (sb, nb) = layout(lb, k, n);
        let lhs = fill(na, 1);
        let rhs = fill(nb, 2);
        let mut dst = vec![0.0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        // Calibrate to about 0.1 s per round, then keep the best of five rounds.
        f(m, n, k, &mut dst, n, acc, &lhs, sa, &rhs, sb);
        let (t, mut calls) = (std::time::Instant::now(), 0usize);
        while t.elapsed().as_secs_f64() < 0.02 {
            f(m, n, k, &mut dst, n, acc, &lhs, sa, &rhs, sb);
            calls += 1;
        }
        let reps = ((0.1 / t.elapsed().as_secs_f64() * calls as f64) as usize).max(1);
        let mut best = 0.0f64;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                f(m, n, k, &mut dst, n, acc, &lhs, sa, &rhs, sb);
            }
            best = best.max(flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        std::hint::black_box(&dst);
        best
    }

    /// Peak single-core FMA throughput in GFLOP/s, measured with independent zmm chains.
    #[cfg(target_arch = "x86_64")]
    fn fma_peak() -> Option<f64> {
        use core::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        fn chains(iters: usize) -> f32 {
            let mut acc = [_mm512_setzero_ps(); 24];
            let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
            for _ in 0..iters {
                for x in acc.iter_mut() {
                    *x = _mm512_fmadd_ps(*x, a, b);
                }
            }
            let mut s = _mm512_setzero_ps();
            for x in acc {
                s = _mm512_add_ps(s, x);
            }
            _mm512_reduce_add_ps(s)
        }
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return None;
        }
        let iters = 20_000_000;
        let mut best = 0.0f64;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            // SAFETY: AVX-512F detected above.
            std::hint::black_box(unsafe { chains(iters) });
            best = best.max((iters * 24 * 32) as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        Some(best)
    }

    #[test]
    #[ignore]
    fn bench_sgemm_shapes() {
        // SGEMM_VARIANT / SGEMM_SWAP / SGEMM_DIRECT_B (0 or 1) / SGEMM_PACK_A (1) override the
        // automatic choices, for experiments.
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok());
        FORCE.with(|f| {
            f.set(Force {
                variant: env("SGEMM_VARIANT"),
                swap: env("SGEMM_SWAP").map(|v| v != 0),
                direct_b: env("SGEMM_DIRECT_B").map(|v| v != 0),
                pack_a: env("SGEMM_PACK_A").is_some_and(|v| v != 0),
            })
        });
        // SGEMM_BENCH=substring keeps the matching shapes only (and skips the peak).
        let only = std::env::var("SGEMM_BENCH").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        if let Some(peak) = only.is_empty().then(fma_peak).flatten() {
            println!("measured AVX-512 FMA peak, one core: {peak:.1} GFLOP/s");
        }
        // (label, m, n, k, lhs layout, rhs layout, acc); layouts as in `layout`.
        let mut shapes = vec![];
        for (c, p) in [(16, 1024), (32, 256), (64, 64)] {
            // 3×3 convolution, C → C channels: fwd, input gradient, weight gradient.
            let k = c * 9;
            shapes.push((format!("fwd  3x3 c{c}"), c, p, k, 0, 0, false));
            shapes.push((format!("data 3x3 c{c}"), k, p, c, 1, 0, false));
            shapes.push((format!("filt 3x3 c{c}"), c, k, p, 0, 1, true));
        }
        for (c, p) in [(16, 1024), (64, 64)] {
            // 1×1 convolution, C → C channels.
            shapes.push((format!("fwd  1x1 c{c}"), c, p, c, 0, 0, false));
            shapes.push((format!("data 1x1 c{c}"), c, p, c, 1, 0, false));
            shapes.push((format!("filt 1x1 c{c}"), c, c, p, 0, 1, true));
        }
        // The stem (3 → 16 channels) and a reduction block's first conv (16 → 32, stride 2).
        shapes.push(("fwd  stem".into(), 16, 1024, 27, 0, 0, false));
        shapes.push(("fwd  red c32".into(), 32, 256, 144, 0, 0, false));
        shapes.push(("filt red c32".into(), 32, 144, 256, 0, 1, true));
        shapes.push(("square 2048".into(), 2048, 2048, 2048, 0, 0, false));
        // SGEMM_SHAPE=m,n,k,lhs_layout,rhs_layout,acc (layouts as in `layout`) adds one shape.
        if let Ok(spec) = std::env::var("SGEMM_SHAPE") {
            let v: Vec<usize> = spec.split(',').map(|x| x.trim().parse().expect("SGEMM_SHAPE")).collect();
            shapes.push((format!("custom {spec}"), v[0], v[1], v[2], v[3], v[4], v[5] != 0));
        }
        println!("{:<16} {:>5} {:>5} {:>5} {:>9} {:>9} {:>6}", "shape", "m", "n", "k", "ours", "gemm", "ratio");
        for (label, m, n, k, la, lb, acc) in shapes.into_iter().filter(|s| s.0.contains(&only)) {
            let ours = gflops(sgemm, m, n, k, la, lb, acc);
            // SGEMM_BENCH_OURS=1 skips the `gemm` crate (for profiling).
            let theirs = if std::env::var_os("SGEMM_BENCH_OURS").is_some() {
                f64::NAN
            } else {
                gflops(sgemm_fallback, m, n, k, la, lb, acc)
            };
            println!("{label:<16} {m:>5} {n:>5} {k:>5} {ours:>9.1} {theirs:>9.1} {:>6.2}", ours / theirs);
        }
    }
}
