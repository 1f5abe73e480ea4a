//! The space for the prompt: one record per parameter for templates, and a Markdown table.

use autoagent_evaluator::nb201::Op;
use serde::Serialize;

use super::param::{Kind, Param};
use super::space::Space;

/// How a cell is written, `OP` standing for an operation.
pub const CELL_FORMAT: &str = "|OP~0|+|OP~0|OP~1|+|OP~0|OP~1|OP~2|";

/// One parameter, for the prompt templates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamInfo {
    /// Its name.
    pub name: String,
    /// `categorical`, `ordinal`, `int`, `float` or `cell`.
    pub kind: &'static str,
    /// What it admits, in words (`one of a, b`, `0.001 to 0.5 (log scale)`, the cell format).
    pub domain: String,
    /// The choices or values of a categorical or ordinal parameter; empty otherwise.
    pub choices: Vec<String>,
    /// The least value of an int or float parameter.
    pub low: Option<String>,
    /// The greatest value of an int or float parameter.
    pub high: Option<String>,
    /// Whether it is log-scaled.
    pub log: bool,
    /// Its default value, as text.
    pub default: String,
    /// What it means.
    pub meaning: String,
    /// When it exists (`augment is crop_flip_cutout`); always if `None`.
    pub condition: Option<String>,
}

impl Space {
    /// Every parameter, in order, for the prompt templates.
    pub fn describe(&self) -> Vec<ParamInfo> {
        self.params().iter().map(info).collect()
    }

    /// A Markdown table of the parameters (name, type, values, default, meaning and condition),
    /// `|` escaped inside cells.
    pub fn table(&self) -> String {
        let mut out = String::from("| parameter | type | values | default | meaning |\n| --- | --- | --- | --- | --- |\n");
        for p in self.params() {
            let cells = [p.name.clone(), p.kind.name().to_string(), domain(&p.kind), p.default.to_string(), meaning(p)];
            let escaped: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            out.push_str(&format!("| {} |\n", escaped.join(" | ")));
        }
        out
    }
}

fn info(p: &Param) -> ParamInfo {
    let (choices, low, high, log) = match &p.kind {
        Kind::Categorical { choices } => (choices.clone(), None, None, false),
        Kind::Ordinal { values } => (values.iter().map(i64::to_string).collect(), None, None, false),
        Kind::Int { low, high, log } => (vec![], Some(low.to_string()), Some(high.to_string()), *log),
        Kind::Float { low, high, log } => (vec![], Some(low.to_string()), Some(high.to_string()), *log),
        Kind::Cell => (vec![], None, None, false),
    };
    ParamInfo {
        name: p.name.clone(),
        kind: p.kind.name(),
        domain: domain(&p.kind),
        choices,
        low,
        high,
        log,
        default: p.default.to_string(),
        meaning: p.meaning.clone(),
        condition: p.condition.as_ref().map(|c| c.to_string()),
    }
}

/// What the kind admits, in words; a cell's format spelt out.
fn domain(kind: &Kind) -> String {
    match kind {
        Kind::Cell => format!("an NB201 cell {CELL_FORMAT}, OP one of {}", Op::ALL.map(Op::name).join(", ")),
        other => other.domain(),
    }
}

/// The meaning, followed by the condition if there is one.
pub(crate) fn meaning(p: &Param) -> String {
    match &p.condition {
        Some(c) => format!("{} (only when {c})", p.meaning),
        None => p.meaning.clone(),
    }
}
