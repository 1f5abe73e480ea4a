//! # autoagent-agent
//!
//! The agent loop: strategies (random, regularized evolution, LLM), LLM backends, the run store,
//! the trial executor and reports. Built next (issue 5); this crate is an empty member of the
//! workspace until then.
