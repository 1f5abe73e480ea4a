//! Trials in child processes: the agent runs each training as `autoagent trial --spec FILE`, so
//! a trial that panics, runs out of memory or is killed becomes a failed trial with its reason
//! and the end of its stderr, never a crashed agent.
//!
//! # The spec file
//!
//! One JSON object ([`TrialSpec`]), written by the agent into the trial's directory
//! (`RUN_DIR/trials/NNNN/spec.json`):
//!
//! ```json
//! {
//!   "version": 1,
//!   "trial": 3,
//!   "task": "cifar10",
//!   "config": {"cell": "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
//!              "width": 32, "depth": 3, "lr": 0.05, "weight_decay": 0.0005, "batch": 128,
//!              "augment": "crop_flip_cutout", "cutout_length": 8, "label_smoothing": 0.1},
//!   "data_dir": "/data",
//!   "download": false,
//!   "train": { "epochs": 1, "seed": 0, "hflip": true },
//!   "device": "cpu",
//!   "out": "runs/run-1/trials/0003",
//!   "resume": "runs/run-1/trials/0003/checkpoint-e1.safetensors",
//!   "checkpoint": "runs/run-1/trials/0003/checkpoint-e3.safetensors",
//!   "watch_stdin": true
//! }
//! ```
//!
//! `config` is the candidate, a configuration of the vision space
//! ([`crate::configspace::vision_space`]): the network is its cell at its width and depth (C = 16,
//! N = 5 where it has none), and its training parameters (learning rate, weight decay, batch,
//! augmentation, cutout, label smoothing) override those of `train`, which takes the fields of
//! [`TrainConfig`] (NB201's protocol fills those left out); `train.epochs` is the number of
//! epochs in all at the end. The trial trains on the task's training
//! split minus its last 10 % and reports the accuracy on that held-out 10 %
//! ([`crate::task::search_split`]). With `out`, the weights of the last epoch (whose accuracy is
//! the trial's) are saved there (`weights.safetensors`). With `resume`, training continues from
//! that checkpoint (a trial promoted to a longer training); with `checkpoint`, one is saved
//! there at the end (named after its epochs by the agent, checkpoint-eN.safetensors). With
//! `watch_stdin`, the trial exits as soon as its stdin closes: the agent holds the other end, so
//! a trial never outlives a killed agent.
//!
//! A trial's directory holds [`TRIAL_FILES`]: the spec of its last rung, the trial's stderr
//! (every rung's, one after the other) and its weights; and the checkpoint of its last rung.
//!
//! # The channel
//!
//! The trial writes one line per event to stdout, `@autoagent-trial ` followed by a JSON
//! [`TrialEvent`]: `started`, one `epoch` per epoch (loss, accuracies, learning rate, seconds),
//! then `finished` (accuracy, device seconds, artefacts). Anything else on stdout is ignored;
//! progress goes to stderr, which the agent keeps in `stderr.log` beside the spec.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use autoagent_evaluator::data::{self, DatasetKind};
use autoagent_evaluator::train::{parse_device, train_with, Progress, Select, Splits, TrainConfig, TrainFiles};
use serde::{Deserialize, Serialize};

use crate::configspace::{vision_space, Augment, Config, Space, VisionConfig};
use crate::llm_strategy::TaskInfo;
use crate::task::{network, search_split, training_info, Evaluation, Evaluator, Fidelity, TrainingCost, TrialLimit};

/// The spec format this build writes and reads.
pub const SPEC_VERSION: u32 = 2;

/// The files of a complete trial's directory, in the order of its artefacts: the spec, the
/// trial's stderr (`stderr.log`, kept by the agent) and its weights (written by the trial).
pub const TRIAL_FILES: [&str; 3] = ["spec.json", "stderr.log", WEIGHTS_FILE];

/// A trial's weights: those of its last epoch, whose validation accuracy is the trial's. (Runs
/// before this name kept the best epoch's weights as `best.safetensors`.)
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// The prefix of an event line on a trial's stdout.
pub const EVENT_PREFIX: &str = "@autoagent-trial ";

/// How much of a failed trial's stderr is kept in the run database (bytes, the end).
const STDERR_TAIL: u64 = 4000;

/// The most of a trial's stderr kept in its `stderr.log` from the start (then only the last
/// `STDERR_TAIL` bytes).
const STDERR_HEAD: u64 = 1 << 20;

