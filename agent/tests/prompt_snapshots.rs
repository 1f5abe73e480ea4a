//! Snapshots of the rendered prompts (`cargo insta review` after a deliberate template change):
//! the propose prompt before any trial (line format, as the local model gets it) and with a
//! history of trials, proxy scores, a failed trial and rejected proposals (JSON format, as a
//! server gets it), and the repair prompt that follows an unusable reply.

use std::collections::BTreeMap;
use std::sync::Arc;

use autoagent_agent::history::{FailedProposal, History, Origin, Trial, TrialState};
use autoagent_agent::llm::scripted::Scripted;
use autoagent_agent::llm_strategy::{LlmOptions, LlmStrategy, TaskInfo};
use autoagent_agent::prompts::Prompts;
use autoagent_agent::strategy::Strategy;
use autoagent_evaluator::nb201::Arch;

/// The LLM strategy over `space` for `task`, answered by `backend`, showing the 3 best and the 2
/// most recent trials.
fn strategy_on(backend: &Arc<Scripted>, task: TaskInfo, space: autoagent_agent::configspace::Space) -> LlmStrategy {
    let options = LlmOptions {
        show_best: 3,
        show_recent: 2,
        ..LlmOptions::default()
    };
    LlmStrategy::new(backend.clone(), Arc::new(Prompts::load(None).unwrap()), task, space, options, 0)
}

fn strategy(replies: Vec<String>) -> (LlmStrategy, Arc<Scripted>) {
    let backend = Arc::new(Scripted::new(replies));
    let task = TaskInfo {
        description: "image classification on CIFAR-10 with a network built from one NAS-Bench-201 cell".into(),
        metric: "validation accuracy after 12 epochs".into(),
        profile: None,
    };
    (strategy_on(&backend, task, autoagent_agent::configspace::cell_space()), backend)
}

