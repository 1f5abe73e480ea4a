//! Prompt templates: minijinja, strict about undefined variables, embedded in the binary from
//! `prompts/` and overridable file by file with `--prompts DIR`.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The templates every run uses.
pub const NAMES: [&str; 3] = ["system", "propose", "repair"];

const EMBEDDED: [(&str, &str); 3] = [
    ("system", include_str!("../../prompts/system.j2")),
    ("propose", include_str!("../../prompts/propose.j2")),
    ("repair", include_str!("../../prompts/repair.j2")),
];

/// Errors of the prompt templates.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// A template file could not be read.
    #[error("cannot read prompt template {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A template does not parse or does not render (e.g. an undefined variable).
    #[error("prompt template `{name}`: {reason}")]
    Template {
        /// The template.
        name: String,
        /// minijinja's message.
        reason: String,
    },
}

/// The loaded templates.
pub struct Prompts {
    env: Environment<'static>,
}

impl Prompts {
    /// The embedded templates, each replaced by `DIR/NAME.j2` where `dir` has that file.
    pub fn load(dir: Option<&Path>) -> Result<Self, PromptError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(false);
        env.set_keep_trailing_newline(false);
        for (name, text) in EMBEDDED {
            let text = match dir.map(|d| d.join(format!("{name}.j2"))).filter(|p| p.is_file()) {
                Some(path) => std::fs::read_to_string(&path).map_err(|source| PromptError::Read {
                    path: path.display().to_string(),
                    source,
                })?,
                None => text.to_string(),
            };
            env.add_template_owned(name.to_string(), text).map_err(|e| PromptError::Template {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        }
        if let Some(d) = dir {
            if !d.is_dir() {
                return Err(PromptError::Read {
                    path: d.display().to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
                });
            }
        }
        Ok(Prompts { env })
    }

    /// Render template `name` with `ctx`.
    pub fn render<S: Serialize>(&self, name: &str, ctx: S) -> Result<String, PromptError> {
        let err = |e: minijinja::Error| PromptError::Template {
            name: name.to_string(),
            reason: format!("{e:#}").lines().next().unwrap_or_default().to_string(),
        };
        let t = self.env.get_template(name).map_err(err)?;
        t.render(ctx).map_err(err).map(|s| s.trim().to_string())
    }
}