/// How long a trial that reported its result (`finished`) may take to exit before it is killed;
/// its result is kept either way.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// How long the agent waits for a trial's next event: until the trial's deadline, or, once it
/// reported its result at `finished_at`, until [`EXIT_GRACE`] after that (the deadline no
/// longer applies: a finished trial is kept). `None` when that time is up.
fn next_wait(now: Instant, deadline: Option<Instant>, finished_at: Option<Instant>) -> Option<Duration> {
    let until = match finished_at {
        Some(f) => Some(f + EXIT_GRACE),
        None => deadline,
    };
    match until {
        Some(u) => u.checked_duration_since(now).filter(|d| !d.is_zero()),
        None => Some(Duration::from_secs(3600)),
    }
}

/// What a trial is to do (the `--spec` file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialSpec {
    /// Spec format version ([`SPEC_VERSION`]).
    pub version: u32,
    /// The trial's number in its run.
    #[serde(default)]
    pub trial: usize,
    /// Dataset: cifar10, cifar100, mnist, fashion-mnist.
    pub task: String,
    /// The candidate: a configuration of the vision space.
    #[serde(default)]
    pub config: Config,
    /// Data root or dataset folder (default: `$AUTOAGENT_DATA`, else the user cache directory).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Download the dataset when missing.
    #[serde(default)]
    pub download: bool,
    /// Training hyper-parameters.
    #[serde(default)]
    pub train: TrainConfig,
    /// Device: cpu or cuda:N (the agent sets `CUDA_VISIBLE_DEVICES` and passes `cuda:0`).
    #[serde(default = "cpu")]
    pub device: String,
    /// Directory for the weights.
    #[serde(default)]
    pub out: Option<PathBuf>,
    /// Continue from this checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<PathBuf>,
    /// Save a checkpoint here at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    /// The run's final model: train on the whole training split (the validation hold-out
    /// included) and measure the test split once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub final_model: bool,
    /// Exit when stdin closes (the agent died).
    #[serde(default)]
    pub watch_stdin: bool,
}

fn cpu() -> String {
    "cpu".into()
}

/// One event on a trial's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrialEvent {
    /// The trial has read its spec and its data.
    Started {
        /// The process id.
        pid: u32,
    },
    /// An epoch ended.
    Epoch {
        /// From 1.
        epoch: usize,
        /// Mean training loss.
        train_loss: f64,
        /// Training accuracy (%).
        train_acc: f64,
        /// Accuracy on the held-out validation split (%; none for a final model).
        valid_acc: Option<f64>,
        /// Learning rate at the end of the epoch.
        lr: f64,
        /// Seconds the epoch took.
        seconds: f64,
    },
    /// The trial finished.
    Finished {
        /// Validation accuracy after the last epoch (%; `null` for a final model, which has no
        /// validation split).
        accuracy: Option<f64>,
        /// Test accuracy (%), measured once (final models only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        test_accuracy: Option<f64>,
        /// Device seconds metered.
        device_seconds: f64,
        /// Trainable parameters.
        params: usize,
        /// Forward FLOPs per image.
        flops: f64,
        /// Files written (absolute or relative to the working directory).
        artefacts: Vec<PathBuf>,
        /// Epochs trained in all (fewer than asked when a time limit ended the training).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epochs: Option<usize>,
    },
}

impl TrialEvent {
    /// The event as one stdout line.
    pub fn line(&self) -> String {
        format!("{EVENT_PREFIX}{}", serde_json::to_string(self).expect("events serialise"))
    }

    /// Parse an event line (`None` for any other line).
    pub fn parse(line: &str) -> Option<TrialEvent> {
        serde_json::from_str(line.strip_prefix(EVENT_PREFIX)?).ok()
    }
}

/// Why a trial could not run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TrialError(pub String);

impl TrialSpec {
    /// Read and check a spec file.
    pub fn read(path: &Path) -> Result<Self, TrialError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrialError(format!("cannot read the trial spec {}: {e}", path.display())))?;
        let not_a_spec = |e: serde_json::Error| TrialError(format!("{}: not a trial spec: {e}", path.display()));
        // The version first: another version's fields are not this one's.
        let value: serde_json::Value = serde_json::from_str(&text).map_err(not_a_spec)?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(SPEC_VERSION) => {}
            Some(v) => {
                return Err(TrialError(format!(
                    "{}: spec version {v} is not supported (this autoagent reads version {SPEC_VERSION})",
                    path.display()
                )))
            }
            None => return Err(TrialError(format!("{}: not a trial spec: no \"version\" number", path.display()))),
        }
        serde_json::from_value(value).map_err(not_a_spec)
    }
}

