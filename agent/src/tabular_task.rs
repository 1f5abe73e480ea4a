//! A tabular task (a CSV and its target column) as an [`Evaluator`]: a trial is a pipeline of
//! the tabular space ([`tabular_space`]) validated on the task's folds of the training rows, in
//! this process (a LightGBM fit on a few thousand rows takes tenths of a second: a child process
//! a trial would cost more than the trial). Its out-of-fold predictions are written beside it
//! (`trials/NNNN/oof.json`), so the final model, a greedy ensemble of the trials (Caruana et al.
//! 2004), can be built from every trial, a resumed run's included.
//!
//! The score the loop maximises is the task's metric oriented so that larger is better (ROC-AUC
//! and accuracy as they are, log-loss and RMSE negated).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use autoagent_evaluator::tabular::cheap::{at_share, subsample};
use autoagent_evaluator::tabular::ensemble::{self, Ensemble};
use autoagent_evaluator::tabular::pipeline::{score, width};
use autoagent_evaluator::tabular::profile::profile;
use autoagent_evaluator::tabular::split::{folds, Fold};
use autoagent_evaluator::tabular::{read_csv, FittedPipeline, Metric, Problem, ReadOptions, Schema, SplitFile, TabularData, Validation};
use serde::{Deserialize, Serialize};

use crate::configspace::{pipeline, tabular_space, Config, Space, Value};
use crate::llm_strategy::TaskInfo;
use crate::tabular_rank::MlpRanking;
use crate::task::{Evaluation, Evaluator, Fidelity, TrialLimit};

/// The file of a trial's out-of-fold predictions.
pub const OOF_FILE: &str = "oof.json";

/// A trial's out-of-fold predictions, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Oof {
    config: Config,
    score: f64,
    /// Rows × width; `NaN` (written `null`: JSON has no NaN) for rows no fold predicts (a
    /// hold-out's training rows).
    #[serde(with = "nan_as_null")]
    predictions: Vec<f64>,
    /// Boosting's trees or an MLP's epochs for a refit on every row (see
    /// `Validated::refit_rounds`; `trees` in files written before MLPs).
    #[serde(default, alias = "trees")]
    rounds: Option<usize>,
    /// Seconds of the validation (the refit's estimate).
    #[serde(default)]
    seconds: f64,
    /// The trial's number (its folder's name, not written in the file).
    #[serde(skip)]
    trial: usize,
}

/// `NaN`s as JSON `null`s and back (serde_json writes a non-finite number as `null` and cannot
/// read it back as a number).
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(|x| x.is_finite().then_some(*x)).collect::<Vec<Option<f64>>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }
}

/// What a CSV task is made of (the `run` options of a `csv:PATH` task).
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// The CSV file.
    pub path: PathBuf,
    /// The target column.
    pub target: String,
    /// The metric (default: the problem's, see [`Metric::default_for`]).
    pub metric: Option<String>,
    /// The problem (default: inferred from the target).
    pub problem: Option<String>,
    /// A fixed split of the file's rows (`{"train": [...], "test": [...]}`).
    pub split: Option<PathBuf>,
    /// A test file with the same columns.
    pub test: Option<PathBuf>,
    /// Folds of the validation (default: [`Validation::default_for`]).
    pub cv: Option<usize>,
    /// The missing-value tokens, separated by commas (default: [`ReadOptions::default`]; see
    /// [`ReadOptions::with_na`]).
    pub na: Option<String>,
    /// Threads of every learner.
    pub threads: usize,
    /// Seed of the folds and the learners.
    pub seed: u64,
    /// Training rows the LLM's prompt may show (0: none; the profile only).
    pub llm_rows: usize,
    /// The proxies that rank a round's MLPs (`None`: no ranking; see [`crate::tabular_rank`]).
    pub proxies: Option<String>,
    /// The scheduler's top rung: a trial at rung `r` is validated on `r / full_rung` of each
    /// fold's training rows (see [`autoagent_evaluator::tabular::cheap`]); 1 without a scheduler.
    pub full_rung: usize,
}

