//! `autoagent report RUN_DIR` and `autoagent ls [DIR]`: the arguments, handed to
//! `autoagent_agent::report`, and its text printed.

use std::path::PathBuf;

use anyhow::Result;
use autoagent_agent::report::list::{self, ListFormat};
use autoagent_agent::report::{self, Format, ReportOptions};
use clap::Args;

use crate::output::out_text;

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// The run directory (the one holding run.db).
    run_dir: PathBuf,
    /// Output: md (Markdown on stdout), html (one self-contained page on stdout) or json (one object).
    #[arg(long, default_value = "md", value_parser = ["md", "html", "json"])]
    format: String,
    /// Directory for the plots (SVG files) and a copy of the md/html report (default: RUN_DIR/report).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct LsArgs {
    /// Directory whose run directories to list.
    #[arg(default_value = "runs")]
    dir: PathBuf,
    /// One JSON document: a list with an object per run.
    #[arg(long, conflicts_with = "json_lines")]
    json: bool,
    /// One JSON object per run, one per line.
    #[arg(long)]
    json_lines: bool,
}

pub(crate) fn cmd_report(args: ReportArgs) -> Result<()> {
    let format = match args.format.as_str() {
        "json" => Format::Json,
        "html" => Format::Html,
        _ => Format::Markdown,
    };
    let out = args.out.unwrap_or_else(|| args.run_dir.join("report"));
    out_text(&report::report(&ReportOptions {
        run_dir: args.run_dir,
        out,
        format,
    })?);
    Ok(())
}

pub(crate) fn cmd_ls(args: LsArgs) -> Result<()> {
    let listed = list::list_runs(&args.dir)?;
    if listed.is_empty() {
        errln!("no runs in {} (a run directory holds run.db)", args.dir.display());
        if args.json {
            outln!("[]");
        }
        return Ok(());
    }
    let format = match (args.json, args.json_lines) {
        (true, _) => ListFormat::Json,
        (false, true) => ListFormat::JsonLines,
        (false, false) => ListFormat::Table,
    };
    out_text(&list::render(&listed, format)?);
    Ok(())
}
