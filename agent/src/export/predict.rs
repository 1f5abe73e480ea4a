//! Predictions of a loaded model: on a split of its dataset, measured against the labels.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use autoagent_evaluator::data::{self, Dataset, DatasetKind, Split};
use autoagent_evaluator::train::Batcher;
use candle_core::{DType, Device};
use serde_json::{json, Value};

use super::folder::LoadedModel;
use super::spec::{ModelSpec, SPEC_FILE};
use super::{invalid, ExportError};
use crate::task::search_split;

/// The predicted class and its softmax probability of each image of `split`.
pub fn predict_split(m: &LoadedModel, split: &Split, batch_size: usize, device: &Device) -> Result<Vec<(usize, f32)>, ExportError> {
    let spec = &m.spec;
    if (split.c, split.h, split.w) != (spec.in_channels, spec.input_size, spec.input_size) {
        return invalid(format!(
            "the model takes {}x{}x{} images, these are {}x{}x{}",
            spec.in_channels, spec.input_size, spec.input_size, split.c, split.h, split.w
        ));
    }
    let batcher = Batcher::new(&spec.normalization.mean, &spec.normalization.std);
    let idx: Vec<usize> = (0..split.n).collect();
    let mut out = Vec::with_capacity(split.n);
    for chunk in idx.chunks(batch_size.max(1)) {
        let (xs, _) = batcher.batch::<rand_chacha::ChaCha8Rng>(split, chunk, None, device)?;
        let logits = m.model.net.forward_t(&xs, false)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for row in logits {
            out.push(top1(&row));
        }
    }
    Ok(out)
}

/// The argmax of `logits` (the first among equals) and its softmax probability.
fn top1(logits: &[f32]) -> (usize, f32) {
    let (best, max) = logits
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, v)| if v > bv { (i, v) } else { (bi, bv) });
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (best, (1.0 / sum) as f32)
}

/// A split of a dataset to measure on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitChoice {
    /// The training split.
    Train,
    /// The test split.
    Test,
    /// The run's validation hold-out: the last 10 % of the training split.
    Valid,
}

impl SplitChoice {
    /// Its name: `train`, `test` or `valid`.
    pub fn name(self) -> &'static str {
        match self {
            SplitChoice::Train => "train",
            SplitChoice::Test => "test",
            SplitChoice::Valid => "valid",
        }
    }

    /// The split of `dataset`.
    fn of(self, dataset: Dataset) -> Result<Split, ExportError> {
        Ok(match self {
            SplitChoice::Train => dataset.train,
            SplitChoice::Test => dataset.test,
            SplitChoice::Valid => search_split(&dataset).map_err(ExportError::Invalid)?.test,
        })
    }
}

impl FromStr for SplitChoice {
    type Err = ExportError;

    fn from_str(s: &str) -> Result<Self, ExportError> {
        match s {
            "train" => Ok(SplitChoice::Train),
            "test" => Ok(SplitChoice::Test),
            "valid" => Ok(SplitChoice::Valid),
            other => invalid(format!("unknown split '{other}' (test, train or valid)")),
        }
    }
}

/// What `autoagent predict --split` is asked.
pub struct SplitOptions {
    /// The model folder (named in messages).
    pub model_dir: PathBuf,
    /// The dataset asked for; it must be the model's (`None`: the model's).
    pub task: Option<String>,
    /// The split.
    pub split: SplitChoice,
    /// Data root or dataset folder (`None`: the folder the model's data came from, where it
    /// still is; else the default data root).
    pub data_dir: Option<PathBuf>,
    /// Measure on data whose fingerprint differs from the model's training data.
    pub force: bool,
    /// Download the dataset when it is not present.
    pub download: bool,
    /// Only the first N images of the split.
    pub limit: Option<usize>,
    /// Images per forward pass.
    pub batch_size: usize,
}

/// A model's accuracy on a split, overall and per class.
pub struct SplitScore {
    /// The dataset.
    pub kind: DatasetKind,
    /// The split.
    pub split: SplitChoice,
    /// Images measured.
    pub n: usize,
    /// Images classified correctly.
    pub correct: usize,
    /// `correct` of `n`, in %.
    pub accuracy: f64,
    /// Each class, by index.
    pub per_class: Vec<ClassScore>,
    /// The predicted class of each image.
    pub predictions: Vec<usize>,
}

/// One class of a [`SplitScore`].
pub struct ClassScore {
    /// Its name (its index where none is known).
    pub label: String,
    /// Images of the class.
    pub n: usize,
    /// Of those, classified correctly.
    pub correct: usize,
}

impl ClassScore {
    /// The accuracy on the class, in % (`None` when the split holds none of it).
    pub fn accuracy(&self) -> Option<f64> {
        (self.n > 0).then(|| 100.0 * self.correct as f64 / self.n as f64)
    }
}

impl SplitScore {
    /// The lines `predict` prints: one JSON object, or the accuracy then one line per class
    /// present.
    pub fn lines(&self, json: bool) -> Vec<String> {
        if json {
            return vec![self.json().to_string()];
        }
        let (kind, split) = (self.kind, self.split.name());
        let mut lines = vec![format!(
            "accuracy {:.2} % ({}/{}) on the {kind} {split} split",
            self.accuracy, self.correct, self.n
        )];
        for (c, s) in self.per_class.iter().enumerate() {
            if let Some(a) = s.accuracy() {
                lines.push(format!("{c}\t{}\t{a:.2} %\t({}/{})", s.label, s.correct, s.n));
            }
        }
        lines
    }

