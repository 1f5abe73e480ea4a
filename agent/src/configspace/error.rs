//! The one error type of spaces and configurations: every variant about a parameter names it.

/// What is wrong with a space, a configuration, a narrowing or a candidate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A name that is not a parameter of the space.
    #[error("unknown parameter '{name}' (known: {known})")]
    Unknown {
        /// The name given.
        name: String,
        /// The space's parameters, comma-separated.
        known: String,
    },
    /// An active parameter without a value.
    #[error("parameter '{name}' is missing{when}")]
    Missing {
        /// The parameter.
        name: String,
        /// Why it is active, as ` (active because augment is crop_flip_cutout)`, or empty.
        when: String,
    },
    /// A value for a parameter whose condition does not hold.
    #[error("parameter '{name}' is inactive (it exists only when {condition})")]
    Inactive {
        /// The parameter.
        name: String,
        /// Its condition, as text.
        condition: String,
    },
    /// A value of the wrong type.
    #[error("parameter '{name}': expected {expected}, found {found}")]
    WrongType {
        /// The parameter.
        name: String,
        /// The type it takes.
        expected: String,
        /// What was given.
        found: String,
    },
    /// A value of the right type outside the parameter's range or choices.
    #[error("parameter '{name}': {value} is not {domain}")]
    OutOfRange {
        /// The parameter.
        name: String,
        /// The value given.
        value: String,
        /// What the parameter admits (`one of a, b`, `1 to 5`).
        domain: String,
    },
    /// A parameter defined or narrowed wrongly (empty or inverted range, no choices, ...).
    #[error("parameter '{name}': {reason}")]
    Invalid {
        /// The parameter.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Input that is not about one parameter (a candidate that is not an object, a narrowing
    /// clause without `=`).
    #[error("{0}")]
    Malformed(String),
}

impl Error {
    /// The parameter the error is about, if it is about one.
    pub fn param(&self) -> Option<&str> {
        match self {
            Error::Unknown { name, .. }
            | Error::Missing { name, .. }
            | Error::Inactive { name, .. }
            | Error::WrongType { name, .. }
            | Error::OutOfRange { name, .. }
            | Error::Invalid { name, .. } => Some(name),
            Error::Malformed(_) => None,
        }
    }
}
