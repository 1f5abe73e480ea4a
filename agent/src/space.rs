//! The NB201 search space as the LLM sees it: its description for the prompt, the parsing of
//! replies into architectures (with a reason for every rejection), and the constrained reply
//! template for models whose decoding we control.

use autoagent_evaluator::nb201::{Arch, Op, EDGES};
use serde::Serialize;

use crate::history::FailedProposal;
use crate::llm::{Constrained, Distinct, Segment};

/// One operation, for the prompt.
#[derive(Debug, Clone, Serialize)]
pub struct OpInfo {
    /// The benchmark's name.
    pub name: &'static str,
    /// What it does.
    pub meaning: &'static str,
}

/// The space, for the prompt templates.
#[derive(Debug, Clone, Serialize)]
pub struct SpaceInfo {
    /// Its name.
    pub name: &'static str,
    /// The operations.
    pub ops: Vec<OpInfo>,
    /// How an architecture is written.
    pub format: &'static str,
    /// A valid example.
    pub example: String,
    /// Rules a valid architecture follows.
    pub rules: Vec<&'static str>,
    /// Number of architectures.
    pub size: usize,
}

/// The description of NB201 for prompts.
pub fn describe() -> SpaceInfo {
    let meaning = |op: Op| match op {
        Op::None => "no connection (outputs zeros)",
        Op::SkipConnect => "identity",
        Op::NorConv1x1 => "ReLU, 1x1 convolution, BatchNorm",
        Op::NorConv3x3 => "ReLU, 3x3 convolution, BatchNorm",
        Op::AvgPool3x3 => "3x3 average pooling",
    };
    SpaceInfo {
        name: "NAS-Bench-201 cell",
        ops: Op::ALL
            .iter()
            .map(|&op| OpInfo {
                name: op.name(),
                meaning: meaning(op),
            })
            .collect(),
        format: "|OP~0|+|OP~0|OP~1|+|OP~0|OP~1|OP~2|",
        // A cell of median accuracy (90.71 % on CIFAR-10, the median is 90.75 %): a model that
        // copies the example gets no head start from it (the earlier example ranked 258th of
        // 15,625, and SmolLM2 copied it).
        example: "|avg_pool_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|nor_conv_1x1~2|".into(),
        rules: vec![
            "a cell has 4 nodes; node 0 is the cell input and node 3 its output",
            "node j sums one operation applied to every earlier node i, written OP~i; the groups for nodes 1, 2, 3 are joined by '+'",
            "every one of the 6 edges carries exactly one operation from the list",
            "a cell whose every input-to-output path crosses 'none' outputs zeros and is useless",
            "the network stacks 15 copies of the cell (3 stages of 5, 16/32/64 channels)",
        ],
        size: autoagent_evaluator::nb201::NUM_ARCHS,
    }
}

/// What a reply yields: valid architectures and rejected proposals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// The valid architectures, in reply order.
    pub archs: Vec<Arch>,
    /// Rejected items with their reasons.
    pub failed: Vec<FailedProposal>,
    /// Why the reply as a whole could not be read (no JSON object, wrong shape), if so.
    pub error: Option<String>,
}

