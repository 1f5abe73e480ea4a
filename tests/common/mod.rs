//! Helpers shared by the end-to-end tests of the `autoagent` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared/data` beside the checkout (or `$AUTOAGENT_SHARED`).
pub fn shared() -> PathBuf {
    match std::env::var_os("AUTOAGENT_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    }
}

/// Run the `autoagent` binary with `args` in `dir` and wait for it.
#[allow(dead_code)] // used by some of the test binaries that include this module
pub fn autoagent_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoagent")).current_dir(dir).args(args).output().unwrap()
}

/// A failed command: exit code 2 and exactly one line on stderr, starting with `error:` and
/// containing `needle`.
#[allow(dead_code)] // used by some of the test binaries that include this module
pub fn assert_one_line_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "expected '{needle}' in: {err}");
}

/// Poll `cond` every 20 ms for up to `secs` seconds; whether it held.
#[allow(dead_code)] // used by some of the test binaries that include this module
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}
