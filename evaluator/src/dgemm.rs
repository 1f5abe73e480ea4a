//! Double-precision matrix multiply for the convolution kernels (synflow runs the network in
//! float64), fast on x86-64 CPUs with AVX-512F.
//!
//! [`dgemm`] computes `dst (m×n) = lhs (m×k) · rhs (k×n)` (optionally added to `dst`) for any
//! strides of `lhs` and `rhs`, on up to `threads` rayon threads. Where AVX-512F is detected at run
//! time it uses the code below (stable `core::arch` intrinsics inside `#[target_feature]`
//! functions, so the crate's own target stays x86-64-v3); everywhere else it calls the `gemm`
//! crate, whose f64 kernels stop at AVX2 on stable Rust.
//!
//! The scheme is the one of [`crate::sgemm`] (GotoBLAS/BLIS in row-major terms), with 8 lanes
//! per zmm register instead of 16:
//!
//! - `k` is cut into balanced blocks of at most [`KC_MAX`], `n` into blocks whose packed `rhs`
//!   fits in about 1 MiB of L2;
//! - a microkernel keeps an `MR × NR` tile of `dst` (`NR = 8·NV`) in `MR·NV` zmm accumulators
//!   and, per step of `k`, loads `NV` vectors of a row of `rhs` and broadcasts `MR` elements of a
//!   column of `lhs`; ragged right edges use masked loads and stores, ragged bottom edges skip
//!   rows. The tile shape is chosen per call among `(MR, NV)` = (8, 3), (12, 2), (6, 4), (8, 2),
//!   (8, 1), to waste the least on edges;
//! - `rhs` is read in place when it is row-major and at most 8 panels of `lhs` share it (the
//!   forward convolution and the input gradient of a "same" convolution at batch 1, where `m` is
//!   the few channels); otherwise each block is packed into `NR`-wide panels, 64-byte aligned and
//!   zero padded (a copy when row-major, 8×8 in-register transposes when column-major, a gather
//!   otherwise);
//! - `lhs` is read in place when row- or column-major, unless the cache lines a panel keeps in L1
//!   would crowd into a few cache sets; otherwise, and for a ragged last panel, panels of `MR`
//!   rows are packed;
//! - when `rhs` is column-major (the weight gradient's `colᵀ`) and transposing all of it would
//!   cost more than transposing the result, the product is computed transposed,
//!   `dstᵀ = rhsᵀ · lhsᵀ`, into a scratch buffer that is then added into `dst` by 8×8 blocks.
//!
//! Threads: the convolutions of a batch-1 network (synflow) cannot spread samples over the pool,
//! so they hand their thread count to the product, which cuts `n` (or `m` when `n` is narrow)
//! into about two slices per thread; each slice is an independent product, taken by the calling
//! thread or a pool thread as they come free (`kernels::par_parts`), with that thread's buffers.
//! Products too small to pay for handing work to another thread stay on one.
//!
//! Buffers are thread-local and reused, so a call allocates only when it needs more room than
//! any earlier call on the same thread.
//!
//! Our dev profile keeps debug assertions, which add run-time checks to `ptr::add`,
//! `ptr::read_unaligned` and friends; in the hot loops those checks spill the accumulators, so
//! the code uses `wrapping_add` and masked loads and stores instead.

/// Largest block of `k` the AVX-512 path multiplies at once.
#[cfg(target_arch = "x86_64")]
const KC_MAX: usize = 256;

/// Budget for one packed block of `rhs`, in bytes (it stays in L2 while all of `lhs` passes).
#[cfg(target_arch = "x86_64")]
const B_BLOCK_BYTES: usize = 1 << 20;

/// Multiply-adds below which a product stays on one thread (about 15 µs of work on one core;
/// waking a pool thread takes microseconds to tens of them on a virtual machine).
const MIN_PARALLEL_MACS: usize = 1 << 20;

/// dst (m×n, row stride dst_rs, unit column stride) = lhs (m×k) · rhs (k×n)  [+ dst when acc]
///
/// `lhs` and `rhs` are given by (row stride, column stride) in elements; any strides work,
/// including transposed views. `threads` > 1 lets a large enough product use that many rayon
/// threads.
///
/// # Panics
///
/// If a slice is too short for the elements its strides address, or if `dst_rs < n` with more
/// than one row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f64],
    dst_rs: usize,
    acc: bool,
    lhs: &[f64],
    lhs_strides: (usize, usize),
    rhs: &[f64],
    rhs_strides: (usize, usize),
    threads: usize,
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
                b_rows: std::ptr::null(),
            };
            // SAFETY: AVX-512F was detected just above. `check_args` proved that every element
            // the strides address lies inside its slice, and that the rows of `dst` do not
            // overlap; `dst` is borrowed mutably, so it aliases neither input.
            unsafe { avx512::dgemm_threads(&p, threads) };
            return;
        }
    }
    crate::kernels::gemm_crate(m, n, k, dst, dst_rs, acc, lhs, lhs_strides, rhs, rhs_strides, threads)
}

/// [`dgemm`] with `rhs` given by rows: row `t` is `rhs[rhs_rows[t]..][..n]` (unit column
/// stride). The rows of an implicit im2col: a stride-1 convolution reads tap `t` of input
/// channel `c` at a fixed offset from each output position, so its im2col rows are windows of
/// the padded input, at offsets no single stride describes.
///
/// # Panics
///
/// As [`dgemm`]; also if `rhs_rows` has fewer than `k` entries or a row runs past `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dgemm_rows(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f64],
    dst_rs: usize,
    acc: bool,
    lhs: &[f64],
    lhs_strides: (usize, usize),
    rhs: &[f64],
    rhs_rows: &[usize],
    threads: usize,
) {
    check_args(m, n, k, dst, dst_rs, lhs, lhs_strides, &[], (0, 0));
    assert!(rhs_rows.len() >= k, "dgemm: {} rhs rows for k = {k}", rhs_rows.len());
    if m == 0 || n == 0 {
        return;
    }
    if let Some(&last) = rhs_rows[..k].iter().max() {
        assert!(
            last.checked_add(n).is_some_and(|end| end <= rhs.len()),
            "dgemm: rhs row at {last} runs past {} elements",
            rhs.len()
        );
    }
    if k == 0 {
        // No row to read: the plain product handles it (an empty `rhs` is never touched).
        return dgemm(m, n, 0, dst, dst_rs, acc, lhs, lhs_strides, &[], (n, 1), threads);
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
                b_rs: 0,
                b_cs: 1,
                b_rows: rhs_rows.as_ptr(),
            };
            // SAFETY: AVX-512F was detected just above; `check_args` and the row check above
            // proved every addressed element in bounds, the table has `k` entries, and `dst`,
            // borrowed mutably, aliases neither input.
            unsafe { avx512::dgemm_threads(&p, threads) };
            return;
        }
    }
    let mut b = vec![0.0; k * n];
    for (row, &r) in b.chunks_exact_mut(n).zip(rhs_rows) {
        row.copy_from_slice(&rhs[r..r + n]);
    }
    crate::kernels::gemm_crate(m, n, k, dst, dst_rs, acc, lhs, lhs_strides, &b, (n, 1), threads)
}

