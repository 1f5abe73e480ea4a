//! Configurations as vectors of numbers in [0, 1], for a TPE or Bayesian sampler.

use autoagent_evaluator::nb201::{Op, NUM_EDGES};

use super::config::Config;
use super::numeric::position;
use super::param::Kind;
use super::space::Space;
use super::value::Value;

impl Space {
    /// The length of [`Space::encode`]'s vectors.
    pub fn encoding_len(&self) -> usize {
        self.params().iter().map(|p| width(&p.kind)).sum()
    }

    /// `config` as numbers in [0, 1], parameter by parameter in order: a categorical one-hot
    /// over its choices, a cell one-hot over the 5 operations of each of its 6 edges (30
    /// numbers), an int or float its position in its (log-)range, an ordinal its index over the
    /// last index. A parameter that is absent (inactive) or does not fit encodes as its default.
    pub fn encode(&self, config: &Config) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.encoding_len());
        for p in self.params() {
            let v = config.get(&p.name).filter(|v| p.kind.admits(v).is_ok()).unwrap_or(&p.default);
            encode_value(&p.kind, v, &mut out);
        }
        out
    }
}

fn width(kind: &Kind) -> usize {
    match kind {
        Kind::Categorical { choices } => choices.len(),
        Kind::Cell => NUM_EDGES * Op::ALL.len(),
        _ => 1,
    }
}

fn encode_value(kind: &Kind, value: &Value, out: &mut Vec<f64>) {
    let hot = |yes: bool| if yes { 1.0 } else { 0.0 };
    match (kind, value) {
        (Kind::Categorical { choices }, Value::Str(s)) => out.extend(choices.iter().map(|c| hot(c == s))),
        (Kind::Cell, Value::Cell(a)) => out.extend(a.ops.iter().flat_map(|op| Op::ALL.iter().map(move |o| hot(o == op)))),
        _ => out.push(position(kind, value).unwrap_or(0.5)),
    }
}
