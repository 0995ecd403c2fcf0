//! pinwatch command line.

use std::process::ExitCode;
use std::time::Duration;

/// mimalloc rather than glibc's allocator: records are built on worker threads and freed on
/// the collector's, and glibc's per-arena locks made those frees contend (`__lll_lock_wake`
/// in profiles); single-threaded replay also got 15% faster (scripts/bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pinwatch::classify::{Outcome, Verdict};
use pinwatch::correlate::Limits;
use pinwatch::correlate::partition::Partition;
use pinwatch::correlate::path::RecordPaths;
use pinwatch::correlate::proxy::ProxyCas;
use pinwatch::correlate::score::DEFAULT_MIN_CONFIDENCE;
use pinwatch::correlate::stream::{InForce, Pass, RuleStream};
use pinwatch::correlate::{Config as CorrelateConfig, Correlator, EvidenceTable, Order, Report};
use pinwatch::fleet::publish::{Config as PublishConfig, Publisher, WhenFull};
use pinwatch::fleet::rules::{Change, KvOp, RulesBucket};
use pinwatch::fleet::{FleetError, Server};
use pinwatch::flow::FlowConfig;
use pinwatch::memory::{configure_allocator, release_freed_memory};
use pinwatch::output::counted;
use pinwatch::output::record::{ConnectionRecord, Origin};
use pinwatch::pipeline::{self, FileSource, Output, Summary};
use pinwatch::sinks::file::{FileSinkError, Flush, LineSink, Target};
use pinwatch::sinks::webhook::{
    WebhookConfig, WebhookError, WebhookSink, read_ca_file, read_secret,
};
use pinwatch::stats::Stats;

/// Exit codes (documented in the README).
mod exit {
    pub const USAGE: u8 = 2;
    pub const INPUT: u8 = 3;
    pub const DAMAGED: u8 = 4;
    pub const OUTPUT: u8 = 5;
    #[cfg_attr(not(feature = "live"), allow(dead_code))]
    pub const PRIVILEGES: u8 = 6;
}

/// `--version`: the features compiled in, since the plain and the live build are both
/// called `pinwatch`.
#[cfg(feature = "live")]
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (features: live — replay and live capture through libpcap, replay --bpf)"
);
#[cfg(not(feature = "live"))]
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (features: none — replay and export only; build with --features live for live capture)"
);

#[derive(Parser)]
#[command(
    name = "pinwatch",
    version = VERSION,
    about = "Find apps whose certificate pinning breaks behind a TLS-inspecting proxy",
    long_about = "pinwatch watches TLS handshakes passively (pcap/pcapng files or a span port), \
works out which certificate the proxy presented and how the client reacted, and reports one \
outcome per connection: established, client_alert, client_closed_after_handshake, \
client_closed_in_handshake, client_closed_before_server_hello, server_abort, incomplete, \
not_tls or midstream. From the failures that follow the proxy's certificates it suggests \
bypass rules with a confidence score."
)]
struct Cli {
    /// Read options from this TOML file first (a `[replay]`, `[live]` or `[export]` table of
    /// flag names and values, see contrib/pinwatch.toml); flags on the command line override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Print the options in effect (config file, then flags, then defaults) as TOML and exit.
    #[arg(long, global = true)]
    print_config: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay capture files (pcap or pcapng; `-` for standard input) and report every TLS connection.
    #[command(after_help = "Examples:\n  \
pinwatch replay captures/mitm-explicit-pinning.pcap\n  \
pinwatch replay day1.pcapng day2.pcapng --connections conns.jsonl --rules rules.jsonl\n  \
tcpdump -w - -i eth0 port 443 | pinwatch replay - --connections -")]
    Replay(ReplayArgs),
    /// Watch a network interface (a span or mirror port) and stream records and rule suggestions.
    #[command(after_help = "Examples:\n  \
pinwatch live -i eth1 --promisc --bpf 'tcp' --rules rules.jsonl --user nobody\n  \
pinwatch live -i eth1 --webhook http://127.0.0.1:8080/rules --metrics 127.0.0.1:9187\n\n\
Signals: SIGINT/SIGTERM stop, drain and flush, then print the summary (a second SIGINT exits\n\
at once); SIGHUP reopens the output files (log rotation); SIGUSR1 prints a stats line now.")]
    Live(LiveArgs),
    /// Read the observations every sensor published to NATS JetStream (`--publish`), score
    /// them as one replay would, and write the fleet's rules.
    #[command(after_help = "Examples:\n  \
pinwatch aggregate --nats nats://127.0.0.1:4222 --rules fleet-rules.jsonl --state /var/lib/pinwatch-agg --once\n  \
pinwatch aggregate --nats tls://nats.example:4222 --nats-ca ca.pem --nats-creds agg.creds --rules rules.jsonl\n\n\
Credentials: --nats-creds FILE or PINWATCH_NATS_CREDS (a .creds file), else PINWATCH_NATS_TOKEN,\n\
else PINWATCH_NATS_USER and PINWATCH_NATS_PASSWORD.")]
    Aggregate(AggregateArgs),
    /// Turn candidate rules (NDJSON from `replay --rules`) into Squid, mitmproxy or domain-list configuration.
    Export(pinwatch::export::ExportArgs),
    /// Make one self-contained HTML page from the rules, connections and findings a replay wrote.
    Report(pinwatch::report::ReportArgs),
    /// Run regression cases (captures plus expected outcomes, rules and findings) for CI.
    Verify(pinwatch::verify::VerifyArgs),
    /// Write the man pages and the bash, zsh and fish completions into DIR (for packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

#[derive(Args)]
struct ReplayArgs {
    /// Capture files, read in the order given. `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,
    /// Also write the HTML report (as `pinwatch report` makes it) to PATH.
    #[arg(long, value_name = "PATH")]
    report: Option<String>,
    /// Only packets this capture filter (libpcap syntax, `man pcap-filter`) passes, e.g.
    /// `tcp port 443`. Needs a build with libpcap (`--features live`).
    #[arg(long, value_name = "FILTER")]
    bpf: Option<String>,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    track: TrackArgs,
    #[command(flatten)]
    publish: PublishArgs,
}

/// Publishing observations to the fleet (`--publish`).
#[derive(Args)]
struct PublishArgs {
    /// Also publish every TLS connection's observation (pinwatch.observation/1) to this NATS
    /// JetStream server, on subject pinwatch.obs.SENSOR (--sensor, default the host name), for
    /// `pinwatch aggregate`. Credentials: --nats-creds or the environment (see aggregate).
    /// Several URLs separated by commas are the nodes of a cluster.
    #[arg(long, value_name = "nats://HOST:PORT")]
    publish: Option<String>,
    #[command(flatten)]
    nats: NatsArgs,
    /// Observations held while the server is unreachable or slow; beyond that a live sensor
    /// drops them (counted) and a replay waits.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    publish_spool: u32,
    /// Seconds to wait at the end for the server to acknowledge what is still spooled.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    publish_wait: u64,
    /// Spool to this directory what the memory spool has no room for (nothing is dropped and
    /// a replay never waits until the disk spool is full), and keep there what is still
    /// unacknowledged at the end: the next start with the same directory and --sensor sends it.
    #[arg(long, value_name = "DIR")]
    publish_spool_dir: Option<std::path::PathBuf>,
    /// Most megabytes the disk spool takes.
    #[arg(long, value_name = "MB", default_value_t = 1024, requires = "publish_spool_dir", value_parser = clap::value_parser!(u64).range(1..))]
    publish_spool_disk_mb: u64,
}

impl PublishArgs {
    fn disk(&self) -> Option<pinwatch::fleet::publish::DiskConfig> {
        Some(pinwatch::fleet::publish::DiskConfig {
            dir: self.publish_spool_dir.clone()?,
            max_bytes: self.publish_spool_disk_mb.saturating_mul(1 << 20),
        })
    }
}

/// How to reach and use the NATS server, for sensors and aggregators alike.
#[derive(Args)]
struct NatsArgs {
    /// NATS credentials file (user JWT and nkey seed); or set PINWATCH_NATS_CREDS.
    #[arg(long, value_name = "FILE")]
    nats_creds: Option<std::path::PathBuf>,
    /// Trust only the CA certificates in FILE (PEM) for the NATS server's TLS certificate (TLS
    /// is then required).
    #[arg(long, value_name = "FILE")]
    nats_ca: Option<std::path::PathBuf>,
    /// Copies a JetStream cluster keeps of the observation stream and the rules bucket when
    /// pinwatch creates them: 3 on a cluster of three or more nodes, so that losing one loses
    /// nothing. A stream that exists keeps its own setting.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    nats_replicas: u8,
}

impl NatsArgs {
    fn server(&self, url: &str) -> Server {
        Server {
            replicas: usize::from(self.nats_replicas),
            ..Server::new(url, self.nats_creds.clone(), self.nats_ca.clone())
        }
    }
}

#[derive(Args)]
struct AggregateArgs {
    /// The NATS JetStream server the sensors publish to (several URLs separated by commas
    /// are the nodes of a cluster).
    #[arg(long, value_name = "nats://HOST:PORT")]
    nats: String,
    #[command(flatten)]
    server: NatsArgs,
    /// Read what the stream holds, write the rules and exit (without it: keep reading, and
    /// write a rule line whenever a rule enters, changes or leaves the set in force, until
    /// SIGINT or SIGTERM).
    #[arg(long)]
    once: bool,
    /// Score and emit only the rules of this partition of the registrable domains, K of N
    /// (K from 0 to N-1; findings come from partition 0): N aggregators, each with its own K,
    /// share the scoring and together give the rules one aggregator gives. Each still reads
    /// the whole stream (see the README).
    #[arg(long, value_name = "K/N", default_value = "0/1")]
    partition: Partition,
    #[command(flatten)]
    webhook: WebhookArgs,
    #[command(flatten)]
    out: OutputArgs,
}

/// `--webhook` and its flags (live, aggregate).
#[derive(Args)]
struct WebhookArgs {
    /// POST every rule suggestion as JSON to this URL (http:// or https://), with retries and a
    /// bounded queue.
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// Trust only the CA certificates in FILE (PEM) for an https:// webhook, e.g. a private CA;
    /// without it Mozilla's root store is used.
    #[arg(long, value_name = "FILE", requires = "webhook")]
    webhook_ca: Option<std::path::PathBuf>,
    /// Send the first line of FILE as the webhook's Authorization header (e.g. `Bearer abc`);
    /// or set PINWATCH_WEBHOOK_AUTH. Read before privileges are dropped.
    #[arg(long, value_name = "FILE", requires = "webhook")]
    webhook_auth_file: Option<std::path::PathBuf>,
    /// Sign each webhook body with HMAC-SHA256 keyed by the first line of FILE
    /// (X-Pinwatch-Signature, X-Pinwatch-Timestamp; see the README); or set
    /// PINWATCH_WEBHOOK_SECRET. Read before privileges are dropped.
    #[arg(long, value_name = "FILE", requires = "webhook")]
    webhook_secret_file: Option<std::path::PathBuf>,
    /// Suggestions held for the webhook while it is down; beyond that they are dropped (counted).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    webhook_queue: u32,
}

#[derive(Args)]
struct LiveArgs {
    /// Interface to capture on (`any` for all).
    #[arg(short, long, value_name = "IFACE")]
    interface: String,
    /// Capture filter in libpcap syntax (`man pcap-filter`), run in the kernel, e.g. `tcp`.
    #[arg(long, value_name = "FILTER")]
    bpf: Option<String>,
    /// Bytes kept per packet.
    #[arg(long, value_name = "N", default_value_t = 262_144, value_parser = clap::value_parser!(u32).range(96..=262_144))]
    snaplen: u32,
    /// Kernel capture buffer in MiB: bursts beyond it are dropped by the kernel (and reported).
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=2047))]
    buffer_mb: u32,
    /// Promiscuous mode: needed on a span or mirror port, where the traffic is not addressed to this host.
    #[arg(long)]
    promisc: bool,
    /// After opening the capture, become this user (when started as root) and drop every capability.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    #[command(flatten)]
    webhook: WebhookArgs,
    /// Print a stats line on standard error every SECS seconds (0: only on SIGUSR1).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    stats_interval: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9187.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Keep the HTML report (as `pinwatch report` makes it) at PATH, rewritten atomically every
    /// --report-interval seconds and at exit.
    #[arg(long, value_name = "PATH")]
    report: Option<String>,
    /// Seconds between rewrites of --report.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    report_interval: u64,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    track: TrackArgs,
    #[command(flatten)]
    publish: PublishArgs,
}

