//! Prometheus endpoint: the [`Stats`] counters and the standard `process_*` metrics in the text
//! exposition format 0.0.4, served by one thread (`--metrics 127.0.0.1:9187`).
//!
//! The exposition is the `prometheus` crate's: a [`Registry`] with a collector that turns one
//! [`Stats::snapshot`] into metric families, and the crate's `ProcessCollector` (Linux /proc).
//! The HTTP side is hyper's HTTP/1 server on a single-threaded tokio runtime that only this
//! thread runs.
//!
//! `GET /metrics` (or `HEAD`) answers 200 with `Content-Type: text/plain; version=0.0.4`;
//! other paths 404, other methods 405, malformed requests 400, a request head over
//! [`MAX_REQUEST_HEAD`] bytes 431 (all answers close the connection). Connections are served
//! concurrently, each for at most [`REQUEST_DEADLINE`] in all, at most [`MAX_CONNECTIONS`] at
//! once (more are closed on arrival), so a slow or hostile client neither delays other scrapes
//! nor holds more than a few KiB per connection. When hyper refuses a request whose head it has
//! not read to the end, the kernel may reset the connection after the error answer; a client
//! that sends such a request may then see the reset instead of the status. The pipeline is
//! never blocked: a scrape reads atomics and takes the workers' latency histogram lock only to
//! clone it.
//!
//! `pinwatch_packet_latency_seconds` is a histogram with the bounds of
//! [`LATENCY_BUCKETS_NS`]: 250 ns, 500 ns, 1, 2.5, 5, 10, 25, 50, 100, 250, 500 µs, 1, 2.5, 5,
//! 10 ms and `+Inf`. Most packets take under a microsecond, a parsed handshake tens of
//! microseconds; the 1-2.5-5 steps keep `histogram_quantile` within a factor of about two
//! anywhere in that range with 16 series. Bucket counts are exact (counted per packet beside
//! the HDR histogram that the stats line's quantiles come from).
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `pinwatch_packets_total` | counter | | packets processed by the workers |
//! | `pinwatch_bytes_total` | counter | | captured bytes of those packets |
//! | `pinwatch_flows` | gauge | | TCP connections currently in the flow tables |
//! | `pinwatch_connections_total` | counter | `outcome` | classified connections; all 9 outcomes (`established`, `client_alert`, `client_closed_after_handshake`, `client_closed_in_handshake`, `client_closed_before_server_hello`, `server_abort`, `incomplete`, `not_tls`, `midstream`) are always present |
//! | `pinwatch_capture_drops_total` | counter | `source` = `kernel`, `interface` | libpcap's `ps_drop` (kernel buffer full) and `ps_ifdrop` (interface or driver) |
//! | `pinwatch_queue_drops_total` | counter | | packets dropped because a worker queue was full |
//! | `pinwatch_queue_depth` | gauge | `queue` = `0`, `1`, ... | items waiting in each worker queue |
//! | `pinwatch_evictions_total` | counter | | flows evicted from the tables (idle timeout or memory cap) |
//! | `pinwatch_rules_emitted_total` | counter | | candidate bypass rules emitted |
//! | `pinwatch_webhook_delivered_total` | counter | | rule suggestions the webhook answered 2xx |
//! | `pinwatch_webhook_retries_total` | counter | | webhook attempts that failed transiently and were retried |
//! | `pinwatch_webhook_dropped_total` | counter | | suggestions dropped because the webhook queue was full |
//! | `pinwatch_webhook_rejected_total` | counter | | suggestions the webhook refused (4xx) and were not retried |
//! | `pinwatch_webhook_queued` | gauge | | suggestions waiting for (or in) delivery |
//! | `pinwatch_packet_latency_seconds` | histogram | `le` (buckets above) | per-packet processing time since start, with `_sum` and `_count` |
//! | `pinwatch_uptime_seconds` | gauge | | seconds since the counters were created |
//! | `pinwatch_build_info` | gauge | `version` | always 1 |
//! | `process_cpu_seconds_total` | counter | | user and system CPU time of the process |
//! | `process_resident_memory_bytes` | gauge | | resident set size |
//! | `process_virtual_memory_bytes` | gauge | | virtual memory size |
//! | `process_open_fds` | gauge | | open file descriptors |
//! | `process_max_fds` | gauge | | the descriptor limit (`RLIMIT_NOFILE`, soft) |
//! | `process_start_time_seconds` | gauge | | start of the process, seconds since the Unix epoch; absent where /proc/stat is hidden (the systemd unit's `ProcSubset=pid`) |
//! | `process_threads` | gauge | | threads of the process |
//!
//! Families are written sorted by name, and series within a family by label value.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::classify::Outcome;
use crate::stats::{LATENCY_BUCKETS_NS, Snapshot, Stats};