    fn json(&self) -> Value {
        let per_class: Vec<Value> = (self.per_class.iter().enumerate())
            .map(|(c, s)| json!({"class": c, "label": s.label, "n": s.n, "correct": s.correct, "accuracy": s.accuracy()}))
            .collect();
        json!({
            "task": self.kind.name(),
            "split": self.split.name(),
            "n": self.n,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "per_class": per_class,
            "predictions": self.predictions,
        })
    }
}

/// The dataset the model was trained on (`asked` must name it, where given).
fn model_dataset(spec: &ModelSpec, asked: Option<&str>) -> Result<DatasetKind, ExportError> {
    let Some(kind) = DatasetKind::from_name(&spec.task) else {
        return invalid(format!("the model's task '{}' is not a dataset", spec.task));
    };
    if let Some(t) = asked {
        let Some(asked) = DatasetKind::from_name(t) else {
            return invalid(format!("unknown task '{t}' (available: cifar10, cifar100, mnist, fashion-mnist)"));
        };
        if asked != kind {
            return invalid(format!("the model was trained on {kind}, not {asked}: its classes are {kind}'s"));
        }
    }
    Ok(kind)
}

/// Measure the model on a split of its dataset. `note` hears what is not checked (a model
/// without a data fingerprint).
pub fn measure_split(m: &LoadedModel, opts: &SplitOptions, device: &Device, note: &mut dyn FnMut(&str)) -> Result<SplitScore, ExportError> {
    let spec = &m.spec;
    let kind = model_dataset(spec, opts.task.as_deref())?;
    let root = match (&opts.data_dir, &spec.data) {
        (Some(d), _) => d.clone(),
        (None, Some(rec)) if rec.dir.is_dir() => rec.dir.clone(),
        (None, _) => data::data_root(None),
    };
    let dataset = data::open(kind, &root, opts.download)?;
    check_data(spec, &opts.model_dir, &root, &dataset, opts.force, note)?;
    let mut split = opts.split.of(dataset)?;
    if let Some(n) = opts.limit {
        split = head(&split, n);
    }
    if split.n == 0 {
        return invalid(format!("the {kind} {} split holds no images", opts.split.name()));
    }
    let preds = predict_split(m, &split, opts.batch_size, device)?;
    Ok(score(spec, kind, opts.split, &split, &preds))
}

/// `preds` against the labels of `split`.
fn score(spec: &ModelSpec, kind: DatasetKind, choice: SplitChoice, split: &Split, preds: &[(usize, f32)]) -> SplitScore {
    let classes = spec.num_classes;
    let mut per_class: Vec<ClassScore> = (0..classes)
        .map(|c| ClassScore {
            label: spec.label(c),
            n: 0,
            correct: 0,
        })
        .collect();
    for (&(p, _), &y) in preds.iter().zip(&split.labels) {
        let y = y as usize;
        if y < classes {
            per_class[y].n += 1;
            per_class[y].correct += usize::from(p == y);
        }
    }
    let correct: usize = per_class.iter().map(|c| c.correct).sum();
    SplitScore {
        kind,
        split: choice,
        n: split.n,
        correct,
        accuracy: 100.0 * correct as f64 / split.n as f64,
        per_class,
        predictions: preds.iter().map(|p| p.0).collect(),
    }
}

/// The data is what the model was trained on (its fingerprint is the recorded one), unless
/// `force`; a model that records none is measured with a note.
fn check_data(spec: &ModelSpec, model: &Path, root: &Path, dataset: &Dataset, force: bool, note: &mut dyn FnMut(&str)) -> Result<(), ExportError> {
    let Some(rec) = &spec.data else {
        note(&format!(
            "note: {} records no fingerprint of its training data (format version {}): the data under {} is not checked",
            model.join(SPEC_FILE).display(),
            spec.format_version,
            root.display()
        ));
        return Ok(());
    };
    let found = data::fingerprint(dataset);
    if found != rec.fingerprint && !force {
        return invalid(format!(
            "{} holds other data than the model {} was trained on ({}: {} train / {} test images, {}; here: {} / {}, {}); pass --force to measure anyway",
            root.display(),
            model.display(),
            rec.dir.display(),
            rec.train_images,
            rec.test_images,
            rec.fingerprint,
            dataset.train.n,
            dataset.test.n,
            found
        ));
    }
    Ok(())
}

/// The first `n` images of `split`.
fn head(split: &Split, n: usize) -> Split {
    let n = n.min(split.n);
    Split {
        images: split.images[..n * split.image_len()].to_vec(),
        labels: split.labels[..n].to_vec(),
        n,
        c: split.c,
        h: split.h,
        w: split.w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top1_is_the_argmax_with_its_softmax_probability() {
        let (c, p) = top1(&[1.0, 3.0, 2.0]);
        assert_eq!(c, 1);
        let e = |v: f64| v.exp();
        let want = e(3.0) / (e(1.0) + e(3.0) + e(2.0));
        assert!((p as f64 - want).abs() < 1e-6, "{p} vs {want}");
        assert_eq!(top1(&[5.0, 5.0]).0, 0);
    }

    #[test]
    fn split_names_parse_back() {
        for s in [SplitChoice::Train, SplitChoice::Test, SplitChoice::Valid] {
            assert_eq!(s.name().parse::<SplitChoice>().unwrap(), s);
        }
        assert!("dev".parse::<SplitChoice>().is_err());
    }
}
