//! `unroll!`, the loop writer of the AVX-512 kernels.

/// `unroll!(i < N => { body })` runs `body` for `i = 0, 1, …, N - 1` (`N` a constant of at most
/// 24), written out, so that arrays indexed by `i` can live in registers: LLVM does not fully
/// unroll every such loop by itself, and one variable index puts the whole array in memory.
#[cfg(target_arch = "x86_64")]
macro_rules! unroll {
    ($i:ident < $n:expr => $body:block) => {
        unroll!(@each $i, $n, $body, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23)
    };
    (@each $i:ident, $n:expr, $body:block, $($k:literal)*) => {{
        const { assert!($n <= 24) };
        $(
            if $k < $n {
                #[allow(clippy::identity_op, clippy::erasing_op)]
                let $i: usize = $k;
                $body
            }
        )*
    }};
}
