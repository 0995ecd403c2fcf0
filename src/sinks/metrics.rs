//! Prometheus endpoint: the [`Stats`] counters in the text exposition format 0.0.4, served by
//! one small thread (`--metrics 127.0.0.1:9464`).
//!
//! `GET /metrics` (or `HEAD`) answers 200 with `Content-Type: text/plain; version=0.0.4`;
//! other paths 404, other methods 405, malformed requests 400. Requests are handled one at a
//! time; each connection gets at most [`REQUEST_DEADLINE`] and [`MAX_REQUEST_HEAD`] bytes, so a
//! slow or hostile client delays other scrapes by a few seconds at most and costs no memory.
//! The pipeline is never blocked: a scrape reads atomics and clones the latency histogram
//! under the lock workers take about ten times a second.
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
//! | `pinwatch_packet_latency_seconds` | summary | `quantile` = `0.5`, `0.9`, `0.99`, `0.999` | per-packet processing time since start, with `_sum` and `_count` |
//! | `pinwatch_uptime_seconds` | gauge | | seconds since the counters were created |
//! | `pinwatch_build_info` | gauge | `version` | always 1 |

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::classify::Outcome;
use crate::stats::{Snapshot, Stats};

/// Longest request head read; longer requests get 400.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Total time one connection may take, reading and writing.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const QUANTILES: [(f64, &str); 4] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (0.999, "0.999")];

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
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| MetricsError::Address {
                addr: addr.to_string(),
                source,
            })?
            .collect();
        let listener = TcpListener::bind(&addrs[..]).map_err(|source| MetricsError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let local = listener.local_addr().map_err(|source| MetricsError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("pinwatch-metrics".into())
            .spawn(move || serve(listener, &stats, &stopping))
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

    /// Stops serving and waits for the thread (at most one request's deadline).
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept with a connection of our own.
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

fn serve(listener: TcpListener, stats: &Stats, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match conn {
            // A failed exchange concerns only that client.
            Ok(stream) => {
                let _ = handle(stream, stats);
            }
            // E.g. EMFILE: back off briefly instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// What to answer: status (with any extra header lines), content type, body.
struct Answer {
    status: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Answer {
    fn text(status: &'static str, body: &str) -> Answer {
        Answer {
            status,
            content_type: "text/plain",
            body: body.as_bytes().to_vec(),
        }
    }
}

fn handle(mut stream: TcpStream, stats: &Stats) -> io::Result<()> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let head = read_head(&mut stream, deadline)?;
    let request = head.as_deref().and_then(parse_request_line);
    let answer = match request {
        None => Answer::text("400 Bad Request", "bad request\n"),
        Some((_, path)) if path != "/metrics" => {
            Answer::text("404 Not Found", "not found; try /metrics\n")
        }
        Some(("GET" | "HEAD", _)) => Answer {
            status: "200 OK",
            content_type: CONTENT_TYPE,
            body: render(&stats.snapshot()).into_bytes(),
        },
        Some(_) => Answer::text(
            "405 Method Not Allowed\r\nAllow: GET, HEAD",
            "method not allowed\n",
        ),
    };
    let with_body = !matches!(request, Some(("HEAD", _)));
    respond(&mut stream, deadline, &answer, with_body)
}

/// After an error answer part of the request may be unread; closing then would send a reset
/// that can destroy the answer before the client reads it. So close our side, and read and
/// discard (bounded) until the client closes too.
fn linger(stream: &mut TcpStream, deadline: Instant) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let wait = left
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(1));
    if stream.set_read_timeout(Some(wait)).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Reads up to the blank line that ends the request head. None if it does not fit.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        // Look for the end only where the new bytes could complete it.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if head[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
}

/// `GET /metrics?x HTTP/1.1` -> ("GET", "/metrics").
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let end = head.iter().position(|&b| b == b'\r')?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Some((method, path))
}

fn respond(
    stream: &mut TcpStream,
    deadline: Instant,
    answer: &Answer,
    with_body: bool,
) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_write_timeout(Some(left.max(Duration::from_millis(1))))?;
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        answer.status,
        answer.content_type,
        answer.body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(&answer.body);
    }
    stream.write_all(&out)?;
    stream.flush()?;
    if !answer.status.starts_with("200") {
        linger(stream, deadline);
    }
    Ok(())
}

