//! pinwatch command line.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use pinwatch::classify::Outcome;
use pinwatch::correlate::proxy::ProxyCas;
use pinwatch::correlate::score::DEFAULT_MIN_CONFIDENCE;
use pinwatch::correlate::{Config as CorrelateConfig, Correlator, Report};
use pinwatch::flow::FlowConfig;
use pinwatch::output::NdjsonSink;
use pinwatch::replay::{ReplayConfig, Summary, replay};

/// Exit codes (documented in the README).
mod exit {
    pub const USAGE: u8 = 2;
    pub const INPUT: u8 = 3;
    pub const DAMAGED: u8 = 4;
    pub const OUTPUT: u8 = 5;
}

#[derive(Parser)]
#[command(
    name = "pinwatch",
    version,
    about = "Find apps whose certificate pinning breaks behind a TLS-inspecting proxy",
    long_about = "pinwatch watches TLS handshakes passively (pcap/pcapng files or a span port), \
works out which certificate the proxy presented and how the client reacted, and reports one \
outcome per connection: established, client_alert, client_closed_after_handshake, \
client_closed_in_handshake, client_closed_before_server_hello, server_abort, incomplete, \
not_tls or midstream."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay capture files (pcap or pcapng; `-` for standard input) and report every TLS connection.
    #[command(after_help = "Examples:\n  \
pinwatch replay captures/mitm-explicit.pcap --connections -\n  \
pinwatch replay day1.pcapng day2.pcapng --connections conns.jsonl\n  \
tcpdump -w - -i eth0 port 443 | pinwatch replay - --connections -")]
    Replay(ReplayArgs),
    /// Turn candidate rules (NDJSON from `replay --rules`) into Squid, mitmproxy or domain-list configuration.
    Export(pinwatch::export::ExportArgs),
}

#[derive(Args)]
struct ReplayArgs {
    /// Capture files, read in the order given. `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,

    /// Write one JSON object per connection (NDJSON) to PATH, or `-` for standard output.
    #[arg(long, value_name = "PATH|-")]
    connections: Option<String>,

    /// Write candidate bypass rules (NDJSON, schema pinwatch.rule/1) to PATH or `-`. Default:
    /// standard output, unless --connections already writes there.
    #[arg(long, value_name = "PATH|-")]
    rules: Option<String>,

    /// Emit rules at or above this confidence (0..1). Evidence from a single client host, without
    /// a server name, or for a brand-new name is capped below the default.
    #[arg(long, value_name = "F", default_value_t = DEFAULT_MIN_CONFIDENCE)]
    min_confidence: f64,

    /// PEM file with the proxy's CA certificate(s): leaves it issued are proxy-minted for certain.
    /// Repeatable. Without it, interception CAs are learned from the traffic (and reported).
    #[arg(long, value_name = "PEM")]
    proxy_ca: Vec<String>,

    /// Address of the proxy (client-facing or upstream side). Repeatable. Connections to it are
    /// attributed to the proxy even when TLS 1.3 hides the certificate; connections from it are
    /// its upstream legs, not clients.
    #[arg(long, value_name = "IP")]
    proxy_addr: Vec<std::net::IpAddr>,

    /// Write findings that are not rules (learned proxy CAs, clients missing the proxy CA) as NDJSON.
    #[arg(long, value_name = "PATH|-")]
    findings: Option<String>,

    /// Bytes per direction reassembled for the handshake; beyond it only record headers are followed.
    #[arg(long, value_name = "BYTES", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    handshake_cap: u32,

    /// Seconds without a packet after which a connection is finished as `incomplete`.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    idle_timeout: u32,

    /// Most connections tracked at once; beyond it the least recently active is finished early (counted).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_flows: u32,

    /// No summary on standard error.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return command_line_error(e),
    };
    match cli.command {
        Command::Replay(args) => run_replay(args),
        Command::Export(args) => pinwatch::export::run_export(args),
    }
}

/// Help and version go to standard output as usual; a mistake on the command line is one line
/// on standard error (clap's own message, its tip folded in) and exit code 2.
fn command_line_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let mut message = String::new();
    for line in text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
    {
        match line.strip_prefix("tip: ") {
            Some(tip) => message.push_str(&format!(" ({tip})")),
            None if message.is_empty() => message.push_str(line.trim_start_matches("error: ")),
            None => message.push_str(&format!(" {line}")),
        }
    }
    let command = std::env::args()
        .nth(1)
        .filter(|a| a == "replay" || a == "export")
        .map_or_else(|| "pinwatch".to_string(), |c| format!("pinwatch {c}"));
    eprintln!("pinwatch: {message}; see `{command} --help`");
    ExitCode::from(exit::USAGE)
}

