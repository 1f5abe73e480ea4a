//! The local GGUF backend on the real small models (SmolLM2-135M-Instruct, Gemma 3 270M).
//!
//! The models and llama.cpp's server (through the `xllamacpp` Python package) are installed by
//! `eval "$(scripts/setup-llm.sh)"` in the repository root, which sets AUTOAGENT_TEST_SMOLLM2,
//! AUTOAGENT_TEST_GEMMA3 and AUTOAGENT_TEST_PYTHON; without them these tests fail.
//!
//! About 6 minutes on 2 busy cores. candle's CPU thread pool spins at its barriers: on a machine
//! whose cores are taken by other work, `CANDLE_NUM_THREADS=1` decodes several times faster.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use autoagent_agent::llm::local::{fetch, Architecture, HubOptions, LocalModel, LocalOptions};
use autoagent_agent::llm::{ChatRequest, Constrained, Distinct, LlmBackend, LlmError, Message, Segment};

const SETUP: &str = "run `eval \"$(scripts/setup-llm.sh)\"` in the repository root first (it installs the test models and llama.cpp's server)";

fn env_file(var: &str) -> PathBuf {
    let value = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{var} is not set: {SETUP}"));
    let path = PathBuf::from(value);
    assert!(path.is_file(), "{var}={} is not a file: {SETUP}", path.display());
    path
}

fn load(var: &str) -> LocalModel {
    let path = env_file(var);
    let started = Instant::now();
    let model = LocalModel::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    eprintln!("[{}] loaded in {:.2} s", model.name(), started.elapsed().as_secs_f64());
    model
}

fn smollm2() -> &'static LocalModel {
    static M: OnceLock<LocalModel> = OnceLock::new();
    M.get_or_init(|| load("AUTOAGENT_TEST_SMOLLM2"))
}

fn gemma3() -> &'static LocalModel {
    static M: OnceLock<LocalModel> = OnceLock::new();
    M.get_or_init(|| load("AUTOAGENT_TEST_GEMMA3"))
}