/// A refit on every row against one fold's fit: more rows, and its test predictions.
const REFIT_GROWTH: f64 = 1.5;

/// The ensemble chooses among this many trials, the best by validation (auto-sklearn's
/// `ensemble_nbest`): fewer chances to fit the folds' noise, and a selection whose time does not
/// grow with the trials.
pub const ENSEMBLE_LIBRARY: usize = 50;

/// The final model plans for refitting this many of the best trials (a greedy ensemble of the
/// fixtures' runs holds 4 to 10).
const PLANNED_MEMBERS: usize = 10;

/// The final model's files in the run directory.
pub const FINAL_FILE: &str = "final/ensemble.json";

/// The final ensemble's predictions of the test rows, in their order (when the task has some).
pub const TEST_PREDICTIONS_FILE: &str = "final/test_predictions.json";

/// [`TEST_PREDICTIONS_FILE`]: what `bench tabular` scores one way for every tool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestPredictions {
    /// Class labels, in the order of each row's probabilities (empty for a regression).
    pub classes: Vec<String>,
    /// Numbers a row: the classes, or 1.
    pub width: usize,
    /// Rows × width.
    pub predictions: Vec<f64>,
}

/// The ensemble's test metric and its predictions of the test rows.
type TestBlend = (f64, Vec<f64>);

/// Write `value` as JSON to `path` (its folder created).
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), String> {
    std::fs::create_dir_all(path.parent().expect("a folder"))
        .and_then(|_| std::fs::write(path, serde_json::to_string(value).expect("serialises")))
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}

/// The version of [`FINAL_FILE`] this build writes and reads.
pub const FINAL_VERSION: u32 = 2;

/// The final model as written: the ensemble's pipelines fitted on every training row, their
/// weights, and the columns they take.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalEnsemble {
    /// Format version ([`FINAL_VERSION`]).
    pub version: u32,
    /// The columns the pipelines were trained on, the target's problem and classes.
    pub schema: Schema,
    /// The task's metric.
    pub metric: Metric,
    /// Out-of-fold metric of the ensemble.
    pub validation_score: f64,
    /// Test metric of the ensemble, when the task has test rows.
    pub test_score: Option<f64>,
    /// The members, by trial number.
    pub members: Vec<Member>,
    /// The trial of the best single pipeline (always a member): kept beside the ensemble.
    pub best: usize,
}

/// A pipeline of the final ensemble.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    /// The trial it comes from.
    pub trial: usize,
    /// Its weight in the blend (the weights sum to 1).
    pub weight: f64,
    /// Its out-of-fold metric in the search.
    pub validation_score: f64,
    /// Its own test metric, when the task has test rows.
    pub test_score: Option<f64>,
    /// The pipeline fitted on every training row.
    pub pipeline: FittedPipeline,
}

impl FinalEnsemble {
    /// The member of trial `trial`.
    pub fn member(&self, trial: usize) -> Option<&Member> {
        self.members.iter().find(|m| m.trial == trial)
    }

    /// Read [`FINAL_FILE`] of a run directory.
    pub fn read(run_dir: &Path) -> Result<FinalEnsemble, String> {
        let path = run_dir.join(FINAL_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let version = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["version"].as_u64());
        if version != Some(u64::from(FINAL_VERSION)) {
            return Err(format!(
                "{} has version {}; this build reads version {FINAL_VERSION} (run the task again)",
                path.display(),
                version.map_or("unknown".into(), |v| v.to_string())
            ));
        }
        serde_json::from_str(&text).map_err(|e| format!("{} is not a final ensemble: {e}", path.display()))
    }
}

