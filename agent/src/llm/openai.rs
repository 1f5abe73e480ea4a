//! Any OpenAI-compatible chat-completions server (the OpenAI API, vLLM, llama.cpp's server,
//! Ollama, ...) through the `async-openai` client.
//!
//! Retries are ours, not the client's: async-openai's default HTTP stack retries 429/5xx itself
//! (3 times, 100 ms doubling, no jitter), so the backend installs its own [`tower`] service over
//! the plain transport (`ReqwestService`) instead, and the two never multiply. The policy:
//!
//! - retried: 429 (except `insufficient_quota`, which no wait cures), every 5xx, connection
//!   errors and timeouts, at most [`OpenAiOptions::max_retries`] times;
//! - the wait: the server's `retry-after-ms` / `Retry-After` (seconds or an HTTP date) when it
//!   sends one (a wait above [`OpenAiOptions::max_retry_after`] ends the retries at once),
//!   otherwise exponential backoff `base * 2^n` capped at [`OpenAiOptions::retry_max_delay`],
//!   with "equal jitter" (half fixed, half uniform random);
//! - never retried: any other 4xx, or a reply that is not a chat completion;
//! - the outcome: [`LlmError::Unreachable`] when no answer came (refused, DNS, timeout),
//!   [`LlmError::Http`] with the last status and body otherwise.
//!
//! [`ChatResponse::latency`] is the whole exchange as the caller waited for it, retries and
//! waits included. Replies are read leniently (only `choices[0].message` must be there; no
//! `usage` counts as 0 tokens), because compatible servers differ in the fields they send.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::{HttpRequestFactory, ReqwestService};
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequest, ResponseFormat, ResponseFormatJsonSchema,
};
use async_openai::Client;
use reqwest_openai as reqwest;
use serde::Deserialize;
use tower::ServiceExt;

use super::{ChatRequest, ChatResponse, LlmBackend, LlmError, Role, Usage};

/// Environment variables read for the API key, in this order (the first non-empty one wins).
pub const API_KEY_VARS: [&str; 2] = ["AUTOAGENT_API_KEY", "OPENAI_API_KEY"];

/// Which request field carries [`ChatRequest::max_tokens`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxTokensField {
    /// `max_tokens`: understood by every compatible server; OpenAI's reasoning models reject it.
    #[default]
    MaxTokens,
    /// `max_completion_tokens`: OpenAI's current name (llama.cpp's server knows it too).
    MaxCompletionTokens,
}

/// Options of the [`OpenAi`] backend.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiOptions {
    /// The model name sent with each request (a local server may ignore it).
    pub model: String,
    /// API base URL up to and including `/v1`; `None`: async-openai's default (the
    /// `OPENAI_BASE_URL` environment variable, else the OpenAI API).
    pub base_url: Option<String>,
    /// API key; `None`: the first non-empty of [`API_KEY_VARS`], else none (a local server needs none).
    pub api_key: Option<String>,
    /// Limit on one attempt, from connecting to the last byte of the reply.
    pub timeout: Duration,
    /// Limit on establishing a connection (at most `timeout`).
    pub connect_timeout: Duration,
    /// Retries after the first attempt (so at most `max_retries + 1` requests).
    pub max_retries: u32,
    /// First backoff delay; doubles on each retry.
    pub retry_base_delay: Duration,
    /// Cap on a backoff delay.
    pub retry_max_delay: Duration,
    /// The longest server-requested wait (`Retry-After`) honoured; a longer one ends the retries.
    pub max_retry_after: Duration,
    /// Price in US dollars per million prompt tokens (default 0: unknown or free).
    pub usd_per_m_input: f64,
    /// Price in US dollars per million generated tokens (default 0: unknown or free).
    pub usd_per_m_output: f64,
    /// Which field carries the token limit.
    pub max_tokens_field: MaxTokensField,
}

