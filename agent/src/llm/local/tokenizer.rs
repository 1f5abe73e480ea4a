//! The tokenizer of a local model, built from the GGUF metadata (or read from a `tokenizer.json`
//! that overrides it).
//!
//! - `tokenizer.ggml.model = "gpt2"` (SmolLM2, ...): a byte-level BPE from the vocabulary and
//!   the merges, built with the `tokenizers` crate; the pre-tokenizer follows
//!   `tokenizer.ggml.pre` the way llama.cpp reads it (`smollm` and its kin: every digit alone,
//!   then GPT-2's regex; `gpt2`: GPT-2's regex; `llama3`-style: the Llama 3 regex).
//! - `tokenizer.ggml.model = "llama"` (Gemma, Llama 2, ...): SentencePiece-BPE, see [`super::spm`].
//!
//! Control tokens written in a text (`<|im_start|>`, `<start_of_turn>`) become their tokens only
//! when asked (`parse_special`): the rendered chat prompt is parsed, the template's fixed text and
//! options are not. Generation stops at the end-of-sequence token and at the end-of-turn tokens
//! the vocabulary has.

use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::meta;
use super::spm::Spm;
use crate::llm::LlmError;

/// Token texts that end a turn in the chat formats we know; each one the vocabulary has stops
/// generation.
const END_OF_TURN: &[&str] = &["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "</s>"];

/// The Llama 3 family's split regex (also used by several later BPE vocabularies).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What a vocabulary entry is (GGUF `tokenizer.ggml.token_type`, llama.cpp's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// Ordinary text.
    Normal,
    /// The unknown token.
    Unknown,
    /// A control token (BOS, EOS, turn markers): writes no text.
    Control,
    /// A piece the vocabulary's author added; always matched whole in text.
    UserDefined,
    /// Reserved.
    Unused,
    /// `<0xNN>`: one byte.
    Byte,
}

impl TokenKind {
    fn from_gguf(t: i64) -> Self {
        match t {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }
}

#[derive(Clone)]
enum Kind {
    /// A `tokenizers` pipeline, twice: `plain` reads control-token text as text, `special`
    /// turns it into the tokens.
    Hf {
        plain: Box<tokenizers::Tokenizer>,
        special: Box<tokenizers::Tokenizer>,
    },
    Spm(Box<Spm>),
}

/// Text to token ids and back, with the model's special tokens.
#[derive(Clone)]
pub struct Tokenizer {
    kind: Kind,
    source: &'static str,
    bos: Option<u32>,
    add_bos: bool,
    eos: Option<u32>,
    stop: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("bos", &self.bos)
            .field("add_bos", &self.add_bos)
            .field("eos", &self.eos)
            .field("stop", &self.stop)
            .finish()
    }
}

fn tok_err(what: &str, e: impl std::fmt::Display) -> LlmError {
    LlmError::Model(format!("tokenizer: {what}: {e}"))
}

