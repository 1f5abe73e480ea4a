//! The `params` baseline, PROXIES.md §2.11: trainable parameters in millions.

use crate::{Batch, Candidate, Proxy, Result};

/// Parameter count (millions).
#[derive(Debug, Clone, Copy, Default)]
pub struct Params;

impl Proxy for Params {
    fn name(&self) -> &'static str {
        "params"
    }
    fn uses_data(&self) -> bool {
        false
    }
    fn score(&self, candidate: &dyn Candidate, _batch: &Batch, _seed: u64) -> Result<f64> {
        Ok(candidate.param_count() as f64 / 1e6)
    }
}