impl OpenAiOptions {
    /// Defaults for `model`: 120 s per attempt, 10 s to connect, 3 retries from 500 ms up to
    /// 30 s, `Retry-After` honoured up to 60 s, prices 0.
    pub fn new(model: impl Into<String>) -> Self {
        OpenAiOptions {
            model: model.into(),
            base_url: None,
            api_key: None,
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            max_retries: 3,
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            usd_per_m_input: 0.0,
            usd_per_m_output: 0.0,
            max_tokens_field: MaxTokensField::MaxTokens,
        }
    }

    /// The cost of `usage` at these prices.
    pub fn cost_usd(&self, usage: Usage) -> f64 {
        (usage.prompt_tokens as f64 * self.usd_per_m_input + usage.completion_tokens as f64 * self.usd_per_m_output) / 1e6
    }
}

/// A chat backend talking to an OpenAI-compatible server.
pub struct OpenAi {
    client: Client<OpenAIConfig>,
    options: OpenAiOptions,
    base_url: String,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("options", &RedactedKey(&self.options))
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// Debug output of options without the API key.
struct RedactedKey<'a>(&'a OpenAiOptions);

impl std::fmt::Debug for RedactedKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut o = self.0.clone();
        o.api_key = o.api_key.map(|_| "<redacted>".into());
        o.fmt(f)
    }
}

impl OpenAi {
    /// A backend with `options`; fails on an unusable option (nothing is sent yet).
    pub fn new(options: OpenAiOptions) -> Result<Self, LlmError> {
        if options.model.trim().is_empty() {
            return Err(LlmError::Config("the OpenAI backend needs a model name".into()));
        }
        if options.timeout.is_zero() {
            return Err(LlmError::Config("the OpenAI backend's request timeout must be positive".into()));
        }
        let key = resolve_api_key(options.api_key.as_deref(), |name| std::env::var(name).ok());
        let mut config = OpenAIConfig::new().with_api_key(key);
        if let Some(url) = &options.base_url {
            config = config.with_api_base(url.trim_end_matches('/'));
        }
        let base_url = async_openai::config::Config::api_base(&config).to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(LlmError::Config(format!("the LLM base URL {base_url:?} is not an http(s) URL")));
        }

        // reqwest is built without a default TLS crypto provider; ours is ring. Another one
        // installed first (by the embedding program) is fine, hence the ignored result.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout.min(options.timeout))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {}", error_chain(&e))))?;
        let service = Retrying {
            inner: ReqwestService::new(http),
            policy: Arc::new(options.clone()),
        };
        let client = Client::with_config(config).with_http_service(service);
        Ok(OpenAi { client, options, base_url })
    }

    /// The options in use.
    pub fn options(&self) -> &OpenAiOptions {
        &self.options
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url)
    }

    #[allow(deprecated)] // `max_tokens` and `seed` are deprecated by OpenAI but what compatible servers read
    fn build_request(&self, request: &ChatRequest) -> CreateChatCompletionRequest {
        let messages = request
            .messages
            .iter()
            .map(|m| match m.role {
                Role::System => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage::from(m.content.as_str())),
                Role::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage::from(m.content.as_str())),
                Role::Assistant => ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage::from(m.content.as_str())),
            })
            .collect();
        let (max_tokens, max_completion_tokens) = match self.options.max_tokens_field {
            MaxTokensField::MaxTokens => (Some(request.max_tokens), None),
            MaxTokensField::MaxCompletionTokens => (None, Some(request.max_tokens)),
        };
        CreateChatCompletionRequest {
            messages,
            model: self.options.model.clone(),
            max_tokens,
            max_completion_tokens,
            temperature: Some(request.temperature),
            // The API's seed is a signed 64-bit integer: keep the low 63 bits.
            seed: request.seed.map(|s| (s & i64::MAX as u64) as i64),
            response_format: match &request.json_schema {
                Some(schema) => Some(ResponseFormat::JsonSchema {
                    json_schema: ResponseFormatJsonSchema {
                        description: None,
                        name: "reply".into(),
                        schema: schema.clone(),
                        strict: Some(true),
                    },
                }),
                None => request.json.then_some(ResponseFormat::JsonObject),
            },
            stream: Some(false),
            ..Default::default()
        }
    }
}

