//! The search space as the LLM sees it: its description for the prompt, the parsing of replies
//! into configurations (with a reason for every rejection), the reply's JSON Schema and the
//! constrained reply template for models whose decoding we control. Every part comes from the
//! task's [`Space`]; an NB201 table's space (a cell alone) keeps its candidates as bare arch
//! strings, as NB201's own papers and prompts write them.

use autoagent_evaluator::nb201::{Op, EDGES};
use serde::Serialize;

use crate::configspace::{Config, Kind, ParamInfo, Space, Value};
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

/// The NB201 cell, for the prompt (when the space has one).
#[derive(Debug, Clone, Serialize)]
pub struct CellInfo {
    /// The operations.
    pub ops: Vec<OpInfo>,
    /// How a cell is written.
    pub format: &'static str,
    /// A valid cell.
    pub example: String,
    /// Rules a valid cell follows.
    pub rules: Vec<String>,
}

/// The space, for the prompt templates.
#[derive(Debug, Clone, Serialize)]
pub struct SpaceInfo {
    /// Its name.
    pub name: String,
    /// What one candidate is called (`architecture`, `configuration`).
    pub candidate: &'static str,
    /// Whether a candidate is a bare cell (an NB201 table's space).
    pub cell_only: bool,
    /// The parameters.
    pub params: Vec<ParamInfo>,
    /// The cell, when the space has one.
    pub cell: Option<CellInfo>,
    /// How a candidate is written on one line.
    pub format: String,
    /// A valid candidate on one line.
    pub example: String,
    /// A valid candidate as a JSON object.
    pub json_example: String,
    /// The size of the space, in words.
    pub size: String,
}

/// A cell of median accuracy (90.71 % on CIFAR-10, the median is 90.75 %): a model that copies
/// the example gets no head start from it (an earlier example ranked 258th of 15,625, and
/// SmolLM2 copied it).
const EXAMPLE_CELL: &str = crate::configspace::MEDIAN_CELL;

fn cell_info(cell_only: bool) -> CellInfo {
    let meaning = |op: Op| match op {
        Op::None => "no connection (outputs zeros)",
        Op::SkipConnect => "identity",
        Op::NorConv1x1 => "ReLU, 1x1 convolution, BatchNorm",
        Op::NorConv3x3 => "ReLU, 3x3 convolution, BatchNorm",
        Op::AvgPool3x3 => "3x3 average pooling",
    };
    let mut rules: Vec<String> = [
        "a cell has 4 nodes; node 0 is the cell input and node 3 its output",
        "node j sums one operation applied to every earlier node i, written OP~i; the groups for nodes 1, 2, 3 are joined by '+'",
        "every one of the 6 edges carries exactly one operation from the list",
        "a cell whose every input-to-output path crosses 'none' outputs zeros and is useless",
    ]
    .map(String::from)
    .to_vec();
    rules.push(match cell_only {
        true => "the network stacks 15 copies of the cell (3 stages of 5, 16/32/64 channels)".into(),
        false => "the network stacks the cell `depth` times in each of 3 stages, at `width`, 2x and 4x `width` channels".into(),
    });
    CellInfo {
        ops: Op::ALL
            .iter()
            .map(|&op| OpInfo {
                name: op.name(),
                meaning: meaning(op),
            })
            .collect(),
        format: crate::configspace::CELL_FORMAT,
        example: EXAMPLE_CELL.into(),
        rules,
    }
}

/// The description of `space` for prompts.
pub fn describe(space: &Space) -> SpaceInfo {
    let cell_only = space.is_cell_only();
    let has_cell = space.params().iter().any(|p| p.kind == Kind::Cell);
    let mut example = space.default_config();
    if let Some(p) = space.params().iter().find(|p| p.kind == Kind::Cell) {
        example.set(&p.name, Value::Cell(EXAMPLE_CELL.parse().expect("the example cell parses")));
    }
    let format = match cell_only {
        true => crate::configspace::CELL_FORMAT.to_string(),
        false => space.params().iter().map(|p| format!("{}=<{}>", p.name, p.name)).collect::<Vec<_>>().join(", "),
    };
    SpaceInfo {
        name: match (cell_only, has_cell) {
            (true, _) => "NAS-Bench-201 cell".into(),
            (false, true) => "image classification pipeline: an NB201-style network and its training recipe".into(),
            (false, false) => "tabular pipeline: preprocessing and a model family with its hyperparameters".into(),
        },
        candidate: if cell_only { "architecture" } else { "configuration" },
        cell_only,
        params: space.describe(),
        cell: has_cell.then(|| cell_info(cell_only)),
        format,
        example: space.line(&example),
        json_example: json_object_text(space, &example),
        size: match cell_only {
            true => format!("{} architectures", autoagent_evaluator::nb201::NUM_ARCHS),
            false => format!("{} parameters", space.params().len()),
        },
    }
}

