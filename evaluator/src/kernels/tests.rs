//! Tests of the kernels against candle's own operations, naive loops and finite differences.

use super::conv::{conv_data, conv_filter, conv_fwd, ConvGeom};
use super::pool::avg_pool2d_generic;
use super::*;
use candle_core::{DType, Device, Tensor, Var};

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
    time("raw conv_fwd", &mut || {
        conv_fwd(&geom, &xv, &wv);
    });
    time("raw conv_data", &mut || {
        conv_data(&geom, &xv, &wv);
    });
    time("raw conv_filter", &mut || {
        conv_filter(&geom, &xv, &xv);
    });
    {
        use std::sync::Arc;
        let plan = Arc::new(CellPlan::new(
            vec![
                (1, 0, CellEdge::Conv(3)),
                (2, 0, CellEdge::Conv(3)),
                (2, 1, CellEdge::Conv(3)),
                (3, 0, CellEdge::Skip),
                (3, 1, CellEdge::Conv(3)),
                (3, 2, CellEdge::Conv(1)),
            ],
            16,
        ));
        let params = Var::from_tensor(&(randn(&[plan.param_len()], 5, DType::F32) * 0.1).unwrap()).unwrap();
        time("cell 6111 fwd", &mut || {
            nb201_cell(&plan, &x, &params, 1e-5).unwrap();
        });
        time("cell 6111 fwd+bwd", &mut || {
            (nb201_cell(&plan, &x, &params, 1e-5).unwrap().0 * &u)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
        });
    }
    time("conv3x3 fwd", &mut || {
        conv2d(&x, &w3, 1, 1).unwrap();
    });
    time("conv3x3 fwd+bwd", &mut || {
        (conv2d(&x, &w3, 1, 1).unwrap() * &u).unwrap().sum_all().unwrap().backward().unwrap();
    });
    time("conv1x1 fwd", &mut || {
        conv2d(&x, &w1, 1, 0).unwrap();
    });
    time("bn fwd", &mut || {
        batch_norm(&x, &g, &g, 1e-5).unwrap();
    });
    time("bn fwd+bwd", &mut || {
        (batch_norm(&x, &g, &g, 1e-5).unwrap().0 * &u).unwrap().sum_all().unwrap().backward().unwrap();
    });
    time("relu fwd", &mut || {
        relu(&x).unwrap();
    });
    time("pool3 fwd", &mut || {
        avg_pool2d(&x, 3, 1, 1, false).unwrap();
    });
    time("pool3 fwd+bwd", &mut || {
        (avg_pool2d(&x, 3, 1, 1, false).unwrap() * &u).unwrap().sum_all().unwrap().backward().unwrap();
    });
    time("add", &mut || {
        (x.as_tensor() + &u).unwrap();
    });
    time("mul+sum (loss stand-in)", &mut || {
        (x.as_tensor() * &u).unwrap().sum_all().unwrap();
    });
    time("zeros_like", &mut || {
        x.zeros_like().unwrap();
    });
    time("mul+sum fwd+bwd (baseline)", &mut || {
        (x.as_tensor() * &u).unwrap().sum_all().unwrap().backward().unwrap();
    });
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

#[test]
fn simd_im2col_matches_the_portable_one() {
    if !super::im2col_simd::available() {
        return;
    }
    for &(c, h, w, k) in &[(3, 7, 5, 3), (2, 8, 8, 3), (4, 32, 32, 3), (2, 4, 4, 1), (3, 6, 9, 5), (1, 1, 3, 3)] {
        let g = ConvGeom::same(1, c, 1, h, w, k);
        let x: Vec<f32> = randn(&[c * h * w], 7, DType::F32).to_vec1().unwrap();
        for relu in [false, true] {
            let mut simd = vec![f32::NAN; g.k() * h * w];
            super::im2col_simd::im2col_same_f32(&g, &x, &mut simd, relu);
            // The portable path, on f64 (which never takes the SIMD route), then the ReLU.
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let mut portable = vec![f64::NAN; g.k() * h * w];
            super::conv::im2col(&g, &x64, &mut portable);
            for (i, (a, b)) in simd.iter().zip(&portable).enumerate() {
                let b = if relu { b.max(0.0) } else { *b };
                assert_eq!(*a as f64, b, "c={c} h={h} w={w} k={k} relu={relu}: element {i}");
            }
        }
    }
}

