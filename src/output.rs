//! Printing to stdout when stdout may be a pipe that closes early (`autoagent predict … | head -1`):
//! a closed stdout is the end of the output, not an error.

use std::io::Write;

/// `println!` that stops quietly at a closed stdout ([`out_line`]); evaluates to false then.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::output::out_line(&format!($($t)*))
    };
}

/// `eprintln!` that never panics ([`err_line`]): progress and notes never end a command.
macro_rules! errln {
    ($($t:tt)*) => {
        $crate::output::err_line(&format!($($t)*))
    };
}

/// Whether `err` says stdout's reader is gone (a broken pipe).
pub fn stdout_closed(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::BrokenPipe
}

/// Print `s` and a newline on stdout (flushed, so a closed pipe is seen at once). `Ok(true)`
/// when printed, `Ok(false)` when stdout is closed (stop printing, and end normally); other
/// write errors are errors.
pub fn try_out_line(s: &str) -> std::io::Result<bool> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{s}").and_then(|_| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if stdout_closed(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Print `s` and a newline on stdout; false when stdout is closed or unwritable (the caller
/// stops printing and ends normally).
pub fn out_line(s: &str) -> bool {
    try_out_line(s).unwrap_or(false)
}

/// Print `s` as it is on stdout; false when stdout is closed or unwritable.
pub fn out_text(s: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes()).and_then(|_| out.flush()).is_ok()
}

/// Print `s` and a newline on stderr; a closed or unwritable stderr is ignored (progress and
/// notes never end a command).
pub fn err_line(s: &str) {
    let _ = writeln!(std::io::stderr(), "{s}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_pipe_means_stdout_is_closed() {
        assert!(stdout_closed(&std::io::Error::from(std::io::ErrorKind::BrokenPipe)));
        assert!(!stdout_closed(&std::io::Error::from(std::io::ErrorKind::PermissionDenied)));
    }
}
