//! Smoke tests of the speed benchmarks (`bench train-speed`, `bench proxies-speed`): they run on
//! the conv-free reference cell with one timed iteration and write a table of real numbers. The
//! speed itself is what the benchmarks measure, never a test.

use std::path::PathBuf;
use std::process::Command;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

/// Run `autoagent bench ARGS --out FILE` and return the table it wrote.
fn bench_table(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("table.md");
    let o = Command::new(env!("CARGO_BIN_EXE_autoagent"))
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(&out)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(&out).unwrap()
}

fn cells(line: &str) -> Vec<String> {
    line.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect()
}

#[test]
fn train_speed_writes_a_table_with_the_share_of_the_matmul_rate() {
    let md = bench_table(&[
        "train-speed",
        "--archs",
        "5681",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--train-steps",
        "1",
        "--train-batch",
        "32",
    ]);
    assert!(md.contains("bench train-speed --archs 5681"), "{md}");
    let header = md.lines().find(|l| l.starts_with("| arch |")).unwrap();
    let row = md.lines().find(|l| l.starts_with("| 5681 ")).unwrap();
    let (h, r) = (cells(header), cells(row));
    assert_eq!(h.len(), r.len(), "{md}");
    let col = |name: &str| r[h.iter().position(|c| c == name).unwrap_or_else(|| panic!("no column {name}: {md}"))].clone();
    assert_eq!(col("params"), "73306");
    assert_eq!(col("framework"), "candle");
    let gflops: f64 = col("fwd+bwd GFLOP/s").parse().unwrap();
    let share: f64 = col("fwd+bwd % of matmul").trim_end_matches(" %").parse().unwrap();
    assert!(gflops > 0.0 && share > 0.0 && share < 100.0, "{row}");
    // The share is the row's rate over the matmul rate written above the table.
    let line = md.lines().find(|l| l.contains("our AVX-512 sgemm")).unwrap();
    let sgemm: f64 = line.split("our AVX-512 sgemm ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((share - 100.0 * gflops / sgemm).abs() <= 1.0, "{share} vs {gflops}/{sgemm}");
}

#[test]
fn proxies_speed_writes_a_row_per_proxy_with_the_scores() {
    let data = shared().join("cifar10-mini");
    let md = bench_table(&[
        "proxies-speed",
        "--archs",
        "5681",
        "--proxies",
        "synflow,fisher,params",
        "--repeat",
        "1",
        "--batch-size",
        "16",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let rows: Vec<Vec<String>> = md.lines().filter(|l| l.starts_with("| 5681 ")).map(cells).collect();
    assert_eq!(rows.iter().map(|r| r[1].as_str()).collect::<Vec<_>>(), ["synflow", "fisher", "params"], "{md}");
    for r in &rows[..2] {
        assert!(r[2].parse::<f64>().unwrap() > 0.0, "{r:?}");
        assert!(r[7].parse::<f64>().unwrap().is_finite(), "{r:?}");
    }
    assert_eq!(rows[2][7], "0.0733", "params of 5681 in millions: {md}");
}