/// The training recipe of `config` (a configuration of the vision space, checked against it
/// parameter by parameter): its values override `base`'s, those it lacks are `base`'s.
pub fn training_of(config: &Config, base: &TrainConfig) -> Result<TrainConfig, TrialError> {
    let space = vision_space();
    for (name, value) in config.iter() {
        let param = space.param(name).ok_or_else(|| {
            TrialError(format!(
                "unknown parameter '{name}' in the spec's config (the vision space has {})",
                space.names().join(", ")
            ))
        })?;
        param.check(value).map_err(|e| TrialError(format!("bad config in the spec: {e}")))?;
    }
    let v = VisionConfig::lenient(config);
    let mut train = base.clone();
    if config.get("lr").is_some() {
        train.lr = v.lr;
    }
    if config.get("weight_decay").is_some() {
        train.weight_decay = v.weight_decay;
    }
    if config.get("batch").is_some() {
        train.batch_size = v.batch;
    }
    if config.get("augment").is_some() {
        train.augment = v.augment != Augment::None;
        train.cutout = v.cutout_length.unwrap_or(0);
    }
    if config.get("label_smoothing").is_some() {
        train.label_smoothing = v.label_smoothing;
    }
    Ok(train)
}

/// Run a trial in this process, announcing each event to `emit` (`autoagent trial` prints them).
pub fn run(spec: &TrialSpec, emit: &mut dyn FnMut(&TrialEvent)) -> Result<(), TrialError> {
    let kind = DatasetKind::from_name(&spec.task)
        .ok_or_else(|| TrialError(format!("unknown task '{}' (available: cifar10, cifar100, mnist, fashion-mnist)", spec.task)))?;
    let train = training_of(&spec.config, &spec.train)?;
    train.validate().map_err(|e| TrialError(e.to_string()))?;
    let device = parse_device(&spec.device).map_err(|e| TrialError(e.to_string()))?;
    let root = data::data_root(spec.data_dir.as_deref());
    let data = data::open(kind, &root, spec.download).map_err(|e| TrialError(e.to_string()))?;
    let search = search_split(&data).map_err(TrialError)?;
    if let Some(out) = &spec.out {
        std::fs::create_dir_all(out).map_err(|e| TrialError(format!("cannot create {}: {e}", out.display())))?;
    }
    emit(&TrialEvent::Started { pid: std::process::id() });
    // The last epoch's weights are kept: their validation accuracy is the trial's, the number the
    // run ranks it on (and `export` ships them with it).
    let weights = spec.out.as_ref().map(|out| out.join(WEIGHTS_FILE));
    let files = TrainFiles {
        weights: weights.as_deref(),
        resume: spec.resume.as_deref(),
        checkpoint: spec.checkpoint.as_deref(),
    };
    // A final model trains on the whole training split and is measured on the test split.
    let splits = match spec.final_model {
        true => Splits {
            kind,
            train: &data.train,
            valid: None,
            test: Some(&data.test),
        },
        false => Splits::search(&search),
    };
    let report = train_with(&network(kind, &spec.config), &train, &splits, Select::Last, &device, &files, &mut |p| {
        if let Progress::Epoch(e) = p {
            emit(&TrialEvent::Epoch {
                epoch: e.epoch,
                train_loss: e.train_loss,
                train_acc: e.train_acc,
                valid_acc: e.valid_acc,
                lr: e.lr,
                seconds: e.seconds,
            })
        }
    })
    .map_err(|e| TrialError(e.to_string()))?;
    let artefacts: Vec<PathBuf> = report.weights.iter().chain(&spec.checkpoint).cloned().collect();
    emit(&TrialEvent::Finished {
        accuracy: report.valid_acc,
        test_accuracy: report.test_acc,
        device_seconds: report.device_seconds,
        params: report.params,
        flops: report.flops,
        artefacts,
        epochs: Some(report.epochs),
    });
    Ok(())
}

/// The share of a final model's time limit its training may use (the rest: loading the data,
/// measuring the test split, saving the weights).
const FINAL_TRAINING_SHARE: f64 = 0.9;

