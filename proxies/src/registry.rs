//! Proxies by name.

use crate::Proxy;

/// Every proxy's name, in the order tables list them.
pub fn all_names() -> &'static [&'static str] {
    &[
        "synflow",
        "naswot",
        "jacob_cov",
        "grad_norm",
        "snip",
        "grasp",
        "fisher",
        "zen",
        "zico",
        "params",
        "flops",
    ]
}

/// The proxy called `name`, or `None`.
pub fn by_name(name: &str) -> Option<Box<dyn Proxy>> {
    Some(match name {
        "synflow" => Box::new(crate::synflow::Synflow),
        "naswot" | "nwot" => Box::new(crate::naswot::Naswot),
        "jacob_cov" | "jacov" => Box::new(crate::jacob_cov::JacobCov),
        "grad_norm" => Box::new(crate::grad_norm::GradNorm),
        "snip" => Box::new(crate::snip::Snip),
        "grasp" => Box::new(crate::grasp::Grasp::default()),
        "fisher" => Box::new(crate::fisher::Fisher),
        "zen" => Box::new(crate::zen::Zen),
        "zico" => Box::new(crate::zico::Zico),
        "params" => Box::new(crate::params::Params),
        "flops" => Box::new(crate::flops::Flops),
        _ => return None,
    })
}

/// Parse a comma-separated list of proxy names (`all` for every proxy), rejecting unknown names.
pub fn parse_list(spec: &str) -> Result<Vec<Box<dyn Proxy>>, String> {
    let names: Vec<&str> = if spec.trim() == "all" {
        all_names().to_vec()
    } else {
        spec.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
    };
    if names.is_empty() {
        return Err("no proxy named".into());
    }
    names
        .into_iter()
        .map(|n| by_name(n).ok_or_else(|| format!("unknown proxy `{n}` (known: {}, or all)", all_names().join(", "))))
        .collect()
}