/// The key to send: `explicit` if given, else the first non-empty of [`API_KEY_VARS`] as `env`
/// reads them, else empty (a local server needs none).
fn resolve_api_key(explicit: Option<&str>, env: impl Fn(&str) -> Option<String>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| API_KEY_VARS.iter().find_map(|name| env(name).filter(|k| !k.is_empty())))
        .unwrap_or_default()
}

/// The parts of a chat completion we read; everything else a server adds is ignored.
#[derive(Debug, Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<CompletionUsage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CompletionUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[async_trait::async_trait]
impl LlmBackend for OpenAi {
    fn describe(&self) -> String {
        format!("openai:{}@{}", self.options.model, self.base_url)
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let body = self.build_request(request);
        let start = Instant::now();
        let reply: Result<Completion, OpenAIError> = self.client.chat().create_byot(body).await;
        let latency = start.elapsed();
        let reply = reply.map_err(|e| self.to_llm_error(e))?;
        let usage = reply
            .usage
            .map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            })
            .unwrap_or_default();
        let Some(choice) = reply.choices.into_iter().next() else {
            return Err(LlmError::Http {
                status: 200,
                body: "the reply has no choices".into(),
            });
        };
        Ok(ChatResponse {
            content: choice.message.content.unwrap_or_default(),
            usage,
            latency,
            model: reply.model.unwrap_or_else(|| self.options.model.clone()),
            finish_reason: choice.finish_reason,
            cost_usd: self.options.cost_usd(usage),
        })
    }
}

impl OpenAi {
    fn to_llm_error(&self, error: OpenAIError) -> LlmError {
        match error {
            OpenAIError::Boxed(boxed) => match boxed.downcast::<Failure>() {
                Ok(failure) => match *failure {
                    Failure::Status { status, body } => LlmError::Http { status, body },
                    Failure::NoAnswer { reason } => LlmError::Unreachable { url: self.endpoint(), reason },
                },
                Err(other) => LlmError::Unreachable {
                    url: self.endpoint(),
                    reason: other.to_string(),
                },
            },
            // Reading the body of a successful reply failed (our service retried the rest).
            OpenAIError::Reqwest(e) => LlmError::Unreachable {
                url: self.endpoint(),
                reason: error_chain(&e),
            },
            OpenAIError::JSONDeserialize(e, content) => LlmError::Http {
                status: 200,
                body: format!("not a chat completion ({e}): {}", shorten(&content)),
            },
            OpenAIError::InvalidArgument(message) => LlmError::Config(message),
            other => LlmError::Http {
                status: 200,
                body: shorten(&other.to_string()),
            },
        }
    }
}

/// How an exchange failed for good, carried through async-openai as a boxed error.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("{reason}")]
    NoAnswer { reason: String },
}

/// The transport with our retry policy around it.
#[derive(Clone)]
struct Retrying {
    inner: ReqwestService,
    policy: Arc<OpenAiOptions>,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

impl tower::Service<HttpRequestFactory> for Retrying {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.send(request).await })
    }
}

/// What one attempt came to.
enum Attempt {
    Done(reqwest::Response),
    /// Worth another try, after the server's wait if it named one.
    Retry {
        failure: Failure,
        retry_after: Option<Duration>,
    },
    Fail(Failure),
}

