//! A space: an ordered list of checked parameters, and what a configuration of it must hold.

use super::config::Config;
use super::error::Error;
use super::param::{Condition, Kind, Param};
use super::value::Value;

/// Named, typed parameters in order; a parameter's condition refers to an earlier one.
/// Built only through [`Space::new`], which checks every range, default and condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    params: Vec<Param>,
}

impl Space {
    /// The space of `params`, or an error naming the first parameter with an empty or inverted
    /// range, no choices, a default out of range, a taken name or a condition that does not
    /// refer to an earlier categorical or integer parameter's values.
    pub fn new(params: Vec<Param>) -> Result<Space, Error> {
        let mut checked: Vec<Param> = Vec::with_capacity(params.len());
        for mut p in params {
            let invalid = |reason: String| Error::Invalid { name: p.name.clone(), reason };
            check_name(&p.name, &checked).map_err(invalid)?;
            p.kind.check().map_err(invalid)?;
            p.kind.admits(&p.default).map_err(|m| invalid(format!("default: {m}")))?;
            if let Some(c) = &p.condition {
                let normalised = check_condition(c, &checked).map_err(invalid)?;
                p.condition = Some(normalised);
            }
            checked.push(p);
        }
        Ok(Space { params: checked })
    }

    /// The parameters, in order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The parameter `name`.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The parameters' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.params.iter().map(|p| p.name.as_str()).collect()
    }

    /// Every active parameter at its default.
    pub fn default_config(&self) -> Config {
        self.build(|p| p.default.clone())
    }

    /// Whether `param` exists in `config`: it has no condition, or the condition's parameter is
    /// present with one of its values.
    pub fn is_active(&self, param: &Param, config: &Config) -> bool {
        match &param.condition {
            None => true,
            Some(c) => config.get(&c.param).is_some_and(|v| c.holds(v)),
        }
    }

    /// The parameters active in `config`, in order.
    pub fn active(&self, config: &Config) -> Vec<&Param> {
        self.params.iter().filter(|p| self.is_active(p, config)).collect()
    }

    /// Whether `config` holds exactly the active parameters, each of its type and in its range;
    /// the error names the first parameter at fault.
    pub fn validate(&self, config: &Config) -> Result<(), Error> {
        if let Some((name, _)) = config.iter().find(|(n, _)| self.param(n).is_none()) {
            return Err(self.unknown(name));
        }
        for p in &self.params {
            match (self.is_active(p, config), config.get(&p.name)) {
                (true, Some(v)) => p.check(v)?,
                (true, None) => return Err(missing(p)),
                (false, Some(_)) => return Err(inactive(p)),
                (false, None) => {}
            }
        }
        Ok(())
    }

    /// `config` without the parameters that are unknown to the space or inactive in it (a
    /// parameter whose condition's parameter was dropped is dropped too).
    pub fn without_inactive(&self, config: &Config) -> Config {
        let mut out = Config::new();
        for p in &self.params {
            if let (true, Some(v)) = (self.is_active(p, &out), config.get(&p.name)) {
                out.set(&p.name, v.clone());
            }
        }
        out
    }

    /// A configuration made in parameter order: every parameter active given the values chosen
    /// so far gets `value_of(param)`, the others none.
    pub(crate) fn build(&self, mut value_of: impl FnMut(&Param) -> Value) -> Config {
        let mut out = Config::new();
        for p in &self.params {
            if self.is_active(p, &out) {
                out.set(&p.name, value_of(p));
            }
        }
        out
    }

    /// The error for a name that is not a parameter.
    pub(crate) fn unknown(&self, name: &str) -> Error {
        Error::Unknown {
            name: name.to_string(),
            known: self.names().join(", "),
        }
    }
}

/// The error for an active parameter without a value.
pub(crate) fn missing(p: &Param) -> Error {
    Error::Missing {
        name: p.name.clone(),
        when: p.condition.as_ref().map(|c| format!(" (it is active because {c})")).unwrap_or_default(),
    }
}

fn inactive(p: &Param) -> Error {
    Error::Inactive {
        name: p.name.clone(),
        condition: p.condition.as_ref().map(|c| c.to_string()).unwrap_or_default(),
    }
}

fn check_name(name: &str, earlier: &[Param]) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("a name is made of letters, digits and '_'".into());
    }
    match earlier.iter().any(|p| p.name == name) {
        true => Err("the name is taken by an earlier parameter".into()),
        false => Ok(()),
    }
}

/// The condition with its values written as the parent writes them, or why it is wrong.
fn check_condition(c: &Condition, earlier: &[Param]) -> Result<Condition, String> {
    let parent = earlier
        .iter()
        .find(|p| p.name == c.param)
        .ok_or_else(|| format!("its condition refers to '{}', which is not an earlier parameter", c.param))?;
    if !matches!(parent.kind, Kind::Categorical { .. } | Kind::Ordinal { .. } | Kind::Int { .. }) {
        return Err(format!(
            "its condition refers to '{}', a {} parameter (only categorical and integer ones can be)",
            c.param,
            parent.kind.name()
        ));
    }
    if c.values.is_empty() {
        return Err(format!("its condition on '{}' lists no value", c.param));
    }
    let values = c
        .values
        .iter()
        .map(|text| condition_value(parent, text))
        .collect::<Result<Vec<String>, String>>()?;
    Ok(Condition {
        param: c.param.clone(),
        values,
    })
}

fn condition_value(parent: &Param, text: &str) -> Result<String, String> {
    match parent.kind.parse(text) {
        Some(v) if parent.kind.admits(&v).is_ok() => Ok(v.to_string()),
        _ => Err(format!("its condition value '{text}' is not {} ({})", parent.kind.domain(), parent.name)),
    }
}
