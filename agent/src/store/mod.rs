//! The run store: everything a run has decided, measured and exchanged, durable across crashes.
//!
//! One [`Store`] trait with two implementations: [`sqlite::SqliteStore`], one SQLite database
//! per run directory (WAL journal, a versioned schema migrated forward on open), and
//! [`memory::MemoryStore`] for tests. Both pass the same conformance suite
//! (`agent/tests/store.rs`).
//!
//! What it holds: metadata (the resolved configuration, seed, versions, the run's status),
//! every proposal with its origin, every proxy score, every trial with its state
//! ([`TrialState`]: pending, running, complete, failed, pruned, lost), metrics per epoch,
//! device time and artefact paths, every rejected proposal and every LLM exchange verbatim.

pub mod memory;
pub mod sqlite;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::history::{FailedProposal, Proposal, Trial};
use crate::llm::Exchange;

pub use crate::history::TrialState;

/// The schema version this build writes (`PRAGMA user_version` of the SQLite store).
pub const SCHEMA_VERSION: u32 = 4;

/// A trial as stored: the loop's [`Trial`] plus what the executor adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The trial (its `state` says where it stands).
    pub trial: Trial,
    /// Files the trial wrote (weights, logs), relative to the run directory.
    pub artefacts: Vec<String>,
    /// The end of the trial's stderr when it failed.
    pub stderr_tail: Option<String>,
}

/// A stored proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalRecord {
    /// Its number in the run, from 0.
    pub id: usize,
    /// The round that asked for it.
    pub round: usize,
    /// What was proposed and where it came from.
    pub proposal: Proposal,
}

/// A stored proxy score of one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyScore {
    /// The candidate's configuration as text ([`crate::configspace::Config`]'s `name=value`
    /// form; `cell=ARCH` on an NB201 table).
    pub candidate: String,
    /// The proxy.
    pub proxy: String,
    /// The score (`None` when not finite).
    pub value: Option<f64>,
    /// Milliseconds it took.
    pub ms: f64,
}

/// One metric of a trial after one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// The trial.
    pub trial: usize,
    /// The epoch, from 1.
    pub epoch: usize,
    /// Its name (`train_loss`, `valid_acc`, ...).
    pub name: String,
    /// Its value.
    pub value: f64,
}

/// Errors of a store. Every one leaves what was stored before intact.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be opened or created.
    #[error("cannot open the run database {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not a SQLite database, or is damaged.
    #[error("the run database {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },
    /// Another process holds the database.
    #[error("the run database {path} is locked by another process (is another autoagent using this run directory?)")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// Written by a newer autoagent.
    #[error("the run database {path} has schema version {found}, newer than this autoagent's {supported}: upgrade autoagent to open it")]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// Ours.
        supported: u32,
    },
    /// The disk is full.
    #[error("the disk holding the run database {path} is full: free some space and resume the run")]
    DiskFull {
        /// The file.
        path: PathBuf,
    },
    /// Any other failed statement.
    #[error("run database {path}: {reason}")]
    Sql {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A stored value does not parse (the database was edited by hand).
    #[error("run database: bad stored value in {what}: {reason}")]
    Decode {
        /// Where.
        what: String,
        /// Why.
        reason: String,
    },
}

/// Everything a run stores.
pub trait Store: Send {
    /// A metadata value (`config`, `seed`, `version`, `status`, ...).
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Set a metadata value.
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError>;

    /// Append a proposal of `round`; returns its number.
    fn add_proposal(&mut self, round: usize, proposal: &Proposal) -> Result<usize, StoreError>;
    /// All proposals, in order.
    fn proposals(&self) -> Result<Vec<ProposalRecord>, StoreError>;

    /// Store a proxy score (replacing an earlier one of the same architecture and proxy).
    fn put_proxy_score(&mut self, score: &ProxyScore) -> Result<(), StoreError>;
    /// All proxy scores, by architecture then proxy.
    fn proxy_scores(&self) -> Result<Vec<ProxyScore>, StoreError>;

    /// Insert or replace the trial with `record.trial.id`.
    fn put_trial(&mut self, record: &TrialRecord) -> Result<(), StoreError>;
    /// All trials, by id.
    fn trials(&self) -> Result<Vec<TrialRecord>, StoreError>;
    /// Mark every running or pending trial as lost (the agent that ran them is gone); returns
    /// how many.
    fn mark_lost(&mut self) -> Result<usize, StoreError>;

    /// Record a metric of a trial after an epoch (replacing the same one).
    fn add_metric(&mut self, metric: &Metric) -> Result<(), StoreError>;
    /// The metrics of `trial`, by epoch then name.
    fn metrics(&self, trial: usize) -> Result<Vec<Metric>, StoreError>;

    /// Append a rejected proposal.
    fn add_failed(&mut self, failed: &FailedProposal) -> Result<(), StoreError>;
    /// All rejected proposals, in order.
    fn failed(&self) -> Result<Vec<FailedProposal>, StoreError>;

    /// Store an LLM exchange verbatim (by its index).
    fn add_exchange(&mut self, exchange: &Exchange) -> Result<(), StoreError>;
    /// All exchanges, by index.
    fn exchanges(&self) -> Result<Vec<Exchange>, StoreError>;
}
