//! How the report writes numbers and cells.

use std::collections::BTreeMap;

use super::LlmUse;

/// `v` with about `sig` significant digits: scientific for very large or small magnitudes.
pub(crate) fn fmt_num(v: f64, sig: i32) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{:.*e}", (sig - 1).max(0) as usize, v);
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.trim_end_matches('0').trim_end_matches('.')
        } else {
            mantissa
        };
        return format!("{mantissa}e{exp}");
    }
    let decimals = (sig - 1 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

pub(crate) fn fmt_rho(rho: Option<f64>) -> String {
    rho.map_or_else(|| "n/a".into(), |r| format!("{r:.3}"))
}

pub(crate) fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.decimals$}"))
}

pub(crate) fn fmt_share(u: &LlmUse) -> String {
    match u.valid_share {
        Some(s) => format!("{:.1} % ({} of {})", s * 100.0, u.valid_proposals, u.valid_proposals + u.invalid_proposals),
        None => "—".into(),
    }
}

/// Escape a Markdown table cell (arch strings hold `|`).
pub(crate) fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

pub(crate) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `s` as a file name: every character but ASCII letters, digits, `_` and `-` as `_`.
pub(crate) fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect()
}

const STATE_ORDER: [&str; 6] = ["complete", "failed", "pruned", "lost", "running", "pending"];

/// Trial states and their counts, the usual ones first in [`STATE_ORDER`].
pub(crate) fn states_in_order(states: &BTreeMap<String, usize>) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = STATE_ORDER.iter().filter_map(|s| states.get(*s).map(|n| (s.to_string(), *n))).collect();
    v.extend(states.iter().filter(|(k, _)| !STATE_ORDER.contains(&k.as_str())).map(|(k, n)| (k.clone(), *n)));
    v
}
