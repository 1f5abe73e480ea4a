//! `autoagent resume` after real `kill -9`s: a run killed at random moments (during proxy
//! scoring, between trials, while writing its records), during a training trial and during an
//! LLM call finishes with exactly what a clean run with the same seed has, and loses or repeats
//! nothing it had recorded.

#[path = "../agent/tests/support/llama_server.rs"]
#[allow(dead_code)]
mod llama_server;

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use autoagent_agent::store::sqlite::SqliteStore;
use autoagent_agent::store::{Store, TrialState};
use common::{assert_one_line_error, shared, wait_for};
use rand::{Rng, SeedableRng};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoagent"));
    c.env_remove("AUTOAGENT_DATA")
        .env_remove("OPENAI_API_KEY")
        .env_remove("AUTOAGENT_API_KEY")
        .env("RAYON_NUM_THREADS", "2");
    c
}

/// `autoagent run` of an nb201 task with proxy ranking into `out`, its proxy cache `cache`.
fn nb201_run(out: &Path, cache: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    c.args(["run", "--task", "nb201:cifar10", "--truth"])
        .arg(shared().join("nb201/nb201.csv"))
        .arg("--data-dir")
        .arg(shared().join("cifar10-mini"))
        .arg("--proxy-cache")
        .arg(cache)
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg("--json");
    c
}

fn resume(dir: &Path) -> Command {
    let mut c = bin();
    c.arg("resume").arg(dir).arg("--json");
    c
}