/// Where results go and how rules are made.
#[derive(Args)]
struct OutputArgs {
    /// Write one JSON object per connection (NDJSON) to PATH, or `-` for standard output. A file
    /// (for every output option) is appended to, so a restarted sensor carries on with it;
    /// `--truncate` starts it afresh.
    #[arg(long, value_name = "PATH|-")]
    connections: Option<String>,

    /// Write candidate bypass rules (NDJSON, schema pinwatch.rule/3) to PATH or `-`. Default:
    /// standard output, unless --connections already writes there. Every line has `status`
    /// (new, updated, refreshed, withdrawn) and `seq`: keep the latest line per id and drop
    /// withdrawn ones. Replay merges into an existing file by rule id (a rule found again
    /// replaces its old line; rules of other captures stay). In live mode a line is written
    /// whenever a rule enters, changes or leaves the set in force.
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

    /// PEM file with a CA that is not the proxy's (an enterprise's internal PKI, which also mints
    /// for many domains without SCTs): its leaves are never taken for proxy-minted. Repeatable.
    #[arg(long, value_name = "PEM")]
    not_proxy_ca: Vec<String>,

    /// Address of the proxy (client-facing or upstream side). Repeatable. Connections to it are
    /// attributed to the proxy even when TLS 1.3 hides the certificate; connections from it are
    /// its upstream legs, not clients.
    #[arg(long, value_name = "IP")]
    proxy_addr: Vec<std::net::IpAddr>,

    /// Write findings that are not rules (learned proxy CAs, clients missing the proxy CA) as
    /// NDJSON (pinwatch.finding/2), with the same `status` and `seq` as rules; in live mode
    /// as they change.
    #[arg(long, value_name = "PATH|-")]
    findings: Option<String>,

    /// Keep the rules and findings in force and the line numbering (`seq`) in DIR, saved
    /// atomically (every minute in live mode, and at exit) and reloaded at start, so a
    /// restarted sensor does not announce unchanged rules again and withdraws what it sent
    /// before. An unreadable or newer state stops the run.
    #[arg(long, value_name = "DIR")]
    state: Option<std::path::PathBuf>,

    /// Name of this sensor in every connection record (`sensor`), to tell sensors apart in a
    /// shared index. Default: the host name.
    #[arg(long, value_name = "NAME")]
    sensor: Option<String>,

    /// Start every output file afresh (emptied when opened) instead of appending to it, and
    /// for replay's --rules instead of merging by rule id.
    #[arg(long)]
    truncate: bool,

    /// Write the run's summary as one JSON object (schema pinwatch.summary/1, see
    /// schema/summary.schema.json) to PATH when the run ends, for CI pipelines.
    #[arg(long, value_name = "PATH")]
    summary_json: Option<String>,

    /// No summary on standard error.
    #[arg(long, short)]
    quiet: bool,
}

/// How connections are tracked.
#[derive(Args)]
struct TrackArgs {
    /// Worker threads, each tracking a share of the connections. Default: the number of cores.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,

    /// Bytes per direction reassembled for the handshake; beyond it only record headers are followed.
    #[arg(long, value_name = "BYTES", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    handshake_cap: u32,

    /// Seconds without a packet after which a connection is finished as `incomplete`.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    idle_timeout: u32,

    /// Most connections tracked at once; beyond it the least recently active are finished early (counted).
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_flows: u32,
}

impl TrackArgs {
    fn threads(&self) -> usize {
        self.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            usize::from,
        )
    }
    fn flow(&self) -> FlowConfig {
        FlowConfig {
            handshake_cap: self.handshake_cap as usize,
            idle_timeout_ns: i64::from(self.idle_timeout) * 1_000_000_000,
            max_flows: self.max_flows as usize,
            ..FlowConfig::default()
        }
    }
}

