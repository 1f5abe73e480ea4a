//! NASWOT (Mellor et al., ICML 2021, `hook_logdet`; NASLib's `nwot`), PROXIES.md §2.8.
//!
//! One forward pass (BatchNorm with batch statistics); the input of every ReLU module, flattened
//! per sample, is binarised, `c = [x > 0]` (N × units), and accumulated into the N×N kernel
//! `K += c·cᵀ + (1−c)·(1−c)ᵀ` (each entry: units minus the Hamming distance of two codes);
//! `S = ln |det K|`. This is NASLib's variant: every ReLU counts, with no backward marking.

use candle_core::{DType, Tensor};

use crate::linalg::log_abs_det;
use crate::{to_f64_vec, Batch, BnHandling, Candidate, Proxy, Result, Trace};

/// The NASWOT proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Naswot;

/// The NASWOT kernel `K` (row-major N×N, f64) of a list of ReLU inputs, each `(N, …)`.
pub fn kernel(relu_inputs: &[Tensor]) -> Result<Vec<f64>> {
    let Some(first) = relu_inputs.first() else { return Ok(Vec::new()) };
    let n = first.dim(0)?;
    let mut k = vec![0.0; n * n];
    for x in relu_inputs {
        let c = x.flatten_from(1)?.gt(0.0)?.to_dtype(DType::F32)?;
        let units = c.dim(1)? as f64;
        // c·cᵀ + (1−c)(1−c)ᵀ = 2·c·cᵀ − r·1ᵀ − 1·rᵀ + units, with r the codes' row sums.
        // Entries are integer counts below 2^24 per layer, exact in f32.
        let cc = to_f64_vec(&c.matmul(&c.t()?)?)?;
        let r = to_f64_vec(&c.sum(1)?)?;
        for i in 0..n {
            for j in 0..n {
                k[i * n + j] += 2.0 * cc[i * n + j] - r[i] - r[j] + units;
            }
        }
    }
    Ok(k)
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