fn spawn_quiet(mut c: Command) -> Child {
    c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// `kill -9` (SIGKILL; `Child::kill` sends it on Unix) and reap.
fn kill9(child: &mut Child) -> bool {
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    alive
}

fn finish(c: Command) {
    let o = { c }.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn store(dir: &Path) -> SqliteStore {
    SqliteStore::open_read(&dir.join("run.db")).unwrap()
}

/// What a run decided and measured, for comparison: every trial (id, round, arch, origin,
/// accuracy, state), every proposal, the rejected proposals, the summary without timings.
fn outcome(dir: &Path) -> (Vec<String>, Vec<String>, serde_json::Value) {
    let s = store(dir);
    let trials = s
        .trials()
        .unwrap()
        .iter()
        .map(|r| {
            let t = &r.trial;
            let rungs: Vec<String> = t
                .rungs
                .iter()
                .map(|r| format!("{}:{}:{:?}:{}", r.job, r.epochs, r.accuracy, r.state.name()))
                .collect();
            format!(
                "{} {} {} {:?} {:?} {:?} {} {} [{}]",
                t.id,
                t.round,
                t.config,
                t.origin,
                t.accuracy,
                t.test_accuracy,
                t.state.name(),
                t.epochs,
                rungs.join(" ")
            )
        })
        .collect();
    let proposals = s
        .proposals()
        .unwrap()
        .iter()
        .map(|p| format!("{} {} {} {:?}", p.id, p.round, p.proposal.config, p.proposal.origin))
        .collect();
    let mut summary: serde_json::Value = serde_json::from_str(&s.meta("summary").unwrap().expect("a finished run has a summary")).unwrap();
    for k in ["device_seconds", "proxy_seconds", "lost_seconds", "budget_used", "overrun_seconds"] {
        summary.as_object_mut().unwrap().remove(k);
    }
    summary["best"].as_object_mut().unwrap().remove("seconds");
    for r in summary["best"]["rungs"].as_array_mut().into_iter().flatten() {
        r.as_object_mut().unwrap().remove("seconds");
    }
    if let Some(f) = summary["final_model"].as_object_mut() {
        f.remove("seconds");
    }
    (trials, proposals, summary)
}

fn jsonl(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn twenty_kills_at_random_moments_and_the_resumed_run_equals_a_clean_one() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = ["--budget", "24trials", "--k", "4", "--seed", "7"];
    // The clean run, with its own proxy cache.
    let clean = tmp.path().join("clean");
    finish(nb201_run(&clean, &tmp.path().join("cache-clean.jsonl"), &opts));
    let (trials, proposals, summary) = outcome(&clean);
    assert_eq!(trials.len(), 24);

    // The same run with an empty cache of its own (so every round scores proxies for real),
    // killed 20 times at random moments and resumed after each.
    let run = tmp.path().join("killed");
    let cache = tmp.path().join("cache-killed.jsonl");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut kills = 0;
    let mut starts = 0;
    let mut states_seen = std::collections::BTreeSet::new();
    while kills < 20 {
        starts += 1;
        assert!(starts < 60, "the run finished before it could be killed 20 times ({kills} kills)");
        let mut child = spawn_quiet(if starts == 1 { nb201_run(&run, &cache, &opts) } else { resume(&run) });
        std::thread::sleep(Duration::from_millis(rng.random_range(150..1500)));
        if kill9(&mut child) {
            kills += 1;
            // What the run's database holds right after the kill (a live writer was killed
            // mid-transaction at times: the database must open and read).
            if let Ok(s) = SqliteStore::open_read(&run.join("run.db")) {
                for r in s.trials().unwrap() {
                    states_seen.insert(r.trial.state.name());
                }
            }
        } else {
            // It finished in the time given: a run this short cannot take 20 kills.
            panic!("the run finished after {kills} kills; lengthen the run");
        }
    }
    // Finish it.
    finish(resume(&run));
    let (t2, p2, s2) = outcome(&run);
    assert_eq!(t2, trials, "the resumed run's trials differ from the clean run's");
    assert_eq!(p2, proposals, "the resumed run's proposals differ from the clean run's");
    assert_eq!(s2, summary);
    // Every candidate's proxy scores are stored once, equal to the clean run's (to the last
    // bits of synflow's float64 sums, whose order threads may change).
    let a = store(&clean).proxy_scores().unwrap();
    let b = store(&run).proxy_scores().unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.candidate, &x.proxy), (&y.candidate, &y.proxy));
        match (x.value, y.value) {
            (Some(u), Some(v)) => assert!((u - v).abs() <= 1e-9 * u.abs().max(v.abs()), "{x:?} {y:?}"),
            (u, v) => assert_eq!(u, v),
        }
    }
    // Within the killed run, every score restored in a resume is the one computed, to the bit:
    // the cache file, the stored scores and each trial's scores agree exactly (the floats
    // round-trip through JSON and SQLite).
    let bits = |v: Option<f64>| v.map(f64::to_bits);
    let cached: std::collections::BTreeMap<String, Option<u64>> = jsonl(&cache)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (format!("{} {}", v["key"], v["proxy"]), bits(v["value"].as_f64()))
        })
        .collect();
    let cached_values: std::collections::BTreeSet<Option<u64>> = cached.values().copied().collect();
    for y in &b {
        assert!(cached_values.contains(&bits(y.value)), "{y:?} is not, to the bit, a score of the cache");
    }
    for r in store(&run).trials().unwrap() {
        for (proxy, value) in &r.trial.proxies {
            let stored = b.iter().find(|y| y.candidate == r.trial.config.to_string() && &y.proxy == proxy).unwrap();
            assert_eq!(bits(*value), bits(stored.value), "trial {} {proxy}", r.trial.id);
        }
    }
    // The device time of the work the kills interrupted (half-scored rounds, mostly) is counted:
    // the summary's device seconds are the trials', the recorded rounds' and the lost work's.
    let s: serde_json::Value = serde_json::from_str(&store(&run).meta("summary").unwrap().unwrap()).unwrap();
    let lost = s["lost_seconds"].as_f64().unwrap();
    assert!(lost > 0.0, "20 kills lost no device time? {s}");
    let trial_seconds: f64 = store(&run).trials().unwrap().iter().map(|r| r.trial.seconds).sum();
    let total = trial_seconds + s["proxy_seconds"].as_f64().unwrap() + lost;
    assert!((s["device_seconds"].as_f64().unwrap() - total).abs() < 1e-6, "{s}");
    // The JSON lines files agree with the database: one line per finished trial, no repeats.
    let lines = jsonl(&run.join("trials.jsonl"));
    assert_eq!(lines.len(), 24);
    assert_eq!(jsonl(&clean.join("trials.jsonl")).len(), 24);
    // The proxy cache holds each score once: nothing was computed twice.
    let cache_lines = jsonl(&cache);
    let keys: std::collections::BTreeSet<String> = cache_lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {} {} {}", v["key"], v["proxy"], v["seed"], v["batch"])
        })
        .collect();
    assert_eq!(keys.len(), cache_lines.len(), "a proxy score was computed twice");
    // Resuming a finished run does nothing and says so.
    let o = resume(&run).output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to resume"));
    assert_eq!(outcome(&run).0, trials);
    eprintln!("20 kills over {starts} starts; trial states seen after kills: {states_seen:?}");
}

