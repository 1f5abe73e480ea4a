//! `autoagent report` and `autoagent ls` end to end, on run directories that real `autoagent run`s
//! wrote on the NB201 table and CIFAR-10 images: one plain 30-trial evolution run, one short run
//! ranked by the real zero-cost proxies (for the proxy plots), and copies of them made to look
//! interrupted or live.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{assert_one_line_error, shared};

/// The fixture: `plain` (30 trials, no proxies) and `ranked` (6 trials ranked by synflow, naswot,
/// jacob_cov) under one runs directory, made once per test binary.
fn runs() -> &'static Path {
    static RUNS: OnceLock<PathBuf> = OnceLock::new();
    RUNS.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-tests");
        let _ = std::fs::remove_dir_all(&root);
        let runs = root.join("runs");
        std::fs::create_dir_all(&runs).unwrap();
        // Kept across test runs (outside the runs), so reruns score nothing again.
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-tests-proxy-cache.jsonl");
        for (name, extra) in [
            ("plain", &["--no-proxies", "--budget", "30trials"][..]),
            ("ranked", &["--budget", "6trials", "--k", "3"][..]),
        ] {
            let o = Command::new(env!("CARGO_BIN_EXE_autoagent"))
                .args(["run", "--task", "nb201:cifar10", "--json", "--truth"])
                .arg(shared().join("nb201/nb201.csv"))
                .arg("--data-dir")
                .arg(shared().join("cifar10-mini"))
                .arg("--proxy-cache")
                .arg(&cache)
                .arg("--out")
                .arg(runs.join(name))
                .args(extra)
                .env_remove("AUTOAGENT_DATA")
                .env("RAYON_NUM_THREADS", "2")
                .output()
                .unwrap();
            assert!(o.status.success(), "run {name}: {}", String::from_utf8_lossy(&o.stderr));
        }
        runs
    })
}

fn autoagent(args: &[&str], paths: &[&Path]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoagent"));
    c.args(args);
    for p in paths {
        c.arg(p);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// Copy the files of a run directory (not its report) into `to`.
fn copy_run(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Spearman's ρ with average ranks for ties (recomputed here, independently of the binary).
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].partial_cmp(&v[j]).unwrap());
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0 + 1.0;
            }
            i = j + 1;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// A plot the report wrote: valid SVG with data drawn (at least `n` circles and a polyline).
fn assert_svg(path: &Path, n: usize) -> String {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t = svg.trim_start();
    assert!(t.starts_with("<svg") || t.starts_with("<?xml"), "{}", path.display());
    assert!(t.trim_end().ends_with("</svg>"), "{}", path.display());
    assert!(svg.matches("<circle").count() >= n, "{}: fewer than {n} points", path.display());
    assert!(svg.contains("<polyline"), "{}", path.display());
    svg
}

/// The most vertices of one polyline in an SVG.
fn longest_polyline(svg: &str) -> usize {
    svg.split("<polyline")
        .skip(1)
        .filter_map(|p| p.split("points=\"").nth(1)?.split('"').next().map(|pts| pts.split_whitespace().count()))
        .max()
        .unwrap_or(0)
}

fn md_arch(arch: &str) -> String {
    arch.replace('|', "\\|")
}

