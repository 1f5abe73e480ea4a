//! Importer for the official NATS-Bench topology archive (`NATS-tss-v1_0-3ffb9-simple`, the
//! NAS-Bench-201 cell space with its training results) into our NB201 interchange CSV
//! (see [`crate::table`]).
//!
//! # The archive, as the official API reads it
//!
//! The archive is the folder the official API opens with `create(path, 'tss', fast_mode=True)`
//! (or the `.tar` it is distributed as; both are accepted here). Everything below is how
//! NATS-Bench's `nats_bench/api_topology.py` (`NATStopology.__init__`, `get_more_info`) and
//! `nats_bench/api_utils.py` (`pickle_load`, `NASBenchMetaAPI.reload` / `_prepare_info`,
//! `ArchResults`, `ResultsCount`) read it, and how AutoDL-Projects'
//! `exps/NATS-Bench/tss-collect.py` (`simplify`) wrote it.
//!
//! - Every file is a pickle (protocol 4) compressed with bzip2; the extension `PICKLE_EXT` is
//!   `pickle.pbz2`.
//! - `meta.pickle.pbz2`: a dict whose key `'meta_archs'` is the list of the 15,625 arch strings in
//!   index order (`api.arch(i)`). The writer also stores `'total_archs'`, `'arch2infos'` (None)
//!   and `'evaluated_indexes'` (an empty set); they are not used.
//! - `{index:06d}.pickle.pbz2` (`reload` falls back to `{index}.pickle.pbz2`), one per
//!   architecture: a `collections.OrderedDict` mapping the hyper-parameter key `'12'` or `'200'`
//!   (12- and 200-epoch schedules) to an `ArchResults.state_dict()`. No class instance is
//!   stored, but some containers are `OrderedDict`s, and numbers that came out of numpy (such as
//!   `params`) may be pickled as numpy scalars; both are read here.
//! - An `ArchResults` state is a dict: `'arch_index'`, `'arch_str'`, `'dataset_seed'` (dataset →
//!   sorted list of int seeds), `'all_results'` (`(dataset, seed)` tuple → `ResultsCount` state),
//!   `'clear_net_done'`. Datasets are `'cifar10-valid'` (trained on the 25k train split),
//!   `'cifar10'` (train + valid), `'cifar100'`, `'ImageNet16-120'`.
//! - A `ResultsCount` state is a dict: `'name'`, `'net_state_dict'` (None in the simple archive),
//!   `'train_acc1es'`, `'train_acc5es'`, `'train_losses'`, `'train_times'` (an OrderedDict),
//!   `'arch_config'`, `'params'` (millions), `'flop'` (millions), `'seed'`, `'epochs'`,
//!   `'latency'`, `'eval_names'`, and `'eval_acc1es'` / `'eval_losses'` / `'eval_times'` keyed
//!   `'{split}@{epoch}'` with the splits `'x-valid'`, `'x-test'`, `'ori-test'`.
//!
//! `ArchResults.get_metrics(dataset, split, iepoch=None, is_random=False)` (what
//! `get_more_info(..., is_random=False)` returns) reads `eval_acc1es['{split}@{epochs-1}']` of
//! every seed in `dataset_seed[dataset]` and averages them (`np.mean`); `get_compute_costs`
//! averages `flop` and `params` the same way.
//!
//! # The columns we fill
//!
//! Exactly as `shared/data/nb201/README.md` says the shipped `nb201.csv` columns were derived, all
//! accuracies of the last epoch, mean over seeds:
//!
//! | column | hp | dataset | split |
//! |---|---|---|---|
//! | `cifar10_valid_acc` | `'200'` | `cifar10-valid` | `x-valid` |
//! | `cifar10_test_acc` | `'200'` | `cifar10` | `ori-test` |
//! | `cifar100_valid_acc` / `cifar100_test_acc` | `'200'` | `cifar100` | `x-valid` / `x-test` |
//! | `imagenet16_valid_acc` / `imagenet16_test_acc` | `'200'` | `ImageNet16-120` | `x-valid` / `x-test` |
//! | the same six with `_12ep` | `'12'` | as above | as above |
//! | `cifar10valid_test_acc` | `'200'` | `cifar10-valid` | `ori-test` |
//! | `params_M`, `flops_M` | `'200'` | `cifar10` | `params`, `flop` (`get_cost_info(i, 'cifar10', hp='200')`) |
//!
//! A dataset missing from `dataset_seed`, or a split missing for one of its seeds, leaves the cell
//! empty (the API raises or answers None there). Always empty: the six `hwnb_*_latency_ms` columns (they
//! come from HW-NAS-Bench, another benchmark) and `cifar10_test_acc_alt_nb201file` (an older
//! NB201 file). `iso_group` is the index of the first architecture in the archive whose
//! [`Arch::canonical`] form (NB201's unique string) is the same, so each group is numbered by its
//! smallest member and that member is its own group, as [`crate::table::Nb201Table`] expects.
//! Numbers are written in full (shortest round-trip form), not rounded.
//!
//! # Implementation notes
//!
//! The pickles are read by a small restricted unpickler in this module: it builds plain values
//! (dicts, lists, tuples, strings, numbers), treats `collections.OrderedDict` as a dict, decodes
//! numpy scalars (`numpy.core.multiarray.scalar`) into numbers, and never runs code. (serde-pickle
//! 1.2 rejects the `OrderedDict` at the top of every architecture file.) The `-full` archive, whose
//! files also hold trained weights (torch tensors, stored as persistent references), is refused
//! with an error; its `-simple` sibling has the same numbers. A missing meta file, a
//! corrupt bzip2 stream, an unreadable pickle, an unexpected structure and a missing architecture
//! are errors naming the file. The output is written to a temporary file in the target directory
//! and renamed into place, so a failed import leaves no output behind.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::nb201::Arch;

use self::pickle::{Pickle, Value};

/// Name of the official archive folder (and, with `.tar`, of the file it is distributed as).
pub const ARCHIVE_NAME: &str = "NATS-tss-v1_0-3ffb9-simple";

/// The meta file of the archive.
pub const META_FILE: &str = "meta.pickle.pbz2";

/// The extension of every archive file (`PICKLE_EXT` in the official API).
pub const PICKLE_EXT: &str = "pickle.pbz2";

/// Columns of the interchange CSV, in file order (the header of `shared/data/nb201/nb201.csv`).
pub const COLUMNS: [&str; 25] = [
    "arch_index",
    "arch_str",
    "cifar10_valid_acc",
    "cifar10_test_acc",
    "cifar100_valid_acc",
    "cifar100_test_acc",
    "imagenet16_valid_acc",
    "imagenet16_test_acc",
    "params_M",
    "flops_M",
    "hwnb_edgegpu_latency_ms",
    "hwnb_raspi4_latency_ms",
    "hwnb_pixel3_latency_ms",
    "hwnb_edgetpu_latency_ms",
    "hwnb_eyeriss_latency_ms",
    "hwnb_fpga_latency_ms",
    "cifar10_valid_acc_12ep",
    "cifar10_test_acc_12ep",
    "cifar100_valid_acc_12ep",
    "cifar100_test_acc_12ep",
    "imagenet16_valid_acc_12ep",
    "imagenet16_test_acc_12ep",
    "cifar10_test_acc_alt_nb201file",
    "cifar10valid_test_acc",
    "iso_group",
];

/// Number of numeric columns (all but `arch_index`, `arch_str` and `iso_group`).
pub const NUM_VALUES: usize = 22;

