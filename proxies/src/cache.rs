//! The on-disk proxy score cache: one JSON line per (architecture key, proxy, seed, batch) with
//! the score and the milliseconds it took.
//!
//! The file is read whole when opened and appended to while scoring; [`ScoreCache::flush`]
//! after each architecture makes a killed process lose at most the architecture it was scoring.
//! A line cut short by a kill (the last one) is ignored and scored again; a corrupt line
//! anywhere else is an error, and the file is never rewritten, so nothing stored is lost. The
//! benchmark (`autoagent bench proxies`) and the agent share the format, so a benchmark run
//! fills the cache that searches read.
//!
//! Keys: [`crate::Candidate::key`], the exact network: the architecture as written plus the shape
//! parameters that enter the network (for NB201 `nb201:ARCH:C16N5K10I3S32`). Isomorphic cells are
//! *not* given one key. They compute the same function, but they are different networks: a branch
//! cut off by `none` still carries weights and ReLUs (naswot counts the ReLUs, params the weights),
//! and its weights shift the seeded initialisation of the others, so two members of one class score
//! differently (two members with 0.372 M and 0.400 M parameters: naswot 788.80 and 806.45 on the
//! CIFAR-10 fixture's batch of 64, seed 0). Under a class key, the score of a member depended on
//! which member the cache saw first. With exact keys a score is the score of the network that is
//! built and trained (the agent dedups by class, but evaluates the cell it was given), `proxies
//! score --arch A` prints the same with and without a cache, and a benchmark scores every
//! architecture as itself, as the reference harnesses do (the published rank correlations are over
//! 15,625 separately scored networks). The price: isomorphic duplicates are scored separately (up
//! to 15,625 networks instead of 6,466 over the whole space).
//!
//! The batch is `""` for data-free proxies, else the batch id, which identifies the images
//! themselves (`autoagent_evaluator::proxy::batch_id`: dataset, size, seed and a hash of the
//! batch's bytes and labels), so scores on one folder of images are never served for another.
//! Entries written before either rule (class keys, ids without a hash) simply never match
//! again: they stay in the file, unused, and the scores are computed anew.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Batch, Candidate, Proxy};

/// One cached score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheLine {
    /// Architecture key.
    pub key: String,
    /// Proxy name.
    pub proxy: String,
    /// Seed of the initialisation (and of the batch draw, inside `batch`).
    pub seed: u64,
    /// Batch id (`""` for data-free proxies).
    pub batch: String,
    /// The score; `None` when it was not finite or failed.
    pub value: Option<f64>,
    /// Milliseconds it took.
    pub ms: f64,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A score from [`ScoreCache::score_grid`].
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The score; `None` when it was not finite or failed.
    pub value: Option<f64>,
    /// Milliseconds it took (when it was computed, now or in an earlier run).
    pub ms: f64,
    /// Whether it was computed now (not read from the cache).
    pub computed: bool,
    /// Why it failed, when it failed now.
    pub error: Option<String>,
}

/// `(key, proxy, seed, batch)`.
pub type CacheKey = (String, String, u64, String);

/// Errors of the cache file.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing failed.
    #[error("score cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A line other than the last is not a cache entry.
    #[error("the score cache {path} is corrupt at line {line}: {reason} (move it away or use another cache file)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parse error.
        reason: String,
    },
}

/// The cache, open for appending (or held in memory only, see [`ScoreCache::in_memory`]).
pub struct ScoreCache {
    path: PathBuf,
    entries: HashMap<CacheKey, (Option<f64>, f64)>,
    file: Option<File>,
}

