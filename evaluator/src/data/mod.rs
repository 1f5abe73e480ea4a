//! Image datasets in their official on-disk formats.
//!
//! * CIFAR-10 and CIFAR-100: the official *binary* release (`cifar-10-batches-bin/`,
//!   `cifar-100-binary/`): fixed-size records of label byte(s) followed by 3,072 pixel bytes
//!   (R, G and B planes of 32x32, row-major).
//! * MNIST and Fashion-MNIST: the four IDX files (`train-images-idx3-ubyte.gz`, ...), kept
//!   gzipped on disk and decompressed on load (uncompressed copies are accepted too).
//!
//! [`open`] is the usual entry point: it finds the files under a data root ([`data_root`],
//! [`locate`]), downloads them from the official sources when allowed ([`sources`], [`fetch`]) and
//! reads and validates them ([`load`]).

mod cifar;
mod download;
mod fingerprint;
mod holdout;
mod idx;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use download::{fetch, sources, Checksum, Source, SourceFormat, MIRROR_ENV};
pub use fingerprint::fingerprint;
pub use holdout::{search_split, split_off};

/// Environment variable naming the data root when no explicit directory is given.
pub const DATA_ENV: &str = "AUTOAGENT_DATA";

/// The image datasets the evaluator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// CIFAR-10: 50,000 + 10,000 colour images 32x32, 10 classes.
    Cifar10,
    /// CIFAR-100: 50,000 + 10,000 colour images 32x32, 100 fine classes.
    Cifar100,
    /// MNIST: 60,000 + 10,000 grey digits 28x28, 10 classes.
    Mnist,
    /// Fashion-MNIST: 60,000 + 10,000 grey clothing images 28x28, 10 classes.
    FashionMnist,
}

impl DatasetKind {
    /// Every dataset kind, in a fixed order.
    pub const ALL: [DatasetKind; 4] = [DatasetKind::Cifar10, DatasetKind::Cifar100, DatasetKind::Mnist, DatasetKind::FashionMnist];

    /// Parses a dataset name: `cifar10`, `cifar100`, `mnist`, `fashion-mnist` (also
    /// `fashion_mnist`, `cifar-10`, `cifar-100`); case-insensitive.
    pub fn from_name(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" | "cifar_10" => Some(Self::Cifar10),
            "cifar100" | "cifar-100" | "cifar_100" => Some(Self::Cifar100),
            "mnist" => Some(Self::Mnist),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Some(Self::FashionMnist),
            _ => None,
        }
    }

    /// The canonical name (`cifar10`, `cifar100`, `mnist`, `fashion-mnist`), also the folder name
    /// of the dataset inside a data root.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cifar10 => "cifar10",
            Self::Cifar100 => "cifar100",
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion-mnist",
        }
    }

    /// Number of classes (labels are `0..num_classes`).
    pub fn num_classes(&self) -> usize {
        match self {
            Self::Cifar100 => 100,
            _ => 10,
        }
    }

    /// Shape of one image as (channels, height, width).
    pub fn image_shape(&self) -> (usize, usize, usize) {
        match self {
            Self::Cifar10 | Self::Cifar100 => (3, 32, 32),
            Self::Mnist | Self::FashionMnist => (1, 28, 28),
        }
    }

    /// Per-channel mean and standard deviation of the training set on the [0, 1] pixel scale
    /// (the commonly published values), for `(x / 255 - mean) / std` normalisation.
    pub fn mean_std(&self) -> (&'static [f32], &'static [f32]) {
        match self {
            Self::Cifar10 => (&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616]),
            Self::Cifar100 => (&[0.5071, 0.4865, 0.4409], &[0.2673, 0.2564, 0.2762]),
            Self::Mnist => (&[0.1307], &[0.3081]),
            Self::FashionMnist => (&[0.2860], &[0.3530]),
        }
    }

    /// Human-readable name for messages (`CIFAR-10`, `Fashion-MNIST`, ...).
    fn title(&self) -> &'static str {
        match self {
            Self::Cifar10 => "CIFAR-10",
            Self::Cifar100 => "CIFAR-100",
            Self::Mnist => "MNIST",
            Self::FashionMnist => "Fashion-MNIST",
        }
    }

    /// The folder the official archive extracts to, if the dataset comes as an archive.
    fn archive_folder(&self) -> Option<&'static str> {
        match self {
            Self::Cifar10 => Some("cifar-10-batches-bin"),
            Self::Cifar100 => Some("cifar-100-binary"),
            Self::Mnist | Self::FashionMnist => None,
        }
    }

    /// Short description of the files [`locate`] looks for, for error messages.
    fn expected_files(&self) -> &'static str {
        match self {
            Self::Cifar10 => "test_batch.bin and data_batch_1.bin..data_batch_5.bin",
            Self::Cifar100 => "train.bin and test.bin",
            Self::Mnist | Self::FashionMnist => {
                "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
                 t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
            }
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| format!("unknown dataset '{s}' (expected cifar10, cifar100, mnist or fashion-mnist)"))
    }
}

