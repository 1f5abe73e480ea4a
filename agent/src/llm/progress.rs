//! A backend that says, every so often, that it is still waiting for the LLM: a local model's
//! call can take half a minute on CPU, and off a terminal nothing else shows the run is alive.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ChatRequest, ChatResponse, Constrained, ConstrainedResponse, LlmBackend, LlmError};

/// Where the waiting notes go (the CLI: a line on stderr).
pub type Say = Arc<dyn Fn(&str) + Send + Sync>;

/// `inner`, with a note through `say` every `every` while a call is outstanding.
pub struct Announced {
    inner: Arc<dyn LlmBackend>,
    every: Duration,
    say: Say,
}

impl Announced {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn LlmBackend>, every: Duration, say: Say) -> Self {
        Announced { inner, every, say }
    }

    async fn announce<T>(&self, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        tokio::pin!(call);
        loop {
            tokio::select! {
                out = &mut call => return out,
                _ = tick.tick() => (self.say)(&format!(
                    "waiting for the LLM ({}): {:.0} s",
                    self.inner.describe(),
                    started.elapsed().as_secs_f64()
                )),
            }
        }
    }
}

#[async_trait::async_trait]
impl LlmBackend for Announced {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.announce(self.inner.complete(request)).await
    }

    async fn complete_constrained(&self, request: &ChatRequest, template: &Constrained) -> Result<Option<ConstrainedResponse>, LlmError> {
        self.announce(self.inner.complete_constrained(request, template)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A backend that takes `delay` to fail.
    struct Slow(Duration);

    #[async_trait::async_trait]
    impl LlmBackend for Slow {
        fn describe(&self) -> String {
            "slow".into()
        }

        async fn complete(&self, _request: &ChatRequest) -> Result<ChatResponse, LlmError> {
            tokio::time::sleep(self.0).await;
            Err(LlmError::Exhausted(0))
        }
    }

    #[test]
    fn a_slow_call_is_announced_while_it_runs_and_answers_as_the_backend() {
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = said.clone();
        let backend = Announced::new(
            Arc::new(Slow(Duration::from_millis(350))),
            Duration::from_millis(100),
            Arc::new(move |s: &str| sink.lock().unwrap().push(s.to_string())),
        );
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let out = rt.block_on(backend.complete(&ChatRequest {
            messages: Vec::new(),
            max_tokens: 1,
            temperature: 0.0,
            seed: None,
            json: false,
            json_schema: None,
        }));
        assert!(matches!(out, Err(LlmError::Exhausted(0))));
        let said = said.lock().unwrap();
        assert!((2..=4).contains(&said.len()), "{said:?}");
        assert!(said[0].starts_with("waiting for the LLM (slow): "), "{said:?}");
    }
}
