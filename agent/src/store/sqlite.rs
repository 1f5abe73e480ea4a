//! The SQLite run store: one database file per run directory.
//!
//! - WAL journal, `synchronous = NORMAL`: a write that returned survives the process being
//!   killed at any moment (power loss may lose the last transactions, never corrupt the file).
//! - Versioned schema (`PRAGMA user_version`): opening migrates an older database forward, one
//!   transaction per version, and refuses a newer one without touching it.
//! - One writer per run: a writer holds an exclusive lock on `<database>.lock` for as long as it
//!   is open, and a second writer gets [`StoreError::Locked`]; readers ([`SqliteStore::open_read`],
//!   for `report` and `ls`) need no lock and may read a live run.
//! - Errors say what happened (corrupt file, locked, newer schema, full disk) and leave what
//!   was stored intact: every write is one transaction.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::{Metric, ProposalRecord, ProxyScore, Store, StoreError, TrialRecord, TrialState, SCHEMA_VERSION};
use crate::configspace::Config;
use crate::history::{FailedProposal, Origin, Proposal, Trial};
use crate::llm::Exchange;

/// The schema, one migration per version: `MIGRATIONS[v - 1]` takes a database from version
/// `v - 1` to `v`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE proposals (id INTEGER PRIMARY KEY, round INTEGER NOT NULL, arch TEXT NOT NULL, origin TEXT NOT NULL);
     CREATE TABLE proxy_scores (arch TEXT NOT NULL, proxy TEXT NOT NULL, value REAL, ms REAL NOT NULL, PRIMARY KEY (arch, proxy));
     CREATE TABLE trials (
         id INTEGER PRIMARY KEY, round INTEGER NOT NULL, arch TEXT NOT NULL, origin TEXT NOT NULL,
         state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'complete', 'failed', 'pruned', 'lost')),
         proxies TEXT NOT NULL, rank_score REAL, accuracy REAL, test_accuracy REAL, seconds REAL NOT NULL, error TEXT);
     CREATE TABLE failed_proposals (id INTEGER PRIMARY KEY, text TEXT NOT NULL, reason TEXT NOT NULL, exchange INTEGER);
     CREATE TABLE exchanges (idx INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    // 2: trials in child processes: artefacts, stderr and metrics per epoch.
    "ALTER TABLE trials ADD COLUMN artefacts TEXT NOT NULL DEFAULT '[]';
     ALTER TABLE trials ADD COLUMN stderr_tail TEXT;
     CREATE TABLE metrics (
         trial INTEGER NOT NULL REFERENCES trials(id), epoch INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
         PRIMARY KEY (trial, epoch, name));",
    // 3: multi-fidelity: a trial's rungs (JSON), its bracket and the epochs of its last rung.
    "ALTER TABLE trials ADD COLUMN rungs TEXT NOT NULL DEFAULT '[]';
     ALTER TABLE trials ADD COLUMN bracket INTEGER;
     ALTER TABLE trials ADD COLUMN epochs INTEGER NOT NULL DEFAULT 0;",
    // 4: a candidate is a configuration of the task's space (JSON), not only a cell: runs
    // before searched cells alone, which become {"cell": arch}; proxy scores are stored by the
    // configuration's text (`cell=ARCH` for those). `arch` keeps the cell, for reading by hand.
    "ALTER TABLE proposals ADD COLUMN config TEXT NOT NULL DEFAULT '{}';
     UPDATE proposals SET config = '{\"cell\":\"' || arch || '\"}';
     ALTER TABLE trials ADD COLUMN config TEXT NOT NULL DEFAULT '{}';
     UPDATE trials SET config = '{\"cell\":\"' || arch || '\"}';
     UPDATE proxy_scores SET arch = 'cell=' || arch WHERE arch LIKE '|%';",
];

/// How long a statement waits for another process's transaction before reporting a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// The writer's lock (held while open).
    _lock: Option<File>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => StoreError::Corrupt { path, reason: e.to_string() },
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Locked { path },
            ErrorCode::DiskFull => StoreError::DiskFull { path },
            ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly => StoreError::Open { path, reason: e.to_string() },
            _ => StoreError::Sql { path, reason: e.to_string() },
        },
        _ => StoreError::Sql { path, reason: e.to_string() },
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Decode {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("store values serialise")
}

