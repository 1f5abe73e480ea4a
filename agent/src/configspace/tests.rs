//! Tests of spaces and configurations over the vision space and small spaces of their own.

use autoagent_evaluator::nb201::Arch;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value as Json};

use super::*;

const BEST: &str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|";

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn lr(low: f64, high: f64) -> Param {
    Param::new("lr", Kind::Float { low, high, log: true }, Value::Float(low), "learning rate")
}

/// The error of building a space of `params`, checked to name `param`.
fn build_error(params: Vec<Param>, param: &str) -> String {
    let err = Space::new(params).unwrap_err();
    assert_eq!(err.param(), Some(param), "{err}");
    err.to_string()
}

#[test]
fn bad_ranges_defaults_and_conditions_are_errors_naming_the_parameter() {
    let opt = |choices: &[&str]| {
        Param::new(
            "opt",
            Kind::Categorical {
                choices: choices.iter().map(|c| c.to_string()).collect(),
            },
            Value::Str("sgd".into()),
            "optimiser",
        )
    };
    assert!(build_error(vec![lr(0.1, 0.01)], "lr").contains("empty range 0.1:0.01 (low above high)"));
    assert!(build_error(vec![lr(0.0, 0.1)], "lr").contains("log scale"));
    assert!(build_error(vec![opt(&[])], "opt").contains("no choices"));
    assert!(build_error(vec![opt(&["adam", "adam"])], "opt").contains("listed twice"));
    assert!(build_error(vec![opt(&["adam"])], "opt").contains("default"));
    let depth = |low, high, default| Param::new("depth", Kind::Int { low, high, log: false }, Value::Int(default), "cells");
    assert!(build_error(vec![depth(5, 1, 3)], "depth").contains("low above high"));
    assert!(build_error(vec![depth(1, 5, 9)], "depth").contains("default: 9 is not 1 to 5"));
    let wrong_type = Param::new("depth", Kind::Int { low: 1, high: 5, log: false }, Value::Float(2.0), "cells");
    assert!(build_error(vec![wrong_type], "depth").contains("expected an integer"));
    let width = Param::new("width", Kind::Ordinal { values: vec![16, 8] }, Value::Int(8), "channels");
    assert!(build_error(vec![width], "width").contains("must increase"));
    assert!(build_error(vec![opt(&["sgd"]), opt(&["sgd"])], "opt").contains("taken"));
    let momentum = || {
        Param::new(
            "momentum",
            Kind::Float {
                low: 0.0,
                high: 1.0,
                log: false,
            },
            Value::Float(0.9),
            "momentum",
        )
    };
    assert!(build_error(vec![momentum().when("opt", &["sgd"]), opt(&["sgd"])], "momentum").contains("not an earlier parameter"));
    assert!(build_error(vec![opt(&["sgd", "adam"]), momentum().when("opt", &["rmsprop"])], "momentum").contains("'rmsprop' is not one of sgd, adam"));
    assert!(build_error(vec![lr(0.01, 0.1), momentum().when("lr", &["0.05"])], "momentum").contains("a float parameter"));
    assert!(Space::new(vec![opt(&["sgd", "adam"]), momentum().when("opt", &["sgd"])]).is_ok());
}

#[test]
fn the_vision_space_is_valid_and_its_defaults_are_nb201s_network() {
    let space = vision_space();
    assert_eq!(
        space.names(),
        [
            "cell",
            "width",
            "depth",
            "lr",
            "weight_decay",
            "batch",
            "augment",
            "cutout_length",
            "label_smoothing"
        ]
    );
    let defaults = space.default_config();
    space.validate(&defaults).unwrap();
    assert_eq!(defaults, Config::from(&VisionConfig::default()));
    assert_eq!(VisionConfig::try_from(&defaults).unwrap(), VisionConfig::default());
    assert_eq!(defaults.cell("cell").unwrap().to_string(), MEDIAN_CELL);
    assert_eq!((defaults.int("width"), defaults.int("depth")), (Some(16), Some(5)));
    assert!(defaults.get("cutout_length").is_none());
}