fn run_replay(args: ReplayArgs) -> ExitCode {
    if !(0.0..=1.0).contains(&args.min_confidence) {
        eprintln!(
            "pinwatch: --min-confidence must be between 0 and 1, got {}",
            args.min_confidence
        );
        return ExitCode::from(exit::USAGE);
    }
    let mut proxy_cas = ProxyCas::default();
    for pem in &args.proxy_ca {
        if let Err(e) = proxy_cas.load_pem(pem) {
            eprintln!("pinwatch: --proxy-ca {e}");
            return ExitCode::from(exit::INPUT);
        }
    }
    let rules_path = match (&args.rules, args.connections.as_deref()) {
        (Some(p), _) => Some(p.clone()),
        (None, Some("-")) => None,
        (None, _) => Some("-".to_string()),
    };
    if let Some(clash) = output_clash(&args, rules_path.as_deref()) {
        eprintln!("pinwatch: {clash}");
        return ExitCode::from(exit::USAGE);
    }
    let open = |p: &Option<String>| p.as_deref().map(NdjsonSink::create).transpose();
    let (mut sink, mut rules_sink, mut findings_sink) = match (
        open(&args.connections),
        open(&rules_path),
        open(&args.findings),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("pinwatch: {e}");
            return ExitCode::from(exit::OUTPUT);
        }
    };
    let mut correlator = Correlator::new(CorrelateConfig {
        proxy_cas,
        proxy_addrs: args.proxy_addr.clone(),
    });
    let config = ReplayConfig {
        flow: FlowConfig {
            handshake_cap: args.handshake_cap as usize,
            idle_timeout_ns: args.idle_timeout as i64 * 1_000_000_000,
            max_flows: args.max_flows as usize,
            ..FlowConfig::default()
        },
        progress: !args.quiet,
    };
    let result = replay(&args.files, config, &mut |rec, _verdict| {
        correlator.observe(rec, rec.ts_start_ns);
        match sink.as_mut() {
            Some(s) => s.write(rec),
            None => Ok(()),
        }
    });
    let report = correlator.conclude();
    let written = write_rules(
        &report,
        args.min_confidence,
        rules_sink.as_mut(),
        findings_sink.as_mut(),
    );
    let flushed = [sink.as_mut(), rules_sink.as_mut(), findings_sink.as_mut()]
        .into_iter()
        .flatten()
        .try_for_each(|s| s.flush())
        .and(written);
    let summary = match (result, flushed) {
        (Ok(s), Ok(_)) => s,
        (Err(e), _) | (Ok(_), Err(e)) => {
            eprintln!("pinwatch: {e}");
            return ExitCode::from(exit::OUTPUT);
        }
    };
    // When no input could be read at all, the error lines are the whole story.
    if !args.quiet && summary.files > 0 {
        print_summary(&summary);
        print_table(&report, args.min_confidence);
    }
    for e in &summary.errors {
        eprintln!("pinwatch: {e}");
    }
    match summary.errors.first() {
        None => ExitCode::SUCCESS,
        Some(e) if e.is_mid_file() => ExitCode::from(exit::DAMAGED),
        Some(_) => ExitCode::from(exit::INPUT),
    }
}

/// An output path that names an input file (opening it for writing would empty it before it
/// is read) or another output (the two would overwrite each other).
fn output_clash(args: &ReplayArgs, rules: Option<&str>) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let inputs: Vec<(u64, u64)> = args
        .files
        .iter()
        .filter(|f| f.as_str() != "-")
        .filter_map(|f| id(f))
        .collect();
    let outputs: Vec<(&str, &str)> = [
        ("--connections", args.connections.as_deref()),
        ("--rules", rules),
        ("--findings", args.findings.as_deref()),
    ]
    .into_iter()
    .filter_map(|(flag, p)| Some((flag, p.filter(|p| *p != "-")?)))
    .collect();
    for (i, &(flag, path)) in outputs.iter().enumerate() {
        if id(path).is_some_and(|o| inputs.contains(&o)) {
            return Some(format!(
                "{flag} {path} is one of the input files; choose another output path"
            ));
        }
        if let Some((other, _)) = outputs[..i]
            .iter()
            .find(|(_, p)| *p == path || id(p).is_some_and(|o| id(path) == Some(o)))
        {
            return Some(format!(
                "{flag} and {other} both name {path}; give each output its own path"
            ));
        }
    }
    None
}