/// Where a numeric column comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// Last-epoch top-1 accuracy of `split`, mean over the seeds of `dataset`, schedule `hp`.
    Acc {
        hp: &'static str,
        dataset: &'static str,
        split: &'static str,
    },
    /// A `ResultsCount` cost field (`params` or `flop`), mean over the seeds of `cifar10`, hp '200'.
    Cost(&'static str),
    /// Not in the archive.
    Elsewhere,
}

const fn acc(hp: &'static str, dataset: &'static str, split: &'static str) -> Source {
    Source::Acc { hp, dataset, split }
}

/// The numeric columns (`COLUMNS[2..24]`) and their sources.
const SOURCES: [Source; NUM_VALUES] = [
    acc("200", "cifar10-valid", "x-valid"),
    acc("200", "cifar10", "ori-test"),
    acc("200", "cifar100", "x-valid"),
    acc("200", "cifar100", "x-test"),
    acc("200", "ImageNet16-120", "x-valid"),
    acc("200", "ImageNet16-120", "x-test"),
    Source::Cost("params"),
    Source::Cost("flop"),
    Source::Elsewhere,
    Source::Elsewhere,
    Source::Elsewhere,
    Source::Elsewhere,
    Source::Elsewhere,
    Source::Elsewhere,
    acc("12", "cifar10-valid", "x-valid"),
    acc("12", "cifar10", "ori-test"),
    acc("12", "cifar100", "x-valid"),
    acc("12", "cifar100", "x-test"),
    acc("12", "ImageNet16-120", "x-valid"),
    acc("12", "ImageNet16-120", "x-test"),
    Source::Elsewhere,
    acc("200", "cifar10-valid", "ori-test"),
];

/// Decompressed size above which a file is rejected (an official file is a few MB at most).
const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Architecture files decoded together when reading a `.tar`.
const TAR_BATCH: usize = 256;

/// What can go wrong while importing the archive. Every message names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// A file or folder that cannot be read or written.
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error (part of the message, so not repeated as a source).
        error: io::Error,
    },
    /// The archive has no `meta.pickle.pbz2`.
    #[error("{}: no {meta} in it; expected the official `{name}` folder or a .tar of it{hint}", .archive.display(), meta = META_FILE, name = ARCHIVE_NAME)]
    MissingMeta {
        /// The folder or tar file given.
        archive: PathBuf,
        /// A suggestion (with leading punctuation) or empty.
        hint: String,
    },
    /// A file that is not a valid bzip2 stream (corrupt or truncated).
    #[error("{file}: not a valid bzip2 stream ({reason})")]
    Bzip2 {
        /// The file (for a tar: `ARCHIVE.tar:member`).
        file: String,
        /// What the decompressor said.
        reason: String,
    },
    /// A file whose content is not a readable pickle.
    #[error("{file}: not a readable pickle: {reason}")]
    Pickle {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A pickle that does not have the structure the official API reads.
    #[error("{file}: unexpected structure at {at}: {reason}")]
    Structure {
        /// The file.
        file: String,
        /// Where in the pickle, e.g. `['200']['dataset_seed']`.
        at: String,
        /// What was expected and found.
        reason: String,
    },
    /// Architectures listed in the meta file without a file of their own.
    #[error("{}: architecture {index} is missing (no {name}); {missing} of the {total} architectures in {meta} have no file", .archive.display(), meta = META_FILE)]
    MissingArch {
        /// The folder or tar file.
        archive: PathBuf,
        /// The first missing index.
        index: usize,
        /// The file name expected for it.
        name: String,
        /// How many are missing.
        missing: usize,
        /// How many the meta file lists.
        total: usize,
    },
    /// Something else about the archive as a whole (not a folder or tar, duplicate files, ...).
    #[error("{}: {reason}", .path.display())]
    Archive {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of this module.
pub type Result<T, E = NatsError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> NatsError + '_ {
    move |error| NatsError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// One imported architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsRow {
    /// The official index.
    pub index: usize,
    /// The cell.
    pub arch: Arch,
    /// Index of the first architecture with the same canonical form.
    pub iso_group: usize,
    /// The numeric columns (`COLUMNS[2..24]`), `None` where the archive has nothing.
    pub values: [Option<f64>; NUM_VALUES],
}

/// The archive converted to the interchange table.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsTable {
    /// One row per architecture, in index order.
    pub rows: Vec<NatsRow>,
}

impl NatsTable {
    /// Number of architectures.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows (never true for an imported table).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The value of a numeric column (`None` for an empty cell, an unknown column or index).
    pub fn value(&self, index: usize, column: &str) -> Option<f64> {
        let c = COLUMNS[2..2 + NUM_VALUES].iter().position(|&n| n == column)?;
        self.rows.get(index)?.values[c]
    }

    /// Number of isomorphism classes.
    pub fn num_iso_groups(&self) -> usize {
        self.rows.iter().filter(|r| r.iso_group == r.index).count()
    }

    /// The table as interchange CSV text.
    pub fn to_csv(&self) -> String {
        let mut s = COLUMNS.join(",");
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("{},{}", r.index, r.arch));
            for v in &r.values {
                s.push(',');
                if let Some(v) = v {
                    s.push_str(&v.to_string());
                }
            }
            s.push_str(&format!(",{}\n", r.iso_group));
        }
        s
    }

    /// Write the interchange CSV to `out`: into a temporary file next to it, renamed into place
    /// when complete, so a failure leaves no partial file.
    pub fn write_csv(&self, out: &Path) -> Result<()> {
        let name = out.file_name().ok_or_else(|| NatsError::Archive {
            path: out.to_path_buf(),
            reason: "the output must be a file name".into(),
        })?;
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let mut f = File::create(&tmp).map_err(io_err(out))?;
        f.write_all(self.to_csv().as_bytes()).map_err(io_err(out))?;
        f.sync_all().map_err(io_err(out))?;
        drop(f);
        fs::rename(&tmp, out).map_err(io_err(out))?;
        guard.disarm();
        Ok(())
    }
}

/// Deletes a temporary file unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Read the archive (a folder or a `.tar` of it) and write the interchange CSV to `out`.
pub fn import(archive: &Path, out: &Path) -> Result<NatsTable> {
    let table = read_archive(archive)?;
    table.write_csv(out)?;
    Ok(table)
}

/// Read the archive (a folder or a `.tar` of it) into the interchange table.
pub fn read_archive(archive: &Path) -> Result<NatsTable> {
    read_archive_with_progress(archive, &|_| {})
}

/// [`read_archive`], calling `progress` with the number of architecture files decoded so far.
pub fn read_archive_with_progress(archive: &Path, progress: &(dyn Fn(usize) + Sync)) -> Result<NatsTable> {
    let meta = fs::metadata(archive).map_err(io_err(archive))?;
    if meta.is_dir() {
        read_dir(archive, progress)
    } else if archive.to_string_lossy().ends_with(".pbz2") {
        Err(NatsError::Archive {
            path: archive.to_path_buf(),
            reason: format!("a single benchmark file; give the `{ARCHIVE_NAME}` folder (what the official API opens with fast_mode=True) or a .tar of it"),
        })
    } else if archive.to_string_lossy().ends_with(".tar") {
        read_tar(archive, progress)
    } else {
        Err(NatsError::Archive {
            path: archive.to_path_buf(),
            reason: format!("expected the `{ARCHIVE_NAME}` folder or a .tar of it"),
        })
    }
}

