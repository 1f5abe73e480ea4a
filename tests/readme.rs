//! The README against the binary's `--help` (issue 15 item 17): every option a command's `--help`
//! lists is named in the README, and every option a README synopsis or example gives a command
//! exists in that command's `--help`.

use std::collections::BTreeSet;
use std::process::Command;

/// The commands with options, as they are typed.
const COMMANDS: &[&str] = &[
    "run",
    "resume",
    "train",
    "space sample",
    "proxies score",
    "bench train-speed",
    "bench proxies-speed",
    "bench proxies",
    "bench search",
    "bench budget",
    "import nats",
    "report",
    "ls",
    "export",
    "predict",
];

fn help(command: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_autoagent"))
        .args(command.split(' '))
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success(), "{command} --help");
    String::from_utf8(o.stdout).unwrap()
}

/// The `--long` options in `text`.
fn options(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    for (i, _) in text.match_indices("--") {
        let before = if i == 0 { b' ' } else { b[i - 1] };
        if before.is_ascii_alphanumeric() || before == b'-' {
            continue;
        }
        let name: String = text[i + 2..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        if name.len() > 1 && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            out.insert(name);
        }
    }
    out
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The README's uses of `autoagent COMMAND …` (`cargo run -- COMMAND …` too): each up to the end
/// of its code span or line, with continuation lines joined.
fn uses(readme: &str, command: &str) -> Vec<String> {
    let joined = readme.replace("\\\n", " ").replace("\\|", "/");
    let mut out = Vec::new();
    for prefix in ["autoagent ", "cargo run -- ", "cargo run --release -- "] {
        let needle = format!("{prefix}{command} ");
        for (i, _) in joined.match_indices(&needle) {
            let rest = &joined[i + needle.len()..];
            let end = rest.find(['`', '\n', '|']).unwrap_or(rest.len());
            // A longer command that starts with this one (`bench proxies-speed` for `bench proxies`) is another command.
            if COMMANDS
                .iter()
                .any(|c| c.len() > command.len() && c.starts_with(command) && joined[i + prefix.len()..].starts_with(c))
            {
                continue;
            }
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn every_option_of_every_command_is_named_in_the_readme() {
    let readme = readme();
    let named = options(&readme);
    let mut missing = Vec::new();
    for command in COMMANDS {
        for option in options(&help(command)) {
            if !["help", "version", "verbose"].contains(&option.as_str()) && !named.contains(&option) {
                missing.push(format!("{command} --{option}"));
            }
        }
    }
    assert!(missing.is_empty(), "options the README never names: {missing:?}");
}

#[test]
fn every_readme_use_of_a_command_gives_options_it_has() {
    let readme = readme();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for command in COMMANDS {
        let known = options(&help(command));
        for text in uses(&readme, command) {
            for option in options(&text) {
                checked += 1;
                if !known.contains(&option) && option != "help" {
                    wrong.push(format!("`{command} … --{option}` in: {text}"));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} options found in the README's uses of commands");
    assert!(wrong.is_empty(), "README uses of options the command does not have:\n{}", wrong.join("\n"));
}