/// The task.
pub struct TabularTask {
    data: TabularData,
    test: Option<TabularData>,
    folds: Vec<Fold>,
    /// The rows the folds predict.
    predicted: Vec<usize>,
    metric: Metric,
    validation: Validation,
    threads: usize,
    seed: u64,
    space: Space,
    run_dir: PathBuf,
    /// Seconds of the finished trials of each model family at each rung.
    seconds: HashMap<(String, usize), Vec<f64>>,
    /// The data's profile, as the LLM's prompt shows it.
    profile: String,
    /// Each validated trial's metric (oriented: larger is better) and seconds, for planning
    /// the final ensemble's refits.
    validated: Vec<(f64, f64)>,
    /// The ranking of a round's MLPs by their proxies.
    ranking: Option<MlpRanking>,
    /// The scheduler's top rung (see [`CsvOptions::full_rung`]).
    full_rung: usize,
}

impl TabularTask {
    /// The task of training rows `data` (and test rows `test`, measured once by the final
    /// model), validated by `validation`, scored with `metric`; trials write under `run_dir`.
    pub fn new(
        data: TabularData,
        test: Option<TabularData>,
        validation: Validation,
        metric: Metric,
        threads: usize,
        seed: u64,
        run_dir: &Path,
    ) -> Result<Self, String> {
        let folds = folds(&data.target.values, validation, seed).map_err(|e| e.to_string())?;
        let mut predicted: Vec<usize> = folds.iter().flat_map(|f| f.valid.iter().copied()).collect();
        predicted.sort_unstable();
        Ok(TabularTask {
            test,
            folds,
            predicted,
            metric,
            validation,
            threads,
            seed,
            space: tabular_space(),
            run_dir: run_dir.to_path_buf(),
            seconds: HashMap::new(),
            profile: profile(&data, 0),
            data,
            validated: Vec::new(),
            ranking: None,
            full_rung: 1,
        })
    }

    /// The task of a CSV (see [`CsvOptions`]) and the warnings to show (columns left out, rows
    /// without a target); every bad input is a one-line error.
    pub fn from_csv(o: &CsvOptions, run_dir: &Path) -> Result<(TabularTask, Vec<String>), String> {
        let read = ReadOptions::with_na(o.na.as_deref());
        let frame = read_csv(&o.path, &read).map_err(|e| e.to_string())?;
        let problem = o
            .problem
            .as_deref()
            .map(str::parse::<Problem>)
            .transpose()
            .map_err(|e| format!("--problem: {e}"))?;
        let (train_frame, test_frame) = match (&o.split, &o.test) {
            (Some(_), Some(_)) => return Err("give --split or --test, not both".into()),
            (Some(path), None) => {
                let split = SplitFile::read(path, frame.rows).map_err(|e| e.to_string())?;
                (frame.take(&split.train), Some(frame.take(&split.test)))
            }
            (None, Some(path)) => (frame, Some(read_csv(path, &read).map_err(|e| e.to_string())?)),
            (None, None) => (frame, None),
        };
        let data = TabularData::from_frame(&train_frame, &o.target, problem).map_err(|e| e.to_string())?;
        let test = test_frame.map(|f| data.like(&f)).transpose().map_err(|e| format!("test rows: {e}"))?;
        let metric = match &o.metric {
            Some(m) => m.parse::<Metric>().map_err(|e| format!("--metric: {e}"))?,
            None => Metric::default_for(data.target.problem),
        };
        if !metric.applies_to(data.target.problem) {
            return Err(format!("--metric {metric} does not apply to a {} problem", data.target.problem));
        }
        let validation = Validation::default_for(data.len(), o.cv).map_err(|e| e.to_string())?;
        let mut warnings: Vec<String> = data.dropped.iter().map(|d| format!("column '{}' left out: {}", d.name, d.reason)).collect();
        let without = train_frame.rows - data.len();
        if without > 0 {
            warnings.push(format!("{without} row(s) without a target value left out"));
        }
        let mut task = TabularTask::new(data, test, validation, metric, o.threads.max(1), o.seed, run_dir)?;
        // A resumed run's trials plan the final model too.
        task.validated = task.all_oofs().iter().map(|o| (task.oriented(o.score), o.seconds)).collect();
        if o.llm_rows > 0 {
            task.profile = profile(&task.data, o.llm_rows);
        }
        task.ranking = o.proxies.as_deref().map(|p| MlpRanking::new(p, o.seed)).transpose()?;
        task.full_rung = o.full_rung.max(1);
        Ok((task, warnings))
    }

