//! # autoagent-benchmarks
//!
//! Benchmark harnesses of autoagent. Each prints a table and can write it to
//! `benchmarks/results/`:
//!
//! - [`train_speed`]: forward, forward+backward and training throughput of NB201 networks on
//!   CPU, side by side with PyTorch running the same network (`benchmarks/reference/`).

pub mod train_speed;