/// `config`'s validation error, checked to name `param` in the variant and the message.
fn invalid(config: &Config, param: &str) -> Error {
    let err = vision_space().validate(config).unwrap_err();
    assert_eq!(err.param(), Some(param), "{err}");
    assert!(err.to_string().contains(&format!("'{param}'")), "{err}");
    err
}

#[test]
fn validation_errors_name_the_parameter() {
    let base = vision_space().default_config();
    let err = invalid(&base.clone().with("dropout", Value::Float(0.1)), "dropout");
    assert!(err.to_string().contains("known: cell, width"), "{err}");
    let mut no_lr = base.clone();
    no_lr.remove("lr");
    assert!(matches!(invalid(&no_lr, "lr"), Error::Missing { .. }));
    let cutout = base.clone().with("augment", Value::Str("crop_flip_cutout".into()));
    assert!(invalid(&cutout, "cutout_length")
        .to_string()
        .contains("active because augment is crop_flip_cutout"));
    let stray = base.clone().with("cutout_length", Value::Int(8));
    assert!(matches!(invalid(&stray, "cutout_length"), Error::Inactive { .. }));
    assert!(matches!(invalid(&base.clone().with("lr", Value::Int(1)), "lr"), Error::WrongType { .. }));
    assert!(matches!(
        invalid(&base.clone().with("cell", Value::Str(BEST.into())), "cell"),
        Error::WrongType { .. }
    ));
    let err = invalid(&base.clone().with("width", Value::Int(12)), "width");
    assert_eq!(err.to_string(), "parameter 'width': 12 is not one of 8, 16, 32, 64");
    assert!(matches!(invalid(&base.clone().with("lr", Value::Float(0.9)), "lr"), Error::OutOfRange { .. }));
    assert!(matches!(
        invalid(&base.clone().with("augment", Value::Str("mixup".into())), "augment"),
        Error::OutOfRange { .. }
    ));
    vision_space().validate(&cutout.with("cutout_length", Value::Int(8))).unwrap();
    assert_eq!(vision_space().without_inactive(&stray.with("dropout", Value::Float(0.1))), base);
}

#[test]
fn configurations_round_trip_through_compact_json() {
    let space = vision_space();
    let defaults = space.default_config();
    assert_eq!(
        defaults.to_json(),
        format!("{{\"augment\":\"crop_flip\",\"batch\":128,\"cell\":\"{MEDIAN_CELL}\",\"depth\":5,\"label_smoothing\":0.0,\"lr\":0.1,\"weight_decay\":0.0005,\"width\":16}}")
    );
    assert_eq!(
        defaults.to_string(),
        format!("augment=crop_flip batch=128 cell={MEDIAN_CELL} depth=5 label_smoothing=0 lr=0.1 weight_decay=0.0005 width=16")
    );
    let mut r = rng(1);
    for _ in 0..300 {
        let c = space.sample(&mut r);
        let back = Config::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c);
        space.validate(&back).unwrap();
    }
    assert!(Config::from_json("{\"lr\": [0.1]}").is_err());
}

#[test]
fn the_key_merges_isomorphic_cells_and_floats_equal_to_four_digits() {
    let space = vision_space();
    let with = |cell: &str, lr: f64| {
        space
            .default_config()
            .with("cell", Value::Cell(Arch::parse(cell).unwrap()))
            .with("lr", Value::Float(lr))
    };
    // Conv on 0->2 and pool on 1->2 against the two swapped: the same cell up to isomorphism.
    let a = "|skip_connect~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|";
    let b = "|skip_connect~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|";
    assert_ne!(with(a, 0.1), with(b, 0.1));
    assert_eq!(with(a, 0.1).key(), with(b, 0.1).key());
    assert_eq!(with(a, 0.1).key(), with(a, 0.10004).key());
    assert_ne!(with(a, 0.1).key(), with(a, 0.1001).key());
    assert_ne!(with(a, 0.1).key(), with(BEST, 0.1).key());
    assert_ne!(with(a, 0.1).key(), with(a, 0.1).with("depth", Value::Int(4)).key());
    let mut r = rng(2);
    for _ in 0..200 {
        let c = space.sample(&mut r);
        let cutout = c.str("augment") == Some("crop_flip_cutout");
        assert_eq!(c.key().contains("cutout_length="), cutout, "{}", c.key());
    }
}

