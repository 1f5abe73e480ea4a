//! Narrowing a space by the user's text: `lr=0.01:0.1; width=16,32; depth=3; augment=none,crop_flip`.

use super::error::Error;
use super::param::{join, Condition, Kind, Param};
use super::space::Space;
use super::value::Value;

impl Space {
    /// The space with some parameters restricted by `spec`: clauses `name=values` separated by
    /// `;`, where values are a `low:high` range (numbers) or choices separated by `,` (one value
    /// fixes a number). A narrowed range must lie inside the original one; several integers of
    /// an int parameter make it an ordinal of those values. A default outside the narrowed range
    /// moves to the nearest value (a categorical's first remaining choice). A parameter whose
    /// condition can no longer hold is dropped, with those depending on it. The error is one
    /// line naming the parameter (or the clause, if it has no `=`).
    pub fn narrow(&self, spec: &str) -> Result<Space, Error> {
        let mut params = self.params().to_vec();
        let mut seen: Vec<&str> = Vec::new();
        for clause in spec.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            let (name, values) = clause
                .split_once('=')
                .ok_or_else(|| Error::Malformed(format!("expected name=values, found '{clause}'")))?;
            let name = name.trim();
            let index = params.iter().position(|p| p.name == name).ok_or_else(|| self.unknown(name))?;
            if seen.contains(&name) {
                return Err(invalid(name, "narrowed twice".into()));
            }
            seen.push(name);
            params[index] = narrow_param(&params[index], values.trim())?;
        }
        Space::new(prune_conditions(params))
    }
}

fn invalid(name: &str, reason: String) -> Error {
    Error::Invalid {
        name: name.to_string(),
        reason,
    }
}

/// `p` restricted to `values`, its default moved inside.
fn narrow_param(p: &Param, values: &str) -> Result<Param, Error> {
    let kind = match values.split_once(':') {
        Some((low, high)) => narrow_range(p, low.trim(), high.trim())?,
        None => narrow_list(p, &values.split(',').map(str::trim).collect::<Vec<_>>())?,
    };
    let default = match kind.admits(&p.default) {
        Ok(()) => p.default.clone(),
        Err(_) => nearest(&kind, &p.default),
    };
    Ok(Param { kind, default, ..p.clone() })
}

/// The kind of `p` over `low:high`, which must lie inside `p`'s range.
fn narrow_range(p: &Param, low: &str, high: &str) -> Result<Kind, Error> {
    let range = format!("{low}:{high}");
    let number = |text: &str| {
        p.kind
            .parse(text)
            .ok_or_else(|| invalid(&p.name, format!("'{text}' in {range} is not {}", p.kind.type_name())))
    };
    let (lo, hi) = match &p.kind {
        Kind::Int { .. } | Kind::Float { .. } | Kind::Ordinal { .. } => (number(low)?, number(high)?),
        other => {
            return Err(invalid(
                &p.name,
                format!(
                    "a low:high range applies to numbers, not to a {} parameter; list the values with ','",
                    other.name()
                ),
            ))
        }
    };
    if as_f64(&lo) > as_f64(&hi) {
        return Err(invalid(&p.name, format!("empty range {range} (low above high)")));
    }
    // An ordinal keeps its values inside the range; a range of numbers must lie inside the old one.
    let outside = p.kind.admits(&lo).is_err() || p.kind.admits(&hi).is_err();
    if outside && !matches!(p.kind, Kind::Ordinal { .. }) {
        return Err(invalid(&p.name, format!("range {range} is not inside the original range {}", p.kind.domain())));
    }
    Ok(match (&p.kind, lo, hi) {
        (Kind::Int { log, .. }, Value::Int(l), Value::Int(h)) => Kind::Int { low: l, high: h, log: *log },
        (Kind::Float { log, .. }, Value::Float(l), Value::Float(h)) => Kind::Float { low: l, high: h, log: *log },
        (Kind::Ordinal { values }, Value::Int(l), Value::Int(h)) => ordinal_within(p, values, l, h)?,
        _ => unreachable!("numbers parsed by their own kind"),
    })
}

