//! The report as Markdown.

use std::fmt::Write as _;

use super::document::{body, Doc};
use super::format::md_cell;
use super::tables::Table;
use super::{Plot, Report};

struct Markdown<'a> {
    s: String,
    /// The path a plot's image link shows.
    link: &'a dyn Fn(&Plot) -> String,
}

impl Doc for Markdown<'_> {
    fn heading(&mut self, level: usize, text: &str) {
        let _ = writeln!(self.s, "{} {text}\n", "#".repeat(level));
    }

    fn para(&mut self, text: &str) {
        let _ = writeln!(self.s, "{text}\n");
    }

    fn table(&mut self, (header, rows): &Table) {
        let line = |cells: &[String]| format!("| {} |", cells.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(self.s, "{}", line(header));
        let _ = writeln!(self.s, "|{}", "---|".repeat(header.len()));
        for r in rows {
            let _ = writeln!(self.s, "{}", line(r));
        }
        self.s.push('\n');
    }

    fn plot(&mut self, p: &Plot) {
        let target = (self.link)(p);
        let target = if target.contains(' ') { format!("<{target}>") } else { target };
        let _ = writeln!(self.s, "![{}]({target})\n", p.caption);
    }

    fn no_plots(&mut self) {
        self.para("No plot: no trial has an accuracy yet.");
    }
}

/// The report as Markdown; `link` gives the path each plot's image shows.
pub(crate) fn markdown(r: &Report, link: &dyn Fn(&Plot) -> String) -> String {
    let mut d = Markdown {
        s: format!("# Run report: {}\n\n", r.name),
        link,
    };
    body(&mut d, r);
    d.s
}
