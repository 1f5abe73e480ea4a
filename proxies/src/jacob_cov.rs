//! jacob_cov (NASWOT v1, Mellor et al. 2020; Abdelfattah et al.'s `jacob_cov`, NASLib's
//! `jacov`), PROXIES.md §2.7.
//!
//! `J_n = ∂(Σ_k y_nk)/∂x_n` for the batch (BatchNorm with batch statistics), flattened to N×D;
//! `Σ` = the Pearson correlation matrix of its rows; `S = −Σ_i [ln(λ_i + k) + 1/(λ_i + k)]` over
//! the eigenvalues of `Σ`, `k = 1e-5`. A row with zero variance (a dead network) makes `Σ`, and
//! the score, NaN.

use candle_core::{DType, Var};

use crate::linalg::symmetric_eigenvalues;
use crate::{to_f64_vec, Batch, BnHandling, Candidate, Error, Proxy, Result, Trace};

/// The jacob_cov proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct JacobCov;

/// `k` of the score.
const K: f64 = 1e-5;

/// The score of a Jacobian given as N rows of D values.
pub fn score_from_jacobian(j: &[f64], n: usize) -> f64 {
    let d = j.len() / n;
    // Centre and normalise each row: the correlation matrix is then Z·Zᵀ.
    let mut z = j.to_vec();
    for row in z.chunks_mut(d) {
        let mean = row.iter().sum::<f64>() / d as f64;
        row.iter_mut().for_each(|v| *v -= mean);
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let mut corr = vec![0.0; n * n];
    for a in 0..n {
        for b in a..n {
            let v: f64 = z[a * d..(a + 1) * d].iter().zip(&z[b * d..(b + 1) * d]).map(|(x, y)| x * y).sum();
            corr[a * n + b] = v;
            corr[b * n + a] = v;
        }
    }
    if corr.iter().any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    -symmetric_eigenvalues(&corr, n).iter().map(|l| (l + K).ln() + 1.0 / (l + K)).sum::<f64>()
}

impl Proxy for JacobCov {
    fn name(&self) -> &'static str {
        "jacob_cov"
    }

    fn score(&self, candidate: &dyn Candidate, batch: &Batch, seed: u64) -> Result<f64> {
        let net = candidate.build(DType::F32, batch.images.device(), seed, false)?;
        let x = Var::from_tensor(&batch.images.to_dtype(DType::F32)?)?;
        let rec = net.forward(x.as_tensor(), BnHandling::Batch, Trace::default())?;
        let grads = rec.logits.sum_all()?.backward()?;
        let n = batch.images.dim(0)?;
        let Some(j) = grads.get(x.as_tensor()) else {
            // The output does not depend on the input at all: J = 0.
            return Ok(f64::NAN);
        };
        if j.elem_count() == 0 {
            return Err(Error::Msg("jacob_cov: empty Jacobian".into()));
        }
        Ok(score_from_jacobian(&to_f64_vec(j)?, n))
    }
}
