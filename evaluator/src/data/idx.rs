//! Reader for the IDX format of MNIST and Fashion-MNIST, gzipped or not.
//!
//! An IDX file is a big-endian header (two zero bytes, a type byte — 0x08 for unsigned bytes —,
//! the number of dimensions, then one u32 per dimension) followed by the data. Image files have
//! magic 2051 (`0x00000803`, dims n, rows, cols), label files magic 2049 (`0x00000801`, dim n).

use std::io::Read;
use std::path::Path;

use super::{DataError, Split};

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Largest decompressed size trusted as an allocation hint (the full MNIST train images are 47 MB).
const MAX_SIZE_HINT: usize = 1 << 30;

/// Reads an image file and its label file into one split; the images must be `h` x `w`.
pub(super) fn read_split(images_path: &Path, labels_path: &Path, h: usize, w: usize, classes: usize) -> Result<Split, DataError> {
    let (images, labels) = rayon::join(|| read_idx(images_path, IMAGES_MAGIC, "image"), || read_idx(labels_path, LABELS_MAGIC, "label"));
    let (dims, images) = images?;
    let (label_dims, label_bytes) = labels?;
    if dims[1] != h || dims[2] != w {
        return Err(DataError::corrupt(images_path, format!("images are {}x{}, expected {h}x{w}", dims[1], dims[2])));
    }
    let (n_images, n_labels) = (dims[0], label_dims[0]);
    if n_images != n_labels {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            n_images,
            labels: labels_path.to_path_buf(),
            n_labels,
        });
    }
    if n_images == 0 {
        return Err(DataError::corrupt(images_path, "file holds no images"));
    }
    let mut labels = Vec::with_capacity(n_labels);
    for (index, &label) in label_bytes.iter().enumerate() {
        if usize::from(label) >= classes {
            return Err(DataError::LabelOutOfRange {
                path: labels_path.to_path_buf(),
                index,
                label: u32::from(label),
                classes,
            });
        }
        labels.push(u32::from(label));
    }
    Ok(Split {
        images,
        labels,
        n: n_images,
        c: 1,
        h,
        w,
    })
}

/// Reads a whole IDX file (decompressing gzip when the file starts with the gzip magic) and
/// returns its dimensions and data, checking the magic number (`expected`, for a `what` file) and
/// that the data length matches the dimensions.
fn read_idx(path: &Path, expected: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io("cannot read", path, e))?;
    let mut bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        // The gzip trailer's last four bytes hold the uncompressed size (mod 2^32).
        let hint = raw
            .get(raw.len().saturating_sub(4)..)
            .filter(|t| t.len() == 4)
            .map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize)
            .unwrap_or(0)
            .min(MAX_SIZE_HINT);
        let mut out = Vec::with_capacity(hint);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::corrupt(path, format!("not a valid gzip stream: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 {
        return Err(DataError::corrupt(path, format!("{} bytes is too short for an IDX header", bytes.len())));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != expected {
        return Err(DataError::corrupt(
            path,
            format!(
                "bad IDX magic number {magic} (0x{magic:08x}); expected {expected} \
                 (0x{expected:08x}) for an IDX {what} file"
            ),
        ));
    }
    let rank = usize::from(bytes[3]);
    let header_len = 4 + 4 * rank;
    if rank == 0 || bytes.len() < header_len {
        return Err(DataError::corrupt(
            path,
            format!("IDX header with {rank} dimension(s) does not fit in {} bytes", bytes.len()),
        ));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        .collect();
    let size = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let actual = bytes.len() - header_len;
    if size != Some(actual) {
        let shape: Vec<String> = dims.iter().map(usize::to_string).collect();
        return Err(DataError::corrupt(
            path,
            format!(
                "IDX header says {} = {} data bytes but the file holds {actual}",
                shape.join("x"),
                size.map_or_else(|| "overflowing".to_string(), |e| e.to_string()),
            ),
        ));
    }
    bytes.drain(..header_len);
    Ok((dims, bytes))
}
