//! Which rows train and which are held out: the user's fixed test split (`--split FILE.json`),
//! and the validation inside the search: stratified k-fold cross-validation for small data,
//! a stratified hold-out for large (see [`Validation::default_for`]).

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::dataset::TargetValues;
use super::error::{Result, TabularError};

/// Up to this many training rows, the search validates by k-fold cross-validation; above, by a
/// hold-out.
pub const CV_MAX_ROWS: usize = 10_000;

/// Folds of the default cross-validation.
pub const DEFAULT_FOLDS: usize = 5;

/// The share of rows of the default hold-out.
pub const HOLDOUT_FRACTION: f64 = 0.2;

/// A fixed split of a file's data rows (0-based, the header not counted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitFile {
    /// Rows the search and the final model may use.
    pub train: Vec<usize>,
    /// Rows measured once, at the end.
    pub test: Vec<usize>,
}

impl SplitFile {
    /// Read `path` and check it against a file of `rows` data rows: indices in range, none
    /// twice, train and test disjoint and not empty.
    pub fn read(path: &Path, rows: usize) -> Result<SplitFile> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| TabularError::Split(format!("--split {shown}: {e}")))?;
        let split: SplitFile = serde_json::from_str(&text)
            .map_err(|e| TabularError::Split(format!("--split {shown}: not a {{\"train\": [rows], \"test\": [rows]}} object: {e}")))?;
        split.check(rows).map_err(|why| TabularError::Split(format!("--split {shown}: {why}")))?;
        Ok(split)
    }

    fn check(&self, rows: usize) -> Result<(), String> {
        if self.train.is_empty() || self.test.is_empty() {
            return Err("both \"train\" and \"test\" need rows".into());
        }
        let mut seen = vec![0u8; rows];
        for (part, list, mark) in [("train", &self.train, 1u8), ("test", &self.test, 2u8)] {
            for &r in list {
                let Some(s) = seen.get_mut(r) else {
                    return Err(format!(
                        "{part} row {r} is past the data's {rows} rows (rows count from 0, the header not counted)"
                    ));
                };
                match *s {
                    0 => *s = mark,
                    m if m == mark => return Err(format!("{part} row {r} is listed twice")),
                    _ => return Err(format!("row {r} is in both train and test")),
                }
            }
        }
        Ok(())
    }
}

/// How the search validates a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Validation {
    /// k-fold cross-validation (stratified for classes); every row is predicted once, out of
    /// fold.
    Cv {
        /// Folds.
        k: usize,
    },
    /// One hold-out (stratified for classes).
    Holdout {
        /// The share of rows held out.
        fraction: f64,
    },
}

impl Validation {
    /// The documented default: [`DEFAULT_FOLDS`]-fold cross-validation up to [`CV_MAX_ROWS`]
    /// training rows, else a [`HOLDOUT_FRACTION`] hold-out; `--cv K` asks for K folds.
    pub fn default_for(rows: usize, cv: Option<usize>) -> Result<Validation> {
        match cv {
            Some(k) if k < 2 => Err(TabularError::Option(format!("--cv {k}: cross-validation needs at least 2 folds"))),
            Some(k) if k > rows => Err(TabularError::Option(format!("--cv {k}: more folds than the {rows} training rows"))),
            Some(k) => Ok(Validation::Cv { k }),
            None if rows <= CV_MAX_ROWS => Ok(Validation::Cv { k: DEFAULT_FOLDS }),
            None => Ok(Validation::Holdout { fraction: HOLDOUT_FRACTION }),
        }
    }

    /// A description (`5-fold cross-validation`, `a 20 % hold-out`).
    pub fn describe(&self) -> String {
        match self {
            Validation::Cv { k } => format!("{k}-fold cross-validation"),
            Validation::Holdout { fraction } => format!("a {:.0} % hold-out", 100.0 * fraction),
        }
    }
}

/// One fold: the rows a pipeline is fitted on and the rows it predicts (indices into the
/// training rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    /// Rows fitted on.
    pub train: Vec<usize>,
    /// Rows predicted.
    pub valid: Vec<usize>,
}

