//! Official download sources and a checksum-verifying downloader.
//!
//! Files are written to a temporary name in the destination directory and renamed only after the
//! checksum matched; archives are extracted into a temporary directory that is renamed into place
//! at the end, so an interrupted or failed download never leaves files that [`super::locate`]
//! would accept.

use std::fs::{self, File};
use std::io::{BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::Digest;

use super::{DataError, DatasetKind};

/// Environment variable that, when set, replaces the base URL of every official source (the file
/// names are kept). A `{dataset}` in its value is replaced by the dataset name (`mnist`,
/// `fashion-mnist`, ...), for mirrors that keep MNIST and Fashion-MNIST (same file names) apart.
pub const MIRROR_ENV: &str = "AUTOAGENT_DATA_MIRROR";

const CIFAR_BASE: &str = "https://www.cs.toronto.edu/~kriz/";
const MNIST_BASE: &str = "http://yann.lecun.com/exdb/mnist/";
const FASHION_MNIST_BASE: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

/// Expected digest of a downloaded file, as lowercase or uppercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// MD5 (what the dataset authors publish).
    Md5(String),
    /// SHA-256.
    Sha256(String),
}

impl Checksum {
    fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Md5(_) => "md5",
            Checksum::Sha256(_) => "sha256",
        }
    }

    fn expected(&self) -> &str {
        match self {
            Checksum::Md5(hex) | Checksum::Sha256(hex) => hex,
        }
    }
}

/// How a downloaded file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// A `.tar.gz` archive: extracted into the destination directory, the archive is not kept.
    TarGz,
    /// A single file (e.g. a gzipped IDX file): stored as is under its file name.
    Gzip,
}

/// One downloadable file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Full URL of the file.
    pub url: String,
    /// File name (the last URL segment); the stored name for [`SourceFormat::Gzip`].
    pub file_name: String,
    /// Expected checksum of the downloaded bytes.
    pub checksum: Checksum,
    /// Whether the file is an archive to extract or a file to keep.
    pub format: SourceFormat,
}

/// The official sources of a dataset. When `AUTOAGENT_DATA_MIRROR` is set (non-empty) it replaces
/// the base URL; file names and checksums stay the same.
pub fn sources(kind: DatasetKind) -> Vec<Source> {
    let (base, files): (&str, &[(&str, &str)]) = match kind {
        DatasetKind::Cifar10 => (CIFAR_BASE, &[("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")]),
        DatasetKind::Cifar100 => (CIFAR_BASE, &[("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8")]),
        DatasetKind::Mnist => (
            MNIST_BASE,
            &[
                ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
                ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
            ],
        ),
        DatasetKind::FashionMnist => (
            FASHION_MNIST_BASE,
            &[
                ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
            ],
        ),
    };
    let format = match kind {
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => SourceFormat::TarGz,
        DatasetKind::Mnist | DatasetKind::FashionMnist => SourceFormat::Gzip,
    };
    let mirror = std::env::var(MIRROR_ENV)
        .ok()
        .filter(|m| !m.trim().is_empty())
        .map(|m| m.trim().replace("{dataset}", kind.name()));
    let base = mirror.as_deref().unwrap_or(base);
    files
        .iter()
        .map(|&(file, md5)| Source {
            url: format!("{}/{file}", base.trim_end_matches('/')),
            file_name: file.to_string(),
            checksum: Checksum::Md5(md5.to_string()),
            format,
        })
        .collect()
}

/// Download one source into `dest_dir` (created if needed) with a progress bar on stderr (hidden
/// when stderr is not a terminal), verify its checksum and, for archives, extract it. Returns the
/// stored file, or for an archive the folder it extracted to (`dest_dir` itself when the archive
/// has several top-level entries).
///
/// Nothing is left behind on failure (HTTP error status, connection error, body shorter than its
/// Content-Length, checksum mismatch, corrupt archive): the download goes to a temporary file that
/// is renamed only after the checksum matched, and archives are extracted into a temporary
/// directory whose contents are renamed into place at the end.
pub fn fetch(source: &Source, dest_dir: &Path) -> Result<PathBuf, DataError> {
    fs::create_dir_all(dest_dir).map_err(|e| DataError::io("cannot create", dest_dir, e))?;
    let part = TempPath::new(dest_dir, &source.file_name, "part");
    tracing::info!(url = %source.url, dest = %dest_dir.display(), "downloading");
    let actual = download(source, &part.path)?;
    let expected = source.checksum.expected().trim().to_ascii_lowercase();
    if actual != expected {
        return Err(DataError::Checksum {
            url: source.url.clone(),
            algorithm: source.checksum.algorithm(),
            expected,
            actual,
        });
    }
    match source.format {
        SourceFormat::Gzip => {
            let target = dest_dir.join(&source.file_name);
            fs::rename(&part.path, &target).map_err(|e| DataError::io("cannot rename to", &target, e))?;
            part.keep();
            Ok(target)
        }
        SourceFormat::TarGz => extract(&part.path, &dest_dir.join(&source.file_name), dest_dir),
    }
}

