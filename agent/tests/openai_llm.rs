//! The OpenAI-compatible backend against a real server (llama.cpp's, serving SmolLM2-135M on
//! loopback), and its retry policy against tiny in-test HTTP servers that fail on purpose.
//!
//! The real-server tests need `eval "$(scripts/setup-llm.sh)"` first and fail without it.

#[path = "support/llama_server.rs"]
mod llama_server;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use autoagent_agent::llm::openai::{OpenAi, OpenAiOptions};
use autoagent_agent::llm::{ChatRequest, LlmBackend, LlmError, Message};
use llama_server::{free_port, LlamaServer, MODEL_ALIAS};

fn request(messages: Vec<Message>, max_tokens: u32, json: bool, seed: Option<u64>) -> ChatRequest {
    ChatRequest {
        messages,
        max_tokens,
        temperature: 0.0,
        seed,
        json,
        json_schema: None,
    }
}

fn real_backend(server: &LlamaServer) -> OpenAi {
    let mut options = OpenAiOptions::new(MODEL_ALIAS);
    options.base_url = Some(server.base_url());
    options.timeout = Duration::from_secs(120);
    options.usd_per_m_input = 1.0;
    options.usd_per_m_output = 2.0;
    OpenAi::new(options).expect("backend")
}

#[tokio::test]
async fn real_server_chat_returns_content_usage_and_finish_reason() {
    let server = LlamaServer::start();
    eprintln!("llama.cpp server ready in {:.2} s", server.startup.as_secs_f64());
    let backend = real_backend(&server);
    assert!(backend.describe().contains(&server.base_url()), "{}", backend.describe());
    let req = request(
        vec![Message::system("You are a helpful assistant."), Message::user("Name one colour.")],
        16,
        false,
        Some(1),
    );
    let reply = backend.complete(&req).await.expect("a completion");
    eprintln!("reply in {:.2} s: {reply:?}", reply.latency.as_secs_f64());
    assert!(!reply.content.trim().is_empty(), "{reply:?}");
    assert!(reply.usage.prompt_tokens > 0 && reply.usage.completion_tokens > 0, "{reply:?}");
    assert!(reply.usage.completion_tokens <= 16, "{reply:?}");
    assert!(matches!(reply.finish_reason.as_deref(), Some("stop" | "length")), "{reply:?}");
    assert_eq!(reply.model, MODEL_ALIAS);
    assert!(reply.latency > Duration::ZERO);
    let cost = (reply.usage.prompt_tokens as f64 + 2.0 * reply.usage.completion_tokens as f64) / 1e6;
    assert!((reply.cost_usd - cost).abs() < 1e-12, "{reply:?}");
}

#[tokio::test]
async fn real_server_json_mode_gives_parseable_json() {
    let server = LlamaServer::start();
    let backend = real_backend(&server);
    let req = request(
        vec![
            Message::system("You answer with one short JSON object only."),
            Message::user("Return a JSON object with one key \"color\" naming the color of the sky."),
        ],
        // Bounded, but with room: a reply cut by the limit would be invalid JSON.
        48,
        true,
        Some(7),
    );
    let reply = backend.complete(&req).await.expect("a completion");
    eprintln!("json reply: {reply:?}");
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"), "cut by max_tokens: {reply:?}");
    let value: serde_json::Value = serde_json::from_str(&reply.content).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", reply.content));
    assert!(value.is_object(), "{value}");
}

#[tokio::test]
async fn real_server_same_seed_same_reply() {
    let server = LlamaServer::start();
    let backend = real_backend(&server);
    let mut req = request(vec![Message::user("Write one sentence about the sea.")], 20, false, Some(42));
    let first = backend.complete(&req).await.expect("first completion");
    let second = backend.complete(&req).await.expect("second completion");
    assert!(!first.content.is_empty());
    assert_eq!(first.content, second.content, "temperature 0, seed 42");
    // Sampling with a seed is repeatable too, so the seed reaches the server.
    req.temperature = 1.0;
    let first = backend.complete(&req).await.expect("first sampled completion");
    let second = backend.complete(&req).await.expect("second sampled completion");
    assert_eq!(first.content, second.content, "temperature 1, seed 42");
}