/// The architecture's index from a file name `000123.pickle.pbz2` or `123.pickle.pbz2`, and
/// whether it has the six-digit form.
fn arch_file_index(name: &str) -> Option<(usize, bool)> {
    let stem = name.strip_suffix(PICKLE_EXT)?.strip_suffix('.')?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: usize = stem.parse().ok()?;
    let six = stem == format!("{index:06}");
    Some((index, six))
}

fn read_dir(dir: &Path, progress: &(dyn Fn(usize) + Sync)) -> Result<NatsTable> {
    let meta_path = dir.join(META_FILE);
    if !meta_path.is_file() {
        let nested = dir.join(ARCHIVE_NAME);
        let hint = if nested.join(META_FILE).is_file() {
            format!("; did you mean {}?", nested.display())
        } else {
            String::new()
        };
        return Err(NatsError::MissingMeta {
            archive: dir.to_path_buf(),
            hint,
        });
    }
    let bytes = fs::read(&meta_path).map_err(io_err(&meta_path))?;
    let archs = parse_meta(&meta_path.display().to_string(), &bytes)?;
    // The file of each architecture, as `reload` looks for it.
    let mut paths = Vec::with_capacity(archs.len());
    let mut missing = Vec::new();
    for i in 0..archs.len() {
        let six = dir.join(format!("{i:06}.{PICKLE_EXT}"));
        let short = dir.join(format!("{i}.{PICKLE_EXT}"));
        if six.is_file() {
            paths.push(six);
        } else if short.is_file() {
            paths.push(short);
        } else {
            missing.push(i);
            paths.push(six);
        }
    }
    if let Some(&index) = missing.first() {
        return Err(NatsError::MissingArch {
            archive: dir.to_path_buf(),
            index,
            name: format!("{index:06}.{PICKLE_EXT}"),
            missing: missing.len(),
            total: archs.len(),
        });
    }
    let done = AtomicUsize::new(0);
    let records = paths
        .par_iter()
        .map(|path| {
            let bytes = fs::read(path).map_err(io_err(path))?;
            let rec = parse_arch(&path.display().to_string(), &bytes)?;
            progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            Ok(rec)
        })
        .collect::<Result<Vec<_>>>()?;
    assemble(&archs, records)
}

fn read_tar(path: &Path, progress: &(dyn Fn(usize) + Sync)) -> Result<NatsTable> {
    let bad_tar = |e: io::Error| NatsError::Archive {
        path: path.to_path_buf(),
        reason: format!("not a readable tar archive ({e})"),
    };
    let file = File::open(path).map_err(io_err(path))?;
    let mut tar = tar::Archive::new(BufReader::new(file));
    let mut meta: Option<Vec<Arch>> = None;
    // index -> (six-digit name, record)
    let mut found: HashMap<usize, (bool, ArchRecord)> = HashMap::new();
    let mut batch: Vec<(usize, bool, String, Vec<u8>)> = Vec::new();
    let done = AtomicUsize::new(0);
    let flush = |batch: &mut Vec<(usize, bool, String, Vec<u8>)>, found: &mut HashMap<usize, (bool, ArchRecord)>| -> Result<()> {
        let decoded = batch
            .par_drain(..)
            .map(|(index, six, member, bytes)| {
                let rec = parse_arch(&member, &bytes)?;
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                Ok((index, six, rec))
            })
            .collect::<Result<Vec<_>>>()?;
        for (index, six, rec) in decoded {
            // Like `reload`, prefer the six-digit name when both exist.
            if six || !found.contains_key(&index) {
                found.insert(index, (six, rec));
            }
        }
        Ok(())
    };
    for entry in tar.entries().map_err(bad_tar)? {
        let mut entry = entry.map_err(bad_tar)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member_path = entry.path().map_err(bad_tar)?.into_owned();
        let Some(name) = member_path.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let member = format!("{}:{}", path.display(), member_path.display());
        let is_meta = name == META_FILE;
        let arch = arch_file_index(&name);
        if !is_meta && arch.is_none() {
            continue;
        }
        let mut bytes = Vec::with_capacity(entry.size().min(64 << 20) as usize);
        entry.read_to_end(&mut bytes).map_err(bad_tar)?;
        if is_meta {
            if meta.is_some() {
                return Err(NatsError::Archive {
                    path: path.to_path_buf(),
                    reason: format!("more than one {META_FILE} in it (the second at {})", member_path.display()),
                });
            }
            meta = Some(parse_meta(&member, &bytes)?);
        } else if let Some((index, six)) = arch {
            batch.push((index, six, member, bytes));
            if batch.len() >= TAR_BATCH {
                flush(&mut batch, &mut found)?;
            }
        }
    }
    flush(&mut batch, &mut found)?;
    let archs = meta.ok_or_else(|| NatsError::MissingMeta {
        archive: path.to_path_buf(),
        hint: String::new(),
    })?;
    let missing: Vec<usize> = (0..archs.len()).filter(|i| !found.contains_key(i)).collect();
    if let Some(&index) = missing.first() {
        return Err(NatsError::MissingArch {
            archive: path.to_path_buf(),
            index,
            name: format!("{index:06}.{PICKLE_EXT}"),
            missing: missing.len(),
            total: archs.len(),
        });
    }
    let records = (0..archs.len()).map(|i| found.remove(&i).expect("checked above").1).collect();
    assemble(&archs, records)
}

/// What one architecture file holds.
#[derive(Debug)]
struct ArchRecord {
    file: String,
    /// `(hp, arch_index, arch_str)` of each `ArchResults` in the file.
    ids: Vec<(String, i64, String)>,
    values: [Option<f64>; NUM_VALUES],
}

/// Check every file against the meta list and number the isomorphism groups.
fn assemble(archs: &[Arch], records: Vec<ArchRecord>) -> Result<NatsTable> {
    let mut first_of_class: HashMap<String, usize> = HashMap::new();
    let mut rows = Vec::with_capacity(archs.len());
    for (index, (arch, rec)) in archs.iter().zip(records).enumerate() {
        for (hp, file_index, file_arch) in &rec.ids {
            let structure = |at: &str, reason: String| NatsError::Structure {
                file: rec.file.clone(),
                at: format!("['{hp}']['{at}']"),
                reason,
            };
            if *file_index != index as i64 {
                return Err(structure("arch_index", format!("{file_index}, but this is the file of architecture {index}")));
            }
            let parsed = Arch::parse(file_arch).map_err(|e| structure("arch_str", e.to_string()))?;
            if parsed != *arch {
                return Err(structure("arch_str", format!("{file_arch}, but {META_FILE} lists {arch} at index {index}")));
            }
        }
        let iso_group = *first_of_class.entry(arch.canonical()).or_insert(index);
        rows.push(NatsRow {
            index,
            arch: *arch,
            iso_group,
            values: rec.values,
        });
    }
    Ok(NatsTable { rows })
}

/// Decompress a whole bzip2 file (several concatenated streams are read like Python's `BZ2File`).
fn bunzip(file: &str, compressed: &[u8]) -> Result<Vec<u8>> {
    let bad = |reason: String| NatsError::Bzip2 {
        file: file.to_string(),
        reason,
    };
    if !compressed.starts_with(b"BZh") {
        return Err(bad("it does not start with the bzip2 signature 'BZh'".into()));
    }
    let mut out = Vec::new();
    bzip2::read::MultiBzDecoder::new(compressed)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            bad(if e.kind() == io::ErrorKind::UnexpectedEof {
                "truncated".into()
            } else {
                e.to_string()
            })
        })?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(bad(format!("more than {MAX_DECOMPRESSED} bytes decompressed")));
    }
    Ok(out)
}