fn main() -> ExitCode {
    configure_allocator();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv = match config::with_file(argv) {
        Ok(a) => a,
        Err(e) => return Failure(e, exit::USAGE).report(),
    };
    let matches = match cli_command().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) => return command_line_error(e),
    };
    if matches.get_flag("print_config") {
        return config::print(&matches);
    }
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return command_line_error(e),
    };
    match cli.command {
        Command::Replay(args) => run_replay(args),
        Command::Live(args) => run_live(args),
        Command::Aggregate(args) => run_aggregate(args),
        Command::Export(args) => pinwatch::export::run_export(args),
        Command::Report(args) => pinwatch::report::run_report(args),
        Command::Verify(args) => pinwatch::verify::run_verify(args),
        Command::Generate { dir } => generate(&dir),
    }
}

/// The command line; a flag given twice (config file, then command line) takes the last value.
fn cli_command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command().mut_subcommands(|s| s.args_override_self(true))
}

/// `pinwatch generate DIR`: man pages (clap_mangen) and completions (clap_complete).
fn generate(dir: &std::path::Path) -> ExitCode {
    use clap_complete::Shell;
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let cmd = cli_command();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        std::fs::write(dir.join("pinwatch.1"), &page)?;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            // Leaked: clap names are static strings, and this process ends right after.
            let name: &'static str =
                Box::leak(format!("pinwatch-{}", sub.get_name()).into_boxed_str());
            let mut page = Vec::new();
            clap_mangen::Man::new(sub.clone().name(name)).render(&mut page)?;
            std::fs::write(dir.join(format!("{name}.1")), &page)?;
        }
        for (shell, file) in [
            (Shell::Bash, "pinwatch.bash"),
            (Shell::Zsh, "_pinwatch"),
            (Shell::Fish, "pinwatch.fish"),
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cli_command(), "pinwatch", &mut out);
            std::fs::write(dir.join(file), &out)?;
        }
        Ok(())
    };
    match write() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => Failure(format!("generate {}: {e}", dir.display()), exit::OUTPUT).report(),
    }
}

mod config {
    //! `--config FILE`: a TOML file of flags. Each table is a subcommand (`[replay]`, `[live]`,
    //! `[export]`); each key is a long flag name (`min-confidence` or `min_confidence`) and its
    //! value the flag's: a string or number, `true` for a switch (`false` leaves it off), an
    //! array for a flag that may be repeated. The file's flags go before the command line's,
    //! so a flag typed by hand wins. Capture files and the rules file are named on the command
    //! line only.

    use std::ffi::OsString;
    use std::process::ExitCode;

    /// The most a configuration file may hold: it is a handful of lines, not data.
    const MAX_CONFIG_BYTES: u64 = 1 << 20;

    /// `argv` with the flags of the `--config` file (if any) inserted after the subcommand.
    pub fn with_file(argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
        let mut path = None;
        for (i, a) in argv.iter().enumerate() {
            let a = a.to_string_lossy();
            if a == "--" {
                break;
            }
            if a == "--config" {
                path = argv.get(i + 1).cloned();
            } else if let Some(p) = a.strip_prefix("--config=") {
                path = Some(OsString::from(p));
            }
        }
        let Some(path) = path else {
            return Ok(argv);
        };
        let shown = path.to_string_lossy().into_owned();
        let Some(sub_at) = argv
            .iter()
            .position(|a| matches!(a.to_str(), Some("replay" | "live" | "export")))
        else {
            return Ok(argv); // clap says what is missing
        };
        let sub = argv[sub_at].to_string_lossy().into_owned();
        let meta =
            std::fs::metadata(&path).map_err(|e| format!("--config {shown}: cannot read: {e}"))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(format!(
                "--config {shown}: over 1 MiB, not a configuration file"
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("--config {shown}: cannot read: {e}"))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let msg = e.message().to_string();
            let at = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            format!(
                "--config {shown}: not valid TOML{}: {msg}",
                at.map(|l| format!(" (line {l})")).unwrap_or_default()
            )
        })?;
        let mut flags = Vec::new();
        for (section, value) in &table {
            let Some(keys) = value.as_table() else {
                return Err(format!(
                    "--config {shown}: `{section}` must be a table ([replay], [live] or [export])"
                ));
            };
            if !matches!(section.as_str(), "replay" | "live" | "export") {
                return Err(format!(
                    "--config {shown}: unknown table [{section}]; use [replay], [live] or [export]"
                ));
            }
            if *section != sub {
                continue;
            }
            for (key, value) in keys {
                push_flag(&mut flags, &key.replace('_', "-"), value)
                    .map_err(|e| format!("--config {shown}: [{section}] {key}: {e}"))?;
            }
        }
        let mut out = argv[..=sub_at].to_vec();
        out.extend(flags);
        out.extend_from_slice(&argv[sub_at + 1..]);
        Ok(out)
    }

    fn push_flag(out: &mut Vec<OsString>, name: &str, value: &toml::Value) -> Result<(), String> {
        use toml::Value;
        if matches!(name, "config" | "print-config" | "help" | "version") {
            return Err("cannot be set in the configuration file".into());
        }
        let flag = OsString::from(format!("--{name}"));
        match value {
            Value::Boolean(true) => out.push(flag),
            Value::Boolean(false) => {}
            Value::String(s) => out.extend([flag, OsString::from(s)]),
            Value::Integer(n) => out.extend([flag, OsString::from(n.to_string())]),
            Value::Float(f) => out.extend([flag, OsString::from(f.to_string())]),
            Value::Array(items) => {
                for item in items {
                    if item.is_array() || item.is_table() {
                        return Err("a list holds strings or numbers".into());
                    }
                    push_flag(out, name, item)?;
                }
            }
            _ => return Err("expected a string, number, boolean or list".into()),
        }
        Ok(())
    }

    /// `--print-config`: the subcommand's options in effect, as a TOML table.
    pub fn print(matches: &clap::ArgMatches) -> ExitCode {
        let Some((name, sub)) = matches.subcommand() else {
            return ExitCode::SUCCESS;
        };
        let cmd = super::cli_command();
        let Some(sub_cmd) = cmd.find_subcommand(name) else {
            return ExitCode::SUCCESS;
        };
        let mut keys = toml::Table::new();
        for arg in sub_cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let Some(long) = arg.get_long() else { continue };
            if arg.is_positional() || matches!(long, "config" | "print-config" | "help") {
                continue;
            }
            let Some(raw) = sub.get_raw(id) else { continue };
            let values: Vec<toml::Value> = raw.map(|v| typed(&v.to_string_lossy())).collect();
            let value = if matches!(arg.get_action(), clap::ArgAction::Append) {
                toml::Value::Array(values)
            } else {
                match values.into_iter().last() {
                    Some(v) => v,
                    None => continue,
                }
            };
            keys.insert(long.to_string(), value);
        }
        let mut doc = toml::Table::new();
        doc.insert(name.to_string(), toml::Value::Table(keys));
        print!("{}", toml::to_string(&doc).unwrap_or_default());
        ExitCode::SUCCESS
    }

    fn typed(v: &str) -> toml::Value {
        if let Ok(b) = v.parse::<bool>() {
            return toml::Value::Boolean(b);
        }
        if let Ok(n) = v.parse::<i64>() {
            return toml::Value::Integer(n);
        }
        if let Ok(f) = v.parse::<f64>()
            && f.is_finite()
        {
            return toml::Value::Float(f);
        }
        toml::Value::String(v.to_string())
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
        .filter(|a| ["replay", "live", "export", "report", "verify"].contains(&a.as_str()))
        .map_or_else(|| "pinwatch".to_string(), |c| format!("pinwatch {c}"));
    eprintln!("pinwatch: {message}; see `{command} --help`");
    ExitCode::from(exit::USAGE)
}

