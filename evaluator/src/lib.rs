//! # autoagent-evaluator
//!
//! Search spaces, networks, data and training for autoagent:
//!
//! - [`nb201`]: the NAS-Bench-201 cell space (arch strings, sampling, mutation, isomorphism);
//! - [`net`]: the NB201 network in candle, its parameter and FLOPs counts;
//! - [`kernels`]: fast CPU convolution and average pooling with gradients of any order;
//! - [`data`]: CIFAR-10/100, MNIST and Fashion-MNIST in their official formats, downloaded into a
//!   cache with checksums;
//! - [`train`]: SGD training with NB201's protocol and test accuracy;
//! - [`tabular`]: a user's CSV as a task: column types, the target's problem, metrics, splits.

#![warn(missing_docs)]

#[macro_use]
mod unroll;

pub mod calibrate;
pub mod checkpoint;
pub mod data;
mod dgemm;
pub mod error;
pub mod kernels;
pub mod nats;
pub mod nb201;
pub mod net;
pub mod proxy;
pub mod sgemm;
pub mod table;
pub mod tabular;
pub mod train;

pub use error::{Error, Result};
