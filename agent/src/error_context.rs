//! Errors that say what was being done when they happened (`cannot read FILE`), as `anyhow`'s
//! `context` gives them: the context is the error's message and the error it wraps its source,
//! so a printer that walks the source chain shows `context: cause`.

use std::error::Error;

/// An error and what was being done when it happened.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct Failed {
    context: String,
    #[source]
    source: Box<dyn Error + Send + Sync + 'static>,
}

/// `with_context` on results: the error wrapped in a [`Failed`].
pub trait Context<T> {
    /// The error wrapped in a [`Failed`] whose message `f` gives.
    fn with_context(self, f: impl FnOnce() -> String) -> Result<T, Failed>;
}

impl<T, E: Error + Send + Sync + 'static> Context<T> for Result<T, E> {
    fn with_context(self, f: impl FnOnce() -> String) -> Result<T, Failed> {
        self.map_err(|e| Failed {
            context: f(),
            source: Box::new(e),
        })
    }
}

/// An error and its sources on one line, joined by `: ` (as `anyhow` prints `{:#}`).
pub fn one_line(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_comes_first_and_the_cause_after_it() {
        let io: Result<(), std::io::Error> = Err(std::io::Error::other("disk on fire"));
        let e = io.with_context(|| "cannot write f".into()).unwrap_err();
        assert_eq!(e.to_string(), "cannot write f");
        assert_eq!(one_line(&e), "cannot write f: disk on fire");
    }
}
