//! The run store: one conformance suite run against the SQLite store and the in-memory store,
//! then what only the SQLite store does: surviving reopen and `kill -9`, migrating a database
//! written by schema version 1, and refusing newer, corrupt, locked or full databases with a
//! clear error and nothing stored lost.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use autoagent_agent::history::{FailedProposal, Origin, Proposal, Trial};
use autoagent_agent::llm::{ChatRequest, ChatResponse, Exchange, Message, Usage};
use autoagent_agent::store::memory::MemoryStore;
use autoagent_agent::store::sqlite::{SqliteStore, MIGRATIONS};
use autoagent_agent::store::{Metric, ProxyScore, Store, StoreError, TrialRecord, TrialState, SCHEMA_VERSION};
use autoagent_agent::task::cell_config;
use autoagent_evaluator::nb201::Arch;

const A: &str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|";
const B: &str = "|none~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|";

fn trial(id: usize, arch: &str, state: TrialState) -> TrialRecord {
    let mut proxies = BTreeMap::new();
    proxies.insert("naswot".to_string(), Some(781.25));
    proxies.insert("synflow".to_string(), None);
    TrialRecord {
        trial: Trial {
            id,
            round: id / 2,
            config: cell_config(Arch::parse(arch).unwrap()),
            origin: Origin::Mutation { parent: B.into() },
            proxies,
            rank_score: Some(-0.5),
            accuracy: (state == TrialState::Complete).then_some(84.25),
            test_accuracy: (state == TrialState::Complete).then_some(93.5),
            seconds: 12.5,
            state,
            error: (state == TrialState::Failed).then(|| "out of memory".to_string()),
            epochs: 0,
            rungs: Vec::new(),
            bracket: None,
        },
        artefacts: if state == TrialState::Complete {
            vec![format!("trials/{id}/best.safetensors")]
        } else {
            vec![]
        },
        stderr_tail: (state == TrialState::Failed).then(|| "CUDA error: out of memory\n".to_string()),
    }
}

fn exchange(index: usize) -> Exchange {
    Exchange {
        index,
        kind: "propose".into(),
        request: ChatRequest {
            messages: vec![Message::system("s"), Message::user(format!("propose {index} \"quoted\"\nnew line"))],
            max_tokens: 100,
            temperature: 0.7,
            seed: Some(index as u64),
            json: true,
            json_schema: Some(serde_json::json!({"type": "object"})),
        },
        template: None,
        response: Some(ChatResponse {
            content: format!("{{\"candidates\": [\"{A}\"]}}"),
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 20,
            },
            latency: std::time::Duration::from_millis(1500),
            model: "m".into(),
            finish_reason: Some("stop".into()),
            cost_usd: 0.001,
        }),
        choices: None,
        error: None,
    }
}

