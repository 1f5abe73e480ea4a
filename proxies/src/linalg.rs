//! Small dense linear algebra in f64 for the N×N kernels of NASWOT and jacob_cov (N is the batch
//! size, tens to a few hundred).

/// `ln |det A|` of a row-major `n×n` matrix by LU decomposition with partial pivoting; `-inf`
/// for a singular matrix (the sign is ignored, as in the reference's `slogdet`).
pub(crate) fn log_abs_det(a: &[f64], n: usize) -> f64 {
    assert_eq!(a.len(), n * n, "log_abs_det: not an n×n matrix");
    let mut m = a.to_vec();
    let mut total = 0.0;
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| m[i * n + col].abs().total_cmp(&m[j * n + col].abs()))
            .expect("non-empty range");
        let p = m[pivot * n + col];
        if p == 0.0 || !p.is_finite() {
            return if p == 0.0 { f64::NEG_INFINITY } else { f64::NAN };
        }
        if pivot != col {
            for k in 0..n {
                m.swap(pivot * n + k, col * n + k);
            }
        }
        total += p.abs().ln();
        for row in col + 1..n {
            let f = m[row * n + col] / p;
            if f != 0.0 {
                for k in col..n {
                    m[row * n + k] -= f * m[col * n + k];
                }
            }
        }
    }
    total
}

/// Eigenvalues of a symmetric row-major `n×n` matrix by cyclic Jacobi rotations (accurate to
/// rounding for the small, well-scaled correlation matrices of jacob_cov).
pub(crate) fn symmetric_eigenvalues(a: &[f64], n: usize) -> Vec<f64> {
    assert_eq!(a.len(), n * n, "symmetric_eigenvalues: not an n×n matrix");
    let mut m = a.to_vec();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j].powi(2))
            .sum();
        let diag: f64 = (0..n).map(|i| m[i * n + i].powi(2)).sum();
        if off <= 1e-30 * diag.max(1e-300) || !off.is_finite() {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m[p * n + p], m[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * akp - s * akq;
                    m[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * apk - s * aqk;
                    m[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| m[i * n + i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_det_of_known_matrices() {
        // det [[4, 3], [6, 3]] = -6
        assert!((log_abs_det(&[4.0, 3.0, 6.0, 3.0], 2) - 6f64.ln()).abs() < 1e-12);
        assert_eq!(log_abs_det(&[1.0, 2.0, 2.0, 4.0], 2), f64::NEG_INFINITY);
        // A permutation needs pivoting: det = -1
        assert!(log_abs_det(&[0.0, 1.0, 1.0, 0.0], 2).abs() < 1e-15);
    }

    #[test]
    fn eigenvalues_of_known_matrices() {
        let mut e = symmetric_eigenvalues(&[2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 5.0], 3);
        e.sort_by(f64::total_cmp);
        for (got, want) in e.iter().zip([1.0, 3.0, 5.0]) {
            assert!((got - want).abs() < 1e-12, "{e:?}");
        }
        // A correlation matrix's eigenvalues sum to n.
        let c = [1.0, 0.3, -0.2, 0.3, 1.0, 0.5, -0.2, 0.5, 1.0];
        let e = symmetric_eigenvalues(&c, 3);
        assert!((e.iter().sum::<f64>() - 3.0).abs() < 1e-12);
        let det: f64 = e.iter().product();
        assert!((det.ln() - log_abs_det(&c, 3)).abs() < 1e-10);
    }
}