impl SqliteStore {
    /// Open the run database at `path` for writing, creating it (and migrating an older one);
    /// fails with [`StoreError::Locked`] while another writer has it open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let lock_path = {
            let mut s = path.as_os_str().to_owned();
            s.push(".lock");
            PathBuf::from(s)
        };
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                reason: format!("cannot create the lock file {}: {e}", lock_path.display()),
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked { path: path.to_path_buf() }),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Open {
                    path: path.to_path_buf(),
                    reason: format!("cannot lock {}: {e}", lock_path.display()),
                })
            }
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE).map_err(|e| classify(path, e))?;
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            _lock: Some(lock),
        };
        store.prepare(true)?;
        Ok(store)
    }

    /// Open an existing run database for reading (no lock; a live run may be writing it). An
    /// older schema is read as it is only if it needs no migration: run `resume` first.
    pub fn open_read(path: &Path) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                reason: "no such file".into(),
            });
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| classify(path, e))?;
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            _lock: None,
        };
        store.prepare(false)?;
        Ok(store)
    }

    /// A second connection of the writer's own process to its database (no lock of its own: the
    /// writer's covers it), for the meter that records device time as it is spent
    /// ([`crate::runner::Recorder`]).
    pub(crate) fn open_beside_writer(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(|e| classify(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| classify(path, e))?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            _lock: None,
        })
    }

    /// The metadata entries whose key starts with `prefix`, by key.
    pub fn meta_prefixed(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.rows(
            "SELECT key, value FROM meta WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
            [prefix],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Remove a metadata entry.
    pub fn delete_meta(&mut self, key: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM meta WHERE key = ?1", [key]).map(|_| ())
    }

    /// In one transaction: remove the metadata entries `remove` and set `key` to `value`.
    pub fn replace_meta(&mut self, remove: &[String], key: &str, value: &str) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e| classify(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        for k in remove {
            tx.execute("DELETE FROM meta WHERE key = ?1", [k]).map_err(err)?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
            .map_err(|e| classify(&self.path, e))
    }

    /// Cap the database at `pages` pages (SQLite's `max_page_count`): a write beyond it fails as
    /// a full disk does. For fault tests.
    pub fn limit_pages(&self, pages: u32) -> Result<(), StoreError> {
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| classify(&self.path, e))
    }

    fn prepare(&mut self, write: bool) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e| classify(&path, e);
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // Reading the version touches the file: a file that is not a database fails here.
        let version = self.schema_version()?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if !write {
            if version < SCHEMA_VERSION {
                return Err(StoreError::Open {
                    path: self.path.clone(),
                    reason: format!("schema version {version} predates this autoagent's {SCHEMA_VERSION}; `autoagent resume` migrates it"),
                });
            }
            return Ok(());
        }
        self.conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)).map_err(err)?;
        self.conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;").map_err(err)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let to = i + 1;
            let tx = self.conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.execute_batch(&format!("PRAGMA user_version = {to}")).map_err(err)?;
            tx.commit().map_err(err)?;
            tracing::info!("{}: schema migrated to version {to}", self.path.display());
        }
        Ok(())
    }

    fn exec(&mut self, sql: &str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
        self.conn.execute(sql, params).map_err(|e| classify(&self.path, e))
    }

    fn rows<T>(&self, sql: &str, params: impl rusqlite::Params, f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>) -> Result<Vec<T>, StoreError> {
        let err = |e| classify(&self.path, e);
        let mut stmt = self.conn.prepare(sql).map_err(err)?;
        let rows = stmt.query_map(params, f).map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }
}