/// Longest request head read (hyper's smallest read buffer); longer heads get 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Total time one connection may take, reading and writing.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; a scraper needs one.
pub const MAX_CONNECTIONS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics address {addr:?}: {source}")]
    Address { addr: String, source: io::Error },
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("cannot start the metrics thread: {0}")]
    Spawn(io::Error),
}

/// The running endpoint; stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (`host:port`; port 0 picks a free one) and serves `stats` from a thread.
    pub fn start(addr: &str, stats: Arc<Stats>) -> Result<MetricsServer, MetricsError> {
        let bind_error = |source| MetricsError::Bind {
            addr: addr.to_string(),
            source,
        };
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| MetricsError::Address {
                addr: addr.to_string(),
                source,
            })?
            .collect();
        // Bound here rather than by the server so a taken port is this one-line error.
        let listener = TcpListener::bind(&addrs[..]).map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(MetricsError::Spawn)?;
        let registry = registry(stats);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("pinwatch-metrics".into())
            .spawn(move || runtime.block_on(serve(listener, registry, stopping)))
            .map_err(MetricsError::Spawn)?;
        Ok(MetricsServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (connections in progress are closed) and waits for the thread.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Relaxed);
        // Wake the waiting accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_secs(1));
        let _ = thread.join();
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shut();
    }
}

/// A wildcard bind is reached through loopback.
fn wake_addr(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// Counts a connection as open for as long as it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(listener: TcpListener, registry: Registry, stop: Arc<AtomicBool>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept().await;
        if stop.load(Ordering::Relaxed) {
            // Returning drops the runtime and with it every connection still open.
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // E.g. EMFILE: back off briefly instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let guard = Open(Arc::clone(&open));
        let registry = registry.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let service = hyper::service::service_fn(move |request| {
                let response = answer(&registry, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_REQUEST_HEAD)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A failed or timed-out exchange concerns only that client.
            let _ = tokio::time::timeout(REQUEST_DEADLINE, connection).await;
        });
    }
}

fn answer<B>(registry: &Registry, request: &Request<B>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, "text/plain".parse().expect("constant header"));
        response
    };
    if request.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found; try /metrics\n");
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        let allow = "GET, HEAD".parse().expect("constant header");
        response.headers_mut().insert(ALLOW, allow);
        return response;
    }
    // hyper leaves the body out of a HEAD answer itself.
    let Ok(body) = render(registry) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n");
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let content_type = TextEncoder::new().format_type().parse();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, content_type.expect("constant header"));
    response
}

/// What a scrape gathers: `stats` and the process metrics (on Linux).
pub fn registry(stats: Arc<Stats>) -> Registry {
    let registry = Registry::new();
    registry
        .register(Box::new(StatsCollector::new(stats)))
        .expect("the pinwatch families are valid and registered once");
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(ProcessMetrics(
            prometheus::process_collector::ProcessCollector::for_self(),
        )))
        .expect("no pinwatch family is named process_*");
    registry
}

/// The crate's process metrics, less a start time it could not read: that needs the boot time
/// from /proc/stat, which systemd's `ProcSubset=pid` (contrib/pinwatch.service) hides, and the
/// 0 it then reports would read as a start in 1970.
#[cfg(target_os = "linux")]
struct ProcessMetrics(prometheus::process_collector::ProcessCollector);

#[cfg(target_os = "linux")]
impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.0.collect();
        families.retain(|f| !unknown_start_time(f));
        families
    }
}

fn unknown_start_time(family: &MetricFamily) -> bool {
    family.name() == "process_start_time_seconds"
        && (family.get_metric().iter()).all(|m| m.get_gauge().get_value() == 0.0)
}

/// The exposition text of one scrape of `registry` (format 0.0.4). Public so the same text
/// can be written elsewhere (e.g. a textfile collector).
pub fn render(registry: &Registry) -> prometheus::Result<String> {
    TextEncoder::new().encode_to_string(&registry.gather())
}