/// Runs each trial as a child process (`<exe> trial --spec FILE`), one at a time per device.
pub struct ProcessEvaluator {
    exe: PathBuf,
    run_dir: PathBuf,
    base: TrialSpec,
    kind: DatasetKind,
    cost: TrainingCost,
    visible_device: Option<String>,
    /// The fewest and most epochs a trial trains (for the prompt).
    epochs: (usize, usize),
    /// Images of the whole training split (a final model's).
    final_images: usize,
    /// The space the candidates come from.
    space: Space,
}

impl ProcessEvaluator {
    /// Trials of `base` (its `config`, `trial`, `out`, epochs and checkpoints are set per trial),
    /// candidates of the vision space ([`ProcessEvaluator::set_space`] narrows it),
    /// run by the executable `exe` (the `autoagent` binary), recorded under `run_dir/trials/`.
    /// `images` is the size of the search's training split (for the time estimates).
    pub fn new(exe: PathBuf, run_dir: PathBuf, mut base: TrialSpec, images: usize) -> Result<Self, TrialError> {
        let kind = DatasetKind::from_name(&base.task).ok_or_else(|| TrialError(format!("unknown task '{}'", base.task)))?;
        // A trial on GPU N sees only that GPU, as its device 0.
        let visible_device = match base.device.strip_prefix("cuda:").map(str::to_string) {
            Some(n) => {
                n.parse::<usize>().map_err(|_| TrialError(format!("bad device '{}'", base.device)))?;
                base.device = "cuda:0".into();
                Some(n)
            }
            None => None,
        };
        base.watch_stdin = true;
        Ok(ProcessEvaluator {
            exe,
            run_dir,
            kind,
            cost: TrainingCost::new(kind, images),
            epochs: (base.train.epochs, base.train.epochs),
            final_images: images,
            base,
            visible_device,
            space: vision_space(),
        })
    }

    /// Search `space` (a narrowing of the vision space) instead.
    pub fn set_space(&mut self, space: Space) {
        self.space = space;
    }

    /// The size of the whole training split (validation hold-out included), which a final model
    /// trains on.
    pub fn set_final_images(&mut self, images: usize) {
        self.final_images = images;
    }

    /// Say that trials train from `min` to `max` epochs (the prompt tells the LLM).
    pub fn set_epochs(&mut self, min: usize, max: usize) {
        self.epochs = (min, max);
    }

    fn dir(&self, trial: usize) -> PathBuf {
        self.run_dir.join("trials").join(format!("{trial:04}"))
    }

    fn checkpoint(&self, trial: usize, epochs: usize) -> PathBuf {
        self.dir(trial).join(format!("checkpoint-e{epochs}.safetensors"))
    }

