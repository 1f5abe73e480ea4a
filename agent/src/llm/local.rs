//! A GGUF model run in-process with candle-transformers (`--llm local`).
//!
//! - **Models**: `general.architecture` picks the network: `llama` (SmolLM2, Llama) runs with
//!   `quantized_llama`, `gemma3` (Gemma 3) with `quantized_gemma3`; anything else, a missing file
//!   or a file that is not GGUF is an [`LlmError::Model`] that says so. CPU by default; any candle
//!   [`Device`] (`cuda:0` behind the `cuda` feature) through [`LocalOptions`].
//! - **Tokenizer**: built from the GGUF metadata ([`Tokenizer`]): SmolLM2's byte-level BPE with
//!   the `tokenizers` crate, Gemma's SentencePiece-BPE by our own merge loop; a `tokenizer.json`
//!   overrides. The tests check both against llama.cpp's tokenization.
//! - **Prompt**: the GGUF's chat template rendered with minijinja (SmolLM2: ChatML), or plain
//!   text ending in an `Answer:` cue for a base model without one (Gemma 3 270M); see `chat`.
//! - **[`LlmBackend::complete`]**: temperature sampling (0 = greedy) with the request's seed
//!   (none: a fresh one), at most `max_tokens`, stopping at EOS or an end-of-turn token
//!   (`finish_reason` `stop`; `length` at the limit). Usage counts the prompt's tokens and every
//!   sampled token (the stop token included); cost 0. `json` is not enforced here (use
//!   [`LlmBackend::complete_constrained`] for a fixed form).
//! - **[`LlmBackend::complete_constrained`]**: the prompt, then the template: text segments are
//!   tokenized and fed as if generated; a choice slot is decoded token by token among the tokens
//!   that continue at least one option (a trie over the options' tokenizations), drawn from the
//!   model's own logits with the request's temperature, until one option is complete. Spaces that
//!   end the text before a slot are tokenized with the options (` none`, as a model writes it).
//!   The KV cache only grows: every token is decided once, nothing is rewound. The reply is valid
//!   by construction; usage counts the prompt and every token of the reply.
//! - **By name**: [`LocalModel::from_hub`] fetches `repo`/`file` into the hub cache (endpoint from
//!   `HF_ENDPOINT`) and loads it.
//!
//! One model answers one request at a time (a mutex around the weights and the cache); the async
//! methods run the work on tokio's blocking pool. The state after the last prompt is kept, so
//! sampling the same prompt again (another seed) skips its prefill, with identical results.

mod chat;
mod hub;
mod meta;
mod model;
mod sampling;
mod spm;
mod tokenizer;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::Device;

pub use hub::{fetch, HubOptions};
pub use model::Architecture;
pub use tokenizer::Tokenizer;

use chat::ChatFormat;
use model::Model;
use sampling::{OptionTrie, Sampler};

use super::{ChatRequest, ChatResponse, Constrained, ConstrainedResponse, Distinct, LlmBackend, LlmError, Message, Role, Segment, Usage};

/// How to load a local model.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Where the weights live and the model runs (default CPU).
    pub device: Device,
    /// A `tokenizer.json` to use instead of the tokenizer in the GGUF metadata.
    pub tokenizer_json: Option<PathBuf>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            device: Device::Cpu,
            tokenizer_json: None,
        }
    }
}

struct Inner {
    model: Mutex<Model>,
    tokenizer: Tokenizer,
    chat: ChatFormat,
    architecture: Architecture,
    name: String,
    path: PathBuf,
    context: usize,
}

/// A GGUF language model in this process; cheap to clone (shared weights).
#[derive(Clone)]
pub struct LocalModel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("path", &self.inner.path)
            .field("architecture", &self.inner.architecture)
            .field("tokenizer", &self.inner.tokenizer)
            .field("context", &self.inner.context)
            .finish()
    }
}

