//! HTTP(S) webhook sink: POSTs each rule suggestion as JSON to a URL such as
//! `https://hooks.example.net/pinwatch`, from its own thread, so the pipeline never waits on
//! the network.
//!
//! Semantics:
//! - [`WebhookSink::send`] never blocks: it puts the body on a bounded queue
//!   ([`WebhookConfig::queue_capacity`]). When the queue is full the NEW suggestion is dropped
//!   and counted (`dropped`): what is already queued keeps its order and is never displaced,
//!   so a receiver that comes back gets an unbroken prefix of the suggestions, and the ones
//!   lost are the latest, which the correlator emits again as evidence grows.
//! - One request at a time, in queue order. Connection refused, timeouts, TLS and other
//!   network errors, 5xx, 408 and 429 are transient: the same suggestion is retried with capped
//!   exponential backoff ([`WebhookConfig::backoff_initial`] doubling up to
//!   [`WebhookConfig::backoff_max`]) for as long as the sink runs, so nothing that fit in the
//!   queue is lost while the receiver is down. Any other non-2xx answer (other 4xx, 1xx, 3xx;
//!   redirects are not followed) is `rejected` and not retried. Delivery is at-least-once: a
//!   receiver that took a request but answered too late sees it again.
//! - [`WebhookSink::shutdown`] keeps delivering (and retrying) until the queue is empty or the
//!   deadline passes, then returns the counts; what was still queued or in flight is
//!   `pending_lost`. A request still hanging at the deadline is abandoned: its thread ends when
//!   the request's own timeout fires and changes no count after `shutdown` returned.
//!
//! HTTP client: `ureq` (blocking, one request at a time suits one delivery thread; no async
//! runtime) with rustls on ring. `https://` URLs are verified against Mozilla's roots
//! (`webpki-roots`, the same on every host) or, with [`WebhookConfig::roots`], only against
//! the given CA certificates (a private CA: `--webhook-ca FILE`). Proxies from the environment
//! are not used: the receiver is reached directly, as the sensor's own network allows.
//!
//! Every request carries `Content-Type: application/json`, `User-Agent: pinwatch/<version>`,
//! and, when configured:
//! - `Authorization: <value>` ([`WebhookConfig::authorization`], e.g. `Bearer abc`);
//! - `X-Pinwatch-Timestamp: <unix seconds>` and
//!   `X-Pinwatch-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`
//!   ([`WebhookConfig::hmac_secret`]). The timestamp is taken per attempt, so a receiver can
//!   refuse requests older than a few minutes (replays) and still accept retries.
//!
//! Secrets come from files or the environment, never the command line (see [`read_secret`]).
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

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded, never};
use hmac::{KeyInit, Mac};
use serde::Serialize;
use ureq::http::Uri;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::stats::{WebhookCounters, WebhookCounts};

/// `pinwatch/<crate version>`.
pub const USER_AGENT: &str = concat!("pinwatch/", env!("CARGO_PKG_VERSION"));
/// Header carrying the body's HMAC-SHA256 signature, `sha256=<64 lowercase hex digits>`.
pub const SIGNATURE_HEADER: &str = "X-Pinwatch-Signature";
/// Header carrying the Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "X-Pinwatch-Timestamp";
/// Longest response head (status line and headers) accepted; the body is never read.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Longest secret or CA file read: a secret is a line, a CA bundle a few hundred KiB.
const MAX_SECRET_FILE: u64 = 1024 * 1024;

/// A secret whose `Debug` never shows it (configs are printed in logs and panics).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }
    fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://` or `https://host[:port][/path]`.
    pub url: String,
    /// Suggestions waiting for delivery, beyond which `send` drops. Default 1024.
    pub queue_capacity: usize,
    /// Connecting (TCP and TLS handshake). Default 2 s.
    pub connect_timeout: Duration,
    /// Sending the request and reading the response head, in total. Default 5 s.
    pub io_timeout: Duration,
    /// First wait after a transient failure. Default 200 ms.
    pub backoff_initial: Duration,
    /// Longest wait between retries. Default 10 s.
    pub backoff_max: Duration,
    /// Trust anchors for `https://`: `None` is Mozilla's roots; `Some` only these (PEM, e.g.
    /// from [`read_ca_file`]).
    pub roots: Option<Vec<Certificate<'static>>>,
    /// The whole `Authorization` header value, e.g. `Bearer abc`.
    pub authorization: Option<Secret>,
    /// Key of the HMAC-SHA256 body signature.
    pub hmac_secret: Option<Secret>,
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
            roots: None,
            authorization: None,
            hmac_secret: None,
            counters: Arc::new(WebhookCounters::default()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook URL {url:?}: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error("webhook URL scheme {scheme:?} is not supported (use http:// or https://)")]
    UnsupportedScheme { scheme: String },
    #[error("{what} {path}: {why}")]
    File {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("{what}: {why}")]
    Secret {
        what: &'static str,
        why: &'static str,
    },
    #[error("cannot start the webhook thread: {0}")]
    Spawn(io::Error),
}