impl Store for SqliteStore {
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| classify(&self.path, e))
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )
        .map(|_| ())
    }

    fn add_proposal(&mut self, round: usize, proposal: &Proposal) -> Result<usize, StoreError> {
        let id: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(id) + 1, 0) FROM proposals", [], |r| r.get(0))
            .map_err(|e| classify(&self.path, e))?;
        self.exec(
            "INSERT INTO proposals (id, round, arch, origin, config) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                round as i64,
                cell_text(&proposal.config),
                encode(&proposal.origin),
                proposal.config.to_json()
            ],
        )?;
        Ok(id as usize)
    }

    fn proposals(&self) -> Result<Vec<ProposalRecord>, StoreError> {
        let raw = self.rows("SELECT id, round, config, origin FROM proposals ORDER BY id", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?;
        raw.into_iter()
            .map(|(id, round, config, origin)| {
                Ok(ProposalRecord {
                    id: id as usize,
                    round: round as usize,
                    proposal: Proposal {
                        config: parse_config("proposals.config", &config)?,
                        origin: decode::<Origin>("proposals.origin", &origin)?,
                    },
                })
            })
            .collect()
    }

    fn put_proxy_score(&mut self, score: &ProxyScore) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO proxy_scores (arch, proxy, value, ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (arch, proxy) DO UPDATE SET value = excluded.value, ms = excluded.ms",
            params![score.candidate, score.proxy, score.value, score.ms],
        )
        .map(|_| ())
    }

    fn proxy_scores(&self) -> Result<Vec<ProxyScore>, StoreError> {
        self.rows("SELECT arch, proxy, value, ms FROM proxy_scores ORDER BY arch, proxy", [], |r| {
            Ok(ProxyScore {
                candidate: r.get(0)?,
                proxy: r.get(1)?,
                value: r.get(2)?,
                ms: r.get(3)?,
            })
        })
    }

    fn put_trial(&mut self, record: &TrialRecord) -> Result<(), StoreError> {
        let t = &record.trial;
        self.exec(
            "INSERT INTO trials (id, round, arch, origin, state, proxies, rank_score, accuracy, test_accuracy, seconds, error, artefacts, stderr_tail,
                 rungs, bracket, epochs, config)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
             ON CONFLICT (id) DO UPDATE SET round = excluded.round, arch = excluded.arch, config = excluded.config, origin = excluded.origin,
                 state = excluded.state, proxies = excluded.proxies, rank_score = excluded.rank_score,
                 accuracy = excluded.accuracy, test_accuracy = excluded.test_accuracy, seconds = excluded.seconds,
                 error = excluded.error, artefacts = excluded.artefacts, stderr_tail = excluded.stderr_tail,
                 rungs = excluded.rungs, bracket = excluded.bracket, epochs = excluded.epochs",
            params![
                t.id as i64,
                t.round as i64,
                cell_text(&t.config),
                encode(&t.origin),
                t.state.name(),
                encode(&t.proxies),
                t.rank_score,
                t.accuracy,
                t.test_accuracy,
                t.seconds,
                t.error,
                encode(&record.artefacts),
                record.stderr_tail,
                encode(&t.rungs),
                t.bracket.map(|b| b as i64),
                t.epochs as i64,
                t.config.to_json(),
            ],
        )
        .map(|_| ())
    }

    fn trials(&self) -> Result<Vec<TrialRecord>, StoreError> {
        type Raw = (
            i64,
            i64,
            String,
            String,
            String,
            String,
            Option<f64>,
            Option<f64>,
            Option<f64>,
            f64,
            Option<String>,
            String,
            Option<String>,
        );
        type Fidelity = (String, Option<i64>, i64);
        let raw: Vec<(Raw, Fidelity)> = self.rows(
            "SELECT id, round, config, origin, state, proxies, rank_score, accuracy, test_accuracy, seconds, error, artefacts, stderr_tail,
                 rungs, bracket, epochs
             FROM trials ORDER BY id",
            [],
            |r| {
                Ok((
                    (
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                        r.get(11)?,
                        r.get(12)?,
                    ),
                    (r.get(13)?, r.get(14)?, r.get(15)?),
                ))
            },
        )?;
        raw.into_iter()
            .map(
                |(
                    (id, round, config, origin, state, proxies, rank_score, accuracy, test_accuracy, seconds, error, artefacts, stderr_tail),
                    (rungs, bracket, epochs),
                )| {
                    let trial = Trial {
                        id: id as usize,
                        round: round as usize,
                        config: parse_config("trials.config", &config)?,
                        origin: decode("trials.origin", &origin)?,
                        proxies: decode("trials.proxies", &proxies)?,
                        rank_score,
                        accuracy,
                        test_accuracy,
                        seconds,
                        state: TrialState::from_name(&state).ok_or_else(|| StoreError::Decode {
                            what: "trials.state".into(),
                            reason: format!("unknown state '{state}'"),
                        })?,
                        error,
                        epochs: epochs as usize,
                        rungs: decode("trials.rungs", &rungs)?,
                        bracket: bracket.map(|b| b as usize),
                    };
                    Ok(TrialRecord {
                        trial,
                        artefacts: decode("trials.artefacts", &artefacts)?,
                        stderr_tail,
                    })
                },
            )
            .collect()
    }

    fn mark_lost(&mut self) -> Result<usize, StoreError> {
        self.exec("UPDATE trials SET state = 'lost' WHERE state IN ('running', 'pending')", [])
    }

    fn add_metric(&mut self, metric: &Metric) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO metrics (trial, epoch, name, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (trial, epoch, name) DO UPDATE SET value = excluded.value",
            params![metric.trial as i64, metric.epoch as i64, metric.name, metric.value],
        )
        .map(|_| ())
    }

    fn metrics(&self, trial: usize) -> Result<Vec<Metric>, StoreError> {
        self.rows(
            "SELECT trial, epoch, name, value FROM metrics WHERE trial = ?1 ORDER BY epoch, name",
            [trial as i64],
            |r| {
                Ok(Metric {
                    trial: r.get::<_, i64>(0)? as usize,
                    epoch: r.get::<_, i64>(1)? as usize,
                    name: r.get(2)?,
                    value: r.get(3)?,
                })
            },
        )
    }

    fn add_failed(&mut self, failed: &FailedProposal) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO failed_proposals (text, reason, exchange) VALUES (?1, ?2, ?3)",
            params![failed.text, failed.reason, failed.exchange.map(|e| e as i64)],
        )
        .map(|_| ())
    }

    fn failed(&self) -> Result<Vec<FailedProposal>, StoreError> {
        self.rows("SELECT text, reason, exchange FROM failed_proposals ORDER BY id", [], |r| {
            Ok(FailedProposal {
                text: r.get(0)?,
                reason: r.get(1)?,
                exchange: r.get::<_, Option<i64>>(2)?.map(|e| e as usize),
            })
        })
    }

    fn add_exchange(&mut self, exchange: &Exchange) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO exchanges (idx, body) VALUES (?1, ?2) ON CONFLICT (idx) DO UPDATE SET body = excluded.body",
            params![exchange.index as i64, encode(exchange)],
        )
        .map(|_| ())
    }

    fn exchanges(&self) -> Result<Vec<Exchange>, StoreError> {
        let bodies = self.rows("SELECT body FROM exchanges ORDER BY idx", [], |r| r.get::<_, String>(0))?;
        bodies.iter().map(|b| decode("exchanges.body", b)).collect()
    }
}