/// Whether `c` is valid and holds `cutout_length` exactly when it crops, flips and cuts out.
fn conditions_hold(c: &Config) {
    vision_space().validate(c).unwrap_or_else(|e| panic!("{c}: {e}"));
    assert_eq!(c.get("cutout_length").is_some(), c.str("augment") == Some("crop_flip_cutout"), "{c}");
}

#[test]
fn sample_mutate_and_crossover_keep_the_conditions() {
    let space = vision_space();
    let mut r = rng(3);
    let mut augments = std::collections::BTreeSet::new();
    let mut c = space.sample(&mut r);
    for _ in 0..1000 {
        let other = space.sample(&mut r);
        conditions_hold(&other);
        c = space.mutate(&c, &mut r);
        conditions_hold(&c);
        c = space.crossover(&c, &other, &mut r);
        conditions_hold(&c);
        augments.insert(c.str("augment").unwrap().to_string());
    }
    assert_eq!(augments.len(), 3);
}

#[test]
fn operations_are_deterministic_given_the_seed() {
    let space = vision_space();
    let run = |seed| {
        let mut r = rng(seed);
        let a = space.sample(&mut r);
        let b = space.mutate(&a, &mut r);
        let c = space.crossover(&a, &b, &mut r);
        (a, b, c)
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[test]
fn sampling_is_log_uniform_where_the_range_is_log_scaled() {
    let space = vision_space();
    let mut r = rng(4);
    let samples: Vec<Config> = (0..2001).map(|_| space.sample(&mut r)).collect();
    // Where each lr lies between the bounds on a log scale: uniform, so its quartiles are
    // near 1/4, 1/2, 3/4 (the median lr near the geometric mean of the bounds, 0.0224; a
    // linear draw would put it near 0.25).
    let mut u: Vec<f64> = samples.iter().map(|c| (c.float("lr").unwrap() / 1e-3).ln() / 500f64.ln()).collect();
    u.sort_by(f64::total_cmp);
    for q in [0.25, 0.5, 0.75] {
        let at = u[(q * 2000.0) as usize];
        assert!((at - q).abs() < 0.04, "quantile {q} of lr on the log scale: {at}");
    }
    let smoothing = median(samples.iter().map(|c| c.float("label_smoothing").unwrap()).collect());
    assert!((smoothing - 0.1).abs() < 0.015, "median label smoothing {smoothing}");
    let counts = Kind::Int { low: 1, high: 1000, log: true };
    let space = Space::new(vec![Param::new("n", counts, Value::Int(10), "a count")]).unwrap();
    let n = median((0..2001).map(|_| space.sample(&mut r).int("n").unwrap() as f64).collect());
    assert!((20.0..50.0).contains(&n), "median of a log-uniform int over 1..=1000: {n}");
}

#[test]
fn mutation_changes_exactly_one_parameter() {
    let space = vision_space();
    let mut r = rng(5);
    let mut changed = std::collections::BTreeSet::new();
    let mut c = space.sample(&mut r);
    for _ in 0..2000 {
        let m = space.mutate(&c, &mut r);
        let differing: Vec<&str> = c.iter().filter(|(n, v)| m.get(n).is_some_and(|w| w != *v)).map(|(n, _)| n).collect();
        let appeared_or_went: Vec<&str> = space.names().into_iter().filter(|n| c.get(n).is_some() != m.get(n).is_some()).collect();
        assert_eq!(differing.len(), 1, "{c}\n{m}");
        if !appeared_or_went.is_empty() {
            assert_eq!((differing[0], appeared_or_went.as_slice()), ("augment", ["cutout_length"].as_slice()));
        }
        changed.insert(differing[0].to_string());
        c = m;
    }
    assert_eq!(changed.len(), space.names().len(), "{changed:?}");
}

#[test]
fn mutation_of_a_space_with_nothing_to_change_returns_the_configuration() {
    let space = vision_space()
        .narrow("width=16;depth=5;lr=0.1;weight_decay=0.0005;batch=64;augment=none;label_smoothing=0")
        .unwrap();
    let c = space.default_config().with("cell", Value::Cell(Arch::parse(BEST).unwrap()));
    let m = space.mutate(&c, &mut rng(6));
    assert_eq!(m.iter().filter(|(n, v)| c.get(n) != Some(*v)).map(|(n, _)| n).collect::<Vec<_>>(), ["cell"]);
    let fixed = Space::new(vec![Param::new("depth", Kind::Int { low: 3, high: 3, log: false }, Value::Int(3), "cells")]).unwrap();
    assert_eq!(fixed.mutate(&fixed.default_config(), &mut rng(6)), fixed.default_config());
}

#[test]
fn crossover_takes_every_value_from_a_parent() {
    let space = vision_space();
    let mut r = rng(7);
    let (mut from_a, mut from_b) = (0, 0);
    for _ in 0..300 {
        let (a, b) = (space.sample(&mut r), space.sample(&mut r));
        let child = space.crossover(&a, &b, &mut r);
        for (name, v) in child.iter() {
            from_a += usize::from(a.get(name) == Some(v) && b.get(name) != Some(v));
            from_b += usize::from(b.get(name) == Some(v) && a.get(name) != Some(v));
            let from_parent = a.get(name) == Some(v) || b.get(name) == Some(v);
            assert!(
                from_parent || (name == "cutout_length" && a.get(name).is_none() && b.get(name).is_none()),
                "{name}={v}"
            );
        }
    }
    let share = from_a as f64 / (from_a + from_b) as f64;
    assert!(
        (0.45..0.55).contains(&share),
        "uniform crossover took {share} of the differing values from the first parent"
    );
}

#[test]
fn neighbours_are_valid_distinct_one_parameter_changes() {
    let space = vision_space();
    let defaults = space.default_config();
    let around = space.neighbours(&defaults);
    // 24 cells, width 8 and 32, depth 4, lr and weight decay down and up, batch 64 and 256,
    // 2 other augmentations, label smoothing up only.
    assert_eq!(around.len(), 24 + 2 + 1 + 2 + 2 + 2 + 2 + 1);
    let mut r = rng(8);
    for c in std::iter::once(defaults).chain((0..50).map(|_| space.sample(&mut r))) {
        let around = space.neighbours(&c);
        for (i, n) in around.iter().enumerate() {
            conditions_hold(n);
            assert_ne!(n, &c);
            assert!(!around[..i].contains(n), "{n} twice");
            let differing = c.iter().filter(|(name, v)| n.get(name).is_some_and(|w| w != *v)).count();
            assert_eq!(differing, 1, "{c}\n{n}");
        }
    }
    let cutout = space
        .default_config()
        .with("augment", Value::Str("crop_flip_cutout".into()))
        .with("cutout_length", Value::Int(16));
    let lengths: Vec<i64> = space
        .neighbours(&cutout)
        .iter()
        .filter_map(|n| n.int("cutout_length"))
        .filter(|&l| l != 16)
        .collect();
    assert_eq!(lengths, [15]);
}

#[test]
fn encodings_have_the_space_length_and_lie_in_the_unit_interval() {
    let space = vision_space();
    assert_eq!(space.encoding_len(), 30 + 1 + 1 + 1 + 1 + 1 + 3 + 1 + 1);
    let mut r = rng(9);
    let mut seen: Vec<Vec<f64>> = Vec::new();
    for _ in 0..300 {
        let c = space.sample(&mut r);
        let x = space.encode(&c);
        assert_eq!(x.len(), space.encoding_len());
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)), "{x:?}");
        assert_eq!(x[..30].iter().sum::<f64>(), 6.0);
        assert_eq!(x[35..38].iter().sum::<f64>(), 1.0);
        assert!(!seen.contains(&x));
        seen.push(x);
    }
    let lr_of = |lr: f64| space.encode(&space.default_config().with("lr", Value::Float(lr)))[32];
    assert_eq!((lr_of(1e-3), lr_of(0.5)), (0.0, 1.0));
    assert!((lr_of((1e-3f64 * 0.5).sqrt()) - 0.5).abs() < 1e-12);
}

