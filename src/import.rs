//! `autoagent import`: convert official benchmark files into our interchange formats.

use std::path::PathBuf;

use anyhow::Result;
use autoagent_evaluator::nats;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Subcommand)]
pub(crate) enum ImportCommand {
    /// The official NATS-Bench topology archive (NATS-tss-v1_0-3ffb9-simple, the NAS-Bench-201
    /// space) into the NB201 interchange CSV.
    Nats(NatsArgs),
}

#[derive(Args)]
pub(crate) struct NatsArgs {
    /// The archive: the `NATS-tss-v1_0-3ffb9-simple` folder (meta.pickle.pbz2 and one
    /// NNNNNN.pickle.pbz2 per architecture) or the .tar it is distributed as.
    #[arg(long = "from", value_name = "DIR")]
    from: PathBuf,
    /// The CSV to write (replaced only once the import has succeeded).
    #[arg(long, value_name = "FILE.csv")]
    out: PathBuf,
}

pub(crate) fn run(command: ImportCommand) -> Result<()> {
    match command {
        ImportCommand::Nats(args) => import_nats(&args),
    }
}

fn import_nats(args: &NatsArgs) -> Result<()> {
    // Drawn only on a terminal; decoding all 15,625 files takes a while.
    let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
    let progress = |done: usize| {
        if done.is_multiple_of(64) {
            bar.set_message(format!("{done} architecture files decoded"));
            bar.tick();
        }
    };
    let table = nats::read_archive_with_progress(&args.from, &progress)?;
    bar.finish_and_clear();
    table.write_csv(&args.out)?;
    errln!(
        "imported {} architectures ({} isomorphism classes) from {} into {}",
        table.len(),
        table.num_iso_groups(),
        args.from.display(),
        args.out.display()
    );
    Ok(())
}