#[test]
fn report_md_has_the_leaderboard_plots_and_proxy_correlations() {
    let run = runs().join("ranked");
    let md = stdout(&autoagent(&["report"], &[&run]));
    let s = summary(&run);
    let trials = json_lines(&run.join("trials.jsonl"));
    assert_eq!(trials.len(), 6);
    assert!(md.contains("| status | finished |"), "{md}");
    assert!(
        md.contains("| strategy | evolution |") && md.contains("| task | nb201:cifar10 |") && md.contains("| seed | 0 |"),
        "{md}"
    );
    // The leaderboard's first row is the summary's best.
    let best = &s["best"];
    let first = format!(
        "| 1 | {} | {} | {} | {:.2} | {:.2} |",
        best["id"],
        md_arch(best["config"]["cell"].as_str().unwrap()),
        best["epochs"],
        best["accuracy"].as_f64().unwrap(),
        best["test_accuracy"].as_f64().unwrap()
    );
    assert!(md.contains(&first), "no '{first}' in:\n{md}");
    assert!(
        md.contains(
            "| rank | trial | configuration | epochs | valid acc (%) | test acc (%) | params (M) | FLOPs (M) | jacob_cov | naswot | synflow | device s |"
        ),
        "{md}"
    );
    assert!(md.contains("| 6 trials | 100.0 % | 6 | 3 |"), "{md}");
    assert!(md.contains("| complete |\n|---|\n| 6 |"), "{md}");
    // Plots: written under RUN_DIR/report and linked.
    let dir = run.join("report");
    for (name, n) in [
        ("best_vs_trials", 6),
        ("best_vs_time", 6),
        ("params_pareto", 6),
        ("proxy_synflow", 6),
        ("proxy_naswot", 6),
        ("proxy_jacob_cov", 6),
    ] {
        let path = dir.join(format!("{name}.svg"));
        assert_svg(&path, n);
        assert!(md.contains(&format!("]({})", path.display())), "{name} not linked:\n{md}");
    }
    // The best-so-far line has a vertex per trial (a step line: two per change).
    assert!(longest_polyline(&std::fs::read_to_string(dir.join("best_vs_trials.svg")).unwrap()) >= 6);
    assert!(std::fs::read_to_string(dir.join("report.md")).unwrap().contains("](best_vs_trials.svg)"));
    // Spearman ρ of each proxy with the validation accuracy, as recomputed from the trials.
    for (proxy, axis) in [("synflow", "log"), ("naswot", "linear"), ("jacob_cov", "linear")] {
        let (x, y): (Vec<f64>, Vec<f64>) = trials
            .iter()
            .filter_map(|t| Some((t["proxies"][proxy].as_f64()?, t["accuracy"].as_f64()?)))
            .unzip();
        assert_eq!(x.len(), 6, "{proxy}");
        let rho = format!("{:.3}", spearman(&x, &y));
        assert!(md.contains(&format!("| {proxy} | {rho} | 6 | {axis} |")), "{proxy} ρ {rho} not in:\n{md}");
        let svg = std::fs::read_to_string(dir.join(format!("proxy_{proxy}.svg"))).unwrap();
        assert!(svg.contains(&format!("Spearman ρ = {rho}, n = 6")), "{proxy}: {rho}");
    }
    // synflow's scores span decades: a logarithmic axis.
    assert!(std::fs::read_to_string(dir.join("proxy_synflow.svg"))
        .unwrap()
        .contains("synflow score (log scale)"));
}

