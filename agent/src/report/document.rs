//! The report as a document: its sections in order, written through [`Doc`] as Markdown
//! ([`super::markdown`]) or HTML ([`super::html`]).

use super::tables::{self, Table};
use super::{Plot, Report};

/// What the report is written into.
pub(crate) trait Doc {
    /// A section heading (`level` 2 or 3).
    fn heading(&mut self, level: usize, text: &str);
    /// A paragraph.
    fn para(&mut self, text: &str);
    /// A table.
    fn table(&mut self, t: &Table);
    /// A plot.
    fn plot(&mut self, p: &Plot);
    /// The plots section of a report without plots.
    fn no_plots(&mut self);
}

/// Every section after the title: overview, leaderboard, budget, LLM usage, trial states, plots.
pub(crate) fn body(d: &mut impl Doc, r: &Report) {
    d.table(&tables::overview(r));
    d.heading(2, &tables::leaderboard_heading(r));
    if r.leaderboard.is_empty() {
        d.para("No complete trial yet.");
    } else {
        d.table(&tables::leaderboard(r));
    }
    if let Some(e) = &r.ensemble {
        d.heading(2, "Final model");
        d.para(&tables::ensemble(e));
        d.table(&tables::members(e));
    } else if let Some(f) = &r.final_model {
        d.heading(2, "Final model");
        d.para(&tables::final_model(f));
    }
    d.heading(2, &tables::budget_heading(r));
    d.table(&tables::budget(r));
    d.heading(2, &tables::llm_heading(r));
    d.table(&tables::llm(r));
    d.heading(2, "Trial states");
    if r.states.is_empty() {
        d.para("No trial yet.");
    } else {
        d.table(&tables::states(r));
    }
    plots(d, r);
}

fn plots(d: &mut impl Doc, r: &Report) {
    d.heading(2, "Plots");
    if r.plots.is_empty() {
        d.no_plots();
    }
    for p in r.plots.iter().filter(|p| !p.key.starts_with("proxy_")) {
        d.plot(p);
    }
    if !r.proxies.is_empty() {
        d.heading(3, "Proxies against validation accuracy");
        d.table(&tables::proxies(r));
        for p in r.plots.iter().filter(|p| p.key.starts_with("proxy_")) {
            d.plot(p);
        }
    }
}
