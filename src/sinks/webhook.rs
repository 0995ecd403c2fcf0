//! HTTP webhook sink: POSTs each rule suggestion as JSON to a URL such as
//! `http://127.0.0.1:8080/rules`, from its own thread, so the pipeline never waits on the
//! network.
//!
//! Semantics:
//! - [`WebhookSink::send`] never blocks: it puts the body on a bounded queue
//!   ([`WebhookConfig::queue_capacity`]). When the queue is full the NEW suggestion is dropped
//!   and counted (`dropped`): what is already queued keeps its order and is never displaced,
//!   so a receiver that comes back gets an unbroken prefix of the suggestions, and the ones
//!   lost are the latest, which the correlator emits again as evidence grows.
//! - One request at a time, in queue order. Connection refused, timeouts, other network errors,
//!   5xx, 408 and 429 are transient: the same suggestion is retried with capped exponential
//!   backoff ([`WebhookConfig::backoff_initial`] doubling up to
//!   [`WebhookConfig::backoff_max`]) for as long as the sink runs, so nothing that fit in the
//!   queue is lost while the receiver is down. Any other non-2xx answer (other 4xx, 1xx, 3xx)
//!   is `rejected` and not retried. Delivery is at-least-once: a receiver that took a request
//!   but answered too late sees it again.
//! - [`WebhookSink::shutdown`] keeps delivering (and retrying) until the queue is empty or the
//!   deadline passes, then returns the counts; what was still queued or in flight is
//!   `pending_lost`.
//!
//! HTTP client: a small HTTP/1.1 client over `std::net::TcpStream` (one connection per
//! request, `Connection: close`), with connect, write and read timeouts and a bounded
//! response read. Plain `http://` only: suggestions are a handful per minute to a local
//! receiver, and an HTTPS client (rustls and ring) would roughly double the project's compile
//! time; an `https://` URL is refused at start with [`WebhookError::UnsupportedScheme`].
//! Requests carry `Content-Type: application/json` and `User-Agent: pinwatch/<version>`.
//!
//! ```no_run
//! use pinwatch::sinks::webhook::{WebhookConfig, WebhookSink};
//! use std::time::Duration;
//! let sink = WebhookSink::start(WebhookConfig::new("http://127.0.0.1:8080/rules"))?;
//! sink.send(&serde_json::json!({"sni": "api.example.com", "confidence": 0.93}));
//! let counts = sink.shutdown(Duration::from_secs(5));
//! eprintln!("webhook: {} delivered, {} lost", counts.delivered, counts.pending_lost);
//! # Ok::<(), pinwatch::sinks::webhook::WebhookError>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded, never};
use serde::Serialize;

use crate::stats::{WebhookCounters, WebhookCounts};

/// `pinwatch/<crate version>`.
pub const USER_AGENT: &str = concat!("pinwatch/", env!("CARGO_PKG_VERSION"));

/// Longest response head (status line and headers) read; the body is never read.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://host[:port][/path]`.
    pub url: String,
    /// Suggestions waiting for delivery, beyond which `send` drops. Default 1024.
    pub queue_capacity: usize,
    /// Per address tried. Default 2 s.
    pub connect_timeout: Duration,
    /// Sending the request and reading the response head, in total. Default 5 s.
    pub io_timeout: Duration,
    /// First wait after a transient failure. Default 200 ms.
    pub backoff_initial: Duration,
    /// Longest wait between retries. Default 10 s.
    pub backoff_max: Duration,
    /// Where the sink counts; pass `stats.webhook.clone()` to report them with the rest.
    pub counters: Arc<WebhookCounters>,
}