    /// The task's metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Search `space` (a narrowing of the tabular space) instead.
    pub fn set_space(&mut self, space: Space) {
        self.space = space;
    }

    /// The score the loop maximises for a metric value.
    pub fn oriented(&self, value: f64) -> f64 {
        -self.metric.loss(value)
    }

    fn trial_dir(&self, trial: usize) -> PathBuf {
        self.run_dir.join("trials").join(format!("{trial:04}"))
    }

    fn family(config: &Config) -> String {
        config.str("model").unwrap_or("gbm").to_string()
    }

    /// The share of the training rows a trial validates on at `fidelity` (1: in full).
    fn share(&self, fidelity: Fidelity) -> f64 {
        (fidelity.to as f64 / self.full_rung as f64).clamp(0.0, 1.0)
    }

    /// What the seconds of a trial are kept under: its family and its rung (the full rung for a
    /// validation in full).
    fn seconds_key(&self, config: &Config, fidelity: Fidelity) -> (String, usize) {
        (Self::family(config), fidelity.to.min(self.full_rung))
    }

    /// The out-of-fold predictions of every trial written under the run directory.
    fn all_oofs(&self) -> Vec<Oof> {
        let Ok(dirs) = std::fs::read_dir(self.run_dir.join("trials")) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = dirs.filter_map(|d| d.ok()).map(|d| d.path().join(OOF_FILE)).filter(|p| p.is_file()).collect();
        paths.sort();
        let trial = |p: &Path| p.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()).and_then(|n| n.parse().ok());
        paths
            .iter()
            .filter_map(|p| Some((trial(p)?, std::fs::read_to_string(p).ok()?)))
            .filter_map(|(n, t)| {
                Some(Oof {
                    trial: n,
                    ..serde_json::from_str::<Oof>(&t).ok()?
                })
            })
            .filter(|o| o.predictions.len() == self.data.len() * width(&self.data.target.values))
            .collect()
    }

    /// The seconds of refitting one trial that validated in `seconds` on every training row.
    fn refit_seconds(&self, seconds: f64) -> f64 {
        seconds / self.folds.len().max(1) as f64 * REFIT_GROWTH
    }

    /// The greedy ensemble of the best trials' out-of-fold predictions whose refits fit in
    /// `seconds` (the best single pipeline always, then the members by weight while their
    /// estimates fit; the weights of those kept renormalised and the blend scored again), and
    /// the trials' records.
    fn ensemble(&self, seconds: Option<f64>) -> Option<(Ensemble, Vec<Oof>)> {
        let mut oofs = self.all_oofs();
        // The library: the best trials by validation (ties: the earlier trial).
        oofs.sort_by(|a, b| self.oriented(b.score).total_cmp(&self.oriented(a.score)).then(a.trial.cmp(&b.trial)));
        oofs.truncate(ENSEMBLE_LIBRARY);
        oofs.sort_by_key(|o| o.trial);
        let preds: Vec<&[f64]> = oofs.iter().map(|o| o.predictions.as_slice()).collect();
        let w = width(&self.data.target.values);
        let mut e = ensemble::select(&preds, &self.data.target.values, &self.predicted, w, self.metric)?;
        if let Some(limit) = seconds {
            let refit = |i: usize| self.refit_seconds(oofs[i].seconds);
            let mut by_weight = e.weights.clone();
            by_weight.sort_by(|a, b| (b.0 == e.best).cmp(&(a.0 == e.best)).then(b.1.total_cmp(&a.1)).then(a.0.cmp(&b.0)));
            let mut spent = 0.0;
            let kept: Vec<(usize, f64)> = by_weight
                .into_iter()
                .enumerate()
                .take_while(|&(k, (i, _))| {
                    spent += refit(i);
                    k == 0 || spent <= limit
                })
                .map(|(_, m)| m)
                .collect();
            if kept.len() < e.weights.len() {
                let total: f64 = kept.iter().map(|m| m.1).sum();
                let mut weights: Vec<(usize, f64)> = kept.iter().map(|&(i, x)| (i, x / total)).collect();
                weights.sort_by_key(|m| m.0);
                let blended = Ensemble {
                    weights,
                    score: f64::NAN,
                    best: e.best,
                };
                let score = ensemble::score_blend(&blended, &preds, &self.data.target.values, &self.predicted, w, self.metric);
                e = Ensemble { score, ..blended };
            }
        }
        Some((e, oofs))
    }

    /// Fit the ensemble's pipelines on every training row and measure each and the blend on
    /// the test rows.
    fn fit_ensemble(&self, e: &Ensemble, oofs: &[Oof], deadline: Option<std::time::Instant>) -> Result<(Vec<Member>, Option<TestBlend>), String> {
        let rows: Vec<usize> = (0..self.data.len()).collect();
        let test_rows: Vec<usize> = self.test.as_ref().map_or(Vec::new(), |t| (0..t.len()).collect());
        let mut blend = vec![0.0; test_rows.len() * width(&self.data.target.values)];
        let mut members = Vec::new();
        for &(i, weight) in &e.weights {
            let p = pipeline(&oofs[i].config).with_rounds(oofs[i].rounds);
            let fitted = p.fit_by(&self.data, &rows, self.threads, self.seed, deadline).map_err(|e| e.to_string())?;
            let test_score = match &self.test {
                None => None,
                Some(t) => {
                    let p = fitted.predict(&t.features, &test_rows, self.threads).map_err(|e| e.to_string())?;
                    blend.iter_mut().zip(&p).for_each(|(b, q)| *b += weight * q);
                    Some(score(self.metric, &t.target.values, &test_rows, &p))
                }
            };
            members.push(Member {
                trial: oofs[i].trial,
                weight,
                validation_score: oofs[i].score,
                test_score,
                pipeline: fitted,
            });
        }
        let test = self.test.as_ref().map(|t| (score(self.metric, &t.target.values, &test_rows, &blend), blend));
        Ok((members, test))
    }

    /// Build, fit, measure and write the final ensemble (`FINAL_FILE`).
    fn final_ensemble(&self, seconds: Option<f64>) -> Result<FinalEnsemble, String> {
        let (e, oofs) = self.ensemble(seconds).ok_or("no trial's out-of-fold predictions to build an ensemble from")?;
        let deadline = seconds.map(|s| std::time::Instant::now() + std::time::Duration::from_secs_f64(s.max(0.0)));
        let (members, test) = self.fit_ensemble(&e, &oofs, deadline)?;
        let schema = Schema::of(&self.data);
        let test_score = match test {
            Some((score, blend)) => {
                let preds = TestPredictions {
                    classes: schema.target.classes.clone(),
                    width: width(&self.data.target.values),
                    predictions: blend,
                };
                write_json(&self.run_dir.join(TEST_PREDICTIONS_FILE), &preds)?;
                Some(score)
            }
            None => None,
        };
        let f = FinalEnsemble {
            version: FINAL_VERSION,
            schema,
            metric: self.metric,
            validation_score: e.score,
            test_score,
            members,
            best: oofs[e.best].trial,
        };
        write_json(&self.run_dir.join(FINAL_FILE), &f)?;
        Ok(f)
    }
}