/// A secret from `path` if given, else from the environment variable `env`, else `None`.
/// One trailing line end is dropped (files written by `echo`). An empty secret, an unreadable
/// file or one over 1 MiB is an error naming the flag (`what`) and what to do.
pub fn read_secret(
    what: &'static str,
    path: Option<&Path>,
    env: &str,
) -> Result<Option<Secret>, WebhookError> {
    let mut bytes = match path {
        Some(path) => read_small(what, path)?,
        None => match std::env::var_os(env) {
            Some(value) => value.into_encoded_bytes(),
            None => return Ok(None),
        },
    };
    for end in [b'\n', b'\r'] {
        if bytes.last() == Some(&end) {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(WebhookError::Secret {
            what,
            why: "the secret is empty; put it in the file (or the environment variable)",
        });
    }
    Ok(Some(Secret(bytes)))
}

/// The PEM certificates in `path` (`--webhook-ca`): the only roots `https://` then trusts.
pub fn read_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, WebhookError> {
    const WHAT: &str = "--webhook-ca";
    let pem = read_small(WHAT, path)?;
    let bad = |why: String| WebhookError::File {
        what: WHAT,
        path: path.to_path_buf(),
        why,
    };
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::Certificate(cert) = item.map_err(|e| bad(format!("not PEM: {e}")))? {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        return Err(bad(
            "no \"BEGIN CERTIFICATE\" block; give the CA certificate in PEM".into(),
        ));
    }
    Ok(certs)
}

fn read_small(what: &'static str, path: &Path) -> Result<Vec<u8>, WebhookError> {
    use std::io::Read;
    let bad = |why: String| WebhookError::File {
        what,
        path: path.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| {
        bad(format!(
            "{e}; check the path and that pinwatch's user may read it"
        ))
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(bad("larger than 1 MiB; is this the right file?".into()));
    }
    Ok(bytes)
}

/// Checks what the HTTP client would only find at the first request: scheme, host, port,
/// no user information (credentials belong in `--webhook-auth-file`, not in a logged URL).
fn check_url(url: &str) -> Result<(), WebhookError> {
    let bad = |why| WebhookError::BadUrl {
        url: url.to_string(),
        why,
    };
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(bad(
            "no scheme; write http://host/path or https://host/path",
        ));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(WebhookError::UnsupportedScheme {
            scheme: scheme.to_string(),
        });
    }
    let uri: Uri = url.parse().map_err(|_| bad("not a valid URL"))?;
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad(
            "user information is not supported; use --webhook-auth-file",
        ));
    }
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    // `http` drops a port it cannot read as u16 instead of refusing it; read it here.
    let port = &authority.as_str()[authority.host().len()..];
    if !port.is_empty()
        && port
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(0)
            == 0
    {
        return Err(bad("bad port"));
    }
    Ok(())
}

/// `Authorization` values go into a header verbatim: no line breaks or other controls.
fn check_header_value(what: &'static str, value: &Secret) -> Result<(), WebhookError> {
    if value
        .expose()
        .iter()
        .any(|&b| b < b' ' && b != b'\t' || b == 0x7f)
    {
        return Err(WebhookError::Secret {
            what,
            why: "contains a line break or control character; give the header value on one line",
        });
    }
    Ok(())
}

/// `sha256=<hex>` of HMAC-SHA256(secret, timestamp "." body): what a receiver recomputes.
pub fn signature(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose())
        .expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The running sink. `send` may be called from any thread holding a reference.