/// An output path that names an input file (opening it for writing would empty it before it
/// is read) or another output (the two would overwrite each other).
fn output_clash(files: &[String], out: &OutputArgs, rules: Option<&str>) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let inputs: Vec<(u64, u64)> = files
        .iter()
        .filter(|f| f.as_str() != "-")
        .filter_map(|f| id(f))
        .collect();
    let outputs: Vec<(&str, &str)> = [
        ("--connections", out.connections.as_deref()),
        ("--rules", rules),
        ("--findings", out.findings.as_deref()),
    ]
    .into_iter()
    .filter_map(|(flag, p)| Some((flag, p.filter(|p| *p != "-")?)))
    // Devices and pipes (/dev/null, a FIFO) can take several writers.
    .filter(|(_, p)| std::fs::metadata(p).map_or(true, |m| m.is_file()))
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

/// A failed run: the one line to print and the exit code.
struct Failure(String, u8);

impl Failure {
    fn report(self) -> ExitCode {
        eprintln!("pinwatch: {}", self.0);
        ExitCode::from(self.1)
    }
}

/// Signal flags, set by handlers, read by the pipeline and the output stage.
struct Signals {
    stop: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
    stats_now: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Signals {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        let signals = Signals {
            stop: Arc::new(AtomicBool::new(false)),
            reopen: Arc::new(AtomicBool::new(false)),
            stats_now: Arc::new(AtomicBool::new(false)),
        };
        // A second SIGINT while draining exits at once; registered first so it sees the flag
        // before the first handler sets it.
        let _ = signal_hook::flag::register_conditional_shutdown(
            SIGINT,
            130,
            Arc::clone(&signals.stop),
        );
        for sig in [SIGINT, SIGTERM] {
            let _ = signal_hook::flag::register(sig, Arc::clone(&signals.stop));
        }
        let _ = signal_hook::flag::register(SIGHUP, Arc::clone(&signals.reopen));
        let _ = signal_hook::flag::register(SIGUSR1, Arc::clone(&signals.stats_now));
        signals
    }
}

/// The output side shared by replay and live.
struct Settings {
    min_confidence: f64,
    correlate: CorrelateConfig,
}

fn settings(out: &OutputArgs) -> Result<Settings, Failure> {
    if !(0.0..=1.0).contains(&out.min_confidence) {
        return Err(Failure(
            format!(
                "--min-confidence must be between 0 and 1, got {}",
                out.min_confidence
            ),
            exit::USAGE,
        ));
    }
    let mut proxy_cas = ProxyCas::default();
    for pem in &out.proxy_ca {
        proxy_cas
            .load_pem(pem)
            .map_err(|e| Failure(format!("--proxy-ca {e}"), exit::INPUT))?;
    }
    for pem in &out.not_proxy_ca {
        proxy_cas
            .load_not_proxy_pem(pem)
            .map_err(|e| Failure(format!("--not-proxy-ca {e}"), exit::INPUT))?;
    }
    Ok(Settings {
        min_confidence: out.min_confidence,
        correlate: CorrelateConfig {
            proxy_cas,
            proxy_addrs: out.proxy_addr.clone(),
            ..CorrelateConfig::default()
        },
    })
}

/// The NDJSON outputs: records, rules, findings.
struct Sinks {
    connections: Option<LineSink>,
    rules: Option<LineSink>,
    /// Replay's rules file, written whole at the end (merged by id, or replaced with
    /// --truncate) instead of appended to.
    rules_file: Option<(std::path::PathBuf, bool)>,
    findings: Option<LineSink>,
}

impl Sinks {
    /// Opens the outputs; `inputs` are the capture files, which no output may name.
    /// `whole_rules`: a rules file is written whole at the end (replay).
    fn open(
        out: &OutputArgs,
        inputs: &[String],
        flush: Flush,
        whole_rules: bool,
    ) -> Result<Sinks, Failure> {
        let rules_path = match (&out.rules, out.connections.as_deref()) {
            (Some(p), _) => Some(p.clone()),
            (None, Some("-")) => None,
            (None, _) => Some("-".to_string()),
        };
        if let Some(clash) = output_clash(inputs, out, rules_path.as_deref()) {
            return Err(Failure(clash, exit::USAGE));
        }
        let open = |p: &Option<String>| {
            p.as_deref()
                .map(|p| LineSink::open_with(Target::parse(p), flush, out.truncate))
                .transpose()
                .map_err(|e| Failure(e.to_string(), exit::OUTPUT))
        };
        let rules_file = rules_path
            .as_deref()
            .filter(|p| whole_rules && *p != "-")
            .map(|p| (std::path::PathBuf::from(p), out.truncate));
        let rules = match &rules_file {
            // Opened (and dropped) now so an unwritable path fails before the replay, not after.
            Some((path, _)) => {
                LineSink::open(Target::File(path.clone()), flush)
                    .map_err(|e| Failure(e.to_string(), exit::OUTPUT))?;
                None
            }
            None => open(&rules_path)?,
        };
        Ok(Sinks {
            connections: open(&out.connections)?,
            rules,
            rules_file,
            findings: open(&out.findings)?,
        })
    }

    fn all(&mut self) -> impl Iterator<Item = &mut LineSink> {
        [&mut self.connections, &mut self.rules, &mut self.findings]
            .into_iter()
            .flatten()
    }

    fn reopen(&mut self) {
        for s in self.all() {
            s.reopen_handle().request();
        }
    }

    fn flush(&mut self) -> Result<(), FileSinkError> {
        self.all().try_for_each(|s| s.flush())
    }

    fn write_findings(&mut self, lines: &[serde_json::Value]) -> Result<(), FileSinkError> {
        let Some(out) = self.findings.as_mut() else {
            return Ok(());
        };
        lines.iter().try_for_each(|line| out.write(line))
    }
}

/// A write error that ends the run, or a warning (a failed reopen after rotation: the sink
/// keeps writing to the file it had).
fn fatal_only(result: Result<(), FileSinkError>) -> Result<(), FileSinkError> {
    match result {
        Err(e) if !e.is_fatal() => {
            eprintln!("pinwatch: warning: {e}");
            Ok(())
        }
        other => other,
    }
}

/// What replay does with each record.
struct ReplayOutput<'a> {
    sinks: &'a mut Sinks,
    signals: &'a Signals,
    report: Option<pinwatch::report::Builder>,
    /// Capture time the pipeline has got to (for rule TTLs).
    now_ns: i64,
    record_paths: RecordPaths,
}

impl Output for ReplayOutput<'_> {
    type Error = FileSinkError;
    fn record_paths(&mut self) -> Option<&mut RecordPaths> {
        Some(&mut self.record_paths)
    }
    fn wants_lines(&self) -> bool {
        self.sinks.connections.is_some() && self.report.is_none()
    }
    fn wants_records(&self) -> bool {
        self.sinks.connections.is_some() || self.report.is_some()
    }
    fn record(&mut self, rec: &ConnectionRecord, _: &Verdict) -> Result<(), FileSinkError> {
        if let Some(r) = self.report.as_mut() {
            r.record(rec);
        }
        match self.sinks.connections.as_mut() {
            Some(s) => fatal_only(s.write(rec)),
            None => Ok(()),
        }
    }
    fn line(&mut self, json: &[u8]) -> Result<(), FileSinkError> {
        match self.sinks.connections.as_mut() {
            Some(s) => fatal_only(s.write_line(json)),
            None => Ok(()),
        }
    }
    fn progress(&mut self, _: Order, ts_ns: i64) -> Result<(), FileSinkError> {
        if self.signals.reopen.swap(false, Ordering::Relaxed) {
            self.sinks.reopen();
        }
        self.now_ns = self.now_ns.max(ts_ns);
        Ok(())
    }
}

fn run_replay(args: ReplayArgs) -> ExitCode {
    match replay_main(&args) {
        Ok(code) => code,
        Err(f) => f.report(),
    }
}

