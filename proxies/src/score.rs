//! Scoring many architectures with many proxies on one batch, with a cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::{Batch, Candidate, Proxy, Result};

/// One proxy's result for one architecture.
#[derive(Debug)]
pub struct ProxyScore {
    /// The proxy's name.
    pub proxy: &'static str,
    /// The score (non-finite values are kept as they are: the caller reports them as missing).
    pub value: Result<f64>,
    /// Wall time of the computation in milliseconds (0 when it came from the cache).
    pub ms: f64,
    /// Whether the value came from the cache.
    pub cached: bool,
}

/// `(candidate key, proxy, seed, batch id or "" for data-free proxies)`.
type CacheKey = (String, &'static str, u64, String);

/// Scores architectures with a fixed list of proxies on one batch: the batch is loaded once and
/// reused, and nothing is computed twice for the same `(canonical arch, proxy, seed, batch)`.
pub struct Scorer {
    proxies: Vec<Box<dyn Proxy>>,
    batch: Batch,
    batch_id: String,
    seed: u64,
    cache: Mutex<HashMap<CacheKey, f64>>,
}

impl Scorer {
    /// A scorer for `proxies` on `batch` (described by `batch_id`, e.g. dataset, size and seed of
    /// the draw, for the cache key), initialising networks from `seed`.
    pub fn new(proxies: Vec<Box<dyn Proxy>>, batch: Batch, batch_id: String, seed: u64) -> Self {
        Scorer {
            proxies,
            batch,
            batch_id,
            seed,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The proxies' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.proxies.iter().map(|p| p.name()).collect()
    }

    /// Score one architecture with every proxy.
    pub fn score(&self, candidate: &dyn Candidate) -> Vec<ProxyScore> {
        let (key, exact) = (candidate.key(), candidate.exact_key());
        self.proxies
            .iter()
            .map(|p| {
                let batch_key = if p.uses_data() { self.batch_id.clone() } else { String::new() };
                let k = if p.shares_isomorphic_scores() { &key } else { &exact };
                let ck = (k.clone(), p.name(), self.seed, batch_key);
                if let Some(&v) = self.cache.lock().expect("score cache").get(&ck) {
                    return ProxyScore {
                        proxy: p.name(),
                        value: Ok(v),
                        ms: 0.0,
                        cached: true,
                    };
                }
                let t = Instant::now();
                let value = p.score(candidate, &self.batch, self.seed);
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if let Ok(v) = value {
                    self.cache.lock().expect("score cache").insert(ck, v);
                }
                ProxyScore {
                    proxy: p.name(),
                    value,
                    ms,
                    cached: false,
                }
            })
            .collect()
    }
}
