//! # autoagent-agent
//!
//! The agent loop ([`runner`]): strategies ([`strategy`]: random, regularized evolution;
//! [`llm_strategy`]: the LLM) behind one ask/tell trait, LLM backends ([`llm`]), proxy ranking
//! of each round's candidates ([`ranker`]), tasks ([`task`]: NAS-Bench-201 table lookups or real
//! training; [`trial`]: trials in child processes), budgets ([`budget`]), prompt templates ([`prompts`]) and the run store ([`store`]).
//! [`configspace`]: search spaces as data (typed parameters with conditions, configurations,
//! sample/mutate/crossover/neighbours/encode, narrowing, prompt table and reply schema).
//! [`scheduler`]: multi-fidelity scheduling (successive halving, Hyperband, ASHA).
//! Run directories are read back as reports and listings ([`report`]), and a trained trial is
//! exported as a model folder and predicts with it ([`export`]).

#![warn(missing_docs)]

pub mod budget;
pub mod configspace;
pub mod error_context;
pub mod export;
pub mod final_model;
pub mod history;
pub mod llm;
pub mod llm_strategy;
pub mod logs;
pub mod prompts;
pub mod ranker;
pub mod report;
pub mod runner;
pub mod scheduler;
pub mod score;
pub mod space;
pub mod store;
pub mod strategy;
pub mod tabular_rank;
pub mod tabular_task;
pub mod task;
pub mod trial;