#[test]
fn report_json_matches_the_run_store() {
    use autoagent_agent::store::Store;
    let run = runs().join("plain");
    let out = tempfile::tempdir().unwrap();
    let text = stdout(&autoagent(&["report", "--format", "json", "--out"], &[out.path(), &run]));
    assert_eq!(text.lines().count(), 1);
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let db = autoagent_agent::store::sqlite::SqliteStore::open_read(&run.join("run.db")).unwrap();
    let mut stored: Vec<_> = db.trials().unwrap().into_iter().map(|r| r.trial).collect();
    assert_eq!(j["trials"], stored.len());
    assert_eq!(j["status"], "finished");
    assert_eq!(j["strategy"], "evolution");
    assert_eq!(j["task"], "nb201:cifar10");
    assert_eq!(j["seed"], 0, "a number (issue 15 item 17)");
    // The leaderboard: the store's ten best by validation accuracy (ties: the earlier trial).
    stored.sort_by(|a, b| b.accuracy.partial_cmp(&a.accuracy).unwrap().then(a.id.cmp(&b.id)));
    let board = j["leaderboard"].as_array().unwrap();
    assert_eq!(board.len(), 10);
    // Parameters and FLOPs as the NB201 table has them.
    let mut table = BTreeMap::new();
    let mut rdr = csv::Reader::from_path(shared().join("nb201/nb201.csv")).unwrap();
    let h = rdr.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let (a, p, f) = (col("arch_str"), col("params_M"), col("flops_M"));
    for r in rdr.records() {
        let r = r.unwrap();
        table.insert(r[a].to_string(), (r[p].parse::<f64>().unwrap(), r[f].parse::<f64>().unwrap()));
    }
    for (i, (row, t)) in board.iter().zip(&stored).enumerate() {
        assert_eq!(row["rank"], i + 1);
        assert_eq!(row["trial"], t.id);
        assert_eq!(row["arch"], t.config.line());
        assert_eq!(row["config"], t.config.line());
        assert_eq!(row["accuracy"].as_f64(), t.accuracy);
        assert_eq!(row["test_accuracy"].as_f64(), t.test_accuracy);
        let (params, flops) = table[&t.config.line()];
        assert!((row["params_m"].as_f64().unwrap() - params).abs() < 1e-6, "{row}");
        assert!((row["flops_m"].as_f64().unwrap() - flops).abs() < 1e-6, "{row}");
    }
    assert_eq!(board[0]["arch"], summary(&run)["best"]["config"]["cell"]);
    assert_eq!(j["states"], serde_json::json!({"complete": 30}));
    assert_eq!(j["budget"]["trials"], 30);
    assert_eq!(j["budget"]["used"], 1.0);
    assert_eq!(j["budget"]["from_summary"], true);
    assert_eq!(j["llm"]["exchanges"], 0);
    assert!(j["llm"]["valid_share"].is_null());
    assert_eq!(j["proxies"], serde_json::json!([]));
    // Plots went to --out.
    let plots = j["plots"].as_object().unwrap();
    assert_eq!(plots.keys().collect::<Vec<_>>(), ["best_vs_time", "best_vs_trials", "params_pareto"]);
    for p in plots.values() {
        let p = Path::new(p.as_str().unwrap());
        assert!(p.starts_with(out.path()), "{}", p.display());
        assert_svg(p, 30);
    }
    // Table lookups record no device time: the time plot says so.
    assert!(std::fs::read_to_string(out.path().join("best_vs_time.svg")).unwrap().contains("none recorded"));
}

#[test]
fn report_html_embeds_the_plots() {
    let run = runs().join("ranked");
    let out = tempfile::tempdir().unwrap();
    let page = stdout(&autoagent(&["report", "--format", "html", "--out"], &[out.path(), &run]));
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    assert!(!page.contains("<img") && !page.contains(".svg\""), "plots must be inline");
    // Three progress/size plots and one per proxy, each inline.
    assert_eq!(page.matches("<svg").count(), 6);
    for name in [
        "best_vs_trials",
        "best_vs_time",
        "params_pareto",
        "proxy_synflow",
        "proxy_naswot",
        "proxy_jacob_cov",
    ] {
        assert!(page.contains(&format!("<figure id=\"{name}\">\n<svg")), "{name}");
        assert!(out.path().join(format!("{name}.svg")).is_file());
    }
    let best = summary(&run)["best"]["config"]["cell"].as_str().unwrap().to_string();
    assert!(page.contains(&format!("<td>{best}</td>")));
    assert_eq!(std::fs::read_to_string(out.path().join("report.html")).unwrap(), page);
}

