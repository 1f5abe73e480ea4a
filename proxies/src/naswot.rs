//! NASWOT (Mellor et al., ICML 2021, `hook_logdet`; NASLib's `nwot`), PROXIES.md §2.8.
//!
//! One forward pass (BatchNorm with batch statistics); the input of every ReLU module, flattened
//! per sample, is binarised, `c = [x > 0]` (N × units), and accumulated into the N×N kernel
//! `K += c·cᵀ + (1−c)·(1−c)ᵀ` (each entry: units minus the Hamming distance of two codes);
//! `S = ln |det K|`. This is NASLib's variant: every ReLU counts, with no backward marking.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::linalg::log_abs_det;
use crate::{Batch, BnHandling, Candidate, Error, Proxy, Result, Trace};

/// The NASWOT proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Naswot;

/// The NASWOT kernel `K` (row-major N×N, f64) of a list of ReLU inputs, each `(N, …)`.
///
/// Each sample's binary code is packed into bits (every layer starting on a fresh 64-bit word,
/// padding bits zero in every code), and `K_ij = units − popcount(code_i XOR code_j)`: exact
/// integer counts, no floating-point products.
pub fn kernel(relu_inputs: &[Tensor]) -> Result<Vec<f64>> {
    let Some(first) = relu_inputs.first() else { return Ok(Vec::new()) };
    let n = first.dim(0)?;
    let mut codes: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut units = 0usize;
    for x in relu_inputs {
        if x.dim(0)? != n {
            return Err(Error::Msg(format!("naswot: ReLU inputs with batch sizes {n} and {}", x.dim(0)?)));
        }
        let x = match (x.device().is_cpu(), x.dtype()) {
            (true, DType::F32 | DType::F64) => x.contiguous()?,
            _ => x.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?,
        };
        let per = x.elem_count() / n;
        units += per;
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return Err(Error::Msg("naswot: expected a CPU tensor".into()));
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| Error::Msg("naswot: expected a contiguous tensor".into()))?;
        match x.dtype() {
            DType::F32 => pack(&cpu.as_slice::<f32>()?[start..end], per, &mut codes),
            _ => pack(&cpu.as_slice::<f64>()?[start..end], per, &mut codes),
        }
    }
    let k: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|i| {
            (0..n)
                .map(|j| {
                    let hamming: u64 = codes[i].iter().zip(&codes[j]).map(|(a, b)| (a ^ b).count_ones() as u64).sum();
                    (units as u64 - hamming) as f64
                })
                .collect()
        })
        .collect();
    Ok(k.concat())
}

/// Append the codes `[x > 0]` of every sample (`per` values each) to `codes`, 64 per word.
fn pack<T: candle_core::WithDType>(x: &[T], per: usize, codes: &mut [Vec<u64>]) {
    let zero = T::zero();
    codes.par_iter_mut().enumerate().for_each(|(i, code)| {
        let sample = &x[i * per..(i + 1) * per];
        code.extend(
            sample
                .chunks(64)
                .map(|chunk| chunk.iter().enumerate().fold(0u64, |w, (b, v)| if *v > zero { w | (1 << b) } else { w })),
        );
    });
}

impl Proxy for Naswot {
    fn name(&self) -> &'static str {
        "naswot"
    }

    fn score(&self, candidate: &dyn Candidate, batch: &Batch, seed: u64) -> Result<f64> {
        let net = candidate.build(DType::F32, batch.images.device(), seed, false)?;
        let trace = Trace {
            relu_inputs: true,
            ..Trace::default()
        };
        let rec = net.forward(&batch.images, BnHandling::Batch, trace)?;
        let n = batch.images.dim(0)?;
        let k = kernel(&rec.relu_inputs)?;
        if k.is_empty() {
            // No ReLU at all: K = 0, ln|det 0| = −inf.
            return Ok(f64::NEG_INFINITY);
        }
        Ok(log_abs_det(&k, n))
    }
}
