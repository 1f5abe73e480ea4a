//! Chat messages to the prompt text a local model reads.
//!
//! - A GGUF with a chat template (`tokenizer.chat_template`, e.g. SmolLM2's ChatML) is rendered
//!   with minijinja the way Hugging Face's `apply_chat_template` does it: `messages` (role and
//!   content), `add_generation_prompt = true`, `bos_token`/`eos_token`, `raise_exception`, and
//!   Jinja's `trim_blocks`/`lstrip_blocks` on.
//! - A GGUF without one (a base model such as Gemma 3 270M) gets plain text: each message's
//!   content in order, separated by blank lines, earlier assistant replies after an `Answer:` cue,
//!   and a final `Answer:` cue the model continues. There is no instruction format to imitate, and a
//!   base model continues a document: a short cue keeps its reply next to the prompt, and the
//!   constrained templates force the exact form anyway. The reply's leading whitespace is dropped.

use minijinja::{context, Environment, Error, ErrorKind};

use crate::llm::{LlmError, Message, Role};

/// The cue that ends a plain-text prompt.
pub(crate) const ANSWER_CUE: &str = "Answer:";

/// How messages become a prompt.
#[derive(Debug)]
pub(crate) enum ChatFormat {
    /// A Jinja chat template from the GGUF.
    Template { env: Box<Environment<'static>>, bos: String, eos: String },
    /// Plain text with an answer cue (models without a template).
    Plain,
}

const NAME: &str = "chat_template";

impl ChatFormat {
    /// A template, checked for syntax now.
    pub(crate) fn template(source: &str, bos: String, eos: String) -> Result<Self, LlmError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| LlmError::Model(format!("the GGUF chat template does not parse: {e}")))?;
        Ok(ChatFormat::Template { env: Box::new(env), bos, eos })
    }

    /// Whether the reply follows a plain-text cue (and its leading whitespace is dropped).
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, ChatFormat::Plain)
    }

    /// The prompt text for `messages`, ending where the assistant's reply begins.
    pub(crate) fn render(&self, messages: &[Message]) -> Result<String, LlmError> {
        match self {
            ChatFormat::Template { env, bos, eos } => {
                let template = env.get_template(NAME).map_err(|e| LlmError::Model(e.to_string()))?;
                template
                    .render(context! {
                        messages => messages,
                        add_generation_prompt => true,
                        bos_token => bos,
                        eos_token => eos,
                    })
                    .map_err(|e| LlmError::Model(format!("the chat template failed: {e}")))
            }
            ChatFormat::Plain => {
                let mut out = String::new();
                for m in messages {
                    match m.role {
                        Role::System | Role::User => out.push_str(m.content.trim_end()),
                        Role::Assistant => {
                            out.push_str(ANSWER_CUE);
                            out.push(' ');
                            out.push_str(m.content.trim());
                        }
                    }
                    out.push_str("\n\n");
                }
                out.push_str(ANSWER_CUE);
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_format_ends_with_the_cue() {
        let p = ChatFormat::Plain
            .render(&[
                Message::system("Be brief."),
                Message::user("2+2?"),
                Message::assistant("4"),
                Message::user("3+3?"),
            ])
            .unwrap();
        assert_eq!(p, "Be brief.\n\n2+2?\n\nAnswer: 4\n\n3+3?\n\nAnswer:");
    }

    #[test]
    fn chatml_template_renders_with_generation_prompt() {
        let src = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}\
                   {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let f = ChatFormat::template(src, String::new(), String::new()).unwrap();
        let p = f.render(&[Message::system("S"), Message::user("U")]).unwrap();
        assert_eq!(p, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
        let bad = ChatFormat::template("{{ raise_exception('no') }}", String::new(), String::new()).unwrap();
        assert!(bad.render(&[]).unwrap_err().to_string().contains("no"));
    }
}