/// `config` as one JSON object in the space's parameter order.
fn json_object_text(space: &Space, config: &Config) -> String {
    let parts: Vec<String> = space
        .active(config)
        .iter()
        .filter_map(|p| {
            config
                .get(&p.name)
                .map(|v| format!("\"{}\": {}", p.name, serde_json::to_string(v).expect("values serialise")))
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// What a reply yields: valid configurations and rejected proposals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// The valid configurations, in reply order.
    pub configs: Vec<Config>,
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

/// One candidate of a reply as a configuration of `space`: an object of the space's parameters
/// (`arch` is read as the cell where the space has one named `cell`), or, where the space is a
/// cell alone, its arch string.
fn parse_item(space: &Space, item: &serde_json::Value) -> Result<Config, (String, String)> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    let cell_name = space.params().iter().find(|p| p.kind == Kind::Cell).map(|p| p.name.clone());
    let object = match (item, &cell_name) {
        (serde_json::Value::String(s), Some(cell)) if space.is_cell_only() => serde_json::json!({ cell.as_str(): s }),
        (serde_json::Value::Object(o), Some(cell)) if o.contains_key("arch") && space.param("arch").is_none() && !o.contains_key(cell) => {
            let mut o = o.clone();
            let arch = o.remove("arch").expect("present");
            o.insert(cell.clone(), arch);
            serde_json::Value::Object(o)
        }
        _ => item.clone(),
    };
    // A model's explanation beside the values is not a parameter.
    let object = match object {
        serde_json::Value::Object(mut o) => {
            for note in ["why", "reason", "rationale"] {
                if space.param(note).is_none() {
                    o.remove(note);
                }
            }
            serde_json::Value::Object(o)
        }
        other => other,
    };
    let shown = match (&object, &cell_name) {
        (serde_json::Value::Object(o), Some(cell)) if space.is_cell_only() => o.get(cell).map(text).unwrap_or_else(|| item.to_string()),
        _ => text(item),
    };
    space.parse_candidate(&object).map_err(|e| (shown, e.to_string()))
}

/// Parse a reply of the form `{"candidates": [{<param>: <value>, ...}, ...]}` against `space`
/// (for a cell alone, `{"candidates": [{"arch": "..."}]}` and plain strings are accepted too).
pub fn parse_reply(text: &str, space: &Space, exchange: Option<usize>) -> Parsed {
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
        match parse_item(space, item) {
            Ok(config) => out.configs.push(config),
            Err((text, reason)) => out.failed.push(FailedProposal { text, reason, exchange }),
        }
    }
    out
}

/// The JSON Schema of a reply with 1 to `k` candidates of `space` ([`Space::candidate_schema`]:
/// an enum per choice, bounds per number, a pattern per cell; no free-text field: a small model
/// fills one until it runs out of tokens, and the reply is cut short). Servers with structured
/// outputs (OpenAI's strict mode, llama.cpp's grammar from the schema) then only produce valid
/// configurations.
pub fn reply_schema(space: &Space, k: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "candidates": {
                "type": "array",
                "minItems": 1,
                "maxItems": k.max(1),
                "items": space.candidate_schema()
            }
        },
        "required": ["candidates"],
        "additionalProperties": false
    })
}

/// The slots of one parameter in the template: a cell's 6 operations, or one choice among the
/// parameter's grid ([`Kind::grid`]).
fn slot_count(kind: &Kind) -> usize {
    match kind {
        Kind::Cell => EDGES.len(),
        _ => 1,
    }
}

