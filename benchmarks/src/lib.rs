//! # autoagent-benchmarks
//!
//! Benchmark harnesses of autoagent. Each prints a table and can write it to
//! `benchmarks/results/`:
//!
//! - [`train_speed`]: forward, forward+backward and training throughput of NB201 networks on
//!   CPU, side by side with PyTorch running the same network (`benchmarks/reference/`);
//! - [`proxies_speed`]: milliseconds per architecture per zero-cost proxy, next to PyTorch.

pub mod proxies_speed;
pub mod train_speed;