/// The narrowing error of `spec` on the vision space, checked to name `param`.
fn narrow_error(spec: &str, param: Option<&str>) -> String {
    let err = vision_space().narrow(spec).unwrap_err();
    assert_eq!(err.param(), param, "{err}");
    assert!(!err.to_string().contains('\n'));
    err.to_string()
}

#[test]
fn narrowing_errors_are_one_line_naming_the_parameter() {
    assert_eq!(narrow_error("lr=0.1:0.01", Some("lr")), "parameter 'lr': empty range 0.1:0.01 (low above high)");
    let unknown = narrow_error("lr=0.01:0.1; x=1", Some("x"));
    assert!(unknown.starts_with("unknown parameter 'x' (known: cell, width, depth"), "{unknown}");
    assert!(narrow_error("lr=0.0001:0.1", Some("lr")).contains("not inside the original range 0.001 to 0.5 (log scale)"));
    assert!(narrow_error("depth=0:3", Some("depth")).contains("not inside"));
    assert!(narrow_error("width=12", Some("width")).contains("12 is not one of 8, 16, 32, 64"));
    assert!(narrow_error("width=100:200", Some("width")).contains("no value"));
    assert!(narrow_error("augment=none,mixup", Some("augment")).contains("mixup"));
    assert!(narrow_error("augment=", Some("augment")).contains("empty value"));
    assert!(narrow_error("augment=a:b", Some("augment")).contains("applies to numbers"));
    assert!(narrow_error("lr=0.1,0.2", Some("lr")).contains("one value or a low:high range"));
    assert!(narrow_error("lr=fast", Some("lr")).contains("'fast' is not a number"));
    assert!(narrow_error(&format!("cell={BEST}"), Some("cell")).contains("cannot be narrowed"));
    assert!(narrow_error("lr=0.01:0.1;lr=0.02:0.1", Some("lr")).contains("twice"));
    assert!(narrow_error("lr 0.1", None).contains("expected name=values"));
}