impl LocalModel {
    /// Loads a GGUF file on the CPU with the tokenizer from its metadata.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LlmError> {
        Self::load_with(path, &LocalOptions::default())
    }

    /// Loads a GGUF file with `options`.
    pub fn load_with(path: impl AsRef<Path>, options: &LocalOptions) -> Result<Self, LlmError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|e| LlmError::Model(format!("cannot open the model file {shown}: {e}")))?;
        let mut reader = BufReader::new(file);
        let ct = gguf_file::Content::read(&mut reader).map_err(|e| LlmError::Model(format!("{shown} is not a readable GGUF file: {e}")))?;
        let architecture = Architecture::from_gguf(&ct, &shown)?;
        let in_file = |e: LlmError| match e {
            LlmError::Model(m) => LlmError::Model(format!("{shown}: {m}")),
            e => e,
        };
        let tokenizer = match &options.tokenizer_json {
            Some(json) => Tokenizer::from_json_file(json, &ct),
            None => Tokenizer::from_gguf(&ct),
        }
        .map_err(in_file)?;
        let chat = match meta::opt_string(&ct, "tokenizer.chat_template").map_err(in_file)? {
            Some(source) => {
                let text = |id: Option<u32>| id.and_then(|i| tokenizer.token(i)).unwrap_or_default();
                ChatFormat::template(source, text(tokenizer.bos()), text(tokenizer.eos())).map_err(in_file)?
            }
            None => ChatFormat::Plain,
        };
        let model = Model::load(architecture, ct, &mut reader, &options.device, &shown)?;
        let name = path.file_name().map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned());
        let name = name.strip_suffix(".gguf").map(str::to_string).unwrap_or(name);
        Ok(LocalModel {
            inner: Arc::new(Inner {
                context: model.context(),
                model: Mutex::new(model),
                tokenizer,
                chat,
                architecture,
                name,
                path: path.to_path_buf(),
            }),
        })
    }

    /// Fetches `file` of the hub model repository `repo` (endpoint from `HF_ENDPOINT`, cache from
    /// `HF_HOME`) and loads it on the CPU.
    pub fn from_hub(repo: &str, file: &str) -> Result<Self, LlmError> {
        Self::from_hub_with(repo, file, &HubOptions::default(), &LocalOptions::default())
    }

    /// [`LocalModel::from_hub`] with explicit hub and load options.
    pub fn from_hub_with(repo: &str, file: &str, hub: &HubOptions, options: &LocalOptions) -> Result<Self, LlmError> {
        let path = fetch(repo, file, hub)?;
        Self::load_with(path, options)
    }

    /// The network family.
    pub fn architecture(&self) -> Architecture {
        self.inner.architecture
    }

    /// The model's name (its file name without `.gguf`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The GGUF file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    /// The longest sequence (prompt and reply) the model takes, in tokens.
    pub fn context_length(&self) -> usize {
        self.inner.context
    }

    /// Whether prompts come from the GGUF's chat template (else plain text with a cue).
    pub fn has_chat_template(&self) -> bool {
        !self.inner.chat.is_plain()
    }

    /// The prompt text for `messages`.
    pub fn format_prompt(&self, messages: &[Message]) -> Result<String, LlmError> {
        self.inner.chat.render(messages)
    }

    /// The prompt's token ids (BOS included where the model wants one).
    pub fn prompt_tokens(&self, messages: &[Message]) -> Result<Vec<u32>, LlmError> {
        self.inner.tokenizer.encode_prompt(&self.format_prompt(messages)?)
    }

    fn lock(&self) -> MutexGuard<'_, Model> {
        // A panic mid-pass leaves nothing to repair: every request starts a new sequence.
        self.inner.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next-token logits after `tokens`, computed from scratch (a new sequence): for scoring
    /// and for checking the incremental paths.
    pub fn next_token_logits(&self, tokens: &[u32]) -> Result<Vec<f32>, LlmError> {
        let mut model = self.lock();
        model.reset();
        model.feed(tokens)
    }

    /// The next-token logits after the prompt `tokens` as requests compute them: through the
    /// snapshot of the last prompt and the cached shared head (see the model's `start`).
    pub fn prompt_logits(&self, tokens: &[u32]) -> Result<Vec<f32>, LlmError> {
        self.lock().start(tokens)
    }

    /// Feeds `chunks` one after another into a new sequence, through the KV cache as generation
    /// does, and returns the next-token logits after each chunk.
    pub fn logits_after_chunks(&self, chunks: &[&[u32]]) -> Result<Vec<Vec<f32>>, LlmError> {
        let mut model = self.lock();
        model.reset();
        chunks.iter().map(|c| model.feed(c)).collect()
    }

    fn check_prompt(&self, prompt: &[u32]) -> Result<(), LlmError> {
        if prompt.is_empty() {
            return Err(LlmError::Config("the prompt is empty".into()));
        }
        if prompt.len() >= self.inner.context {
            return Err(LlmError::Config(format!(
                "the prompt has {} tokens; {} takes at most {} in all",
                prompt.len(),
                self.inner.name,
                self.inner.context
            )));
        }
        Ok(())
    }

    fn response(&self, content: String, usage: Usage, started: Instant, finish: &str) -> ChatResponse {
        ChatResponse {
            content,
            usage,
            latency: started.elapsed(),
            model: self.inner.name.clone(),
            finish_reason: Some(finish.into()),
            cost_usd: 0.0,
        }
    }

    /// [`LlmBackend::complete`], blocking the calling thread.
    pub fn generate(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let mut sampler = Sampler::new(request.temperature, request.seed)?;
        let tokenizer = &self.inner.tokenizer;
        let prompt = self.prompt_tokens(&request.messages)?;
        self.check_prompt(&prompt)?;
        let stop = tokenizer.stop_tokens();
        let mut model = self.lock();
        let mut logits = model.start(&prompt)?;
        let mut reply = Vec::new();
        let mut sampled = 0u64;
        let mut finish = "length";
        while reply.len() < request.max_tokens as usize {
            let token = sampler.pick(&logits);
            sampled += 1;
            if stop.binary_search(&token).is_ok() {
                finish = "stop";
                break;
            }
            reply.push(token);
            if reply.len() == request.max_tokens as usize || model.position() >= model.context() {
                break;
            }
            logits = model.feed(&[token])?;
        }
        drop(model);
        let mut content = tokenizer.decode(&reply)?;
        if self.inner.chat.is_plain() {
            content = content.trim_start().to_string();
        }
        let usage = Usage {
            prompt_tokens: prompt.len() as u64,
            completion_tokens: sampled,
        };
        Ok(self.response(content, usage, started, finish))
    }

    /// [`LlmBackend::complete_constrained`], blocking the calling thread.
    pub fn generate_constrained(&self, request: &ChatRequest, template: &Constrained) -> Result<ConstrainedResponse, LlmError> {
        let started = Instant::now();
        let plan = self.plan(template)?;
        let mut sampler = Sampler::new(request.temperature, request.seed)?;
        let prompt = self.prompt_tokens(&request.messages)?;
        self.check_prompt(&prompt)?;
        let reply_tokens: usize = plan.iter().map(Step::max_tokens).sum();
        if prompt.len() + reply_tokens > self.inner.context {
            return Err(LlmError::Config(format!(
                "the prompt ({} tokens) and the template (up to {reply_tokens}) exceed the context of {} tokens",
                prompt.len(),
                self.inner.context
            )));
        }
        let mut model = self.lock();
        let prior = if template.calibrate {
            Some(self.content_free_logits(&mut model, request, &plan)?)
        } else {
            None
        };
        let mut logits = model.start(&prompt)?;
        // Tokens decided but not yet fed: fed in one pass right before the next decision.
        let mut pending = Vec::new();
        let mut content = String::new();
        let mut choices = Vec::new();
        let mut completion = 0u64;
        for step in &plan {
            match step {
                Step::Text { text, tokens } => {
                    content.push_str(text);
                    pending.extend_from_slice(tokens);
                    completion += tokens.len() as u64;
                }
                Step::Choice { options, trie, .. } => {
                    let excluded = excluded_options(template.distinct.as_ref(), &choices, options.len());
                    let mut node = trie.root();
                    let chosen = loop {
                        if let Some(i) = trie.complete(node) {
                            break i;
                        }
                        let allowed = trie.allowed_except(node, &excluded);
                        let token = if allowed.len() == 1 {
                            allowed[0]
                        } else {
                            if !pending.is_empty() {
                                logits = model.feed(&pending)?;
                                pending.clear();
                            }
                            match (&prior, node == trie.root()) {
                                (Some(prior), true) => {
                                    let mut adjusted = logits.clone();
                                    for &t in &allowed {
                                        if let (Some(a), Some(p)) = (adjusted.get_mut(t as usize), prior.get(t as usize)) {
                                            *a -= p;
                                        }
                                    }
                                    sampler.pick_from(&adjusted, &allowed)
                                }
                                _ => sampler.pick_from(&logits, &allowed),
                            }
                        };
                        pending.push(token);
                        completion += 1;
                        node = trie.step(node, token);
                    };
                    content.push_str(&options[chosen]);
                    choices.push(chosen);
                }
            }
        }
        drop(model);
        let usage = Usage {
            prompt_tokens: prompt.len() as u64,
            completion_tokens: completion,
        };
        Ok(ConstrainedResponse {
            choices,
            response: self.response(content, usage, started, "stop"),
        })
    }

    /// The next-token logits after a content-free prompt (the request's system message, `N/A`
    /// as the user's) followed by the template's text before its first choice: the model's
    /// prior over the options, for calibrated choices.
    fn content_free_logits(&self, model: &mut Model, request: &ChatRequest, plan: &[Step]) -> Result<Vec<f32>, LlmError> {
        let mut messages: Vec<Message> = request.messages.iter().filter(|m| m.role == Role::System).cloned().collect();
        messages.push(Message::user("N/A"));
        let mut tokens = self.prompt_tokens(&messages)?;
        for step in plan {
            match step {
                Step::Text { tokens: t, .. } => tokens.extend_from_slice(t),
                Step::Choice { .. } => break,
            }
        }
        model.reset();
        model.feed(&tokens)
    }

    /// Checks a template and tokenizes its pieces. Spaces that end a text right before a choice
    /// move into the options' tokenization, so ` none` is one token where the vocabulary has it.
    fn plan(&self, template: &Constrained) -> Result<Vec<Step>, LlmError> {
        let tokenizer = &self.inner.tokenizer;
        let mut plan = Vec::with_capacity(template.segments.len());
        let mut carry = String::new();
        for (i, segment) in template.segments.iter().enumerate() {
            match segment {
                Segment::Text(text) => {
                    let before_choice = matches!(template.segments.get(i + 1), Some(Segment::Choice(_)));
                    let body = if before_choice { text.trim_end_matches(' ') } else { text.as_str() };
                    carry = text[body.len()..].to_string();
                    plan.push(Step::Text {
                        text: text.clone(),
                        tokens: tokenizer.encode(body, false)?,
                    });
                }
                Segment::Choice(options) => {
                    check_options(i, options)?;
                    let tokenized = options
                        .iter()
                        .map(|o| tokenizer.encode(&format!("{carry}{o}"), false))
                        .collect::<Result<Vec<_>, _>>()?;
                    let trie = OptionTrie::new(&tokenized).map_err(|e| LlmError::Config(format!("template segment {i}: {e}")))?;
                    plan.push(Step::Choice {
                        options: options.clone(),
                        trie,
                        longest: tokenized.iter().map(Vec::len).max().unwrap_or(0),
                    });
                    carry.clear();
                }
            }
        }
        Ok(plan)
    }
}

