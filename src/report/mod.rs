//! The HTML report: one self-contained page (no script, no fetch: inline CSS and SVG, a
//! Content-Security-Policy that forbids loading anything) that shows a security team the case
//! behind each candidate bypass rule: who fails, how, since when, from which hosts, against
//! which certificate, and what was set aside as noise.
//!
//! Two ways in, one page: `pinwatch report` reads the NDJSON files a replay wrote
//! ([`input`]), and `replay --report` / `live --report` feed the records and the correlator's
//! conclusions straight in ([`Builder`]). [`collect`] keeps what the page needs in bounded
//! memory, [`view`] works out each section, [`chart`] the SVG geometry, [`render`] fills the
//! minijinja templates of `templates/`, which escape every value (all of them are hostile).

pub mod chart;
pub mod collect;
pub mod input;
pub mod render;
pub mod view;

use std::process::ExitCode;

use collect::{Collector, Limits, NameFilter};
use input::{ConnIn, Findings, RuleIn};

use crate::correlate::Report;
use crate::correlate::score::DEFAULT_MIN_CONFIDENCE;
use crate::output::record::ConnectionRecord;
use crate::output::time::rfc3339_micros;

/// Exit codes shared with the other subcommands (README, "Exit codes").
mod exit {
    pub const USAGE: u8 = 2;
    pub const INPUT: u8 = 3;
    pub const OUTPUT: u8 = 5;
}

/// `pinwatch report` command line.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Reads the NDJSON files `pinwatch replay` writes and makes one HTML \
page: the summary of the capture, each candidate rule with its evidence, charts and \
connections, the rules below the threshold (collapsed), and the noise that was not counted. \
The page is self-contained (no script, no network fetch) and opens from a file:// URL.\n\n\
For the connection tables and charts pass the connection records too. For the rules below the \
threshold, write all candidates with `replay --min-confidence 0`.\n\n\
Examples:\n  \
pinwatch replay day1.pcapng --rules rules.jsonl --connections conns.jsonl --findings findings.jsonl\n  \
pinwatch report --rules rules.jsonl --connections conns.jsonl --findings findings.jsonl -o report.html\n  \
pinwatch replay day1.pcapng --report report.html     (the same in one command)"
)]
pub struct ReportArgs {
    /// Candidate rules (NDJSON, pinwatch.rule/1) from `replay --rules`.
    #[arg(long, value_name = "PATH")]
    pub rules: Option<String>,
    /// Connection records (NDJSON, pinwatch.connection/1) from `replay --connections`.
    #[arg(long, value_name = "PATH")]
    pub connections: Option<String>,
    /// Findings (NDJSON, pinwatch.finding/1) from `replay --findings`: learned proxy CAs,
    /// clients missing the proxy CA.
    #[arg(long, value_name = "PATH")]
    pub findings: Option<String>,
    /// Rules at or above this confidence are shown in full; the others in a collapsed list.
    #[arg(long, value_name = "F", default_value_t = DEFAULT_MIN_CONFIDENCE)]
    pub min_confidence: f64,
    /// Where to write the HTML page (replaced atomically).
    #[arg(short, long, value_name = "PATH")]
    pub output: String,
}

/// Wall-clock time of writing, for the page's footer.
fn now() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    rfc3339_micros(ns)
}

/// Renders the page and writes it through a temporary file and a rename, so a browser or a
/// web server never shows half a report.
/// `flag` names the option that gave the path, for the error message.
pub fn write_page(flag: &str, path: &str, page: &view::Page) -> Result<(), String> {
    let html = render::render(page).map_err(|e| format!("report template: {e}"))?;
    crate::sinks::replace::replace_file(std::path::Path::new(path), html.as_bytes())
        .map_err(|e| format!("{flag} {path}: {e}"))
}

/// The report of a replay or a live capture, fed record by record.
#[derive(Debug)]
pub struct Builder {
    collector: Collector,
    sources: Vec<String>,
}

impl Builder {
    pub fn new(sources: Vec<String>) -> Builder {
        Builder {
            collector: Collector::new(Limits::default(), None),
            sources,
        }
    }

    pub fn record(&mut self, rec: &ConnectionRecord) {
        self.collector.add(ConnIn::from_record(rec));
    }

    /// Writes the page for the correlator's conclusions so far.
    pub fn write(
        &self,
        path: &str,
        report: &Report,
        min_confidence: f64,
        packets: u64,
    ) -> Result<(), String> {
        let rules = report
            .candidates
            .iter()
            .filter_map(RuleIn::from_scored)
            .collect();
        let findings = Findings::from_report(&report.proxy_cas, &report.missing_proxy_ca);
        let ctx = view::Context {
            sources: self.sources.clone(),
            min_confidence,
            packets_read: Some(packets),
            ordinary_cert_failures: Some(report.ordinary_cert_failures),
            generated_at: now(),
        };
        write_page(
            "--report",
            path,
            &view::build(rules, &self.collector, findings, ctx),
        )
    }
}

/// `pinwatch report`.
pub fn run_report(args: ReportArgs) -> ExitCode {
    match report_main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((message, code)) => {
            eprintln!("pinwatch: {message}");
            ExitCode::from(code)
        }
    }
}

fn report_main(args: &ReportArgs) -> Result<(), (String, u8)> {
    if !(0.0..=1.0).contains(&args.min_confidence) {
        return Err((
            format!(
                "--min-confidence must be between 0 and 1, got {}",
                args.min_confidence
            ),
            exit::USAGE,
        ));
    }
    if args.rules.is_none() && args.connections.is_none() {
        return Err((
            "give --rules and/or --connections (the files `pinwatch replay` wrote); see `pinwatch report --help`".into(),
            exit::USAGE,
        ));
    }
    let inputs = [&args.rules, &args.connections, &args.findings];
    if inputs
        .iter()
        .any(|p| p.as_deref() == Some(args.output.as_str()))
    {
        return Err((
            format!(
                "-o {} is one of the input files; choose another output path",
                args.output
            ),
            exit::USAGE,
        ));
    }
    let bad = |e: input::InputError| (e.to_string(), exit::INPUT);
    let mut lines = Vec::new();
    if let Some(path) = &args.rules {
        input::read_ndjson(path, "pinwatch.rule/3", |r: RuleIn| {
            lines.push((r.id.clone(), r.seq, r.status.clone(), r));
        })
        .map_err(bad)?;
    }
    let rules = input::in_force(lines);
    let mut filter = NameFilter::default();
    for r in &rules {
        filter.add(r.matcher.host.as_deref(), r.matcher.suffix.as_deref());
    }
    let findings = match &args.findings {
        Some(path) => input::read_findings(path).map_err(bad)?,
        None => Findings::default(),
    };
    let mut collector = Collector::new(Limits::default(), Some(filter));
    if let Some(path) = &args.connections {
        input::read_ndjson(path, "pinwatch.connection/1", |c| collector.add(c)).map_err(bad)?;
    }
    let ctx = view::Context {
        sources: inputs.iter().filter_map(|p| (*p).clone()).collect(),
        min_confidence: args.min_confidence,
        packets_read: None,
        ordinary_cert_failures: None,
        generated_at: now(),
    };
    let page = view::build(rules, &collector, findings, ctx);
    write_page("-o", &args.output, &page).map_err(|e| (e, exit::OUTPUT))
}
