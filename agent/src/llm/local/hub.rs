//! Model files fetched by name from a Hugging Face hub, into the hub's standard local cache
//! (`models--OWNER--NAME/blobs` + `snapshots/COMMIT/FILE`), with `hf-hub`'s blocking client.
//!
//! The endpoint comes from `HF_ENDPOINT` and the cache from `HF_HOME` (as `hf-hub` reads them),
//! unless [`HubOptions`] names them. A file already in the cache is used without a request.

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};

use crate::llm::LlmError;

/// Where and how to fetch.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// The hub's base URL (default: `HF_ENDPOINT`, else `hf-hub`'s default).
    pub endpoint: Option<String>,
    /// The cache directory (default: `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: Option<PathBuf>,
    /// A branch, tag or commit (default `main`).
    pub revision: Option<String>,
    /// A progress bar on stderr while downloading.
    pub progress: bool,
}

/// The local path of `file` in the model repository `repo` (`owner/name`), downloaded first if
/// the cache lacks it.
pub fn fetch(repo: &str, file: &str, options: &HubOptions) -> Result<PathBuf, LlmError> {
    if repo.trim().is_empty() || file.trim().is_empty() {
        return Err(LlmError::Config(format!(
            "a hub model needs a repository and a file name (got `{repo}` and `{file}`)"
        )));
    }
    let mut builder = ApiBuilder::from_env().with_progress(options.progress);
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
    }
    if let Some(dir) = &options.cache_dir {
        builder = builder.with_cache_dir(dir.clone());
    }
    let api = builder.build().map_err(|e| LlmError::Config(format!("hub client: {e}")))?;
    let revision = options.revision.clone().unwrap_or_else(|| "main".into());
    let handle = api.repo(Repo::with_revision(repo.to_string(), RepoType::Model, revision.clone()));
    let url = handle.url(file);
    handle
        .get(file)
        .map_err(|e| LlmError::Model(format!("cannot fetch `{file}` of `{repo}` at `{revision}` ({url}): {e}")))
}