/// What every store must do.
fn conformance(store: &mut dyn Store) {
    // Metadata.
    assert_eq!(store.meta("config").unwrap(), None);
    store.set_meta("config", "{\"task\": \"nb201:cifar10\"}").unwrap();
    store.set_meta("seed", "7").unwrap();
    store.set_meta("seed", "8").unwrap();
    assert_eq!(store.meta("seed").unwrap().as_deref(), Some("8"));
    assert_eq!(store.meta("config").unwrap().as_deref(), Some("{\"task\": \"nb201:cifar10\"}"));

    // Proposals keep their order and origins.
    let origins = [Origin::Random, Origin::Mutation { parent: A.into() }, Origin::Llm { exchange: 3 }];
    for (i, o) in origins.iter().enumerate() {
        let p = Proposal {
            config: cell_config(Arch::parse(if i % 2 == 0 { A } else { B }).unwrap()),
            origin: o.clone(),
        };
        assert_eq!(store.add_proposal(i / 2, &p).unwrap(), i);
    }
    let ps = store.proposals().unwrap();
    assert_eq!(ps.len(), 3);
    assert_eq!(ps.iter().map(|p| p.proposal.origin.clone()).collect::<Vec<_>>(), origins);
    assert_eq!(ps[2].round, 1);
    assert_eq!(ps[1].proposal.config.line(), B);

    // Proxy scores: one per (arch, proxy), the latest wins, non-finite is None.
    for (arch, proxy, value) in [
        (A, "synflow", Some(1e22)),
        (A, "naswot", None),
        (A, "synflow", Some(2e22)),
        (B, "synflow", Some(5.0)),
    ] {
        store
            .put_proxy_score(&ProxyScore {
                candidate: arch.into(),
                proxy: proxy.into(),
                value,
                ms: 3.0,
            })
            .unwrap();
    }
    let scores = store.proxy_scores().unwrap();
    assert_eq!(scores.len(), 3);
    let a_synflow = scores.iter().find(|s| s.candidate == A && s.proxy == "synflow").unwrap();
    assert_eq!(a_synflow.value, Some(2e22));
    assert_eq!(scores.iter().find(|s| s.candidate == A && s.proxy == "naswot").unwrap().value, None);

    // Trials move through their states under one id.
    store.put_trial(&trial(0, A, TrialState::Pending)).unwrap();
    store.put_trial(&trial(0, A, TrialState::Running)).unwrap();
    store.put_trial(&trial(0, A, TrialState::Complete)).unwrap();
    store.put_trial(&trial(1, B, TrialState::Failed)).unwrap();
    store.put_trial(&trial(2, A, TrialState::Running)).unwrap();
    store.put_trial(&trial(3, B, TrialState::Pending)).unwrap();
    store.put_trial(&trial(4, B, TrialState::Pruned)).unwrap();
    let trials = store.trials().unwrap();
    assert_eq!(trials.iter().map(|t| t.trial.id).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(trials[0], trial(0, A, TrialState::Complete));
    assert_eq!(trials[1], trial(1, B, TrialState::Failed));
    // An agent that died leaves running and pending trials: they become lost, nothing else moves.
    assert_eq!(store.mark_lost().unwrap(), 2);
    let states: Vec<TrialState> = store.trials().unwrap().iter().map(|t| t.trial.state).collect();
    assert_eq!(
        states,
        [TrialState::Complete, TrialState::Failed, TrialState::Lost, TrialState::Lost, TrialState::Pruned]
    );

    // Metrics per epoch, the latest value of one (epoch, name) wins; no trial, no metric.
    for (epoch, name, value) in [(2, "valid_acc", 50.0), (1, "valid_acc", 30.0), (1, "train_loss", 2.0), (1, "valid_acc", 31.0)] {
        store
            .add_metric(&Metric {
                trial: 0,
                epoch,
                name: name.into(),
                value,
            })
            .unwrap();
    }
    let m = store.metrics(0).unwrap();
    assert_eq!(
        m.iter().map(|m| (m.epoch, m.name.as_str(), m.value)).collect::<Vec<_>>(),
        [(1, "train_loss", 2.0), (1, "valid_acc", 31.0), (2, "valid_acc", 50.0)]
    );
    assert!(store.metrics(1).unwrap().is_empty());
    assert!(store
        .add_metric(&Metric {
            trial: 99,
            epoch: 1,
            name: "x".into(),
            value: 0.0,
        })
        .is_err());

    // Rejected proposals in order; exchanges verbatim by index.
    let f = |i: usize| FailedProposal {
        text: format!("|conv~{i}|"),
        reason: "unknown operation".into(),
        exchange: (i % 2 == 0).then_some(i),
    };
    for i in 0..3 {
        store.add_failed(&f(i)).unwrap();
    }
    assert_eq!(store.failed().unwrap(), (0..3).map(f).collect::<Vec<_>>());
    store.add_exchange(&exchange(1)).unwrap();
    store.add_exchange(&exchange(0)).unwrap();
    assert_eq!(store.exchanges().unwrap(), vec![exchange(0), exchange(1)]);
}

#[test]
fn memory_store_conforms() {
    conformance(&mut MemoryStore::new());
}

#[test]
fn sqlite_store_conforms_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.db");
    let mut memory = MemoryStore::new();
    conformance(&mut memory);
    {
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        conformance(&mut store);
    }
    // Reopened, for writing and for reading: the same contents as the memory store's.
    for store in [SqliteStore::open(&path).unwrap(), SqliteStore::open_read(&path).unwrap()] {
        assert_eq!(store.trials().unwrap(), memory.trials().unwrap());
        assert_eq!(store.proposals().unwrap(), memory.proposals().unwrap());
        assert_eq!(store.proxy_scores().unwrap(), memory.proxy_scores().unwrap());
        assert_eq!(store.exchanges().unwrap(), memory.exchanges().unwrap());
        assert_eq!(store.failed().unwrap(), memory.failed().unwrap());
        assert_eq!(store.metrics(0).unwrap(), memory.metrics(0).unwrap());
        assert_eq!(store.meta("seed").unwrap().as_deref(), Some("8"));
    }
}