fn replay_main(args: &ReplayArgs) -> Result<ExitCode, Failure> {
    let settings = settings(&args.out)?;
    let filter = args
        .bpf
        .as_deref()
        .map(pinwatch::capture::bpf::Filter::new)
        .transpose()
        .map_err(|e| Failure(e, exit::USAGE))?;
    let mut sinks = Sinks::open(&args.out, &args.files, Flush::Manual, true)?;
    let saved = load_state(&args.out)?;
    let signals = Signals::install();
    let threads = args.track.threads();
    let publisher = start_publisher(&args.publish, &args.out, WhenFull::Wait, &signals)?;
    let evidence = Arc::new(match &publisher {
        Some(p) => EvidenceTable::with_tap(Limits::default(), p.tap()),
        None => EvidenceTable::default(),
    });
    let record_paths = RecordPaths::new(&settings.correlate);
    let correlator = Correlator::with_table(settings.correlate, Arc::clone(&evidence));
    let mut stream = RuleStream::resume(correlator, settings.min_confidence, saved);
    let stats = Arc::new(Stats::new(threads));
    let config = pipeline::Config {
        flow: args.track.flow(),
        threads,
        ..pipeline::Config::default()
    };
    let mut output = ReplayOutput {
        sinks: &mut sinks,
        signals: &signals,
        report: args
            .report
            .as_ref()
            .map(|_| pinwatch::report::Builder::new(args.files.clone())),
        now_ns: i64::MIN,
        record_paths,
    };
    let origin = Origin::new(Some(&sensor_name(&args.out)), None, &args.files);
    let mut source = FileSource::new(&args.files, !args.out.quiet)
        .with_filter(filter)
        .with_origin(Arc::new(origin));
    let result = pipeline::run(
        &mut source,
        config,
        &evidence,
        &stats,
        &signals.stop,
        &mut output,
    );
    let page = output.report.take();
    let now_ns = output.now_ns;
    let published = publisher.map(|p| {
        let url = args.publish.publish.clone().unwrap_or_default();
        (
            url,
            p.finish(Duration::from_secs(args.publish.publish_wait)),
        )
    });
    release_freed_memory();
    let (report, pass) = stream.finish(now_ns);
    let written = write_rules(&pass, &mut sinks);
    let flushed = sinks.flush().and(written);
    save_state(&args.out, &stream)?;
    let summary = match (result, flushed) {
        (Ok(s), Ok(())) => s,
        (Err(e), _) | (Ok(_), Err(e)) => return output_failure(e),
    };
    if let (Some(path), Some(builder)) = (&args.report, &page) {
        builder
            .write(path, &report, settings.min_confidence, summary.packets)
            .map_err(|e| Failure(e, exit::OUTPUT))?;
    }
    // When no input could be read at all, the error lines are the whole story.
    if !args.out.quiet && summary.files > 0 {
        print_summary(&summary);
        print_table(&report, settings.min_confidence);
    }
    for e in &summary.errors {
        eprintln!("pinwatch: {e}");
    }
    let code = match summary.errors.first() {
        None => 0,
        Some(e) if e.is_mid_file() => exit::DAMAGED,
        Some(_) => exit::INPUT,
    };
    let code = match &published {
        Some((url, p)) => {
            let lost = p.dropped + p.unsent;
            if !args.out.quiet || lost > 0 || p.on_disk > 0 {
                eprintln!(
                    "pinwatch: published {} to {url} ({} already there), {} dropped, {} unsent{}",
                    counted(p.published, "observation", "observations"),
                    p.duplicates,
                    p.dropped,
                    p.unsent,
                    on_disk(p, &args.publish)
                );
            }
            if lost > 0 && code == 0 {
                eprintln!(
                    "pinwatch: --publish {url}: {} not delivered",
                    counted(lost, "observation was", "observations were")
                );
                exit::OUTPUT
            } else {
                code
            }
        }
        None => code,
    };
    if let Some(path) = &args.out.summary_json {
        write_summary_json(path, &summary, &report, settings.min_confidence, code)?;
    }
    Ok(ExitCode::from(code))
}

/// The summary's note of what waits in the disk spool.
fn on_disk(s: &pinwatch::fleet::publish::Summary, args: &PublishArgs) -> String {
    match &args.publish_spool_dir {
        Some(dir) => format!(", {} waiting in {}", s.on_disk, dir.display()),
        None => String::new(),
    }
}

/// `--publish`: the publisher, started (its connection is made in the background).
fn start_publisher(
    args: &PublishArgs,
    out: &OutputArgs,
    when_full: WhenFull,
    signals: &Signals,
) -> Result<Option<Publisher>, Failure> {
    let Some(url) = &args.publish else {
        return Ok(None);
    };
    let config = PublishConfig {
        server: args.nats.server(url),
        sensor: sensor_name(out),
        spool: args.publish_spool as usize,
        when_full,
        disk: args.disk(),
    };
    Publisher::start(config, Arc::clone(&signals.stop))
        .map(Some)
        .map_err(fleet_failure)
}

fn fleet_failure(e: FleetError) -> Failure {
    match e {
        FleetError::Usage(m) => Failure(m, exit::USAGE),
        FleetError::Server(m) => Failure(m, exit::INPUT),
    }
}

fn run_aggregate(args: AggregateArgs) -> ExitCode {
    match aggregate_main(&args) {
        Ok(code) => code,
        Err(f) => f.report(),
    }
}

/// `pinwatch aggregate`: the stream's observations through the same evidence table, scoring
/// and rule lifecycle as replay (`--once`) or live (following).
fn aggregate_main(args: &AggregateArgs) -> Result<ExitCode, Failure> {
    if args.out.connections.is_some() {
        return Err(Failure(
            "aggregate writes rules and findings, not connection records: drop --connections"
                .into(),
            exit::USAGE,
        ));
    }
    let mut settings = settings(&args.out)?;
    settings.correlate.partition = args.partition;
    let flush = if args.once {
        Flush::Manual
    } else {
        Flush::EveryLine
    };
    let mut sinks = Sinks::open(&args.out, &[], flush, args.once)?;
    let saved = load_state(&args.out)?;
    let webhook = args
        .webhook
        .config()?
        .map(|config| WebhookSink::start(config).map_err(|e| Failure(e.to_string(), exit::USAGE)))
        .transpose()?;
    let signals = Signals::install();
    let evidence = Arc::new(EvidenceTable::default());
    let correlator = Correlator::with_table(settings.correlate, Arc::clone(&evidence));
    let mut stream = RuleStream::resume(correlator, settings.min_confidence, saved);
    // Rules a run with another --partition left in force here: handed over, on this
    // emitter's outputs, before anything is scored.
    let mut released = stream.release(|domain| args.partition.owns(domain));
    let server = args.server.server(&args.nats);
    let fleet = FleetRules {
        bucket: RulesBucket::open(&server).map_err(fleet_failure)?,
        webhook,
        partition: args.partition,
    };
    let mut taken: u64 = 0;
    let mut now_ns = i64::MIN;
    let mut failed: Option<Failure> = None;
    let mut pruned = false;
    let counts =
        pinwatch::fleet::aggregate::read(&server, !args.once, &signals.stop, &mut |batch| {
            // Batches come in capture-time order, and each after the last: the run order.
            for o in &batch.observations {
                evidence.observe(o, (taken, 0));
                taken += 1;
                now_ns = now_ns.max(o.ts_start_ns);
            }
            if args.once {
                return true;
            }
            if signals.reopen.swap(false, Ordering::Relaxed) {
                sinks.reopen();
            }
            let mut pass = stream.tick((taken, 0), now_ns);
            pass.rules.splice(0..0, std::mem::take(&mut released));
            fleet.emit(&pass);
            // Once the stream's evidence is scored, the bucket can be told what is stale.
            if !pruned && stream.passes() > 0 {
                fleet.prune(&stream);
                pruned = true;
            }
            let written = write_rules(&pass, &mut sinks).and_then(|()| sinks.flush());
            let saved = save_state(&args.out, &stream);
            match (written, saved) {
                (Err(e), _) => {
                    failed = Some(Failure(e.to_string(), exit::OUTPUT));
                    false
                }
                (_, Err(f)) => {
                    failed = Some(f);
                    false
                }
                _ => true,
            }
        })
        .map_err(fleet_failure)?;
    if let Some(f) = failed {
        return Err(f);
    }
    release_freed_memory();
    let (report, mut pass) = stream.finish(now_ns);
    pass.rules.splice(0..0, released);
    fleet.emit(&pass);
    fleet.prune(&stream);
    let written = write_rules(&pass, &mut sinks);
    let flushed = sinks.flush().and(written);
    let (kv, hook) = fleet.close();
    save_state(&args.out, &stream)?;
    if let Err(e) = flushed {
        return output_failure(e);
    }
    kv.map_err(|e| Failure(format!("--nats {}: {e}", args.nats), exit::OUTPUT))?;
    if !args.out.quiet {
        eprintln!(
            "pinwatch: aggregated {} from {} ({} resent, {} unreadable, {} of a newer version){}",
            counted(counts.taken, "observation", "observations"),
            args.nats,
            counts.duplicates,
            counts.malformed,
            counts.newer,
            if args.partition.is_whole() {
                String::new()
            } else {
                format!("; partition {}", args.partition)
            }
        );
        if let Some(w) = hook {
            eprintln!(
                "  webhook: delivered={} retried={} dropped={} rejected={} lost_at_exit={}",
                w.delivered, w.retried, w.dropped, w.rejected, w.pending_lost
            );
        }
        print_table(&report, settings.min_confidence);
    }
    Ok(ExitCode::SUCCESS)
}

