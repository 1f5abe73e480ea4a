//! Errors of the evaluator crate.

use crate::data::DataError;

/// Everything that can go wrong while decoding architectures, building networks, loading data or
/// training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An architecture string that is not a valid cell of the search space.
    #[error("invalid architecture '{arch}': {reason}")]
    InvalidArch {
        /// The string as given.
        arch: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value out of its domain (batch size 0, negative learning rate, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An unknown device name.
    #[error("unknown device '{0}' (expected cpu or cuda:N)")]
    Device(String),
    /// Dataset problems: missing, corrupt, download failures.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Tensor errors from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file the command needs is not there (the message says how to get it).
    #[error("{0}")]
    Missing(String),
    /// File system errors with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of the evaluator crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
