//! `autoagent run` end to end on the real NB201 table and CIFAR-10 images, with each strategy and
//! each LLM backend: regularized evolution, random search without proxies, a real OpenAI-compatible
//! server (llama.cpp serving SmolLM2) and the real SmolLM2 GGUF in-process, plus replays and errors.

#[path = "../agent/tests/support/llama_server.rs"]
#[allow(dead_code)]
mod llama_server;

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{assert_one_line_error, shared};

fn run_cmd(dir: &Path, extra: &[&str]) -> Command {
    run_into(dir, "run", extra)
}

/// `autoagent run` on the real table and images, recording into `dir/out`.
fn run_into(dir: &Path, out: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoagent"));
    c.args(["run", "--truth"])
        .arg(shared().join("nb201/nb201.csv"))
        .arg("--data-dir")
        .arg(shared().join("cifar10-mini"))
        .arg("--proxy-cache")
        .arg(dir.join("proxy-cache.jsonl"))
        .arg("--out")
        .arg(dir.join(out))
        .args(extra)
        .env_remove("AUTOAGENT_DATA")
        .env_remove("OPENAI_API_KEY")
        .env_remove("AUTOAGENT_API_KEY")
        .env("RAYON_NUM_THREADS", "2");
    c
}

fn summary(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON object on stdout")
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn table_column(name: &str) -> std::collections::HashMap<String, f64> {
    let mut rdr = csv::Reader::from_path(shared().join("nb201/nb201.csv")).unwrap();
    let h = rdr.headers().unwrap().clone();
    let (a, c) = (h.iter().position(|x| x == "arch_str").unwrap(), h.iter().position(|x| x == name).unwrap());
    rdr.records().map(|r| r.unwrap()).map(|r| (r[a].to_string(), r[c].parse().unwrap())).collect()
}

#[test]
fn evolution_with_proxy_ranking_records_every_trial() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_cmd(dir.path(), &["--budget", "6trials", "--k", "6", "--json"]).output().unwrap();
    let s = summary(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("searching with regularized evolution").count(), 1, "{err}");
    assert_eq!(s["strategy"], "evolution");
    assert_eq!(s["trials"], 6);
    assert_eq!(s["budget_used"], 1.0);
    let trials = lines(&dir.path().join("run/trials.jsonl"));
    assert_eq!(trials.len(), 6);
    // The run database holds the same trials, every proposal ranked, and the run's metadata.
    {
        use autoagent_agent::store::Store;
        let db = autoagent_agent::store::sqlite::SqliteStore::open_read(&dir.path().join("run/run.db")).unwrap();
        let stored: Vec<serde_json::Value> = db.trials().unwrap().iter().map(|r| serde_json::to_value(&r.trial).unwrap()).collect();
        assert_eq!(stored, trials);
        let proposals = db.proposals().unwrap();
        assert!(proposals.len() >= 6, "{}", proposals.len());
        for t in &trials {
            assert!(proposals.iter().any(|p| p.proposal.config.line() == t["config"]["cell"].as_str().unwrap()));
        }
        assert_eq!(db.meta("status").unwrap().as_deref(), Some("finished"));
        assert_eq!(db.meta("seed").unwrap().as_deref(), Some("0"));
        let config: serde_json::Value = serde_json::from_str(&db.meta("config").unwrap().unwrap()).unwrap();
        assert_eq!(config["strategy"], "evolution");
    }
    // The accuracies are the table's 12-epoch validation accuracy; the test accuracy its 200-epoch one.
    let (valid, test) = (table_column("cifar10_valid_acc_12ep"), table_column("cifar10_test_acc"));
    for t in &trials {
        let arch = t["config"]["cell"].as_str().unwrap();
        assert!((t["accuracy"].as_f64().unwrap() - valid[arch]).abs() < 1e-9);
        assert!((t["test_accuracy"].as_f64().unwrap() - test[arch]).abs() < 1e-9);
        assert!(t["proxies"]["synflow"].is_number() || t["proxies"]["synflow"].is_null());
        assert!(t["rank_score"].is_number());
    }
    // Each round evaluates the two best-ranked of its candidates: ranks within a round descend.
    for pair in trials.chunks(2) {
        assert!(pair[0]["rank_score"].as_f64() >= pair[1]["rank_score"].as_f64(), "{pair:?}");
    }
    let best = s["best"]["accuracy"].as_f64().unwrap();
    assert!(trials.iter().all(|t| t["accuracy"].as_f64().unwrap() <= best));
    assert!(std::fs::read_to_string(dir.path().join("run/llm.jsonl")).unwrap().is_empty());
    // The run directory is not reused.
    let again = run_cmd(dir.path(), &["--budget", "2trials"]).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a run"));
}