#[test]
fn a_database_of_schema_version_1_is_migrated_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.db");
    {
        // What the first schema version wrote.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
        conn.execute(
            "INSERT INTO trials (id, round, arch, origin, state, proxies, rank_score, accuracy, test_accuracy, seconds, error)
             VALUES (0, 0, ?1, '{\"kind\":\"random\"}', 'complete', '{\"naswot\":700.5}', 1.5, 80.0, 91.0, 3.0, NULL)",
            [A],
        )
        .unwrap();
        conn.execute("INSERT INTO meta (key, value) VALUES ('seed', '3')", []).unwrap();
    }
    // A reader does not migrate: it says what to do.
    let e = SqliteStore::open_read(&path).unwrap_err();
    assert!(e.to_string().contains("`autoagent resume` migrates it"), "{e}");
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let trials = store.trials().unwrap();
    assert_eq!(trials.len(), 1);
    let t = &trials[0];
    assert_eq!(t.trial.config.line(), A);
    assert_eq!(
        (t.trial.accuracy, t.trial.test_accuracy, t.trial.state),
        (Some(80.0), Some(91.0), TrialState::Complete)
    );
    assert_eq!(t.trial.proxies.get("naswot"), Some(&Some(700.5)));
    assert!(t.artefacts.is_empty() && t.stderr_tail.is_none());
    assert_eq!(store.meta("seed").unwrap().as_deref(), Some("3"));
    // What version 2 added works on the migrated file.
    store
        .add_metric(&Metric {
            trial: 0,
            epoch: 1,
            name: "valid_acc".into(),
            value: 60.0,
        })
        .unwrap();
    assert_eq!(store.metrics(0).unwrap().len(), 1);
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn newer_corrupt_and_missing_databases_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // Newer schema.
    let newer = dir.path().join("newer.db");
    {
        let conn = rusqlite::Connection::open(&newer).unwrap();
        conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;").unwrap();
    }
    let before = bytes(&newer);
    for e in [SqliteStore::open(&newer).unwrap_err(), SqliteStore::open_read(&newer).unwrap_err()] {
        assert!(matches!(e, StoreError::NewerSchema { found: 99, .. }), "{e}");
        assert!(e.to_string().contains("upgrade autoagent"), "{e}");
    }
    assert_eq!(bytes(&newer), before);
    // Not a database.
    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(
        &corrupt,
        b"this is not a SQLite database, it is a text file that is long enough to hold a header",
    )
    .unwrap();
    let before = bytes(&corrupt);
    for e in [SqliteStore::open(&corrupt).unwrap_err(), SqliteStore::open_read(&corrupt).unwrap_err()] {
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
    assert_eq!(bytes(&corrupt), before);
    // Missing, for reading.
    let e = SqliteStore::open_read(&dir.path().join("none.db")).unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");
}

#[test]
fn a_second_writer_is_refused_and_readers_see_a_live_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.db");
    let mut writer = SqliteStore::open(&path).unwrap();
    writer.put_trial(&trial(0, A, TrialState::Running)).unwrap();
    let e = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("locked by another process"), "{e}");
    let reader = SqliteStore::open_read(&path).unwrap();
    assert_eq!(reader.trials().unwrap().len(), 1);
    writer.put_trial(&trial(1, B, TrialState::Running)).unwrap();
    assert_eq!(reader.trials().unwrap().len(), 2);
    drop(writer);
    // The lock goes with the writer.
    SqliteStore::open(&path).unwrap();
}

#[test]
fn a_write_blocked_by_another_connection_reports_the_lock_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store.put_trial(&trial(0, A, TrialState::Complete)).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let e = store.put_trial(&trial(1, B, TrialState::Complete)).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    other.execute_batch("ROLLBACK").unwrap();
    store.put_trial(&trial(1, B, TrialState::Complete)).unwrap();
    assert_eq!(store.trials().unwrap().len(), 2);
}

#[test]
fn a_full_disk_is_reported_and_what_was_written_stays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store.put_trial(&trial(0, A, TrialState::Complete)).unwrap();
    store.limit_pages(16).unwrap();
    let mut written = 0;
    let err = loop {
        match store.add_exchange(&exchange(written)) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 10_000, "the page limit never bit");
    };
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("disk"), "{err}");
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.trials().unwrap(), vec![trial(0, A, TrialState::Complete)]);
    assert_eq!(store.exchanges().unwrap().len(), written);
}

/// The child of the kill test: writes trials as fast as it can, printing each id once stored.
#[test]
#[ignore = "run by store_survives_kill_9"]
fn store_writer_child() {
    let Some(path) = std::env::var_os("AUTOAGENT_STORE_CHILD") else {
        return;
    };
    let mut store = SqliteStore::open(Path::new(&path)).unwrap();
    for id in 0.. {
        store.put_trial(&trial(id, A, TrialState::Running)).unwrap();
        store.put_trial(&trial(id, A, TrialState::Complete)).unwrap();
        store.add_exchange(&exchange(id)).unwrap();
        println!("stored {id}");
    }
}

#[test]
fn store_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.db");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "store_writer_child", "--ignored", "--nocapture", "--test-threads", "1"])
            .env("AUTOAGENT_STORE_CHILD", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut last = None;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let target = 50 + round * 37;
        for line in lines.by_ref() {
            if let Some(id) = line.unwrap().strip_prefix("stored ") {
                last = Some(id.parse::<usize>().unwrap());
                if last.unwrap() >= target {
                    break;
                }
            }
        }
        // SIGKILL mid-write.
        child.kill().unwrap();
        child.wait().unwrap();
        let last = last.expect("the child stored something");
        let mut store = SqliteStore::open(&path).unwrap();
        let trials = store.trials().unwrap();
        // Everything reported stored is there, whole; at most one more trial (being written).
        assert!(trials.len() > last, "round {round}: {} trials, {last} reported", trials.len());
        for t in &trials[..=last] {
            assert_eq!(t, &trial(t.trial.id, A, TrialState::Complete));
        }
        assert!(store.exchanges().unwrap().len() > last);
        store.mark_lost().unwrap();
    }
}