/// The folds of `validation` over target `y`, seeded: stratified by class (a class's rows are
/// shuffled and dealt to the folds in turn), shuffled for a regression.
pub fn folds(y: &TargetValues, validation: Validation, seed: u64) -> Result<Vec<Fold>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xf01d);
    let groups = strata(y)?;
    let n = y.len();
    let mut assigned = vec![0usize; n];
    let parts = match validation {
        Validation::Cv { k } => k,
        Validation::Holdout { .. } => 2,
    };
    let mut next = 0;
    for mut g in groups {
        g.shuffle(&mut rng);
        match validation {
            Validation::Cv { k } => {
                for r in g {
                    assigned[r] = next % k;
                    next += 1;
                }
            }
            Validation::Holdout { fraction } => {
                let held = ((g.len() as f64 * fraction).round() as usize).clamp(1, g.len() - 1);
                g.iter().enumerate().for_each(|(i, &r)| assigned[r] = usize::from(i < held));
            }
        }
    }
    let fold = |f: usize| Fold {
        train: (0..n).filter(|&r| assigned[r] != f).collect(),
        valid: (0..n).filter(|&r| assigned[r] == f).collect(),
    };
    Ok(match validation {
        Validation::Cv { .. } => (0..parts).map(fold).collect(),
        Validation::Holdout { .. } => vec![fold(1)],
    })
}

/// The rows of each class (one group of every row for a regression); a class of one row
/// cannot be both fitted and validated.
fn strata(y: &TargetValues) -> Result<Vec<Vec<usize>>> {
    match y {
        TargetValues::Values(v) => Ok(vec![(0..v.len()).collect()]),
        TargetValues::Classes { codes, classes } => {
            let mut groups = vec![Vec::new(); classes.len()];
            codes.iter().enumerate().for_each(|(r, &c)| groups[c].push(r));
            if let Some(c) = groups.iter().position(|g| g.len() == 1) {
                return Err(TabularError::Data(format!(
                    "class '{}' has one row: stratified validation needs at least two rows of each class (add rows, drop the row or merge the class)",
                    classes[c]
                )));
            }
            Ok(groups.into_iter().filter(|g| !g.is_empty()).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(codes: Vec<usize>, k: usize) -> TargetValues {
        TargetValues::Classes {
            codes,
            classes: (0..k).map(|c| format!("c{c}")).collect(),
        }
    }

    #[test]
    fn stratified_folds_cover_every_row_once_with_each_class_spread() {
        let y = classes((0..100).map(|i| usize::from(i % 4 == 0)).collect(), 2);
        let f = folds(&y, Validation::Cv { k: 5 }, 7).unwrap();
        assert_eq!(f.len(), 5);
        let mut seen: Vec<usize> = f.iter().flat_map(|x| x.valid.clone()).collect();
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        for x in &f {
            assert_eq!(x.valid.len(), 20);
            assert_eq!(x.valid.iter().filter(|&&r| r % 4 == 0).count(), 5, "25 positives, 5 a fold");
            assert_eq!(x.train.len() + x.valid.len(), 100);
        }
        assert_eq!(f, folds(&y, Validation::Cv { k: 5 }, 7).unwrap(), "seeded");
        assert_ne!(f, folds(&y, Validation::Cv { k: 5 }, 8).unwrap());
        let h = folds(&y, Validation::Holdout { fraction: 0.2 }, 7).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].valid.len(), 20);
        assert_eq!(h[0].valid.iter().filter(|&&r| r % 4 == 0).count(), 5);
    }

    #[test]
    fn a_class_of_one_row_and_bad_fold_counts_are_one_line_errors() {
        let e = folds(&classes(vec![0, 0, 0, 1], 2), Validation::Cv { k: 2 }, 0).unwrap_err().to_string();
        assert!(e.contains("class 'c1' has one row"), "{e}");
        assert!(Validation::default_for(100, Some(1)).unwrap_err().to_string().contains("at least 2 folds"));
        assert_eq!(Validation::default_for(100, None).unwrap(), Validation::Cv { k: 5 });
        assert_eq!(Validation::default_for(50_000, None).unwrap(), Validation::Holdout { fraction: 0.2 });
    }

    #[test]
    fn split_files_are_checked_against_the_data() {
        let check = |train: Vec<usize>, test: Vec<usize>| SplitFile { train, test }.check(5);
        assert_eq!(check(vec![0, 1, 2], vec![3, 4]), Ok(()));
        assert!(check(vec![0, 1], vec![5]).unwrap_err().contains("test row 5 is past the data's 5 rows"));
        assert!(check(vec![0, 0], vec![1]).unwrap_err().contains("train row 0 is listed twice"));
        assert!(check(vec![0, 1], vec![1]).unwrap_err().contains("row 1 is in both train and test"));
        assert!(check(vec![], vec![1]).unwrap_err().contains("need rows"));
    }
}