/// The aggregator's outputs besides its files: the bucket and rule subjects, the webhook.
struct FleetRules {
    bucket: RulesBucket,
    webhook: Option<WebhookSink>,
    partition: Partition,
}

impl FleetRules {
    /// A pass's rule lines, in order, on every one of them.
    fn emit(&self, pass: &Pass) {
        let mut changes = Vec::with_capacity(pass.rules.len());
        for line in &pass.rules {
            let json = line.to_json();
            if let Some(hook) = &self.webhook {
                hook.send(&json);
            }
            changes.push(Change {
                id: line.id.clone(),
                line: serde_json::to_vec(&json).unwrap_or_default(),
                kv: kv_op(line),
            });
        }
        self.bucket.apply(changes);
    }

    /// Deletes this partition's keys whose rules are not in force here.
    fn prune(&self, stream: &RuleStream) {
        let keep = stream
            .in_force()
            .rules
            .iter()
            .filter(|(_, e)| e.in_force)
            .map(|(id, _)| id.clone())
            .collect();
        self.bucket.prune(self.partition, keep);
    }

    /// Waits for the bucket writer, and up to 5 s for the webhook.
    fn close(self) -> (Result<(), String>, Option<pinwatch::stats::WebhookCounts>) {
        let hook = self.webhook.map(|w| w.shutdown(Duration::from_secs(5)));
        (self.bucket.close(), hook)
    }
}

/// What a rule line does to the bucket: a rule in force is put, a withdrawn one deleted,
/// unless it moved to another partition, whose aggregator owns the key now.
fn kv_op(line: &pinwatch::correlate::stream::RuleLine) -> KvOp {
    use pinwatch::correlate::stream::{Status, Withdrawal};
    match (line.status, line.withdrawn_reason) {
        (Status::Withdrawn, Some(Withdrawal::Moved)) => KvOp::Keep,
        (Status::Withdrawn, _) => KvOp::Delete,
        _ => KvOp::Put,
    }
}

impl WebhookArgs {
    /// `--webhook` and its flags, secrets included; a bad file is a usage error naming it.
    fn config(&self) -> Result<Option<WebhookConfig>, Failure> {
        let Some(url) = self.webhook.as_deref() else {
            return Ok(None);
        };
        let usage = |e: WebhookError| Failure(e.to_string(), exit::USAGE);
        let mut config = WebhookConfig::new(url);
        config.queue_capacity = self.webhook_queue as usize;
        config.roots = self
            .webhook_ca
            .as_deref()
            .map(read_ca_file)
            .transpose()
            .map_err(usage)?;
        config.authorization = read_secret(
            "--webhook-auth-file",
            self.webhook_auth_file.as_deref(),
            "PINWATCH_WEBHOOK_AUTH",
        )
        .map_err(usage)?;
        config.hmac_secret = read_secret(
            "--webhook-secret-file",
            self.webhook_secret_file.as_deref(),
            "PINWATCH_WEBHOOK_SECRET",
        )
        .map_err(usage)?;
        Ok(Some(config))
    }
}

/// `--sensor`, or the host name.
fn sensor_name(out: &OutputArgs) -> String {
    out.sensor.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "pinwatch".to_string())
    })
}

/// An output that failed: the run's failure, except a reader that went away (`| head`),
/// which is how a pipeline says it has seen enough: exit 0, nothing printed.
fn output_failure(e: FileSinkError) -> Result<ExitCode, Failure> {
    if e.is_reader_gone() {
        return Ok(ExitCode::SUCCESS);
    }
    Err(Failure(e.to_string(), exit::OUTPUT))
}

/// `--summary-json`: the run as one JSON object (schema/summary.schema.json).
fn write_summary_json(
    path: &str,
    s: &Summary,
    report: &Report,
    min_confidence: f64,
    exit_code: u8,
) -> Result<(), Failure> {
    let outcomes: serde_json::Map<String, serde_json::Value> = s
        .outcomes
        .iter()
        .map(|(o, n)| (o.as_str().to_string(), (*n).into()))
        .collect();
    let doc = serde_json::json!({
        "schema": "pinwatch.summary/1",
        "version": env!("CARGO_PKG_VERSION"),
        "exit_code": exit_code,
        "files": s.files,
        "packets": s.packets,
        "bytes": s.bytes,
        "connections": s.connections,
        "outcomes": outcomes,
        "packets_not_analysed": s.skipped,
        "anomalies": s.anomalies,
        "evicted": s.evicted,
        "queue_drops": s.queue_drops,
        "threads": s.threads,
        "elapsed_s": s.elapsed.as_secs_f64(),
        "candidates": report.candidates.iter().filter(|r| r.evidence.failures > 0).count(),
        "rules": report.rules(min_confidence).count(),
        "min_confidence": min_confidence,
        "proxy_cas_learned": report.proxy_cas.len(),
        "clients_missing_proxy_ca": report.missing_proxy_ca.len(),
        "errors": s.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    });
    let mut text = serde_json::to_vec_pretty(&doc).expect("a JSON value serialises");
    text.push(b'\n');
    pinwatch::sinks::replace::replace_file(std::path::Path::new(path), &text).map_err(|e| {
        Failure(
            format!("--summary-json {path}: cannot write: {e}"),
            exit::OUTPUT,
        )
    })
}

/// `--state`: the saved lifecycle, or a fresh one on a first run.
fn load_state(out: &OutputArgs) -> Result<InForce, Failure> {
    match &out.state {
        None => Ok(InForce::default()),
        Some(dir) => pinwatch::state::load(dir)
            .map(Option::unwrap_or_default)
            .map_err(|e| Failure(e, exit::INPUT)),
    }
}

/// `--state`: saves the lifecycle (atomically).
fn save_state(out: &OutputArgs, stream: &RuleStream) -> Result<(), Failure> {
    let Some(dir) = &out.state else {
        return Ok(());
    };
    pinwatch::state::save(dir, stream.in_force()).map_err(|e| {
        Failure(
            format!("--state {}: cannot write: {e}", dir.display()),
            exit::OUTPUT,
        )
    })
}

/// Replay's rule and finding lines, at the end of the run.
fn write_rules(pass: &Pass, sinks: &mut Sinks) -> Result<(), FileSinkError> {
    if let Some(out) = sinks.rules.as_mut() {
        for line in &pass.rules {
            out.write(&line.to_json())?;
        }
    }
    if let Some((path, truncate)) = &sinks.rules_file {
        let lines: Vec<(String, Vec<u8>)> = pass
            .rules
            .iter()
            .map(|l| Ok((l.id.clone(), serde_json::to_vec(&l.to_json())?)))
            .collect::<Result<_, serde_json::Error>>()?;
        let written = if *truncate {
            let mut all = Vec::new();
            for (_, line) in &lines {
                all.extend_from_slice(line);
                all.push(b'\n');
            }
            pinwatch::sinks::replace::replace_file(path, &all)
        } else {
            pinwatch::sinks::replace::merge_by_id(path, &lines).map(|_| ())
        };
        written.map_err(|source| FileSinkError::Write {
            target: path.display().to_string(),
            source,
        })?;
    }
    sinks.write_findings(&pass.findings)
}