impl Evaluator for TabularTask {
    fn info(&self) -> TaskInfo {
        TaskInfo {
            description: format!(
                "{} on a table of {} training rows and {} feature columns (target '{}'), validated by {}",
                self.data.target.problem,
                self.data.len(),
                self.data.features.len(),
                self.data.target.name,
                self.validation.describe()
            ),
            metric: format!(
                "{} ({})",
                self.metric,
                if self.metric.higher_is_better() {
                    "higher is better"
                } else {
                    "negated: higher is better"
                }
            ),
            profile: Some(self.profile.clone()),
        }
    }

    fn score_label(&self) -> crate::score::ScoreLabel {
        crate::score::ScoreLabel {
            name: self.metric.to_string(),
            negated: !self.metric.higher_is_better(),
            decimals: 4,
            epochs: false,
        }
    }

    fn space(&self) -> &Space {
        &self.space
    }

    fn starting_points(&self) -> Vec<Config> {
        // Each model family at its defaults (the families the space allows), as AutoGluon's
        // and FLAML's portfolios start from defaults.
        crate::configspace::FAMILIES
            .iter()
            .map(|fam| {
                self.space
                    .build(|p| if p.name == "model" { Value::Str(fam.to_string()) } else { p.default.clone() })
            })
            .filter(|c| self.space.validate(c).is_ok())
            .collect()
    }