/// Streams `source.url` into `path`, returning the lowercase hex digest of the bytes received.
fn download(source: &Source, path: &Path) -> Result<String, DataError> {
    let url = source.url.as_str();
    let fail = |reason: String| DataError::Download { url: url.to_string(), reason };
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(format!("invalid URL: {e}")))?;
    let mut builder = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        // Applies to each read of the body: a stall, not the whole download.
        .timeout(Duration::from_secs(120))
        .user_agent(concat!("autoagent/", env!("CARGO_PKG_VERSION")));
    if is_loopback(&parsed) {
        builder = builder.no_proxy();
    }
    let client = builder.build().map_err(|e| fail(error_chain(&e)))?;
    let mut response = client.get(parsed).send().map_err(|e| fail(error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!("HTTP status {status}")));
    }
    let length = response.content_length();
    let mut file = File::create(path).map_err(|e| DataError::io("cannot create", path, e))?;
    let mut hasher = Hasher::new(&source.checksum);
    let bar = progress_bar(length, &source.file_name);
    let mut buf = vec![0u8; 256 * 1024];
    let mut received: u64 = 0;
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(fail(format!("connection broke after {received} bytes: {}", error_chain(&e))));
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| DataError::io("cannot write", path, e))?;
        received += n as u64;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if let Some(length) = length {
        if received != length {
            return Err(fail(format!("truncated body: received {received} of {length} bytes (Content-Length)")));
        }
    }
    if received == 0 {
        return Err(fail("empty body".to_string()));
    }
    file.sync_all().map_err(|e| DataError::io("cannot write", path, e))?;
    Ok(hasher.finish())
}

/// Extracts the `.tar.gz` at `archive` (named `name` in messages) into `dest_dir` via a temporary
/// directory. Only regular files and directories are extracted; paths escaping the directory are
/// refused.
fn extract(archive: &Path, name: &Path, dest_dir: &Path) -> Result<PathBuf, DataError> {
    let fail = |reason: String| DataError::Archive {
        path: name.to_path_buf(),
        reason,
    };
    let file_name = name.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = TempPath::new(dest_dir, &file_name, "extract");
    fs::create_dir(&tmp.path).map_err(|e| DataError::io("cannot create", &tmp.path, e))?;
    let file = File::open(archive).map_err(|e| DataError::io("cannot read", archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let entries = tar.entries().map_err(|e| fail(archive_reason(&e)))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| fail(archive_reason(&e)))?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        let path = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
        let inside = entry
            .unpack_in(&tmp.path)
            .map_err(|e| fail(format!("entry '{path}': {}", archive_reason(&e))))?;
        if !inside {
            return Err(fail(format!("entry '{path}' points outside the archive folder")));
        }
    }
    let mut tops = Vec::new();
    for entry in fs::read_dir(&tmp.path).map_err(|e| DataError::io("cannot read", &tmp.path, e))? {
        let entry = entry.map_err(|e| DataError::io("cannot read", &tmp.path, e))?;
        tops.push(entry.file_name());
    }
    if tops.is_empty() {
        return Err(fail("archive holds no files".to_string()));
    }
    for top in &tops {
        let target = dest_dir.join(top);
        if target.is_dir() {
            fs::remove_dir_all(&target).map_err(|e| DataError::io("cannot replace", &target, e))?;
        } else if target.exists() {
            fs::remove_file(&target).map_err(|e| DataError::io("cannot replace", &target, e))?;
        }
        fs::rename(tmp.path.join(top), &target).map_err(|e| DataError::io("cannot rename to", &target, e))?;
    }
    Ok(match tops.as_slice() {
        [single] => dest_dir.join(single),
        _ => dest_dir.to_path_buf(),
    })
}

/// Whether the URL's host is a loopback address (proxies are bypassed for those).
fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some(host) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// An error and its sources on one line, e.g. `error sending request: ... : Connection refused`.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text.replace('\n', " ")
}

/// Why reading an archive failed, saying so when the data (not the disk) is at fault.
fn archive_reason(err: &std::io::Error) -> String {
    use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
    let cause = root_cause(err);
    match err.kind() {
        InvalidData | InvalidInput | UnexpectedEof => {
            format!("{cause} (corrupt or truncated archive)")
        }
        _ => cause,
    }
}

/// The innermost error of a chain (what actually went wrong, without the wrapping context).
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = err;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string().replace('\n', " ")
}

/// A progress bar for a download of `length` bytes on stderr, hidden when stderr is no terminal.
fn progress_bar(length: Option<u64>, name: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(length, target);
    let template = if length.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
    } else {
        "{msg} {spinner} {bytes} ({bytes_per_sec})"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_string());
    bar
}

/// Incremental digest of the algorithm a [`Checksum`] names.
enum Hasher {
    Md5(md5::Md5),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(checksum: &Checksum) -> Self {
        match checksum {
            Checksum::Md5(_) => Hasher::Md5(md5::Md5::new()),
            Checksum::Sha256(_) => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
        }
    }
}

/// A temporary file or directory next to its final place, removed on drop unless kept.
struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    /// A fresh hidden name `dest_dir/.NAME.SUFFIX-PID-N` (hidden, and never a name
    /// [`super::locate`] looks at).
    fn new(dest_dir: &Path, name: &str, suffix: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dest_dir.join(format!(".{name}.{suffix}-{}-{n}", std::process::id()));
        TempPath { path, keep: false }
    }

    /// Keeps the path: it was renamed into place.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if self.path.is_dir() {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            let _ = fs::remove_file(&self.path);
        }
    }
}
