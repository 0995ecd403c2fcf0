//! pinwatch command line.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use pinwatch::classify::Outcome;
use pinwatch::flow::FlowConfig;
use pinwatch::output::NdjsonSink;
use pinwatch::replay::{ReplayConfig, Summary, replay};

/// Exit codes (documented in the README).
mod exit {
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
}

#[derive(Args)]
struct ReplayArgs {
    /// Capture files, read in the order given. `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,

    /// Write one JSON object per connection (NDJSON) to PATH, or `-` for standard output.
    #[arg(long, value_name = "PATH|-")]
    connections: Option<String>,

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
    let cli = Cli::parse();
    match cli.command {
        Command::Replay(args) => run_replay(args),
    }
}

fn run_replay(args: ReplayArgs) -> ExitCode {
    let mut sink = match args
        .connections
        .as_deref()
        .map(NdjsonSink::create)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pinwatch: {e}");
            return ExitCode::from(exit::OUTPUT);
        }
    };
    let config = ReplayConfig {
        flow: FlowConfig {
            handshake_cap: args.handshake_cap as usize,
            idle_timeout_ns: args.idle_timeout as i64 * 1_000_000_000,
            max_flows: args.max_flows as usize,
            ..FlowConfig::default()
        },
        progress: !args.quiet,
    };
    let result = replay(
        &args.files,
        config,
        &mut |rec, _verdict| match sink.as_mut() {
            Some(s) => s.write(rec),
            None => Ok(()),
        },
    );
    let flushed = sink.as_mut().map(|s| s.flush()).transpose();
    let summary = match (result, flushed) {
        (Ok(s), Ok(_)) => s,
        (Err(e), _) | (Ok(_), Err(e)) => {
            eprintln!("pinwatch: {e}");
            return ExitCode::from(exit::OUTPUT);
        }
    };
    if !args.quiet {
        print_summary(&summary);
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