    fn estimate_seconds(&self, config: &Config, fidelity: Fidelity) -> f64 {
        let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let full = match self.seconds.get(&(Self::family(config), self.full_rung)) {
            Some(v) if !v.is_empty() => mean(v),
            // A family not tried yet: the slowest family seen so far, else a second a fold.
            _ => self
                .seconds
                .iter()
                .filter(|(k, _)| k.1 == self.full_rung)
                .map(|(_, v)| mean(v))
                .fold(self.folds.len() as f64, f64::max),
        };
        match self.seconds.get(&self.seconds_key(config, fidelity)) {
            Some(v) if !v.is_empty() && self.share(fidelity) < 1.0 => mean(v),
            _ => full * self.share(fidelity).max(0.05),
        }
    }

    fn estimate_final_seconds(&self, config: &Config, _epochs: usize, _epoch_seconds: Option<f64>) -> Option<f64> {
        // At least the best trial is refit; the others only while they fit (see
        // `final_reserve_seconds` for what the budget plans).
        Some(self.refit_seconds(self.estimate_seconds(config, Fidelity::new(1))))
    }

    fn final_reserve_seconds(&self, config: &Config, _epochs: usize, _epoch_seconds: Option<f64>) -> Option<f64> {
        // The ensemble's members are refitted once each on every row, as many as fit in the
        // time the final model is given: planned for the best trials so far (before any, for a
        // few of this configuration); the selection averages predictions already made.
        if self.validated.is_empty() {
            return Some(PLANNED_MEMBERS as f64 * self.refit_seconds(self.estimate_seconds(config, Fidelity::new(1))));
        }
        let mut best = self.validated.clone();
        best.sort_by(|a, b| b.0.total_cmp(&a.0));
        Some(best.iter().take(PLANNED_MEMBERS).map(|&(_, s)| self.refit_seconds(s)).sum::<f64>())
    }

    fn ranks(&self) -> bool {
        self.ranking.is_some()
    }

    fn rank_estimate_seconds(&self, configs: &[Config]) -> f64 {
        self.ranking.as_ref().map_or(0.0, |r| r.estimate_seconds(configs))
    }

    fn rank(&mut self, configs: &[Config]) -> Option<(Vec<crate::ranker::Scored>, f64)> {
        let data = &self.data;
        self.ranking.as_mut().map(|r| r.rank(configs, data))
    }