fn running_trial(dir: &Path) -> Option<usize> {
    let s = SqliteStore::open_read(&dir.join("run.db")).ok()?;
    s.trials().ok()?.into_iter().find(|r| r.trial.state == TrialState::Running).map(|r| r.trial.id)
}

/// A training run on the MNIST fixture without proxies, seed 3, into `out`, with `extra`.
fn mnist_training(out: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    // Small networks of the vision space (any cell and recipe) keep the trials short.
    c.args([
        "run",
        "--task",
        "mnist",
        "--no-proxies",
        "--seed",
        "3",
        "--json",
        "--space",
        "width=8,16; depth=1:3",
        "--data-dir",
    ])
    .arg(shared().join("mnist-mini"))
    .arg("--out")
    .arg(out)
    .args(extra);
    c
}

fn train_run(out: &Path) -> Command {
    mnist_training(out, &["--epochs", "1", "--budget", "3trials"])
}

#[test]
fn a_kill_during_training_re_runs_the_interrupted_trial_and_ends_like_a_clean_run() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    finish(train_run(&clean));
    let (trials, proposals, summary) = outcome(&clean);
    assert_eq!(trials.len(), 3);

    let run = tmp.path().join("killed");
    let mut child = spawn_quiet(train_run(&run));
    // Kill while the second trial trains, 1.5 s into it.
    assert!(wait_for(120, || running_trial(&run) == Some(1)), "trial 1 never started");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(kill9(&mut child));
    let s = store(&run);
    let states: Vec<_> = s.trials().unwrap().iter().map(|r| r.trial.state).collect();
    assert_eq!(states, [TrialState::Complete, TrialState::Running]);
    drop(s);
    let o = resume(&run).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (t2, p2, s2) = outcome(&run);
    assert_eq!(t2, trials);
    assert_eq!(p2, proposals);
    assert_eq!(s2, summary);
    // The killed attempt's device time (1.5 s and more) is counted beside the trials'.
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let lost = s["lost_seconds"].as_f64().unwrap();
    assert!((1.2..30.0).contains(&lost), "{s}");
    let trial_seconds: f64 = store(&run).trials().unwrap().iter().map(|r| r.trial.seconds).sum();
    let final_seconds = s["final_model"]["seconds"].as_f64().unwrap();
    assert!(
        (s["device_seconds"].as_f64().unwrap() - (trial_seconds + final_seconds + lost)).abs() < 1e-6,
        "{s}"
    );
}

/// A training run with ASHA over rungs of 1 and 3 epochs: of 4 new trials, the best of the
/// first 3 is promoted (continued from its 1-epoch checkpoint to 3 epochs).
fn asha_run(out: &Path) -> Command {
    mnist_training(out, &["--scheduler", "asha", "--min-epochs", "1", "--max-epochs", "3", "--budget", "4trials"])
}

/// The trial being promoted (running past its first rung), if any.
fn promoting_trial(dir: &Path) -> Option<usize> {
    let s = SqliteStore::open_read(&dir.join("run.db")).ok()?;
    s.trials()
        .ok()?
        .into_iter()
        .find(|r| r.trial.state == TrialState::Running && !r.trial.rungs.is_empty())
        .map(|r| r.trial.id)
}

