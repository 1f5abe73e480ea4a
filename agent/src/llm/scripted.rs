//! A backend that answers from a fixed list of replies: for fast tests, and for replaying a
//! recorded run without calling the LLM.

use std::sync::Mutex;
use std::time::Duration;

use super::{ChatRequest, ChatResponse, LlmBackend, LlmError, Usage};

/// Answers the `i`-th request with the `i`-th reply; records every request it got.
#[derive(Debug, Default)]
pub struct Scripted {
    replies: Vec<String>,
    state: Mutex<(usize, Vec<ChatRequest>)>,
}

impl Scripted {
    /// A backend that will answer with `replies`, in order.
    pub fn new(replies: Vec<String>) -> Self {
        Scripted {
            replies,
            state: Mutex::new((0, Vec::new())),
        }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.state.lock().expect("scripted state").1.clone()
    }
}

#[async_trait::async_trait]
impl LlmBackend for Scripted {
    fn describe(&self) -> String {
        format!("scripted:{} replies", self.replies.len())
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let mut state = self.state.lock().expect("scripted state");
        let i = state.0;
        let Some(reply) = self.replies.get(i) else {
            return Err(LlmError::Exhausted(i));
        };
        state.0 += 1;
        state.1.push(request.clone());
        let words = |s: &str| s.split_whitespace().count() as u64;
        Ok(ChatResponse {
            content: reply.clone(),
            usage: Usage {
                prompt_tokens: request.messages.iter().map(|m| words(&m.content)).sum(),
                completion_tokens: words(reply),
            },
            latency: Duration::ZERO,
            model: "scripted".into(),
            finish_reason: Some("stop".into()),
            cost_usd: 0.0,
        })
    }
}
