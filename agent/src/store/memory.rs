//! A store in memory, for tests: the same behaviour as the SQLite store, nothing on disk.

use std::collections::BTreeMap;

use super::{Metric, ProposalRecord, ProxyScore, Store, StoreError, TrialRecord, TrialState};
use crate::history::{FailedProposal, Proposal};
use crate::llm::Exchange;

/// The in-memory store.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    meta: BTreeMap<String, String>,
    proposals: Vec<ProposalRecord>,
    scores: BTreeMap<(String, String), ProxyScore>,
    trials: BTreeMap<usize, TrialRecord>,
    metrics: BTreeMap<(usize, usize, String), f64>,
    failed: Vec<FailedProposal>,
    exchanges: BTreeMap<usize, Exchange>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.meta.get(key).cloned())
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.meta.insert(key.to_string(), value.to_string());
        Ok(())
    }

    fn add_proposal(&mut self, round: usize, proposal: &Proposal) -> Result<usize, StoreError> {
        let id = self.proposals.len();
        self.proposals.push(ProposalRecord {
            id,
            round,
            proposal: proposal.clone(),
        });
        Ok(id)
    }

    fn proposals(&self) -> Result<Vec<ProposalRecord>, StoreError> {
        Ok(self.proposals.clone())
    }

    fn put_proxy_score(&mut self, score: &ProxyScore) -> Result<(), StoreError> {
        self.scores.insert((score.candidate.clone(), score.proxy.clone()), score.clone());
        Ok(())
    }

    fn proxy_scores(&self) -> Result<Vec<ProxyScore>, StoreError> {
        Ok(self.scores.values().cloned().collect())
    }

    fn put_trial(&mut self, record: &TrialRecord) -> Result<(), StoreError> {
        self.trials.insert(record.trial.id, record.clone());
        Ok(())
    }

    fn trials(&self) -> Result<Vec<TrialRecord>, StoreError> {
        Ok(self.trials.values().cloned().collect())
    }

    fn mark_lost(&mut self) -> Result<usize, StoreError> {
        let mut n = 0;
        for r in self.trials.values_mut() {
            if matches!(r.trial.state, TrialState::Running | TrialState::Pending) {
                r.trial.state = TrialState::Lost;
                n += 1;
            }
        }
        Ok(n)
    }

    fn add_metric(&mut self, metric: &Metric) -> Result<(), StoreError> {
        if !self.trials.contains_key(&metric.trial) {
            return Err(StoreError::Sql {
                path: "memory".into(),
                reason: format!("no trial {} for a metric", metric.trial),
            });
        }
        self.metrics.insert((metric.trial, metric.epoch, metric.name.clone()), metric.value);
        Ok(())
    }

    fn metrics(&self, trial: usize) -> Result<Vec<Metric>, StoreError> {
        Ok(self
            .metrics
            .iter()
            .filter(|((t, _, _), _)| *t == trial)
            .map(|((t, e, n), v)| Metric {
                trial: *t,
                epoch: *e,
                name: n.clone(),
                value: *v,
            })
            .collect())
    }

    fn add_failed(&mut self, failed: &FailedProposal) -> Result<(), StoreError> {
        self.failed.push(failed.clone());
        Ok(())
    }

    fn failed(&self) -> Result<Vec<FailedProposal>, StoreError> {
        Ok(self.failed.clone())
    }

    fn add_exchange(&mut self, exchange: &Exchange) -> Result<(), StoreError> {
        self.exchanges.insert(exchange.index, exchange.clone());
        Ok(())
    }

    fn exchanges(&self) -> Result<Vec<Exchange>, StoreError> {
        Ok(self.exchanges.values().cloned().collect())
    }
}