fn request(messages: Vec<Message>, max_tokens: u32, temperature: f32, seed: u64) -> ChatRequest {
    ChatRequest {
        messages,
        max_tokens,
        temperature,
        seed: Some(seed),
        json: false,
        json_schema: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizers against llama.cpp

/// Texts that exercise pre-tokenization, digits, whitespace runs, bytes and special tokens.
const TEXTS: &[&str] = &[
    "Hello world!",
    "  leading spaces, and trailing  ",
    "Numbers: 12345 and 3.14159; dates 2024-06-01.",
    "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|none~2|",
    "don't, I'll, we've, they're, it's",
    "Unicode: naïve café, Ελληνικά, 日本語, emoji 😀👍🏽",
    "Tabs\tand\nnew\n\nlines\r\n\n\n\nend",
    "def f(x):\n    return x ** 2  # square",
    "{\"arch\": \"|none~0|\", \"score\": 0.93}",
    "   ",
    "",
];

/// llama.cpp's tokenization of `texts` (control-token text parsed, no BOS), from its server's
/// `/tokenize`, run through the xllamacpp package on a free loopback port and stopped at the end.
fn llama_cpp_tokenize(model: &Path, texts: &[String]) -> Vec<Vec<u32>> {
    const SCRIPT: &str = r#"
import json, os, socket, sys, time, urllib.request
import xllamacpp as xlc
texts = json.load(sys.stdin)
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
p = xlc.CommonParams()
p.model.path = sys.argv[1]
p.hostnames = ["127.0.0.1"]
p.port = port
p.n_ctx = 512
p.n_parallel = 1
p.cpuparams.n_threads = 1
p.cpuparams_batch.n_threads = 1
p.warmup = False
p.model_alias = {"test"}
srv = xlc.Server(p)
base = "http://127.0.0.1:%d" % port
http = urllib.request.build_opener(urllib.request.ProxyHandler({}))
deadline = time.time() + 240
while True:
    try:
        with http.open(base + "/health", timeout=5) as r:
            if r.status == 200:
                break
    except Exception:
        pass
    if time.time() > deadline:
        sys.exit("llama.cpp's server did not come up")
    time.sleep(0.2)
out = []
for t in texts:
    body = json.dumps({"content": t, "add_special": False}).encode()
    req = urllib.request.Request(base + "/tokenize", data=body, headers={"Content-Type": "application/json"})
    with http.open(req, timeout=60) as r:
        out.append(json.load(r)["tokens"])
sys.stdout.write(json.dumps(out))
sys.stdout.flush()
os._exit(0)
"#;
    let python = env_file("AUTOAGENT_TEST_PYTHON");
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}; {SETUP}", python.display()));
    let pid = child.id();
    child.stdin.take().unwrap().write_all(serde_json::to_string(texts).unwrap().as_bytes()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let output = match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(out) => out.expect("llama.cpp tokenizer process"),
        Err(_) => {
            // Stop the server process we started, by its id.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("llama.cpp's tokenizer took over 300 s");
        }
    };
    assert!(
        output.status.success(),
        "llama.cpp tokenizer failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("token lists from llama.cpp")
}

fn check_tokenizer_against_llama_cpp(model: &LocalModel, specials: &[&str]) {
    let tok = model.tokenizer();
    let mut texts: Vec<String> = TEXTS.iter().map(|t| t.to_string()).collect();
    texts.extend(specials.iter().map(|t| t.to_string()));
    // Round trip: plain text decodes back to itself, control-token text included (as text).
    for text in &texts {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(&tok.decode(&ids).unwrap(), text, "round trip of {text:?} through {ids:?}");
    }
    let started = Instant::now();
    let reference = llama_cpp_tokenize(model.path(), &texts);
    eprintln!(
        "[{}] llama.cpp tokenized {} texts in {:.1} s",
        model.name(),
        texts.len(),
        started.elapsed().as_secs_f64()
    );
    for (text, want) in texts.iter().zip(&reference) {
        let got = tok.encode(text, true).unwrap();
        let show = |ids: &[u32]| ids.iter().map(|&i| tok.token(i).unwrap_or_default()).collect::<Vec<_>>();
        assert_eq!(&got, want, "tokens of {text:?}: ours {:?}, llama.cpp {:?}", show(&got), show(want));
    }
}

#[test]
fn smollm2_tokenizer_matches_llama_cpp() {
    let model = smollm2();
    assert_eq!(model.architecture(), Architecture::Llama);
    assert_eq!(model.tokenizer().source(), "gguf:bpe");
    check_tokenizer_against_llama_cpp(model, &["<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"]);
}

#[test]
fn gemma3_tokenizer_matches_llama_cpp() {
    let model = gemma3();
    assert_eq!(model.architecture(), Architecture::Gemma3);
    assert_eq!(model.tokenizer().source(), "gguf:spm");
    check_tokenizer_against_llama_cpp(model, &["<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"]);
}

// ---------------------------------------------------------------------------------------------
// Prompt formats

#[test]
fn smollm2_prompt_is_its_chatml_template() {
    let model = smollm2();
    assert!(model.has_chat_template());
    let messages = [Message::system("S"), Message::user("U")];
    let prompt = model.format_prompt(&messages).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    );
    // Without a system message the template inserts SmolLM's own.
    assert!(model
        .format_prompt(&[Message::user("U")])
        .unwrap()
        .contains("You are a helpful AI assistant named SmolLM"));
    let tok = model.tokenizer();
    let ids = model.prompt_tokens(&messages).unwrap();
    assert!(!tok.add_bos(), "SmolLM2's GGUF asks for no BOS");
    assert_eq!(Some(ids[0]), tok.token_id("<|im_start|>"));
    for stop in ["<|im_end|>", "<|endoftext|>"] {
        assert!(tok.stop_tokens().contains(&tok.token_id(stop).unwrap()), "{stop} stops generation");
    }
}

#[test]
fn gemma3_prompt_is_plain_text_with_an_answer_cue() {
    let model = gemma3();
    assert!(!model.has_chat_template());
    let messages = [Message::system("S"), Message::user("U")];
    assert_eq!(model.format_prompt(&messages).unwrap(), "S\n\nU\n\nAnswer:");
    let tok = model.tokenizer();
    let ids = model.prompt_tokens(&messages).unwrap();
    assert_eq!(Some(ids[0]), tok.bos(), "Gemma's prompt starts with BOS");
    assert_eq!(ids.iter().filter(|&&i| Some(i) == tok.bos()).count(), 1);
    for stop in ["<eos>", "<end_of_turn>"] {
        assert!(tok.stop_tokens().contains(&tok.token_id(stop).unwrap()), "{stop} stops generation");
    }
}

// ---------------------------------------------------------------------------------------------
// Free completion

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_greedy_completion_stops() {
    let model = smollm2();
    let req = request(
        vec![
            Message::system("You are a concise assistant."),
            Message::user("What is the capital of France? Answer in one short sentence."),
        ],
        64,
        0.0,
        0,
    );
    let a = model.complete(&req).await.unwrap();
    eprintln!("[smollm2] greedy reply: {:?} ({:?})", a.content, a.usage);
    assert!(!a.content.trim().is_empty());
    assert_eq!(a.finish_reason.as_deref(), Some("stop"), "the reply ends on its own: {:?}", a.content);
    assert!(a.content.contains("Paris"), "{:?}", a.content);
    assert_eq!(a.usage.prompt_tokens, model.prompt_tokens(&req.messages).unwrap().len() as u64);
    assert!(a.usage.completion_tokens > 1 && a.usage.completion_tokens <= 64);
    assert_eq!(a.cost_usd, 0.0);
    assert_eq!(a.model, model.name());
    assert!(model.describe().starts_with("local:"));
    // Greedy is deterministic, whatever the seed.
    let b = model.complete(&ChatRequest { seed: Some(99), ..req.clone() }).await.unwrap();
    assert_eq!(a.content, b.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemma3_sampled_completion_replays_its_seed_and_respects_max_tokens() {
    let model = gemma3();
    let messages = vec![Message::user("Write one sentence about neural networks.")];
    let req = request(messages, 24, 1.0, 42);
    let a = model.complete(&req).await.unwrap();
    eprintln!("[gemma3] sampled reply: {:?} ({:?}, {:?})", a.content, a.usage, a.finish_reason);
    assert!(a.usage.completion_tokens <= 24);
    match a.finish_reason.as_deref() {
        Some("length") => assert_eq!(a.usage.completion_tokens, 24),
        Some("stop") => {}
        other => panic!("finish reason {other:?}"),
    }
    let again = model.complete(&req).await.unwrap();
    assert_eq!(a.content, again.content, "the same seed gives the same reply");
    let others: Vec<String> = [43, 44]
        .into_iter()
        .map(|seed| {
            model
                .generate(&ChatRequest {
                    seed: Some(seed),
                    ..req.clone()
                })
                .unwrap()
                .content
        })
        .collect();
    assert!(others.iter().any(|o| *o != a.content), "other seeds give other replies: {others:?}");
}

// ---------------------------------------------------------------------------------------------
// Constrained generation of NAS-Bench-201 cells

const OPS: [&str; 5] = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"];

/// `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` with the six operations as choice slots.
fn nb201_template() -> Constrained {
    let ops = || Segment::Choice(OPS.iter().map(|s| s.to_string()).collect());
    let text = |s: &str| Segment::Text(s.to_string());
    Constrained {
        segments: vec![
            text("|"),
            ops(),
            text("~0|+|"),
            ops(),
            text("~0|"),
            ops(),
            text("~1|+|"),
            ops(),
            text("~0|"),
            ops(),
            text("~1|"),
            ops(),
            text("~2|"),
        ],
        calibrate: false,
        distinct: None,
    }
}

/// A prompt like the agent's: the search space and two earlier trials. (Without examples SmolLM2
/// puts ~96 % of the options' mass on `none`, an ordinary English word.)
fn nb201_messages() -> Vec<Message> {
    vec![
        Message::system("You design cells for the NAS-Bench-201 search space. Reply with the cell only."),
        Message::user(
            "A cell has 6 edges; each takes one operation from none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3. \
             Two cells from earlier trials: |nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2| \
             (accuracy 91.2) and |skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|skip_connect~2| \
             (accuracy 89.5). Propose a new cell with higher accuracy.",
        ),
    ]
}

/// Parses an NB201 cell string into its six operations (None: not a valid cell).
fn parse_nb201(s: &str) -> Option<Vec<String>> {
    let nodes: Vec<&str> = s.strip_prefix('|')?.strip_suffix('|')?.split("|+|").collect();
    if nodes.len() != 3 {
        return None;
    }
    let mut ops = Vec::new();
    for (node, edges) in nodes.iter().enumerate() {
        let edges: Vec<&str> = edges.split('|').collect();
        if edges.len() != node + 1 {
            return None;
        }
        for (input, edge) in edges.iter().enumerate() {
            let (op, from) = edge.split_once('~')?;
            if from != input.to_string() || !OPS.contains(&op) {
                return None;
            }
            ops.push(op.to_string());
        }
    }
    Some(ops)
}

fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let total: f64 = e.iter().sum();
    e.into_iter().map(|x| x / total).collect()
}

/// How far (in nats of the reference probability) a greedy decision may fall below the best
/// branch. candle runs a single new token through other matmul kernels than a multi-token pass
/// (they quantize the activations differently), so the logits of the incremental decoder and of
/// a fresh pass differ by up to ~0.6 on these models; near ties may go either way.
const NEAR_TIE_NATS: f64 = 0.3;

/// Checks the greedy constrained reply against an independent computation: at every decision
/// the unconstrained next-token distribution from a fresh forward pass over the whole context (no
/// KV cache carried over) must rank the chosen branch first among the branches still open, up to
/// a near tie. The context follows the reply's own choices, so every slot is checked.
fn check_greedy_follows_the_logits(model: &LocalModel, messages: &[Message], template: &Constrained, choices: &[usize]) {
    let tok = model.tokenizer();
    let mut context = model.prompt_tokens(messages).unwrap();
    let mut slot = 0;
    let (mut decisions, mut near_ties) = (0, 0);
    for segment in &template.segments {
        match segment {
            Segment::Text(t) => context.extend(tok.encode(t, false).unwrap()),
            Segment::Choice(options) => {
                let tokens: Vec<Vec<u32>> = options.iter().map(|o| tok.encode(o, false).unwrap()).collect();
                let chosen = &tokens[choices[slot]];
                let mut alive: Vec<usize> = (0..options.len()).collect();
                for (k, &token) in chosen.iter().enumerate() {
                    let open: BTreeSet<u32> = alive.iter().map(|&i| tokens[i][k]).collect();
                    if open.len() > 1 {
                        let p = softmax(&model.next_token_logits(&context).unwrap());
                        let best = open.iter().copied().max_by(|&a, &b| p[a as usize].total_cmp(&p[b as usize])).unwrap();
                        let gap = (p[best as usize] / p[token as usize]).ln();
                        let shown: BTreeMap<String, f64> = open.iter().map(|&t| (tok.token(t).unwrap(), p[t as usize])).collect();
                        eprintln!(
                            "[{}] slot {slot}: chose {:?}; fresh-pass probabilities {shown:.4?}",
                            model.name(),
                            tok.token(token).unwrap()
                        );
                        assert!(gap <= NEAR_TIE_NATS, "slot {slot}: the chosen branch is {gap:.3} nats below the best one");
                        decisions += 1;
                        near_ties += usize::from(best != token);
                    }
                    context.push(token);
                    alive.retain(|&i| tokens[i][k] == token);
                }
                slot += 1;
            }
        }
    }
    eprintln!("[{}] {decisions} greedy decisions, {near_ties} near ties decided the other way", model.name());
    assert!(decisions >= 6, "every slot is a decision: {decisions}");
}

fn check_constrained_nb201(model: &LocalModel) {
    let template = nb201_template();
    let messages = nb201_messages();
    let started = Instant::now();
    let mut archs = Vec::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..10 {
        let r = model.generate_constrained(&request(messages.clone(), 64, 1.0, seed), &template).unwrap();
        let ops = parse_nb201(&r.response.content).unwrap_or_else(|| panic!("invalid cell {:?}", r.response.content));
        assert_eq!(r.choices.len(), 6);
        let by_index: Vec<String> = r.choices.iter().map(|&c| OPS[c].to_string()).collect();
        assert_eq!(ops, by_index, "choices match the text");
        assert_eq!(r.response.finish_reason.as_deref(), Some("stop"));
        assert_eq!(r.response.usage.prompt_tokens, model.prompt_tokens(&messages).unwrap().len() as u64);
        // Every token of the reply counts: the fixed text's and the chosen options'.
        let tok = model.tokenizer();
        let reply_tokens: usize = template
            .segments
            .iter()
            .filter_map(|s| match s {
                Segment::Text(t) => Some(tok.encode(t, false).unwrap().len()),
                Segment::Choice(_) => None,
            })
            .chain(r.choices.iter().map(|&c| tok.encode(OPS[c], false).unwrap().len()))
            .sum();
        assert_eq!(r.response.usage.completion_tokens, reply_tokens as u64);
        for op in ops {
            *counts.entry(op).or_default() += 1;
        }
        archs.push(r.response.content);
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "[{}] 10 constrained samples at temperature 1 in {elapsed:.1} s: {archs:#?}\nops {counts:?}",
        model.name()
    );
    let distinct: BTreeSet<&String> = archs.iter().collect();
    assert!(distinct.len() >= 3, "temperature 1 gives different cells: {archs:?}");
    assert!(counts.len() >= 3, "several operations are chosen: {counts:?}");

    // A seed replays its reply.
    let again = model.generate_constrained(&request(messages.clone(), 64, 1.0, 3), &template).unwrap();
    assert_eq!(again.response.content, archs[3]);

    // Temperature 0: every slot takes the option the model itself ranks first.
    let greedy = model.generate_constrained(&request(messages.clone(), 64, 0.0, 0), &template).unwrap();
    eprintln!("[{}] greedy cell {}", model.name(), greedy.response.content);
    check_greedy_follows_the_logits(model, &messages, &template, &greedy.choices);
}

#[test]
fn smollm2_constrained_nb201_cells_are_valid_reproducible_and_follow_the_logits() {
    check_constrained_nb201(smollm2());
}

#[test]
fn gemma3_constrained_nb201_cells_are_valid_reproducible_and_follow_the_logits() {
    check_constrained_nb201(gemma3());
}

/// Distinct items: greedy decoding would write the same cell three times; with the constraint the
/// three cells differ, and none is the forbidden one (the cell greedy decoding picks first).
#[test]
fn smollm2_distinct_items_never_repeat() {
    let model = smollm2();
    let messages = nb201_messages();
    let three = |distinct: Option<Distinct>| {
        let once = nb201_template();
        let mut segments = Vec::new();
        for i in 0..3 {
            if i > 0 {
                segments.push(Segment::Text("\n".into()));
            }
            segments.extend(once.segments.iter().cloned());
        }
        let t = Constrained {
            segments,
            calibrate: true,
            distinct,
        };
        let r = model.generate_constrained(&request(messages.clone(), 200, 0.0, 0), &t).unwrap();
        r.choices.chunks(6).map(<[usize]>::to_vec).collect::<Vec<_>>()
    };
    let plain = three(None);
    assert_eq!(plain[0], plain[1], "greedy repeats itself: {plain:?}");
    let forbidden = plain[0].clone();
    let items = three(Some(Distinct {
        group: 6,
        forbidden: vec![forbidden.clone()],
    }));
    eprintln!("greedy {plain:?}; distinct {items:?}");
    assert!(!items.contains(&forbidden), "{items:?}");
    assert!(items[0] != items[1] && items[1] != items[2] && items[0] != items[2], "{items:?}");
    // Only the last edge of an item is steered: the first five follow the model.
    assert_eq!(items[0][..5], forbidden[..5]);
}

/// A prompt that shares its head with the previous one is computed from the cached head; its
/// logits match a fresh pass over the whole prompt.
#[test]
fn smollm2_reuses_the_shared_prompt_head() {
    let model = smollm2();
    let messages = nb201_messages();
    let mut a = model.prompt_tokens(&messages).unwrap();
    let head = a.len() - 12;
    let b: Vec<u32> = a[..head]
        .iter()
        .copied()
        .chain(model.tokenizer().encode(" Propose two cells instead, please.", false).unwrap())
        .collect();
    let c: Vec<u32> = a[..head]
        .iter()
        .copied()
        .chain(model.tokenizer().encode(" Which operation is cheapest?", false).unwrap())
        .collect();
    // a, then b (shares `head` tokens with a: that head is fed alone and kept), then c (starts
    // from the kept head).
    model.prompt_logits(&a).unwrap();
    for p in [&b, &c] {
        let cached = model.prompt_logits(p).unwrap();
        let fresh = model.next_token_logits(p).unwrap();
        let worst = cached.iter().zip(&fresh).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let top = |l: &[f32]| (0..l.len()).max_by(|&i, &j| l[i].total_cmp(&l[j])).unwrap();
        assert_eq!(top(&cached), top(&fresh));
        assert!(worst < 0.3, "logits from the cached head differ by up to {worst}");
    }
    a.clear();
}

/// Calibrated choices: the first slot's greedy pick is the option whose first token has the
/// largest logit after the prompt minus its logit after the content-free prompt (computed here
/// independently, by fresh passes), and sampling moves SmolLM2 off `none`, the option it prefers
/// in any context.
#[test]
fn smollm2_calibrated_choices_correct_the_prior() {
    let model = smollm2();
    let tok = model.tokenizer();
    let messages = nb201_messages();
    let calibrated = Constrained {
        calibrate: true,
        ..nb201_template()
    };
    let greedy = model.generate_constrained(&request(messages.clone(), 64, 0.0, 0), &calibrated).unwrap();
    let mut real = model.prompt_tokens(&messages).unwrap();
    real.extend(tok.encode("|", false).unwrap());
    let mut free = model.prompt_tokens(&[messages[0].clone(), Message::user("N/A")]).unwrap();
    free.extend(tok.encode("|", false).unwrap());
    let (lr, lf) = (model.next_token_logits(&real).unwrap(), model.next_token_logits(&free).unwrap());
    let first: BTreeSet<u32> = OPS.iter().map(|o| tok.encode(o, false).unwrap()[0]).collect();
    let adjusted: BTreeMap<String, f32> = first.iter().map(|&t| (tok.token(t).unwrap(), lr[t as usize] - lf[t as usize])).collect();
    let best = adjusted.iter().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0.clone();
    let chosen = tok.encode(OPS[greedy.choices[0]], false).unwrap()[0];
    eprintln!("calibrated first-token logits {adjusted:?}; greedy chose {}", OPS[greedy.choices[0]]);
    let gap = adjusted[&best] - adjusted[&tok.token(chosen).unwrap()];
    assert!(gap <= NEAR_TIE_NATS as f32, "the calibrated pick is {gap:.3} below {best}");

    let none_share = |template: &Constrained| {
        let mut none = 0;
        for seed in 0..8 {
            let r = model.generate_constrained(&request(messages.clone(), 64, 0.7, seed), template).unwrap();
            assert!(parse_nb201(&r.response.content).is_some(), "{}", r.response.content);
            none += r.choices.iter().filter(|&&c| c == 0).count();
        }
        none as f64 / 48.0
    };
    let (plain, corrected) = (none_share(&nb201_template()), none_share(&calibrated));
    eprintln!("share of `none` over 8 cells at temperature 0.7: {plain:.2} plain, {corrected:.2} calibrated");
    assert!(corrected + 0.2 < plain, "calibration lowers the share of none: {plain:.2} -> {corrected:.2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constrained_templates_are_checked_and_spaces_join_the_options() {
    let model = smollm2();
    let req = request(vec![Message::user("Pick a colour.")], 16, 0.0, 0);
    let bad = Constrained {
        segments: vec![Segment::Choice(vec!["red".into(), "redder".into()])],
        calibrate: false,
        distinct: None,
    };
    let err = model.complete_constrained(&req, &bad).await.unwrap_err();
    assert!(matches!(err, LlmError::Config(_)), "{err}");
    assert!(err.to_string().contains("prefix"), "{err}");
    let empty = Constrained {
        segments: vec![Segment::Choice(vec![])],
        calibrate: false,
        distinct: None,
    };
    assert!(matches!(model.complete_constrained(&req, &empty).await, Err(LlmError::Config(_))));
    // "Colour: " + " red": the option is fed as the single token " red" after "Colour:".
    let t = Constrained {
        segments: vec![
            Segment::Text("Colour: ".into()),
            Segment::Choice(vec!["red".into(), "green".into(), "blue".into()]),
            Segment::Text(".".into()),
        ],
        calibrate: false,
        distinct: None,
    };
    let r = model.complete_constrained(&req, &t).await.unwrap().expect("the local backend constrains");
    let chosen = ["red", "green", "blue"][r.choices[0]];
    assert_eq!(r.response.content, format!("Colour: {chosen}."));
    let tok = model.tokenizer();
    assert_eq!(tok.encode(" red", false).unwrap(), vec![tok.token_id("Ġred").unwrap()]);
}

// ---------------------------------------------------------------------------------------------
// Loading errors

fn write_gguf(path: &Path, metadata: &[(&str, candle_core::quantized::gguf_file::Value)]) {
    let mut f = std::fs::File::create(path).unwrap();
    let md: Vec<(&str, &candle_core::quantized::gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    candle_core::quantized::gguf_file::write(&mut f, &md, &[]).unwrap();
}

fn load_error(path: &Path) -> String {
    match LocalModel::load(path) {
        Err(e @ LlmError::Model(_)) => e.to_string(),
        Err(e) => panic!("expected a model error, got {e}"),
        Ok(_) => panic!("{} loaded", path.display()),
    }
}

#[test]
fn bad_model_files_are_clear_errors() {
    use candle_core::quantized::gguf_file::Value;
    let dir = tempfile::tempdir().unwrap();
    let missing = load_error(&dir.path().join("absent.gguf"));
    assert!(missing.contains("cannot open the model file") && missing.contains("absent.gguf"), "{missing}");

    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"this is not a GGUF file at all").unwrap();
    assert!(load_error(&junk).contains("is not a readable GGUF file"), "{}", load_error(&junk));

    let gpt2 = dir.path().join("gpt2.gguf");
    write_gguf(&gpt2, &[("general.architecture", Value::String("gpt2".into()))]);
    let e = load_error(&gpt2);
    assert!(e.contains("architecture `gpt2` is not supported") && e.contains("llama, gemma3"), "{e}");

    let no_arch = dir.path().join("no-arch.gguf");
    write_gguf(&no_arch, &[("general.name", Value::String("x".into()))]);
    assert!(load_error(&no_arch).contains("general.architecture"), "{}", load_error(&no_arch));

    // A llama GGUF with a tokenizer but no weights.
    let empty = dir.path().join("empty-llama.gguf");
    let strings = |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
    write_gguf(
        &empty,
        &[
            ("general.architecture", Value::String("llama".into())),
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.tokens", strings(&["a", "b", "ab"])),
            ("tokenizer.ggml.merges", strings(&["a b"])),
        ],
    );
    let e = load_error(&empty);
    assert!(e.contains("cannot load the llama weights"), "{e}");

    // A SentencePiece vocabulary without scores.
    let no_scores = dir.path().join("no-scores.gguf");
    write_gguf(
        &no_scores,
        &[
            ("general.architecture", Value::String("gemma3".into())),
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", strings(&["a", "b"])),
        ],
    );
    let e = load_error(&no_scores);
    assert!(e.contains("tokenizer.ggml.scores"), "{e}");
}

#[test]
fn a_tokenizer_json_overrides_the_gguf_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("tokenizer.json");
    std::fs::write(
        &json,
        r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 42, "world": 7}, "unk_token": "[UNK]"}}"#,
    )
    .unwrap();
    let options = LocalOptions {
        tokenizer_json: Some(json),
        ..LocalOptions::default()
    };
    let model = LocalModel::load_with(env_file("AUTOAGENT_TEST_SMOLLM2"), &options).unwrap();
    let tok = model.tokenizer();
    assert_eq!(tok.source(), "tokenizer.json");
    assert_eq!(tok.encode("hello world", false).unwrap(), [42, 7]);
    assert_eq!(tok.decode(&[42, 7]).unwrap(), "hello world");
    // The special tokens still come from the GGUF metadata.
    assert_eq!(tok.eos(), Some(2));
    let bad = LocalOptions {
        tokenizer_json: Some(dir.path().join("absent.json")),
        ..LocalOptions::default()
    };
    let e = LocalModel::load_with(env_file("AUTOAGENT_TEST_SMOLLM2"), &bad).unwrap_err();
    assert!(e.to_string().contains("absent.json"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Fetching by name from a hub (a loopback server standing in for it)

const HUB_REPO: &str = "test-org/smollm2-mini";
const HUB_FILE: &str = "smollm2.Q4_1.gguf";
const HUB_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const HUB_ETAG: &str = "5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ff";

/// Serves `file` at `/{HUB_REPO}/resolve/main/{HUB_FILE}` the way the hub does: ranged GETs
/// answered 206 with `Content-Range`, plus `ETag` and `X-Repo-Commit`; 404 for anything else.
fn serve_hub(file: PathBuf) -> (Arc<tiny_http::Server>, String, Arc<AtomicUsize>) {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let (s, h) = (server.clone(), hits.clone());
    std::thread::spawn(move || {
        let size = std::fs::metadata(&file).unwrap().len();
        for req in s.incoming_requests() {
            h.fetch_add(1, Ordering::SeqCst);
            if req.url() != format!("/{HUB_REPO}/resolve/main/{HUB_FILE}") {
                let _ = req.respond(tiny_http::Response::from_string("Entry not found").with_status_code(404));
                continue;
            }
            let range = req
                .headers()
                .iter()
                .find(|h| h.field.equiv("Range"))
                .map(|h| h.value.as_str().to_string())
                .unwrap_or_else(|| "bytes=0-".into());
            let (start, end) = {
                let r = range.strip_prefix("bytes=").expect("a byte range");
                let (a, b) = r.split_once('-').unwrap();
                let start: u64 = a.parse().unwrap();
                let end: u64 = if b.is_empty() { size - 1 } else { b.parse::<u64>().unwrap().min(size - 1) };
                (start, end)
            };
            let len = end + 1 - start;
            let mut f = std::fs::File::open(&file).unwrap();
            f.seek(SeekFrom::Start(start)).unwrap();
            let header = |k: &str, v: String| tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap();
            let headers = vec![
                header("ETag", format!("\"{HUB_ETAG}\"")),
                header("X-Repo-Commit", HUB_COMMIT.into()),
                header("Accept-Ranges", "bytes".into()),
                header("Content-Range", format!("bytes {start}-{end}/{size}")),
            ];
            let _ = req.respond(tiny_http::Response::new(
                tiny_http::StatusCode(206),
                headers,
                f.take(len),
                Some(len as usize),
                None,
            ));
        }
    });
    (server, base, hits)
}

/// Run in a child process by [`from_hub_reads_hf_endpoint_and_fills_the_cache`] with
/// `HF_ENDPOINT` and `HF_HOME` set (the parent's environment stays untouched).
#[test]
#[ignore = "run by from_hub_reads_hf_endpoint_and_fills_the_cache in a child process"]
fn hub_child() {
    if std::env::var_os("AUTOAGENT_HUB_CHILD").is_none() {
        return;
    }
    let model = LocalModel::from_hub(HUB_REPO, HUB_FILE).unwrap();
    let r = model.generate(&request(vec![Message::user("Say hi.")], 4, 0.0, 0)).unwrap();
    assert!(r.usage.completion_tokens >= 1);
    // libtest prints "test hub_child ... " on the same line first.
    println!("\nHUB_PATH={}", model.path().display());
}

#[test]
fn from_hub_reads_hf_endpoint_and_fills_the_cache() {
    let source = env_file("AUTOAGENT_TEST_SMOLLM2");
    let (server, base, hits) = serve_hub(source.clone());
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "hub_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("AUTOAGENT_HUB_CHILD", "1")
        .env("HF_ENDPOINT", &base)
        .env("HF_HOME", home.path())
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let path = stdout
        .lines()
        .find_map(|l| l.split_once("HUB_PATH=").map(|(_, p)| p.trim()))
        .unwrap_or_else(|| panic!("the child prints the path: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let repo_dir = home.path().join("hub").join("models--test-org--smollm2-mini");
    assert_eq!(Path::new(path), repo_dir.join("snapshots").join(HUB_COMMIT).join(HUB_FILE));
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs").join("main")).unwrap().trim(), HUB_COMMIT);
    let blob = repo_dir.join("blobs").join(HUB_ETAG);
    assert_eq!(std::fs::metadata(&blob).unwrap().len(), std::fs::metadata(&source).unwrap().len());
    let same = |a: &Path, b: &Path| {
        let mut x = vec![0u8; 1 << 20];
        let mut y = vec![0u8; 1 << 20];
        let (mut fa, mut fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
        fa.seek(SeekFrom::End(-(1 << 20))).unwrap();
        fb.seek(SeekFrom::End(-(1 << 20))).unwrap();
        fa.read_exact(&mut x).unwrap();
        fb.read_exact(&mut y).unwrap();
        x == y
    };
    assert!(same(&blob, &source), "the downloaded file is the served one");
    let served = hits.load(Ordering::SeqCst);
    assert!(served >= 2, "a metadata request and a download: {served}");

    // The same cache through explicit options: no request at all.
    let options = HubOptions {
        endpoint: Some(base.clone()),
        cache_dir: Some(home.path().join("hub")),
        ..HubOptions::default()
    };
    assert_eq!(fetch(HUB_REPO, HUB_FILE, &options).unwrap(), Path::new(path));
    assert_eq!(hits.load(Ordering::SeqCst), served, "a cached file is not fetched again");

    // A file the hub lacks: a clear error naming it.
    let e = fetch(HUB_REPO, "missing.gguf", &options).unwrap_err();
    assert!(
        matches!(e, LlmError::Model(_)) && e.to_string().contains("missing.gguf") && e.to_string().contains(HUB_REPO),
        "{e}"
    );
    server.unblock();
}