/// `dst[j·dst_rs + i] = src[i·src_rs + j]` (`+=` when `add`) for `i < rows`, `j < cols`: a
/// strided transpose, by 8×8 register blocks where AVX-512F is available.
///
/// # Panics
///
/// If a slice is too short for the elements its strides address.
pub(crate) fn transpose(rows: usize, cols: usize, src: &[f64], src_rs: usize, dst: &mut [f64], dst_rs: usize, add: bool) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(extent(rows, cols, src_rs, 1).is_some_and(|e| e <= src.len()), "transpose: src too short");
    assert!(extent(cols, rows, dst_rs, 1).is_some_and(|e| e <= dst.len()), "transpose: dst too short");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected; the asserts above bound every element addressed,
            // and `dst`, borrowed mutably, does not alias `src`.
            unsafe { avx512::transpose(rows, cols, src.as_ptr(), src_rs, dst.as_mut_ptr(), dst_rs, add) };
            return;
        }
    }
    for (i, row) in src.chunks(src_rs).take(rows).enumerate() {
        for (j, &v) in row[..cols].iter().enumerate() {
            let d = &mut dst[j * dst_rs + i];
            *d = if add { *d + v } else { v };
        }
    }
}

/// How a product is cut for `threads` threads: into `parts` slices of `chunk` columns (when
/// `along_n`) or rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split {
    parts: usize,
    along_n: bool,
    chunk: usize,
}

/// The cut of an `m × n × k` product for `threads` threads: about two slices per thread, of `n`
/// in whole vectors (8 columns) when that leaves at least two vectors per slice, otherwise of
/// `m` when that leaves 8 rows per slice, otherwise (and for products too small to share) one
/// piece.
fn split(m: usize, n: usize, k: usize, threads: usize) -> Split {
    let one = Split {
        parts: 1,
        along_n: true,
        chunk: n,
    };
    if threads <= 1 || m.saturating_mul(n).saturating_mul(k) < MIN_PARALLEL_MACS {
        return one;
    }
    // About two slices per thread, so that the slices balance over threads that start late
    // (see `kernels::par_parts`).
    let cut = |len: usize, unit: usize| {
        let chunk = len.div_ceil(2 * threads).div_ceil(unit).max(1) * unit;
        (len.div_ceil(chunk), chunk)
    };
    if n >= 32 * threads {
        let (parts, chunk) = cut(n, 8);
        Split { parts, along_n: true, chunk }
    } else if m >= 16 * threads {
        let (parts, chunk) = cut(m, 1);
        Split { parts, along_n: false, chunk }
    } else {
        one
    }
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
    dst: &[f64],
    dst_rs: usize,
    lhs: &[f64],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f64],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(m == 1 || dst_rs >= n, "dgemm: dst row stride {dst_rs} < n = {n}");
    let need = extent(m, n, dst_rs, 1).expect("dgemm: dst extent overflows");
    assert!(dst.len() >= need, "dgemm: dst has {} elements, needs {need}", dst.len());
    if k == 0 {
        return;
    }
    let need = extent(m, k, lhs_rs, lhs_cs).expect("dgemm: lhs extent overflows");
    assert!(lhs.len() >= need, "dgemm: lhs has {} elements, needs {need}", lhs.len());
    if rhs_rs == 0 && rhs_cs == 0 {
        // `rhs` given by rows (`dgemm_rows`), checked there.
        return;
    }
    let need = extent(k, n, rhs_rs, rhs_cs).expect("dgemm: rhs extent overflows");
    assert!(rhs.len() >= need, "dgemm: rhs has {} elements, needs {need}", rhs.len());
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

/// A 64-byte aligned line of doubles: the unit of the packing buffers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f64; 8]);

/// A growable, 64-byte aligned buffer of doubles.
#[cfg(target_arch = "x86_64")]
#[derive(Default)]
struct AlignedBuf(Vec<Line>);

#[cfg(target_arch = "x86_64")]
impl AlignedBuf {
    /// At least `len` doubles, contents unspecified (but initialised).
    fn get(&mut self, len: usize) -> &mut [f64] {
        let lines = len.div_ceil(8);
        if self.0.len() < lines {
            self.0.resize(lines, Line([0.0; 8]));
        }
        // SAFETY: `Line` is `repr(C)` around `[f64; 8]` with no padding (64 bytes), so the
        // vector's storage is `8 · len()` initialised, suitably aligned doubles, borrowed
        // mutably through `self` for the lifetime of the returned slice.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<f64>(), self.0.len() * 8) }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::cell::RefCell;

    use core::arch::x86_64::*;

    use super::{AlignedBuf, B_BLOCK_BYTES, KC_MAX};

    /// One checked call, as raw parts.
    #[derive(Clone, Copy)]
    pub(super) struct Problem {
        pub m: usize,
        pub n: usize,
        pub k: usize,
        pub dst: *mut f64,
        pub dst_rs: usize,
        pub acc: bool,
        pub a: *const f64,
        pub a_rs: usize,
        pub a_cs: usize,
        pub b: *const f64,
        pub b_rs: usize,
        pub b_cs: usize,
        /// When not null, `k` row offsets: row `t` of `rhs` starts at `b + b_rows[t]` (then
        /// `b_cs` is 1 and `b_rs` unused).
        pub b_rows: *const usize,
    }

    /// A slice of a problem handed to another thread.
    struct Part(Problem);

    // SAFETY: the parts of one split write disjoint blocks of `dst` (distinct columns or rows)
    // and only read `lhs` and `rhs`, which nobody writes while the product runs (the caller
    // borrows `dst` mutably and the inputs immutably for its whole duration).
    unsafe impl Send for Part {}
    // SAFETY: as above; a shared `Part` is only ever read.
    unsafe impl Sync for Part {}

    thread_local! {
        /// Packed `rhs` block, packed `lhs` panel and transposed-result scratch, reused across
        /// calls on this thread.
        static BUFS: RefCell<(AlignedBuf, AlignedBuf, AlignedBuf)> = RefCell::new(Default::default());
    }

    /// How the microkernel reads `rhs`: packed panels, rows `b_rs` apart in place, or rows at
    /// the offsets of a table in place.
    const B_PACKED: u8 = 0;
    const B_STRIDED: u8 = 1;
    const B_TABLE: u8 = 2;

    /// Tile shapes `(MR, NV)` compiled, with their relative speed (24 accumulators are the sweet
    /// spot of the 32 zmm registers).
    const VARIANTS: [(usize, usize, f64); 5] = [(8, 3, 1.0), (12, 2, 0.95), (6, 4, 0.97), (8, 2, 0.93), (8, 1, 0.8)];

    /// [`dgemm`] on the slices of [`super::split`], in parallel.
    ///
    /// # Safety
    ///
    /// As for [`dgemm`].
    pub(super) unsafe fn dgemm_threads(p: &Problem, threads: usize) {
        let s = super::split(p.m, p.n, p.k, threads);
        if s.parts <= 1 {
            // SAFETY: forwarded.
            return unsafe { dgemm(p) };
        }
        let parts: Vec<Part> = (0..s.parts)
            .map(|i| {
                let lo = i * s.chunk;
                let len = s.chunk.min(if s.along_n { p.n } else { p.m } - lo);
                Part(if s.along_n {
                    Problem {
                        n: len,
                        dst: p.dst.wrapping_add(lo),
                        b: p.b.wrapping_add(lo * p.b_cs),
                        ..*p
                    }
                } else {
                    Problem {
                        m: len,
                        dst: p.dst.wrapping_add(lo * p.dst_rs),
                        a: p.a.wrapping_add(lo * p.a_rs),
                        ..*p
                    }
                })
            })
            .collect();
        // SAFETY (in the closure): each part is a sub-block of the checked problem (its rows or
        // columns `lo ..< lo + len`), so its memory is valid; parts write disjoint blocks of
        // `dst`, and each runs exactly once. AVX-512F is available on every thread.
        crate::kernels::par_parts(parts.len(), &|i| unsafe { dgemm(&parts[i].0) });
    }

    /// The product on the calling thread.
    ///
    /// # Safety
    ///
    /// AVX-512F must be available, `m, n, k > 0`, and the pointers with their strides must
    /// address valid memory as `check_args` verifies; `dst` must not overlap the inputs.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dgemm(p: &Problem) {
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
            // buffer, which holds `m · n` doubles and aliases nothing else.
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
                        b_rows: std::ptr::null(),
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
        if !p.b_rows.is_null() {
            return false;
        }
        let auto = p.b_rs == 1 && p.b_cs != 1 && p.m * p.n + p.k * p.m < p.k * p.n;
        super::forced().swap.unwrap_or(auto)
    }

