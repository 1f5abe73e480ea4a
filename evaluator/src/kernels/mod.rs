//! CPU kernels for the operations of the NB201 networks, as candle custom ops with gradients.
//!
//! Why our own: candle's CPU `conv_transpose2d`, which candle's autograd uses for the input
//! gradient of every convolution, is a plain loop (forward+backward cost about 5× a forward), and
//! its `avg_pool2d` has no padding, no `count_include_pad=False` and no backward for
//! kernel ≠ stride, which NB201's 3×3 average pool needs.
//!
//! Convolution is im2col + GEMM (our AVX-512 [`crate::sgemm`] for f32 and [`crate::dgemm`] for
//! f64 where the CPU has it, the `gemm` crate otherwise), parallel over the samples of the batch;
//! the im2col of stride-1 "same" convolutions uses AVX-512 masked loads in f32, and in f32 on
//! AVX-512 those convolutions skip im2col altogether as implicit GEMMs (module `implicit`: forward,
//! input gradient and, inside the fused cell, weight gradient). A batch smaller
//! than the thread pool (synflow's batch of one) spreads each convolution over the pool instead,
//! and runs stride-1 "same" ones without im2col (`conv::shifted`). The three convolution maps are closed under differentiation —
//! forward `y = conv(x, w)`, input gradient `gx = conv_data(gy, w)` and weight gradient
//! `gw = conv_filter(x, gy)` are each linear in both arguments and the adjoint of one is another
//! — so every op's backward is written with the other two, and gradients of gradients (GraSP's
//! Hessian-vector product) work. Average pooling and its adjoint form the same kind of pair.
//!
//! Both f32 and f64 are supported (synflow runs in f64). On other devices the public functions
//! fall back to candle's own operations.

/// Run one body on the contiguous slices of CPU storages of one float dtype (f32 or f64), giving
/// the matching `CpuStorage`: `dispatch!(name; (s1, l1), (s2, l2) => |a, b| body)`, where the body
/// is generic code returning `Result<Vec<T>>`.
macro_rules! dispatch {
    ($name:expr; $(($s:expr, $l:expr)),+ => |$($a:ident),+| $body:expr) => {{
        let name = $name;
        match ($($s,)+) {
            ($(dispatch!(@pat F32 $s),)+) => {
                $(let $a: &[f32] = $crate::kernels::slice($s, $l, name)?;)+
                candle_core::CpuStorage::F32($body?)
            }
            ($(dispatch!(@pat F64 $s),)+) => {
                $(let $a: &[f64] = $crate::kernels::slice($s, $l, name)?;)+
                candle_core::CpuStorage::F64($body?)
            }
            _ => candle_core::bail!("{name}: only f32 and f64 tensors of one dtype are supported"),
        }
    }};
    (@pat $v:ident $s:expr) => { candle_core::CpuStorage::$v(_) };
}

mod bn;
mod cell;
mod conv;
mod fused;
mod im2col_simd;
mod implicit;
mod pool;
mod relu;
#[cfg(test)]
mod tests;

use candle_core::{CpuStorage, DType, Layout, Result, WithDType};

pub use bn::{batch_norm, batch_norm_composite};
pub use cell::{nb201_cell, nb201_cell_traced, CellEdge, CellPlan, CellTrace, CellTraced, ChannelStats, ConvTap, DotsSlot, GradSlot};
pub use conv::conv2d;
pub use fused::{relu_conv_bn, relu_conv_bn_tapped, ConvBnRun};
pub use pool::avg_pool2d;
pub use relu::relu;

