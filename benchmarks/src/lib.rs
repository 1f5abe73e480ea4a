//! # autoagent-benchmarks
//!
//! Benchmark harnesses of autoagent. Each prints a table and can write it to
//! `benchmarks/results/`:
//!
//! - [`train_speed`]: forward, forward+backward and training throughput of NB201 networks on
//!   CPU, side by side with PyTorch running the same network (`benchmarks/reference/`);
//! - [`proxies_speed`]: milliseconds per architecture per zero-cost proxy, next to PyTorch;
//! - [`proxies_nb201`]: rank correlations of the proxies with NAS-Bench-201 accuracies, next to
//!   the published ones;
//! - [`search_nb201`]: the test accuracy each search strategy picks after n evaluations, with
//!   and without proxy ranking, next to the published ones.

pub mod proxies_nb201;
pub mod proxies_speed;
pub mod search_nb201;
pub mod train_speed;

/// Run a PyTorch reference script and return its standard output; a failure names the exit
/// status and the last lines of its standard error.
pub(crate) fn run_reference(cmd: &mut std::process::Command, python: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let out = cmd.output().with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        anyhow::bail!(
            "the PyTorch reference failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(out.stdout)
}
