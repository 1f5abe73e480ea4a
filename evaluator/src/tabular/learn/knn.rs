//! k-nearest neighbours: the training rows kept, a query's k nearest by Euclidean distance
//! (on the pipeline's scaled columns), their classes' shares or their mean value, uniformly or
//! by inverse distance.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{finite, Fit};
use crate::tabular::matrix::Matrix;

/// k-nearest neighbours' hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnParams {
    /// Neighbours.
    pub k: usize,
    /// Weigh neighbours by inverse distance (else uniformly).
    pub distance_weighted: bool,
}

/// The training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedKnn {
    /// Hyperparameters.
    pub params: KnnParams,
    /// Training rows, row-major.
    pub x: Vec<f64>,
    /// Columns.
    pub cols: usize,
    /// Their targets (class indices or values).
    pub y: Vec<f64>,
    /// Classes (1 for a regression).
    pub classes: usize,
}

/// The most training rows kept: a larger table keeps a seeded random sample of this many (a
/// query costs a pass over the rows kept: 20,000 rows of 50 columns is a millisecond).
pub const MAX_ROWS: usize = 20_000;

/// Keep the training rows (at most [`MAX_ROWS`], sampled with the fit's seed).
pub fn fit(params: &KnnParams, x: &Matrix, y: &[f64], fit: &Fit) -> FittedKnn {
    let all = finite(x);
    let (x_kept, y_kept) = if x.rows <= MAX_ROWS {
        (all, y.to_vec())
    } else {
        use rand::seq::index::sample;
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(fit.seed);
        let mut rows = sample(&mut rng, x.rows, MAX_ROWS).into_vec();
        rows.sort_unstable();
        let xs = rows.iter().flat_map(|&r| all[r * x.cols..(r + 1) * x.cols].to_vec()).collect();
        (xs, rows.iter().map(|&r| y[r]).collect())
    };
    FittedKnn {
        params: params.clone(),
        x: x_kept,
        cols: x.cols,
        y: y_kept,
        classes: fit.classes,
    }
}

impl FittedKnn {
    /// Probabilities (rows × classes) or values, rows in parallel on `threads` threads.
    pub fn predict(&self, x: &Matrix, threads: usize) -> Vec<f64> {
        let q = finite(x);
        let width = if self.classes > 1 { self.classes } else { 1 };
        let one = |row: &[f64]| self.predict_row(row);
        let rows: Vec<&[f64]> = q.chunks(self.cols.max(1)).take(x.rows).collect();
        let out: Vec<Vec<f64>> = match rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build() {
            Ok(pool) => pool.install(|| rows.par_iter().map(|r| one(r)).collect()),
            Err(_) => rows.iter().map(|r| one(r)).collect(),
        };
        let flat: Vec<f64> = out.into_iter().flatten().collect();
        debug_assert_eq!(flat.len(), x.rows * width);
        flat
    }

    fn predict_row(&self, row: &[f64]) -> Vec<f64> {
        let n = self.y.len();
        let k = self.params.k.clamp(1, n.max(1));
        let mut d: Vec<(f64, usize)> = (0..n)
            .map(|i| {
                let t = &self.x[i * self.cols..(i + 1) * self.cols];
                (t.iter().zip(row).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt(), i)
            })
            .collect();
        d.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
        let near = &d[..k];
        let weight = |dist: f64| if self.params.distance_weighted { 1.0 / (dist + 1e-9) } else { 1.0 };
        let total: f64 = near.iter().map(|&(dist, _)| weight(dist)).sum();
        if self.classes > 1 {
            let mut p = vec![0.0; self.classes];
            near.iter().for_each(|&(dist, i)| p[self.y[i] as usize] += weight(dist) / total);
            p
        } else {
            vec![near.iter().map(|&(dist, i)| weight(dist) * self.y[i]).sum::<f64>() / total]
        }
    }
}