impl Tokenizer {
    /// The tokenizer a GGUF file describes in its metadata.
    pub fn from_gguf(ct: &Content) -> Result<Self, LlmError> {
        let model = meta::string(ct, "tokenizer.ggml.model")?;
        let tokens = meta::strings(ct, "tokenizer.ggml.tokens")?;
        let kinds: Vec<TokenKind> = match meta::opt_ints(ct, "tokenizer.ggml.token_type")? {
            Some(t) if t.len() == tokens.len() => t.into_iter().map(TokenKind::from_gguf).collect(),
            Some(t) => return Err(tok_err("token types", format!("{} types for {} tokens", t.len(), tokens.len()))),
            None => vec![TokenKind::Normal; tokens.len()],
        };
        let unk = meta::opt_u32(ct, "tokenizer.ggml.unknown_token_id")?;
        let kind = match model {
            "gpt2" => {
                let merges = meta::strings(ct, "tokenizer.ggml.merges")?;
                let pre = meta::opt_string(ct, "tokenizer.ggml.pre")?.unwrap_or("gpt2");
                Self::byte_level_bpe(&tokens, &kinds, &merges, pre)?
            }
            "llama" => {
                let scores = match meta::opt_f32s(ct, "tokenizer.ggml.scores")? {
                    Some(s) if s.len() == tokens.len() => s,
                    Some(s) => return Err(tok_err("scores", format!("{} scores for {} tokens", s.len(), tokens.len()))),
                    None => return Err(tok_err("SentencePiece vocabulary", "no `tokenizer.ggml.scores`")),
                };
                let prefix = meta::opt_bool(ct, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
                Kind::Spm(Box::new(Spm::new(tokens, scores, kinds, unk, prefix)))
            }
            other => {
                return Err(LlmError::Model(format!(
                    "tokenizer model `{other}` is not supported (supported: gpt2, llama); pass a tokenizer.json"
                )))
            }
        };
        let default_bos = matches!(kind, Kind::Spm(_));
        let mut t = Tokenizer {
            kind,
            source: if default_bos { "gguf:spm" } else { "gguf:bpe" },
            bos: None,
            add_bos: false,
            eos: None,
            stop: Vec::new(),
        };
        t.read_specials(ct, default_bos)?;
        Ok(t)
    }

    /// A `tokenizer.json` (the model's ids must match), with the special tokens from the GGUF.
    pub fn from_json_file(path: &Path, ct: &Content) -> Result<Self, LlmError> {
        let plain = tokenizers::Tokenizer::from_file(path).map_err(|e| tok_err(&format!("cannot read {}", path.display()), e))?;
        let mut t = Tokenizer {
            kind: Self::both_modes(plain),
            source: "tokenizer.json",
            bos: None,
            add_bos: false,
            eos: None,
            stop: Vec::new(),
        };
        t.read_specials(ct, false)?;
        Ok(t)
    }

    fn both_modes(mut plain: tokenizers::Tokenizer) -> Kind {
        let mut special = plain.clone();
        special.set_encode_special_tokens(false);
        plain.set_encode_special_tokens(true);
        Kind::Hf {
            plain: Box::new(plain),
            special: Box::new(special),
        }
    }

    fn byte_level_bpe(tokens: &[String], kinds: &[TokenKind], merges: &[String], pre: &str) -> Result<Kind, LlmError> {
        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| tok_err("merges", format!("`{m}` is not two pieces")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| tok_err("BPE", e))?;
        let mut t = tokenizers::Tokenizer::new(bpe);
        // The byte-level step maps bytes to printable characters; with `use_regex` it also splits
        // with GPT-2's regex (`'s|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`).
        let gpt2 = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            "gpt2" | "default" => gpt2.into(),
            // llama.cpp: a `\p{N}` split, then GPT-2's regex.
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
                Sequence::new(vec![Digits::new(true).into(), gpt2.into()]).into()
            }
            "llama3" | "llama-bpe" | "smaug-bpe" | "falcon3" | "lfm2" => {
                let split =
                    Split::new(SplitPattern::Regex(LLAMA3_SPLIT.into()), SplitDelimiterBehavior::Isolated, false).map_err(|e| tok_err("pre-tokenizer", e))?;
                Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into()
            }
            other => {
                return Err(LlmError::Model(format!(
                    "tokenizer: the BPE pre-tokenizer `{other}` is not supported (supported: gpt2, smollm, llama3 and kin); pass a tokenizer.json"
                )))
            }
        };
        t.with_pre_tokenizer(Some(pre_tokenizer));
        t.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
        // Control tokens are cut out only when special text is parsed; user-defined ones always.
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(kinds)
            .filter_map(|(tok, kind)| match kind {
                TokenKind::Control => Some(AddedToken::from(tok.clone(), true)),
                TokenKind::UserDefined => Some(AddedToken::from(tok.clone(), false)),
                _ => None,
            })
            .collect();
        t.add_special_tokens(added).map_err(|e| tok_err("special tokens", e))?;
        Ok(Self::both_modes(t))
    }

    fn read_specials(&mut self, ct: &Content, default_add_bos: bool) -> Result<(), LlmError> {
        self.bos = meta::opt_u32(ct, "tokenizer.ggml.bos_token_id")?;
        self.eos = meta::opt_u32(ct, "tokenizer.ggml.eos_token_id")?;
        self.add_bos = meta::opt_bool(ct, "tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos) && self.bos.is_some();
        let mut stop: Vec<u32> = self.eos.into_iter().collect();
        stop.extend(meta::opt_u32(ct, "tokenizer.ggml.eot_token_id")?);
        stop.extend(meta::opt_u32(ct, "tokenizer.ggml.eom_token_id")?);
        stop.extend(END_OF_TURN.iter().filter_map(|t| self.token_id(t)));
        stop.sort_unstable();
        stop.dedup();
        self.stop = stop;
        Ok(())
    }

    /// Where the tokenizer came from: `gguf:bpe`, `gguf:spm` or `tokenizer.json`.
    pub fn source(&self) -> &str {
        self.source
    }

    /// The number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        match &self.kind {
            Kind::Hf { special, .. } => special.get_vocab_size(true),
            Kind::Spm(s) => s.len(),
        }
    }

    /// The id of a token, given as the vocabulary writes it (`<|im_end|>`, `▁the`, `Ġthe`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match &self.kind {
            Kind::Hf { special, .. } => special.token_to_id(token),
            Kind::Spm(s) => s.id(token),
        }
    }

    /// The vocabulary's text of a token id.
    pub fn token(&self, id: u32) -> Option<String> {
        match &self.kind {
            Kind::Hf { special, .. } => special.id_to_token(id),
            Kind::Spm(s) => s.piece(id).map(str::to_string),
        }
    }

    /// The beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Whether a prompt starts with the BOS token (GGUF `tokenizer.ggml.add_bos_token`).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The end-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Tokens that end generation (EOS and end-of-turn tokens), sorted.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop
    }

    /// Token ids of `text`, without BOS; control-token text (`<|im_start|>`) becomes the token
    /// only with `parse_special`.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, LlmError> {
        match &self.kind {
            Kind::Hf { plain, special } => {
                let t = if parse_special { special } else { plain };
                Ok(t.encode(text, false).map_err(|e| tok_err("encode", e))?.get_ids().to_vec())
            }
            Kind::Spm(s) => Ok(s.encode(text, parse_special)),
        }
    }

    /// Token ids of a whole prompt: BOS where the model wants one (unless the text already
    /// starts with it), control-token text parsed.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let ids = self.encode(text, true)?;
        match self.bos {
            Some(bos) if self.add_bos && ids.first() != Some(&bos) => Ok(std::iter::once(bos).chain(ids).collect()),
            _ => Ok(ids),
        }
    }

    /// The text of `ids`; control tokens write nothing.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        match &self.kind {
            Kind::Hf { special, .. } => special.decode(ids, true).map_err(|e| tok_err("decode", e)),
            Kind::Spm(s) => Ok(s.decode(ids)),
        }
    }
}