pub struct WebhookSink {
    queue: Option<Sender<Vec<u8>>>,
    control: Option<Sender<Instant>>,
    thread: Option<JoinHandle<()>>,
    done: Receiver<()>,
    /// Set (under the lock) when `shutdown` gives up on the worker: from then on the worker
    /// changes no count, so the counts `shutdown` returned stay final.
    abandoned: Arc<Mutex<bool>>,
    last_error: Arc<Mutex<Option<String>>>,
    counters: Arc<WebhookCounters>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WebhookSink {
    /// Checks the URL and the header values, builds the client and starts the delivery thread.
    /// Nothing is sent until `send`.
    pub fn start(config: WebhookConfig) -> Result<WebhookSink, WebhookError> {
        check_url(&config.url)?;
        if let Some(auth) = &config.authorization {
            check_header_value("the Authorization value", auth)?;
        }
        let roots = match &config.roots {
            Some(certs) => RootCerts::new_with_certs(certs),
            None => RootCerts::WebPki,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(USER_AGENT)
            .max_response_header_size(MAX_RESPONSE_HEAD)
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build()
            .new_agent();
        let (queue_tx, queue_rx) = bounded(config.queue_capacity.max(1));
        let (control_tx, control_rx) = bounded(1);
        let (done_tx, done_rx) = bounded(1);
        let abandoned = Arc::new(Mutex::new(false));
        let last_error = Arc::new(Mutex::new(None));
        let counters = Arc::clone(&config.counters);
        let worker = Worker {
            agent,
            queue: queue_rx,
            control: control_rx,
            deadline: None,
            abandoned: Arc::clone(&abandoned),
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
            abandoned,
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
        lock(&self.last_error).clone()
    }

    /// Delivers what is queued, retrying, for at most `deadline`, then stops the thread and
    /// returns the final counts. Returns at the deadline even if a request is hanging: that
    /// request and everything still queued count as `pending_lost`.
    pub fn shutdown(mut self, deadline: Duration) -> WebhookCounts {
        let until = Instant::now() + deadline;
        self.stop(until);
        if self.done.recv_deadline(until).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        } else {
            let mut abandoned = lock(&self.abandoned);
            *abandoned = true;
            // Everything not yet finished (the hanging request and the queue behind it).
            let left = self.counters.queued.swap(0, Relaxed);
            self.counters.pending_lost.fetch_add(left, Relaxed);
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
    agent: ureq::Agent,
    queue: Receiver<Vec<u8>>,
    control: Receiver<Instant>,
    deadline: Option<Instant>,
    abandoned: Arc<Mutex<bool>>,
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

    /// Tries until delivered or rejected (true), or until the deadline passes or the sink
    /// gave up on this thread (false; the body is then counted as lost).
    fn deliver(&mut self, body: &[u8]) -> bool {
        let mut backoff = self.config.backoff_initial;
        loop {
            self.poll_control();
            if self.remaining() == Some(Duration::ZERO) {
                self.lost(1);
                return false;
            }
            let outcome = match self.post(body) {
                Attempt::Delivered => &self.counters.delivered,
                Attempt::Rejected => &self.counters.rejected,
                Attempt::Transient(why) => {
                    *lock(&self.last_error) = Some(why);
                    if !self.wait(backoff) {
                        self.lost(1);
                        return false;
                    }
                    if !self.count(|_| self.counters.retried.fetch_add(1, Relaxed)) {
                        return false;
                    }
                    backoff = (backoff * 2).min(self.config.backoff_max);
                    continue;
                }
            };
            return self.count(|c| {
                outcome.fetch_add(1, Relaxed);
                c.queued.fetch_sub(1, Relaxed);
            });
        }
    }

    /// Applies `update` unless `shutdown` has given up on this thread (then false).
    fn count<R>(&self, update: impl FnOnce(&WebhookCounters) -> R) -> bool {
        let abandoned = lock(&self.abandoned);
        if *abandoned {
            return false;
        }
        update(&self.counters);
        true
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

    fn lost(&self, n: u64) {
        self.count(|c: &WebhookCounters| {
            c.pending_lost.fetch_add(n, Relaxed);
            c.queued.fetch_sub(n, Relaxed);
        });
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
        let connect = cap(self.config.connect_timeout);
        let mut request = self
            .agent
            .post(&self.config.url)
            .config()
            .timeout_connect(Some(connect))
            .timeout_global(Some(cap(connect + self.config.io_timeout)))
            .build()
            .header("Content-Type", "application/json");
        if let Some(auth) = &self.config.authorization {
            request = request.header("Authorization", auth.expose());
        }
        if let Some(secret) = &self.config.hmac_secret {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string();
            request = request
                .header(SIGNATURE_HEADER, signature(secret, &now, body))
                .header(TIMESTAMP_HEADER, now);
        }
        match request.send(body) {
            Ok(response) => match response.status().as_u16() {
                200..=299 => Attempt::Delivered,
                status @ (500.. | 408 | 429) => Attempt::Transient(format!("HTTP {status}")),
                _ => Attempt::Rejected,
            },
            Err(e) => Attempt::Transient(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for good in [
            "http://127.0.0.1:8080/rules",
            "HTTP://example.test?x=1",
            "http://[::1]:9/a/b",
            "https://hooks.example.net/pinwatch",
        ] {
            check_url(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert!(matches!(
            check_url("ftp://example.test/"),
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
                matches!(check_url(bad), Err(WebhookError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    /// RFC 4231 test case 7 (HMAC-SHA-256), its message split at its first ". ": the
    /// signature is the HMAC of `timestamp "." body`, so this is the RFC's own vector.
    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        let key = Secret::new(vec![0xaa; 131]);
        let timestamp = "This is a test using a larger than block-size key and a larger than \
                         block-size data";
        let body = b" The key needs to be hashed before being used by the HMAC algorithm.";
        assert_eq!(
            signature(&key, timestamp, body),
            "sha256=9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"
        );
    }

    #[test]
    fn authorization_values_with_line_breaks_are_refused() {
        assert!(check_header_value("a", &Secret::new("Bearer x\r\nX-Evil: 1")).is_err());
        assert!(check_header_value("a", &Secret::new("Bearer abc.def")).is_ok());
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }
}