/// The implicit-GEMM convolution equals im2col followed by a naive product, in f64, for ragged
/// row counts and planes (not a multiple of 16 positions), 1×1 to 5×5 kernels, stored and
/// accumulated.
#[test]
fn implicit_convolution_matches_im2col_and_a_naive_product() {
    if !super::implicit::available() {
        return;
    }
    // m, cin, h, w, k
    for &(m, cin, h, w, k) in &[
        (16, 16, 32, 32, 3),
        (13, 5, 7, 5, 3),
        (8, 3, 8, 8, 3),
        (24, 7, 16, 16, 3),
        (3, 2, 6, 9, 5),
        (9, 4, 4, 4, 1),
        (5, 1, 1, 3, 3),
    ] {
        let taps = k * k;
        let g = ConvGeom::same(1, cin, m, h, w, k);
        let hw = h * w;
        let x: Vec<f32> = randn(&[cin * hw], 11, DType::F32).to_vec1().unwrap();
        let f: Vec<f32> = randn(&[m * cin * taps], 12, DType::F32).to_vec1().unwrap();
        let prior: Vec<f32> = randn(&[m * hw], 13, DType::F32).to_vec1().unwrap();
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut col = vec![0.0f64; cin * taps * hw];
        super::conv::im2col(&g, &x64, &mut col);
        // The filter as a strided view: row i, channel c, tap t at `f[(c·m + i)·taps + t]`,
        // so the packing is checked too.
        let packed = super::implicit::PackedFilter::new(m, cin, taps, |i, c, t| f[(c * m + i) * taps + t]);
        // The planes again at a wider pitch, with garbage between them.
        let pitch = hw + 5;
        let mut wide = vec![f32::NAN; (cin - 1) * pitch + hw];
        for c in 0..cin {
            wide[c * pitch..c * pitch + hw].copy_from_slice(&x[c * hw..(c + 1) * hw]);
        }
        for (acc, (xs, pitch)) in [(false, (&x, hw)), (true, (&x, hw)), (false, (&wide, pitch)), (true, (&wide, pitch))] {
            let mut dst = prior.clone();
            super::implicit::conv_same_f32(&g, &packed, xs, pitch, &mut dst, acc);
            for i in 0..m {
                for q in 0..hw {
                    let mut want = if acc { prior[i * hw + q] as f64 } else { 0.0 };
                    for c in 0..cin {
                        for t in 0..taps {
                            want += f[(c * m + i) * taps + t] as f64 * col[(c * taps + t) * hw + q];
                        }
                    }
                    let got = dst[i * hw + q] as f64;
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "m={m} cin={cin} {h}x{w} k={k} acc={acc}: ({i}, {q}) {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// The implicit weight gradient equals `g · im2col(relu(x))ᵀ` computed naively, in f64, for
/// ragged row counts, planes narrower and wider than 16 pixels, 1×1 to 5×5 kernels, stored and
/// accumulated.
#[test]
fn implicit_weight_gradient_matches_a_naive_product() {
    if !super::implicit::available() {
        return;
    }
    // m, c, h, w, k
    for &(m, c, h, w, k) in &[(16, 16, 32, 32, 3), (13, 16, 7, 5, 3), (24, 32, 8, 8, 3), (8, 16, 3, 17, 5), (5, 48, 4, 4, 1)] {
        let (taps, hw) = (k * k, h * w);
        let g0 = ConvGeom::same(1, c, m, h, w, k);
        let x: Vec<f32> = randn(&[c * hw], 21, DType::F32).to_vec1().unwrap();
        let pitch = hw + 3;
        let mut g = vec![f32::NAN; (m - 1) * pitch + hw];
        let gv: Vec<f32> = randn(&[m * hw], 22, DType::F32).to_vec1().unwrap();
        for i in 0..m {
            g[i * pitch..i * pitch + hw].copy_from_slice(&gv[i * hw..(i + 1) * hw]);
        }
        let prior: Vec<f32> = randn(&[m * taps * c], 23, DType::F32).to_vec1().unwrap();
        let x64: Vec<f64> = x.iter().map(|&v| (v as f64).max(0.0)).collect();
        let mut col = vec![0.0f64; c * taps * hw];
        super::conv::im2col(&g0, &x64, &mut col);
        let mut xt = super::implicit::PaddedT::new(c, h, w, k / 2);
        xt.fill(&x, true);
        for acc in [false, true] {
            let mut dst = prior.clone();
            super::implicit::filter_grad_f32(k, &xt, m, &g, pitch, &mut dst, acc);
            for i in 0..m {
                for t in 0..taps {
                    for ch in 0..c {
                        let mut want = if acc { prior[(i * taps + t) * c + ch] as f64 } else { 0.0 };
                        for q in 0..hw {
                            want += gv[i * hw + q] as f64 * col[(ch * taps + t) * hw + q];
                        }
                        let got = dst[(i * taps + t) * c + ch] as f64;
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "m={m} c={c} {h}x{w} k={k} acc={acc}: ({i}, {t}, {ch}) {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

/// im2col + sgemm against the implicit-GEMM convolution on the NB201 cell shapes, one thread;
/// `cargo test -p autoagent-evaluator --lib bench_implicit -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_implicit() {
    for &(c, hw) in &[(16usize, 32usize), (32, 16), (64, 8)] {
        let g = ConvGeom::new(&[1, c, hw, hw], &[c, c, 3, 3], 1, 1).unwrap();
        let p = hw * hw;
        let x: Vec<f32> = randn(&[c * p], 1, DType::F32).to_vec1().unwrap();
        let w: Vec<f32> = randn(&[c * c * 9], 2, DType::F32).to_vec1().unwrap();
        let mut col = vec![0.0f32; c * 9 * p];
        let mut y = vec![0.0f32; c * p];
        let reps = 2000 * 1024 / p / c;
        let flops = 2.0 * (c * c * 9 * p) as f64 * reps as f64;
        let time = |name: &str, f: &mut dyn FnMut()| {
            f();
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    f();
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            eprintln!("c={c:<3} {hw:>2}x{hw:<2} {name:<20} {:7.1} GFLOP/s", flops / best / 1e9);
        };
        time("im2col + sgemm", &mut || {
            super::conv::im2col_map::<f32, true>(&g, &x, &mut col);
            crate::sgemm::sgemm(c, p, c * 9, &mut y, p, false, &w, (c * 9, 1), &col, (p, 1));
        });
        time("sgemm alone", &mut || {
            crate::sgemm::sgemm(c, p, c * 9, &mut y, p, false, &w, (c * 9, 1), &col, (p, 1));
        });
        let packed = super::implicit::PackedFilter::new(c, c, 9, |i, ch, t| w[(i * c + ch) * 9 + t]);
        time("implicit", &mut || {
            super::implicit::conv_same_f32(&g, &packed, &x, p, &mut y, false);
        });
        let pitch = super::implicit::pitch(p);
        let mut wide = vec![0.0f32; c * pitch];
        for ch in 0..c {
            wide[ch * pitch..ch * pitch + p].copy_from_slice(&x[ch * p..(ch + 1) * p]);
        }
        time("implicit, pitch", &mut || {
            super::implicit::conv_same_f32(&g, &packed, &wide, pitch, &mut y, false);
        });
        let mut gw = vec![0.0f32; c * c * 9];
        time("wgrad im2col + sgemm", &mut || {
            super::conv::im2col_map::<f32, true>(&g, &x, &mut col);
            crate::sgemm::sgemm(c, c * 9, p, &mut gw, c * 9, true, &wide, (pitch, 1), &col, (1, p));
        });
        time("wgrad sgemm alone", &mut || {
            crate::sgemm::sgemm(c, c * 9, p, &mut gw, c * 9, true, &wide, (pitch, 1), &col, (1, p));
        });
        let mut xt = super::implicit::PaddedT::new(c, hw, hw, 1);
        time("wgrad implicit", &mut || {
            xt.fill(&x, true);
            super::implicit::filter_grad_f32(3, &xt, c, &wide, pitch, &mut gw, true);
        });
    }
}

/// Batches smaller than the pool: the per-sample convolutions spread over the pool themselves,
/// stride-1 "same" ones as shifted products without im2col (`conv::shifted`). Forward, both
/// gradients and a second-order term against candle, on odd shapes, in both dtypes.
#[test]
fn small_batch_convolutions_match_candle() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    pool.install(|| {
        // n, cin, cout, h, w, k, stride, pad
        type Case = (usize, usize, usize, usize, usize, usize, usize, usize);
        let cases: [Case; 7] = [
            (1, 8, 12, 7, 5, 3, 1, 1),
            (2, 16, 8, 6, 6, 5, 1, 2),
            (1, 9, 10, 1, 4, 3, 1, 1),
            (1, 17, 33, 9, 9, 3, 1, 1),
            (1, 3, 16, 8, 8, 3, 1, 1), // too few input channels: im2col
            (1, 8, 16, 8, 8, 3, 2, 1), // stride 2: im2col
            (1, 16, 16, 8, 8, 1, 1, 0),
        ];
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
            for (i, &(n, cin, cout, h, w, k, s, p)) in cases.iter().enumerate() {
                let seed = 300 + 10 * i as u64;
                let x = Var::from_tensor(&randn(&[n, cin, h, w], seed, dtype)).unwrap();
                let wt = Var::from_tensor(&randn(&[cout, cin, k, k], seed + 1, dtype)).unwrap();
                let ours = conv2d(&x, &wt, s, p).unwrap();
                let theirs = x.conv2d(&wt, p, s, 1, 1).unwrap();
                assert!(max_diff(&ours, &theirs) < tol, "forward case {i} {dtype:?}");
                let u = randn(ours.dims(), seed + 2, dtype);
                let g1 = (&ours * &u).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = (&theirs * &u).unwrap().sum_all().unwrap().backward().unwrap();
                assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < tol, "dx case {i} {dtype:?}");
                assert!(max_diff(g1.get(&wt).unwrap(), g2.get(&wt).unwrap()) < tol, "dw case {i} {dtype:?}");
            }
        }
    });
}

/// An operand that depends on no variable gets no gradient (the network's input): the
/// backward pass skips its input-gradient convolution, and the weight's gradient is unchanged.
#[test]
fn convolution_skips_the_gradient_of_a_constant_input() {
    let x = randn(&[2, 3, 6, 6], 1, DType::F64);
    let w = Var::from_tensor(&randn(&[4, 3, 3, 3], 2, DType::F64)).unwrap();
    let grads = conv2d(&x, &w, 1, 1).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    let reference = x.conv2d(&w, 1, 1, 1, 1).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_diff(grads.get(&w).unwrap(), reference.get(&w).unwrap()) < 1e-10);
}

/// Batch-1 float64 convolutions (synflow's) on the three NB201 stages: median µs and GFLOP/s
/// of each map; `cargo test -p autoagent-evaluator --lib bench_batch1_f64 -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_batch1_f64_convs() {
    for (c, hw, k) in [(16, 32, 3), (32, 16, 3), (64, 8, 3)] {
        let geom = ConvGeom::new(&[1, c, hw, hw], &[c, c, k, k], 1, k / 2).unwrap();
        let x: Vec<f64> = randn(&[c * hw * hw], 1, DType::F64).to_vec1().unwrap();
        let w: Vec<f64> = randn(&[c * c * k * k], 2, DType::F64).to_vec1().unwrap();
        let flops = 2.0 * (c * c * k * k * hw * hw) as f64;
        let mut line = format!("c{c:<3} {hw:>2}x{hw:<2} k{k}");
        for (name, f) in [
            ("fwd", &(|| drop(conv_fwd(&geom, &x, &w))) as &dyn Fn()),
            ("data", &|| drop(conv_data(&geom, &x, &w))),
            ("filter", &|| drop(conv_filter(&geom, &x, &x))),
        ] {
            f();
            let mut times: Vec<f64> = (0..200)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let med = times[times.len() / 2];
            line += &format!(" {name} {:5.1} µs {:3.0} GF", med * 1e6, flops / med / 1e9);
        }
        eprintln!("{line}");
    }
}
