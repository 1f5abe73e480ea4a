//! Bounded output: the run's structured log file with a size cap, and a capped copy of a child
//! process's stderr.
//!
//! - [`RotatingLog`]: whole records appended to `run.log`; when the next record would take the
//!   file past its cap, the file becomes `run.log.1` (replacing an older one) and a new
//!   `run.log` starts. The pair never exceeds twice the cap and always holds the latest records,
//!   the ones that explain how a run ended.
//! - [`RunLogWriter`]: a `tracing` writer into the run's log once [`set_run_log`] has named it
//!   (records before that, or in commands without a run, go nowhere).
//! - [`capped_copy`]: copies a stream into a file up to a cap, then keeps only its last bytes,
//!   written at the end after a marker saying how much was dropped: a trial printing without
//!   end cannot fill the disk, and its last words survive.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// A log file of whole records that rotates once past its cap.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    cap: u64,
    file: File,
    written: u64,
}

impl RotatingLog {
    /// Append to `path` (created when missing), rotating to `path.1` past `cap` bytes.
    pub fn open(path: &Path, cap: u64) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            cap: cap.max(1),
            file,
            written,
        })
    }

    fn rotated(&self) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(".1");
        PathBuf::from(s)
    }

    /// Append one record (rotating first when it would not fit).
    pub fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.written > 0 && self.written + bytes.len() as u64 > self.cap {
            self.file.flush()?;
            std::fs::rename(&self.path, self.rotated())?;
            self.file = OpenOptions::new().create(true).write(true).truncate(true).open(&self.path)?;
            self.written = 0;
        }
        // A single record larger than the cap is cut to it.
        let bytes = &bytes[..bytes.len().min(self.cap as usize)];
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

fn sink() -> &'static Mutex<Option<RotatingLog>> {
    static SINK: OnceLock<Mutex<Option<RotatingLog>>> = OnceLock::new();
    SINK.get_or_init(|| Mutex::new(None))
}

/// Send the process's log records to `path` from now on, rotating past `cap` bytes.
pub fn set_run_log(path: &Path, cap: u64) -> io::Result<()> {
    let log = RotatingLog::open(path, cap)?;
    *sink().lock().unwrap_or_else(|e| e.into_inner()) = Some(log);
    Ok(())
}

/// A `tracing_subscriber` writer into the run's log: buffers one record and appends it whole
/// when dropped. Writes nothing until [`set_run_log`] names a file; a failing write is dropped
/// (the log must never stop the run).
#[derive(Debug, Default)]
pub struct RunLogWriter {
    buf: Vec<u8>,
}

impl Write for RunLogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RunLogWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Some(log) = sink().lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = log.record(&self.buf);
        }
    }
}

/// Copy `from` into `to` until EOF: the first `head` bytes, then only the last `tail` bytes,
/// written after a line saying how many bytes were left out. Returns the bytes read.
pub fn capped_copy(mut from: impl Read, to: &mut impl Write, head: u64, tail: usize) -> io::Result<u64> {
    let mut buf = [0u8; 8192];
    let (mut total, mut kept) = (0u64, 0u64);
    let mut last: VecDeque<u8> = VecDeque::with_capacity(tail);
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        let mut chunk = &buf[..n];
        if kept < head {
            let take = chunk.len().min((head - kept) as usize);
            to.write_all(&chunk[..take])?;
            to.flush()?;
            kept += take as u64;
            chunk = &chunk[take..];
        }
        for &b in chunk {
            if last.len() == tail {
                last.pop_front();
            }
            if tail > 0 {
                last.push_back(b);
            }
        }
    }
    let dropped = total - kept - last.len() as u64;
    if dropped > 0 {
        writeln!(to, "\n[... {dropped} bytes left out: output over {head} bytes keeps only its last {tail} ...]")?;
    }
    let (a, b) = last.as_slices();
    to.write_all(a)?;
    to.write_all(b)?;
    to.flush()?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_whole_records_and_keeps_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.log");
        let mut log = RotatingLog::open(&path, 100).unwrap();
        for i in 0..50 {
            log.record(format!("record {i:03} ........\n").as_bytes()).unwrap();
        }
        let cur = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.path().join("run.log.1")).unwrap();
        assert!(cur.len() <= 100 && old.len() <= 100);
        assert!(cur.ends_with("record 049 ........\n"), "{cur}");
        // Whole records only, consecutive across the two files.
        let all: Vec<&str> = old.lines().chain(cur.lines()).collect();
        assert!(all.iter().all(|l| l.starts_with("record ") && l.len() == 19));
        let numbers: Vec<usize> = all.iter().map(|l| l[7..10].parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
        // Reopening appends to what is there.
        drop(log);
        let mut log = RotatingLog::open(&path, 100).unwrap();
        log.record(b"x\n").unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(now.ends_with("x\n") && now.len() <= 100, "{now}");
        assert!(now == format!("{cur}x\n") || now == "x\n");
    }

    #[test]
    fn a_flood_keeps_its_head_and_its_last_words() {
        let mut text = String::new();
        for i in 0..10_000 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str("error: the real reason\n");
        let mut out = Vec::new();
        let total = capped_copy(text.as_bytes(), &mut out, 1000, 200).unwrap();
        assert_eq!(total, text.len() as u64);
        let out = String::from_utf8(out).unwrap();
        assert!(out.len() < 1400, "{}", out.len());
        assert!(out.starts_with("line 0\nline 1\n"));
        assert!(out.contains("bytes left out"));
        assert!(out.trim_end().ends_with("error: the real reason"));
        // Short output passes through untouched.
        let mut out = Vec::new();
        capped_copy(&b"short\n"[..], &mut out, 1000, 200).unwrap();
        assert_eq!(out, b"short\n");
    }
}
