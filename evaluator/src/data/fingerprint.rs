//! A short fingerprint of a dataset's contents, recorded with a trained model so that measuring
//! it later on other data (another folder, another dataset in the same file format) is caught.

use sha2::{Digest, Sha256};

use super::{Dataset, Split};

/// `sha256:` and the hex SHA-256 of the dataset's name, then of each split (train, then test):
/// its image count and shape and its labels in order (little-endian). Labels in order tell
/// datasets and their cuts apart (MNIST from Fashion-MNIST, a fixture from the full set) at a
/// fraction of the cost of hashing every pixel.
pub fn fingerprint(data: &Dataset) -> String {
    let mut h = Sha256::new();
    h.update(b"autoagent-data-v1\0");
    h.update(data.kind.name().as_bytes());
    for split in [&data.train, &data.test] {
        hash_split(&mut h, split);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn hash_split(h: &mut Sha256, split: &Split) {
    for v in [split.n, split.c, split.h, split.w] {
        h.update((v as u64).to_le_bytes());
    }
    for &y in &split.labels {
        h.update(y.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;

    fn data(labels: &[u32]) -> Dataset {
        let split = |labels: &[u32]| Split {
            images: vec![0; labels.len()],
            labels: labels.to_vec(),
            n: labels.len(),
            c: 1,
            h: 1,
            w: 1,
        };
        Dataset {
            kind: DatasetKind::Mnist,
            train: split(labels),
            test: split(&[1, 2]),
        }
    }

    #[test]
    fn the_fingerprint_changes_with_the_labels_their_order_and_count() {
        let a = fingerprint(&data(&[0, 1, 2]));
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64, "{a}");
        assert_eq!(a, fingerprint(&data(&[0, 1, 2])));
        assert_ne!(a, fingerprint(&data(&[0, 2, 1])));
        assert_ne!(a, fingerprint(&data(&[0, 1])));
        let mut other = data(&[0, 1, 2]);
        other.kind = DatasetKind::FashionMnist;
        assert_ne!(a, fingerprint(&other));
    }
}