/// Name, type, label names and help of every family [`StatsCollector`] writes.
type Family = (
    &'static str,
    MetricType,
    &'static [&'static str],
    &'static str,
);
const FAMILIES: [Family; 17] = [
    (
        "pinwatch_packets_total",
        MetricType::COUNTER,
        &[],
        "Packets processed by the workers.",
    ),
    (
        "pinwatch_bytes_total",
        MetricType::COUNTER,
        &[],
        "Captured bytes of the packets processed.",
    ),
    (
        "pinwatch_flows",
        MetricType::GAUGE,
        &[],
        "TCP connections currently in the flow tables.",
    ),
    (
        "pinwatch_connections_total",
        MetricType::COUNTER,
        &["outcome"],
        "Classified connections by outcome.",
    ),
    (
        "pinwatch_capture_drops_total",
        MetricType::COUNTER,
        &["source"],
        "Packets dropped before pinwatch saw them (libpcap ps_drop and ps_ifdrop).",
    ),
    (
        "pinwatch_queue_drops_total",
        MetricType::COUNTER,
        &[],
        "Packets dropped because a worker queue was full.",
    ),
    (
        "pinwatch_queue_depth",
        MetricType::GAUGE,
        &["queue"],
        "Items waiting in each worker queue.",
    ),
    (
        "pinwatch_evictions_total",
        MetricType::COUNTER,
        &[],
        "Flows evicted from the flow tables.",
    ),
    (
        "pinwatch_rules_emitted_total",
        MetricType::COUNTER,
        &[],
        "Candidate bypass rules emitted.",
    ),
    (
        "pinwatch_webhook_delivered_total",
        MetricType::COUNTER,
        &[],
        "Rule suggestions the webhook accepted (2xx).",
    ),
    (
        "pinwatch_webhook_retries_total",
        MetricType::COUNTER,
        &[],
        "Webhook attempts that failed transiently and were retried.",
    ),
    (
        "pinwatch_webhook_dropped_total",
        MetricType::COUNTER,
        &[],
        "Rule suggestions dropped because the webhook queue was full.",
    ),
    (
        "pinwatch_webhook_rejected_total",
        MetricType::COUNTER,
        &[],
        "Rule suggestions the webhook refused and were not retried.",
    ),
    (
        "pinwatch_webhook_queued",
        MetricType::GAUGE,
        &[],
        "Rule suggestions waiting for or in delivery.",
    ),
    (
        "pinwatch_packet_latency_seconds",
        MetricType::HISTOGRAM,
        &[],
        "Per-packet processing time since start.",
    ),
    (
        "pinwatch_uptime_seconds",
        MetricType::GAUGE,
        &[],
        "Seconds since the counters were created.",
    ),
    (
        "pinwatch_build_info",
        MetricType::GAUGE,
        &["version"],
        "Always 1; the version is in the label.",
    ),
];

/// The [`Stats`] counters as metric families, read afresh at every scrape: the counters are
/// pinwatch's own atomics (see `stats` for why), so they are exposed, not mirrored.
struct StatsCollector {
    stats: Arc<Stats>,
    descs: Vec<Desc>,
}

impl StatsCollector {
    fn new(stats: Arc<Stats>) -> StatsCollector {
        let descs = FAMILIES
            .iter()
            .map(|&(name, _, labels, help)| {
                let labels = labels.iter().map(|l| l.to_string()).collect();
                Desc::new(name.into(), help.into(), labels, Default::default())
                    .expect("constant metric names are valid")
            })
            .collect();
        StatsCollector { stats, descs }
    }
}

impl Collector for StatsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.stats.snapshot();
        FAMILIES
            .iter()
            .map(|&(name, kind, _, help)| {
                let mut family = MetricFamily::default();
                family.set_name(name.into());
                family.set_help(help.into());
                family.set_field_type(kind);
                family.set_metric(samples(&s, name));
                family
            })
            .collect()
    }
}

/// The series of family `name` in `s`.
fn samples(s: &Snapshot, name: &str) -> Vec<proto::Metric> {
    let w = &s.webhook;
    let one_counter = |v: u64| vec![counter(&[], v as f64)];
    let one_gauge = |v: f64| vec![gauge(&[], v)];
    match name {
        "pinwatch_packets_total" => one_counter(s.packets),
        "pinwatch_bytes_total" => one_counter(s.bytes),
        "pinwatch_flows" => one_gauge(s.flows as f64),
        "pinwatch_connections_total" => Outcome::ALL
            .iter()
            .map(|&o| counter(&[("outcome", o.as_str())], s.outcome(o) as f64))
            .collect(),
        "pinwatch_capture_drops_total" => vec![
            counter(&[("source", "kernel")], s.capture_drops_kernel as f64),
            counter(&[("source", "interface")], s.capture_drops_interface as f64),
        ],
        "pinwatch_queue_drops_total" => one_counter(s.queue_drops),
        "pinwatch_queue_depth" => s
            .queue_depths
            .iter()
            .enumerate()
            .map(|(i, &d)| gauge(&[("queue", &i.to_string())], d as f64))
            .collect(),
        "pinwatch_evictions_total" => one_counter(s.evictions),
        "pinwatch_rules_emitted_total" => one_counter(s.rules_emitted),
        "pinwatch_webhook_delivered_total" => one_counter(w.delivered),
        "pinwatch_webhook_retries_total" => one_counter(w.retried),
        "pinwatch_webhook_dropped_total" => one_counter(w.dropped),
        "pinwatch_webhook_rejected_total" => one_counter(w.rejected),
        "pinwatch_webhook_queued" => one_gauge(w.queued as f64),
        "pinwatch_packet_latency_seconds" => vec![latency(s)],
        "pinwatch_uptime_seconds" => one_gauge((s.uptime.as_millis() as f64) / 1e3),
        "pinwatch_build_info" => vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        _ => unreachable!("{name} is not in FAMILIES"),
    }
}