impl Retrying {
    async fn send(&self, request: HttpRequestFactory) -> Result<reqwest::Response, OpenAIError> {
        let policy = &*self.policy;
        let mut retry = 0u32;
        loop {
            let result = self.inner.clone().oneshot(request.clone()).await;
            let (failure, retry_after) = match classify(result, policy.timeout).await? {
                Attempt::Done(response) => return Ok(response),
                Attempt::Fail(failure) => return Err(boxed(failure)),
                Attempt::Retry { failure, retry_after } => (failure, retry_after),
            };
            let attempts = retry + 1;
            if retry >= policy.max_retries {
                return Err(boxed(after_attempts(failure, attempts)));
            }
            let delay = match retry_after {
                Some(wait) if wait > policy.max_retry_after => {
                    let note = format!(
                        "the server asks to wait {:.0} s, more than the {:.0} s allowed",
                        wait.as_secs_f64(),
                        policy.max_retry_after.as_secs_f64()
                    );
                    return Err(boxed(with_note(failure, &note)));
                }
                Some(wait) => wait,
                None => backoff(policy.retry_base_delay, policy.retry_max_delay, retry, rand::random::<f64>()),
            };
            tracing::info!(
                attempt = attempts,
                max_retries = policy.max_retries,
                ?delay,
                "LLM request failed ({failure}); retrying"
            );
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }
}

/// Sorts one attempt's outcome; errors that are not about the exchange (a request that cannot
/// be built) pass through unchanged.
async fn classify(result: Result<reqwest::Response, OpenAIError>, timeout: Duration) -> Result<Attempt, OpenAIError> {
    let response = match result {
        Ok(response) => response,
        Err(OpenAIError::Reqwest(e)) if e.is_timeout() => {
            return Ok(Attempt::Retry {
                failure: Failure::NoAnswer {
                    reason: format!("no answer within {:.1} s (timed out)", timeout.as_secs_f64()),
                },
                retry_after: None,
            })
        }
        Err(OpenAIError::Reqwest(e)) if e.is_connect() || e.is_request() => {
            return Ok(Attempt::Retry {
                failure: Failure::NoAnswer { reason: error_chain(&e) },
                retry_after: None,
            })
        }
        Err(other) => return Err(other),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(Attempt::Done(response));
    }
    let retry_after = retry_after(response.headers(), SystemTime::now());
    let body = match response.text().await {
        Ok(text) => shorten(&text),
        Err(e) => format!("<body unreadable: {}>", error_chain(&e)),
    };
    let retryable = status.is_server_error() || (status.as_u16() == 429 && !body.contains("insufficient_quota"));
    let failure = Failure::Status { status: status.as_u16(), body };
    Ok(if retryable {
        Attempt::Retry { failure, retry_after }
    } else {
        Attempt::Fail(failure)
    })
}

fn boxed(failure: Failure) -> OpenAIError {
    OpenAIError::Boxed(Box::new(failure))
}

fn after_attempts(failure: Failure, attempts: u32) -> Failure {
    if attempts > 1 {
        with_note(failure, &format!("after {attempts} attempts"))
    } else {
        failure
    }
}

/// Adds `note` to a failure's reason, or after a status failure's body.
fn with_note(failure: Failure, note: &str) -> Failure {
    match failure {
        Failure::NoAnswer { reason } => Failure::NoAnswer {
            reason: format!("{reason}; {note}"),
        },
        Failure::Status { status, body } => Failure::Status {
            status,
            body: format!("{body} ({note})"),
        },
    }
}

/// The wait before retry number `retry` (0-based): `base * 2^retry`, capped at `max`, of which
/// half is fixed and half scaled by `unit` (uniform in [0, 1)).
pub fn backoff(base: Duration, max: Duration, retry: u32, unit: f64) -> Duration {
    let full = base.saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX)).min(max);
    full / 2 + (full / 2).mul_f64(unit.clamp(0.0, 1.0))
}

/// The wait a server asks for: `retry-after-ms` (milliseconds), else `Retry-After` in seconds
/// or as an HTTP date (relative to `now`).
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let seconds = |s: &str| s.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0).map(Duration::from_secs_f64);
    if let Some(ms) = header("retry-after-ms")
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|x| x.is_finite() && *x >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header("retry-after")?;
    seconds(value).or_else(|| httpdate::parse_http_date(value).ok().map(|at| at.duration_since(now).unwrap_or(Duration::ZERO)))
}

