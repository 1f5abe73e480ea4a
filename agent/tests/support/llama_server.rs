//! A real OpenAI-compatible server for tests: llama.cpp's server (Python package `xllamacpp`)
//! serving SmolLM2-135M-Instruct on a free loopback port, started by `llama_server.py` beside
//! this file and killed when the handle is dropped (also when the test panics).
//!
//! Needs `AUTOAGENT_TEST_PYTHON` and `AUTOAGENT_TEST_SMOLLM2`: `eval "$(scripts/setup-llm.sh)"`
//! in the repository root sets both. Without them the test fails, saying so.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the model may take to load before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The model name the server reports.
pub const MODEL_ALIAS: &str = "smollm2";

/// A running server; dropping it kills the process.
pub struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
    /// From spawning the process to the first healthy `/health`.
    pub startup: Duration,
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: these tests need a real llama.cpp server and model; run `eval \"$(scripts/setup-llm.sh)\"` in the repository root \
             (it installs them into target/llm-venv and prints the variables), then run the tests again"
        ),
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

impl LlamaServer {
    /// Starts the server and waits until it answers `/health` with 200.
    pub fn start() -> Self {
        let python = required_env("AUTOAGENT_TEST_PYTHON");
        let model = required_env("AUTOAGENT_TEST_SMOLLM2");
        assert!(
            Path::new(&model).is_file(),
            "AUTOAGENT_TEST_SMOLLM2={model} is not a file: run `eval \"$(scripts/setup-llm.sh)\"` again"
        );
        // From the agent crate's tests, or from the workspace root's (which include this file).
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = [root.join("tests/support/llama_server.py"), root.join("agent/tests/support/llama_server.py")]
            .into_iter()
            .find(|p| p.is_file())
            .expect("llama_server.py beside this file");
        // The port is chosen before the server binds it, so another process may take it in
        // between: then the server dies at once and we try another one.
        let mut last_failure = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!("autoagent-llama-server-{}-{port}.log", std::process::id()));
            let stderr = File::create(&log).expect("create the server log");
            let start = Instant::now();
            let child = Command::new(&python)
                .arg(&script)
                .args(["--model", &model, "--port", &port.to_string(), "--alias", MODEL_ALIAS])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {python} {}: {e}", script.display()));
            let mut server = LlamaServer {
                child,
                port,
                log,
                startup: Duration::ZERO,
            };
            match server.wait_healthy(start) {
                Ok(()) => {
                    server.startup = start.elapsed();
                    return server;
                }
                Err(failure) if failure.exited && failure.log.contains("bind") => last_failure = failure.to_string(),
                Err(failure) => panic!("{failure}"),
            }
        }
        panic!("{last_failure}")
    }

    fn wait_healthy(&mut self, start: Instant) -> Result<(), StartFailure> {
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server process") {
                return Err(self.failure(format!("the llama.cpp server exited ({status}) before it was ready"), true));
            }
            if health(self.port) == Some(200) {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(self.failure(format!("the llama.cpp server was not ready within {READY_TIMEOUT:?}"), false));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn failure(&self, what: String, exited: bool) -> StartFailure {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        StartFailure { what, exited, log }
    }

    /// The OpenAI API base URL of this server.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

struct StartFailure {
    what: String,
    exited: bool,
    log: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<&str> = self.log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        write!(f, "{}; its stderr ends with:\n{tail}", self.what)
    }
}

/// The status of `GET /health`, or `None` when nothing answers yet.
fn health(port: u16) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 32];
    let n = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}
