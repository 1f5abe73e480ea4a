//! CPU kernels for the operations of the NB201 networks, as candle custom ops with gradients.
//!
//! Why our own: candle's CPU `conv_transpose2d`, which candle's autograd uses for the input
//! gradient of every convolution, is a plain loop (forward+backward cost about 5× a forward), and
//! its `avg_pool2d` has no padding, no `count_include_pad=False` and no backward for
//! kernel ≠ stride, which NB201's 3×3 average pool needs.
//!
//! Convolution is im2col + GEMM (our AVX-512 [`crate::sgemm`] for f32 where the CPU has it, the
//! `gemm` crate otherwise), parallel over the samples of the batch; the im2col of stride-1
//! "same" convolutions uses AVX-512 masked loads in f32. The three convolution maps are closed under differentiation —
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
mod pool;
mod relu;
#[cfg(test)]
mod tests;

use candle_core::{CpuStorage, DType, Layout, Result, WithDType};

pub use bn::{batch_norm, batch_norm_composite};
pub use cell::{nb201_cell, nb201_cell_traced, CellEdge, CellPlan, CellTrace, CellTraced, ChannelStats, GradSlot};
pub use conv::conv2d;
pub use fused::{relu_conv_bn, relu_conv_bn_traced};
pub use pool::avg_pool2d;
pub use relu::relu;

/// Elements our kernels run on.
pub(crate) trait Float: WithDType + Default {
    /// `dst (m×n) = lhs (m×k) · rhs (k×n)` (+ `dst` when `acc`), operands given by
    /// (row, column) strides; `threads` > 1 lets the product use that many rayon threads.
    /// f32 runs our AVX-512 kernel ([`crate::sgemm`], single-threaded: callers parallelise
    /// over the batch) where the CPU has it; everything else the `gemm` crate.
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

impl Float for f64 {}

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

pub(crate) fn slice<'a, T: Float>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [T]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: expected a contiguous tensor")
    };
    Ok(&T::cpu_storage_as_slice(s)?[a..b])
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
