//! pinwatch command line.

use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: records are built on worker threads and freed on
/// the collector's, and glibc's per-arena locks made those frees contend (`__lll_lock_wake`
/// in profiles); single-threaded replay also got 15% faster (scripts/bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pinwatch::classify::{Outcome, Verdict};
use pinwatch::correlate::proxy::ProxyCas;
use pinwatch::correlate::score::DEFAULT_MIN_CONFIDENCE;
use pinwatch::correlate::{Config as CorrelateConfig, Correlator, EvidenceTable, Order, Report};
use pinwatch::flow::FlowConfig;
use pinwatch::memory::{configure_allocator, release_freed_memory};
use pinwatch::output::counted;
use pinwatch::output::record::ConnectionRecord;
use pinwatch::pipeline::{self, FileSource, Output, Summary};
use pinwatch::sinks::file::{FileSinkError, Flush, LineSink, Target};
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

#[derive(Parser)]
#[command(
    name = "pinwatch",
    version,
    about = "Find apps whose certificate pinning breaks behind a TLS-inspecting proxy",
    long_about = "pinwatch watches TLS handshakes passively (pcap/pcapng files or a span port), \
works out which certificate the proxy presented and how the client reacted, and reports one \
outcome per connection: established, client_alert, client_closed_after_handshake, \
client_closed_in_handshake, client_closed_before_server_hello, server_abort, incomplete, \
not_tls or midstream. From the failures that follow the proxy's certificates it suggests \
bypass rules with a confidence score."
)]
struct Cli {
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
    /// Turn candidate rules (NDJSON from `replay --rules`) into Squid, mitmproxy or domain-list configuration.
    Export(pinwatch::export::ExportArgs),
}

#[derive(Args)]
struct ReplayArgs {
    /// Capture files, read in the order given. `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    track: TrackArgs,
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
    /// POST every rule suggestion as JSON to this URL (http://), with retries and a bounded queue.
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// Suggestions held for the webhook while it is down; beyond that they are dropped (counted).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    webhook_queue: u32,
    /// Print a stats line on standard error every SECS seconds (0: only on SIGUSR1).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    stats_interval: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9187.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    track: TrackArgs,
}

/// Where results go and how rules are made.
#[derive(Args)]
struct OutputArgs {
    /// Write one JSON object per connection (NDJSON) to PATH, or `-` for standard output. A file
    /// (for every output option) is appended to, so a restarted sensor carries on with it;
    /// remove it first to start afresh.
    #[arg(long, value_name = "PATH|-")]
    connections: Option<String>,

    /// Write candidate bypass rules (NDJSON, schema pinwatch.rule/1) to PATH or `-`. Default:
    /// standard output, unless --connections already writes there. In live mode a rule is
    /// written when it first reaches the threshold and again (same id) when it changes.
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

    /// Write findings that are not rules (learned proxy CAs, clients missing the proxy CA) as NDJSON.
    #[arg(long, value_name = "PATH|-")]
    findings: Option<String>,

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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return command_line_error(e),
    };
    match cli.command {
        Command::Replay(args) => run_replay(args),
        Command::Live(args) => run_live(args),
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
        .filter(|a| a == "replay" || a == "live" || a == "export")
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
        },
    })
}

/// The NDJSON outputs: records, rules, findings.
struct Sinks {
    connections: Option<LineSink>,
    rules: Option<LineSink>,
    findings: Option<LineSink>,
}