#[test]
fn explore_adds_candidates_near_the_best_for_the_proxies_to_rank() {
    let dir = tempfile::tempdir().unwrap();
    let s = summary(
        &run_cmd(
            dir.path(),
            &[
                "--strategy",
                "local",
                "--population",
                "2",
                "--budget",
                "6trials",
                "--k",
                "3",
                "--explore",
                "3",
                "--json",
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(s["trials"], 6);
    // Three rounds of 3 proposals plus 3 explored candidates each, all ranked.
    assert_eq!(s["explored"], 9, "{s}");
    use autoagent_agent::store::Store;
    let db = autoagent_agent::store::sqlite::SqliteStore::open_read(&dir.path().join("run/run.db")).unwrap();
    let proposals = db.proposals().unwrap();
    assert_eq!(proposals.len(), 18);
    for round in 0..3 {
        assert_eq!(proposals.iter().filter(|p| p.round == round).count(), 6);
    }
    // Without ranking, nothing is added.
    let s = summary(
        &run_into(dir.path(), "plain", &["--no-proxies", "--budget", "4trials", "--explore", "3", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(s["explored"], 0);
}

#[test]
fn random_search_without_proxies_evaluates_in_proposal_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = summary(
        &run_cmd(
            dir.path(),
            &["--strategy", "random", "--no-proxies", "--budget", "5trials", "--k", "2", "--json"],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(s["trials"], 5);
    assert_eq!(s["proxy_seconds"], 0.0);
    let trials = lines(&dir.path().join("run/trials.jsonl"));
    assert!(trials.iter().all(|t| t["proxies"].as_object().unwrap().is_empty() && t["rank_score"].is_null()));
    assert!(!dir.path().join("proxy-cache.jsonl").exists());
}

fn assert_replay_reproduces(dir: &Path, same_options: &[&str]) {
    let first = lines(&dir.join("run/trials.jsonl"));
    let o = run_into(dir, "replayed", same_options)
        .arg("--replay")
        .arg(dir.join("run"))
        .arg("--json")
        .output()
        .unwrap();
    summary(&o);
    let again = lines(&dir.join("replayed/trials.jsonl"));
    assert_eq!(first, again, "the replay evaluated other trials");
}

#[test]
fn an_openai_compatible_server_drives_the_search_and_the_run_replays_without_it() {
    let server = llama_server::LlamaServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.base_url();
    let o = run_cmd(
        dir.path(),
        &[
            "--llm",
            "openai",
            "--model",
            "smollm2",
            "--base-url",
            &url,
            "--budget",
            "4trials",
            "--k",
            "4",
            "--json",
        ],
    )
    .output()
    .unwrap();
    let s = summary(&o);
    assert_eq!(s["strategy"], "llm");
    assert_eq!(s["trials"], 4);
    let llm = &s["llm"];
    assert!(llm["exchanges"].as_u64().unwrap() >= 1);
    assert!(llm["prompt_tokens"].as_u64().unwrap() > 100 && llm["completion_tokens"].as_u64().unwrap() > 0);
    let exchanges = lines(&dir.path().join("run/llm.jsonl"));
    assert_eq!(exchanges.len() as u64, llm["exchanges"].as_u64().unwrap());
    assert!(exchanges[0]["request"]["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("Propose 4 new architectures"));
    assert!(exchanges[0]["response"]["content"].is_string());
    // The reply's JSON Schema goes with the request, and the server's grammar holds the model to
    // it: every proposal is a valid cell.
    assert!(exchanges[0]["request"]["json_schema"]["properties"]["candidates"].is_object());
    assert_eq!(llm["invalid_proposals"], 0, "{s}");
    assert!(llm["valid_proposals"].as_u64().unwrap() >= 1, "{s}");
    drop(server);
    // Without the server: the recorded replies reproduce the run.
    assert_replay_reproduces(dir.path(), &["--budget", "4trials", "--k", "4"]);
}

#[test]
fn the_local_model_proposes_only_valid_cells_and_the_run_replays() {
    let model = std::env::var("AUTOAGENT_TEST_SMOLLM2")
        .unwrap_or_else(|_| panic!("AUTOAGENT_TEST_SMOLLM2 is not set: run `eval \"$(scripts/setup-llm.sh)\"` in the repository root first"));
    let dir = tempfile::tempdir().unwrap();
    let s = summary(
        &run_cmd(
            dir.path(),
            &[
                "--llm",
                "local",
                "--model-path",
                &model,
                "--budget",
                "4trials",
                "--k",
                "4",
                "--temperature",
                "1.0",
                "--json",
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(s["trials"], 4);
    let llm = &s["llm"];
    assert_eq!(llm["invalid_proposals"], 0);
    assert!(llm["valid_proposals"].as_u64().unwrap() >= 4);
    let exchanges = lines(&dir.path().join("run/llm.jsonl"));
    assert!(exchanges
        .iter()
        .all(|e| e["kind"] == "constrained" && e["choices"].as_array().unwrap().len() == 24));
    assert_replay_reproduces(dir.path(), &["--budget", "4trials", "--k", "4", "--temperature", "1.0"]);
}

#[test]
fn bad_inputs_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| run_cmd(dir.path(), extra).output().unwrap();
    assert_one_line_error(&run(&["--budget", "5parsecs"]), "unknown unit 'parsecs'");
    assert_one_line_error(&run(&["--task", "nb201:svhn"]), "unknown NB201 dataset 'svhn'");
    assert_one_line_error(&run(&["--task", "imagenet"]), "unknown task 'imagenet'");
    assert_one_line_error(&run(&["--llm", "openai"]), "--llm openai needs --model");
    assert_one_line_error(&run(&["--strategy", "llm"]), "--strategy llm needs an LLM");
    assert_one_line_error(&run(&["--llm", "local", "--model-path", "/nonexistent.gguf"]), "nonexistent.gguf");
    assert_one_line_error(&run(&["--fidelity", "200", "--task", "nb201:cifar100"]), "no 200-epoch validation accuracy");
    assert_one_line_error(&run(&["--proxies", "synflow,bogus"]), "unknown proxy `bogus`");
    // Issue 15 item 5: a time on a table task limited nothing (4,865 trials in "10s").
    assert_one_line_error(&run(&["--budget", "10s"]), "does not limit a table task");
    assert_one_line_error(&run(&["--wall-limit", "3trials"]), "--wall-limit");
    // Issue 16: the scheduler and its rungs.
    assert_one_line_error(&run(&["--scheduler", "pbt"]), "unknown scheduler 'pbt' (available: none, sha, hyperband, asha)");
    assert_one_line_error(&run(&["--min-epochs", "9", "--max-epochs", "3"]), "--max-epochs (3) is below --min-epochs (9)");
    assert_one_line_error(&run(&["--max-epochs", "0"]), "--max-epochs must be at least 1");
    assert_one_line_error(&run(&["--eta", "1"]), "--eta must be at least 2");
    assert_one_line_error(&run(&["--final-fraction", "1.5"]), "--final-fraction must be in [0, 1)");
    // Issue 16 item 3: a narrowing of the space that is empty, inverted or unknown.
    let training = |space: &str| run(&["--task", "cifar10", "--no-download", "--budget", "1m", "--space", space]);
    assert_one_line_error(&training("lr=0.2:0.01"), "--space: parameter 'lr'");
    assert_one_line_error(&training("lr=1:2"), "--space: parameter 'lr'");
    assert_one_line_error(&training("width=12"), "--space: parameter 'width'");
    assert_one_line_error(&training("colour=red"), "--space: unknown parameter 'colour'");
    assert_one_line_error(&run(&["--space", "width=16"]), "--space: unknown parameter 'width'");
    let port = llama_server::free_port();
    let url = format!("http://127.0.0.1:{port}/v1");
    assert_one_line_error(
        &run(&["--llm", "openai", "--model", "m", "--base-url", &url, "--budget", "2trials", "--no-proxies"]),
        "unreachable",
    );
}

#[test]
fn a_wall_clock_limit_stops_a_run_on_the_clock() {
    // Issue 15 item 15: device time is not the clock; --wall-limit is.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--budget",
        "1000000trials",
        "--wall-limit",
        "2s",
        "--no-proxies",
        "--strategy",
        "random",
        "--k",
        "16",
        "--top-k",
        "16",
        "--json",
    ];
    let started = std::time::Instant::now();
    let s = summary(&run_cmd(dir.path(), &args).output().unwrap());
    assert!(started.elapsed().as_secs_f64() < 30.0);
    assert!(s["stopped"].as_str().unwrap().contains("wall-clock limit"), "{s}");
    let trials = s["trials"].as_u64().unwrap();
    assert!(trials > 0 && trials < 1_000_000, "{trials}");
}

#[test]
fn a_training_run_that_affords_no_trial_says_so_before_it_starts() {
    // Issue 15 item 6: a run that evaluated nothing exited 0. Issue 16: a budget too small for
    // one lowest-rung trial is refused before anything is written, with the estimate.
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_autoagent"))
        .args(["run", "--task", "mnist", "--budget", "1s", "--no-proxies", "--no-download", "--data-dir"])
        .arg(shared().join("mnist-mini"))
        .arg("--out")
        .arg(dir.path().join("run"))
        .env_remove("AUTOAGENT_DATA")
        .output()
        .unwrap();
    assert_one_line_error(&o, "the budget (1s) is too small for one 1-epoch trial: a median NB201 cell takes ~");
    assert!(!dir.path().join("run").exists(), "nothing is written");
}

#[test]
fn a_closed_output_pipe_does_not_interrupt_a_run() {
    // Issue 15 item 17: `run … 2>&1 | head -1` killed the run at its next line of output.
    let dir = tempfile::tempdir().unwrap();
    let mut child = run_cmd(dir.path(), &["--budget", "4trials", "--k", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    assert!(child.wait().unwrap().success());
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/summary.json")).unwrap()).unwrap();
    assert_eq!(s["trials"], 4);
}

#[test]
fn a_time_budget_on_a_training_task_trains_from_a_measured_first_estimate() {
    // Issue 16 item 1 (first part): the first estimate of a trial was ~1e9 s, so a time budget
    // trained nothing. Now a few real steps are timed first and recorded in run.db.
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_autoagent"))
        .args(["run", "--task", "cifar10", "--budget", "40s", "--k", "4", "--json", "--no-download"])
        // Small networks only, so that 30 s of search (a quarter is the final model's) always
        // affords one.
        .args(["--space", "width=8,16; depth=1:3", "--data-dir"])
        .arg(shared().join("cifar10-mini"))
        .arg("--proxy-cache")
        .arg(dir.path().join("proxy-cache.jsonl"))
        .arg("--out")
        .arg(dir.path().join("run"))
        .env_remove("AUTOAGENT_DATA")
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    let s = summary(&o);
    assert!(s["trials"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["overrun_seconds"].as_f64().unwrap() <= 0.05 * 40.0, "{s}");
    let db = autoagent_agent::store::sqlite::SqliteStore::open_read(&dir.path().join("run/run.db")).unwrap();
    let calibration: f64 = autoagent_agent::store::Store::meta(&db, "calibration").unwrap().unwrap().parse().unwrap();
    assert!(calibration > 0.0 && calibration < 1.0, "{calibration} s per image");
    // Every trial is a configuration of the narrowed space.
    for r in autoagent_agent::store::Store::trials(&db).unwrap() {
        let c = &r.trial.config;
        assert!(matches!(c.int("width"), Some(8 | 16)) && (1..=3).contains(&c.int("depth").unwrap()), "{c}");
        assert!(c.float("lr").is_some() && c.str("augment").is_some(), "{c}");
    }
}
