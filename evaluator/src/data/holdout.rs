//! The validation hold-out: the last 10 % of a training split, set aside for selecting
//! (architectures in a search, epochs in `autoagent train`) so the test split is never looked at
//! before the end.

use super::{Dataset, Split};

/// The training split of `data` minus its last 10 %, with that 10 % as the "test" split: train
/// on `.train`, select on `.test` (the validation hold-out). Fails below 20 training images.
pub fn search_split(data: &Dataset) -> Result<Dataset, String> {
    let n = data.train.n;
    if n < 20 {
        return Err(format!("{} has only {n} training images", data.kind.name()));
    }
    let hold = (n / 10).max(1);
    Ok(Dataset {
        kind: data.kind,
        train: split_off(&data.train, 0, n - hold),
        test: split_off(&data.train, n - hold, n),
    })
}

/// Images `from..to` of `split`.
pub fn split_off(split: &Split, from: usize, to: usize) -> Split {
    let per = split.image_len();
    Split {
        images: split.images[from * per..to * per].to_vec(),
        labels: split.labels[from..to].to_vec(),
        n: to - from,
        c: split.c,
        h: split.h,
        w: split.w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;

    fn split(n: usize) -> Split {
        Split {
            images: (0..n).map(|i| i as u8).collect(),
            labels: (0..n as u32).collect(),
            n,
            c: 1,
            h: 1,
            w: 1,
        }
    }

    #[test]
    fn the_hold_out_is_the_last_tenth_of_the_training_split() {
        let data = Dataset {
            kind: DatasetKind::Mnist,
            train: split(50),
            test: split(7),
        };
        let s = search_split(&data).unwrap();
        assert_eq!((s.train.n, s.test.n), (45, 5));
        assert_eq!(s.train.labels, (0..45).collect::<Vec<u32>>());
        assert_eq!(s.test.labels, (45..50).collect::<Vec<u32>>());
        assert_eq!(s.test.images, (45..50u8).collect::<Vec<u8>>());
        let tiny = Dataset { train: split(19), ..data };
        assert!(search_split(&tiny).unwrap_err().contains("only 19 training images"));
    }
}