fn print_summary(s: &Summary) {
    let mut out = String::new();
    out.push_str(&format!(
        "pinwatch: {} file(s), {} packets, {:.1} MB, {} TCP connections in {:.2}s ({:.0} packets/s, {:.2} Gbit/s)\n",
        s.files,
        s.packets,
        s.bytes as f64 / 1e6,
        s.connections,
        s.elapsed.as_secs_f64(),
        s.packets_per_sec(),
        s.gbit_per_sec(),
    ));
    out.push_str("  outcomes:");
    for o in Outcome::ALL {
        if let Some(n) = s.outcomes.get(&o) {
            out.push_str(&format!(" {}={}", o.as_str(), n));
        }
    }
    out.push('\n');
    if !s.skipped.is_empty() {
        let parts: Vec<String> = s.skipped.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("  packets not analysed: {}\n", parts.join(" ")));
    }
    if !s.anomalies.is_empty() {
        let parts: Vec<String> = s
            .anomalies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!("  anomalies (connections): {}\n", parts.join(" ")));
    }
    if s.evicted > 0 {
        out.push_str(&format!(
            "  connections finished early by --max-flows: {}\n",
            s.evicted
        ));
    }
    eprint!("{out}");
}

fn write_rules(
    report: &Report,
    min_confidence: f64,
    rules: Option<&mut NdjsonSink>,
    findings: Option<&mut NdjsonSink>,
) -> Result<(), pinwatch::output::SinkError> {
    if let Some(out) = rules {
        for rule in report.rules(min_confidence) {
            out.write(rule)?;
        }
    }
    if let Some(out) = findings {
        for ca in &report.proxy_cas {
            out.write(
                &serde_json::json!({"schema": "pinwatch.finding/1", "kind": "proxy_ca", "ca": ca}),
            )?;
        }
        for m in &report.missing_proxy_ca {
            out.write(&serde_json::json!({"schema": "pinwatch.finding/1", "kind": "missing_proxy_ca", "client": m}))?;
        }
    }
    Ok(())
}

/// The human-readable close of a run: candidates, learned proxy CAs, clients missing the CA.
fn print_table(report: &Report, min_confidence: f64) {
    let mut out = String::new();
    if !report.proxy_cas.is_empty() {
        out.push_str("\ninterception CAs:\n");
        for ca in &report.proxy_cas {
            out.push_str(&format!(
                "  {}  ({} leaves) - {}\n",
                ca.issuer,
                ca.leaf_count,
                ca.why.join("; ")
            ));
        }
    }
    if !report.missing_proxy_ca.is_empty() {
        out.push_str(
            "\nclients missing the proxy CA (install it; no bypass rules made for them):\n",
        );
        for m in &report.missing_proxy_ca {
            out.push_str(&format!(
                "  {}  {} failures on {}\n",
                m.client_ip,
                m.failures,
                m.registrable_domains.join(", ")
            ));
        }
    }
    if report.upstream_legs > 0 {
        out.push_str(&format!(
            "\nproxy upstream connections recognised: {} from {} (not counted as clients)\n",
            report.upstream_legs,
            report.upstream_hosts.join(", ")
        ));
    }
    if report.ordinary_cert_failures > 0 {
        out.push_str(&format!(
            "\nfailures behind certificates not minted by the proxy (ordinary certificate errors, not pinning): {}\n",
            report.ordinary_cert_failures
        ));
    }
    let shown: Vec<_> = report
        .candidates
        .iter()
        .filter(|r| r.evidence.failures > 0)
        .take(30)
        .collect();
    if shown.is_empty() {
        out.push_str("\nno pinning candidates\n");
    } else {
        out.push_str(&format!(
            "\ncandidate bypass rules (emitted at confidence >= {min_confidence}):\n"
        ));
        out.push_str(&format!(
            "  {:<5} {:<28} {:<15} {:>7} {:>5}  reason\n",
            "conf", "name", "scope", "fail/ok", "hosts"
        ));
        for r in shown {
            let (name, scope) = match (&r.matcher.host, &r.matcher.suffix, &r.matcher.client_ja4) {
                (Some(h), _, Some(j)) => (h.clone(), format!("ja4 {}", &j[..j.len().min(10)])),
                (Some(h), _, None) => (h.clone(), "host".to_string()),
                (None, Some(s), _) => (format!("*.{s}"), "suffix".to_string()),
                _ => (String::new(), String::new()),
            };
            let mark = if r.confidence >= min_confidence {
                ' '
            } else {
                '-'
            };
            let ok = r.evidence.successes_same_fingerprint + r.evidence.successes_outside_proxy;
            out.push_str(&format!(
                "{mark} {:<5.2} {:<28} {:<15} {:>7} {:>5}  {}\n",
                r.confidence,
                name,
                scope,
                format!("{}/{}", r.evidence.failures, ok),
                r.evidence.client_hosts,
                r.reason
            ));
        }
        out.push_str("  ('-' = below the threshold, not emitted)\n");
    }
    eprint!("{out}");
}
