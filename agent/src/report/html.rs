//! The report as one self-contained HTML page (the plots' SVG inline).

use std::fmt::Write as _;

use super::document::{body, Doc};
use super::format::html_escape;
use super::tables::Table;
use super::{Plot, Report};

struct Html {
    s: String,
}

impl Doc for Html {
    fn heading(&mut self, level: usize, text: &str) {
        let _ = writeln!(self.s, "<h{level}>{}</h{level}>", html_escape(text));
    }

    fn para(&mut self, text: &str) {
        let _ = writeln!(self.s, "<p>{}</p>", html_escape(text));
    }

    fn table(&mut self, (header, rows): &Table) {
        self.s.push_str("<table>\n");
        if header.iter().any(|h| !h.is_empty()) {
            let cells: String = header.iter().map(|h| format!("<th>{}</th>", html_escape(h))).collect();
            let _ = writeln!(self.s, "<tr>{cells}</tr>");
        }
        for r in rows {
            let _ = writeln!(
                self.s,
                "<tr>{}</tr>",
                r.iter().map(|c| format!("<td>{}</td>", html_escape(c))).collect::<String>()
            );
        }
        self.s.push_str("</table>\n");
    }

    fn plot(&mut self, p: &Plot) {
        let svg = p.svg.trim_start();
        let svg = match svg.strip_prefix("<?xml") {
            Some(rest) => rest.split_once("?>").map_or(rest, |(_, b)| b).trim_start(),
            None => svg,
        };
        let _ = writeln!(
            self.s,
            "<figure id=\"{}\">\n{svg}\n<figcaption>{}</figcaption>\n</figure>",
            p.key,
            html_escape(&p.caption)
        );
    }

    /// The page leaves the section empty.
    fn no_plots(&mut self) {}
}

/// The report as an HTML page.
pub(crate) fn html(r: &Report) -> String {
    let title = html_escape(&format!("Run report: {}", r.name));
    let mut d = Html {
        s: format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<style>\n\
             body {{ font-family: sans-serif; margin: 2em; color: #222; }}\n\
             table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}\n\
             th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }}\n\
             th {{ background: #f3f3f3; }}\n\
             figure {{ margin: 1em 0; }}\n\
             </style>\n</head>\n<body>\n<h1>{title}</h1>\n"
        ),
    };
    body(&mut d, r);
    d.s.push_str("</body>\n</html>\n");
    d.s
}
