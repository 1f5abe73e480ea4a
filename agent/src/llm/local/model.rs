//! The quantized transformer and its KV cache: tokens go in at the current position, the
//! next-token logits come out. The cache only grows; a new sequence starts at position 0.
//!
//! The state after the last prompt is kept: candle's KV cache tensors are immutable (each step
//! concatenates new ones), so a clone of the weights is a snapshot of the cache. A request with
//! exactly the same prompt (another sample, another seed) starts from it, with the same logits as a
//! fresh prefill, bit for bit.

use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{quantized_gemma3, quantized_llama};

use crate::llm::LlmError;

/// The model families we run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `general.architecture = "llama"` (SmolLM2, Llama, ...): `quantized_llama`.
    Llama,
    /// `general.architecture = "gemma3"` (Gemma 3): `quantized_gemma3`.
    Gemma3,
}

impl Architecture {
    /// The architecture a GGUF names, or a clear error.
    pub(crate) fn from_gguf(ct: &Content, file: &str) -> Result<Self, LlmError> {
        let name = super::meta::string(ct, "general.architecture").map_err(|e| LlmError::Model(format!("{file}: {e}")))?;
        match name {
            "llama" => Ok(Architecture::Llama),
            "gemma3" => Ok(Architecture::Gemma3),
            other => Err(LlmError::Model(format!(
                "{file}: architecture `{other}` is not supported (supported: llama, gemma3)"
            ))),
        }
    }

    /// The GGUF name.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Gemma3 => "gemma3",
        }
    }
}

#[derive(Clone)]
enum Weights {
    Llama(Box<quantized_llama::ModelWeights>),
    Gemma3(Box<quantized_gemma3::ModelWeights>),
}

/// Tokens fed to a llama model in one forward pass at most (bounds the attention matrix).
const LLAMA_CHUNK: usize = 512;

/// The shortest shared prompt head worth keeping in the cache.
const MIN_PREFIX: usize = 64;

/// The state right after a prompt.
struct Snapshot {
    prompt: Vec<u32>,
    weights: Weights,
    logits: Vec<f32>,
}

/// A loaded model with its position in the current sequence.
pub(crate) struct Model {
    weights: Weights,
    device: Device,
    context: usize,
    pos: usize,
    snapshot: Option<Snapshot>,
    /// The cache after the part of the prompt the last two prompts shared (Llama only).
    prefix: Option<Snapshot>,
}

fn run_err(e: candle_core::Error) -> LlmError {
    LlmError::Model(format!("forward pass failed: {e}"))
}

impl Model {
    /// Reads the weights of `arch` (the metadata already read from `reader`).
    pub(crate) fn load<R: std::io::Read + std::io::Seek>(
        arch: Architecture,
        ct: Content,
        reader: &mut R,
        device: &Device,
        file: &str,
    ) -> Result<Self, LlmError> {
        let prefix = arch.as_str();
        let declared = super::meta::opt_u32(&ct, &format!("{prefix}.context_length"))?.map(|c| c as usize);
        let load_err = |e: candle_core::Error| LlmError::Model(format!("{file}: cannot load the {prefix} weights: {e}"));
        let (weights, limit) = match arch {
            Architecture::Llama => (
                Weights::Llama(Box::new(quantized_llama::ModelWeights::from_gguf(ct, reader, device).map_err(load_err)?)),
                quantized_llama::MAX_SEQ_LEN,
            ),
            Architecture::Gemma3 => (
                Weights::Gemma3(Box::new(quantized_gemma3::ModelWeights::from_gguf(ct, reader, device).map_err(load_err)?)),
                quantized_gemma3::MAX_SEQ_LEN,
            ),
        };
        Ok(Model {
            weights,
            device: device.clone(),
            context: declared.map_or(limit, |c| c.min(limit)),
            pos: 0,
            snapshot: None,
            prefix: None,
        })
    }

    /// The longest sequence (prompt and reply) the model takes.
    pub(crate) fn context(&self) -> usize {
        self.context
    }

    /// Tokens in the cache.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Starts a new sequence (the next feed overwrites the cache).
    pub(crate) fn reset(&mut self) {
        self.pos = 0;
    }

    /// Starts a new sequence with `prompt` and returns the logits after it: from the snapshot
    /// when the last prompt was the same; else, on Llama, from the cached prefix when the prompt
    /// starts with it (the agent's prompts share their long head: task, space, rules), feeding
    /// only the rest. The first time two prompts share a head of at least [`MIN_PREFIX`] tokens,
    /// that head is fed alone and kept.
    pub(crate) fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, LlmError> {
        if let Some(s) = self.snapshot.as_ref().filter(|s| s.prompt == prompt) {
            self.weights = s.weights.clone();
            self.pos = prompt.len();
            return Ok(s.logits.clone());
        }
        let llama = matches!(self.weights, Weights::Llama(_));
        let cached = self
            .prefix
            .as_ref()
            .filter(|p| llama && p.prompt.len() < prompt.len() && prompt.starts_with(&p.prompt));
        let logits = if let Some(p) = cached {
            self.weights = p.weights.clone();
            self.pos = p.prompt.len();
            let rest = &prompt[self.pos..];
            self.feed(rest)?
        } else {
            let shared = self
                .snapshot
                .as_ref()
                .map_or(0, |s| s.prompt.iter().zip(prompt).take_while(|(a, b)| a == b).count());
            self.reset();
            if llama && shared >= MIN_PREFIX && shared < prompt.len() {
                let head = self.feed(&prompt[..shared])?;
                self.prefix = Some(Snapshot {
                    prompt: prompt[..shared].to_vec(),
                    weights: self.weights.clone(),
                    logits: head,
                });
                self.feed(&prompt[shared..])?
            } else {
                self.feed(prompt)?
            }
        };
        self.snapshot = Some(Snapshot {
            prompt: prompt.to_vec(),
            weights: self.weights.clone(),
            logits: logits.clone(),
        });
        Ok(logits)
    }

    /// Feeds `tokens` after those already in the cache and returns the logits for the token
    /// after the last one.
    pub(crate) fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, LlmError> {
        if tokens.is_empty() {
            return Err(LlmError::Model("nothing to feed the model".into()));
        }
        if self.pos + tokens.len() > self.context {
            return Err(LlmError::Model(format!(
                "the sequence needs {} tokens but the model's context holds {}",
                self.pos + tokens.len(),
                self.context
            )));
        }
        let mut logits = None;
        // candle's gemma3 builds its attention mask for a chunk only at position 0: later tokens
        // go in one at a time (a single query needs no mask). Llama takes chunks anywhere.
        let chunk = match (&self.weights, self.pos) {
            (Weights::Gemma3(_), 0) => tokens.len(),
            (Weights::Gemma3(_), _) => 1,
            (Weights::Llama(_), _) => LLAMA_CHUNK,
        };
        for part in tokens.chunks(chunk) {
            let input = Tensor::new(part, &self.device).and_then(|t| t.unsqueeze(0)).map_err(run_err)?;
            let out = match &mut self.weights {
                Weights::Llama(m) => m.forward(&input, self.pos),
                Weights::Gemma3(m) => m.forward(&input, self.pos),
            }
            .map_err(run_err)?;
            self.pos += part.len();
            logits = Some(out);
        }
        let logits = logits.expect("at least one chunk");
        logits
            .squeeze(0)
            .and_then(|l| l.to_dtype(DType::F32))
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(run_err)
    }
}