#[cfg(not(feature = "live"))]
fn run_live(_: LiveArgs) -> ExitCode {
    Failure(
        "this build has no live capture: install libpcap-dev and build with `--features live`"
            .into(),
        exit::USAGE,
    )
    .report()
}

#[cfg(feature = "live")]
fn run_live(args: LiveArgs) -> ExitCode {
    match live::run(&args) {
        Ok(code) => code,
        Err(f) => f.report(),
    }
}

#[cfg(feature = "live")]
mod live {
    //! `pinwatch live`: capture, drop privileges, start the sinks, stream until a signal.

    use super::*;
    use pinwatch::capture::live::{LiveCapture, LiveError, LiveOptions};
    use pinwatch::correlate::Limits;
    use pinwatch::pipeline::LiveSource;
    use pinwatch::sinks::metrics::MetricsServer;
    use pinwatch::stats::{Snapshot, stats_line};
    use std::time::{Duration, Instant};

    /// The live output stage: records, streamed rules, webhook, stats lines.
    struct LiveOutput<'a> {
        sinks: &'a mut Sinks,
        signals: &'a Signals,
        stream: RuleStream,
        webhook: Option<WebhookSink>,
        stats: Arc<Stats>,
        stats_every: Option<Duration>,
        last_stats: (Instant, Snapshot),
        quiet: bool,
        /// Capture time the pipeline has got to.
        now_ns: i64,
        /// `--report`: its path, the page's data, how often and when it was last written.
        report: Option<(String, pinwatch::report::Builder, Duration, Instant)>,
        min_confidence: f64,
        /// `--state`: the directory and when it was last saved.
        state: Option<(std::path::PathBuf, Instant)>,
        record_paths: RecordPaths,
    }

    /// Wall time between two saves of `--state` in live mode.
    const STATE_EVERY: Duration = Duration::from_secs(60);

    impl LiveOutput<'_> {
        fn emit(&mut self, pass: Pass) -> Result<(), FileSinkError> {
            for line in pass.rules {
                let json = line.to_json();
                if let Some(out) = self.sinks.rules.as_mut() {
                    fatal_only(out.write(&json))?;
                }
                if let Some(hook) = &self.webhook {
                    hook.send(&json);
                }
                self.stats.add_rules_emitted(1);
            }
            fatal_only(self.sinks.write_findings(&pass.findings))
        }

        /// `--state` every [`STATE_EVERY`]; a failed save is a warning, the next one retries.
        fn maybe_save_state(&mut self) {
            let Some((dir, last)) = self.state.as_mut() else {
                return;
            };
            if last.elapsed() < STATE_EVERY {
                return;
            }
            *last = Instant::now();
            if let Err(e) = pinwatch::state::save(dir, self.stream.in_force()) {
                eprintln!("pinwatch: warning: --state {}: {e}", dir.display());
            }
        }

        fn maybe_stats_line(&mut self) {
            let asked = self.signals.stats_now.swap(false, Ordering::Relaxed);
            let due = self
                .stats_every
                .is_some_and(|every| self.last_stats.0.elapsed() >= every);
            // A SIGUSR1 always gets its line; the periodic one is muted by --quiet.
            if !(asked || (due && !self.quiet)) {
                return;
            }
            let now = self.stats.snapshot();
            let line = stats_line(&self.last_stats.1, &now, self.last_stats.0.elapsed());
            eprintln!("pinwatch: {line}");
            self.last_stats = (Instant::now(), now);
        }

        /// Rewrites the report when it is due (or `now`); a failed write is a warning, and
        /// the next interval tries again.
        fn maybe_report(&mut self, upto: Option<Order>, now: bool) {
            let Some((path, builder, every, last)) = self.report.as_mut() else {
                return;
            };
            if !now && last.elapsed() < *every {
                return;
            }
            *last = Instant::now();
            let report = self.stream.correlator().conclude_upto(upto);
            let packets = self.stats.snapshot().packets;
            if let Err(e) = builder.write(path, &report, self.min_confidence, packets) {
                eprintln!("pinwatch: warning: {e}");
            }
        }
    }

    impl Output for LiveOutput<'_> {
        type Error = FileSinkError;
        fn record_paths(&mut self) -> Option<&mut RecordPaths> {
            Some(&mut self.record_paths)
        }
        fn wants_lines(&self) -> bool {
            self.sinks.connections.is_some() && self.report.is_none()
        }
        fn wants_records(&self) -> bool {
            self.sinks.connections.is_some() || self.report.is_some()
        }
        fn record(&mut self, rec: &ConnectionRecord, _: &Verdict) -> Result<(), FileSinkError> {
            if let Some((_, builder, ..)) = self.report.as_mut() {
                builder.record(rec);
            }
            match self.sinks.connections.as_mut() {
                Some(s) => s.write(rec),
                None => Ok(()),
            }
        }
        fn line(&mut self, json: &[u8]) -> Result<(), FileSinkError> {
            match self.sinks.connections.as_mut() {
                Some(s) => s.write_line(json),
                None => Ok(()),
            }
        }
        fn progress(&mut self, upto: Order, ts_ns: i64) -> Result<(), FileSinkError> {
            if self.signals.reopen.swap(false, Ordering::Relaxed) {
                self.sinks.reopen();
            }
            self.now_ns = self.now_ns.max(ts_ns);
            let changes = self.stream.tick(upto, ts_ns);
            self.emit(changes)?;
            self.maybe_save_state();
            self.maybe_stats_line();
            self.maybe_report(Some(upto), false);
            Ok(())
        }
    }

    fn capture_failure(e: LiveError) -> Failure {
        let code = match e {
            LiveError::BadFilter { .. } | LiveError::BadOption(_) => exit::USAGE,
            _ => exit::INPUT,
        };
        Failure(e.to_string(), code)
    }

    pub(super) fn run(args: &LiveArgs) -> Result<ExitCode, Failure> {
        let settings = settings(&args.out)?;
        let mut options = LiveOptions::new(args.interface.clone());
        options.bpf = args.bpf.clone();
        options.snaplen = args.snaplen;
        options.buffer_mb = args.buffer_mb;
        options.promisc = args.promisc;
        // Secrets and the CA are read now, as the user who started pinwatch (they are often
        // readable by root only); the sink's thread starts after the privilege drop.
        let webhook_config = args.webhook.config()?;
        // The NATS credentials too: read now, the publishing thread starts after the drop.
        let publisher = args
            .publish
            .publish
            .as_deref()
            .map(|url| {
                Publisher::prepare(PublishConfig {
                    server: args.publish.nats.server(url),
                    sensor: sensor_name(&args.out),
                    spool: args.publish.publish_spool as usize,
                    when_full: WhenFull::Drop,
                    disk: args.publish.disk(),
                })
            })
            .transpose()
            .map_err(fleet_failure)?;
        let capture = LiveCapture::open(&options).map_err(capture_failure)?;
        // Everything after this runs without privileges: only the capture handle was opened
        // as root, so output files belong to the user and can be reopened after rotation. No
        // thread may exist yet, since capabilities are per thread.
        if let Some(user) = &args.user {
            pinwatch::privs::drop_privileges(user)
                .map_err(|e| Failure(format!("--user {user}: {e}"), exit::PRIVILEGES))?;
        } else if !nix::unistd::geteuid().is_root() {
            // A setcap'd binary: the open capture is all it needed its capabilities for.
            pinwatch::privs::drop_capabilities()
                .map_err(|e| Failure(format!("dropping capabilities: {e}"), exit::PRIVILEGES))?;
        }
        let mut sinks = Sinks::open(&args.out, &[], Flush::EveryLine, false)?;
        let saved = load_state(&args.out)?;
        let signals = Signals::install();
        let threads = args.track.threads();
        let stats = Arc::new(Stats::new(threads));
        let webhook = match webhook_config {
            Some(mut config) => {
                config.counters = Arc::clone(&stats.webhook);
                Some(WebhookSink::start(config).map_err(|e| Failure(e.to_string(), exit::USAGE))?)
            }
            None => None,
        };
        let metrics = match &args.metrics {
            Some(addr) => Some(
                MetricsServer::start(addr, Arc::clone(&stats))
                    .map_err(|e| Failure(format!("--metrics: {e}"), exit::USAGE))?,
            ),
            None => None,
        };
        let publisher = publisher
            .map(|p| p.start(Arc::clone(&signals.stop)))
            .transpose()
            .map_err(fleet_failure)?;
        let evidence = Arc::new(match &publisher {
            Some(p) => EvidenceTable::with_tap(Limits::default(), p.tap()),
            None => EvidenceTable::new(Limits::default()),
        });
        let record_paths = RecordPaths::new(&settings.correlate);
        let correlator = Correlator::with_table(settings.correlate, Arc::clone(&evidence));
        if !args.out.quiet {
            eprintln!(
                "pinwatch: capturing on {} ({}){}",
                args.interface,
                counted(threads as u64, "worker thread", "worker threads"),
                args.metrics
                    .as_deref()
                    .map(|a| format!(", metrics at http://{a}/metrics"))
                    .unwrap_or_default()
            );
        }
        let mut output = LiveOutput {
            sinks: &mut sinks,
            signals: &signals,
            stream: RuleStream::resume(correlator, settings.min_confidence, saved),
            webhook,
            stats: Arc::clone(&stats),
            stats_every: (args.stats_interval > 0)
                .then(|| Duration::from_secs(args.stats_interval)),
            last_stats: (Instant::now(), stats.snapshot()),
            quiet: args.out.quiet,
            now_ns: i64::MIN,
            report: args.report.as_ref().map(|p| {
                let builder = pinwatch::report::Builder::new(vec![format!(
                    "live capture on {}",
                    args.interface
                )]);
                (
                    p.clone(),
                    builder,
                    Duration::from_secs(args.report_interval),
                    Instant::now(),
                )
            }),
            min_confidence: settings.min_confidence,
            state: args.out.state.clone().map(|d| (d, Instant::now())),
            record_paths,
        };
        let config = pipeline::Config {
            flow: args.track.flow(),
            threads,
            drop_when_full: true,
            measure_latency: true,
            ..pipeline::Config::default()
        };
        let mut source = LiveSource::new(capture, Arc::clone(&stats));
        source.origin = Some(Arc::new(Origin::new(
            Some(&sensor_name(&args.out)),
            Some(&args.interface),
            &[],
        )));
        let result = pipeline::run(
            &mut source,
            config,
            &evidence,
            &stats,
            &signals.stop,
            &mut output,
        );
        release_freed_memory();
        output.maybe_report(None, true);
        let (report, last) = output.stream.finish(output.now_ns);
        let emitted = output.emit(last);
        let webhook_counts = output
            .webhook
            .take()
            .map(|w| w.shutdown(Duration::from_secs(5)));
        if let Some(p) = publisher {
            let s = p.finish(Duration::from_secs(args.publish.publish_wait));
            eprintln!(
                "pinwatch: published {} to {} ({} already there), {} dropped, {} unsent{}",
                counted(s.published, "observation", "observations"),
                args.publish.publish.as_deref().unwrap_or_default(),
                s.duplicates,
                s.dropped,
                s.unsent,
                on_disk(&s, &args.publish)
            );
        }
        let saved = save_state(&args.out, &output.stream);
        let flushed = sinks.flush().and(emitted);
        if let Some(m) = metrics {
            m.stop();
        }
        let summary = match (result, flushed) {
            (Ok(s), Ok(())) => s,
            (Err(e), _) | (Ok(_), Err(e)) => return output_failure(e),
        };
        saved?;
        let capture_stats = source.capture_stats();
        if !args.out.quiet {
            print_summary(&summary);
            let snap = stats.snapshot();
            let mut line = format!(
                "  drops: kernel={} interface={} queue={}",
                capture_stats.map_or(snap.capture_drops_kernel, |c| c.dropped_kernel),
                capture_stats.map_or(snap.capture_drops_interface, |c| c.dropped_iface),
                summary.queue_drops
            );
            if let Some(w) = webhook_counts {
                line.push_str(&format!(
                    "; webhook: delivered={} retried={} dropped={} rejected={} lost_at_exit={}",
                    w.delivered, w.retried, w.dropped, w.rejected, w.pending_lost
                ));
            }
            eprintln!("{line}");
            print_table(&report, settings.min_confidence);
        }
        if let Some(e) = source.error.take() {
            return Err(Failure(e.to_string(), exit::INPUT));
        }
        if let Some(path) = &args.out.summary_json {
            write_summary_json(path, &summary, &report, settings.min_confidence, 0)?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn print_summary(s: &Summary) {
    let mut out = String::new();
    let input = if s.files > 0 {
        counted(s.files as u64, "file", "files")
    } else {
        "capture".to_string()
    };
    out.push_str(&format!(
        "pinwatch: {input}, {}, {:.1} MB, {} in {:.2}s with {} ({:.0} packets/s, {:.2} Gbit/s)\n",
        counted(s.packets, "packet", "packets"),
        s.bytes as f64 / 1e6,
        counted(s.connections, "TCP connection", "TCP connections"),
        s.elapsed.as_secs_f64(),
        counted(s.threads as u64, "worker thread", "worker threads"),
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

/// The human-readable close of a run: candidates, learned proxy CAs, clients missing the CA.
fn print_table(report: &Report, min_confidence: f64) {
    let mut out = String::new();
    if !report.proxy_cas.is_empty() {
        out.push_str("\ninterception CAs:\n");
        for ca in &report.proxy_cas {
            out.push_str(&format!(
                "  {}  ({}) - {}\n",
                ca.issuer,
                counted(ca.leaf_count as u64, "leaf", "leaves"),
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
        // A summary line, not an inventory: a busy proxy farm has dozens of egress addresses.
        const SHOWN_HOSTS: usize = 8;
        let hosts = &report.upstream_hosts;
        let mut listed = hosts[..hosts.len().min(SHOWN_HOSTS)].join(", ");
        if hosts.len() > SHOWN_HOSTS {
            listed.push_str(&format!(" and {} more", hosts.len() - SHOWN_HOSTS));
        }
        out.push_str(&format!(
            "\nproxy upstream connections recognised: {} from {listed} (not counted as clients)\n",
            report.upstream_legs,
        ));
    }
    if report.ordinary_cert_failures > 0 {
        out.push_str(&format!(
            "\nfailures behind certificates not minted by the proxy (ordinary certificate errors, not pinning): {}\n",
            report.ordinary_cert_failures
        ));
    }
    // The strongest first (the report's order); the rest are in the rules output.
    const SHOWN_CANDIDATES: usize = 30;
    let with_failures = report
        .candidates
        .iter()
        .filter(|r| r.evidence.failures > 0)
        .count();
    let shown: Vec<_> = report
        .candidates
        .iter()
        .filter(|r| r.evidence.failures > 0)
        .take(SHOWN_CANDIDATES)
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
            let (name, mut scope) =
                match (&r.matcher.host, &r.matcher.suffix, &r.matcher.client_ja4) {
                    (Some(h), _, Some(j)) => (h.clone(), format!("ja4 {}", &j[..j.len().min(10)])),
                    (Some(h), _, None) => (h.clone(), "host".to_string()),
                    (None, Some(s), _) => (format!("*.{s}"), "suffix".to_string()),
                    _ => (String::new(), String::new()),
                };
            if let Some(ips) = &r.matcher.client_ips {
                scope.push_str(&format!(" +{}ip", ips.len()));
            }
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
        if with_failures > SHOWN_CANDIDATES {
            let left_out = (with_failures - SHOWN_CANDIDATES) as u64;
            out.push_str(&format!(
                "  ... and {} not shown: the table lists the {SHOWN_CANDIDATES} strongest; every rule \
                 at or above the threshold is in the rules output (--rules)\n",
                counted(left_out, "more candidate", "more candidates")
            ));
        }
    }
    eprint!("{out}");
}