    /// Pick a tile shape for the problem and run it.
    ///
    /// # Safety
    ///
    /// As for [`dgemm`].
    #[target_feature(enable = "avx512f")]
    unsafe fn dispatch(p: &Problem, bbuf: &mut AlignedBuf, abuf: &mut AlignedBuf) {
        let mut best = (f64::INFINITY, 0);
        for (i, &(mr, nv, speed)) in VARIANTS.iter().enumerate() {
            let nr = 8 * nv;
            let mut work = (p.m.div_ceil(mr) * mr * p.n.div_ceil(nr) * nr) as f64 / speed;
            if p.a_cs == 1 && p.a_rs != 1 && lines_per_set(p.a_rs, mr) > 8 {
                // Row-major `lhs` whose rows crowd into few cache sets: `run` would gather it
                // into packed panels, element by element.
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
    /// `t` must hold `m · n` doubles; `dst` as in `p`.
    #[target_feature(enable = "avx512f")]
    unsafe fn add_transposed(t: *const f64, p: &Problem) {
        let mut i0 = 0;
        while i0 < p.m {
            let im = 8.min(p.m - i0);
            let imask = mask_of(im);
            let mut j0 = 0;
            while j0 < p.n {
                let jn = 8.min(p.n - j0);
                let jmask = mask_of(jn);
                let mut x = [_mm512_setzero_pd(); 8];
                for (c, xc) in x.iter_mut().enumerate().take(jn) {
                    // SAFETY: row `j0 + c < n` of `t`, columns `i0 ..< i0 + im`.
                    *xc = unsafe { _mm512_maskz_loadu_pd(imask, t.wrapping_add((j0 + c) * p.m + i0)) };
                }
                for (r, &y) in transpose8(&x).iter().enumerate().take(im) {
                    let d = p.dst.wrapping_add((i0 + r) * p.dst_rs + j0);
                    // SAFETY: row `i0 + r < m` of `dst`, columns `j0 ..< j0 + jn`.
                    unsafe {
                        let y = if p.acc { _mm512_add_pd(y, _mm512_maskz_loadu_pd(jmask, d)) } else { y };
                        _mm512_mask_storeu_pd(d, jmask, y);
                    }
                }
                j0 += 8;
            }
            i0 += 8;
        }
    }

    /// [`super::transpose`] by 8×8 blocks: masked loads of up to 8 source rows, an in-register
    /// transpose, masked stores (or adds) of up to 8 destination rows.
    ///
    /// # Safety
    ///
    /// AVX-512F must be available; `src` must hold `rows × cols` doubles `src_rs` apart and
    /// `dst` `cols × rows` doubles `dst_rs` apart, not overlapping.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose(rows: usize, cols: usize, src: *const f64, src_rs: usize, dst: *mut f64, dst_rs: usize, add: bool) {
        let mut i0 = 0;
        while i0 < rows {
            let im = 8.min(rows - i0);
            let imask = mask_of(im);
            let mut j0 = 0;
            while j0 < cols {
                let jn = 8.min(cols - j0);
                let jmask = mask_of(jn);
                let mut x = [_mm512_setzero_pd(); 8];
                for (r, xr) in x.iter_mut().enumerate().take(im) {
                    // SAFETY: row `i0 + r < rows` of `src`, columns `j0 ..< j0 + jn`.
                    *xr = unsafe { _mm512_maskz_loadu_pd(jmask, src.wrapping_add((i0 + r) * src_rs + j0)) };
                }
                for (c, &y) in transpose8(&x).iter().enumerate().take(jn) {
                    let d = dst.wrapping_add((j0 + c) * dst_rs + i0);
                    // SAFETY: row `j0 + c < cols` of `dst`, columns `i0 ..< i0 + im`.
                    unsafe {
                        let y = if add { _mm512_add_pd(y, _mm512_maskz_loadu_pd(imask, d)) } else { y };
                        _mm512_mask_storeu_pd(d, imask, y);
                    }
                }
                j0 += 8;
            }
            i0 += 8;
        }
    }

    /// `_mm512_loadu_pd` without the debug-build checks of `ptr::read_unaligned` (a masked load
    /// is one instruction).
    ///
    /// # Safety
    ///
    /// 8 doubles at `p` must be readable.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn loadu(p: *const f64) -> __m512d {
        // SAFETY: forwarded.
        unsafe { _mm512_maskz_loadu_pd(0xFF, p) }
    }

    /// `_mm512_storeu_pd` without the checks, as [`loadu`].
    ///
    /// # Safety
    ///
    /// 8 doubles at `p` must be writable.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn storeu(p: *mut f64, x: __m512d) {
        // SAFETY: forwarded.
        unsafe { _mm512_mask_storeu_pd(p, 0xFF, x) }
    }

    /// The mask of the first `lanes` (≤ 8) lanes.
    #[inline(always)]
    fn mask_of(lanes: usize) -> __mmask8 {
        ((1u32 << lanes) - 1) as __mmask8
    }

    /// Write mask for the `v`-th vector of a panel with `nr` valid columns.
    #[inline(always)]
    fn lane_mask(nr: usize, v: usize) -> __mmask8 {
        mask_of(nr.saturating_sub(8 * v).min(8))
    }

    /// Split `total` into `ceil(total / max)` blocks of nearly equal size, rounded up to a
    /// multiple of `unit`; returns the block size.
    fn balanced(total: usize, max: usize, unit: usize) -> usize {
        let blocks = total.div_ceil(max.max(1));
        total.div_ceil(blocks).div_ceil(unit) * unit
    }