/// Elements our kernels run on.
pub(crate) trait Float: WithDType + Default {
    /// `dst (m×n) = lhs (m×k) · rhs (k×n)` (+ `dst` when `acc`), operands given by
    /// (row, column) strides; `threads` > 1 lets the product use that many rayon threads.
    /// f32 runs our AVX-512 kernel ([`crate::sgemm`], single-threaded: callers parallelise
    /// over the batch) and f64 our [`crate::dgemm`] where the CPU has AVX-512F; everything
    /// else the `gemm` crate.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        m: usize,
        n: usize,
        k: usize,
        dst: &mut [Self],
        dst_rs: usize,
        acc: bool,
        lhs: &[Self],
        lhs_strides: (usize, usize),
        rhs: &[Self],
        rhs_strides: (usize, usize),
        threads: usize,
    ) {
        gemm_crate(m, n, k, dst, dst_rs, acc, lhs, lhs_strides, rhs, rhs_strides, threads)
    }

    /// [`Float::matmul`] with `rhs` given by rows: row `t` is `rhs[rhs_rows[t]..][..n]` (the
    /// windows of an implicit im2col, see `conv::shifted`). f64 reads them in place
    /// ([`crate::dgemm::dgemm_rows`]); the default gathers them into a matrix first.
    #[allow(clippy::too_many_arguments)]
    fn matmul_rows(
        m: usize,
        n: usize,
        k: usize,
        dst: &mut [Self],
        dst_rs: usize,
        acc: bool,
        lhs: &[Self],
        lhs_strides: (usize, usize),
        rhs: &[Self],
        rhs_rows: &[usize],
        threads: usize,
    ) {
        let mut b = alloc_uninit::<Self>(k * n);
        for (row, &r) in b.chunks_exact_mut(n.max(1)).zip(&rhs_rows[..k]) {
            row.copy_from_slice(&rhs[r..r + n]);
        }
        Self::matmul(m, n, k, dst, dst_rs, acc, lhs, lhs_strides, &b, (n, 1), threads)
    }

    /// `dst[j·dst_rs + i] (+)= src[i·src_rs + j]` for `i < rows`, `j < cols` (`+=` when
    /// `add`): a strided transpose. f64 runs 8×8 register blocks ([`crate::dgemm::transpose`]).
    fn transpose(rows: usize, cols: usize, src: &[Self], src_rs: usize, dst: &mut [Self], dst_rs: usize, add: bool) {
        for i in 0..rows {
            for (j, &v) in src[i * src_rs..i * src_rs + cols].iter().enumerate() {
                let d = &mut dst[j * dst_rs + i];
                *d = if add { *d + v } else { v };
            }
        }
    }
}

impl Float for f32 {
    fn matmul(
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
        _threads: usize,
    ) {
        // One thread of our AVX-512 kernel beats the gemm crate on two (see sgemm's benchmark).
        crate::sgemm::sgemm(m, n, k, dst, dst_rs, acc, lhs, lhs_strides, rhs, rhs_strides)
    }
}

impl Float for f64 {
    fn matmul(
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
        crate::dgemm::dgemm(m, n, k, dst, dst_rs, acc, lhs, lhs_strides, rhs, rhs_strides, threads)
    }

    fn matmul_rows(
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
        crate::dgemm::dgemm_rows(m, n, k, dst, dst_rs, acc, lhs, lhs_strides, rhs, rhs_rows, threads)
    }

    fn transpose(rows: usize, cols: usize, src: &[f64], src_rs: usize, dst: &mut [f64], dst_rs: usize, add: bool) {
        crate::dgemm::transpose(rows, cols, src, src_rs, dst, dst_rs, add)
    }
}

/// [`Float::matmul`] through the `gemm` crate (any thread count).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_crate<T: Float>(
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

/// Run `f(i)` once for every `i < parts`, the calling thread and helpers on the rayon pool
/// taking parts in order as they come free (see [`parts`]).
pub(crate) fn par_parts(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    parts::run(parts, f)
}

