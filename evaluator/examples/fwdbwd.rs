//! Profiling harness: forward+backward of one NB201 network on a random batch, repeated.
//!
//! `cargo run --example fwdbwd -p autoagent-evaluator -- [ARCH_INDEX_STRING] [BATCH] [ITERS] [fwd]`
//! prints the time of each iteration (with `fwd`, of the forward pass alone); run it under `perf record` to see where the time goes.
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use autoagent_evaluator::kernels::in_pool;
use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::net::{BnMode, Model, Nb201Config};
use candle_core::{DType, Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the binary does: never purge freed memory (see src/main.rs).
    // SAFETY: setting an option is thread-safe in mimalloc.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let args: Vec<String> = std::env::args().collect();
    let arch: Arch = args
        .get(1)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")
        .parse()
        .expect("arch string");
    let batch: usize = args.get(2).map_or(64, |s| s.parse().expect("batch"));
    let iters: usize = args.get(3).map_or(10, |s| s.parse().expect("iters"));
    let forward_only = args.get(4).is_some_and(|s| s == "fwd");
    let dev = Device::Cpu;
    let model = Model::new(&Nb201Config::new(arch), DType::F32, &dev, 0)?;
    let xs = Tensor::randn(0f32, 1., (batch, 3, 32, 32), &dev)?;
    let ys = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(), batch, &dev)?;
    for i in 0..iters {
        // On a thread of the pool, as training runs (`kernels::in_pool`).
        let (tf, tb) = in_pool(|| -> autoagent_evaluator::Result<(f64, f64)> {
            let t = Instant::now();
            let logits = model.net.forward_mode(&xs, BnMode::Batch)?;
            let tf = t.elapsed().as_secs_f64() * 1e3;
            if !forward_only {
                candle_nn::loss::cross_entropy(&logits, &ys)?.backward()?;
            }
            Ok((tf, t.elapsed().as_secs_f64() * 1e3))
        })?;
        if forward_only {
            println!("iter {i}: fwd {tf:.1} ms");
        } else {
            println!("iter {i}: fwd {tf:.1} ms, fwd+bwd {tb:.1} ms");
        }
    }
    Ok(())
}
