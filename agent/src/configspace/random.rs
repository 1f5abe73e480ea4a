//! Random operations on configurations: sample, mutate one parameter, uniform crossover. All are
//! deterministic given the generator (a seeded `ChaCha8Rng` in the strategies).

use autoagent_evaluator::nb201::Arch;
use rand::Rng;

use super::config::Config;
use super::numeric::step;
use super::param::{Kind, Param};
use super::space::Space;
use super::value::Value;

impl Space {
    /// A random configuration: every active parameter drawn uniformly from its range (log-uniformly
    /// where the parameter is log-scaled), a cell uniformly among the 15,625.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Config {
        self.build(|p| sample_value(&p.kind, rng))
    }

    /// `config` (a valid configuration of the space) with exactly one of its active parameters
    /// changed, chosen uniformly among those whose range holds another value: a cell by
    /// [`Arch::mutate`], a categorical to another choice, a number by a step of 5–25 % of its
    /// (log-)range, clamped (an ordinal to the adjacent value), or a new draw. Parameters the
    /// change activates are sampled; those it deactivates go. `config` itself when nothing can
    /// change.
    pub fn mutate<R: Rng + ?Sized>(&self, config: &Config, rng: &mut R) -> Config {
        let candidates: Vec<&Param> = self.active(config).into_iter().filter(|p| p.kind.varies()).collect();
        if candidates.is_empty() {
            return config.clone();
        }
        // One parameter (an NB201 table's cell) is chosen without a draw: the generator's
        // sequence is then that of mutating the value itself.
        let chosen = match candidates.len() {
            1 => candidates[0],
            n => candidates[rng.random_range(0..n)],
        };
        let new = mutate_value(&chosen.kind, config.get(&chosen.name).unwrap_or(&chosen.default), rng);
        self.build(|p| match p.name == chosen.name {
            true => new.clone(),
            false => config.get(&p.name).cloned().unwrap_or_else(|| sample_value(&p.kind, rng)),
        })
    }

    /// A child of `a` and `b` (valid configurations of the space): each active parameter from
    /// either parent with even odds, or from the other where the first lacks it (it was inactive
    /// there), or sampled where both lack it; conditions hold by construction.
    pub fn crossover<R: Rng + ?Sized>(&self, a: &Config, b: &Config, rng: &mut R) -> Config {
        self.build(|p| {
            let (first, second) = if rng.random_bool(0.5) { (a, b) } else { (b, a) };
            match first.get(&p.name).or_else(|| second.get(&p.name)) {
                Some(v) => v.clone(),
                None => sample_value(&p.kind, rng),
            }
        })
    }
}

/// A uniform draw of the kind's range, log-uniform where it is log-scaled.
pub(crate) fn sample_value<R: Rng + ?Sized>(kind: &Kind, rng: &mut R) -> Value {
    match kind {
        Kind::Categorical { choices } => Value::Str(choices[rng.random_range(0..choices.len())].clone()),
        Kind::Ordinal { values } => Value::Int(values[rng.random_range(0..values.len())]),
        Kind::Int { low, high, log } => Value::Int(sample_int(*low, *high, *log, rng)),
        Kind::Float { low, high, log } => Value::Float(sample_float(*low, *high, *log, rng)),
        Kind::Cell => Value::Cell(Arch::sample(rng)),
    }
}

fn sample_int<R: Rng + ?Sized>(low: i64, high: i64, log: bool, rng: &mut R) -> i64 {
    if !log || low == high {
        return rng.random_range(low..=high);
    }
    // The floor of a log-uniform draw over [low, high + 1): each integer gets the log-width of
    // the unit interval above it.
    let x = rng.random_range((low as f64).ln()..((high + 1) as f64).ln()).exp();
    (x.floor() as i64).clamp(low, high)
}

fn sample_float<R: Rng + ?Sized>(low: f64, high: f64, log: bool, rng: &mut R) -> f64 {
    match (low == high, log) {
        (true, _) => low,
        (false, false) => rng.random_range(low..=high),
        (false, true) => rng.random_range(low.ln()..=high.ln()).exp().clamp(low, high),
    }
}

/// A value of the kind other than `value` (the kind must admit more than one).
fn mutate_value<R: Rng + ?Sized>(kind: &Kind, value: &Value, rng: &mut R) -> Value {
    match (kind, value) {
        (Kind::Cell, Value::Cell(a)) => Value::Cell(a.mutate(rng)),
        (Kind::Categorical { choices }, Value::Str(s)) => {
            let others: Vec<&String> = choices.iter().filter(|c| *c != s).collect();
            Value::Str(others[rng.random_range(0..others.len())].clone())
        }
        _ if rng.random_bool(0.5) => nudge(kind, value, rng).unwrap_or_else(|| resample(kind, value, rng)),
        _ => resample(kind, value, rng),
    }
}

/// A step of 5–25 % of the range in a random direction, or the other way at the range's end.
fn nudge<R: Rng + ?Sized>(kind: &Kind, value: &Value, rng: &mut R) -> Option<Value> {
    let size = rng.random_range(0.05..0.25);
    let delta = if rng.random_bool(0.5) { size } else { -size };
    step(kind, value, delta).or_else(|| step(kind, value, -delta))
}

/// A new draw other than `value`; the range holds another value, so one comes within a few
/// draws (after 64 misses, a step).
fn resample<R: Rng + ?Sized>(kind: &Kind, value: &Value, rng: &mut R) -> Value {
    for _ in 0..64 {
        let v = sample_value(kind, rng);
        if &v != value {
            return v;
        }
    }
    step(kind, value, 0.1).or_else(|| step(kind, value, -0.1)).unwrap_or_else(|| value.clone())
}