/// The exposition text for one snapshot (format 0.0.4). Public so the same text can be
/// written elsewhere (e.g. a textfile collector).
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (suffix_labels, value) in samples {
            let _ = writeln!(out, "{name}{suffix_labels} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v.to_string())];

    family(
        "pinwatch_packets_total",
        "counter",
        "Packets processed by the workers.",
        &one(s.packets),
    );
    family(
        "pinwatch_bytes_total",
        "counter",
        "Captured bytes of the packets processed.",
        &one(s.bytes),
    );
    family(
        "pinwatch_flows",
        "gauge",
        "TCP connections currently in the flow tables.",
        &one(s.flows),
    );
    let outcomes: Vec<_> = Outcome::ALL
        .iter()
        .map(|&o| {
            (
                format!("{{outcome=\"{}\"}}", o.as_str()),
                s.outcome(o).to_string(),
            )
        })
        .collect();
    family(
        "pinwatch_connections_total",
        "counter",
        "Classified connections by outcome.",
        &outcomes,
    );
    family(
        "pinwatch_capture_drops_total",
        "counter",
        "Packets dropped before pinwatch saw them (libpcap ps_drop and ps_ifdrop).",
        &[
            (
                "{source=\"kernel\"}".into(),
                s.capture_drops_kernel.to_string(),
            ),
            (
                "{source=\"interface\"}".into(),
                s.capture_drops_interface.to_string(),
            ),
        ],
    );
    family(
        "pinwatch_queue_drops_total",
        "counter",
        "Packets dropped because a worker queue was full.",
        &one(s.queue_drops),
    );
    let depths: Vec<_> = s
        .queue_depths
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("{{queue=\"{i}\"}}"), d.to_string()))
        .collect();
    family(
        "pinwatch_queue_depth",
        "gauge",
        "Items waiting in each worker queue.",
        &depths,
    );
    family(
        "pinwatch_evictions_total",
        "counter",
        "Flows evicted from the flow tables.",
        &one(s.evictions),
    );
    family(
        "pinwatch_rules_emitted_total",
        "counter",
        "Candidate bypass rules emitted.",
        &one(s.rules_emitted),
    );
    let w = &s.webhook;
    family(
        "pinwatch_webhook_delivered_total",
        "counter",
        "Rule suggestions the webhook accepted (2xx).",
        &one(w.delivered),
    );
    family(
        "pinwatch_webhook_retries_total",
        "counter",
        "Webhook attempts that failed transiently and were retried.",
        &one(w.retried),
    );
    family(
        "pinwatch_webhook_dropped_total",
        "counter",
        "Rule suggestions dropped because the webhook queue was full.",
        &one(w.dropped),
    );
    family(
        "pinwatch_webhook_rejected_total",
        "counter",
        "Rule suggestions the webhook refused and were not retried.",
        &one(w.rejected),
    );
    family(
        "pinwatch_webhook_queued",
        "gauge",
        "Rule suggestions waiting for or in delivery.",
        &one(w.queued),
    );

    let mut latency: Vec<_> = QUANTILES
        .iter()
        .map(|&(q, label)| {
            let value = if s.latency.is_empty() {
                "NaN".to_string()
            } else {
                seconds(s.latency.value_at_quantile(q))
            };
            (format!("{{quantile=\"{label}\"}}"), value)
        })
        .collect();
    latency.push(("_sum".into(), seconds(s.latency_sum_ns)));
    latency.push(("_count".into(), s.latency.len().to_string()));
    family(
        "pinwatch_packet_latency_seconds",
        "summary",
        "Per-packet processing time since start.",
        &latency,
    );
    family(
        "pinwatch_uptime_seconds",
        "gauge",
        "Seconds since the counters were created.",
        &[(String::new(), format!("{:.3}", s.uptime.as_secs_f64()))],
    );
    family(
        "pinwatch_build_info",
        "gauge",
        "Always 1; the version is in the label.",
        &[(
            format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
            "1".into(),
        )],
    );
    out
}

fn seconds(ns: u64) -> String {
    format!("{}", ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request_line(b"GET /metrics HTTP/1.1\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            parse_request_line(b"GET /metrics?a=b HTTP/1.0\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(parse_request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_request_line(b"GET  /metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(
            parse_request_line(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"),
            None
        );
    }

    #[test]
    fn render_names_every_family_once_and_marks_empty_quantiles_nan() {
        let stats = Stats::new(2);
        let text = render(&stats.snapshot());
        assert_eq!(text.matches("# TYPE ").count(), 17, "{text}");
        assert!(text.contains("pinwatch_packet_latency_seconds{quantile=\"0.99\"} NaN\n"));
        assert!(text.contains("pinwatch_packet_latency_seconds_count 0\n"));
        assert!(text.contains("pinwatch_queue_depth{queue=\"1\"} 0\n"));
        assert!(text.contains("pinwatch_connections_total{outcome=\"midstream\"} 0\n"));
        assert!(text.ends_with('\n'));
    }
}