/// The work sharing of the batch-1 kernels (synflow's batch of one, whose operations last tens
/// of microseconds and come one after another on the calling thread).
///
/// A plain fork-join (`rayon::join`, a scope) makes the caller wait for the pool thread that
/// takes the other half; waking a sleeping pool thread costs a system call and, on a virtual
/// machine, tens of microseconds, and on a shared machine the thread may not run for much
/// longer. Here the caller starts on the parts at once and only ever waits for parts that a
/// helper has already begun: a helper that comes late finds nothing left and leaves.
///
/// Helpers linger: after a call, a helper spins for up to [`LINGER`] waiting for the next one
/// (published in [`OPEN`]), so that consecutive operations find it awake instead of waking it.
/// A call spawns a new helper only when none is waiting.
///
/// The result does not depend on who runs which part: each part is computed the same way.
mod parts {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// How long a helper waits for the next call before it goes back to the pool (synflow's
    /// calls come about 150 µs apart, start to start, on the benchmark's machine).
    const LINGER: Duration = Duration::from_micros(500);

    /// One call of [`run`] as helpers see it.
    struct Call {
        id: usize,
        parts: usize,
        /// The next part to take (`usize::MAX / 2` once the caller has closed the call).
        next: AtomicUsize,
        /// Helpers that have joined the call and not left it.
        active: AtomicUsize,
        /// The caller's `f`; only called after joining and taking a part (see `run`).
        f: *const (dyn Fn(usize) + Sync),
    }

    // SAFETY: `f` points to a `Sync` closure, called only under the protocol of `run`; the rest
    // is atomics and plain numbers.
    unsafe impl Send for Call {}
    // SAFETY: as above.
    unsafe impl Sync for Call {}

    impl Call {
        /// Join the call, run parts until none is left, leave.
        fn help(&self) {
            self.active.fetch_add(1, SeqCst);
            loop {
                let i = self.next.fetch_add(1, SeqCst);
                if i >= self.parts {
                    break;
                }
                // SAFETY: the caller's `f` outlives the call: the caller closes the call and
                // then waits until no helper is active before `run` returns. This helper joined
                // (`active`) before taking part `i < parts`, so the call was not closed yet when
                // it joined (the close makes `next` at least `usize::MAX / 2`, and all of this
                // is sequentially consistent), and the caller is waiting for it now.
                unsafe { (*self.f)(i) };
            }
            self.active.fetch_sub(1, SeqCst);
        }
    }

    /// The open call, for lingering helpers to join.
    static OPEN: Mutex<Option<Arc<Call>>> = Mutex::new(None);
    /// The id of the open call (0: none), polled by lingering helpers.
    static OPEN_ID: AtomicUsize = AtomicUsize::new(0);
    /// Numbers the calls.
    static CALLS: AtomicUsize = AtomicUsize::new(1);
    /// Helpers lingering.
    static WAITING: AtomicUsize = AtomicUsize::new(0);

    /// Spin (politely: with a yield every so often) until `done`.
    fn spin_until(mut done: impl FnMut() -> bool) {
        let mut spins = 0u32;
        while !done() {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// A helper: the call it was spawned for, then each call opened while it lingers.
    fn helper(first: Arc<Call>) {
        let mut call = first;
        loop {
            call.help();
            let seen = call.id;
            WAITING.fetch_add(1, SeqCst);
            let start = Instant::now();
            let mut next = None;
            spin_until(|| {
                let id = OPEN_ID.load(SeqCst);
                if id != 0 && id != seen {
                    next = OPEN.lock().unwrap_or_else(|e| e.into_inner()).clone().filter(|c| c.id == id);
                    if next.is_some() {
                        return true;
                    }
                }
                // Other work queued on the pool (candle's own parallel loops) runs meanwhile.
                while rayon::yield_now() == Some(rayon::Yield::Executed) {}
                start.elapsed() >= LINGER
            });
            WAITING.fetch_sub(1, SeqCst);
            match next {
                Some(c) => call = c,
                None => return,
            }
        }
    }

    /// Closes the call when the caller leaves [`run`], normally or by unwinding: no part is
    /// taken any more, the caller waits until no helper is inside `f`, and the call is
    /// withdrawn from [`OPEN`].
    struct Close<'a>(&'a Arc<Call>);

    impl Drop for Close<'_> {
        fn drop(&mut self) {
            let call = self.0;
            call.next.store(usize::MAX / 2, SeqCst);
            spin_until(|| call.active.load(SeqCst) == 0);
            if OPEN_ID.compare_exchange(call.id, 0, SeqCst, SeqCst).is_ok() {
                let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
                if open.as_ref().is_some_and(|c| c.id == call.id) {
                    *open = None;
                }
            }
        }
    }