/// One split: `images` is N*C*H*W u8 in CHW order per image, `labels` N entries.
#[derive(Clone, PartialEq, Eq)]
pub struct Split {
    /// Raw pixels, `n * c * h * w` bytes; image `i` is `images[i*c*h*w..(i+1)*c*h*w]`, channel
    /// planes one after the other, rows top to bottom.
    pub images: Vec<u8>,
    /// Class index of each image, `0..num_classes`.
    pub labels: Vec<u32>,
    /// Number of images.
    pub n: usize,
    /// Channels per image.
    pub c: usize,
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
}

impl Split {
    /// Bytes per image (`c * h * w`).
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// The pixels of image `i` (CHW). Panics if `i >= n`.
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.image_len();
        &self.images[i * len..(i + 1) * len]
    }
}

impl fmt::Debug for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Split {{ n: {}, c: {}, h: {}, w: {} }}", self.n, self.c, self.h, self.w)
    }
}

/// A dataset with its training and test splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Which dataset this is.
    pub kind: DatasetKind,
    /// The training split.
    pub train: Split,
    /// The test split.
    pub test: Split,
}

/// Everything that can go wrong while finding, downloading or reading a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset's files are not where they were looked for.
    #[error("{dataset} not found under {}: {hint}", root.display())]
    Missing {
        /// Dataset title, e.g. `CIFAR-10`.
        dataset: &'static str,
        /// The directory that was searched.
        root: PathBuf,
        /// What was looked for and what to do about it.
        hint: String,
    },
    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `cannot read`.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A data file does not have the expected format (size, magic number, dimensions, gzip).
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An image file and its label file disagree on the number of items.
    #[error("{} holds {n_labels} labels but {} holds {n_images} images", labels.display(), images.display())]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// Number of images in it.
        n_images: usize,
        /// The label file.
        labels: PathBuf,
        /// Number of labels in it.
        n_labels: usize,
    },
    /// A label outside `0..classes`.
    #[error("{}: label {label} of record {index} is out of range (expected 0..{classes})", path.display())]
    LabelOutOfRange {
        /// The file holding the label.
        path: PathBuf,
        /// Zero-based record index within that file.
        index: usize,
        /// The label found.
        label: u32,
        /// Number of classes.
        classes: usize,
    },
    /// A download failed: bad URL, connection error, HTTP error status or truncated body.
    #[error("download of {url} failed: {reason}")]
    Download {
        /// The URL requested.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A downloaded file does not have the expected checksum.
    #[error("checksum mismatch for {url}: expected {algorithm} {expected}, got {actual}")]
    Checksum {
        /// The URL the file came from.
        url: String,
        /// `md5` or `sha256`.
        algorithm: &'static str,
        /// Expected hex digest.
        expected: String,
        /// Hex digest of what was received.
        actual: String,
    },
    /// A downloaded archive could not be extracted.
    #[error("cannot extract {}: {reason}", path.display())]
    Archive {
        /// The archive (as named by its source).
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl DataError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        DataError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Root for cached data: explicit dir > env `AUTOAGENT_DATA` > XDG cache dir
/// (`dirs::cache_dir()/autoagent/data`; the system temp dir if there is no cache dir).
pub fn data_root(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("autoagent").join("data")
}

/// Find the dataset's files. `dir` is the resolved root. Accepts both (a) `dir` itself holding the
/// files (so `--data-dir /work/shared/data/cifar10-mini` works) and (b) the cache layout
/// `dir/<name>/...` as written by the downloader; the archive folder (`cifar-10-batches-bin`,
/// `cifar-100-binary`) may sit directly in `dir` or in `dir/<name>`. Last, the small fixture
/// layout `dir/<name>-mini` (the project's `shared/data`) when nothing else is there. Returns the
/// directory that holds the files.
pub fn locate(kind: DatasetKind, dir: &Path) -> Option<PathBuf> {
    let mut candidates = vec![dir.to_path_buf()];
    let named = dir.join(kind.name());
    if let Some(folder) = kind.archive_folder() {
        candidates.push(dir.join(folder));
        candidates.push(named.join(folder));
    }
    candidates.push(named);
    candidates.push(dir.join(format!("{}-mini", kind.name())));
    candidates.into_iter().find(|c| has_files(kind, c))
}

/// Whether `dir` holds a complete set of files for `kind`.
fn has_files(kind: DatasetKind, dir: &Path) -> bool {
    match kind {
        DatasetKind::Cifar10 => dir.join("test_batch.bin").is_file() && !cifar10_train_files(dir).is_empty(),
        DatasetKind::Cifar100 => dir.join("train.bin").is_file() && dir.join("test.bin").is_file(),
        DatasetKind::Mnist | DatasetKind::FashionMnist => IDX_FILES.iter().all(|name| idx_file(dir, name).is_some()),
    }
}

/// The CIFAR-10 training batches present in `dir`, in order.
fn cifar10_train_files(dir: &Path) -> Vec<PathBuf> {
    (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).filter(|p| p.is_file()).collect()
}

/// IDX file names, without `.gz`: train images, train labels, test images, test labels.
const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// `dir/name.gz` if it exists, else `dir/name` if it exists.
fn idx_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Some(gz);
    }
    let plain = dir.join(name);
    plain.is_file().then_some(plain)
}