/// The options of the next choice slot that [`Distinct`] rules out, given the choices so far:
/// at the last slot of an item, those completing a forbidden item or an earlier item of the
/// reply (none when that would rule out all).
fn excluded_options(distinct: Option<&Distinct>, choices: &[usize], options: usize) -> Vec<usize> {
    let Some(d) = distinct.filter(|d| d.group > 0) else {
        return Vec::new();
    };
    if !(choices.len() + 1).is_multiple_of(d.group) {
        return Vec::new();
    }
    let start = choices.len() + 1 - d.group;
    let prefix = &choices[start..];
    let earlier = choices[..start].chunks_exact(d.group);
    let taken = |o: usize| {
        let done = |item: &[usize]| item.len() == d.group && item[..d.group - 1] == *prefix && item[d.group - 1] == o;
        d.forbidden.iter().any(|f| done(f)) || earlier.clone().any(done)
    };
    let excluded: Vec<usize> = (0..options).filter(|&o| taken(o)).collect();
    if excluded.len() == options {
        Vec::new()
    } else {
        excluded
    }
}

/// One tokenized template segment.
enum Step {
    Text { text: String, tokens: Vec<u32> },
    Choice { options: Vec<String>, trie: OptionTrie, longest: usize },
}

impl Step {
    fn max_tokens(&self) -> usize {
        match self {
            Step::Text { tokens, .. } => tokens.len(),
            Step::Choice { longest, .. } => *longest,
        }
    }
}

