//! The configurations one parameter away, for local search.

use super::config::Config;
use super::numeric::{step, STEP};
use super::param::Kind;
use super::space::Space;
use super::value::Value;

impl Space {
    /// Every configuration one parameter away from `config` (a valid configuration of the
    /// space), in parameter order: a cell's 24 one-edge changes
    /// ([`crate::strategy::neighbours`]), every other choice of a categorical, and for a number a
    /// step of a tenth of its (log-)range down and up (an integer by at least 1, an ordinal to
    /// the adjacent values) where the range allows. Parameters a change activates take their
    /// defaults; those it deactivates go. The list holds distinct configurations, none equal to
    /// `config`; isomorphic cells stay apart (compare [`Config::key`]s where that matters).
    pub fn neighbours(&self, config: &Config) -> Vec<Config> {
        let mut out: Vec<Config> = Vec::new();
        for p in self.active(config) {
            let Some(current) = config.get(&p.name) else { continue };
            for v in neighbour_values(&p.kind, current) {
                let n = self.build(|q| match q.name == p.name {
                    true => v.clone(),
                    false => config.get(&q.name).unwrap_or(&q.default).clone(),
                });
                if n != *config && !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }
}

fn neighbour_values(kind: &Kind, value: &Value) -> Vec<Value> {
    match (kind, value) {
        (Kind::Cell, Value::Cell(a)) => crate::strategy::neighbours(a).into_iter().map(Value::Cell).collect(),
        (Kind::Categorical { choices }, Value::Str(s)) => choices.iter().filter(|c| *c != s).map(|c| Value::Str(c.clone())).collect(),
        _ => [-STEP, STEP].iter().filter_map(|&d| step(kind, value, d)).collect(),
    }
}
