//! The LLM strategy: the propose prompt shows the task, the space, the best and the most recent
//! trials with their proxy scores and accuracies and the rejected proposals, and asks for `k`
//! candidates.
//!
//! A backend that constrains its decoding (the local model) fills a reply template whose every
//! cell edge is a choice among the five operations and every other parameter a choice among
//! values of its range, so each of its proposals is valid. Other backends answer in JSON (with
//! the space's JSON Schema as `response_format` where the server takes one); the reply is
//! parsed against the space, an unusable reply gets one repair round, and what is still invalid
//! becomes failed proposals that stay in the history.

use std::sync::Arc;

use serde::Serialize;

use crate::configspace::Space;
use crate::history::{FailedProposal, History, Origin, Proposal, Trial};
use crate::llm::{ChatRequest, ChatResponse, Exchange, LlmBackend, Message};
use crate::prompts::Prompts;
use crate::space::{configs_from_choices, constrained_template, describe, parse_reply, reply_schema, SpaceInfo};
use crate::strategy::{Asked, Strategy, StrategyError};

/// What the prompt says about the task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    /// One sentence.
    pub description: String,
    /// The name of the accuracy the agent sees.
    pub metric: String,
    /// A table's profile (rows, columns with kinds, missing shares, the target's distribution;
    /// raw rows only as the user allows); `None` for image tasks.
    pub profile: Option<String>,
}

/// Options of the LLM strategy.
#[derive(Debug, Clone)]
pub struct LlmOptions {
    /// Sampling temperature.
    pub temperature: f32,
    /// Upper bound on generated tokens per reply (the strategy asks for at most 60 per candidate
    /// plus 150).
    pub max_tokens: u32,
    /// Best trials shown in the prompt.
    pub show_best: usize,
    /// Most recent trials shown.
    pub show_recent: usize,
    /// Rejected proposals shown (the most recent).
    pub show_failed: usize,
    /// Seed of the first request (incremented per request).
    pub seed: u64,
    /// Send the reply's JSON Schema with JSON requests (a server that supports structured
    /// outputs then only produces valid architectures); off for servers that reject it.
    pub json_schema: bool,
}

impl Default for LlmOptions {
    fn default() -> Self {
        LlmOptions {
            temperature: 0.7,
            max_tokens: 1200,
            show_best: 10,
            show_recent: 10,
            show_failed: 10,
            seed: 0,
            json_schema: true,
        }
    }
}

/// The strategy.
pub struct LlmStrategy {
    backend: Arc<dyn LlmBackend>,
    prompts: Arc<Prompts>,
    task: TaskInfo,
    space: Space,
    info: SpaceInfo,
    options: LlmOptions,
    exchanges: usize,
}

#[derive(Serialize)]
struct ShownTrial {
    /// The candidate on one line ([`Space::line`]).
    arch: String,
    accuracy: Option<f64>,
    /// Epochs it trained (0 on a table).
    epochs: usize,
    proxies: std::collections::BTreeMap<String, Option<f64>>,
}

impl ShownTrial {
    fn of(t: &Trial, space: &Space) -> Self {
        ShownTrial {
            arch: space.line(&t.config),
            accuracy: t.accuracy,
            epochs: t.epochs,
            proxies: t.proxies.clone(),
        }
    }
}

impl LlmStrategy {
    /// The strategy on `backend`, proposing configurations of `space`. `first_exchange` numbers
    /// the exchanges after those a resumed run already recorded.
    pub fn new(backend: Arc<dyn LlmBackend>, prompts: Arc<Prompts>, task: TaskInfo, space: Space, options: LlmOptions, first_exchange: usize) -> Self {
        LlmStrategy {
            backend,
            prompts,
            task,
            info: describe(&space),
            space,
            options,
            exchanges: first_exchange,
        }
    }