#[test]
fn narrowed_spaces_sample_inside_their_ranges() {
    let space = vision_space().narrow(" lr=0.01:0.1; width=16,32; depth=3; augment=none,crop_flip ;").unwrap();
    assert!(space.param("cutout_length").is_none(), "its condition can no longer hold");
    assert_eq!(space.param("width").unwrap().kind, Kind::Ordinal { values: vec![16, 32] });
    let mut r = rng(10);
    for _ in 0..500 {
        let c = space.sample(&mut r);
        space.validate(&c).unwrap();
        vision_space().validate(&c).unwrap();
        assert!((0.01..=0.1).contains(&c.float("lr").unwrap()));
        assert!([16, 32].contains(&c.int("width").unwrap()));
        assert_eq!(c.int("depth"), Some(3));
        assert_ne!(c.str("augment"), Some("crop_flip_cutout"));
        for n in space.neighbours(&c).iter().chain([space.mutate(&c, &mut r)].iter()) {
            space.validate(n).unwrap();
        }
    }
    let moved = vision_space()
        .narrow("lr=0.2:0.5; depth=1,2; batch=32:64; augment=crop_flip_cutout; cutout_length=4:6")
        .unwrap();
    let defaults = moved.default_config();
    assert_eq!(defaults.float("lr"), Some(0.2));
    assert_eq!((defaults.int("depth"), defaults.int("batch")), (Some(2), Some(64)));
    assert_eq!((defaults.str("augment"), defaults.int("cutout_length")), (Some("crop_flip_cutout"), Some(6)));
    moved.validate(&defaults).unwrap();
    assert_eq!(vision_space().narrow("").unwrap(), vision_space());
}