/// An error with its causes, `outer: inner: innermost` (reqwest's own message hides the OS error).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// At most 500 characters of a body, for error messages.
fn shorten(text: &str) -> String {
    const LIMIT: usize = 500;
    let text = text.trim();
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn backoff_doubles_up_to_the_cap_with_half_jitter() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff(base, max, 0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(base, max, 0, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(base, max, 2, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(base, max, 3, 0.5), Duration::from_millis(600));
        assert_eq!(backoff(base, max, 10, 1.0), max);
        assert_eq!(backoff(base, max, 200, 1.0), max);
    }

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert_eq!(retry_after(&headers(&[]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "2")]), now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&headers(&[("retry-after", "0.25")]), now), Some(Duration::from_millis(250)));
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2"), ("retry-after-ms", "150")]), now),
            Some(Duration::from_millis(150))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(retry_after(&headers(&[("retry-after", &later)]), now), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(retry_after(&headers(&[("retry-after", &earlier)]), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")]), now), None);
    }

    #[test]
    fn api_key_from_options_then_autoagent_then_openai_variable() {
        let env = |vars: &'static [(&'static str, &'static str)]| move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let both = env(&[("AUTOAGENT_API_KEY", "a"), ("OPENAI_API_KEY", "o")]);
        assert_eq!(resolve_api_key(Some("x"), both), "x");
        assert_eq!(resolve_api_key(None, both), "a");
        assert_eq!(resolve_api_key(None, env(&[("AUTOAGENT_API_KEY", ""), ("OPENAI_API_KEY", "o")])), "o");
        assert_eq!(resolve_api_key(None, env(&[])), "");
    }

    #[test]
    fn cost_uses_per_million_prices() {
        let mut o = OpenAiOptions::new("m");
        let usage = Usage {
            prompt_tokens: 2_000,
            completion_tokens: 500,
        };
        assert_eq!(o.cost_usd(usage), 0.0);
        o.usd_per_m_input = 0.15;
        o.usd_per_m_output = 0.6;
        assert!((o.cost_usd(usage) - (0.0003 + 0.0003)).abs() < 1e-12);
    }

    #[test]
    fn shorten_cuts_long_bodies_on_char_boundaries() {
        assert_eq!(shorten("  short "), "short");
        let long = "é".repeat(600);
        let cut = shorten(&long);
        assert_eq!(cut.chars().count(), 503);
        assert!(cut.ends_with("..."));
    }

    #[test]
    fn bad_options_are_config_errors() {
        let e = OpenAi::new(OpenAiOptions::new(" ")).unwrap_err();
        assert!(matches!(e, LlmError::Config(_)), "{e}");
        let mut o = OpenAiOptions::new("m");
        o.base_url = Some("localhost:8080/v1".into());
        let e = OpenAi::new(o).unwrap_err();
        assert!(e.to_string().contains("not an http(s) URL"), "{e}");
    }

    #[test]
    fn requests_carry_json_seed_and_the_chosen_token_field() {
        let mut o = OpenAiOptions::new("m");
        o.base_url = Some("http://127.0.0.1:9/v1/".into());
        o.api_key = Some("k".into());
        let backend = OpenAi::new(o.clone()).unwrap();
        assert_eq!(backend.describe(), "openai:m@http://127.0.0.1:9/v1");
        assert!(!format!("{backend:?}").contains("\"k\""));
        let request = ChatRequest {
            messages: vec![super::super::Message::system("s"), super::super::Message::user("u")],
            max_tokens: 7,
            temperature: 0.0,
            seed: Some(u64::MAX),
            json: true,
            json_schema: None,
        };
        let body = serde_json::to_value(backend.build_request(&request)).unwrap();
        assert_eq!(body["max_tokens"], 7);
        assert!(body.get("max_completion_tokens").is_none());
        assert_eq!(body["seed"], i64::MAX);
        assert_eq!(body["response_format"]["type"], "json_object");
        assert_eq!(body["messages"][1]["role"], "user");
        o.max_tokens_field = MaxTokensField::MaxCompletionTokens;
        let body = serde_json::to_value(OpenAi::new(o).unwrap().build_request(&ChatRequest { json: false, ..request })).unwrap();
        assert_eq!(body["max_completion_tokens"], 7);
        assert!(body.get("max_tokens").is_none() && body.get("response_format").is_none());
    }
}
