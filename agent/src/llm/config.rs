//! Building a backend from the command line's LLM options, shared by `autoagent run` and
//! `autoagent bench search`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;

use super::local::{HubOptions, LocalModel, LocalOptions};
use super::openai::{OpenAi, OpenAiOptions};
use super::{LlmBackend, LlmError};

/// Which backend, and where its model is.
#[derive(Debug, Clone, Default)]
pub struct LlmConfig {
    /// `none`, `openai` or `local`.
    pub llm: String,
    /// Model name sent to the server (openai), or a hub repository `owner/name` (local).
    pub model: Option<String>,
    /// The GGUF file in the hub repository named by `model` (local).
    pub model_file: Option<String>,
    /// A GGUF file on disk (local).
    pub model_path: Option<PathBuf>,
    /// Base URL of the OpenAI-compatible server, up to `/v1` (openai).
    pub base_url: Option<String>,
}

/// Why no backend could be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The options do not name a usable backend.
    #[error("{0}")]
    Options(String),
    /// Building the backend failed (model file, hub download, client).
    #[error(transparent)]
    Llm(#[from] LlmError),
}

/// The backend `config` names (`None` for `none`), its local model on `device`.
///
/// A local model whose GGUF file is under [`DEQUANTIZE_BELOW`] gets its weights dequantized to
/// f32 at load (unless `CANDLE_DEQUANTIZE_ALL` is set either way): prompts of a thousand tokens
/// and more dominate the agent's requests, and candle's f32 matrix product processes them about
/// twice as fast as its quantized kernels on CPU (measured: SmolLM2-135M Q4_1, 1,630-token prompt,
/// 2 cores: 18 s against 32 s), for twice the memory of a small model. Call it before starting
/// threads: it may set that environment variable.
pub fn build_backend(config: &LlmConfig, device: &Device) -> Result<Option<Arc<dyn LlmBackend>>, ConfigError> {
    match config.llm.as_str() {
        "none" => Ok(None),
        "openai" => {
            let model = config
                .model
                .clone()
                .ok_or_else(|| ConfigError::Options("--llm openai needs --model NAME".into()))?;
            let mut o = OpenAiOptions::new(model);
            o.base_url = config.base_url.clone();
            Ok(Some(Arc::new(OpenAi::new(o)?)))
        }
        "local" => {
            let options = LocalOptions {
                device: device.clone(),
                ..LocalOptions::default()
            };
            let model = match (&config.model_path, &config.model, &config.model_file) {
                (Some(p), _, _) => {
                    dequantize_if_small(p);
                    LocalModel::load_with(p, &options)?
                }
                (None, Some(repo), Some(file)) => {
                    let hub = HubOptions {
                        progress: std::io::stderr().is_terminal(),
                        ..Default::default()
                    };
                    let path = super::local::fetch(repo, file, &hub)?;
                    dequantize_if_small(&path);
                    LocalModel::load_with(&path, &options)?
                }
                _ => {
                    return Err(ConfigError::Options(
                        "--llm local needs --model-path FILE.gguf, or --model OWNER/NAME with --model-file FILE.gguf".into(),
                    ))
                }
            };
            Ok(Some(Arc::new(model)))
        }
        other => Err(ConfigError::Options(format!("unknown LLM backend '{other}' (available: none, openai, local)"))),
    }
}

/// GGUF files smaller than this are dequantized to f32 at load.
pub const DEQUANTIZE_BELOW: u64 = 1 << 30;

fn dequantize_if_small(path: &std::path::Path) {
    let small = std::fs::metadata(path).map(|m| m.len() < DEQUANTIZE_BELOW).unwrap_or(false);
    if small && std::env::var_os("CANDLE_DEQUANTIZE_ALL").is_none() {
        tracing::info!("{} is small: dequantizing its weights to f32 for faster prompts", path.display());
        // Candle reads the variable once per thread when it loads quantized weights; the
        // command line calls this before it starts any thread.
        std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    }
}