impl WebhookConfig {
    pub fn new(url: &str) -> Self {
        WebhookConfig {
            url: url.to_string(),
            queue_capacity: 1024,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            counters: Arc::new(WebhookCounters::default()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook URL {url:?}: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error("webhook URL scheme {scheme:?} is not supported (only http://)")]
    UnsupportedScheme { scheme: String },
    #[error("cannot start the webhook thread: {0}")]
    Spawn(io::Error),
}

/// Where requests go, parsed once from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// As written in the URL (`host:port` or `[v6]:port`), for the Host header.
    authority: String,
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    target: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, WebhookError> {
        let bad = |why| WebhookError::BadUrl {
            url: url.to_string(),
            why,
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(WebhookError::UnsupportedScheme {
                scheme: scheme.to_string(),
            });
        }
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let target = match target.strip_prefix('?') {
            Some(_) => format!("/{target}"),
            None => target.to_string(),
        };
        if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("spaces or control characters in the path"));
        }
        if authority.contains('@') {
            return Err(bad("user information is not supported"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint {
            authority: authority.to_string(),
            host: host.to_string(),
            port,
            target,
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; port 80 when absent.
fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p.parse().ok().filter(|&p| p != 0)?,
    };
    if host.bytes().any(|b| b <= b' ' || b == b'/' || b == 0x7f) {
        return None;
    }
    Some((host, port))
}

/// The running sink. `send` may be called from any thread holding a reference.
pub struct WebhookSink {
    queue: Option<Sender<Vec<u8>>>,
    control: Option<Sender<Instant>>,
    thread: Option<JoinHandle<()>>,
    done: Receiver<()>,
    in_flight: Arc<Mutex<Option<TcpStream>>>,
    last_error: Arc<Mutex<Option<String>>>,
    counters: Arc<WebhookCounters>,
}

impl WebhookSink {
    /// Checks the URL and starts the delivery thread. Nothing is sent until `send`.
    pub fn start(config: WebhookConfig) -> Result<WebhookSink, WebhookError> {
        let endpoint = Endpoint::parse(&config.url)?;
        let (queue_tx, queue_rx) = bounded(config.queue_capacity.max(1));
        let (control_tx, control_rx) = bounded(1);
        let (done_tx, done_rx) = bounded(1);
        let in_flight = Arc::new(Mutex::new(None));
        let last_error = Arc::new(Mutex::new(None));
        let counters = Arc::clone(&config.counters);
        let worker = Worker {
            endpoint,
            queue: queue_rx,
            control: control_rx,
            deadline: None,
            in_flight: Arc::clone(&in_flight),
            last_error: Arc::clone(&last_error),
            counters: Arc::clone(&counters),
            config,
        };
        let thread = std::thread::Builder::new()
            .name("pinwatch-webhook".into())
            .spawn(move || {
                worker.run();
                let _ = done_tx.send(());
            })
            .map_err(WebhookError::Spawn)?;
        Ok(WebhookSink {
            queue: Some(queue_tx),
            control: Some(control_tx),
            thread: Some(thread),
            done: done_rx,
            in_flight,
            last_error,
            counters,
        })
    }

    /// Queues `value` serialised as JSON. Returns false if it was dropped (queue full, counted
    /// as `dropped`) or could not be serialised (counted as `rejected`). Never blocks.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> bool {
        match serde_json::to_vec(value) {
            Ok(body) => self.send_bytes(body),
            Err(_) => {
                self.counters.rejected.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Queues an already serialised JSON body. Same contract as [`WebhookSink::send`].
    pub fn send_bytes(&self, body: Vec<u8>) -> bool {
        let Some(queue) = &self.queue else {
            return false;
        };
        // Count before the worker can possibly finish it, so `queued` never underflows.
        self.counters.queued.fetch_add(1, Relaxed);
        match queue.try_send(body) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.queued.fetch_sub(1, Relaxed);
                self.counters.dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    pub fn counts(&self) -> WebhookCounts {
        self.counters.snapshot()
    }

    /// The latest transient failure (e.g. "connection refused"), for logging.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Delivers what is queued, retrying, for at most `deadline`, then stops the thread and
    /// returns the final counts. Returns at the deadline even if a request is hanging (its
    /// connection is shut down), except while a connection attempt started before the call
    /// is still within its `connect_timeout`.
    pub fn shutdown(mut self, deadline: Duration) -> WebhookCounts {
        let until = Instant::now() + deadline;
        self.stop(until);
        if self.done.recv_deadline(until).is_err() {
            // Wake a request blocked on a silent receiver; the worker then sees the deadline.
            if let Some(stream) = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
            {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.counters.snapshot()
    }

    /// Tells the worker its deadline and that no more suggestions will come.
    fn stop(&mut self, until: Instant) {
        if let Some(control) = self.control.take() {
            let _ = control.send(until);
        }
        self.queue = None;
    }
}

impl Drop for WebhookSink {
    /// Dropped without `shutdown`: stop at once and let the thread end on its own.
    fn drop(&mut self) {
        self.stop(Instant::now());
    }
}

/// The result of one POST.
enum Attempt {
    Delivered,
    Rejected,
    Transient(String),
}

struct Worker {
    config: WebhookConfig,
    endpoint: Endpoint,
    queue: Receiver<Vec<u8>>,
    control: Receiver<Instant>,
    deadline: Option<Instant>,
    in_flight: Arc<Mutex<Option<TcpStream>>>,
    last_error: Arc<Mutex<Option<String>>>,
    counters: Arc<WebhookCounters>,
}

impl Worker {
    fn run(mut self) {
        loop {
            let body = crossbeam_channel::select! {
                recv(self.queue) -> msg => match msg {
                    Ok(body) => body,
                    Err(_) => return, // shut down and drained
                },
                recv(self.control) -> msg => {
                    self.set_deadline(msg.ok());
                    continue;
                }
            };
            if !self.deliver(&body) {
                self.lose_rest();
                return;
            }
        }
    }

    /// A shutdown deadline arrived (or the sink was dropped: stop now). Stop listening for
    /// more, so a closed control channel does not spin the select.
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = Some(deadline.unwrap_or_else(Instant::now));
        self.control = never();
    }

    fn poll_control(&mut self) {
        match self.control.try_recv() {
            Ok(deadline) => self.set_deadline(Some(deadline)),
            Err(crossbeam_channel::TryRecvError::Disconnected) => self.set_deadline(None),
            Err(crossbeam_channel::TryRecvError::Empty) => {}
        }
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Tries until delivered or rejected (true), or until the deadline passes (false; the body
    /// is then counted as lost).
    fn deliver(&mut self, body: &[u8]) -> bool {
        let mut backoff = self.config.backoff_initial;
        loop {
            self.poll_control();
            if self.remaining() == Some(Duration::ZERO) {
                self.lost(1);
                return false;
            }
            match self.post(body) {
                Attempt::Delivered => {
                    self.finish(&self.counters.delivered);
                    return true;
                }
                Attempt::Rejected => {
                    self.finish(&self.counters.rejected);
                    return true;
                }
                Attempt::Transient(why) => {
                    *self
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(why);
                }
            }
            if !self.wait(backoff) {
                self.lost(1);
                return false;
            }
            self.counters.retried.fetch_add(1, Relaxed);
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }

    /// Sleeps `backoff`, waking early for a shutdown, never past the deadline. False when the
    /// deadline has passed.
    fn wait(&mut self, backoff: Duration) -> bool {
        let mut until = Instant::now() + backoff;
        loop {
            if let Some(deadline) = self.deadline {
                until = until.min(deadline);
            }
            match self
                .control
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(deadline) => self.set_deadline(Some(deadline)),
                Err(RecvTimeoutError::Disconnected) => self.set_deadline(None),
                Err(RecvTimeoutError::Timeout) => {
                    return self.remaining() != Some(Duration::ZERO);
                }
            }
        }
    }

    fn finish(&self, outcome: &std::sync::atomic::AtomicU64) {
        outcome.fetch_add(1, Relaxed);
        self.counters.queued.fetch_sub(1, Relaxed);
    }

    fn lost(&self, n: u64) {
        self.counters.pending_lost.fetch_add(n, Relaxed);
        self.counters.queued.fetch_sub(n, Relaxed);
    }

    /// After the deadline: everything still queued is lost. The sink has stopped sending, so
    /// this drains a queue that can no longer grow.
    fn lose_rest(&mut self) {
        let n = self.queue.try_iter().count() as u64;
        self.lost(n);
    }

    fn post(&mut self, body: &[u8]) -> Attempt {
        // After shutdown, no attempt may outlive the deadline.
        let cap = |t: Duration| match self.remaining() {
            Some(r) => t.min(r).max(Duration::from_millis(1)),
            None => t,
        };
        let stream = match connect(&self.endpoint, cap(self.config.connect_timeout)) {
            Ok(s) => s,
            Err(e) => return Attempt::Transient(format!("connect: {e}")),
        };
        *self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = stream.try_clone().ok();
        let result = exchange(stream, &self.endpoint, body, cap(self.config.io_timeout));
        *self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        match result {
            Ok(status) if (200..300).contains(&status) => Attempt::Delivered,
            Ok(status) if status >= 500 || status == 408 || status == 429 => {
                Attempt::Transient(format!("HTTP {status}"))
            }
            Ok(_) => Attempt::Rejected,
            Err(e) => Attempt::Transient(e.to_string()),
        }
    }
}

fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host has no address");
    for addr in (endpoint.host.as_str(), endpoint.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Sends the request and reads the status code, all within `timeout`.
fn exchange(
    mut stream: TcpStream,
    ep: &Endpoint,
    body: &[u8],
    timeout: Duration,
) -> io::Result<u16> {
    let deadline = Instant::now() + timeout;
    let _ = stream.set_nodelay(true);
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        ep.target,
        ep.authority,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&request)?;
    read_status(&mut stream, deadline)
}

/// Reads the response head (bounded, before `deadline`) and returns its status code.
fn read_status(stream: &mut TcpStream, deadline: Instant) -> io::Result<u16> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response timed out",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        head.extend_from_slice(&buf[..n]);
        // The status line is all we need; stop at the end of the head or of the stream.
        if n == 0 || head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() >= MAX_RESPONSE_HEAD {
            return parse_status(&head).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no HTTP status line in the response",
                )
            });
        }
    }
}

/// `HTTP/1.x NNN ...` -> NNN.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = Endpoint::parse("http://127.0.0.1:8080/rules").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.target.as_str()),
            ("127.0.0.1", 8080, "/rules")
        );
        assert_eq!(e.authority, "127.0.0.1:8080");
        let e = Endpoint::parse("HTTP://example.test?x=1").unwrap();
        assert_eq!((e.port, e.target.as_str()), (80, "/?x=1"));
        let e = Endpoint::parse("http://[::1]:9/a/b").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9));
        assert!(matches!(
            Endpoint::parse("https://example.test/"),
            Err(WebhookError::UnsupportedScheme { .. })
        ));
        for bad in [
            "127.0.0.1:8080/rules",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://h:x/",
            "http://u@h/",
            "http://h/a b",
            "http://[::1/",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(WebhookError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 503\r\n"), Some(503));
        assert_eq!(parse_status(b"HTTP/1.1 200 OK"), None, "no line end yet");
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 099 x\r\n"), None);
    }
}