#[test]
fn ls_shows_finished_interrupted_and_running_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runs_dir = dir.path().join("runs");
    copy_run(&runs().join("plain"), &runs_dir.join("a-finished"));
    copy_run(&runs().join("plain"), &runs_dir.join("b-killed"));
    copy_run(&runs().join("ranked"), &runs_dir.join("c-live"));
    std::fs::create_dir_all(runs_dir.join("d-not-a-run")).unwrap();
    std::fs::write(runs_dir.join("stray.txt"), "x").unwrap();
    // A run killed mid-way: status still running, no summary, its last trial lost.
    {
        let conn = rusqlite::Connection::open(runs_dir.join("b-killed/run.db")).unwrap();
        conn.execute_batch(
            "UPDATE meta SET value = 'running' WHERE key = 'status';
             DELETE FROM meta WHERE key = 'summary';
             UPDATE trials SET state = 'lost', accuracy = NULL, test_accuracy = NULL WHERE id = (SELECT MAX(id) FROM trials);",
        )
        .unwrap();
    }
    // A live run: status running and its writer holds the lock while ls looks.
    use autoagent_agent::store::Store;
    let mut live = autoagent_agent::store::sqlite::SqliteStore::open(&runs_dir.join("c-live/run.db")).unwrap();
    live.set_meta("status", "running").unwrap();

    let table = stdout(&autoagent(&["ls"], &[&runs_dir]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATUS") && lines[0].contains("BEST ARCH"),
        "{table}"
    );
    let plain_best = summary(&runs().join("plain"))["best"].clone();
    assert_ne!(plain_best["id"], 29, "the trial made lost above must not be the best");
    let ranked_best = summary(&runs().join("ranked"))["best"].clone();
    let cols = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    let expect = |l: &str, name: &str, status: &str, trials: usize, best: &serde_json::Value| {
        let c = cols(l);
        assert_eq!(
            c[..4],
            [name.to_string(), status.to_string(), "evolution".to_string(), trials.to_string()],
            "{l}"
        );
        assert_eq!(c[4], format!("{:.2}", best["accuracy"].as_f64().unwrap()), "{l}");
        assert_eq!(c[5], best["config"]["cell"].as_str().unwrap(), "{l}");
    };
    expect(lines[1], "a-finished", "finished", 30, &plain_best);
    expect(lines[2], "b-killed", "interrupted", 30, &plain_best);
    expect(lines[3], "c-live", "running", 6, &ranked_best);

    // --json: one document, a list (issue 15 item 17); --json-lines: an object per line.
    let json = stdout(&autoagent(&["ls", "--json"], &[&runs_dir]));
    let objs: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let lines_json = stdout(&autoagent(&["ls", "--json-lines"], &[&runs_dir]));
    let per_line: Vec<serde_json::Value> = lines_json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(per_line, objs);
    assert_eq!(
        objs.iter().map(|o| o["status"].as_str().unwrap()).collect::<Vec<_>>(),
        ["finished", "interrupted", "running"]
    );
    assert_eq!(objs[2]["best_arch"], ranked_best["config"]["cell"]);
    assert_eq!(objs[2]["best_accuracy"], ranked_best["accuracy"]);
    assert_eq!(objs[0]["task"], "nb201:cifar10");

    // Once the writer is gone, the live run reads as interrupted.
    drop(live);
    let json = stdout(&autoagent(&["ls", "--json-lines"], &[&runs_dir]));
    assert!(json.lines().nth(2).unwrap().contains("\"status\":\"interrupted\""), "{json}");

    // The killed run's report is recomputed from its trials.
    let md = stdout(&autoagent(&["report"], &[&runs_dir.join("b-killed")]));
    assert!(md.contains("| status | interrupted |"), "{md}");
    assert!(md.contains("## Budget (recomputed from the trials: the run has no summary)"), "{md}");
    assert!(md.contains("| 30 trials | 96.7 % | 29 | 15 |"), "{md}");
    assert!(md.contains("| complete | lost |\n|---|---|\n| 29 | 1 |"), "{md}");
    assert!(md.contains("## LLM usage (recomputed from the exchanges)"), "{md}");
}

#[test]
fn bad_run_directories_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    assert_one_line_error(&autoagent(&["report"], &[&dir.path().join("nope")]), "does not exist");
    assert_one_line_error(&autoagent(&["report"], &[dir.path()]), "holds no run database (run.db)");
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("run.db"), "this is not a database, only text. ".repeat(200)).unwrap();
    assert_one_line_error(&autoagent(&["report"], &[&corrupt]), "is corrupt");
    assert_one_line_error(&autoagent(&["ls"], &[&dir.path().join("nope")]), "does not exist");
    // ls on a directory without runs says so and succeeds; a corrupt run shows as unreadable.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = autoagent(&["ls"], &[&empty]);
    assert!(o.status.success() && o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no runs in"));
    let listed = stdout(&autoagent(&["ls"], &[dir.path()]));
    assert!(listed.lines().nth(1).unwrap().starts_with("corrupt  unreadable"), "{listed}");
}