/// The reply template of `k` candidates, one per line as [`Space::line`] writes them (a cell
/// alone as its arch string), every edge's operation and every other parameter's value a choice
/// slot (numbers on the parameter's grid): with constrained decoding every reply is a valid
/// configuration, and none repeats an `evaluated` one or an earlier one of the reply. A
/// parameter that exists only under a condition always gets its slot; it is dropped where the
/// condition does not hold ([`configs_from_choices`]).
pub fn constrained_template(space: &Space, k: usize, evaluated: &[Config]) -> Constrained {
    let ops: Vec<String> = Op::ALL.iter().map(|op| op.name().to_string()).collect();
    let cell_only = space.is_cell_only();
    let params = space.params();
    let mut segments = Vec::new();
    for i in 0..k {
        let mut prefix = if i == 0 { String::new() } else { "\n".to_string() };
        for (pi, p) in params.iter().enumerate() {
            let last = pi + 1 == params.len();
            if !cell_only {
                prefix.push_str(&format!("{}{}=", if pi == 0 { "" } else { " " }, p.name));
            }
            match &p.kind {
                Kind::Cell => {
                    for &(target, source) in EDGES.iter() {
                        prefix.push_str(if source == 0 && target > 1 { "|+|" } else { "|" });
                        segments.push(Segment::Text(std::mem::take(&mut prefix)));
                        segments.push(Segment::Choice(ops.clone()));
                        prefix = format!("~{source}");
                    }
                    prefix.push('|');
                    if !last {
                        prefix.push(',');
                    }
                }
                kind => {
                    // Each option ends with its separator, so no option is a prefix of another.
                    let end = if last { ";" } else { "," };
                    segments.push(Segment::Text(std::mem::take(&mut prefix)));
                    segments.push(Segment::Choice(kind.grid().iter().map(|v| format!("{v}{end}")).collect()));
                }
            }
        }
        if !prefix.is_empty() {
            segments.push(Segment::Text(prefix));
        }
    }
    let group: usize = params.iter().map(|p| slot_count(&p.kind)).sum();
    let forbidden = evaluated.iter().flat_map(|c| slot_indices(space, c)).collect();
    Constrained {
        segments,
        calibrate: true,
        distinct: Some(Distinct { group, forbidden }),
    }
}

/// The most spellings of one configuration forbidden to the decoder: a configuration whose
/// inactive parameters could be spelt more ways than this (a table's linear model leaves the
/// MLP's and the trees' parameters inactive: millions of ways) is not forbidden; the loop drops
/// it as a duplicate if it comes back.
const MAX_SPELLINGS: usize = 4096;

/// The slot choices that spell `config` (its numbers at their nearest grid value); a parameter
/// it lacks (inactive) may take any option, so every variant is listed (none past
/// [`MAX_SPELLINGS`]).
fn slot_indices(space: &Space, config: &Config) -> Vec<Vec<usize>> {
    let variants = space
        .params()
        .iter()
        .filter(|p| !matches!(p.kind, Kind::Cell) && config.get(&p.name).is_none())
        .try_fold(1usize, |n, p| n.checked_mul(p.kind.grid().len().max(1)));
    if variants.is_none_or(|n| n > MAX_SPELLINGS) {
        return Vec::new();
    }
    let mut items: Vec<Vec<usize>> = vec![Vec::new()];
    for p in space.params() {
        let options: Vec<Vec<usize>> = match (&p.kind, config.get(&p.name)) {
            (Kind::Cell, Some(Value::Cell(a))) => vec![a
                .ops
                .iter()
                .map(|op| Op::ALL.iter().position(|o| o == op).expect("an op of the space"))
                .collect()],
            (Kind::Cell, _) => return Vec::new(),
            (kind, Some(v)) => match kind.nearest_on_grid(v) {
                Some(i) => vec![vec![i]],
                None => return Vec::new(),
            },
            (kind, None) => (0..kind.grid().len()).map(|i| vec![i]).collect(),
        };
        items = items
            .iter()
            .flat_map(|prefix| options.iter().map(move |o| prefix.iter().chain(o).copied().collect::<Vec<usize>>()))
            .collect();
    }
    items
}