fn labelled(labels: &[(&str, &str)]) -> proto::Metric {
    let pairs = labels
        .iter()
        .map(|&(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name(name.into());
            pair.set_value(value.into());
            pair
        })
        .collect();
    proto::Metric::from_label(pairs)
}

fn counter(labels: &[(&str, &str)], value: f64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value);
    let mut m = labelled(labels);
    m.set_counter(c);
    m
}

fn gauge(labels: &[(&str, &str)], value: f64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = labelled(labels);
    m.set_gauge(g);
    m
}

/// Cumulative buckets in seconds; the encoder adds `+Inf` (the count) after the last bound.
fn latency(s: &Snapshot) -> proto::Metric {
    let mut cumulative = 0;
    let buckets = LATENCY_BUCKETS_NS
        .iter()
        .zip(s.latency_buckets)
        .map(|(&le, n)| {
            cumulative += n;
            let mut b = proto::Bucket::default();
            b.set_upper_bound(le as f64 / 1e9);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut h = proto::Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(s.latency_buckets.iter().sum());
    h.set_sample_sum(s.latency_sum_ns as f64 / 1e9);
    let mut m = labelled(&[]);
    m.set_histogram(h);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_family_once_with_all_series_of_an_idle_sensor() {
        let text = render(&registry(Arc::new(Stats::new(2)))).unwrap();
        let process = if cfg!(target_os = "linux") { 7 } else { 0 };
        assert_eq!(text.matches("# TYPE ").count(), 17 + process, "{text}");
        assert!(text.contains("# TYPE pinwatch_packet_latency_seconds histogram\n"));
        assert!(text.contains("pinwatch_packet_latency_seconds_bucket{le=\"0.00000025\"} 0\n"));
        assert!(text.contains("pinwatch_packet_latency_seconds_bucket{le=\"0.01\"} 0\n"));
        assert!(text.contains("pinwatch_packet_latency_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("pinwatch_packet_latency_seconds_count 0\n"));
        assert!(text.contains("pinwatch_queue_depth{queue=\"1\"} 0\n"));
        assert!(text.contains("pinwatch_connections_total{outcome=\"midstream\"} 0\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn a_start_time_of_zero_is_left_out() {
        let family = |value: f64| {
            let mut f = MetricFamily::default();
            f.set_name("process_start_time_seconds".into());
            f.set_field_type(MetricType::GAUGE);
            f.set_metric(vec![gauge(&[], value)]);
            f
        };
        assert!(unknown_start_time(&family(0.0)));
        assert!(!unknown_start_time(&family(1.8e9)));
    }

    #[test]
    fn latency_buckets_are_cumulative_and_end_with_the_count() {
        let stats = Arc::new(Stats::new(0));
        let mut w = stats.worker();
        for ns in [100, 2_000, 3_000, 40_000, 20_000_000] {
            w.record_packet(60, ns);
        }
        drop(w);
        let text = render(&registry(stats)).unwrap();
        for line in [
            "pinwatch_packet_latency_seconds_bucket{le=\"0.00000025\"} 1",
            "pinwatch_packet_latency_seconds_bucket{le=\"0.0000025\"} 2",
            "pinwatch_packet_latency_seconds_bucket{le=\"0.000005\"} 3",
            "pinwatch_packet_latency_seconds_bucket{le=\"0.00005\"} 4",
            "pinwatch_packet_latency_seconds_bucket{le=\"0.01\"} 4",
            "pinwatch_packet_latency_seconds_bucket{le=\"+Inf\"} 5",
            "pinwatch_packet_latency_seconds_count 5",
            "pinwatch_packet_latency_seconds_sum 0.0200451",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
