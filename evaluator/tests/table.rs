//! The NB201 table loader on the benchmark file we ship and on broken files.

use std::path::PathBuf;

use autoagent_evaluator::nb201::Arch;
use autoagent_evaluator::table::Nb201Table;

fn shared() -> PathBuf {
    match std::env::var_os("AUTOAGENT_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

#[test]
fn loads_the_benchmark_and_answers_lookups_for_every_column() {
    let t = Nb201Table::load(&shared().join("nb201/nb201.csv")).unwrap();
    assert_eq!(t.len(), 15625);
    assert_eq!(t.columns().len(), 22);
    let best: Arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
        .parse()
        .unwrap();
    assert_eq!(t.index_of(&best), Some(6111));
    assert_eq!(t.arch(6111), Some(best));
    // The paper's optimum: 94.37 / 73.51 / 47.31 test, 91.61 valid.
    assert_eq!(t.value(6111, "cifar10_test_acc").unwrap(), Some(94.373333));
    assert_eq!(t.value(6111, "cifar10_valid_acc").unwrap(), Some(91.606667));
    assert_eq!(t.value_of(&best, "params_M").unwrap(), Some(1.073466));
    assert_eq!(t.value(6111, "flops_M").unwrap(), Some(155.584192));
    // Empty cells are None, not zero.
    assert_eq!(t.value(6111, "cifar100_valid_acc").unwrap(), None);
    // Every column answers for every row without error.
    for c in t.columns() {
        let known = (0..t.len()).filter(|&i| t.value(i, c).unwrap().is_some()).count();
        assert!(known == 0 || known == t.len() || c.contains("edgetpu"), "{c}: {known} values");
    }
    let best_c100 = (0..t.len()).map(|i| t.value(i, "cifar100_test_acc").unwrap().unwrap()).fold(0.0, f64::max);
    assert!((best_c100 - 73.5133).abs() < 1e-3);
    // Isomorphism groups point at the first member, which is its own group.
    for i in (0..t.len()).step_by(97) {
        let g = t.iso_group(i).unwrap();
        assert!(g <= i && t.iso_group(g) == Some(g));
        assert_eq!(t.arch(g).unwrap().canonical(), t.arch(i).unwrap().canonical());
    }
    assert!(t
        .value(6111, "cifar10_acc")
        .unwrap_err()
        .to_string()
        .contains("unknown NB201 column `cifar10_acc`"));
    assert!(t.value(15625, "flops_M").is_err());
}

#[test]
fn broken_files_are_rejected_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|";
    let b = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|";
    let cases = [
        ("arch_index,arch_str,acc\n0,A,1\n", "missing column `iso_group`"),
        ("arch_index,arch_str,iso_group,acc\n0,A,0,1\n1,A,1,2\n", "line 3: |nor_conv_3x3~0|"),
        ("arch_index,arch_str,iso_group,acc\n0,A,0,x\n", "line 2: column `acc`: `x` is not a number"),
        ("arch_index,arch_str,iso_group,acc\n1,A,0,1\n", "line 2: arch_index 1, expected 0"),
        ("arch_index,arch_str,iso_group,acc\n0,|nope~0|,0,1\n", "line 2:"),
        ("arch_index,arch_str,iso_group,acc\n", "no rows"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("t{i}.csv"));
        std::fs::write(&path, text.replace(",A,", &format!(",{a},"))).unwrap();
        let err = Nb201Table::load(&path).unwrap_err().to_string();
        assert!(err.contains(needle), "case {i}: {err}");
    }
    let ok = dir.path().join("ok.csv");
    std::fs::write(&ok, format!("arch_index,arch_str,iso_group,acc\n0,{a},0,93.5\n1,{b},1,\n")).unwrap();
    let t = Nb201Table::load(&ok).unwrap();
    assert_eq!((t.len(), t.value(0, "acc").unwrap(), t.value(1, "acc").unwrap()), (2, Some(93.5), None));
    assert!(Nb201Table::load(&dir.path().join("missing.csv")).is_err());
}