/// Read and validate everything (sizes multiple of record size, IDX magic numbers and dims, label
/// ranges, counts of images == labels). `dir` may be the folder holding the files or a data root
/// in the layouts [`locate`] accepts.
pub fn load(kind: DatasetKind, dir: &Path) -> Result<Dataset, DataError> {
    let base = locate(kind, dir).ok_or_else(|| DataError::Missing {
        dataset: kind.title(),
        root: dir.to_path_buf(),
        hint: match kind.archive_folder() {
            Some(folder) => format!(
                "expected {} in it or in one of {folder}/, {name}/, {name}/{folder}/",
                kind.expected_files(),
                name = kind.name()
            ),
            None => format!("expected {} in it or in {}/", kind.expected_files(), kind.name()),
        },
    })?;
    let (train, test) = match kind {
        DatasetKind::Cifar10 => {
            let train_files = cifar10_train_files(&base);
            let test_file = [base.join("test_batch.bin")];
            rayon::join(
                || cifar::read_split(&train_files, cifar::CIFAR10),
                || cifar::read_split(&test_file, cifar::CIFAR10),
            )
        }
        DatasetKind::Cifar100 => {
            let train_file = [base.join("train.bin")];
            let test_file = [base.join("test.bin")];
            rayon::join(
                || cifar::read_split(&train_file, cifar::CIFAR100),
                || cifar::read_split(&test_file, cifar::CIFAR100),
            )
        }
        DatasetKind::Mnist | DatasetKind::FashionMnist => {
            let file = |i: usize| {
                idx_file(&base, IDX_FILES[i]).ok_or_else(|| DataError::Missing {
                    dataset: kind.title(),
                    root: base.clone(),
                    hint: format!("{}.gz disappeared while loading", IDX_FILES[i]),
                })
            };
            let (train_images, train_labels) = (file(0)?, file(1)?);
            let (test_images, test_labels) = (file(2)?, file(3)?);
            let (c, h, w) = kind.image_shape();
            debug_assert_eq!(c, 1);
            rayon::join(
                || idx::read_split(&train_images, &train_labels, h, w, kind.num_classes()),
                || idx::read_split(&test_images, &test_labels, h, w, kind.num_classes()),
            )
        }
    };
    Ok(Dataset {
        kind,
        train: train?,
        test: test?,
    })
}

/// [`locate`], else download into `root/<name>/` (unless `download == false` ->
/// [`DataError::Missing`] telling the user about `--data-dir` / `AUTOAGENT_DATA`), then [`load`].
pub fn open(kind: DatasetKind, root: &Path, download: bool) -> Result<Dataset, DataError> {
    if let Some(dir) = locate(kind, root) {
        return load(kind, &dir);
    }
    if !download {
        return Err(DataError::Missing {
            dataset: kind.title(),
            root: root.to_path_buf(),
            hint: format!(
                "downloading is disabled; pass --data-dir with a folder holding {} \
                 (or a data root with {}/ inside), or set {DATA_ENV}",
                kind.expected_files(),
                kind.name()
            ),
        });
    }
    let dest = root.join(kind.name());
    let created = !dest.exists();
    for source in sources(kind) {
        // Plain files are renamed into place only after their checksum matched: keep them.
        if source.format == SourceFormat::Gzip && dest.join(&source.file_name).is_file() {
            continue;
        }
        if let Err(err) = fetch(&source, &dest) {
            if created {
                // Only succeeds when nothing was left in it.
                let _ = std::fs::remove_dir(&dest);
            }
            return Err(err);
        }
    }
    let dir = locate(kind, root).ok_or_else(|| DataError::Missing {
        dataset: kind.title(),
        root: dest.clone(),
        hint: format!("the download finished but {} are not there", kind.expected_files()),
    })?;
    load(kind, &dir)
}
