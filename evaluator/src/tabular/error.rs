//! Errors of tabular data: each is one line that names the file, the line, the column or the
//! class involved, and says what to do where there is a choice.

/// What can be wrong with a CSV task's data.
#[derive(Debug, thiserror::Error)]
pub enum TabularError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file has no header row.
    #[error("{0}: the file is empty (a CSV task needs a header row and data rows)")]
    Empty(String),
    /// The file has a header and no data rows.
    #[error("{0}: the file has a header row and no data rows")]
    HeaderOnly(String),
    /// A row with another number of fields than the header.
    #[error("{path}: line {line} has {found} fields, the header has {expected}")]
    Ragged {
        /// The file.
        path: String,
        /// The 1-based line number.
        line: u64,
        /// Fields on that line.
        found: usize,
        /// Fields in the header.
        expected: usize,
    },
    /// Bytes that are not UTF-8.
    #[error("{path}: line {line} is not UTF-8 (save the file as UTF-8)")]
    NotUtf8 {
        /// The file.
        path: String,
        /// The 1-based line number.
        line: u64,
    },
    /// Any other CSV syntax error.
    #[error("{path}: {message}")]
    Csv {
        /// The file.
        path: String,
        /// The csv crate's message.
        message: String,
    },
    /// Two columns with one name.
    #[error("{path}: the column name '{name}' appears twice (columns {first} and {second}); names must be unique")]
    DuplicateColumn {
        /// The file.
        path: String,
        /// The name.
        name: String,
        /// 1-based position of its first use.
        first: usize,
        /// 1-based position of its second use.
        second: usize,
    },
    /// A header cell with no name.
    #[error("{path}: column {position} has no name in the header")]
    UnnamedColumn {
        /// The file.
        path: String,
        /// 1-based position.
        position: usize,
    },
    /// The target column is not in the file.
    #[error("no column '{name}' in the data{}", closest.as_ref().map(|c| format!(" (did you mean '{c}'?)")).unwrap_or_default())]
    NoTarget {
        /// The name asked for.
        name: String,
        /// The closest column name, if one is close.
        closest: Option<String>,
    },
    /// A target the problem cannot be learnt from.
    #[error("target '{name}': {reason}")]
    BadTarget {
        /// The target column.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A split that does not fit the data.
    #[error("{0}")]
    Split(String),
    /// Data that cannot be used for another reason (no usable feature, mismatched test file).
    #[error("{0}")]
    Data(String),
    /// A value of an option that does not apply (`--metric auc` on a regression).
    #[error("{0}")]
    Option(String),
}

/// Result alias of tabular data.
pub type Result<T, E = TabularError> = std::result::Result<T, E>;
