//! Where a number lies in its range, in [0, 1] (on a log scale where the parameter has one), and
//! steps along the range: shared by mutation, local search and the encoding.

use super::param::Kind;
use super::value::Value;

/// The step of local search, as a share of a parameter's (log-)range.
pub(crate) const STEP: f64 = 0.1;

/// Where `value` lies in the kind's range, in [0, 1]: log-scaled where the kind is; an ordinal's
/// index over its last index; 0.5 where the range is one value. `None` for choices, cells and
/// values of another type or outside the choices.
pub(crate) fn position(kind: &Kind, value: &Value) -> Option<f64> {
    match (kind, value) {
        (Kind::Ordinal { values }, Value::Int(i)) => {
            let index = values.iter().position(|v| v == i)?;
            Some(fraction(index as f64, 0.0, (values.len() - 1) as f64))
        }
        (Kind::Int { low, high, log }, Value::Int(i)) => Some(unit(*i as f64, *low as f64, *high as f64, *log)),
        (Kind::Float { low, high, log }, Value::Float(x)) => Some(unit(*x, *low, *high, *log)),
        _ => None,
    }
}

/// The value `delta` (a share of the range; negative: down) away from `value`, different from
/// it, or `None` past the end of the range. An integer moves by at least 1, an ordinal to the
/// adjacent value whatever `delta`'s size.
pub(crate) fn step(kind: &Kind, value: &Value, delta: f64) -> Option<Value> {
    let target = position(kind, value)? + delta;
    let sign = delta.signum() as i64;
    match (kind, value) {
        (Kind::Ordinal { values }, Value::Int(i)) => {
            let index = values.iter().position(|v| v == i)? as i64 + sign;
            values.get(usize::try_from(index).ok()?).copied().map(Value::Int)
        }
        (Kind::Int { low, high, log }, Value::Int(i)) => {
            let mut j = at(target, *low as f64, *high as f64, *log).round() as i64;
            if j == *i {
                j = i + sign;
            }
            (*low..=*high).contains(&j).then_some(Value::Int(j))
        }
        (Kind::Float { low, high, log }, Value::Float(x)) => {
            let y = at(target, *low, *high, *log);
            (y != *x).then_some(Value::Float(y))
        }
        _ => None,
    }
}

/// Where `x` lies between `low` and `high`, in [0, 1], on a log scale if `log`.
fn unit(x: f64, low: f64, high: f64, log: bool) -> f64 {
    let t = |v: f64| if log { v.ln() } else { v };
    fraction(t(x), t(low), t(high))
}

/// The inverse of [`unit`], clamped to the range.
pub(crate) fn at(u: f64, low: f64, high: f64, log: bool) -> f64 {
    let u = u.clamp(0.0, 1.0);
    let x = match log {
        true => (low.ln() + u * (high.ln() - low.ln())).exp(),
        false => low + u * (high - low),
    };
    x.clamp(low, high)
}

fn fraction(x: f64, low: f64, high: f64) -> f64 {
    match high > low {
        true => ((x - low) / (high - low)).clamp(0.0, 1.0),
        false => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_log_scaled_where_the_range_is() {
        let lr = Kind::Float {
            low: 1e-3,
            high: 1e-1,
            log: true,
        };
        assert!((position(&lr, &Value::Float(1e-2)).unwrap() - 0.5).abs() < 1e-12);
        let linear = Kind::Float {
            low: 0.0,
            high: 0.2,
            log: false,
        };
        assert!((position(&linear, &Value::Float(0.05)).unwrap() - 0.25).abs() < 1e-12);
        let width = Kind::Ordinal { values: vec![8, 16, 32, 64] };
        assert_eq!(position(&width, &Value::Int(32)), Some(2.0 / 3.0));
        assert_eq!(position(&width, &Value::Int(12)), None);
    }

    #[test]
    fn steps_move_at_least_one_integer_and_stop_at_the_ends() {
        let depth = Kind::Int { low: 1, high: 5, log: false };
        assert_eq!(step(&depth, &Value::Int(3), STEP), Some(Value::Int(4)));
        assert_eq!(step(&depth, &Value::Int(3), -STEP), Some(Value::Int(2)));
        assert_eq!(step(&depth, &Value::Int(5), STEP), None);
        let width = Kind::Ordinal { values: vec![8, 16, 32, 64] };
        assert_eq!(step(&width, &Value::Int(8), -STEP), None);
        assert_eq!(step(&width, &Value::Int(8), 0.9), Some(Value::Int(16)));
        let lr = Kind::Float {
            low: 1e-3,
            high: 1e-1,
            log: true,
        };
        let up = step(&lr, &Value::Float(1e-2), STEP).unwrap().as_float().unwrap();
        assert!((up / 1e-2 - 10f64.powf(0.2)).abs() < 1e-9, "{up}");
        assert_eq!(step(&lr, &Value::Float(1e-1), STEP), None);
    }
}
