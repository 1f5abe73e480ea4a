//! The `flops` baseline, PROXIES.md §2.11: FLOPs of a forward pass in millions, in the search
//! space's counting convention (NB201's for NB201).

use crate::{Batch, Candidate, Proxy, Result};

/// FLOPs (millions).
#[derive(Debug, Clone, Copy, Default)]
pub struct Flops;

impl Proxy for Flops {
    fn name(&self) -> &'static str {
        "flops"
    }
    fn uses_data(&self) -> bool {
        false
    }
    fn score(&self, candidate: &dyn Candidate, _batch: &Batch, _seed: u64) -> Result<f64> {
        Ok(candidate.flops() / 1e6)
    }
}