fn trial(id: usize, arch: &str, accuracy: Option<f64>, proxies: &[(&str, Option<f64>)]) -> Trial {
    Trial {
        id,
        round: id / 2,
        config: autoagent_agent::task::cell_config(Arch::parse(arch).unwrap()),
        origin: Origin::Random,
        proxies: proxies.iter().map(|(n, v)| (n.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        rank_score: None,
        accuracy,
        test_accuracy: accuracy.map(|a| a + 3.0),
        seconds: 1.0,
        state: if accuracy.is_some() { TrialState::Complete } else { TrialState::Failed },
        error: accuracy.is_none().then(|| "out of memory".to_string()),
        epochs: 0,
        rungs: Vec::new(),
        bracket: None,
    }
}

fn history() -> History {
    History {
        trials: vec![
            trial(
                0,
                "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
                Some(84.125),
                &[("naswot", Some(781.5)), ("synflow", Some(3.2e22))],
            ),
            trial(
                1,
                "|avg_pool_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|",
                Some(41.5),
                &[("naswot", Some(702.25)), ("synflow", None)],
            ),
            trial(
                2,
                "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|",
                None,
                &[],
            ),
            trial(
                3,
                "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
                Some(85.0),
                &[],
            ),
        ],
        failed: vec![FailedProposal {
            text: "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|".into(),
            reason: "unknown operation 'conv'".into(),
            exchange: Some(0),
        }],
    }
}

#[test]
fn propose_prompt_before_any_trial() {
    let (s, _) = strategy(vec![]);
    let (system, user) = s.render(&History::default(), 16, "lines").unwrap();
    insta::assert_snapshot!("system", system);
    insta::assert_snapshot!("propose_empty_lines", user);
}

#[test]
fn propose_prompt_with_history() {
    let (s, _) = strategy(vec![]);
    let (_, user) = s.render(&history(), 4, "json").unwrap();
    insta::assert_snapshot!("propose_history_json", user);
}

#[tokio::test]
async fn repair_prompt_after_an_unusable_reply() {
    let good = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|";
    let (mut s, backend) = strategy(vec![
        "{\"candidates\": [{\"arch\": \"|conv3~0|+|none~0|none~1|+|none~0|none~1|none~2|\"}]}".into(),
        format!("{{\"candidates\": [\"{good}\"]}}"),
    ]);
    let asked = s.ask(&history(), 2).await.unwrap();
    assert_eq!(asked.exchanges.len(), 2);
    let repair = backend.requests()[1].messages.last().unwrap().content.clone();
    insta::assert_snapshot!("repair", repair);
}

/// The vision pipeline's space: every parameter in the prompt, trials as configuration lines
/// with the epochs their accuracy is at, and a JSON reply of configurations read against it.
#[tokio::test]
async fn propose_prompt_over_the_vision_pipeline() {
    use autoagent_agent::configspace::{vision_space, Value};
    let space = vision_space();
    let backend = Arc::new(Scripted::new(vec![format!(
        "{{\"candidates\": [{{\"cell\": \"{}\", \"width\": 32, \"depth\": 3, \"lr\": 0.05, \"weight_decay\": 0.0005, \"batch\": 128, \"augment\": \"crop_flip_cutout\", \"cutout_length\": 8, \"label_smoothing\": 0.1, \"why\": \"wider\"}}]}}",
        autoagent_agent::configspace::MEDIAN_CELL
    )]));
    let task = TaskInfo {
        description: "image classification on CIFAR-10, training each candidate for 1 epoch(s) first, the most promising up to 27".into(),
        metric: "validation accuracy".into(),
        profile: None,
    };
    let mut s = strategy_on(&backend, task, space.clone());
    let mut h = history();
    for (i, t) in h.trials.iter_mut().enumerate() {
        let cell = t.config.get("cell").unwrap().clone();
        t.config = space.default_config().with("cell", cell).with("width", Value::Int([8, 16, 32, 64][i]));
        t.epochs = if i == 3 { 3 } else { 1 };
    }
    let (system, user) = s.render(&h, 2, "json").unwrap();
    insta::assert_snapshot!("system_vision", system);
    insta::assert_snapshot!("propose_vision_json", user);
    let asked = s.ask(&h, 1).await.unwrap();
    assert_eq!(asked.proposals.len(), 1, "{:?}", asked.failed);
    let c = &asked.proposals[0].config;
    assert_eq!(
        (c.int("width"), c.int("cutout_length"), c.float("label_smoothing")),
        (Some(32), Some(8), Some(0.1))
    );
    // The request carried the space's JSON Schema: every parameter, the cell's pattern.
    let schema = backend.requests()[0].json_schema.clone().expect("a schema with JSON requests");
    let item = &schema["properties"]["candidates"]["items"];
    assert_eq!(item["properties"]["width"]["enum"], serde_json::json!([8, 16, 32, 64]));
    assert!(item["properties"]["cell"]["pattern"].as_str().unwrap().starts_with('^'));
}

/// A tabular task: the system prompt speaks of pipelines, the propose prompt shows the data's
/// profile and scores to four decimals without epochs, and a JSON reply is read against the
/// pipeline space.
#[tokio::test]
async fn propose_prompt_over_the_tabular_space_shows_the_data_profile() {
    use autoagent_agent::configspace::{tabular_space, Value};
    let space = tabular_space();
    let reply = r#"{"candidates": [{"model": "linear", "encode": "onehot", "max_onehot": 16, "indicators": "no", "select": 100, "impute": "median", "scale": "standard", "alpha": 10.0, "why": "a regularised linear model"}]}"#;
    let backend = Arc::new(Scripted::new(vec![reply.to_string()]));
    let profile = "800 training rows; target 'target': binary, 2 classes ('1' 70.0 %, '2' 30.0 %)\n2 feature columns:\n- amount: numeric, min 250 median 2320 max 18424\n- purpose: categorical, 10 levels (most frequent 'radio/tv', 'car (new)', 'furniture'), 1.5 % missing";
    let task = TaskInfo {
        description: "binary on a table of 800 training rows and 2 feature columns (target 'target'), validated by 5-fold cross-validation".into(),
        metric: "roc_auc (higher is better)".into(),
        profile: Some(profile.into()),
    };
    let mut s = strategy_on(&backend, task, space.clone());
    let mut h = history();
    for (i, t) in h.trials.iter_mut().enumerate() {
        t.config = space.default_config().with("num_leaves", Value::Int([8, 16, 32, 64][i]));
        t.accuracy = t.accuracy.map(|a| a / 100.0 - 0.1);
        t.epochs = 1;
    }
    let (system, user) = s.render(&h, 2, "json").unwrap();
    insta::assert_snapshot!("system_tabular", system);
    insta::assert_snapshot!("propose_tabular_json", user);
    assert!(user.contains("Data profile:\n800 training rows"), "{user}");
    assert!(!user.contains("epoch(s)"), "{user}");
    let asked = s.ask(&h, 1).await.unwrap();
    assert_eq!(asked.proposals.len(), 1, "{:?}", asked.failed);
    assert_eq!(asked.proposals[0].config.float("alpha"), Some(10.0));
}
