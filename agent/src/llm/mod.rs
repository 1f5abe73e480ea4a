//! LLM backends behind one async trait, with token, latency and cost accounting.
//!
//! - [`LlmBackend::complete`]: a chat completion (free text; the caller parses and repairs it);
//! - [`LlmBackend::complete_constrained`]: generation forced through a [`Constrained`] template
//!   of fixed text and choice slots, each slot decided by the model's own next-token logits
//!   restricted to the tokens that continue one of the slot's options (with temperature), so the
//!   reply is valid by construction. Backends that cannot constrain their decoding (a remote
//!   server) return `Ok(None)` and the caller falls back to `complete` + parsing.
//!
//! Implementations: [`scripted::Scripted`] (replies from a list, for tests and replays), `local`
//! (a GGUF model run in-process with candle-transformers) and `openai` (any OpenAI-compatible
//! server).

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod config;
pub mod local;
pub mod openai;
pub mod progress;
pub mod replay;
pub mod scripted;

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The prompt.
    User,
    /// The model's earlier replies.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: Role::System,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// A chat completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Upper bound on generated tokens.
    pub max_tokens: u32,
    /// Sampling temperature (0 = greedy).
    pub temperature: f32,
    /// Sampling seed, where the backend supports one.
    pub seed: Option<u64>,
    /// Ask for a JSON object (OpenAI `response_format: json_object`), where supported.
    pub json: bool,
    /// Ask for a JSON object that follows this JSON Schema (OpenAI `response_format:
    /// json_schema`, strict; llama.cpp's server turns it into a grammar), where supported.
    /// Overrides `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<serde_json::Value>,
}

/// Tokens used by one exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The generated text.
    pub content: String,
    /// Tokens used.
    pub usage: Usage,
    /// Wall time of the exchange.
    pub latency: Duration,
    /// The model that answered (as the backend names it).
    pub model: String,
    /// Why generation stopped (`stop`, `length`, ...), when known.
    pub finish_reason: Option<String>,
    /// Cost in US dollars from the backend's per-token prices (0 for local models).
    pub cost_usd: f64,
}

/// One piece of a [`Constrained`] reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Segment {
    /// Text the reply must contain here, fed to the model as if it had generated it.
    Text(String),
    /// One of these options (non-empty, none a prefix of another), chosen by the model.
    Choice(Vec<String>),
}

/// A reply template: the model only decides the [`Segment::Choice`] slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constrained {
    /// The template, in order.
    pub segments: Vec<Segment>,
    /// Correct each choice for the model's prior over its options ("Calibrate Before Use", Zhao
    /// et al., ICML 2021): the first tokens of the options are drawn by their logits after the
    /// real prompt minus their logits after a content-free one (`N/A`) with the same text before
    /// the first choice. A small model otherwise picks the option that is most likely in any
    /// context (SmolLM2-135M: `none` in every slot), whatever the prompt shows.
    #[serde(default)]
    pub calibrate: bool,
    /// Keep the reply's items new: see [`Distinct`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<Distinct>,
}

/// The choice slots come in items of `group` consecutive slots (an architecture's edges); at the
/// last slot of an item, options that would complete a `forbidden` item (already evaluated) or
/// an item earlier in the same reply are not allowed, unless every option would. A small model
/// otherwise copies the architectures its prompt shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distinct {
    /// Slots per item.
    pub group: usize,
    /// Items (option indices, `group` each) the reply must not repeat.
    pub forbidden: Vec<Vec<usize>>,
}

/// A constrained reply: the chosen option index of every choice slot, in order, with the
/// assembled text and the accounting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConstrainedResponse {
    /// Index into each slot's options.
    pub choices: Vec<usize>,
    /// The whole reply text (segments and chosen options concatenated).
    pub response: ChatResponse,
}

/// Errors of LLM backends.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The server could not be reached (connection refused, DNS, timeout after retries).
    #[error("the LLM server at {url} is unreachable: {reason}")]
    Unreachable {
        /// Where we tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The server answered with an error status after the retries.
    #[error("the LLM server answered {status}: {body}")]
    Http {
        /// HTTP status.
        status: u16,
        /// Body (shortened).
        body: String,
    },
    /// A local model could not be loaded or run.
    #[error("local model: {0}")]
    Model(String),
    /// A configuration problem (missing key, bad option).
    #[error("{0}")]
    Config(String),
    /// A scripted backend ran out of replies.
    #[error("the scripted backend has no reply left (after {0})")]
    Exhausted(usize),
}

/// An LLM that answers chat requests.
#[async_trait::async_trait]
pub trait LlmBackend: Send + Sync {
    /// A short description for logs and reports (`openai:gpt-4o-mini@URL`, `local:FILE`).
    fn describe(&self) -> String;

    /// One chat completion.
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;

    /// A reply forced through `template` (see the module docs); `Ok(None)` when the backend
    /// cannot constrain its decoding.
    async fn complete_constrained(&self, request: &ChatRequest, template: &Constrained) -> Result<Option<ConstrainedResponse>, LlmError> {
        let _ = (request, template);
        Ok(None)
    }
}

/// One LLM exchange of a run, recorded verbatim (the run's `llm.jsonl`; `--replay` serves the
/// recorded replies back in order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// Number of the exchange in the run (0-based).
    pub index: usize,
    /// `propose`, `repair` or `constrained`.
    pub kind: String,
    /// The request.
    pub request: ChatRequest,
    /// The reply template of a constrained exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Constrained>,
    /// The reply, when there was one.
    pub response: Option<ChatResponse>,
    /// The chosen options of a constrained exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<usize>>,
    /// The backend's error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