fn unpickle(file: &str, compressed: &[u8]) -> Result<Pickle> {
    let data = bunzip(file, compressed)?;
    pickle::load(&data).map_err(|reason| NatsError::Pickle {
        file: file.to_string(),
        reason,
    })
}

/// The arch list of `meta.pickle.pbz2`.
fn parse_meta(file: &str, compressed: &[u8]) -> Result<Vec<Arch>> {
    let pk = unpickle(file, compressed)?;
    let root = At::root(&pk, file);
    let list = root.get("meta_archs")?;
    let mut archs = Vec::new();
    let mut seen: HashMap<Arch, usize> = HashMap::new();
    for (i, item) in list.items()?.into_iter().enumerate() {
        let s = item.str()?;
        let arch = Arch::parse(s).map_err(|e| item.err(e.to_string()))?;
        if let Some(j) = seen.insert(arch, i) {
            return Err(item.err(format!("{arch} is listed twice (also at index {j})")));
        }
        archs.push(arch);
    }
    if archs.is_empty() {
        return Err(list.err("the architecture list is empty".into()));
    }
    Ok(archs)
}

/// The columns of one architecture file.
fn parse_arch(file: &str, compressed: &[u8]) -> Result<ArchRecord> {
    let pk = unpickle(file, compressed)?;
    let root = At::root(&pk, file);
    let mut results: HashMap<&'static str, ArchResultsView> = HashMap::new();
    let mut ids = Vec::new();
    for hp in ["12", "200"] {
        if let Some(at) = root.find(&Value::Str(hp.into()))? {
            let view = ArchResultsView::new(at)?;
            ids.push((hp.to_string(), view.arch_index, view.arch_str.to_string()));
            results.insert(hp, view);
        }
    }
    if results.is_empty() {
        return Err(root.err(format!("neither '12' nor '200' results (keys: {})", root.keys()?)));
    }
    let mut values = [None; NUM_VALUES];
    for (v, source) in values.iter_mut().zip(SOURCES) {
        *v = match source {
            Source::Acc { hp, dataset, split } => match results.get(hp) {
                Some(r) => r.mean_accuracy(dataset, split)?,
                None => None,
            },
            Source::Cost(field) => match results.get("200") {
                Some(r) => r.mean_cost("cifar10", field)?,
                None => None,
            },
            Source::Elsewhere => None,
        };
    }
    Ok(ArchRecord {
        file: file.to_string(),
        ids,
        values,
    })
}

/// An `ArchResults` state dict.
struct ArchResultsView<'a> {
    arch_index: i64,
    arch_str: &'a str,
    dataset_seed: At<'a>,
    all_results: At<'a>,
}

impl<'a> ArchResultsView<'a> {
    fn new(at: At<'a>) -> Result<Self> {
        Ok(ArchResultsView {
            arch_index: at.get("arch_index")?.int()?,
            arch_str: at.get("arch_str")?.str()?,
            dataset_seed: at.get("dataset_seed")?,
            all_results: at.get("all_results")?,
        })
    }

    /// The `ResultsCount` states of `dataset`, one per seed of `dataset_seed[dataset]`; `None`
    /// when the dataset is not there.
    fn runs(&self, dataset: &str) -> Result<Option<Vec<At<'a>>>> {
        let Some(seeds) = self.dataset_seed.find(&Value::Str(dataset.into()))? else {
            return Ok(None);
        };
        let mut runs = Vec::new();
        for seed in seeds.items()? {
            let key = Value::Tuple(vec![Value::Str(dataset.into()), Value::Int(seed.int()?)]);
            let run = self.all_results.find(&key)?.ok_or_else(|| {
                self.all_results
                    .err(format!("no entry for {} although dataset_seed lists it", pickle::repr(&key)))
            })?;
            runs.push(run);
        }
        Ok(Some(runs))
    }

    /// `get_metrics(dataset, split, iepoch=None, is_random=False)['accuracy']`: the last epoch's
    /// accuracy averaged over seeds; `None` when the dataset or split is absent.
    fn mean_accuracy(&self, dataset: &str, split: &str) -> Result<Option<f64>> {
        let Some(runs) = self.runs(dataset)? else { return Ok(None) };
        let mut values = Vec::with_capacity(runs.len());
        for run in &runs {
            let epochs = run.get("epochs")?;
            let n = epochs.int()?;
            if n < 1 {
                return Err(epochs.err(format!("{n} epochs")));
            }
            let key = Value::Str(format!("{split}@{}", n - 1));
            match run.get("eval_acc1es")?.find(&key)? {
                Some(v) if !v.is_none() => values.push(v.float()?),
                _ => return Ok(None),
            }
        }
        Ok(mean(&values))
    }

    /// `get_compute_costs(dataset)[field]`: a cost averaged over seeds.
    fn mean_cost(&self, dataset: &str, field: &str) -> Result<Option<f64>> {
        let Some(runs) = self.runs(dataset)? else { return Ok(None) };
        let values = runs.iter().map(|r| r.get(field)?.float()).collect::<Result<Vec<_>>>()?;
        Ok(mean(&values))
    }
}

/// `np.mean` of a short list: the sum in order, divided by the count.
fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        None
    } else {
        Some(values.iter().sum::<f64>() / values.len() as f64)
    }
}

/// A position in a decoded pickle, with its path for error messages.
#[derive(Clone)]
struct At<'a> {
    pk: &'a Pickle,
    value: &'a Value,
    file: &'a str,
    path: String,
}

impl<'a> At<'a> {
    fn root(pk: &'a Pickle, file: &'a str) -> Self {
        At {
            pk,
            value: &pk.root,
            file,
            path: String::new(),
        }
    }

    fn err(&self, reason: String) -> NatsError {
        NatsError::Structure {
            file: self.file.to_string(),
            at: if self.path.is_empty() { "the top level".into() } else { self.path.clone() },
            reason,
        }
    }

    fn expected(&self, what: &str) -> NatsError {
        self.err(format!("expected {what}, found {}", self.pk.describe(self.value)))
    }

    fn child(&self, value: &'a Value, step: String) -> At<'a> {
        At {
            pk: self.pk,
            value,
            file: self.file,
            path: format!("{}{step}", self.path),
        }
    }

    fn dict(&self) -> Result<&'a [(Value, Value)]> {
        self.pk.dict(self.value).ok_or_else(|| self.expected("a dict"))
    }

    fn keys(&self) -> Result<String> {
        Ok(self.dict()?.iter().map(|(k, _)| pickle::repr(k)).collect::<Vec<_>>().join(", "))
    }

