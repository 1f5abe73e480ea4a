//! The JSON Schema of an LLM's reply over a space, and the reading of its candidates.

use autoagent_evaluator::nb201::{Arch, Op};
use serde_json::{json, Value as Json};

use super::config::Config;
use super::describe::{meaning, CELL_FORMAT};
use super::error::Error;
use super::param::{Kind, Param};
use super::space::{missing, Space};
use super::value::Value;

/// The longest `reason` the schema lets a reply give (a small model otherwise writes until it
/// runs out of tokens and the reply is cut short).
pub const REASON_MAX_CHARS: usize = 400;

impl Space {
    /// The JSON Schema of a reply `{"candidates": [{<param>: value, …}, …], "reason": "…"}`
    /// (at least one candidate; set `properties.candidates.maxItems` to cap them).
    pub fn json_schema(&self) -> Json {
        json!({
            "type": "object",
            "properties": {
                "candidates": { "type": "array", "minItems": 1, "items": self.candidate_schema() },
                "reason": { "type": "string", "maxLength": REASON_MAX_CHARS }
            },
            "required": ["candidates", "reason"],
            "additionalProperties": false
        })
    }

    /// The JSON Schema of one candidate: an enum per categorical or ordinal, bounds per number,
    /// a pattern for a cell, each with its meaning; unconditional parameters required, no others.
    pub fn candidate_schema(&self) -> Json {
        let properties: serde_json::Map<String, Json> = self.params().iter().map(|p| (p.name.clone(), param_schema(p))).collect();
        let required: Vec<&str> = self.params().iter().filter(|p| p.condition.is_none()).map(|p| p.name.as_str()).collect();
        json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
    }

    /// The configuration an LLM's candidate object writes, leniently: numbers given as strings,
    /// integral numbers where integers are expected, integers where floats are, a choice in the
    /// wrong case; values of inactive parameters are dropped. The error names the parameter: one
    /// unknown to the space, an active one missing (or `null`), one of the wrong type or out of
    /// range, a cell string that does not parse.
    pub fn parse_candidate(&self, candidate: &Json) -> Result<Config, Error> {
        let object = candidate
            .as_object()
            .ok_or_else(|| Error::Malformed(format!("a candidate must be a JSON object, found {}", short(candidate))))?;
        if let Some(name) = object.keys().find(|k| self.param(k).is_none()) {
            return Err(self.unknown(name));
        }
        let mut out = Config::new();
        for p in self.params() {
            if !self.is_active(p, &out) {
                continue;
            }
            let raw = object.get(&p.name).filter(|v| !v.is_null()).ok_or_else(|| missing(p))?;
            let value = coerce(p, raw)?;
            p.check(&value)?;
            out.set(&p.name, value);
        }
        Ok(out)
    }
}

/// The regular expression of a cell string over the 5 NB201 operations.
pub fn cell_pattern() -> String {
    let ops = format!("({})", Op::ALL.map(Op::name).join("|"));
    let escaped = CELL_FORMAT.replace('|', "\\|").replace('+', "\\+");
    format!("^{}$", escaped.replace("OP", &ops))
}

fn param_schema(p: &Param) -> Json {
    let mut schema = match &p.kind {
        Kind::Categorical { choices } => json!({ "type": "string", "enum": choices }),
        Kind::Ordinal { values } => json!({ "type": "integer", "enum": values }),
        Kind::Int { low, high, .. } => json!({ "type": "integer", "minimum": low, "maximum": high }),
        Kind::Float { low, high, .. } => json!({ "type": "number", "minimum": low, "maximum": high }),
        Kind::Cell => json!({ "type": "string", "pattern": cell_pattern() }),
    };
    schema["description"] = json!(meaning(p));
    schema
}

/// The value `raw` writes for `p`, of `p`'s type (its range is checked by the caller).
fn coerce(p: &Param, raw: &Json) -> Result<Value, Error> {
    let value = match (&p.kind, raw) {
        (Kind::Cell, Json::String(s)) => {
            let reason = |e: autoagent_evaluator::Error| Error::Invalid {
                name: p.name.clone(),
                reason: e.to_string(),
            };
            return Arch::parse(s.trim()).map(Value::Cell).map_err(reason);
        }
        (kind, Json::String(s)) => from_string(kind, s.trim()),
        (Kind::Categorical { .. }, Json::Number(n)) => Some(Value::Str(n.to_string())),
        (Kind::Int { .. } | Kind::Ordinal { .. }, Json::Number(n)) => n.as_i64().or_else(|| n.as_f64().and_then(integral)).map(Value::Int),
        (Kind::Float { .. }, Json::Number(n)) => n.as_f64().map(Value::Float),
        _ => None,
    };
    value.ok_or_else(|| Error::WrongType {
        name: p.name.clone(),
        expected: p.kind.type_name().into(),
        found: short(raw),
    })
}

/// The value a string writes for a kind, if it writes one of its type.
fn from_string(kind: &Kind, s: &str) -> Option<Value> {
    let number = || s.parse::<f64>().ok().filter(|x| x.is_finite());
    match kind {
        Kind::Categorical { choices } => Some(Value::Str(choice(choices, s))),
        Kind::Int { .. } | Kind::Ordinal { .. } => s.parse().ok().or_else(|| number().and_then(integral)).map(Value::Int),
        Kind::Float { .. } => number().map(Value::Float),
        Kind::Cell => Arch::parse(s).ok().map(Value::Cell),
    }
}

/// The choice `s` names, exactly or else ignoring ASCII case; `s` itself if none.
fn choice(choices: &[String], s: &str) -> String {
    let found = choices.iter().find(|c| *c == s).or_else(|| choices.iter().find(|c| c.eq_ignore_ascii_case(s)));
    found.cloned().unwrap_or_else(|| s.to_string())
}

fn integral(x: f64) -> Option<i64> {
    (x.fract() == 0.0 && x.abs() < 9.0e15).then_some(x as i64)
}

/// Compact JSON of `v`, cut to 60 characters.
fn short(v: &Json) -> String {
    let text = v.to_string();
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}
