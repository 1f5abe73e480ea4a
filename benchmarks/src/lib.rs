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
//!   and without proxy ranking, next to the published ones;
//! - [`search_schedulers`]: with `bench search --schedulers`, the agent's multi-fidelity
//!   schedulers on the NB201 table's 12- and 200-epoch rungs, at equal training epochs;
//! - [`budget`]: the final test accuracy a wall-clock budget buys, autoagent's scheduler against
//!   fixed-epoch trials and Optuna (TPE + Hyperband) driving PyTorch;
//! - [`tabular`]: autoagent on the tabular fixtures' fixed splits against FLAML, AutoGluon and a
//!   default LightGBM, every tool's test predictions scored one way ([`tabular_table`]: the
//!   tables);
//! - [`cheap_signal`]: how well an MLP's zero-cost proxies and the lower fidelities rank tabular
//!   pipelines against their full validation, on the fixtures.

pub mod budget;
pub mod cheap_signal;
pub mod proxies_nb201;
pub mod proxies_speed;
pub mod search_nb201;
pub mod search_schedulers;
pub mod tabular;
pub mod tabular_table;
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

/// The PyTorch reference scripts built into the binary (`benchmarks/reference/`).
const REFERENCE_SCRIPTS: [(&str, &str); 4] = [
    ("nb201_torch.py", include_str!("../reference/nb201_torch.py")),
    ("nb201_proxies_torch.py", include_str!("../reference/nb201_proxies_torch.py")),
    ("budget_optuna.py", include_str!("../reference/budget_optuna.py")),
    ("tabular_peers.py", include_str!("../reference/tabular_peers.py")),
];

/// A PyTorch reference script: the file `given`, or the copy built into the binary, written with
/// its sibling into a temporary folder removed on drop, so the benchmarks run from any directory.
pub(crate) struct ReferenceScript {
    path: std::path::PathBuf,
    temporary: Option<std::path::PathBuf>,
}

impl ReferenceScript {
    pub(crate) fn new(given: Option<&std::path::Path>, name: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        if let Some(p) = given {
            anyhow::ensure!(p.is_file(), "no reference script at {}", p.display());
            return Ok(ReferenceScript {
                path: p.to_path_buf(),
                temporary: None,
            });
        }
        let dir = std::env::temp_dir().join(format!("autoagent-reference-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (file, text) in REFERENCE_SCRIPTS {
            std::fs::write(dir.join(file), text).with_context(|| format!("cannot write {}", dir.join(file).display()))?;
        }
        Ok(ReferenceScript {
            path: dir.join(name),
            temporary: Some(dir),
        })
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for ReferenceScript {
    fn drop(&mut self) {
        if let Some(dir) = &self.temporary {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_built_in_reference_scripts_are_written_side_by_side_and_removed() {
        let script = super::ReferenceScript::new(None, "nb201_proxies_torch.py").unwrap();
        let dir = script.path().parent().unwrap().to_path_buf();
        assert!(script.path().is_file() && dir.join("nb201_torch.py").is_file());
        drop(script);
        assert!(!dir.exists());
    }
}

/// Mean and sample standard deviation (0 for one value).
pub(crate) fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}