#[test]
fn a_kill_during_a_promotion_resumes_from_the_checkpoint_and_ends_with_the_same_rungs() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    finish(asha_run(&clean));
    let (trials, proposals, summary) = outcome(&clean);
    assert_eq!(trials.len(), 4);
    let mut promoted: Vec<_> = store(&clean).trials().unwrap().into_iter().filter(|r| r.trial.rungs.len() == 2).collect();
    promoted.sort_by_key(|r| r.trial.rungs[1].job);
    assert!(!promoted.is_empty(), "{trials:?}");
    let p = &promoted[0].trial;
    assert_eq!((p.rungs[0].epochs, p.rungs[1].epochs, p.epochs), (1, 3, 3));
    // ASHA promotes the best of three as soon as three trials finished their first epoch.
    assert_eq!(p.rungs[1].job, 3, "promoted right after the third trial: {trials:?}");
    // The promoted trial continued: its weights and its last checkpoint are there, the 1-epoch
    // checkpoint went once the 3-epoch rung was recorded.
    let dir = clean.join("trials").join(format!("{:04}", p.id));
    assert!(dir.join("checkpoint-e3.safetensors").is_file() && !dir.join("checkpoint-e1.safetensors").exists());
    let metrics = store(&clean).metrics(p.id).unwrap();
    let epochs: std::collections::BTreeSet<usize> = metrics.iter().map(|m| m.epoch).collect();
    assert_eq!(epochs.into_iter().collect::<Vec<_>>(), vec![1, 2, 3], "epochs 2 and 3 continue epoch 1");

    let run = tmp.path().join("killed");
    let mut child = spawn_quiet(asha_run(&run));
    assert!(wait_for(180, || promoting_trial(&run).is_some()), "no promotion started");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(kill9(&mut child), "the run finished before the kill");
    let o = resume(&run).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (t2, p2, s2) = outcome(&run);
    assert_eq!(t2, trials);
    assert_eq!(p2, proposals);
    assert_eq!(s2, summary);
}

/// Files of a run directory that a refused command must leave as they were.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["run.db", "summary.json", "trials.jsonl", "config.json"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
        .collect()
}

#[test]
fn a_new_budget_below_what_was_spent_or_in_another_unit_is_refused_and_the_summary_keeps_every_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cache = tmp.path().join("cache.jsonl");
    finish(nb201_run(&run, &cache, &["--budget", "3trials", "--k", "4", "--no-proxies"]));
    let before = snapshot(&run);
    let with_budget = |b: &str| bin().arg("resume").arg(&run).args(["--budget", b]).output().unwrap();
    // Below what was spent, or a time for a trial budget: one line, exit 2, nothing written.
    assert_one_line_error(&with_budget("1trials"), "below what the run has spent (3 trials)");
    assert_one_line_error(&with_budget("2h"), "trial budget");
    assert_eq!(snapshot(&run), before, "a refused resume changed the run directory");
    // Extended: 5 trials in the summary, the 3 recorded ones first.
    let o = with_budget("5trials");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["trials"], 5);
    assert_eq!(store(&run).trials().unwrap().len(), 5);
    // The same budget again: nothing new, and the summary still says 5.
    let o = with_budget("5trials");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(again["trials"], 5);
    assert_eq!(again["best"], summary["best"]);
}

#[test]
fn a_kill_during_an_llm_call_keeps_every_reply_and_asks_again() {
    let server = llama_server::LlamaServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cache = tmp.path().join("cache.jsonl");
    let url = server.base_url();
    let opts = [
        "--llm",
        "openai",
        "--model",
        "smollm2",
        "--base-url",
        &url,
        "--budget",
        "12trials",
        "--k",
        "4",
        "--no-proxies",
    ];
    let mut child = spawn_quiet(nb201_run(&run, &cache, &opts));
    // The first reply is recorded; the run goes on to its next exchange at once (table lookups
    // take microseconds), so the kill lands while the server is answering.
    let llm = run.join("llm.jsonl");
    assert!(wait_for(120, || llm.exists() && !jsonl(&llm).is_empty()), "no LLM exchange was recorded");
    std::thread::sleep(Duration::from_millis(100));
    assert!(kill9(&mut child), "the run finished before the kill");
    let before = store(&run).exchanges().unwrap();
    let before_trials: Vec<_> = store(&run).trials().unwrap().into_iter().filter(|r| r.trial.state.is_finished()).collect();
    assert!(!before.is_empty());
    let o = resume(&run).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after = store(&run).exchanges().unwrap();
    // Every reply recorded before the kill is still there, verbatim, and served back (not asked
    // again); the run then asked the server for more.
    assert!(after.len() > before.len(), "{} exchanges before, {} after", before.len(), after.len());
    assert_eq!(&after[..before.len()], &before[..]);
    let indices: Vec<usize> = after.iter().map(|e| e.index).collect();
    assert_eq!(indices, (0..after.len()).collect::<Vec<_>>());
    // The trials finished before the kill are the first ones of the resumed run, unchanged.
    let trials = store(&run).trials().unwrap();
    assert_eq!(trials.len(), 12);
    assert_eq!(&trials[..before_trials.len()], &before_trials[..]);
    assert!(trials.iter().all(|r| r.trial.state == TrialState::Complete));
    // llm.jsonl matches the database.
    assert_eq!(jsonl(&llm).len(), after.len());
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["llm"]["exchanges"].as_u64().unwrap() as usize, after.len());
}