/// The configurations of a constrained reply's choices ([`constrained_template`]'s slots, in
/// order), parameters whose condition does not hold dropped.
pub fn configs_from_choices(space: &Space, choices: &[usize]) -> Vec<Config> {
    let group: usize = space.params().iter().map(|p| slot_count(&p.kind)).sum();
    choices
        .chunks_exact(group.max(1))
        .map(|item| {
            let mut config = Config::new();
            let mut at = 0;
            for p in space.params() {
                let n = slot_count(&p.kind);
                let slots = &item[at..at + n];
                at += n;
                let value = match &p.kind {
                    Kind::Cell => {
                        let mut ops = [Op::None; 6];
                        for (o, &i) in ops.iter_mut().zip(slots) {
                            *o = Op::ALL[i];
                        }
                        Value::Cell(autoagent_evaluator::nb201::Arch::new(ops))
                    }
                    kind => kind.grid()[slots[0]].clone(),
                };
                config.set(&p.name, value);
            }
            space.without_inactive(&config)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configspace::{cell_space, vision_space};
    use autoagent_evaluator::nb201::Arch;

    #[test]
    fn the_reply_schema_pattern_accepts_exactly_the_cells_of_the_space() {
        let schema = reply_schema(&cell_space(), 3);
        let items = &schema["properties"]["candidates"];
        assert_eq!(items["maxItems"], 3);
        let pattern = items["items"]["properties"]["cell"]["pattern"].as_str().unwrap();
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
        let p = parse_reply(reply, &cell_space(), Some(3));
        assert_eq!(p.error, None);
        assert_eq!(p.configs.len(), 2);
        assert_eq!(p.failed.len(), 2);
        assert!(p.failed[0].reason.contains("unknown operation 'conv'"), "{}", p.failed[0].reason);
        assert_eq!(p.failed[0].exchange, Some(3));
        assert!(parse_reply("no json here", &cell_space(), None).error.unwrap().contains("no JSON object"));
        assert!(parse_reply("{\"archs\": []}", &cell_space(), None).error.unwrap().contains("no \"candidates\""));
        assert!(parse_reply("{\"candidates\": [", &cell_space(), None).error.unwrap().contains("no JSON object"));
    }

    #[test]
    fn the_template_spells_valid_arch_strings() {
        let t = constrained_template(&cell_space(), 2, &[]);
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
        let archs: Vec<Arch> = configs_from_choices(&cell_space(), &choices).iter().map(|c| c.cell("cell").unwrap()).collect();
        assert_eq!(lines[0], archs[0].to_string());
        assert_eq!(lines[1], archs[1].to_string());
        assert_eq!(
            lines[0],
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
        );
    }

    #[test]
    fn a_vision_template_spells_configurations_of_the_space_and_keeps_evaluated_ones_out() {
        let space = vision_space();
        let evaluated = vec![space.default_config()];
        let t = constrained_template(&space, 2, &evaluated);
        let slots: Vec<&Vec<String>> = t
            .segments
            .iter()
            .filter_map(|s| if let Segment::Choice(o) = s { Some(o) } else { None })
            .collect();
        let group = t.distinct.as_ref().unwrap().group;
        assert_eq!(slots.len(), 2 * group);
        // The default has no cutout length: it is forbidden with every length.
        let cutout = space.param("cutout_length").unwrap().kind.grid().len();
        assert_eq!(t.distinct.as_ref().unwrap().forbidden.len(), cutout);
        // Every choice of every slot spells a valid configuration; the text reads back.
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        for _ in 0..50 {
            let choices: Vec<usize> = slots.iter().map(|o| rand::Rng::random_range(&mut rng, 0..o.len())).collect();
            let configs = configs_from_choices(&space, &choices);
            assert_eq!(configs.len(), 2);
            for c in &configs {
                space.validate(c).unwrap();
            }
            let mut it = choices.iter();
            let mut text = String::new();
            for s in &t.segments {
                match s {
                    Segment::Text(x) => text.push_str(x),
                    Segment::Choice(o) => text.push_str(&o[*it.next().unwrap()]),
                }
            }
            let first = text.lines().next().unwrap();
            assert!(first.starts_with("cell=|") && first.contains(", width=") && first.ends_with(';'), "{first}");
        }
        // A JSON reply is read against the space; a parameter out of range is named.
        let reply = format!(
            "{{\"candidates\": [{}, {{\"cell\": \"{}\", \"width\": 12}}]}}",
            describe(&space).json_example,
            crate::configspace::MEDIAN_CELL
        );
        let p = parse_reply(&reply, &space, None);
        assert_eq!(p.configs.len(), 1, "{p:?}");
        assert!(p.failed[0].reason.contains("width"), "{}", p.failed[0].reason);
    }
}