    /// The rendered propose prompt (system, user) for `history`.
    pub fn render(&self, history: &History, k: usize, format: &str) -> Result<(String, String), StrategyError> {
        let failed: Vec<&FailedProposal> = history.failed.iter().rev().take(self.options.show_failed).rev().collect();
        let ctx = minijinja::context! {
            task => &self.task,
            space => &self.info,
            best => history.best(self.options.show_best).into_iter().map(|t| ShownTrial::of(t, &self.space)).collect::<Vec<_>>(),
            recent => history.recent(self.options.show_recent).iter().map(|t| ShownTrial::of(t, &self.space)).collect::<Vec<_>>(),
            evaluated => history.trials.len(),
            failed => failed,
            k => k,
            format => format,
        };
        Ok((self.prompts.render("system", &ctx)?, self.prompts.render("propose", &ctx)?))
    }

    fn request(&self, messages: Vec<Message>, json: bool, k: usize) -> ChatRequest {
        ChatRequest {
            messages,
            // About 40 tokens per candidate with its reason; small servers have small contexts.
            max_tokens: self.options.max_tokens.min(60 * k as u32 + 150),
            temperature: self.options.temperature,
            seed: Some(self.options.seed + self.exchanges as u64),
            json,
            json_schema: (json && self.options.json_schema).then(|| reply_schema(&self.space, k)),
        }
    }

    fn record(&mut self, kind: &str, request: ChatRequest, response: Option<ChatResponse>, error: Option<String>) -> Exchange {
        let ex = Exchange {
            index: self.exchanges,
            kind: kind.into(),
            request,
            template: None,
            response,
            choices: None,
            error,
        };
        self.exchanges += 1;
        ex
    }
}

