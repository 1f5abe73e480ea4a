//! `autoagent`: the command-line entry point. Parses arguments, dispatches to the library crates
//! and turns every error into one line on stderr and exit code 2.

#[macro_use]
mod output;
mod agent_run;
mod export;
mod import;
mod report;
mod score;
mod train_cmd;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use autoagent_evaluator::nb201::Arch;
use clap::{Args, Parser, Subcommand};
use rand::SeedableRng;

// Training allocates and frees many activation-sized buffers per step; glibc returns them to the
// kernel (each new one then costs page faults), mimalloc keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "autoagent", version, about = "LLM-guided AutoML agent with zero-cost NAS proxies")]
struct Cli {
    /// More log output (repeat for more); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Search: the agent loop (LLM or classic strategy, proxy ranking, evaluation of the best).
    Run(Box<agent_run::RunArgs>),
    /// Continue a run that stopped (killed, crashed) from its run directory, or extend a finished one.
    Resume(agent_run::ResumeArgs),
    /// Run one trial from a spec file (what `run` starts in a child process per training trial).
    Trial(TrialArgs),
    /// Train one architecture on an image dataset and report its test accuracy.
    Train(train_cmd::TrainArgs),
    /// Work with search spaces.
    Space {
        #[command(subcommand)]
        command: SpaceCommand,
    },
    /// Zero-cost proxies.
    Proxies {
        #[command(subcommand)]
        command: ProxiesCommand,
    },
    /// Benchmarks (each prints a table).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Convert official benchmark files into our interchange formats.
    Import {
        #[command(subcommand)]
        command: import::ImportCommand,
    },
    /// Report on a run directory: leaderboard, budget, LLM usage, plots (md, html or json).
    Report(report::ReportArgs),
    /// List the runs under a directory (default: runs) with their status and best trial.
    Ls(report::LsArgs),
    /// Export a run's best (or a chosen) trained trial as a model folder: model.safetensors and model.json.
    Export(export::ExportArgs),
    /// Classify images, or measure accuracy on a dataset split, with an exported model.
    Predict(export::PredictArgs),
}

#[derive(Args, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct DataArgs {
    /// Data root (default: $AUTOAGENT_DATA, else the user cache directory). A folder that
    /// directly holds a dataset's files works too.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Never download: fail when the dataset is not present.
    #[arg(long)]
    pub(crate) no_download: bool,
}

#[derive(Args)]
struct TrialArgs {
    /// The trial's spec (JSON; the format is documented in autoagent_agent::trial).
    #[arg(long)]
    spec: PathBuf,
}

/// `autoagent trial --spec FILE`: events as `@autoagent-trial {json}` lines on stdout, progress
/// on stderr. With the spec's `watch_stdin`, the trial ends when its stdin closes (its agent is
/// gone). `AUTOAGENT_TRIAL_FAULT=panic` makes the trial panic once started, `flood` writes 8 MiB
/// to stderr first (fault-injection hooks for the agent's tests).
fn cmd_trial(args: TrialArgs) -> Result<()> {
    use autoagent_agent::trial::{self, TrialEvent, TrialSpec};
    let spec = TrialSpec::read(&args.spec)?;
    if spec.watch_stdin {
        std::thread::spawn(|| {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin();
            while let Ok(n) = std::io::Read::read(&mut stdin, &mut sink) {
                if n == 0 {
                    break;
                }
            }
            // Not eprintln!: the agent read this process's stderr, and a write to a closed pipe
            // would panic this thread instead of ending the trial.
            let _ = writeln!(std::io::stderr(), "the agent is gone (stdin closed): stopping the trial");
            std::process::exit(3);
        });
    }
    let fault = std::env::var("AUTOAGENT_TRIAL_FAULT").ok();
    let mut out = std::io::stdout().lock();
    trial::run(&spec, &mut |ev| {
        let _ = writeln!(out, "{}", ev.line());
        let _ = out.flush();
        match ev {
            TrialEvent::Started { .. } if fault.as_deref() == Some("panic") => panic!("injected fault (AUTOAGENT_TRIAL_FAULT=panic)"),
            TrialEvent::Started { .. } if fault.as_deref() == Some("flood") => {
                // 8 MiB of output, then a panic: the agent keeps the head and the last words.
                let line = "flooding stderr ".repeat(64);
                for _ in 0..8192 {
                    eprintln!("{line}");
                }
                panic!("injected fault after a flood (AUTOAGENT_TRIAL_FAULT=flood)")
            }
            TrialEvent::Epoch {
                epoch,
                train_loss,
                valid_acc,
                seconds,
                ..
            } => eprintln!(
                "epoch {epoch}/{}  loss {train_loss:.4}  valid acc {}  {seconds:.1} s",
                spec.train.epochs,
                valid_acc.map_or("-".to_string(), |v| format!("{v:.2} %"))
            ),
            _ => {}
        }
    })?;
    Ok(())
}

#[derive(Subcommand)]
enum SpaceCommand {
    /// Print K architectures sampled uniformly, one per line.
    Sample {
        /// Search space (only nb201 for now).
        #[arg(long, default_value = "nb201")]
        space: String,
        /// How many.
        #[arg(short = 'n', long = "num", default_value_t = 10)]
        n: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Only one member of each isomorphism class.
        #[arg(long)]
        unique: bool,
    },
}