    pub(super) fn run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
        if parts <= 1 || rayon::current_num_threads() <= 1 {
            (0..parts).for_each(f);
            return;
        }
        // SAFETY: erases the lifetime of `f` for helpers, which call it only under the protocol
        // described in `Call::help`: `Close` keeps this frame (and the borrow) alive until no
        // helper can call it any more.
        let f: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(f) };
        let call = Arc::new(Call {
            id: CALLS.fetch_add(1, SeqCst),
            parts,
            next: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            f,
        });
        let _close = Close(&call);
        *OPEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&call));
        OPEN_ID.store(call.id, SeqCst);
        if WAITING.load(SeqCst) == 0 {
            let first = Arc::clone(&call);
            rayon::spawn(move || helper(first));
        }
        loop {
            let i = call.next.fetch_add(1, SeqCst);
            if i >= parts {
                break;
            }
            // SAFETY: `f` is the caller's own closure, alive for this whole function.
            unsafe { (*call.f)(i) };
        }
    }

    #[cfg(test)]
    mod tests {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

        /// Every part runs exactly once, whoever runs it, call after call and from several
        /// callers at once.
        #[test]
        fn every_part_runs_once() {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
            pool.install(|| {
                rayon::scope(|s| {
                    for caller in 0..3 {
                        s.spawn(move |_| {
                            for round in 0..200 {
                                let parts = 1 + (round + caller) % 9;
                                let counts: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                                super::run(parts, &|i| {
                                    counts[i].fetch_add(1, SeqCst);
                                    std::hint::black_box((0..200).sum::<usize>());
                                });
                                assert!(counts.iter().all(|c| c.load(SeqCst) == 1), "round {round}");
                            }
                        });
                    }
                });
            });
        }
    }
}

/// A buffer of `len` elements whose contents are unspecified: for outputs that the caller
/// overwrites completely before reading, so that no pass is spent zeroing them (a memset of
/// every activation-sized output cost about 10 % of a training step).
#[allow(clippy::uninit_vec)]
pub(crate) fn alloc_uninit<T: Float>(len: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: `Float` is implemented only for f32 and f64, plain floats for which every bit
    // pattern is a value and which have no drop glue; every caller writes each element before
    // reading it (the same contract as candle's own `alloc_uninit`).
    unsafe { v.set_len(len) };
    v
}

/// `x` seen as f32, when `T` is f32.
pub(crate) fn f32s<T: Float>(x: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (checked through its dtype), so the cast is the identity.
    (T::DTYPE == DType::F32).then(|| unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()) })
}

/// `x` seen as mutable f32, when `T` is f32.
pub(crate) fn f32s_mut<T: Float>(x: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: T is f32 (checked through its dtype), so the cast is the identity; the borrow is
    // passed on.
    (T::DTYPE == DType::F32).then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<f32>(), x.len()) })
}

pub(crate) fn slice<'a, T: Float>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [T]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: expected a contiguous tensor")
    };
    Ok(&T::cpu_storage_as_slice(s)?[a..b])
}

/// Run `f` on a thread of rayon's global pool and wait for it (directly when already on one).
///
/// Our kernels' parallel loops started from outside the pool are injected into it one by one,
/// each waking the pool's threads and putting the caller to sleep; started from inside, they
/// are joins that the other threads steal, with the calling thread working too. For a whole
/// forward and backward pass of an NB201 network on 2 threads that is about 6 % faster. Run
/// training steps, proxy computations and benchmarks through it.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::join(f, || ()).0
    }
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