#[async_trait::async_trait]
impl Strategy for LlmStrategy {
    fn name(&self) -> &'static str {
        "llm"
    }

    async fn ask(&mut self, history: &History, k: usize) -> Result<Asked, StrategyError> {
        let mut asked = Asked::default();
        // Constrained decoding first, where the backend has it.
        let (system, user) = self.render(history, k, "lines")?;
        let request = self.request(vec![Message::system(system), Message::user(user)], false, k);
        let evaluated: Vec<_> = history.trials.iter().map(|t| t.config.clone()).collect();
        let template = constrained_template(&self.space, k, &evaluated);
        match self.backend.complete_constrained(&request, &template).await {
            Ok(Some(reply)) => {
                let index = self.exchanges;
                let mut ex = self.record("constrained", request, Some(reply.response.clone()), None);
                ex.template = Some(template);
                ex.choices = Some(reply.choices.clone());
                asked.exchanges.push(ex);
                asked.proposals = configs_from_choices(&self.space, &reply.choices)
                    .into_iter()
                    .map(|config| Proposal {
                        config,
                        origin: Origin::Llm { exchange: index },
                    })
                    .collect();
                return Ok(asked);
            }
            Ok(None) => {}
            Err(e) => {
                let mut ex = self.record("constrained", request, None, Some(e.to_string()));
                ex.template = Some(template);
                asked.exchanges.push(ex);
                return Err(e.into());
            }
        }

        // Free text: JSON, parsed against the space, one repair round.
        let (system, user) = self.render(history, k, "json")?;
        let mut messages = vec![Message::system(system), Message::user(user)];
        let request = self.request(messages.clone(), true, k);
        let reply = match self.backend.complete(&request).await {
            Ok(r) => r,
            Err(e) => {
                asked.exchanges.push(self.record("propose", request, None, Some(e.to_string())));
                return Err(e.into());
            }
        };
        let index = self.exchanges;
        asked.exchanges.push(self.record("propose", request, Some(reply.clone()), None));
        let mut parsed = parse_reply(&reply.content, &self.space, Some(index));
        let mut source = index;
        if parsed.error.is_some() || parsed.configs.is_empty() {
            let reason = parsed.error.clone().unwrap_or_else(|| "no candidate was valid".into());
            let repair = self.prompts.render(
                "repair",
                minijinja::context! { error => &reason, failed => &parsed.failed, k => k, space => &self.info },
            )?;
            messages.push(Message::assistant(reply.content.clone()));
            messages.push(Message::user(repair));
            let request = self.request(messages, true, k);
            match self.backend.complete(&request).await {
                Ok(second) => {
                    source = self.exchanges;
                    asked.exchanges.push(self.record("repair", request, Some(second.clone()), None));
                    let first_failed = std::mem::take(&mut parsed.failed);
                    let first_error = parsed.error.take();
                    parsed = parse_reply(&second.content, &self.space, Some(source));
                    // The first reply's invalid items stay as signals.
                    parsed.failed.splice(0..0, first_failed);
                    if let (Some(e), true) = (first_error, parsed.configs.is_empty() && parsed.error.is_none()) {
                        parsed.failed.push(FailedProposal {
                            text: truncate(&reply.content),
                            reason: e,
                            exchange: Some(index),
                        });
                    }
                }
                Err(e) => {
                    asked.exchanges.push(self.record("repair", request, None, Some(e.to_string())));
                    return Err(e.into());
                }
            }
        }
        if let Some(e) = parsed.error {
            parsed.failed.push(FailedProposal {
                text: truncate(
                    &asked
                        .exchanges
                        .last()
                        .and_then(|x| x.response.as_ref())
                        .map(|r| r.content.clone())
                        .unwrap_or_default(),
                ),
                reason: e,
                exchange: Some(source),
            });
        }
        asked.failed = parsed.failed;
        asked.proposals = parsed
            .configs
            .into_iter()
            .map(|config| Proposal {
                config,
                origin: Origin::Llm { exchange: source },
            })
            .collect();
        Ok(asked)
    }

    fn tell(&mut self, _trial: &Trial) {}
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::scripted::Scripted;

    const GOOD: &str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|";

    fn strategy(replies: Vec<String>) -> (LlmStrategy, Arc<Scripted>) {
        let backend = Arc::new(Scripted::new(replies));
        let s = LlmStrategy::new(
            backend.clone(),
            Arc::new(Prompts::load(None).unwrap()),
            TaskInfo {
                description: "NB201 on CIFAR-10".into(),
                metric: "validation accuracy".into(),
                profile: None,
            },
            crate::configspace::cell_space(),
            LlmOptions::default(),
            0,
        );
        (s, backend)
    }

    #[tokio::test]
    async fn a_valid_json_reply_gives_candidates() {
        let (mut s, backend) = strategy(vec![format!("{{\"candidates\": [{{\"arch\": \"{GOOD}\"}}, \"|bad~0|\"]}}")]);
        let asked = s.ask(&History::default(), 2).await.unwrap();
        assert_eq!(asked.proposals.len(), 1);
        assert_eq!(asked.proposals[0].origin, Origin::Llm { exchange: 0 });
        assert_eq!(asked.failed.len(), 1);
        assert_eq!(asked.exchanges.len(), 1);
        assert!(backend.requests()[0].messages[1].content.contains("Propose 2 new architectures"));
    }

    #[tokio::test]
    async fn an_unusable_reply_gets_one_repair_round() {
        let (mut s, backend) = strategy(vec!["I think convolutions are good.".into(), format!("{{\"candidates\": [\"{GOOD}\"]}}")]);
        let asked = s.ask(&History::default(), 1).await.unwrap();
        assert_eq!(asked.proposals.len(), 1);
        assert_eq!(asked.proposals[0].origin, Origin::Llm { exchange: 1 });
        assert_eq!(asked.exchanges.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["propose", "repair"]);
        let repair = &backend.requests()[1];
        assert_eq!(repair.messages.len(), 4);
        assert!(repair.messages[3].content.contains("holds no JSON object"), "{}", repair.messages[3].content);
    }

    #[tokio::test]
    async fn a_reply_still_unusable_after_repair_becomes_failed_proposals() {
        let (mut s, _) = strategy(vec!["nope".into(), "{\"candidates\": [\"|x~0|+|y~0|z~1|+|a~0|b~1|c~2|\"]}".into()]);
        let asked = s.ask(&History::default(), 1).await.unwrap();
        assert!(asked.proposals.is_empty());
        assert!(asked.failed.iter().any(|f| f.reason.contains("unknown operation 'x'")));
        assert!(asked.failed.iter().any(|f| f.reason.contains("no JSON object")));
    }
}