    /// The value of `key` (the last one, as Python keeps), if present.
    fn find(&self, key: &Value) -> Result<Option<At<'a>>> {
        let dict = self.dict()?;
        Ok(dict
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(k, v)| self.child(v, format!("[{}]", pickle::repr(k)))))
    }

    fn get(&self, key: &str) -> Result<At<'a>> {
        let k = Value::Str(key.into());
        match self.find(&k)? {
            Some(at) => Ok(at),
            None => Err(self.err(format!("missing key '{key}' (keys: {})", self.keys()?))),
        }
    }

    /// The elements of a list or tuple.
    fn items(&self) -> Result<Vec<At<'a>>> {
        let items = self.pk.sequence(self.value).ok_or_else(|| self.expected("a list"))?;
        Ok(items.iter().enumerate().map(|(i, v)| self.child(v, format!("[{i}]"))).collect())
    }

    fn str(&self) -> Result<&'a str> {
        match self.value {
            Value::Str(s) => Ok(s),
            _ => Err(self.expected("a string")),
        }
    }

    fn int(&self) -> Result<i64> {
        match self.value {
            Value::Int(i) => Ok(*i),
            _ => Err(self.expected("an integer")),
        }
    }

    fn float(&self) -> Result<f64> {
        match self.value {
            Value::Float(f) | Value::BigInt(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            _ => Err(self.expected("a number")),
        }
    }

    fn is_none(&self) -> bool {
        matches!(self.value, Value::None)
    }
}

/// A restricted unpickler: plain data only, no code is run. Containers live in an arena so that
/// memoised references see later mutations, as in Python.
mod pickle {
    use std::collections::HashMap;