#[test]
fn resume_refuses_what_it_cannot_continue() {
    let tmp = tempfile::tempdir().unwrap();
    // No such directory; a directory without a run.
    assert_one_line_error(&resume(&tmp.path().join("missing")).output().unwrap(), "no run directory");
    assert_one_line_error(&resume(tmp.path()).output().unwrap(), "nothing to resume");
    // A corrupt database: refused, left as it was.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(
        bad.join("run.db"),
        b"this is not a database, just text that is long enough to fill a header......",
    )
    .unwrap();
    let before = std::fs::read(bad.join("run.db")).unwrap();
    assert_one_line_error(&resume(&bad).output().unwrap(), "corrupt");
    assert_eq!(std::fs::read(bad.join("run.db")).unwrap(), before);
    // A database from a newer autoagent: refused, left as it was.
    let newer = tmp.path().join("newer");
    std::fs::create_dir(&newer).unwrap();
    {
        let c = rusqlite::Connection::open(newer.join("run.db")).unwrap();
        c.execute_batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); PRAGMA user_version = 99;")
            .unwrap();
    }
    let before = std::fs::read(newer.join("run.db")).unwrap();
    assert_one_line_error(&resume(&newer).output().unwrap(), "schema version 99, newer than this autoagent's");
    assert_eq!(std::fs::read(newer.join("run.db")).unwrap(), before);
    // A run whose dataset went missing: refused before anything is written.
    let moved = tmp.path().join("moved");
    let data = tmp.path().join("mnist-copy");
    std::fs::create_dir(&data).unwrap();
    for f in std::fs::read_dir(shared().join("mnist-mini")).unwrap().flatten() {
        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
    }
    let mut c = bin();
    c.args([
        "run",
        "--task",
        "mnist",
        "--epochs",
        "1",
        "--no-proxies",
        "--budget",
        "1trials",
        "--no-download",
        "--data-dir",
    ])
    .arg(&data)
    .arg("--out")
    .arg(&moved)
    .arg("--json");
    finish(c);
    std::fs::remove_dir_all(&data).unwrap();
    let db_before = std::fs::read(moved.join("run.db")).unwrap();
    let o = bin().arg("resume").arg(&moved).args(["--budget", "2trials"]).output().unwrap();
    assert_one_line_error(&o, "mnist");
    assert_eq!(outcome(&moved).0.len(), 1, "the finished trial is kept");
    assert_eq!(store(&moved).meta("status").unwrap().as_deref(), Some("finished"));
    assert!(std::fs::read(moved.join("run.db")).unwrap().len() >= db_before.len());
    // A run still alive (its writer holds the lock): refused, and the live run is untouched.
    let run = tmp.path().join("live");
    let mut child = spawn_quiet(nb201_run(&run, &tmp.path().join("cache.jsonl"), &["--budget", "40trials", "--k", "8"]));
    assert!(wait_for(60, || run.join("run.db").exists() && store_opens(&run)));
    let o = resume(&run).output().unwrap();
    let still_running = child.try_wait().unwrap().is_none();
    kill9(&mut child);
    if still_running {
        assert_one_line_error(&o, "locked by another process");
    }
    // A bad budget.
    assert_one_line_error(&bin().args(["resume"]).arg(&run).args(["--budget", "lots"]).output().unwrap(), "budget");
}

fn store_opens(dir: &Path) -> bool {
    SqliteStore::open_read(&dir.join("run.db")).is_ok_and(|s| s.meta("status").ok().flatten().is_some())
}
