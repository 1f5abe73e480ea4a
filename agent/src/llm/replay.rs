//! Serves a recorded run's LLM exchanges back in order, so `autoagent run --replay RUN_DIR`
//! reproduces the run without calling the LLM. A request that differs from the recorded one
//! means the run diverged (other options, other code) and is an error. A resumed run
//! ([`Replay::then`]) is served its recorded exchanges first and then goes on with the live
//! backend.

use std::sync::{Arc, Mutex};

use super::{ChatRequest, ChatResponse, Constrained, ConstrainedResponse, Exchange, LlmBackend, LlmError};

/// The recorded exchanges of a run.
pub struct Replay {
    exchanges: Vec<Exchange>,
    next: Mutex<usize>,
    live: Option<Arc<dyn LlmBackend>>,
}

impl Replay {
    /// A backend replaying `exchanges` (in recorded order).
    pub fn new(exchanges: Vec<Exchange>) -> Self {
        Replay {
            exchanges,
            next: Mutex::new(0),
            live: None,
        }
    }

    /// Once the recorded exchanges are spent, ask `live` (resuming a run).
    pub fn then(mut self, live: Arc<dyn LlmBackend>) -> Self {
        self.live = Some(live);
        self
    }

    /// The live backend, once every recorded exchange has been served.
    fn live_now(&self) -> Option<&Arc<dyn LlmBackend>> {
        let next = *self.next.lock().expect("replay state");
        self.live.as_ref().filter(|_| next >= self.exchanges.len())
    }

    fn take(&self, request: &ChatRequest, constrained: bool) -> Result<Exchange, LlmError> {
        let mut next = self.next.lock().expect("replay state");
        let Some(ex) = self.exchanges.get(*next) else {
            return Err(LlmError::Exhausted(*next));
        };
        if ex.request != *request || ex.template.is_some() != constrained {
            return Err(LlmError::Config(format!(
                "replay diverged at exchange {}: the run asks something other than what was recorded",
                ex.index
            )));
        }
        *next += 1;
        Ok(ex.clone())
    }
}

fn recorded_failure(ex: &Exchange) -> LlmError {
    LlmError::Config(format!(
        "recorded exchange {} failed: {}",
        ex.index,
        ex.error.as_deref().unwrap_or("no reply was recorded")
    ))
}

#[async_trait::async_trait]
impl LlmBackend for Replay {
    fn describe(&self) -> String {
        match &self.live {
            Some(live) => format!("{} (resumed after {} recorded exchanges)", live.describe(), self.exchanges.len()),
            None => format!("replay:{} exchanges", self.exchanges.len()),
        }
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        if let Some(live) = self.live_now() {
            return live.complete(request).await;
        }
        let ex = self.take(request, false)?;
        ex.response.clone().ok_or_else(|| recorded_failure(&ex))
    }

    async fn complete_constrained(&self, request: &ChatRequest, template: &Constrained) -> Result<Option<ConstrainedResponse>, LlmError> {
        if let Some(live) = self.live_now() {
            return live.complete_constrained(request, template).await;
        }
        // The recorded backend could not constrain its decoding: it was asked in free text next.
        let next = *self.next.lock().expect("replay state");
        if self.exchanges.get(next).is_some_and(|ex| ex.template.is_none()) {
            return Ok(None);
        }
        let ex = self.take(request, true)?;
        if ex.template.as_ref() != Some(template) {
            return Err(LlmError::Config(format!("replay diverged at exchange {}: another reply template", ex.index)));
        }
        match (ex.response.clone(), ex.choices.clone()) {
            (Some(response), Some(choices)) => Ok(Some(ConstrainedResponse { choices, response })),
            _ => Err(recorded_failure(&ex)),
        }
    }
}