/// Whether `v` conforms to `schema`, for the keywords the space's schema uses.
fn conforms(schema: &Json, v: &Json) -> Result<(), String> {
    let fail = |why: &str| Err(format!("{v}: {why}"));
    let is_type = match schema["type"].as_str() {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        _ => true,
    };
    if !is_type {
        return fail("wrong type");
    }
    if schema["enum"].as_array().is_some_and(|e| !e.contains(v)) {
        return fail("not in enum");
    }
    if schema["minimum"].as_f64().is_some_and(|m| v.as_f64().unwrap() < m) || schema["maximum"].as_f64().is_some_and(|m| v.as_f64().unwrap() > m) {
        return fail("out of bounds");
    }
    if let Some(p) = schema["pattern"].as_str() {
        if !regex::Regex::new(p).unwrap().is_match(v.as_str().unwrap()) {
            return fail("does not match the pattern");
        }
    }
    if schema["maxLength"].as_u64().is_some_and(|m| v.as_str().unwrap().chars().count() as u64 > m) {
        return fail("too long");
    }
    if schema["minItems"].as_u64().is_some_and(|m| (v.as_array().unwrap().len() as u64) < m) {
        return fail("too few items");
    }
    for item in v.as_array().into_iter().flatten() {
        conforms(&schema["items"], item)?;
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        if v.get(required.as_str().unwrap()).is_none() {
            return fail(&format!("lacks {required}"));
        }
    }
    for (k, x) in v.as_object().into_iter().flatten() {
        match schema["properties"].get(k) {
            Some(s) => conforms(s, x)?,
            None if schema["additionalProperties"] == json!(false) => return fail(&format!("has {k}")),
            None => {}
        }
    }
    Ok(())
}