fn parse_config(what: &str, s: &str) -> Result<Config, StoreError> {
    Config::from_json(s).map_err(|e| StoreError::Decode {
        what: what.into(),
        reason: e.to_string(),
    })
}

/// The `arch` column: the configuration's cell, empty without one.
fn cell_text(config: &Config) -> String {
    config.cell("cell").map(|a| a.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::TrialState;
    use rand::{Rng, SeedableRng};

    /// Every stored float reads back to the same bits: the REAL columns, and the floats inside
    /// JSON text (a trial's proxy scores), whose parsing must not be off by an ulp.
    #[test]
    fn floats_round_trip_to_the_bit() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&tmp.path().join("run.db")).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
        // The values of issue 15 item 16, then random finite floats of every magnitude.
        let mut values = vec![2.2317950278482128e49, 2.2317950278482126e49, 9.280026626811533e21, 9.280026626811532e21];
        while values.len() < 2000 {
            let v = f64::from_bits(rng.random::<u64>());
            if v.is_finite() {
                values.push(v);
            }
        }
        let arch: autoagent_evaluator::nb201::Arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
            .parse()
            .unwrap();
        let config = crate::task::cell_config(arch).with("lr", crate::configspace::Value::Float(0.1));
        for (id, pair) in values.chunks(2).enumerate() {
            let config = config.clone().with("weight_decay", crate::configspace::Value::Float(pair[0].abs()));
            let trial = Trial {
                id,
                round: 0,
                config: config.clone(),
                origin: Origin::Random,
                proxies: [("synflow".to_string(), Some(pair[0])), ("naswot".to_string(), Some(pair[1]))].into(),
                rank_score: Some(pair[1]),
                accuracy: Some(pair[0]),
                test_accuracy: None,
                seconds: pair[1].abs(),
                state: TrialState::Complete,
                error: None,
                ..Trial::new(id, 0, config, Origin::Random)
            };
            store
                .put_trial(&TrialRecord {
                    trial,
                    artefacts: Vec::new(),
                    stderr_tail: None,
                })
                .unwrap();
        }
        for (r, pair) in store.trials().unwrap().iter().zip(values.chunks(2)) {
            let t = &r.trial;
            let bits = |v: Option<f64>| v.map(f64::to_bits);
            assert_eq!(bits(t.proxies["synflow"]), Some(pair[0].to_bits()), "{:e}", pair[0]);
            assert_eq!(bits(t.proxies["naswot"]), Some(pair[1].to_bits()), "{:e}", pair[1]);
            assert_eq!(bits(t.accuracy), Some(pair[0].to_bits()));
            assert_eq!(bits(t.rank_score), Some(pair[1].to_bits()));
            assert_eq!(bits(t.config.float("weight_decay")), Some(pair[0].abs().to_bits()));
        }
    }
}