    fn train_final(&mut self, _config: &Config, _epochs: usize, limit: Option<TrialLimit>) -> Option<Evaluation> {
        let started = std::time::Instant::now();
        // The refits, their test predictions and the file: planned within most of the share.
        Some(match self.final_ensemble(limit.map(|l| 0.8 * l.seconds)) {
            Ok(f) => Evaluation {
                accuracy: Some(self.oriented(f.validation_score)),
                test_accuracy: f.test_score.map(|t| self.oriented(t)),
                seconds: started.elapsed().as_secs_f64(),
                artefacts: vec![FINAL_FILE.to_string()],
                ..Evaluation::default()
            },
            Err(e) => Evaluation {
                seconds: started.elapsed().as_secs_f64(),
                ..Evaluation::failed(e)
            },
        })
    }

    fn evaluate(&mut self, config: &Config, fidelity: Fidelity) -> Evaluation {
        self.evaluate_trial(config, usize::MAX, fidelity, None)
    }

    fn evaluate_trial(&mut self, config: &Config, trial: usize, fidelity: Fidelity, limit: Option<TrialLimit>) -> Evaluation {
        let started = std::time::Instant::now();
        // A lower rung: a share of each fold's training rows (and of boosting's trees).
        let share = self.share(fidelity);
        let (p, folds) = match share {
            s if s < 1.0 => (at_share(&pipeline(config), s), subsample(&self.folds, s, self.seed)),
            _ => (pipeline(config), self.folds.clone()),
        };
        // In this process a fit cannot be stopped midway: a trial stops between folds instead,
        // before one that would end past its share of the budget (pruned).
        let v = match p.validate_within(&self.data, &folds, self.metric, self.threads, self.seed, limit.map(|l| l.seconds)) {
            Ok(Some(v)) => v,
            Ok(None) => {
                let ran = started.elapsed().as_secs_f64();
                return Evaluation {
                    seconds: ran,
                    pruned: true,
                    error: limit.map(|l| l.reason(ran)),
                    ..Evaluation::default()
                };
            }
            Err(e) => return Evaluation::failed(e.to_string()),
        };
        self.seconds.entry(self.seconds_key(config, fidelity)).or_default().push(v.seconds);
        let mut eval = Evaluation {
            accuracy: Some(self.oriented(v.score)),
            seconds: v.seconds,
            ..Evaluation::default()
        };
        for (k, s) in v.fold_scores.iter().enumerate() {
            eval.metrics.push((k + 1, format!("fold_{}", self.metric), *s));
        }
        // Only a validation in full joins the ensemble's library.
        if share < 1.0 {
            return eval;
        }
        self.validated.push((self.oriented(v.score), v.seconds));
        if trial != usize::MAX {
            let dir = self.trial_dir(trial);
            let oof = Oof {
                config: config.clone(),
                score: v.score,
                rounds: v.refit_rounds(self.folds.len()),
                seconds: v.seconds,
                predictions: v.oof,
                trial,
            };
            match write_json(&dir.join(OOF_FILE), &oof) {
                Ok(()) => eval.artefacts.push(format!("trials/{trial:04}/{OOF_FILE}")),
                Err(e) => eval.error = Some(e),
            }
        }
        eval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_outs_unpredicted_rows_survive_the_out_of_fold_file() {
        // A hold-out predicts only its validation rows; the others are NaN, which JSON writes
        // as null: the file must read back (a large table's ensemble once found no trial).
        let o = Oof {
            config: Config::new(),
            score: 0.8,
            predictions: vec![f64::NAN, f64::NAN, 0.25, 0.75],
            rounds: Some(10),
            seconds: 1.0,
            trial: 0,
        };
        let text = serde_json::to_string(&o).unwrap();
        assert!(text.contains("[null,null,0.25,0.75]"), "{text}");
        let back: Oof = serde_json::from_str(&text).unwrap();
        assert!(back.predictions[0].is_nan() && back.predictions[1].is_nan());
        assert_eq!(&back.predictions[2..], &[0.25, 0.75]);
    }
}