#[test]
fn the_reply_schema_accepts_valid_configurations_and_names_every_parameter() {
    let space = vision_space();
    let schema = space.json_schema();
    let item = &schema["properties"]["candidates"]["items"];
    let properties: Vec<&String> = item["properties"].as_object().unwrap().keys().collect();
    assert_eq!(properties.len(), space.names().len());
    assert!(space.names().iter().all(|n| item["properties"].get(*n).is_some()));
    let required: Vec<&str> = item["required"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(required, space.names().into_iter().filter(|n| *n != "cutout_length").collect::<Vec<_>>());
    assert_eq!(
        item["properties"]["cutout_length"]["description"],
        "side in pixels of the cutout square (only when augment is crop_flip_cutout)"
    );
    let mut r = rng(11);
    let mut candidates = vec![serde_json::to_value(space.default_config()).unwrap()];
    candidates.extend((0..200).map(|_| serde_json::to_value(space.sample(&mut r)).unwrap()));
    let reply = json!({ "candidates": candidates, "reason": "defaults, then random" });
    conforms(&schema, &reply).unwrap();
    let defaults = serde_json::to_value(space.default_config()).unwrap();
    for (k, bad) in [
        ("width", json!(12)),
        ("lr", json!(0.9)),
        ("depth", json!(2.5)),
        ("cell", json!("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")),
        ("dropout", json!(0.1)),
    ] {
        let mut c = defaults.clone();
        c[k] = bad;
        assert!(conforms(&schema, &json!({ "candidates": [c], "reason": "" })).is_err(), "{k}");
    }
    assert!(conforms(&schema, &json!({ "candidates": [], "reason": "" })).is_err());
}

#[test]
fn the_cell_pattern_accepts_exactly_the_arch_strings() {
    let re = regex::Regex::new(&cell_pattern()).unwrap();
    for a in Arch::all().step_by(7) {
        assert!(re.is_match(&a.to_string()), "{a}");
    }
    for bad in [
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|",
        &format!("{BEST}x"),
        &BEST.replace("~2", "~1"),
        &BEST.replace("skip_connect", "skip"),
    ] {
        assert!(!re.is_match(bad), "{bad}");
    }
}

/// The candidate error of `v`, checked to name `param`.
fn candidate_error(v: Json, param: &str) -> String {
    let err = vision_space().parse_candidate(&v).unwrap_err();
    assert_eq!(err.param(), Some(param), "{err}");
    err.to_string()
}

#[test]
fn candidates_are_read_leniently_and_rejected_with_the_parameter_named() {
    let space = vision_space();
    let sloppy = json!({
        "cell": format!(" {BEST} "), "width": "32", "depth": 3.0, "lr": "0.05", "weight_decay": "5e-4",
        "batch": 64, "augment": "Crop_Flip", "cutout_length": 8, "label_smoothing": 0
    });
    let c = space.parse_candidate(&sloppy).unwrap();
    space.validate(&c).unwrap();
    let expected = VisionConfig {
        arch: Arch::parse(BEST).unwrap(),
        width: 32,
        depth: 3,
        lr: 0.05,
        batch: 64,
        ..VisionConfig::default()
    };
    assert_eq!(VisionConfig::try_from(&c).unwrap(), expected);
    let defaults = serde_json::to_value(space.default_config()).unwrap();
    let with = |k: &str, v: Json| {
        let mut c = defaults.clone();
        c[k] = v;
        c
    };
    assert!(candidate_error(with("dropout", json!(0.1)), "dropout").contains("unknown parameter"));
    assert!(candidate_error(with("lr", Json::Null), "lr").contains("missing"));
    let mut no_lr = defaults.clone();
    no_lr.as_object_mut().unwrap().remove("lr");
    candidate_error(no_lr, "lr");
    assert!(candidate_error(with("augment", json!("crop_flip_cutout")), "cutout_length").contains("missing"));
    assert!(candidate_error(with("lr", json!("fast")), "lr").contains("expected a number, found \"fast\""));
    assert!(candidate_error(with("width", json!(12)), "width").contains("not one of 8, 16, 32, 64"));
    assert!(candidate_error(with("depth", json!(2.5)), "depth").contains("expected an integer"));
    assert!(candidate_error(with("lr", json!(true)), "lr").contains("expected a number"));
    assert!(candidate_error(with("cell", json!("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")), "cell").contains("unknown operation 'conv'"));
    assert!(candidate_error(with("augment", json!("mixup")), "augment").contains("not one of"));
    let err = space.parse_candidate(&json!([1, 2])).unwrap_err();
    assert_eq!(
        (err.param(), err.to_string()),
        (None, "a candidate must be a JSON object, found [1,2]".to_string())
    );
}

#[test]
fn typed_vision_configurations_round_trip() {
    let space = vision_space();
    let mut r = rng(12);
    for _ in 0..300 {
        let c = space.sample(&mut r);
        let v = VisionConfig::try_from(&c).unwrap();
        assert_eq!(v.cutout_length.is_some(), v.augment == Augment::CropFlipCutout);
        assert_eq!(Config::from(&v), c);
    }
    let bad = space.default_config().with("depth", Value::Int(9));
    assert_eq!(VisionConfig::try_from(&bad).unwrap_err().param(), Some("depth"));
}

#[test]
fn the_description_renders_in_templates_and_as_a_markdown_table() {
    let space = vision_space();
    let info = space.describe();
    assert_eq!(info.len(), 9);
    let lr = &info[3];
    assert_eq!(
        (lr.kind, lr.low.as_deref(), lr.high.as_deref(), lr.log, lr.default.as_str()),
        ("float", Some("0.001"), Some("0.5"), true, "0.1")
    );
    assert_eq!(info[1].choices, ["8", "16", "32", "64"]);
    assert_eq!(info[7].condition.as_deref(), Some("augment is crop_flip_cutout"));
    let env = minijinja::Environment::new();
    let text = env
        .render_str(
            "{% for p in params %}{{ p.name }}:{{ p.kind }}{% if p.condition %} if {{ p.condition }}{% endif %};{% endfor %}",
            minijinja::context! { params => info },
        )
        .unwrap();
    assert!(text.starts_with("cell:cell;width:ordinal;depth:int;"), "{text}");
    assert!(text.contains("cutout_length:int if augment is crop_flip_cutout;"), "{text}");
    let table = space.table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + 9);
    for line in &lines {
        let unescaped = line.replace("\\|", "").matches('|').count();
        assert_eq!(unescaped, 6, "{line}");
    }
    assert!(
        lines[2].contains("none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3"),
        "{}",
        lines[2]
    );
    assert_eq!(
        lines[9],
        "| cutout_length | int | 4 to 16 | 8 | side in pixels of the cutout square (only when augment is crop_flip_cutout) |"
    );
}