    /// A decoded value. Lists, dicts, sets and objects are [`Value::Node`]s into the arena.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        None,
        Bool(bool),
        Int(i64),
        /// An integer beyond i64, approximated.
        BigInt(f64),
        Float(f64),
        Str(String),
        Bytes(Vec<u8>),
        Tuple(Vec<Value>),
        /// A module attribute (class or function) that was not applied.
        Global(String, String),
        Node(usize),
    }

    #[derive(Debug)]
    pub enum Node {
        List(Vec<Value>),
        Dict(Vec<(Value, Value)>),
        Set(Vec<Value>),
        /// An instance of a class we do not interpret: what created it and its state.
        Object {
            class: Value,
            args: Vec<Value>,
            state: Option<Value>,
        },
    }

    /// A decoded pickle.
    #[derive(Debug)]
    pub struct Pickle {
        pub nodes: Vec<Node>,
        pub root: Value,
    }

    impl Pickle {
        pub fn dict<'a>(&'a self, v: &Value) -> Option<&'a [(Value, Value)]> {
            match v {
                Value::Node(id) => match &self.nodes[*id] {
                    Node::Dict(d) => Some(d),
                    _ => None,
                },
                _ => None,
            }
        }

        pub fn sequence<'a>(&'a self, v: &'a Value) -> Option<&'a [Value]> {
            match v {
                Value::Tuple(t) => Some(t),
                Value::Node(id) => match &self.nodes[*id] {
                    Node::List(l) => Some(l),
                    _ => None,
                },
                _ => None,
            }
        }

        /// A short description of a value's type, for error messages.
        pub fn describe(&self, v: &Value) -> String {
            match v {
                Value::None => "None".into(),
                Value::Bool(_) => "a bool".into(),
                Value::Int(_) | Value::BigInt(_) => "an integer".into(),
                Value::Float(_) => "a float".into(),
                Value::Str(s) => format!("the string '{s}'"),
                Value::Bytes(_) => "bytes".into(),
                Value::Tuple(_) => "a tuple".into(),
                Value::Global(m, n) => format!("the global {m}.{n}"),
                Value::Node(id) => match &self.nodes[*id] {
                    Node::List(_) => "a list".into(),
                    Node::Dict(_) => "a dict".into(),
                    Node::Set(_) => "a set".into(),
                    Node::Object {
                        class: Value::Global(m, n), ..
                    } => format!("an object of {m}.{n}"),
                    Node::Object { .. } => "an object".into(),
                },
            }
        }
    }

    /// A dict key as Python would print it.
    pub fn repr(v: &Value) -> String {
        match v {
            Value::None => "None".into(),
            Value::Bool(b) => if *b { "True" } else { "False" }.into(),
            Value::Int(i) => i.to_string(),
            Value::BigInt(f) | Value::Float(f) => f.to_string(),
            Value::Str(s) => format!("'{s}'"),
            Value::Bytes(b) => format!("b<{} bytes>", b.len()),
            Value::Tuple(t) => {
                let inner: Vec<String> = t.iter().map(repr).collect();
                if inner.len() == 1 {
                    format!("({},)", inner[0])
                } else {
                    format!("({})", inner.join(", "))
                }
            }
            Value::Global(m, n) => format!("{m}.{n}"),
            Value::Node(_) => "<object>".into(),
        }
    }

    /// Decode a whole pickle (protocols 0 to 5).
    pub fn load(data: &[u8]) -> Result<Pickle, String> {
        let mut m = Machine {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            nodes: Vec::new(),
        };
        let root = m.run()?;
        Ok(Pickle { nodes: m.nodes, root })
    }

    struct Machine<'a> {
        data: &'a [u8],
        pos: usize,
        stack: Vec<Value>,
        marks: Vec<usize>,
        memo: HashMap<u64, Value>,
        nodes: Vec<Node>,
    }

    type R<T> = Result<T, String>;

    impl<'a> Machine<'a> {
        fn take(&mut self, n: usize) -> R<&'a [u8]> {
            let data: &'a [u8] = self.data;
            if n > data.len() - self.pos {
                return Err(format!("truncated: {n} bytes needed at byte {}, {} left", self.pos, data.len() - self.pos));
            }
            let s = &data[self.pos..self.pos + n];
            self.pos += n;
            Ok(s)
        }

        fn u8(&mut self) -> R<u8> {
            Ok(self.take(1)?[0])
        }

        fn le<const N: usize>(&mut self) -> R<[u8; N]> {
            Ok(self.take(N)?.try_into().expect("N bytes"))
        }

        fn len32(&mut self) -> R<usize> {
            Ok(u32::from_le_bytes(self.le()?) as usize)
        }

        fn len64(&mut self) -> R<usize> {
            let n = u64::from_le_bytes(self.le()?);
            usize::try_from(n).map_err(|_| format!("length {n} too large at byte {}", self.pos))
        }

        fn line(&mut self) -> R<&'a str> {
            let data: &'a [u8] = self.data;
            let rest = &data[self.pos..];
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| format!("truncated: unterminated line at byte {}", self.pos))?;
            self.pos += end + 1;
            let line = std::str::from_utf8(&rest[..end]).map_err(|_| format!("invalid text at byte {}", self.pos))?;
            Ok(line.strip_suffix('\r').unwrap_or(line))
        }

        fn utf8(&self, bytes: &[u8]) -> R<String> {
            String::from_utf8(bytes.to_vec()).map_err(|_| format!("invalid UTF-8 in a string before byte {}", self.pos))
        }

        fn push(&mut self, v: Value) {
            self.stack.push(v);
        }

        fn node(&mut self, n: Node) -> Value {
            self.nodes.push(n);
            Value::Node(self.nodes.len() - 1)
        }

        fn floor(&self) -> usize {
            self.marks.last().copied().unwrap_or(0)
        }

        fn pop(&mut self) -> R<Value> {
            if self.stack.len() <= self.floor() {
                return Err(format!("stack underflow at byte {}", self.pos));
            }
            Ok(self.stack.pop().expect("non-empty"))
        }

        fn top(&self) -> R<&Value> {
            if self.stack.len() <= self.floor() {
                return Err(format!("stack underflow at byte {}", self.pos));
            }
            Ok(self.stack.last().expect("non-empty"))
        }

        fn pop_mark(&mut self) -> R<Vec<Value>> {
            let m = self.marks.pop().ok_or_else(|| format!("no MARK before byte {}", self.pos))?;
            Ok(self.stack.split_off(m))
        }

        fn memo_get(&self, key: u64) -> R<Value> {
            self.memo
                .get(&key)
                .cloned()
                .ok_or_else(|| format!("memo entry {key} not defined (byte {})", self.pos))
        }

        fn memo_put(&mut self, key: u64) -> R<()> {
            let v = self.top()?.clone();
            self.memo.insert(key, v);
            Ok(())
        }

        fn int_text(&self, s: &str) -> R<Value> {
            let s = s.trim().trim_end_matches('L');
            if let Ok(i) = s.parse::<i64>() {
                Ok(Value::Int(i))
            } else {
                s.parse::<f64>()
                    .map(Value::BigInt)
                    .map_err(|_| format!("bad integer '{s}' before byte {}", self.pos))
            }
        }

        /// Little-endian two's complement integer of any length.
        fn long(bytes: &[u8]) -> Value {
            if bytes.is_empty() {
                return Value::Int(0);
            }
            let negative = bytes[bytes.len() - 1] & 0x80 != 0;
            if bytes.len() <= 8 {
                let mut buf = if negative { [0xff; 8] } else { [0; 8] };
                buf[..bytes.len()].copy_from_slice(bytes);
                return Value::Int(i64::from_le_bytes(buf));
            }
            let mut x = 0.0f64;
            for &b in bytes.iter().rev() {
                x = x * 256.0 + b as f64;
            }
            if negative {
                x -= 2f64.powi(8 * bytes.len() as i32);
            }
            Value::BigInt(x)
        }

        /// Items of a list, tuple or set value.
        fn items_of(&self, v: &Value) -> Option<Vec<Value>> {
            match v {
                Value::Tuple(t) => Some(t.clone()),
                Value::Node(id) => match &self.nodes[*id] {
                    Node::List(l) | Node::Set(l) => Some(l.clone()),
                    _ => None,
                },
                _ => None,
            }
        }

        fn append(&mut self, items: Vec<Value>) -> R<()> {
            match self.top()? {
                &Value::Node(id) => match &mut self.nodes[id] {
                    Node::List(l) | Node::Set(l) => l.extend(items),
                    Node::Object { .. } => {} // a list subclass we do not interpret
                    Node::Dict(_) => return Err(format!("APPEND to a dict at byte {}", self.pos)),
                },
                _ => return Err(format!("APPEND to a non-list at byte {}", self.pos)),
            }
            Ok(())
        }

        fn set_items(&mut self, items: Vec<Value>) -> R<()> {
            if !items.len().is_multiple_of(2) {
                return Err(format!("odd number of items for SETITEMS at byte {}", self.pos));
            }
            match self.top()? {
                &Value::Node(id) => match &mut self.nodes[id] {
                    Node::Dict(d) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    Node::Object { .. } => {} // a mapping subclass we do not interpret
                    _ => return Err(format!("SETITEM on a non-dict at byte {}", self.pos)),
                },
                _ => return Err(format!("SETITEM on a non-dict at byte {}", self.pos)),
            }
            Ok(())
        }

        /// numpy's scalar pickle: `scalar(dtype(code, False, True) + state, raw bytes)`.
        fn numpy_scalar(&self, args: &[Value]) -> Option<Value> {
            let (Some(Value::Node(dt)), Some(raw)) = (args.first(), args.get(1)) else {
                return None;
            };
            let raw: Vec<u8> = match raw {
                Value::Bytes(b) => b.clone(),
                Value::Str(s) => s.chars().map(|c| c as u32 as u8).collect(),
                _ => return None,
            };
            let Node::Object {
                class: Value::Global(_, cls),
                args: dargs,
                state,
            } = &self.nodes[*dt]
            else {
                return None;
            };
            let Some(Value::Str(code)) = dargs.first() else { return None };
            if cls != "dtype" {
                return None;
            }
            let big = matches!(state, Some(Value::Tuple(t)) if t.get(1) == Some(&Value::Str(">".into())));
            let (kind, size) = (code.chars().next()?, code[1..].parse::<usize>().ok()?);
            if raw.len() != size {
                return None;
            }
            let mut b8 = [0u8; 8];
            if big {
                b8[8 - size..].copy_from_slice(&raw);
            } else {
                b8[..size].copy_from_slice(&raw);
            }
            let u = if big { u64::from_be_bytes(b8) } else { u64::from_le_bytes(b8) };
            Some(match (kind, size) {
                ('f', 8) => Value::Float(f64::from_bits(u)),
                ('f', 4) => Value::Float(f32::from_bits(u as u32) as f64),
                ('i', 1 | 2 | 4 | 8) => {
                    let shift = 64 - 8 * size as u32;
                    Value::Int(((u << shift) as i64) >> shift)
                }
                ('u', 1 | 2 | 4 | 8) => i64::try_from(u).map(Value::Int).unwrap_or(Value::BigInt(u as f64)),
                ('b', 1) => Value::Bool(u != 0),
                _ => return None,
            })
        }

        /// REDUCE: apply a global to its arguments, for the few callables that build data.
        fn reduce(&mut self, callable: Value, args: Vec<Value>) -> Value {
            let object = |m: &mut Self, class: Value, args: Vec<Value>| m.node(Node::Object { class, args, state: None });
            let Value::Global(module, name) = &callable else {
                return object(self, callable, args);
            };
            let builtin = module == "builtins" || module == "__builtin__";
            match (module.as_str(), name.as_str()) {
                ("collections", "OrderedDict") | ("collections", "defaultdict") | (_, "dict") if builtin || module == "collections" => {
                    let mut pairs = Vec::new();
                    if name != "defaultdict" {
                        if let Some(Value::Node(id)) = args.first() {
                            match &self.nodes[*id] {
                                Node::Dict(d) => pairs = d.clone(),
                                Node::List(l) => {
                                    for p in l {
                                        if let Value::Tuple(kv) = p {
                                            if kv.len() == 2 {
                                                pairs.push((kv[0].clone(), kv[1].clone()));
                                            }
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    self.node(Node::Dict(pairs))
                }
                (_, "set" | "frozenset") if builtin => {
                    let items = args.first().and_then(|a| self.items_of(a)).unwrap_or_default();
                    self.node(Node::Set(items))
                }
                (_, "list") if builtin => {
                    let items = args.first().and_then(|a| self.items_of(a)).unwrap_or_default();
                    self.node(Node::List(items))
                }
                (_, "tuple") if builtin => Value::Tuple(args.first().and_then(|a| self.items_of(a)).unwrap_or_default()),
                ("_codecs", "encode") => match args.first() {
                    Some(Value::Str(s)) => Value::Bytes(s.chars().map(|c| c as u32 as u8).collect()),
                    _ => object(self, callable, args),
                },
                ("copy_reg" | "copyreg", "_reconstructor") => {
                    let class = args.first().cloned().unwrap_or(Value::None);
                    object(self, class, Vec::new())
                }
                ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => match self.numpy_scalar(&args) {
                    Some(v) => v,
                    None => object(self, callable, args),
                },
                _ => object(self, callable, args),
            }
        }

        fn run(&mut self) -> R<Value> {
            loop {
                let at = self.pos;
                let Ok(op) = self.u8() else {
                    return Err(if at == 0 {
                        "empty data".into()
                    } else {
                        format!("truncated: no STOP opcode (data ends at byte {at})")
                    });
                };
                match op {
                    0x80 => {
                        let proto = self.u8()?;
                        if proto > 5 {
                            return Err(format!("unsupported pickle protocol {proto}"));
                        }
                    }
                    0x95 => {
                        self.le::<8>()?; // FRAME: the frame's length; its content follows inline
                    }
                    b'.' => return self.pop(),
                    b'(' => self.marks.push(self.stack.len()),
                    b'0' => {
                        if self.stack.len() == self.floor() && !self.marks.is_empty() {
                            self.marks.pop();
                        } else {
                            self.pop()?;
                        }
                    }
                    b'1' => {
                        self.pop_mark()?;
                    }
                    b'2' => {
                        let v = self.top()?.clone();
                        self.push(v);
                    }
                    b'N' => self.push(Value::None),
                    0x88 => self.push(Value::Bool(true)),
                    0x89 => self.push(Value::Bool(false)),
                    b'I' => {
                        let v = match self.line()? {
                            "01" => Value::Bool(true),
                            "00" => Value::Bool(false),
                            s => self.int_text(s)?,
                        };
                        self.push(v);
                    }
                    b'J' => {
                        let v = i32::from_le_bytes(self.le()?);
                        self.push(Value::Int(v as i64));
                    }
                    b'K' => {
                        let v = self.u8()?;
                        self.push(Value::Int(v as i64));
                    }
                    b'M' => {
                        let v = u16::from_le_bytes(self.le()?);
                        self.push(Value::Int(v as i64));
                    }
                    b'L' => {
                        let s = self.line()?;
                        let v = self.int_text(s)?;
                        self.push(v);
                    }
                    0x8a => {
                        let n = self.u8()? as usize;
                        let v = Self::long(self.take(n)?);
                        self.push(v);
                    }
                    0x8b => {
                        let n = i32::from_le_bytes(self.le()?);
                        let n = usize::try_from(n).map_err(|_| format!("negative LONG4 length at byte {at}"))?;
                        let v = Self::long(self.take(n)?);
                        self.push(v);
                    }
                    b'F' => {
                        let s = self.line()?;
                        let v = s.trim().parse::<f64>().map_err(|_| format!("bad float '{s}' at byte {at}"))?;
                        self.push(Value::Float(v));
                    }
                    b'G' => {
                        let v = f64::from_be_bytes(self.le()?);
                        self.push(Value::Float(v));
                    }
                    b'S' => {
                        let s = self.line()?.trim();
                        let inner = s
                            .strip_prefix('\'')
                            .and_then(|s| s.strip_suffix('\''))
                            .or_else(|| s.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                            .ok_or_else(|| format!("bad STRING at byte {at}"))?;
                        let v = unescape(inner, false);
                        self.push(Value::Str(v));
                    }
                    b'T' | b'U' => {
                        let n = if op == b'T' { self.len32()? } else { self.u8()? as usize };
                        let v = self.take(n)?.iter().map(|&b| b as char).collect();
                        self.push(Value::Str(v));
                    }
                    b'V' => {
                        let s = self.line()?;
                        self.push(Value::Str(unescape(s, true)));
                    }
                    b'X' | 0x8c | 0x8d => {
                        let n = match op {
                            b'X' => self.len32()?,
                            0x8c => self.u8()? as usize,
                            _ => self.len64()?,
                        };
                        let bytes = self.take(n)?;
                        let v = self.utf8(bytes)?;
                        self.push(Value::Str(v));
                    }
                    b'B' | b'C' | 0x8e | 0x96 => {
                        let n = match op {
                            b'B' => self.len32()?,
                            b'C' => self.u8()? as usize,
                            _ => self.len64()?,
                        };
                        let v = self.take(n)?.to_vec();
                        self.push(Value::Bytes(v));
                    }
                    b')' => self.push(Value::Tuple(Vec::new())),
                    b't' => {
                        let items = self.pop_mark()?;
                        self.push(Value::Tuple(items));
                    }
                    0x85..=0x87 => {
                        let n = (op - 0x84) as usize;
                        if self.stack.len() < self.floor() + n {
                            return Err(format!("stack underflow at byte {at}"));
                        }
                        let items = self.stack.split_off(self.stack.len() - n);
                        self.push(Value::Tuple(items));
                    }
                    b']' => {
                        let v = self.node(Node::List(Vec::new()));
                        self.push(v);
                    }
                    b'l' => {
                        let items = self.pop_mark()?;
                        let v = self.node(Node::List(items));
                        self.push(v);
                    }
                    b'a' => {
                        let v = self.pop()?;
                        self.append(vec![v])?;
                    }
                    b'e' => {
                        let items = self.pop_mark()?;
                        self.append(items)?;
                    }
                    b'}' => {
                        let v = self.node(Node::Dict(Vec::new()));
                        self.push(v);
                    }
                    b'd' => {
                        let items = self.pop_mark()?;
                        let v = self.node(Node::Dict(Vec::new()));
                        self.push(v);
                        self.set_items(items)?;
                    }
                    b's' => {
                        let v = self.pop()?;
                        let k = self.pop()?;
                        self.set_items(vec![k, v])?;
                    }
                    b'u' => {
                        let items = self.pop_mark()?;
                        self.set_items(items)?;
                    }
                    0x8f => {
                        let v = self.node(Node::Set(Vec::new()));
                        self.push(v);
                    }
                    0x90 => {
                        let items = self.pop_mark()?;
                        self.append(items)?;
                    }
                    0x91 => {
                        let items = self.pop_mark()?;
                        let v = self.node(Node::Set(items));
                        self.push(v);
                    }
                    b'c' => {
                        let module = self.line()?.to_string();
                        let name = self.line()?.to_string();
                        self.push(Value::Global(module, name));
                    }
                    0x93 => {
                        let name = self.pop()?;
                        let module = self.pop()?;
                        match (module, name) {
                            (Value::Str(m), Value::Str(n)) => self.push(Value::Global(m, n)),
                            _ => return Err(format!("STACK_GLOBAL without two strings at byte {at}")),
                        }
                    }
                    b'R' => {
                        let args = self.pop()?;
                        let callable = self.pop()?;
                        let args = match args {
                            Value::Tuple(t) => t,
                            Value::None => Vec::new(),
                            _ => return Err(format!("REDUCE arguments are not a tuple at byte {at}")),
                        };
                        let v = self.reduce(callable, args);
                        self.push(v);
                    }
                    0x81 | 0x92 => {
                        if op == 0x92 {
                            self.pop()?; // keyword arguments
                        }
                        let args = match self.pop()? {
                            Value::Tuple(t) => t,
                            _ => return Err(format!("NEWOBJ arguments are not a tuple at byte {at}")),
                        };
                        let class = self.pop()?;
                        let v = match &class {
                            Value::Global(m, n) if m == "collections" && n == "OrderedDict" => self.node(Node::Dict(Vec::new())),
                            _ => self.node(Node::Object { class, args, state: None }),
                        };
                        self.push(v);
                    }
                    b'i' => {
                        let module = self.line()?.to_string();
                        let name = self.line()?.to_string();
                        let args = self.pop_mark()?;
                        let v = self.node(Node::Object {
                            class: Value::Global(module, name),
                            args,
                            state: None,
                        });
                        self.push(v);
                    }
                    b'o' => {
                        let mut items = self.pop_mark()?;
                        if items.is_empty() {
                            return Err(format!("OBJ without a class at byte {at}"));
                        }
                        let class = items.remove(0);
                        let v = self.node(Node::Object {
                            class,
                            args: items,
                            state: None,
                        });
                        self.push(v);
                    }
                    b'b' => {
                        let state = self.pop()?;
                        if let &Value::Node(id) = self.top()? {
                            if let Node::Object { state: s, .. } = &mut self.nodes[id] {
                                *s = Some(state);
                            }
                        }
                    }
                    b'p' => {
                        let s = self.line()?;
                        let key = s.trim().parse().map_err(|_| format!("bad PUT index '{s}' at byte {at}"))?;
                        self.memo_put(key)?;
                    }
                    b'q' => {
                        let key = self.u8()? as u64;
                        self.memo_put(key)?;
                    }
                    b'r' => {
                        let key = u32::from_le_bytes(self.le()?) as u64;
                        self.memo_put(key)?;
                    }
                    0x94 => {
                        let key = self.memo.len() as u64;
                        self.memo_put(key)?;
                    }
                    b'g' => {
                        let s = self.line()?;
                        let key = s.trim().parse().map_err(|_| format!("bad GET index '{s}' at byte {at}"))?;
                        let v = self.memo_get(key)?;
                        self.push(v);
                    }
                    b'h' => {
                        let key = self.u8()? as u64;
                        let v = self.memo_get(key)?;
                        self.push(v);
                    }
                    b'j' => {
                        let key = u32::from_le_bytes(self.le()?) as u64;
                        let v = self.memo_get(key)?;
                        self.push(v);
                    }
                    b'P' | b'Q' => return Err(format!("persistent reference (data stored outside the pickle, e.g. a tensor) at byte {at}")),
                    0x82..=0x84 => return Err(format!("extension-registry reference at byte {at}")),
                    0x97 | 0x98 => return Err(format!("out-of-band buffer at byte {at}")),
                    _ => return Err(format!("unknown opcode 0x{op:02x} at byte {at}")),
                }
            }
        }
    }

    /// Python's `raw-unicode-escape` (`unicode_only`) or the escapes of a quoted byte string.
    fn unescape(s: &str, unicode_only: bool) -> String {
        let mut out = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(&e) = chars.peek() else {
                out.push('\\');
                break;
            };
            let hex = |chars: &mut std::iter::Peekable<std::str::Chars>, n: usize| -> Option<char> {
                let h: String = chars.clone().take(n).collect();
                let c = u32::from_str_radix(&h, 16).ok().filter(|_| h.len() == n).and_then(char::from_u32)?;
                for _ in 0..n {
                    chars.next();
                }
                Some(c)
            };
            let decoded = match e {
                'u' | 'U' => {
                    chars.next();
                    hex(&mut chars, if e == 'u' { 4 } else { 8 }).or_else(|| {
                        out.push('\\');
                        Some(e)
                    })
                }
                _ if unicode_only => None,
                'x' => {
                    chars.next();
                    hex(&mut chars, 2).or(Some('x'))
                }
                'n' => Some('\n'),
                'r' => Some('\r'),
                't' => Some('\t'),
                '\\' | '\'' | '"' => Some(e),
                _ => None,
            };
            match decoded {
                Some(d) => {
                    if !matches!(e, 'u' | 'U' | 'x') {
                        chars.next();
                    }
                    out.push(d);
                }
                None => out.push('\\'),
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn load_ok(bytes: &[u8]) -> Pickle {
            load(bytes).unwrap()
        }

        #[test]
        fn memoised_containers_see_later_items() {
            // protocol 2: d = {}; [d, d] with d filled after its first reference was memoised
            // ]q\x00(}q\x01X\x01\x00\x00\x00aK\x01sh\x01e.  -> [ {'a': 1}, <get 1> ]
            let bytes = b"\x80\x02]q\x00(}q\x01X\x01\x00\x00\x00aK\x01sh\x01e.";
            let pk = load_ok(bytes);
            let items = pk.sequence(&pk.root).unwrap();
            assert_eq!(items.len(), 2);
            assert_eq!(items[0], items[1]);
            let d = pk.dict(&items[1]).unwrap();
            assert_eq!(d, &[(Value::Str("a".into()), Value::Int(1))]);
        }

        #[test]
        fn numpy_scalars_and_ordered_dicts_become_plain_values() {
            // OrderedDict([('x', numpy.float64(1.25)), ('y', numpy.int64(-3))]) as protocol 2
            // would write it, with GLOBAL opcodes.
            let mut b = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00xcnumpy.core.multiarray\nscalar\nq\x02cnumpy\ndtype\nq\x03X\x02\x00\x00\x00f8\x89\x88\x87Rq\x04(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbC\x08".to_vec();
            b.extend_from_slice(&1.25f64.to_le_bytes());
            b.extend_from_slice(
                b"\x86RX\x01\x00\x00\x00yh\x02h\x03X\x02\x00\x00\x00i8\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbC\x08",
            );
            b.extend_from_slice(&(-3i64).to_le_bytes());
            b.extend_from_slice(b"\x86Ru.");
            let pk = load_ok(&b);
            let d = pk.dict(&pk.root).unwrap();
            assert_eq!(d[0], (Value::Str("x".into()), Value::Float(1.25)));
            assert_eq!(d[1], (Value::Str("y".into()), Value::Int(-3)));
        }

        #[test]
        fn broken_data_is_an_error_not_a_panic() {
            for bad in [
                &b""[..],
                b"\x80\x04",
                b"\x80\x04\x95\x00",
                b"\xff",
                b"h\x05.",
                b"X\xff\xff\xff\xff",
                b"s.",
                b"\x80\x02}q\x00.",
            ] {
                let r = load(bad);
                if bad == b"\x80\x02}q\x00." {
                    assert!(r.is_ok());
                } else {
                    assert!(r.is_err(), "{bad:?}");
                }
            }
            assert_eq!(
                load(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").unwrap().root,
                Value::BigInt(2f64.powi(64))
            );
            assert_eq!(load(b"\x8a\x01\xff.").unwrap().root, Value::Int(-1));
            assert_eq!(load(b"S'a\\'b\\x41'\n.").unwrap().root, Value::Str("a'bA".into()));
            assert_eq!(load(b"Vx\\u00e9\n.").unwrap().root, Value::Str("x\u{e9}".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_file_names_as_reload_looks_for_them() {
        assert_eq!(arch_file_index("000123.pickle.pbz2"), Some((123, true)));
        assert_eq!(arch_file_index("123.pickle.pbz2"), Some((123, false)));
        assert_eq!(arch_file_index("000000.pickle.pbz2"), Some((0, true)));
        assert_eq!(arch_file_index("meta.pickle.pbz2"), None);
        assert_eq!(arch_file_index("._000001.pickle.pbz2"), None);
        assert_eq!(arch_file_index(".pickle.pbz2"), None);
    }

    #[test]
    fn every_numeric_column_has_a_source() {
        assert_eq!(COLUMNS.len(), NUM_VALUES + 3);
        assert_eq!((COLUMNS[0], COLUMNS[1], COLUMNS[24]), ("arch_index", "arch_str", "iso_group"));
        for (name, source) in COLUMNS[2..24].iter().zip(SOURCES) {
            match source {
                Source::Acc { hp, .. } => assert_eq!(name.ends_with("_12ep"), hp == "12", "{name}"),
                Source::Cost(_) => assert!(name.ends_with("_M")),
                Source::Elsewhere => assert!(name.starts_with("hwnb_") || name.ends_with("nb201file")),
            }
        }
    }
}