/// The first balanced `{...}` of `text` (replies often wrap JSON in prose or code fences).
fn json_object(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let (mut depth, mut in_str, mut esc) = (0i32, false, false);
    for (i, c) in text[start..].char_indices() {
        if in_str {
            match c {
                _ if esc => esc = false,
                '\\' => esc = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + i + 1]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Parse a reply of the form `{"candidates": [{"arch": "...", "why": "..."}, ...]}` (plain
/// strings in the list are accepted too).
pub fn parse_reply(text: &str, exchange: Option<usize>) -> Parsed {
    let mut out = Parsed::default();
    let Some(obj) = json_object(text) else {
        out.error = Some("the reply holds no JSON object".into());
        return out;
    };
    let value: serde_json::Value = match serde_json::from_str(obj) {
        Ok(v) => v,
        Err(e) => {
            out.error = Some(format!("the reply's JSON does not parse: {e}"));
            return out;
        }
    };
    let Some(list) = value.get("candidates").and_then(|c| c.as_array()) else {
        out.error = Some("the reply's JSON has no \"candidates\" list".into());
        return out;
    };
    if list.is_empty() {
        out.error = Some("the \"candidates\" list is empty".into());
        return out;
    }
    for item in list {
        let arch_text = match item {
            serde_json::Value::String(s) => Some(s.as_str()),
            serde_json::Value::Object(o) => o.get("arch").and_then(|a| a.as_str()),
            _ => None,
        };
        match arch_text {
            Some(a) => match Arch::parse(a) {
                Ok(arch) => out.archs.push(arch),
                Err(e) => out.failed.push(FailedProposal {
                    text: a.to_string(),
                    reason: e.to_string(),
                    exchange,
                }),
            },
            None => out.failed.push(FailedProposal {
                text: item.to_string(),
                reason: "a candidate must be an object with an \"arch\" string".into(),
                exchange,
            }),
        }
    }
    out
}

/// The JSON Schema of a reply with 1 to `k` candidates: each an `arch` string that the pattern
/// restricts to the space's format and operations (no free-text field: a small model fills one
/// until it runs out of tokens, and the reply is cut short). Servers with structured
/// outputs (OpenAI's strict mode, llama.cpp's grammar from the schema) then only produce valid
/// architectures.
pub fn reply_schema(k: usize) -> serde_json::Value {
    let op = format!("({})", Op::ALL.iter().map(|o| o.name()).collect::<Vec<_>>().join("|"));
    let mut pattern = String::from("^");
    for &(target, source) in EDGES.iter() {
        pattern.push_str(if source == 0 && target > 1 { "\\|\\+\\|" } else { "\\|" });
        pattern.push_str(&format!("{op}~{source}"));
    }
    pattern.push_str("\\|$");
    serde_json::json!({
        "type": "object",
        "properties": {
            "candidates": {
                "type": "array",
                "minItems": 1,
                "maxItems": k.max(1),
                "items": {
                    "type": "object",
                    "properties": {
                        "arch": { "type": "string", "pattern": pattern }
                    },
                    "required": ["arch"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["candidates"],
        "additionalProperties": false
    })
}

/// The reply template of `k` architectures, one per line, each edge's operation a choice slot:
/// with constrained decoding every reply is a valid cell, and none repeats an `evaluated` one or
/// an earlier one of the reply.
pub fn constrained_template(k: usize, evaluated: &[Arch]) -> Constrained {
    let ops: Vec<String> = Op::ALL.iter().map(|op| op.name().to_string()).collect();
    let mut segments = Vec::new();
    for i in 0..k {
        let mut prefix = if i == 0 { String::new() } else { "\n".to_string() };
        for &(target, source) in EDGES.iter() {
            prefix.push_str(if source == 0 && target > 1 { "|+|" } else { "|" });
            segments.push(Segment::Text(std::mem::take(&mut prefix)));
            segments.push(Segment::Choice(ops.clone()));
            prefix = format!("~{source}");
        }
        prefix.push('|');
        segments.push(Segment::Text(prefix));
    }
    let forbidden = evaluated
        .iter()
        .map(|a| {
            a.ops
                .iter()
                .map(|op| Op::ALL.iter().position(|o| o == op).expect("an op of the space"))
                .collect()
        })
        .collect();
    Constrained {
        segments,
        calibrate: true,
        distinct: Some(Distinct { group: EDGES.len(), forbidden }),
    }
}

/// The architectures of a constrained reply's choices (6 per architecture).
pub fn archs_from_choices(choices: &[usize]) -> Vec<Arch> {
    choices
        .chunks_exact(EDGES.len())
        .map(|c| {
            let mut ops = [Op::None; 6];
            for (o, &i) in ops.iter_mut().zip(c) {
                *o = Op::ALL[i];
            }
            Arch::new(ops)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_schema_pattern_accepts_exactly_the_cells_of_the_space() {
        let schema = reply_schema(3);
        let items = &schema["properties"]["candidates"];
        assert_eq!(items["maxItems"], 3);
        let pattern = items["items"]["properties"]["arch"]["pattern"].as_str().unwrap();
        let re = regex::Regex::new(pattern).unwrap();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(4);
        for _ in 0..200 {
            let a = Arch::sample(&mut rng).to_string();
            assert!(re.is_match(&a), "{a}");
        }
        for bad in [
            "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
            "|none~0|+|none~0|none~1|+|none~0|none~1|",
            "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
            "x|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
            "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|x",
        ] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn replies_are_parsed_against_the_space() {
        let reply = "Here you go:\n```json\n{\"candidates\": [{\"arch\": \"|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|\", \"why\": \"convs {}\"}, {\"arch\": \"|conv~0|+|x~0|y~1|+|a~0|b~1|c~2|\"}, 42, \"|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\"]}\n```";
        let p = parse_reply(reply, Some(3));
        assert_eq!(p.error, None);
        assert_eq!(p.archs.len(), 2);
        assert_eq!(p.failed.len(), 2);
        assert!(p.failed[0].reason.contains("unknown operation 'conv'"), "{}", p.failed[0].reason);
        assert_eq!(p.failed[0].exchange, Some(3));
        assert!(parse_reply("no json here", None).error.unwrap().contains("no JSON object"));
        assert!(parse_reply("{\"archs\": []}", None).error.unwrap().contains("no \"candidates\""));
        assert!(parse_reply("{\"candidates\": [", None).error.unwrap().contains("no JSON object"));
    }

    #[test]
    fn the_template_spells_valid_arch_strings() {
        let t = constrained_template(2, &[]);
        let choices: Vec<usize> = vec![3, 3, 4, 1, 3, 1, 0, 1, 2, 3, 4, 0];
        let mut text = String::new();
        let mut it = choices.iter();
        for s in &t.segments {
            match s {
                Segment::Text(x) => text.push_str(x),
                Segment::Choice(o) => text.push_str(&o[*it.next().unwrap()]),
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let archs = archs_from_choices(&choices);
        assert_eq!(lines[0], archs[0].to_string());
        assert_eq!(lines[1], archs[1].to_string());
        assert_eq!(
            lines[0],
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
        );
    }
}
