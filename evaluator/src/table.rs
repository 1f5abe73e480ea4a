//! NAS-Bench-201 as data: the benchmark table in our interchange format, with lookups by
//! architecture string or index.
//!
//! # The interchange format
//!
//! A CSV file with a header row and one row per architecture, in the official NB201 index order
//! (`arch_index` 0..15624). Required columns:
//!
//! | column | meaning |
//! |---|---|
//! | `arch_index` | official NB201 / NATS-Bench topology index |
//! | `arch_str` | the arch string, `\|op~0\|+\|op~0\|op~1\|+\|op~0\|op~1\|op~2\|` |
//! | `iso_group` | index of the first architecture of its isomorphism class (NB201's unique string) |
//!
//! Every other column is numeric (empty when unknown) and is served by name through
//! [`Nb201Table::value`]. The file we ship (`shared/data/nb201/nb201.csv`) has:
//!
//! - accuracies in percent, mean over seeds, 200-epoch schedule: `cifar10_valid_acc`
//!   (cifar10-valid, x-valid), `cifar10_test_acc` (cifar10, ori-test), `cifar100_valid_acc`,
//!   `cifar100_test_acc` (x-test), `imagenet16_valid_acc`, `imagenet16_test_acc` (x-test); the
//!   same six with the suffix `_12ep` for the 12-epoch schedule; `cifar10valid_test_acc`
//!   (cifar10-valid trained, ori-test: the column Abdelfattah et al. correlate against) and
//!   `cifar10_test_acc_alt_nb201file` (an older benchmark file's numbers);
//! - costs: `params_M`, `flops_M` (NB201's counter), and HW-NAS-Bench latencies
//!   `hwnb_{edgegpu,raspi4,pixel3,edgetpu,eyeriss,fpga}_latency_ms` (−1 where not measured).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::nb201::Arch;

/// The NB201 benchmark table.
#[derive(Debug, Clone)]
pub struct Nb201Table {
    columns: Vec<String>,
    /// Per row: the architecture, its isomorphism group, and the numeric columns (by position in
    /// `columns`; `None` when empty).
    rows: Vec<(Arch, usize, Vec<Option<f64>>)>,
    by_arch: HashMap<String, usize>,
}

impl Nb201Table {
    /// The table at `truth`, or by default `nb201/nb201.csv` in the data cache; a missing file
    /// says how to get one. Returns the table and the path it was read from.
    pub fn load_or_default(truth: Option<&Path>) -> Result<(Self, PathBuf)> {
        let path = truth
            .map(Path::to_path_buf)
            .unwrap_or_else(|| crate::data::data_root(None).join("nb201").join("nb201.csv"));
        if !path.is_file() {
            return Err(Error::Missing(format!(
                "no NB201 table at {} (pass --truth FILE in the interchange format, or convert the official archive with `autoagent import nats`)",
                path.display()
            )));
        }
        Ok((Self::load(&path)?, path))
    }

    /// Read a table in the interchange format (see the module docs).
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Config(format!("{}: {msg}", path.display()));
        let mut rdr = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
        let headers = rdr.headers().map_err(|e| bad(e.to_string()))?.clone();
        let col = |name: &str| headers.iter().position(|h| h == name).ok_or_else(|| bad(format!("missing column `{name}`")));
        let (i_index, i_arch, i_iso) = (col("arch_index")?, col("arch_str")?, col("iso_group")?);
        let numeric: Vec<usize> = (0..headers.len()).filter(|&i| i != i_index && i != i_arch && i != i_iso).collect();
        let columns = numeric.iter().map(|&i| headers[i].to_string()).collect();
        let mut rows = Vec::new();
        let mut by_arch = HashMap::new();
        for (line, rec) in rdr.records().enumerate() {
            let line = line + 2; // 1-based, after the header
            let rec = rec.map_err(|e| bad(e.to_string()))?;
            let index: usize = rec[i_index]
                .trim()
                .parse()
                .map_err(|_| bad(format!("line {line}: bad arch_index `{}`", &rec[i_index])))?;
            if index != rows.len() {
                return Err(bad(format!(
                    "line {line}: arch_index {index}, expected {} (rows must be in index order)",
                    rows.len()
                )));
            }
            let arch = Arch::parse(&rec[i_arch]).map_err(|e| bad(format!("line {line}: {e}")))?;
            let iso: usize = rec[i_iso]
                .trim()
                .parse()
                .map_err(|_| bad(format!("line {line}: bad iso_group `{}`", &rec[i_iso])))?;
            let values = numeric
                .iter()
                .map(|&i| {
                    let v = rec[i].trim();
                    if v.is_empty() {
                        Ok(None)
                    } else {
                        v.parse::<f64>()
                            .map(Some)
                            .map_err(|_| bad(format!("line {line}: column `{}`: `{v}` is not a number", &headers[i])))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            if by_arch.insert(arch.to_string(), index).is_some() {
                return Err(bad(format!("line {line}: {arch} appears twice")));
            }
            rows.push((arch, iso, values));
        }
        if rows.is_empty() {
            return Err(bad("no rows".into()));
        }
        Ok(Nb201Table { columns, rows, by_arch })
    }

    /// Number of architectures.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows (never true for a loaded table).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The numeric columns, in file order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The architecture at `index`.
    pub fn arch(&self, index: usize) -> Option<Arch> {
        self.rows.get(index).map(|r| r.0)
    }

    /// The index of an architecture (exactly as written; isomorphic cells have their own rows).
    pub fn index_of(&self, arch: &Arch) -> Option<usize> {
        self.by_arch.get(&arch.to_string()).copied()
    }

    /// The first index of the architecture's isomorphism class.
    pub fn iso_group(&self, index: usize) -> Option<usize> {
        self.rows.get(index).map(|r| r.1)
    }

    /// The value of a numeric column for the architecture at `index`: `Ok(None)` when the cell is
    /// empty, an error for an unknown column or index.
    pub fn value(&self, index: usize, column: &str) -> Result<Option<f64>> {
        let c = self
            .columns
            .iter()
            .position(|n| n == column)
            .ok_or_else(|| Error::Config(format!("unknown NB201 column `{column}` (known: {})", self.columns.join(", "))))?;
        let row = self
            .rows
            .get(index)
            .ok_or_else(|| Error::Config(format!("NB201 index {index} out of range 0..{}", self.rows.len())))?;
        Ok(row.2[c])
    }

    /// [`Nb201Table::value`] by architecture.
    pub fn value_of(&self, arch: &Arch, column: &str) -> Result<Option<f64>> {
        let index = self.index_of(arch).ok_or_else(|| Error::Config(format!("{arch} is not in the table")))?;
        self.value(index, column)
    }
}