impl ScoreCache {
    /// Open (or create) the cache at `path`, creating its directory.
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        let io = |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut entries = HashMap::new();
        let mut keep = None; // where to cut a torn last line off
        if path.exists() {
            let text = std::fs::read(path).map_err(io)?;
            let mut offset = 0usize;
            let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
            let last = lines.len();
            for (i, raw) in lines.iter().enumerate() {
                let start = offset;
                offset += raw.len();
                let line = String::from_utf8_lossy(raw);
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<CacheLine>(&line) {
                    Ok(c) => {
                        entries.insert((c.key, c.proxy, c.seed, c.batch), (c.value, c.ms));
                    }
                    // A line cut short by a kill while it was written holds nothing usable: it
                    // is cut off, and scored again.
                    Err(_) if i + 1 == last => {
                        tracing::warn!("{}: dropping the incomplete last line", path.display());
                        keep = Some(start as u64);
                    }
                    Err(e) => {
                        return Err(CacheError::Corrupt {
                            path: path.to_path_buf(),
                            line: i + 1,
                            reason: e.to_string(),
                        })
                    }
                }
            }
            if keep.is_none() && text.last().is_some_and(|&b| b != b'\n') {
                // A complete last entry without its newline.
                keep = Some(text.len() as u64);
                OpenOptions::new().append(true).open(path).and_then(|mut f| f.write_all(b"\n")).map_err(io)?;
                keep = keep.map(|k| k + 1);
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        if let Some(len) = keep {
            file.set_len(len).map_err(io)?;
        }
        Ok(ScoreCache {
            path: path.to_path_buf(),
            entries,
            file: Some(file),
        })
    }

    /// A cache without a file: scores are kept for the life of the value only (one command's
    /// scoring computes nothing twice, and nothing is written).
    pub fn in_memory() -> Self {
        ScoreCache {
            path: PathBuf::new(),
            entries: HashMap::new(),
            file: None,
        }
    }

    /// The file (empty for an in-memory cache).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached `(score, ms)` of a key.
    pub fn get(&self, key: &CacheKey) -> Option<(Option<f64>, f64)> {
        self.entries.get(key).copied()
    }

    /// Append one entry (written at once; call [`ScoreCache::flush`] to push it to the file).
    pub fn put(&mut self, line: CacheLine) -> Result<(), CacheError> {
        // One write call per line: appends of other processes sharing the file (the benchmark
        // and a run) land between lines, never inside one.
        if let Some(file) = &mut self.file {
            let mut text = serde_json::to_string(&line).expect("cache lines serialise");
            text.push('\n');
            file.write_all(text.as_bytes()).map_err(|source| CacheError::Io {
                path: self.path.clone(),
                source,
            })?;
        }
        self.entries.insert((line.key, line.proxy, line.seed, line.batch), (line.value, line.ms));
        Ok(())
    }

    /// Whether [`ScoreCache::score_grid`] would read this score from the cache instead of computing it.
    pub fn holds(&self, proxy: &dyn Proxy, candidate: &dyn Candidate, batch_id: &str, seed: u64) -> bool {
        self.recorded_ms(proxy, candidate, batch_id, seed).is_some()
    }

    /// The milliseconds a cached score took when it was computed (`None` when not cached).
    pub fn recorded_ms(&self, proxy: &dyn Proxy, candidate: &dyn Candidate, batch_id: &str, seed: u64) -> Option<f64> {
        self.get(&Self::key_of(proxy, candidate, batch_id, seed)).map(|(_, ms)| ms)
    }

    fn key_of(proxy: &dyn Proxy, candidate: &dyn Candidate, batch_id: &str, seed: u64) -> CacheKey {
        let batch_key = if proxy.uses_data() { batch_id.to_string() } else { String::new() };
        (candidate.key(), proxy.name().to_string(), seed, batch_key)
    }

    /// Every proxy's score of every candidate on `batch` (described by `batch_id`) with networks
    /// from `seed`, `[candidate][proxy]`: from the cache when it holds them, else computed and
    /// appended. The key is the candidate's exact key (see the module doc); the batch is left out
    /// for data-free proxies. The scores the cache lacks are computed first, each distinct key
    /// once (a candidate repeated in one call is scored once), and with `parallel` several at a time on the
    /// rayon pool (their kernels run on the same pool, so small networks that cannot keep every
    /// thread busy alone are scored side by side). Scores are appended in candidate then proxy
    /// order whatever the order of computing.
    pub fn score_grid(
        &mut self,
        proxies: &[&dyn Proxy],
        candidates: &[&dyn Candidate],
        batch: &Batch,
        batch_id: &str,
        seed: u64,
        parallel: bool,
    ) -> Result<Vec<Vec<Scored>>, CacheError> {
        use rayon::prelude::*;
        // The missing keys, first occurrence of each.
        let mut missing: Vec<(CacheKey, usize, usize)> = Vec::new();
        for (ci, c) in candidates.iter().enumerate() {
            for (pi, p) in proxies.iter().enumerate() {
                let key = Self::key_of(*p, *c, batch_id, seed);
                if self.get(&key).is_none() && !missing.iter().any(|(k, _, _)| *k == key) {
                    missing.push((key, ci, pi));
                }
            }
        }
        let compute = |&(_, ci, pi): &(CacheKey, usize, usize)| {
            let t = std::time::Instant::now();
            let r = proxies[pi].score(candidates[ci], batch, seed);
            (r, t.elapsed().as_secs_f64() * 1e3)
        };
        let results: Vec<_> = if parallel {
            missing.par_iter().map(compute).collect()
        } else {
            // On a thread of the pool (`join` from outside it runs there), so that the kernels'
            // parallel loops start inside it instead of each being injected from this thread.
            let run = || missing.iter().map(compute).collect();
            if rayon::current_thread_index().is_some() {
                run()
            } else {
                rayon::join(run, || ()).0
            }
        };
        let mut fresh: HashMap<CacheKey, (Option<f64>, f64, Option<String>)> = HashMap::new();
        for ((key, _, _), (r, ms)) in missing.into_iter().zip(results) {
            let (value, error) = match r {
                Ok(v) if v.is_finite() => (Some(v), None),
                Ok(_) => (None, None),
                Err(e) => (None, Some(e.to_string())),
            };
            self.put(CacheLine {
                key: key.0.clone(),
                proxy: key.1.clone(),
                seed: key.2,
                batch: key.3.clone(),
                value,
                ms,
                error: error.clone(),
            })?;
            fresh.insert(key, (value, ms, error));
        }
        let mut out = Vec::with_capacity(candidates.len());
        for c in candidates {
            let mut row = Vec::with_capacity(proxies.len());
            for p in proxies {
                let key = Self::key_of(*p, *c, batch_id, seed);
                row.push(match fresh.remove(&key) {
                    Some((value, ms, error)) => Scored {
                        value,
                        ms,
                        computed: true,
                        error,
                    },
                    None => {
                        let (value, ms) = self.get(&key).expect("every key was scored");
                        Scored {
                            value,
                            ms,
                            computed: false,
                            error: None,
                        }
                    }
                });
            }
            out.push(row);
        }
        Ok(out)
    }

    /// Flush appended entries to the file.
    pub fn flush(&mut self) -> Result<(), CacheError> {
        match &mut self.file {
            Some(file) => file.flush().map_err(|source| CacheError::Io {
                path: self.path.clone(),
                source,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(key: &str, v: f64) -> CacheLine {
        CacheLine {
            key: key.into(),
            proxy: "synflow".into(),
            seed: 0,
            batch: String::new(),
            value: Some(v),
            ms: 1.5,
            error: None,
        }
    }

    #[test]
    fn entries_survive_reopening_and_a_torn_last_line_is_dropped() {
        let dir = std::env::temp_dir().join(format!("autoagent-cache-test-{}", std::process::id()));
        let path = dir.join("c.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut c = ScoreCache::open(&path).unwrap();
        c.put(line("a", 1.0)).unwrap();
        c.put(line("b", 2.0)).unwrap();
        c.flush().unwrap();
        drop(c);
        // A kill in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"key\":\"c\",\"pro").unwrap();
        drop(f);
        let mut c = ScoreCache::open(&path).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&("b".into(), "synflow".into(), 0, String::new())), Some((Some(2.0), 1.5)));
        c.put(line("c", 3.0)).unwrap();
        c.flush().unwrap();
        drop(c);
        let c = ScoreCache::open(&path).unwrap();
        assert_eq!(c.len(), 3);
        // Corruption before the last line is refused and the file kept.
        let before = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("garbage\n{before}")).unwrap();
        assert!(matches!(ScoreCache::open(&path), Err(CacheError::Corrupt { line: 1, .. })));
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("garbage\n"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