// ---- fault paths, against tiny servers that fail on purpose ----

const COMPLETION: &str = r#"{"id":"c1","object":"chat.completion","created":0,"model":"fake-model",
  "choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],
  "usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;

/// One canned reply: status, headers, body.
type Reply = (u16, Vec<(&'static str, String)>, String);

/// What the fake server saw of each request: when, and its `Authorization` header.
type Seen = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

/// A tiny HTTP server answering the `n`-th request (0-based) with `reply(n)`.
struct FakeServer {
    server: Arc<tiny_http::Server>,
    seen: Seen,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn start(reply: impl Fn(usize) -> Reply + Send + 'static) -> Self {
        let server = Arc::new(tiny_http::Server::http((Ipv4Addr::LOCALHOST, 0)).expect("bind the fake server"));
        let seen: Seen = Arc::default();
        let thread = {
            let (server, seen) = (server.clone(), seen.clone());
            std::thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let mut body = String::new();
                    let _ = request.as_reader().read_to_string(&mut body);
                    let auth = request.headers().iter().find(|h| h.field.equiv("Authorization")).map(|h| h.value.to_string());
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push((Instant::now(), auth));
                        seen.len() - 1
                    };
                    let (status, headers, body) = reply(n);
                    let mut response = tiny_http::Response::from_string(body).with_status_code(status);
                    response.add_header(tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap());
                    for (name, value) in headers {
                        response.add_header(tiny_http::Header::from_bytes(name, value.as_bytes()).unwrap());
                    }
                    let _ = request.respond(response);
                }
            })
        };
        FakeServer {
            server,
            seen,
            thread: Some(thread),
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.server.server_addr().to_ip().expect("an IP address"))
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn times(&self) -> Vec<Instant> {
        self.seen.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Options for the fault tests: short waits, so the tests stay quick.
fn quick_options(base_url: String) -> OpenAiOptions {
    let mut options = OpenAiOptions::new("fake-model");
    options.base_url = Some(base_url);
    options.api_key = Some("sk-test".into());
    options.timeout = Duration::from_secs(5);
    options.max_retries = 3;
    options.retry_base_delay = Duration::from_millis(60);
    options.retry_max_delay = Duration::from_millis(200);
    options
}

fn hello() -> ChatRequest {
    request(vec![Message::user("hi")], 8, false, None)
}

fn error_body(kind: &str) -> String {
    format!(r#"{{"error":{{"message":"{kind}","type":"{kind}","param":null,"code":null}}}}"#)
}

#[tokio::test]
async fn rate_limited_twice_then_success_after_three_calls() {
    let server = FakeServer::start(|n| match n {
        // The first asks for a 1 s wait, the second leaves the wait to our backoff.
        0 => (429, vec![("Retry-After", "1".into())], error_body("rate_limit_exceeded")),
        1 => (429, vec![], error_body("rate_limit_exceeded")),
        _ => (200, vec![], COMPLETION.into()),
    });
    let mut options = quick_options(server.base_url());
    options.usd_per_m_input = 3.0;
    options.usd_per_m_output = 15.0;
    let backend = OpenAi::new(options).unwrap();
    let start = Instant::now();
    let reply = backend.complete(&hello()).await.expect("success after the retries");
    let elapsed = start.elapsed();
    assert_eq!(server.calls(), 3);
    assert_eq!(reply.content, "hello");
    assert_eq!((reply.usage.prompt_tokens, reply.usage.completion_tokens), (12, 3));
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
    assert_eq!(reply.model, "fake-model");
    assert!((reply.cost_usd - (12.0 * 3.0 + 3.0 * 15.0) / 1e6).abs() < 1e-15, "{}", reply.cost_usd);
    assert!(reply.latency >= Duration::from_secs(1), "latency covers the waits: {:?}", reply.latency);
    let t = server.times();
    let (first_wait, second_wait) = (t[1] - t[0], t[2] - t[1]);
    assert!(first_wait >= Duration::from_secs(1), "Retry-After: 1 honoured: {first_wait:?}");
    // Backoff after the second 429: 60 ms * 2 = 120 ms, half of it jittered.
    assert!(
        second_wait >= Duration::from_millis(60) && second_wait < Duration::from_secs(1),
        "{second_wait:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    let seen = server.seen.lock().unwrap();
    assert!(seen.iter().all(|(_, auth)| auth.as_deref() == Some("Bearer sk-test")), "{seen:?}");
}

#[tokio::test]
async fn server_error_forever_gives_http_error_after_max_retries() {
    let server = FakeServer::start(|_| (500, vec![], "boom: the model crashed".into()));
    let mut options = quick_options(server.base_url());
    options.max_retries = 2;
    let backend = OpenAi::new(options).unwrap();
    let error = backend.complete(&hello()).await.unwrap_err();
    match &error {
        LlmError::Http { status: 500, body } => assert!(body.contains("boom") && body.contains("after 3 attempts"), "{body}"),
        other => panic!("expected Http 500, got {other:?}"),
    }
    // One request plus two retries: async-openai's own retry layer is not stacked on ours.
    assert_eq!(server.calls(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let cases: [Reply; 3] = [
        (400, vec![], error_body("invalid_request_error")),
        // 429 that no wait cures: out of quota, or a wait beyond what we allow.
        (429, vec![], error_body("insufficient_quota")),
        (429, vec![("Retry-After", "3600".into())], error_body("rate_limit_exceeded")),
    ];
    for (status, headers, body) in cases {
        let expected_body = body.clone();
        let server = FakeServer::start(move |_| (status, headers.clone(), body.clone()));
        let backend = OpenAi::new(quick_options(server.base_url())).unwrap();
        let start = Instant::now();
        let error = backend.complete(&hello()).await.unwrap_err();
        match &error {
            LlmError::Http { status: s, body } => {
                assert_eq!(*s, status);
                assert!(body.starts_with(&expected_body), "{body}");
            }
            other => panic!("expected Http {status}, got {other:?}"),
        }
        assert_eq!(server.calls(), 1, "{error}");
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}

#[tokio::test]
async fn closed_port_is_unreachable_quickly() {
    let port = free_port();
    let backend = OpenAi::new(quick_options(format!("http://127.0.0.1:{port}/v1"))).unwrap();
    let start = Instant::now();
    let error = backend.complete(&hello()).await.unwrap_err();
    let elapsed = start.elapsed();
    match &error {
        LlmError::Unreachable { url, reason } => {
            assert_eq!(url, &format!("http://127.0.0.1:{port}/v1/chat/completions"));
            assert!(reason.to_lowercase().contains("refused"), "{reason}");
            assert!(reason.contains("after 4 attempts"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(error.to_string().contains("unreachable"), "{error}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

/// Accepts connections and never answers; counts them.
struct SilentServer {
    port: u16,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentServer {
    fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => accepted.lock().unwrap().push(stream),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        SilentServer {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test]
async fn silent_server_times_out() {
    let server = SilentServer::start();
    let mut options = quick_options(format!("http://127.0.0.1:{}/v1", server.port));
    options.timeout = Duration::from_millis(500);
    options.max_retries = 1;
    let backend = OpenAi::new(options).unwrap();
    let start = Instant::now();
    let error = backend.complete(&hello()).await.unwrap_err();
    let elapsed = start.elapsed();
    match &error {
        LlmError::Unreachable { reason, .. } => assert!(reason.contains("timed out") && reason.contains("after 2 attempts"), "{reason}"),
        other => panic!("expected Unreachable (timeout), got {other:?}"),
    }
    assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(server.accepted.lock().unwrap().len(), 2);
}