fn ordinal_within(p: &Param, values: &[i64], low: i64, high: i64) -> Result<Kind, Error> {
    let kept: Vec<i64> = values.iter().copied().filter(|v| (low..=high).contains(v)).collect();
    match kept.is_empty() {
        true => Err(invalid(&p.name, format!("no value of {} lies in {low}:{high}", join(values)))),
        false => Ok(Kind::Ordinal { values: kept }),
    }
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(x) => *x,
        _ => f64::NAN,
    }
}

/// The kind of `p` restricted to the listed values, each of which it must admit.
fn narrow_list(p: &Param, items: &[&str]) -> Result<Kind, Error> {
    if items.iter().any(|t| t.is_empty()) {
        return Err(invalid(&p.name, format!("an empty value in '{}'", items.join(","))));
    }
    if matches!(p.kind, Kind::Cell) {
        return Err(invalid(&p.name, "a cell parameter cannot be narrowed".into()));
    }
    let mut values: Vec<Value> = Vec::new();
    for text in items {
        let v = p
            .kind
            .parse(text)
            .ok_or_else(|| invalid(&p.name, format!("'{text}' is not {}", p.kind.type_name())))?;
        p.check(&v)?;
        if !values.contains(&v) {
            values.push(v);
        }
    }
    Ok(match (&p.kind, values.as_slice()) {
        (Kind::Categorical { choices }, _) => Kind::Categorical {
            choices: choices.iter().filter(|c| values.contains(&Value::Str(c.to_string()))).cloned().collect(),
        },
        (Kind::Int { log, .. }, [Value::Int(one)]) => Kind::Int {
            low: *one,
            high: *one,
            log: *log,
        },
        (Kind::Float { log, .. }, [Value::Float(one)]) => Kind::Float {
            low: *one,
            high: *one,
            log: *log,
        },
        (Kind::Ordinal { .. } | Kind::Int { .. }, _) => Kind::Ordinal { values: sorted_ints(&values) },
        _ => return Err(invalid(&p.name, "a float takes one value or a low:high range".into())),
    })
}

fn sorted_ints(values: &[Value]) -> Vec<i64> {
    let mut ints: Vec<i64> = values.iter().filter_map(Value::as_int).collect();
    ints.sort_unstable();
    ints
}

/// The value of `kind` nearest `old` (a categorical's first choice).
fn nearest(kind: &Kind, old: &Value) -> Value {
    let x = as_f64(old);
    match kind {
        Kind::Categorical { choices } => Value::Str(choices[0].clone()),
        Kind::Ordinal { values } => Value::Int(
            *values
                .iter()
                .min_by(|a, b| (**a as f64 - x).abs().total_cmp(&(**b as f64 - x).abs()))
                .expect("a value"),
        ),
        Kind::Int { low, high, .. } => Value::Int((x.round() as i64).clamp(*low, *high)),
        Kind::Float { low, high, .. } => Value::Float(x.clamp(*low, *high)),
        Kind::Cell => old.clone(),
    }
}

/// The parameters with every condition restricted to values its parameter still admits; those
/// whose condition can no longer hold are dropped (and, in turn, those depending on them).
fn prune_conditions(params: Vec<Param>) -> Vec<Param> {
    let mut kept: Vec<Param> = Vec::with_capacity(params.len());
    for mut p in params {
        if let Some(c) = &p.condition {
            let Some(parent) = kept.iter().find(|q| q.name == c.param) else { continue };
            let values: Vec<String> = c
                .values
                .iter()
                .filter(|t| parent.kind.parse(t).is_some_and(|v| parent.kind.admits(&v).is_ok()))
                .cloned()
                .collect();
            if values.is_empty() {
                continue;
            }
            p.condition = Some(Condition {
                param: c.param.clone(),
                values,
            });
        }
        kept.push(p);
    }
    kept
}