    /// A trial's directory, ready for the evaluation of `fidelity`: a new trial's is cleared (a
    /// trial interrupted by a killed agent left its files), a promoted trial's must hold its
    /// checkpoint.
    fn prepare_dir(&self, trial: usize, fidelity: Fidelity) -> Result<PathBuf, String> {
        let dir = self.dir(trial);
        if fidelity.from == 0 && dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
        }
        if fidelity.from > 0 && !self.checkpoint(trial, fidelity.from).is_file() {
            return Err(format!(
                "cannot continue trial {trial}: no checkpoint {}",
                self.checkpoint(trial, fidelity.from).display()
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// Set the first estimates from a measurement ([`TrainingCost::calibrate`]).
    pub fn calibrate(&mut self, seconds_per_image: f64) {
        self.cost.calibrate(seconds_per_image);
    }

    fn relative(&self, p: &Path) -> String {
        p.strip_prefix(&self.run_dir).unwrap_or(p).display().to_string()
    }
}

/// The last `STDERR_TAIL` bytes of a file, from a line start.
fn tail(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let from = len.saturating_sub(STDERR_TAIL);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let text = if from > 0 {
        text.split_once('\n').map(|(_, rest)| rest.to_string()).unwrap_or(text)
    } else {
        text
    };
    let text = text.trim_end().to_string();
    (!text.is_empty()).then_some(text)
}

/// The trial's own last words in its stderr: a panic's message, else its `error:` line, else
/// its last line.
fn last_words(tail: &str) -> Option<String> {
    let lines: Vec<&str> = tail.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if let Some(i) = lines.iter().rposition(|l| l.contains("panicked at")) {
        return Some(match lines.get(i + 1).filter(|l| !l.starts_with("note:")) {
            Some(msg) => format!("{} {msg}", lines[i]),
            None => lines[i].to_string(),
        });
    }
    if let Some(l) = lines.iter().rev().find(|l| l.starts_with("error")) {
        return Some(l.to_string());
    }
    lines.last().map(|l| l.to_string())
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("the trial process exited with code {code}"),
        (None, Some(9)) => "the trial process was killed (SIGKILL: out of memory, or killed by hand)".into(),
        (None, Some(6)) => "the trial process aborted (SIGABRT)".into(),
        (None, Some(11)) => "the trial process crashed (SIGSEGV)".into(),
        (None, Some(sig)) => format!("the trial process was killed by signal {sig}"),
        (None, None) => "the trial process ended without a status".into(),
    }
}

impl Evaluator for ProcessEvaluator {
    fn info(&self) -> TaskInfo {
        training_info(self.kind, self.epochs.0, self.epochs.1)
    }

    fn space(&self) -> &Space {
        &self.space
    }

    fn estimate_seconds(&self, config: &Config, fidelity: Fidelity) -> f64 {
        self.cost.estimate(config, fidelity.added())
    }

    fn evaluate(&mut self, config: &Config, fidelity: Fidelity) -> Evaluation {
        self.evaluate_trial(config, 0, fidelity, None)
    }

    fn release(&mut self, trial: usize, epochs: usize) {
        let _ = std::fs::remove_file(self.checkpoint(trial, epochs));
    }

    fn evaluate_trial(&mut self, config: &Config, trial: usize, fidelity: Fidelity, limit: Option<TrialLimit>) -> Evaluation {
        let dir = match self.prepare_dir(trial, fidelity) {
            Ok(d) => d,
            Err(e) => return Evaluation::failed(e),
        };
        let mut spec = TrialSpec {
            trial,
            config: config.clone(),
            out: Some(dir.clone()),
            resume: (fidelity.from > 0).then(|| self.checkpoint(trial, fidelity.from)),
            checkpoint: Some(self.checkpoint(trial, fidelity.to)),
            ..self.base.clone()
        };
        spec.train.epochs = fidelity.to;
        let eval = self.run_process(&spec, &dir, limit);
        if eval.error.is_none() && !eval.pruned {
            self.cost.observe(config, fidelity.added(), eval.seconds);
        }
        eval
    }

    fn estimate_final_seconds(&self, config: &Config, epochs: usize, epoch_seconds: Option<f64>) -> Option<f64> {
        // The search's own measurement of this network beats the cost model's, which errs on
        // the safe side for every network alike.
        let search = match epoch_seconds {
            Some(s) if s > 0.0 => s * epochs as f64,
            _ => self.cost.estimate(config, epochs),
        };
        Some(search * self.final_images as f64 / self.cost.images().max(1) as f64)
    }

    fn train_final(&mut self, config: &Config, epochs: usize, limit: Option<TrialLimit>) -> Option<Evaluation> {
        let dir = self.run_dir.join(crate::final_model::FINAL_DIR);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            .or_else(|e| if dir.exists() { Err(e) } else { Ok(()) })
            .and_then(|_| std::fs::create_dir_all(&dir))
        {
            return Some(Evaluation::failed(format!("cannot prepare {}: {e}", dir.display())));
        }
        let mut spec = TrialSpec {
            config: config.clone(),
            out: Some(dir.clone()),
            final_model: true,
            ..self.base.clone()
        };
        spec.train.epochs = epochs;
        // The training ends early rather than be stopped, leaving time to measure the test split.
        spec.train.time_limit = limit.map(|l| FINAL_TRAINING_SHARE * l.seconds);
        Some(self.run_process(&spec, &dir, limit))
    }
}

impl ProcessEvaluator {
    /// Run `spec` as a child process in `dir` (its spec and stderr files go there), stopped at
    /// `limit`.
    fn run_process(&mut self, spec: &TrialSpec, dir: &Path, limit: Option<TrialLimit>) -> Evaluation {
        let failed = Evaluation::failed;
        let spec_path = dir.join("spec.json");
        let stderr_path = dir.join("stderr.log");
        // A promotion's stderr follows the earlier rungs' in the same file.
        let open_stderr = || std::fs::OpenOptions::new().create(true).append(true).truncate(false).open(&stderr_path);
        let mut stderr_file = match std::fs::write(&spec_path, serde_json::to_string_pretty(spec).expect("specs serialise")).and_then(|_| open_stderr()) {
            Ok(f) => f,
            Err(e) => return failed(format!("cannot write the trial's files in {}: {e}", dir.display())),
        };
        let mut command = Command::new(&self.exe);
        command
            .arg("trial")
            .arg("--spec")
            .arg(&spec_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = &self.visible_device {
            command.env("CUDA_VISIBLE_DEVICES", n);
        }
        let started = Instant::now();
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => return failed(format!("cannot start the trial process {}: {e}", self.exe.display())),
        };
        // Its stderr goes to stderr.log, capped (a trial printing without end keeps its first
        // STDERR_HEAD bytes and its last words).
        let stderr = child.stderr.take().expect("stderr is piped");
        let copier = std::thread::spawn(move || crate::logs::capped_copy(stderr, &mut stderr_file, STDERR_HEAD, STDERR_TAIL as usize));
        // Events come through a thread reading stdout; the main thread keeps the clock.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(ev) = TrialEvent::parse(&line) {
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            }
        });
        let deadline = limit.map(|l| started + Duration::from_secs_f64(l.seconds.max(0.0)));
        let mut events = Vec::new();
        let mut result = false;
        let mut finished_at = None;
        let mut pruned = false;
        loop {
            let Some(wait) = next_wait(Instant::now(), deadline, finished_at) else {
                // Past the deadline without a result: pruned. Lingering after its result: only
                // stopped (the result stands, see below).
                pruned = finished_at.is_none();
                let _ = child.kill();
                break;
            };
            match rx.recv_timeout(wait) {
                Ok(ev) => {
                    if matches!(ev, TrialEvent::Finished { .. }) {
                        finished_at = Some(Instant::now());
                    }
                    events.push(ev);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        // Closing stdin also tells a trial that watches it to stop.
        drop(child.stdin.take());
        let status = child.wait();
        let _ = reader.join();
        let _ = copier.join();
        events.extend(rx.try_iter());
        let wall = started.elapsed().as_secs_f64();

        let mut eval = Evaluation {
            seconds: wall,
            stderr_tail: tail(&stderr_path),
            artefacts: vec![self.relative(&spec_path), self.relative(&stderr_path)],
            ..Evaluation::default()
        };
        for ev in &events {
            match ev {
                TrialEvent::Epoch {
                    epoch,
                    train_loss,
                    train_acc,
                    valid_acc,
                    lr,
                    ..
                } => {
                    let valid = valid_acc.map(|v| ("valid_acc", v));
                    for (name, v) in [("train_loss", *train_loss), ("train_acc", *train_acc), ("lr", *lr)].into_iter().chain(valid) {
                        eval.metrics.push((*epoch, name.to_string(), v));
                    }
                }
                TrialEvent::Finished {
                    accuracy,
                    test_accuracy,
                    device_seconds,
                    artefacts,
                    epochs,
                    ..
                } => {
                    result = true;
                    eval.epochs = *epochs;
                    eval.accuracy = *accuracy;
                    eval.test_accuracy = *test_accuracy;
                    eval.seconds = *device_seconds;
                    eval.artefacts.extend(artefacts.iter().map(|p| self.relative(p)));
                }
                TrialEvent::Started { .. } => {}
            }
        }
        // A trial that reported its result is kept, even when the deadline passed while it
        // exited (the result may have come in just before the kill).
        match status {
            _ if result => {}
            _ if pruned => {
                eval.pruned = true;
                eval.error = limit.map(|l| l.reason(wall));
            }
            Ok(s) => {
                eval.accuracy = None;
                let why = if s.success() {
                    "the trial process ended without a result".to_string()
                } else {
                    describe_exit(s)
                };
                eval.error = Some(match eval.stderr_tail.as_deref().and_then(last_words) {
                    Some(l) => format!("{why}: {l}"),
                    None => why,
                });
            }
            Err(e) => {
                eval.accuracy = None;
                eval.error = Some(format!("cannot wait for the trial process: {e}"));
            }
        }
        eval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_trial_is_waited_for_past_its_deadline() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // Before its deadline: wait until it.
        assert_eq!(next_wait(t0, Some(t0 + s(5)), None), Some(s(5)));
        // At or past it without a result: time is up (pruned).
        assert_eq!(next_wait(t0 + s(5), Some(t0 + s(5)), None), None);
        assert_eq!(next_wait(t0 + s(6), Some(t0 + s(5)), None), None);
        // Its result came in just before the deadline: the deadline no longer applies, the
        // agent waits for the process to exit, up to the grace period after the result.
        let finished = Some(t0 + s(5) - Duration::from_millis(1));
        assert_eq!(next_wait(t0 + s(5), Some(t0 + s(5)), finished), Some(EXIT_GRACE - Duration::from_millis(1)));
        assert_eq!(next_wait(t0 + s(30), Some(t0 + s(5)), finished), None);
        // No deadline: wait (in long steps).
        assert!(next_wait(t0, None, None).is_some());
    }

    /// A stand-in for `autoagent trial`: reports its result at once, then takes `exit_after`
    /// seconds to exit.
    fn fake_trial(dir: &Path, exit_after: f64) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let finished = TrialEvent::Finished {
            accuracy: Some(87.5),
            test_accuracy: None,
            device_seconds: 0.25,
            params: 1,
            flops: 1.0,
            artefacts: Vec::new(),
            epochs: None,
        };
        let script = dir.join("fake-trial");
        std::fs::write(&script, format!("#!/bin/sh\necho '{}'\nsleep {exit_after}\nexit 0\n", finished.line())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    fn evaluator(exe: PathBuf, run_dir: &Path) -> ProcessEvaluator {
        let base = TrialSpec {
            version: SPEC_VERSION,
            trial: 0,
            task: "mnist".into(),
            config: Config::new(),
            data_dir: None,
            download: false,
            train: TrainConfig::default(),
            device: "cpu".into(),
            out: None,
            resume: None,
            checkpoint: None,
            final_model: false,
            watch_stdin: true,
        };
        ProcessEvaluator::new(exe, run_dir.to_path_buf(), base, 1000).unwrap()
    }

    #[test]
    fn a_trial_that_reported_its_result_and_exits_after_its_deadline_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        // The result comes at once; the process exits 1.5 s later, 1 s past its 0.5-s limit.
        let mut e = evaluator(fake_trial(tmp.path(), 1.5), tmp.path());
        let arch = crate::task::cell_config(autoagent_evaluator::nb201::Arch::sample(
            &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(9),
        ));
        let limit = TrialLimit { seconds: 0.5, timeout: true };
        let eval = e.evaluate_trial(&arch, 0, Fidelity::new(1), Some(limit));
        assert!(!eval.pruned, "{:?}", eval.error);
        assert_eq!((eval.accuracy, eval.seconds, eval.error), (Some(87.5), 0.25, None));
    }

    #[test]
    fn a_pruned_trial_names_what_stopped_it() {
        // The timeout is tighter (or equal): the timeout stopped it.
        let t = TrialLimit::of(Some(100.0), Some(2.0)).unwrap();
        assert_eq!(t, TrialLimit { seconds: 2.0, timeout: true });
        assert!(t.reason(2.04).contains("reached --trial-timeout (2.0 s)"), "{}", t.reason(2.04));
        assert!(TrialLimit::of(Some(2.0), Some(2.0)).unwrap().timeout);
        assert!(TrialLimit::of(None, Some(2.0)).unwrap().timeout);
        // What is left of the time budget is tighter: the budget stopped it.
        let b = TrialLimit::of(Some(1.5), Some(2.0)).unwrap();
        assert_eq!(b, TrialLimit { seconds: 1.5, timeout: false });
        assert!(b.reason(1.5).contains("exceeded its share of the budget"), "{}", b.reason(1.5));
        assert_eq!(TrialLimit::of(None, None), None);
    }

    #[test]
    fn the_module_doc_names_only_files_a_trial_writes() {
        let doc: Vec<&str> = include_str!("trial.rs").lines().filter(|l| l.starts_with("//!")).collect();
        let doc = doc.join("\n");
        let files = doc
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|n| [".json", ".safetensors", ".log"].iter().any(|e| n.ends_with(e)) && !n.contains(['/', ' ', '\n']));
        for name in files {
            assert!(
                TRIAL_FILES.contains(&name),
                "the module doc names {name}, which a trial's directory does not hold"
            );
        }
    }
}