/// Options must be non-empty, distinct and none the prefix of another.
fn check_options(segment: usize, options: &[String]) -> Result<(), LlmError> {
    let bad = |why: String| Err(LlmError::Config(format!("template segment {segment}: {why}")));
    if options.is_empty() {
        return bad("a choice without options".into());
    }
    for (i, a) in options.iter().enumerate() {
        if a.is_empty() {
            return bad(format!("option {i} is empty"));
        }
        for (j, b) in options.iter().enumerate() {
            if i != j && b.starts_with(a.as_str()) {
                return bad(format!("option `{a}` is a prefix of option `{b}` (or equal to it)"));
            }
        }
    }
    Ok(())
}

/// Runs blocking model work off the async executor when there is one.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, LlmError> + Send + 'static) -> Result<T, LlmError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(work)
            .await
            .map_err(|e| LlmError::Model(format!("the generation task failed: {e}")))?,
        Err(_) => work(),
    }
}

#[async_trait::async_trait]
impl LlmBackend for LocalModel {
    fn describe(&self) -> String {
        format!("local:{}", self.inner.path.display())
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let (this, request) = (self.clone(), request.clone());
        blocking(move || this.generate(&request)).await
    }

    async fn complete_constrained(&self, request: &ChatRequest, template: &Constrained) -> Result<Option<ConstrainedResponse>, LlmError> {
        let (this, request, template) = (self.clone(), request.clone(), template.clone());
        blocking(move || this.generate_constrained(&request, &template).map(Some)).await
    }
}
