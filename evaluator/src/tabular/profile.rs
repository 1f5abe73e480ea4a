//! A table's profile, as the LLM sees it: the rows, the target's distribution, and each feature
//! column's kind, missing share and cardinality or range — never a raw row unless the user
//! allows some (`run --llm-rows N`: the first N training rows, as CSV).

use super::dataset::{TabularData, TargetValues};
use super::frame::{ColumnData, FeatureKind, MISSING};

/// Columns listed one a line; past this many, the rest are counted by kind.
pub const LISTED_COLUMNS: usize = 60;

/// The profile of `data`, with its first `rows` rows shown as CSV (0: none).
pub fn profile(data: &TabularData, rows: usize) -> String {
    let mut out = format!(
        "{} training rows; target '{}': {}\n",
        data.len(),
        data.target.name,
        target_line(&data.target.values, data.target.problem.name())
    );
    out.push_str(&format!("{} feature columns:\n", data.features.len()));
    for f in data.features.iter().take(LISTED_COLUMNS) {
        out.push_str(&format!("- {}\n", column_line(f)));
    }
    if data.features.len() > LISTED_COLUMNS {
        let rest = &data.features[LISTED_COLUMNS..];
        let count = |k: FeatureKind| rest.iter().filter(|f| f.kind == k).count();
        out.push_str(&format!(
            "- and {} more ({} numeric, {} categorical, {} boolean)\n",
            rest.len(),
            count(FeatureKind::Numeric),
            count(FeatureKind::Categorical),
            count(FeatureKind::Boolean)
        ));
    }
    if !data.dropped.is_empty() {
        let d: Vec<String> = data.dropped.iter().map(|d| format!("{} ({})", d.name, d.reason)).collect();
        out.push_str(&format!("left out: {}\n", d.join(", ")));
    }
    if rows > 0 {
        out.push_str(&first_rows(data, rows));
    }
    out.trim_end().to_string()
}

fn target_line(values: &TargetValues, problem: &str) -> String {
    match values {
        TargetValues::Classes { classes, .. } => {
            let counts = values.counts();
            let n = values.len().max(1) as f64;
            let each: Vec<String> = classes
                .iter()
                .zip(&counts)
                .map(|(c, k)| format!("'{c}' {:.1} %", 100.0 * *k as f64 / n))
                .collect();
            format!("{problem}, {} classes ({})", classes.len(), each.join(", "))
        }
        TargetValues::Values(v) => {
            let (lo, med, hi) = spread(v);
            let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
            format!("{problem}, min {} median {} max {}, mean {}", short(lo), short(med), short(hi), short(mean))
        }
    }
}

fn column_line(f: &super::dataset::Feature) -> String {
    let c = &f.column;
    let missing = 100.0 * c.missing() as f64 / c.len().max(1) as f64;
    let what = match (&c.data, f.kind) {
        (ColumnData::Numeric(v), FeatureKind::Numeric) => {
            let present: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
            let (lo, med, hi) = spread(&present);
            format!("numeric, min {} median {} max {}", short(lo), short(med), short(hi))
        }
        (ColumnData::Numeric(v), _) => format!(
            "boolean, {:.0} % true",
            100.0 * v.iter().filter(|&&x| x == 1.0).count() as f64 / c.len().max(1) as f64
        ),
        (ColumnData::Categorical { codes, levels }, _) => {
            let mut counts = vec![0usize; levels.len()];
            codes.iter().filter(|&&k| k != MISSING).for_each(|&k| counts[k as usize] += 1);
            let used = counts.iter().filter(|&&k| k > 0).count();
            let mut top: Vec<(usize, &String)> = counts.iter().copied().zip(levels).filter(|(k, _)| *k > 0).collect();
            top.sort_by_key(|t| std::cmp::Reverse(t.0));
            let shown: Vec<String> = top.iter().take(3).map(|(_, l)| format!("'{l}'")).collect();
            format!("categorical, {used} levels (most frequent {})", shown.join(", "))
        }
    };
    if missing > 0.0 {
        format!("{}: {what}, {missing:.1} % missing", c.name)
    } else {
        format!("{}: {what}", c.name)
    }
}

/// The first `n` rows, features then target, as CSV lines under a header.
fn first_rows(data: &TabularData, n: usize) -> String {
    let names: Vec<&str> = data
        .features
        .iter()
        .map(|f| f.column.name.as_str())
        .chain([data.target.name.as_str()])
        .collect();
    let mut out = format!("first {} training rows (CSV):\n{}\n", n.min(data.len()), names.join(","));
    for r in 0..n.min(data.len()) {
        let mut fields: Vec<String> = data.features.iter().map(|f| f.column.text(r).unwrap_or_default()).collect();
        fields.push(match &data.target.values {
            TargetValues::Classes { codes, classes } => classes[codes[r]].clone(),
            TargetValues::Values(v) => short(v[r]),
        });
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// Minimum, median and maximum (`NaN`s when empty).
fn spread(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

/// A number in at most four significant digits.
fn short(x: f64) -> String {
    if x.is_nan() {
        return "n/a".into();
    }
    if x == x.trunc() && x.abs() < 1e6 {
        return format!("{x:.0}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{x:.digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tabular::read::frame_of;

    #[test]
    fn the_profile_shows_kinds_missing_shares_and_the_target_but_no_row_unless_allowed() {
        let frame = frame_of("x,colour,flag,y\n1.5,red,yes,a\n,blue,no,b\n2.25,red,yes,a\n3,red,no,a\n");
        let data = TabularData::from_frame(&frame, "y", None).unwrap();
        let p = profile(&data, 0);
        assert!(p.starts_with("4 training rows; target 'y': binary, 2 classes ('a' 75.0 %, 'b' 25.0 %)"), "{p}");
        assert!(p.contains("- x: numeric, min 1.500 median 2.250 max 3, 25.0 % missing"), "{p}");
        assert!(p.contains("- colour: categorical, 2 levels (most frequent 'red', 'blue')"), "{p}");
        assert!(p.contains("- flag: boolean, 50 % true"), "{p}");
        assert!(!p.contains("1.5,red"), "{p}");
        let p = profile(&data, 2);
        assert!(p.contains("first 2 training rows (CSV):\nx,colour,flag,y\n1.5,red,1,a\n,blue,0,b"), "{p}");
    }
}