    /// The blocked product with tile `MR × 8·NV`.
    ///
    /// # Safety
    ///
    /// As for [`dgemm`].
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const MR: usize, const NV: usize>(p: &Problem, bbuf: &mut AlignedBuf, abuf: &mut AlignedBuf) {
        let nr_full = 8 * NV;
        let kc_max = balanced(p.k, KC_MAX, 1);
        let nc_max = balanced(p.n, (B_BLOCK_BYTES / 8 / kc_max).max(nr_full), nr_full);
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
        // so any layout with unit stride along a panel works) or column-major, unless the lines
        // a panel keeps in L1 would crowd into a few cache sets; otherwise (and for a ragged
        // last panel, whose missing rows would be read out of bounds) panels are packed.
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
                    // SAFETY: the buffer holds `kc_max · ceil(nc_max / NR) · NR` doubles, and
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
                        // bounds; the packed panel holds `kc_max · MR` doubles.
                        unsafe { pack_a::<MR>(p, i0, mr, k0, kc, apack) };
                        (apack.cast_const(), 1, MR)
                    };
                    let mut jp = 0;
                    while jp < nc {
                        let nr = nr_full.min(nc - jp);
                        let c = p.dst.wrapping_add(i0 * p.dst_rs + j0 + jp);
                        // SAFETY: the panel of `lhs` has `MR` readable rows of `kc` elements,
                        // the panel of `rhs` `kc` rows of `nr` (packed: `NR`) doubles, and the
                        // `mr × nr` tile of `dst` at row `i0`, column `j0 + jp` is in bounds.
                        unsafe {
                            let rows = p.b_rows.wrapping_add(k0);
                            if b_direct && !p.b_rows.is_null() {
                                let b = p.b.wrapping_add(j0 + jp);
                                if a_rs != 1 {
                                    kernel::<MR, NV, true, B_TABLE>(kc, a, a_rs, a_cs, b, 0, rows, c, p.dst_rs, mr, nr, load_c);
                                } else {
                                    kernel::<MR, NV, false, B_TABLE>(kc, a, a_rs, a_cs, b, 0, rows, c, p.dst_rs, mr, nr, load_c);
                                }
                            } else if b_direct {
                                let b = p.b.wrapping_add(k0 * p.b_rs + j0 + jp);
                                if a_rs != 1 {
                                    kernel::<MR, NV, true, B_STRIDED>(kc, a, a_rs, a_cs, b, p.b_rs, rows, c, p.dst_rs, mr, nr, load_c);
                                } else {
                                    kernel::<MR, NV, false, B_STRIDED>(kc, a, a_rs, a_cs, b, p.b_rs, rows, c, p.dst_rs, mr, nr, load_c);
                                }
                            } else {
                                let b = bpack.wrapping_add(jp * kc).cast_const();
                                if a_rs != 1 {
                                    kernel::<MR, NV, true, B_PACKED>(kc, a, a_rs, a_cs, b, nr_full, rows, c, p.dst_rs, mr, nr, load_c);
                                } else {
                                    kernel::<MR, NV, false, B_PACKED>(kc, a, a_rs, a_cs, b, nr_full, rows, c, p.dst_rs, mr, nr, load_c);
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

    /// Most cache lines that `count` addresses `stride` doubles apart put into one set of the
    /// L1 data cache (64 sets of 64-byte lines: 48 KiB, 12 ways on Golden Cove).
    fn lines_per_set(stride: usize, count: usize) -> usize {
        let bytes = stride.wrapping_mul(8);
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

    /// `dst[..mr, ..nr] (+)= A · B` for one `MR × 8·NV` tile.
    ///
    /// `A` is `MR` rows of `kc`, element `(r, t)` at `a + r·a_rs + t·a_cs`; `ROWS` is false
    /// when `a_rs` is 1 (packed panels, with `a_cs = MR`, or column-major matrices read in
    /// place), true otherwise (row-major matrices read in place). `B` is `kc` rows of `8·NV` doubles
    /// `b_rs` apart: with [`B_PACKED`], a packed panel (64-byte aligned, `b_rs = 8·NV`); with
    /// [`B_STRIDED`], row-major `rhs` read in place, of which only the first `nr` columns are
    /// read; with [`B_TABLE`], the same but row `t` at `b + rows[t]`. `dst` rows
    /// are `c_rs` apart; only the first `mr` rows and `nr` columns are touched (read too when
    /// `load_c`).
    ///
    /// Never inlined: each instance then gets the whole register file to itself.
    ///
    /// # Safety
    ///
    /// AVX-512F must be available and the three regions above valid (all `MR` rows of `A`).
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const MR: usize, const NV: usize, const ROWS: bool, const B: u8>(
        kc: usize,
        a: *const f64,
        a_rs: usize,
        a_cs: usize,
        b: *const f64,
        b_rs: usize,
        rows: *const usize,
        c: *mut f64,
        c_rs: usize,
        mr: usize,
        nr: usize,
        load_c: bool,
    ) {
        // Everything indexed by row or vector is unrolled, so that the accumulators are only
        // ever indexed by constants and stay in registers. Wrapping pointer arithmetic: it
        // cannot overflow (the addresses are valid) and keeps debug builds free of checks.
        let a_step = a_cs;
        let b_step = if B == B_PACKED { 8 * NV } else { b_rs };
        let mut bmask = [0 as __mmask8; NV];
        unroll!(v < NV => { bmask[v] = lane_mask(nr, v); });
        let mut acc = [[_mm512_setzero_pd(); NV]; MR];
        let mut ap = a;
        let mut bp = b;
        let mut rp = rows;
        for _ in 0..kc {
            let row = if B == B_TABLE {
                // SAFETY: the table has an entry for each of the `kc` rows of the block.
                b.wrapping_add(unsafe { rp.read() })
            } else {
                bp
            };
            let mut bv = [_mm512_setzero_pd(); NV];
            unroll!(v < NV => {
                bv[v] = if B == B_PACKED {
                    // SAFETY: inside the packed panel, 64-byte aligned (rows are 64·NV bytes).
                    unsafe { _mm512_load_pd(row.wrapping_add(8 * v)) }
                } else {
                    // SAFETY: the unmasked lanes are columns `< nr` of the current row of `B`.
                    unsafe { _mm512_maskz_loadu_pd(bmask[v], row.wrapping_add(8 * v)) }
                };
            });
            unroll!(r < MR => {
                let off = if ROWS { r.wrapping_mul(a_rs) } else { r };
                // SAFETY: element (r, t) of the `A` panel.
                let av = _mm512_broadcastsd_pd(unsafe { _mm_load_sd(ap.wrapping_add(off)) });
                unroll!(v < NV => { acc[r][v] = _mm512_fmadd_pd(av, bv[v], acc[r][v]); });
            });
            // The last step leaves these one past their regions, hence `wrapping_add`.
            ap = ap.wrapping_add(a_step);
            bp = bp.wrapping_add(b_step);
            rp = rp.wrapping_add(1);
        }
        // Full tiles store straight from registers, ragged ones through a copy on the stack.
        if mr == MR && nr == 8 * NV {
            unroll!(r < MR => {
                let cr = c.wrapping_add(r.wrapping_mul(c_rs));
                unroll!(v < NV => {
                    let cp = cr.wrapping_add(8 * v);
                    // SAFETY: row `r`, columns `8v ..< 8v + 8` of a full tile.
                    unsafe {
                        let x = if load_c { _mm512_add_pd(acc[r][v], loadu(cp)) } else { acc[r][v] };
                        storeu(cp, x);
                    }
                });
            });
        } else {
            let mut tmp = [[_mm512_setzero_pd(); NV]; MR];
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
    unsafe fn store_ragged<const MR: usize, const NV: usize>(tile: &[[__m512d; NV]; MR], c: *mut f64, c_rs: usize, mr: usize, nr: usize, load_c: bool) {
        for (r, row) in tile.iter().enumerate().take(mr) {
            for (v, &x) in row.iter().enumerate() {
                let mask = lane_mask(nr, v);
                if mask == 0 {
                    break;
                }
                // Masked lanes are neither read nor written (nor can they fault); the pointer
                // itself may lie past `dst`, hence `wrapping_add`.
                let cp = c.wrapping_add(r * c_rs + 8 * v);
                // SAFETY: the unmasked lanes are row `r < mr`, columns `< nr` of the tile.
                unsafe {
                    let x = if load_c { _mm512_add_pd(x, _mm512_maskz_loadu_pd(mask, cp)) } else { x };
                    _mm512_mask_storeu_pd(cp, mask, x);
                }
            }
        }
    }

    /// Pack rows `i0..i0 + mr` (`mr ≤ MR`), columns `k0..k0 + kc` of `lhs` `k`-major into `out`
    /// (`kc · MR` doubles), zero-padding rows `mr..MR`.
    ///
    /// # Safety
    ///
    /// The block must lie inside `lhs` and `out` must hold `kc · MR` doubles.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_a<const MR: usize>(p: &Problem, i0: usize, mr: usize, k0: usize, kc: usize, out: *mut f64) {
        // SAFETY: the caller guarantees `out` holds `kc · MR` doubles.
        let out = unsafe { std::slice::from_raw_parts_mut(out, kc * MR) };
        if p.a_rs == 1 && MR <= 8 {
            // One masked vector per column: the lanes past `mr` are neither read nor kept.
            let (load, store) = (mask_of(mr), mask_of(MR));
            for (t, o) in out.chunks_exact_mut(MR).enumerate() {
                // SAFETY: elements (i0 ..< i0 + mr, k0 + t) are consecutive and inside `lhs`;
                // `o` holds the `MR` lanes stored.
                unsafe {
                    let x = _mm512_maskz_loadu_pd(load, p.a.wrapping_add(i0 + (k0 + t) * p.a_cs));
                    _mm512_mask_storeu_pd(o.as_mut_ptr(), store, x);
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

    /// Pack rows `k0..k0 + kc`, columns `j0..j0 + nc` of `rhs` into panels of `8·NV` columns
    /// (`kc` rows each, consecutive), zero-padding the last panel.
    ///
    /// # Safety
    ///
    /// The block must lie inside `rhs`; `out` must be 64-byte aligned and hold
    /// `kc · ceil(nc / NR) · NR` doubles.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_b<const NV: usize>(p: &Problem, k0: usize, kc: usize, j0: usize, nc: usize, out: *mut f64) {
        let nr_full = 8 * NV;
        let mut jp = 0;
        while jp < nc {
            let nr = nr_full.min(nc - jp);
            // SAFETY: panel `jp / NR` of the buffer.
            let panel = unsafe { out.add(jp * kc) };
            let j = j0 + jp;
            if p.b_cs == 1 {
                for t in 0..kc {
                    let row = if p.b_rows.is_null() {
                        (k0 + t) * p.b_rs
                    } else {
                        // SAFETY: the table has an entry for each of the `k` rows.
                        unsafe { p.b_rows.add(k0 + t).read() }
                    };
                    let src = p.b.wrapping_add(row + j);
                    for v in 0..NV {
                        let mask = lane_mask(nr, v);
                        // SAFETY: the unmasked lanes are columns `j + 8v ..< j + nr` of row
                        // `k0 + t`, inside `rhs`; masked lanes are not read. The store is an
                        // aligned full vector of the panel.
                        unsafe {
                            let x = _mm512_maskz_loadu_pd(mask, src.wrapping_add(8 * v));
                            _mm512_store_pd(panel.add(t * nr_full + 8 * v), x);
                        }
                    }
                }
            } else if p.b_rs == 1 {
                // Columns are contiguous in `k`: transpose 8×8 blocks. Column `c` of the block
                // starts at `col0 + c·b_cs`, row `t` of the panel block at `dst0 + t·NR`.
                for v in 0..NV {
                    let cols = nr.saturating_sub(8 * v).min(8);
                    let col0 = p.b.wrapping_add((j + 8 * v).wrapping_mul(p.b_cs).wrapping_add(k0));
                    let dst0 = panel.wrapping_add(8 * v);
                    // Blocks start where column 0 is 64-byte aligned (so is every column when
                    // `b_cs` is a multiple of 8): each load then reads one cache line, used whole.
                    let head = (8 - (col0 as usize / 8) % 8) % 8;
                    let mut t0 = 0;
                    while t0 < kc {
                        let kt = if t0 == 0 && head > 0 { head.min(kc) } else { 8.min(kc - t0) };
                        let src = col0.wrapping_add(t0);
                        let dst = dst0.wrapping_add(t0 * nr_full);
                        // SAFETY: rows `k0 + t0 ..< k0 + t0 + kt` of columns `j + 8v ..< j + 8v
                        // + cols` are inside `rhs`; rows `t0 ..< t0 + kt` of vector `v` of the
                        // panel are inside the buffer and 64-byte aligned.
                        unsafe { transpose_block(src, p.b_cs, cols, kt, dst, nr_full) };
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

    /// Copy the block of `cols ≤ 8` columns of `kt ≤ 8` doubles, column `c` at `src + c·src_cs`,
    /// transposed into the `kt` aligned rows `dst + t·dst_rs`; missing columns become zeros.
    ///
    /// # Safety
    ///
    /// Both regions must be valid; `dst` and `dst_rs · 8` must be multiples of 64 bytes.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    unsafe fn transpose_block(src: *const f64, src_cs: usize, cols: usize, kt: usize, dst: *mut f64, dst_rs: usize) {
        let kmask = mask_of(kt);
        let mut x = [_mm512_setzero_pd(); 8];
        for (c, xc) in x.iter_mut().enumerate().take(cols) {
            // SAFETY: the first `kt` doubles of column `c < cols`; masked lanes are not read.
            *xc = unsafe { _mm512_maskz_loadu_pd(kmask, src.wrapping_add(c * src_cs)) };
        }
        for (t, &y) in transpose8(&x).iter().enumerate().take(kt) {
            // SAFETY: row `t < kt` of the destination, aligned.
            unsafe { _mm512_store_pd(dst.wrapping_add(t * dst_rs), y) };
        }
    }

    /// Transpose an 8×8 block held as 8 rows.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn transpose8(r: &[__m512d; 8]) -> [__m512d; 8] {
        // Pairs of rows interleaved: t[2g] holds (r[2g][2l], r[2g+1][2l]) in 128-bit lane l,
        // t[2g+1] the odd columns (2l + 1).
        let mut t = [_mm512_setzero_pd(); 8];
        for g in 0..4 {
            t[2 * g] = _mm512_unpacklo_pd(r[2 * g], r[2 * g + 1]);
            t[2 * g + 1] = _mm512_unpackhi_pd(r[2 * g], r[2 * g + 1]);
        }
        // Lanes 0 and 2, or 1 and 3, of the same parity from two row pairs: for rows
        // 4h ..< 4h + 4, u[4h + e] holds columns e (lanes 0, 2) and 4 + e (lanes 1, 3),
        // u[4h + 2 + e] columns 2 + e and 6 + e.
        let mut u = [_mm512_setzero_pd(); 8];
        for h in 0..2 {
            for e in 0..2 {
                let (a, b) = (t[4 * h + e], t[4 * h + 2 + e]);
                u[4 * h + e] = _mm512_shuffle_f64x2::<0x88>(a, b);
                u[4 * h + 2 + e] = _mm512_shuffle_f64x2::<0xDD>(a, b);
            }
        }
        // Column i (< 4) is lanes 0 and 2 of u[i] (rows 0..4) then of u[4 + i] (rows 4..8);
        // column 4 + i lanes 1 and 3.
        let mut y = [_mm512_setzero_pd(); 8];
        for i in 0..4 {
            y[i] = _mm512_shuffle_f64x2::<0x88>(u[i], u[4 + i]);
            y[4 + i] = _mm512_shuffle_f64x2::<0xDD>(u[i], u[4 + i]);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn fill(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn naive(
        m: usize,
        n: usize,
        k: usize,
        dst: &mut [f64],
        dst_rs: usize,
        acc: bool,
        lhs: &[f64],
        (ars, acs): (usize, usize),
        rhs: &[f64],
        (brs, bcs): (usize, usize),
    ) {
        for i in 0..m {
            for j in 0..n {
                let mut s = if acc { dst[i * dst_rs + j] } else { 0.0 };
                for t in 0..k {
                    s += lhs[i * ars + t * acs] * rhs[t * brs + j * bcs];
                }
                dst[i * dst_rs + j] = s;
            }
        }
    }

    /// `dgemm` with a thread count.
    type Gemm = fn(usize, usize, usize, &mut [f64], usize, bool, &[f64], (usize, usize), &[f64], (usize, usize), usize);

    /// The `gemm` crate, the path taken without AVX-512F.
    #[allow(clippy::too_many_arguments)]
    fn fallback(
        m: usize,
        n: usize,
        k: usize,
        dst: &mut [f64],
        dst_rs: usize,
        acc: bool,
        lhs: &[f64],
        ls: (usize, usize),
        rhs: &[f64],
        rs: (usize, usize),
        threads: usize,
    ) {
        crate::kernels::gemm_crate(m, n, k, dst, dst_rs, acc, lhs, ls, rhs, rs, threads)
    }

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
    fn check(f: Gemm, m: usize, n: usize, k: usize, la: usize, lb: usize, acc: bool, pad: usize, threads: usize, seed: u64) {
        let (sa, na) = layout(la, m, k);
        let (sb, nb) = layout(lb, k, n);
        let dst_rs = n + pad;
        let lhs = fill(na, seed);
        let rhs = fill(nb, seed + 1);
        let init = fill(m * dst_rs, seed + 2);
        let mut want = init.clone();
        let mut got = init.clone();
        naive(m, n, k, &mut want, dst_rs, acc, &lhs, sa, &rhs, sb);
        f(m, n, k, &mut got, dst_rs, acc, &lhs, sa, &rhs, sb, threads);
        let tol = 1e-14 * (k as f64 + 4.0);
        for i in 0..m {
            for j in 0..dst_rs {
                let (w, g) = (want[i * dst_rs + j], got[i * dst_rs + j]);
                if j >= n {
                    // Padding between rows is never touched.
                    assert_eq!(g.to_bits(), init[i * dst_rs + j].to_bits(), "padding at ({i},{j}) changed");
                } else {
                    assert!(
                        (w - g).abs() <= tol,
                        "m={m} n={n} k={k} lhs={la} rhs={lb} acc={acc} pad={pad} threads={threads}: ({i},{j}) want {w} got {g}"
                    );
                }
            }
        }
    }

    const SIZES: [usize; 14] = [1, 3, 7, 8, 9, 15, 16, 17, 23, 24, 25, 49, 100, 129];

    fn sweep(f: Gemm, threads: usize) {
        let mut seed = 1;
        // Every size in each dimension with the others fixed, all layouts and modes.
        for &s in &SIZES {
            for (m, n, k) in [(s, 37, 19), (13, s, 23), (11, 29, s), (s, s, s)] {
                for la in 0..4 {
                    for lb in 0..4 {
                        for acc in [false, true] {
                            let pad = if (la + lb) % 2 == 0 { 0 } else { 5 };
                            check(f, m, n, k, la, lb, acc, pad, threads, seed);
                            seed += 3;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn dgemm_matches_naive_on_ragged_shapes() {
        sweep(dgemm, 1);
    }

    #[test]
    fn dgemm_fallback_matches_naive_on_ragged_shapes() {
        sweep(fallback, 1);
    }

    /// Blocks of `k` (> 256) and of `n` (past the L2 budget), each tile variant, one and two
    /// threads (slices of `n` and of `m`).
    #[test]
    fn dgemm_matches_naive_across_blocks_variants_and_threads() {
        let mut seed = 1000;
        for (m, n, k) in [
            (8, 24 * 3, 900),    // 8×24 tiles, four blocks of k
            (24, 48, 385),       // 12×16 tiles
            (6, 64, 50),         // 6×32 tiles
            (16, 1024 + 5, 577), // three blocks of k, several blocks of n
            (64, 256, 288),      // forward, stage 2
            (288, 256, 32),      // input gradient, stage 2
            (32, 288, 256),      // weight gradient, stage 2
            (40, 24, 700),       // narrow n: slices of m
            (5, 7, 1300),
        ] {
            for (la, lb) in [(0, 0), (1, 0), (0, 1), (3, 3)] {
                for acc in [false, true] {
                    for threads in [1, 2, 3] {
                        check(dgemm, m, n, k, la, lb, acc, 2, threads, seed);
                        seed += 3;
                    }
                }
            }
        }
    }

    /// Every tile shape, with and without the transposed product, `rhs` read in place or
    /// packed, `lhs` read in place or packed.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn dgemm_matches_naive_in_every_mode() {
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
                                        check(dgemm, m, n, k, la, lb, acc, (la + 2 * lb) % 3, 1, seed);
                                        seed += 3;
                                    }
                                }
                            }
                        }
                        // Several blocks of `k` and `n`; rows 8 KiB apart (cache-set crowding).
                        for (m, n, k, la, lb) in [(5, 7, 1300, 0, 0), (16, 1029, 577, 0, 1), (16, 144, 1024, 0, 1), (16, 1024, 144, 0, 0)] {
                            check(dgemm, m, n, k, la, lb, true, 1, 1, seed);
                            seed += 3;
                        }
                    }
                }
            }
        }
        FORCE.with(|f| f.set(Force::default()));
    }

    /// The NB201 convolution shapes at batch 1, through the exact strides and thread counts
    /// the kernels use (conv.rs, and the fused cell's per-edge products in cell.rs).
    #[test]
    fn dgemm_matches_naive_on_conv_shapes() {
        let mut seed = 5000;
        for threads in [1, 2] {
            for (cout, cin, p) in [(16, 3, 1024), (16, 16, 1024), (32, 32, 256), (64, 64, 64), (32, 16, 256), (3, 16, 1024)] {
                for k in [cin * 9, cin] {
                    // forward: w (cout×k) · col (k×p)
                    check(dgemm, cout, p, k, 0, 0, false, 0, threads, seed);
                    // input gradient: wᵀ (k×cout) · gy (cout×p)
                    check(dgemm, k, p, cout, 1, 0, false, 0, threads, seed + 1);
                    // input gradient of a "same" convolution: flipped w (cin×cout·9) · col(gy)
                    check(dgemm, cin, p, cout * 9, 0, 0, false, 0, threads, seed + 2);
                    // weight gradient: gy (cout×p) · colᵀ (p×k), accumulated
                    check(dgemm, cout, k, p, 0, 1, true, 0, threads, seed + 3);
                    seed += 4;
                }
            }
        }
    }

    /// Without `acc`, `dst` is written, never read: NaN already there does not leak through.
    #[test]
    fn dgemm_overwrites_dst_without_acc() {
        for (m, n, k, la, lb) in [(16, 1024, 144, 0, 0), (13, 50, 40, 1, 0), (16, 144, 1024, 0, 1), (7, 9, 700, 3, 3)] {
            let (sa, na) = layout(la, m, k);
            let (sb, nb) = layout(lb, k, n);
            let (lhs, rhs) = (fill(na, 1), fill(nb, 2));
            let mut want = vec![0.0f64; m * n];
            naive(m, n, k, &mut want, n, false, &lhs, sa, &rhs, sb);
            for threads in [1, 2] {
                for f in [dgemm as Gemm, fallback] {
                    let mut got = vec![f64::NAN; m * n];
                    f(m, n, k, &mut got, n, false, &lhs, sa, &rhs, sb, threads);
                    let tol = 1e-14 * (k as f64 + 4.0);
                    assert!(want.iter().zip(&got).all(|(w, g)| (w - g).abs() <= tol), "m={m} n={n} k={k}");
                }
            }
        }
    }

    #[test]
    fn dgemm_handles_empty_dimensions() {
        let mut dst = vec![7.0f64; 6];
        dgemm(2, 3, 0, &mut dst, 3, true, &[], (0, 1), &[], (3, 1), 2);
        assert_eq!(dst, [7.0; 6]);
        dgemm(2, 3, 0, &mut dst, 3, false, &[], (0, 1), &[], (3, 1), 2);
        assert_eq!(dst, [0.0; 6]);
        dgemm(0, 3, 4, &mut [], 3, false, &[], (4, 1), &[0.0; 12], (3, 1), 2);
        dgemm(2, 0, 4, &mut [], 0, false, &[0.0; 8], (4, 1), &[], (0, 1), 2);
    }

    #[test]
    #[should_panic(expected = "rhs has")]
    fn dgemm_rejects_short_slices() {
        let mut dst = vec![0.0f64; 4];
        dgemm(2, 2, 3, &mut dst, 2, false, &[0.0; 6], (3, 1), &[0.0; 5], (2, 1), 1);
    }

    /// Row `t` of the table at `rows[t]`: windows of a padded plane, overlapping, out of order.
    fn window_rows(k: usize, n: usize, seed: u64) -> (Vec<usize>, usize) {
        let span = 3 * n + 40;
        let rows = fill(k, seed).iter().map(|v| ((v + 1.0) * 0.5 * (span - n) as f64) as usize).collect();
        (rows, span)
    }

    #[test]
    fn dgemm_rows_matches_naive_on_gathered_rows() {
        let mut seed = 7000;
        let variants: &[Option<usize>] = if cfg!(target_arch = "x86_64") {
            &[None, Some(0), Some(1), Some(2), Some(3), Some(4)]
        } else {
            &[None]
        };
        for &variant in variants {
            for direct_b in [None, Some(false)] {
                FORCE.with(|f| {
                    f.set(Force {
                        variant,
                        direct_b,
                        ..Force::default()
                    })
                });
                for (m, n, k) in [(16, 1086, 144), (8, 78, 576), (13, 37, 19), (1, 9, 300), (70, 50, 30), (16, 17, 1)] {
                    for (la, acc, threads) in [(0, false, 1), (3, true, 2), (1, false, 2)] {
                        let (sa, na) = layout(la, m, k);
                        let lhs = fill(na, seed);
                        let (rows, span) = window_rows(k, n, seed + 1);
                        let rhs = fill(span, seed + 2);
                        let dst_rs = n + 3;
                        let init = fill(m * dst_rs, seed + 3);
                        let mut gathered = Vec::with_capacity(k * n);
                        for &r in &rows {
                            gathered.extend_from_slice(&rhs[r..r + n]);
                        }
                        let mut want = init.clone();
                        naive(m, n, k, &mut want, dst_rs, acc, &lhs, sa, &gathered, (n, 1));
                        let mut got = init.clone();
                        dgemm_rows(m, n, k, &mut got, dst_rs, acc, &lhs, sa, &rhs, &rows, threads);
                        let tol = 1e-14 * (k as f64 + 4.0);
                        for i in 0..m {
                            for j in 0..dst_rs {
                                let (w, g) = (want[i * dst_rs + j], got[i * dst_rs + j]);
                                if j >= n {
                                    assert_eq!(g.to_bits(), w.to_bits(), "padding at ({i},{j}) changed");
                                } else {
                                    assert!((w - g).abs() <= tol, "m={m} n={n} k={k} variant={variant:?} ({i},{j}): want {w} got {g}");
                                }
                            }
                        }
                        seed += 5;
                    }
                }
            }
        }
        FORCE.with(|f| f.set(Force::default()));
    }

    #[test]
    fn transpose_matches_naive() {
        for (rows, cols) in [(1, 1), (3, 5), (8, 8), (9, 17), (16, 1024), (576, 64), (64, 7)] {
            for add in [false, true] {
                let (src_rs, dst_rs) = (cols + 2, rows + 1);
                let src = fill(rows * src_rs, 1);
                let init = fill(cols * dst_rs, 2);
                let mut got = init.clone();
                transpose(rows, cols, &src, src_rs, &mut got, dst_rs, add);
                for j in 0..cols {
                    for i in 0..dst_rs {
                        let want = if i >= rows {
                            init[j * dst_rs + i]
                        } else if add {
                            init[j * dst_rs + i] + src[i * src_rs + j]
                        } else {
                            src[i * src_rs + j]
                        };
                        assert_eq!(got[j * dst_rs + i].to_bits(), want.to_bits(), "{rows}x{cols} add={add} at ({j},{i})");
                    }
                }
            }
        }
    }

    #[test]
    fn split_cuts_wide_products_along_n_and_narrow_ones_along_m() {
        // Batch-1 forward of a 3×3 convolution at 16 channels: four slices of the 1024 columns.
        assert_eq!(
            split(16, 1024, 144, 2),
            Split {
                parts: 4,
                along_n: true,
                chunk: 256
            }
        );
        // Weight gradient at 16 channels: 144 columns in whole vectors, the last slice shorter.
        assert_eq!(
            split(16, 144, 1024, 2),
            Split {
                parts: 4,
                along_n: true,
                chunk: 40
            }
        );
        // Too narrow for two vectors per slice: rows.
        assert_eq!(
            split(64, 16, 1024, 2),
            Split {
                parts: 4,
                along_n: false,
                chunk: 16
            }
        );
        // Small products and one thread stay whole.
        assert_eq!(split(16, 16, 16, 2).parts, 1);
        assert_eq!(split(16, 64, 64, 2).parts, 1);
        assert_eq!(split(16, 1024, 144, 1).parts, 1);
    }

    /// Best GFLOP/s of `f` on one shape over a few timed rounds.
    #[allow(clippy::too_many_arguments)]
    fn gflops(f: Gemm, m: usize, n: usize, k: usize, la: usize, lb: usize, acc: bool, threads: usize) -> f64 {
        let (sa, na) = layout(la, m, k);
        let (sb, nb) = layout(lb, k, n);
        let lhs = fill(na, 1);
        let rhs = fill(nb, 2);
        let mut dst = vec![0.0f64; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        f(m, n, k, &mut dst, n, acc, &lhs, sa, &rhs, sb, threads);
        let (t, mut calls) = (std::time::Instant::now(), 0usize);
        while t.elapsed().as_secs_f64() < 0.02 {
            f(m, n, k, &mut dst, n, acc, &lhs, sa, &rhs, sb, threads);
            calls += 1;
        }
        let reps = ((0.1 / t.elapsed().as_secs_f64() * calls as f64) as usize).max(1);
        let mut best = 0.0f64;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                f(m, n, k, &mut dst, n, acc, &lhs, sa, &rhs, sb, threads);
            }
            best = best.max(flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        std::hint::black_box(&dst);
        best
    }

    /// GFLOP/s of ours and of the `gemm` crate on the batch-1 NB201 shapes:
    /// `cargo test -p autoagent-evaluator --lib bench_dgemm_shapes -- --ignored --nocapture`
    /// (`DGEMM_THREADS` sets the thread count, 2 by default; `DGEMM_VARIANT` forces a tile on the
    /// calling thread, so only with `DGEMM_THREADS=1`).
    #[test]
    #[ignore]
    fn bench_dgemm_shapes() {
        let threads = std::env::var("DGEMM_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
        let variant = std::env::var("DGEMM_VARIANT").ok().and_then(|v| v.parse().ok());
        let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
        let only = std::env::var("DGEMM_BENCH").unwrap_or_default();
        let mut shapes = vec![];
        for (c, p) in [(16, 1024), (32, 256), (64, 64)] {
            let k = c * 9;
            shapes.push((format!("fwd  3x3 c{c}"), c, p, k, 0, 0, false));
            shapes.push((format!("data 3x3 c{c}"), c, p, k, 0, 0, false));
            shapes.push((format!("filt 3x3 c{c}"), c, k, p, 0, 1, true));
            shapes.push((format!("fwd  1x1 c{c}"), c, p, c, 0, 0, false));
            shapes.push((format!("data 1x1 c{c}"), c, p, c, 1, 0, false));
            shapes.push((format!("filt 1x1 c{c}"), c, c, p, 0, 1, true));
        }
        shapes.push(("fwd  stem".into(), 16, 1024, 27, 0, 0, false));
        shapes.push(("data red c32".into(), 144, 256, 32, 1, 0, false));
        shapes.push(("filt red c32".into(), 32, 144, 256, 0, 1, true));
        shapes.push(("square 512".into(), 512, 512, 512, 0, 0, false));
        println!("{:<14} {:>5} {:>5} {:>5} {:>8} {:>8} {:>6}", "shape", "m", "n", "k", "ours", "gemm", "ratio");
        for (label, m, n, k, la, lb, acc) in shapes.into_iter().filter(|s| s.0.contains(&only)) {
            FORCE.with(|f| f.set(Force { variant, ..Force::default() }));
            let ours = gflops(dgemm, m, n, k, la, lb, acc, threads);
            let theirs = gflops(fallback, m, n, k, la, lb, acc, threads);
            println!("{label:<14} {m:>5} {n:>5} {k:>5} {ours:>8.1} {theirs:>8.1} {:>6.2}", ours / theirs);
        }
    }

    /// Single-thread µs of `dgemm_rows` on the implicit im2col of a padded `c`-channel plane
    /// versus `dgemm` on the same rows gathered into a matrix (gather time excluded).
    #[test]
    #[ignore]
    fn bench_dgemm_rows() {
        for (c, hw) in [(16, 32), (32, 16), (64, 8)] {
            let w2 = hw + 2;
            let plane2 = w2 * w2;
            let np = (hw - 1) * w2 + hw;
            let xpad: Vec<f64> = (0..c * plane2).map(|i| (i % 17) as f64 * 0.1).collect();
            let rows: Vec<usize> = (0..c).flat_map(|ch| (0..9).map(move |t| ch * plane2 + (t / 3) * w2 + t % 3)).collect();
            let k = c * 9;
            let w: Vec<f64> = (0..c * k).map(|i| (i % 13) as f64 * 0.01).collect();
            let mut b = vec![0.0; k * np];
            for (row, &r) in b.chunks_exact_mut(np).zip(&rows) {
                row.copy_from_slice(&xpad[r..r + np]);
            }
            let mut dst = vec![0.0; c * np];
            let time = |f: &mut dyn FnMut()| {
                f();
                let mut t: Vec<f64> = (0..300)
                    .map(|_| {
                        let s = std::time::Instant::now();
                        f();
                        s.elapsed().as_secs_f64() * 1e6
                    })
                    .collect();
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            };
            let a = time(&mut || dgemm_rows(c, np, k, &mut dst, np, false, &w, (k, 1), &xpad, &rows, 1));
            let b2 = time(&mut || dgemm(c, np, k, &mut dst, np, false, &w, (k, 1), &b, (np, 1), 1));
            let flops = 2.0 * (c * np * k) as f64;
            println!(
                "c{c:<3} rows {a:6.1} µs {:5.1} GF   matrix {b2:6.1} µs {:5.1} GF",
                flops / a / 1e3,
                flops / b2 / 1e3
            );
        }
    }
}
