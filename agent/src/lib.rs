//! # autoagent-agent
//!
//! The agent loop: strategies (random, regularized evolution, LLM), LLM backends, the run store,
//! the trial executor and reports.

#![warn(missing_docs)]

pub mod llm;
