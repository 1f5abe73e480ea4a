//! Readers for the CIFAR-10 / CIFAR-100 binary formats: headerless files of fixed-size records,
//! each the label byte(s) followed by 3,072 pixel bytes (R, G, B planes of 32x32, row-major).

use std::path::{Path, PathBuf};

use super::{DataError, Split};

/// Pixel bytes per record.
const PIXELS: usize = 3 * 32 * 32;

/// Record layout of one CIFAR variant.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    /// Label bytes in front of the pixels.
    label_bytes: usize,
    /// Which of the label bytes is the class used.
    label_index: usize,
    /// Number of classes of that label.
    classes: usize,
    /// For CIFAR-100: the coarse label (byte 0) is checked against this many classes.
    coarse_classes: Option<usize>,
}

/// CIFAR-10: one label byte (0-9).
pub(super) const CIFAR10: Layout = Layout {
    label_bytes: 1,
    label_index: 0,
    classes: 10,
    coarse_classes: None,
};

/// CIFAR-100: coarse label byte (0-19), then fine label byte (0-99); the fine label is used.
pub(super) const CIFAR100: Layout = Layout {
    label_bytes: 2,
    label_index: 1,
    classes: 100,
    coarse_classes: Some(20),
};

/// Reads and concatenates the records of `files` into one split.
pub(super) fn read_split(files: &[PathBuf], layout: Layout) -> Result<Split, DataError> {
    let record = layout.label_bytes + PIXELS;
    // Reserve once for all files (sizes are checked per file below).
    let total: u64 = files.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    let expected = usize::try_from(total).unwrap_or(0) / record;
    let mut images = Vec::with_capacity(expected * PIXELS);
    let mut labels = Vec::with_capacity(expected);
    for path in files {
        let bytes = std::fs::read(path).map_err(|e| DataError::io("cannot read", path, e))?;
        parse(path, &bytes, layout, &mut images, &mut labels)?;
    }
    let n = labels.len();
    Ok(Split {
        images,
        labels,
        n,
        c: 3,
        h: 32,
        w: 32,
    })
}

/// Validates the records in `bytes` and appends their pixels and labels.
fn parse(path: &Path, bytes: &[u8], layout: Layout, images: &mut Vec<u8>, labels: &mut Vec<u32>) -> Result<(), DataError> {
    let record = layout.label_bytes + PIXELS;
    if bytes.is_empty() {
        return Err(DataError::corrupt(path, "file is empty"));
    }
    if !bytes.chunks_exact(record).remainder().is_empty() {
        return Err(DataError::corrupt(
            path,
            format!(
                "size {} bytes is not a multiple of the {record}-byte CIFAR record \
                 ({} label byte(s) + {PIXELS} pixels); truncated or not this CIFAR variant",
                bytes.len(),
                layout.label_bytes
            ),
        ));
    }
    for (index, rec) in bytes.chunks_exact(record).enumerate() {
        if let Some(coarse) = layout.coarse_classes {
            if usize::from(rec[0]) >= coarse {
                return Err(DataError::corrupt(
                    path,
                    format!("coarse label {} of record {index} is out of range (expected 0..{coarse})", rec[0]),
                ));
            }
        }
        let label = rec[layout.label_index];
        if usize::from(label) >= layout.classes {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label: u32::from(label),
                classes: layout.classes,
            });
        }
        labels.push(u32::from(label));
        images.extend_from_slice(&rec[layout.label_bytes..]);
    }
    Ok(())
}