impl Sinks {
    /// Opens the outputs; `inputs` are the capture files, which no output may name.
    fn open(out: &OutputArgs, inputs: &[String], flush: Flush) -> Result<Sinks, Failure> {
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
                .map(|p| LineSink::open(Target::parse(p), flush))
                .transpose()
                .map_err(|e| Failure(e.to_string(), exit::OUTPUT))
        };
        Ok(Sinks {
            connections: open(&out.connections)?,
            rules: open(&rules_path)?,
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

    fn write_findings(&mut self, report: &Report) -> Result<(), FileSinkError> {
        let Some(out) = self.findings.as_mut() else {
            return Ok(());
        };
        for ca in &report.proxy_cas {
            out.write(
                &serde_json::json!({"schema": "pinwatch.finding/1", "kind": "proxy_ca", "ca": ca}),
            )?;
        }
        for m in &report.missing_proxy_ca {
            out.write(&serde_json::json!({"schema": "pinwatch.finding/1", "kind": "missing_proxy_ca", "client": m}))?;
        }
        Ok(())
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
}

impl Output for ReplayOutput<'_> {
    type Error = FileSinkError;
    fn wants_lines(&self) -> bool {
        self.sinks.connections.is_some()
    }
    fn record(&mut self, rec: &ConnectionRecord, _: &Verdict) -> Result<(), FileSinkError> {
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
    fn progress(&mut self, _: Order, _: i64) -> Result<(), FileSinkError> {
        if self.signals.reopen.swap(false, Ordering::Relaxed) {
            self.sinks.reopen();
        }
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
    let mut sinks = Sinks::open(&args.out, &args.files, Flush::Manual)?;
    let signals = Signals::install();
    let threads = args.track.threads();
    let evidence = Arc::new(EvidenceTable::default());
    let correlator = Correlator::with_table(settings.correlate, Arc::clone(&evidence));
    let stats = Arc::new(Stats::new(threads));
    let config = pipeline::Config {
        flow: args.track.flow(),
        threads,
        ..pipeline::Config::default()
    };
    let mut source = FileSource::new(&args.files, !args.out.quiet);
    let result = pipeline::run(
        &mut source,
        config,
        &evidence,
        &stats,
        &signals.stop,
        &mut ReplayOutput {
            sinks: &mut sinks,
            signals: &signals,
        },
    );
    release_freed_memory();
    let report = correlator.conclude_final();
    let written = write_rules(&report, settings.min_confidence, &mut sinks);
    let flushed = sinks.flush().and(written);
    let summary = match (result, flushed) {
        (Ok(s), Ok(())) => s,
        (Err(e), _) | (Ok(_), Err(e)) => return Err(Failure(e.to_string(), exit::OUTPUT)),
    };
    // When no input could be read at all, the error lines are the whole story.
    if !args.out.quiet && summary.files > 0 {
        print_summary(&summary);
        print_table(&report, settings.min_confidence);
    }
    for e in &summary.errors {
        eprintln!("pinwatch: {e}");
    }
    Ok(match summary.errors.first() {
        None => ExitCode::SUCCESS,
        Some(e) if e.is_mid_file() => ExitCode::from(exit::DAMAGED),
        Some(_) => ExitCode::from(exit::INPUT),
    })
}

fn write_rules(
    report: &Report,
    min_confidence: f64,
    sinks: &mut Sinks,
) -> Result<(), FileSinkError> {
    if let Some(out) = sinks.rules.as_mut() {
        for rule in report.rules(min_confidence) {
            out.write(rule)?;
        }
    }
    sinks.write_findings(report)
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
    use pinwatch::correlate::stream::RuleStream;
    use pinwatch::correlate::{Limits, Rule};
    use pinwatch::pipeline::LiveSource;
    use pinwatch::sinks::metrics::MetricsServer;
    use pinwatch::sinks::webhook::{WebhookConfig, WebhookSink};
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
    }

    impl LiveOutput<'_> {
        fn emit(
            &mut self,
            rules: Vec<(pinwatch::correlate::stream::Emission, Rule)>,
        ) -> Result<(), FileSinkError> {
            for (_, rule) in rules {
                if let Some(out) = self.sinks.rules.as_mut() {
                    fatal_only(out.write(&rule))?;
                }
                if let Some(hook) = &self.webhook {
                    hook.send(&rule);
                }
                self.stats.add_rules_emitted(1);
            }
            Ok(())
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
    }

    impl Output for LiveOutput<'_> {
        type Error = FileSinkError;
        fn wants_lines(&self) -> bool {
            self.sinks.connections.is_some()
        }
        fn record(&mut self, rec: &ConnectionRecord, _: &Verdict) -> Result<(), FileSinkError> {
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
            self.maybe_stats_line();
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
        let mut sinks = Sinks::open(&args.out, &[], Flush::EveryLine)?;
        let signals = Signals::install();
        let threads = args.track.threads();
        let stats = Arc::new(Stats::new(threads));
        let webhook = match &args.webhook {
            Some(url) => {
                let mut config = WebhookConfig::new(url);
                config.queue_capacity = args.webhook_queue as usize;
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
        let evidence = Arc::new(EvidenceTable::new(Limits::default()));
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
            stream: RuleStream::new(correlator, settings.min_confidence),
            webhook,
            stats: Arc::clone(&stats),
            stats_every: (args.stats_interval > 0)
                .then(|| Duration::from_secs(args.stats_interval)),
            last_stats: (Instant::now(), stats.snapshot()),
            quiet: args.out.quiet,
            now_ns: i64::MIN,
        };
        let config = pipeline::Config {
            flow: args.track.flow(),
            threads,
            drop_when_full: true,
            measure_latency: true,
            ..pipeline::Config::default()
        };
        let mut source = LiveSource::new(capture, Arc::clone(&stats));
        let result = pipeline::run(
            &mut source,
            config,
            &evidence,
            &stats,
            &signals.stop,
            &mut output,
        );
        release_freed_memory();
        let (report, last) = output.stream.finish(output.now_ns);
        let emitted = output.emit(last);
        let webhook_counts = output
            .webhook
            .take()
            .map(|w| w.shutdown(Duration::from_secs(5)));
        let findings = sinks.write_findings(&report);
        let flushed = sinks.flush().and(emitted).and(findings);
        if let Some(m) = metrics {
            m.stop();
        }
        let summary = match (result, flushed) {
            (Ok(s), Ok(())) => s,
            (Err(e), _) | (Ok(_), Err(e)) => return Err(Failure(e.to_string(), exit::OUTPUT)),
        };
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