#[derive(Subcommand)]
enum ProxiesCommand {
    /// Score architectures with zero-cost proxies on one batch of real images.
    Score(score::ScoreArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Forward, forward+backward and training speed of NB201 networks, side by side with PyTorch.
    TrainSpeed(autoagent_benchmarks::train_speed::TrainSpeedArgs),
    /// Milliseconds per architecture per zero-cost proxy, side by side with PyTorch.
    ProxiesSpeed(autoagent_benchmarks::proxies_speed::ProxiesSpeedArgs),
    /// Rank correlations of the zero-cost proxies with NAS-Bench accuracies, next to the published ones.
    Proxies(autoagent_benchmarks::proxies_nb201::ProxiesBenchArgs),
    /// Test accuracy each search strategy picks after n evaluations, with and without proxy ranking, next to the published numbers.
    Search(Box<autoagent_benchmarks::search_nb201::SearchBenchArgs>),
    /// The final test accuracy a wall-clock budget buys: autoagent's scheduler, fixed-epoch trials, and Optuna (TPE + Hyperband) with PyTorch.
    Budget(autoagent_benchmarks::budget::BudgetBenchArgs),
    /// autoagent on the tabular fixtures' fixed splits against FLAML, AutoGluon and a default LightGBM, every tool's test predictions scored one way.
    Tabular(autoagent_benchmarks::tabular::TabularBenchArgs),
    /// Rank correlation of the cheap signals of tabular pipelines (an MLP's zero-cost proxies, lower fidelities) with their full validation, on the fixtures.
    CheapSignal(autoagent_benchmarks::cheap_signal::CheapSignalArgs),
}

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_t` in mimalloc v2's header).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Never hand freed memory back to the OS: a training step frees and re-allocates the same
    // activation-sized buffers, and a purge makes every new one pay page faults and zeroing.
    // SAFETY: setting an option is thread-safe in mimalloc; no allocation invariants change.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each cause once: errors that already print their source (`{path}: {source}`) also
            // report it as the next link of the chain.
            let mut msg = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !msg.ends_with(&cause) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&cause);
                }
            }
            msg.retain(|c| c != '\n');
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// A command line clap refused: `--help` and `--version` as clap prints them, anything else as
/// one `error:` line (the first line of clap's message) and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            output::err_line(&format!("error: {}", first_line(&e.to_string())));
            ExitCode::from(2)
        }
    }
}

/// The first line of a clap message without its `error: `; a line ending in a colon takes the
/// list below it (`the following required arguments were not provided: --task <TASK>`).
fn first_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).skip_while(|l| l.is_empty());
    let first = lines.next().unwrap_or("bad command line");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_string();
    if line.ends_with(':') {
        let items: Vec<&str> = lines.take_while(|l| !l.is_empty()).collect();
        line = format!("{line} {}", items.join(", "));
    }
    line
}

/// Logs: human lines on stderr at `warn` (`-v` info, `-vv` debug, `-vvv` trace; `RUST_LOG`
/// overrides), and JSON records into the run's `run.log` (rotated past its cap, see
/// `autoagent_agent::logs`) at `info` or what `-v` asks for, once a run names it.
fn init_logging(verbose: u8) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let level = |floor: u8| match verbose.max(floor) {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let stderr_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level(0)));
    let file_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level(1)));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(stderr_filter),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_writer(autoagent_agent::logs::RunLogWriter::default)
                .with_filter(file_filter),
        )
        .init();
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => agent_run::cmd_run(*args),
        Command::Resume(args) => agent_run::cmd_resume(args),
        Command::Trial(args) => cmd_trial(args),
        Command::Train(args) => train_cmd::cmd_train(args),
        Command::Space {
            command: SpaceCommand::Sample { space, n, seed, unique },
        } => cmd_sample(&space, n, seed, unique),
        Command::Proxies {
            command: ProxiesCommand::Score(args),
        } => score::cmd_score(args),
        Command::Bench {
            command: BenchCommand::TrainSpeed(args),
        } => autoagent_benchmarks::train_speed::run(&args),
        Command::Bench {
            command: BenchCommand::ProxiesSpeed(args),
        } => autoagent_benchmarks::proxies_speed::run(&args),
        Command::Bench {
            command: BenchCommand::Proxies(args),
        } => autoagent_benchmarks::proxies_nb201::run(&args),
        Command::Bench {
            command: BenchCommand::Search(args),
        } => autoagent_benchmarks::search_nb201::run(&args),
        Command::Bench {
            command: BenchCommand::Budget(args),
        } => autoagent_benchmarks::budget::run(&args),
        Command::Bench {
            command: BenchCommand::Tabular(args),
        } => autoagent_benchmarks::tabular::run(&args),
        Command::Bench {
            command: BenchCommand::CheapSignal(args),
        } => autoagent_benchmarks::cheap_signal::run(&args),
        Command::Import { command } => import::run(command),
        Command::Report(args) => report::cmd_report(args),
        Command::Ls(args) => report::cmd_ls(args),
        Command::Export(args) => export::cmd_export(args),
        Command::Predict(args) => export::cmd_predict(args),
    }
}

fn cmd_sample(space: &str, n: usize, seed: u64, unique: bool) -> Result<()> {
    if space != "nb201" {
        bail!("unknown search space '{space}' (available: nb201)");
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    let mut out = std::io::stdout().lock();
    let mut printed = 0;
    if unique && n > 6466 {
        bail!("nb201 has only 6466 isomorphism classes, cannot sample {n} unique cells");
    }
    while printed < n {
        let arch = Arch::sample(&mut rng);
        if unique && !seen.insert(arch.canonical()) {
            continue;
        }
        writeln!(out, "{arch}")?;
        printed += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clap_error_is_one_line() {
        let e = Cli::try_parse_from(["autoagent", "train", "--bogus"]).err().unwrap();
        assert_eq!(first_line(&e.to_string()), "unexpected argument '--bogus' found");
        let e = Cli::try_parse_from(["autoagent", "train", "--arch", "a"]).err().unwrap();
        let line = first_line(&e.to_string());
        assert!(line.starts_with("the following required arguments were not provided: --task <TASK>"), "{line}");
        assert!(!line.contains('\n'));
    }
}
