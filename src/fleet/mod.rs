//! The fleet: many sensors, one rule set, over NATS JetStream.
//!
//! Contract:
//! - A sensor (`replay --publish`, `live --publish`) publishes every finished TLS connection's
//!   observation as one `pinwatch.observation/1` line ([`wire`],
//!   schema/observation.schema.json) of a message of one or more such lines on subject
//!   `pinwatch.obs.<sensor>` of the stream [`STREAM`] (created by whichever side comes first:
//!   subjects `pinwatch.obs.>`, file storage, [`DUPLICATE_WINDOW`], kept [`MAX_AGE`]). A
//!   message's `Nats-Msg-Id` is its observation's id, or a hash of its observations' ids, so a
//!   message resent within the duplicate window is stored once ([`publish`]). An observation
//!   leaves the sensor's spool (memory, then optionally disk: [`spool`]) only when the server
//!   has acknowledged its message; one sent twice in other messages (a restart, a killed send)
//!   is taken once by the aggregator.
//! - The aggregator ([`aggregate`]) reads the whole stream, drops what it cannot read and every
//!   id it has already taken, puts the observations in capture-time order (start time, then id)
//!   and hands them to the same evidence table and scoring that replay uses; so its rules do not
//!   depend on which sensor saw which connection, or in which order the sensors published.
//! - The aggregator keeps the rules in force in the key-value bucket [`rules::BUCKET`] (key =
//!   rule id, withdrawal = delete), and publishes every rule line it emits on the core subject
//!   `pinwatch.rules.<id>` ([`RULES_SUBJECT_PREFIX`]), besides its files and webhook ([`rules`]).
//! - Aggregators may share the work by partition (`--partition K/N`,
//!   [`crate::correlate::partition`]): each still reads the whole stream and learns from all of
//!   it, scores and emits only the rules of its registrable domains (findings: partition 0),
//!   and writes or deletes only its own keys; so N of them give the rules one gives. A rule a
//!   restarted aggregator no longer owns is withdrawn as `moved` on its outputs, its key left
//!   to the new owner, which deletes its keys that are not in force.
//! - The stream, not the aggregator, holds the evidence: an aggregator that restarts reads the
//!   stream again from its start, and its `--state` keeps only the rule lifecycle (what is in
//!   force, `seq`), as replay's does.
//!
//! tokio lives here only: each side runs a current-thread runtime of its own on a thread of
//! its own, and the rest of pinwatch talks to it through plain calls and channels.

pub mod aggregate;
pub mod publish;
pub mod rules;
pub mod spool;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

/// The JetStream stream of observations.
pub const STREAM: &str = "PINWATCH_OBS";
/// Subjects of the stream; a sensor publishes on `pinwatch.obs.<sensor>`.
pub const SUBJECT_PREFIX: &str = "pinwatch.obs";
/// Subjects of the rule lines an aggregator emits (core NATS, not stored): one per rule id.
pub const RULES_SUBJECT_PREFIX: &str = "pinwatch.rules";
/// Resends within this window are dropped by the server (later ones by the aggregator).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Observations older than this leave the stream: the evidence window of the fleet.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Environment variables read for credentials (never flags: a command line is visible to
/// every user of the host).
pub const ENV_CREDS: &str = "PINWATCH_NATS_CREDS";
pub const ENV_TOKEN: &str = "PINWATCH_NATS_TOKEN";
pub const ENV_USER: &str = "PINWATCH_NATS_USER";
pub const ENV_PASSWORD: &str = "PINWATCH_NATS_PASSWORD";

/// How to reach the server.
#[derive(Debug, Clone, Default)]
pub struct Server {
    /// `nats://HOST:PORT` or `tls://HOST:PORT`, or several of them separated by commas (the
    /// nodes of a cluster: the client tries them in turn, and also those the cluster announces).
    pub url: String,
    /// A `.creds` file (user JWT and nkey seed): `--nats-creds`, else `$PINWATCH_NATS_CREDS`.
    pub creds: Option<PathBuf>,
    /// CA certificates (PEM) trusted for the server's TLS certificate; implies TLS.
    pub ca: Option<PathBuf>,
    /// Copies a cluster keeps of the stream and the rules bucket when pinwatch creates them
    /// (0 is taken as 1); an existing stream keeps its own setting.
    pub replicas: usize,
}

/// A fleet failure: one line for the user, and whether it is the user's to fix (a bad URL,
/// an unreadable file) or the server's (unreachable, refused).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Server(String),
}

/// The subject a sensor publishes on: `pinwatch.obs.` and its name as one token.
pub fn subject_for(sensor: &str) -> String {
    format!("{SUBJECT_PREFIX}.{}", token(sensor))
}

/// The core NATS subject an aggregator publishes a rule line on: `pinwatch.rules.` and the
/// rule id as one token (ids are `pw-` and hex digits, so the token is the id).
pub fn rule_subject_for(id: &str) -> String {
    format!("{RULES_SUBJECT_PREFIX}.{}", token(id))
}

/// `s` as one subject token: what a token cannot hold (`.`, `*`, `>`, white space) becomes `_`.
fn token(s: &str) -> String {
    let token: String = s
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if token.is_empty() { "_".into() } else { token }
}

impl Server {
    /// The server with credentials from the environment where no flag gave them.
    pub fn new(url: &str, creds: Option<PathBuf>, ca: Option<PathBuf>) -> Server {
        let creds = creds.or_else(|| std::env::var_os(ENV_CREDS).map(PathBuf::from));
        Server {
            url: url.to_string(),
            creds,
            ca,
            replicas: 1,
        }
    }

    /// The server URLs to try, in order.
    fn urls(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).collect()
    }

    /// The client options: credentials read now (so a bad file is an error at start, not a
    /// reconnect loop), TLS when a CA is given or a URL says `tls://`.
    fn options(&self, what: &str) -> Result<async_nats::ConnectOptions, FleetError> {
        for url in self.urls() {
            let rest = url
                .strip_prefix("nats://")
                .or_else(|| url.strip_prefix("tls://"))
                .ok_or_else(|| {
                    FleetError::Usage(format!(
                        "{what} {url}: expected nats://HOST:PORT or tls://HOST:PORT (several separated by commas)"
                    ))
                })?;
            if rest.is_empty() || rest.contains('/') || rest.contains('@') {
                return Err(FleetError::Usage(format!(
                    "{what} {url}: expected nats://HOST:PORT (credentials go in --nats-creds or the environment, never in the URL)"
                )));
            }
        }
        let mut opts = async_nats::ConnectOptions::new()
            .name("pinwatch")
            .connection_timeout(Duration::from_secs(5));
        if let Some(path) = &self.creds {
            let text = std::fs::read_to_string(path).map_err(|e| {
                FleetError::Usage(format!("--nats-creds {}: cannot read: {e}", path.display()))
            })?;
            opts = opts.credentials(&text).map_err(|e| {
                FleetError::Usage(format!(
                    "--nats-creds {}: not a NATS credentials file: {e}",
                    path.display()
                ))
            })?;
        } else if let Ok(token) = std::env::var(ENV_TOKEN) {
            opts = opts.token(token);
        } else if let (Ok(user), Ok(pass)) = (std::env::var(ENV_USER), std::env::var(ENV_PASSWORD))
        {
            opts = opts.user_and_password(user, pass);
        }
        if let Some(ca) = &self.ca {
            let pem = std::fs::read_to_string(ca).map_err(|e| {
                FleetError::Usage(format!("--nats-ca {}: cannot read: {e}", ca.display()))
            })?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(FleetError::Usage(format!(
                    "--nats-ca {}: no PEM certificate in it",
                    ca.display()
                )));
            }
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        } else if self.urls().iter().any(|u| u.starts_with("tls://")) {
            opts = opts.require_tls(true);
        }
        Ok(opts)
    }
}

/// The stream's configuration, as either side creates it when it is missing.
fn stream_config(server: &Server) -> async_nats::jetstream::stream::Config {
    async_nats::jetstream::stream::Config {
        name: STREAM.to_string(),
        subjects: vec![format!("{SUBJECT_PREFIX}.>")],
        storage: async_nats::jetstream::stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: MAX_AGE,
        num_replicas: server.replicas.max(1),
        ..Default::default()
    }
}

/// Tries at a JetStream request a cluster may leave unanswered, and how long each may take
/// (see [`with_retries`]).
const TRIES: u32 = 8;
const TRY: Duration = Duration::from_secs(2);

/// Sends a JetStream request until it is answered. A cluster that lost a node answers
/// nothing about a stream until the stream's remaining peers have elected a leader (a few
/// seconds); and Debian's nats-server (2.9) may place an ephemeral consumer of a replicated
/// stream on the lost node, chosen at random among the stream's peers, and then never answers
/// (nats-server 2.12 picks online peers only). Each new request chooses again, so with one
/// node of three down eight tries all fail about once in 6 500.
async fn with_retries<T, E, F>(mut request: impl FnMut() -> F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut last = String::new();
    for _ in 0..TRIES {
        match tokio::time::timeout(TRY, request()).await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".to_string(),
        }
    }
    Err(last)
}

/// A current-thread runtime for one side of the fleet.
fn runtime() -> Result<tokio::runtime::Runtime, FleetError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FleetError::Server(format!("cannot start the NATS client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sensor_name_becomes_one_subject_token() {
        assert_eq!(subject_for("span-3"), "pinwatch.obs.span-3");
        assert_eq!(subject_for("a.b c>*"), "pinwatch.obs.a_b_c__");
        assert_eq!(subject_for(""), "pinwatch.obs._");
        assert_eq!(
            rule_subject_for("pw-0123456789abcdef"),
            "pinwatch.rules.pw-0123456789abcdef"
        );
    }

    #[test]
    fn secrets_are_refused_in_the_url_and_files_are_checked_at_start() {
        let s = Server::new("nats://user:pw@127.0.0.1:4222", None, None);
        assert!(matches!(s.options("--publish"), Err(FleetError::Usage(_))));
        let s = Server::new("http://127.0.0.1:4222", None, None);
        assert!(matches!(s.options("--publish"), Err(FleetError::Usage(_))));
        let s = Server::new(
            "nats://127.0.0.1:4222",
            Some("/nonexistent/x.creds".into()),
            None,
        );
        assert!(matches!(s.options("--publish"), Err(FleetError::Usage(_))));
        let s = Server::new("nats://127.0.0.1:4222", None, None);
        assert!(s.options("--publish").is_ok());
        let s = Server::new("nats://127.0.0.1:4222, tls://10.0.0.2:4222", None, None);
        assert!(s.options("--publish").is_ok());
        assert_eq!(s.urls(), ["nats://127.0.0.1:4222", "tls://10.0.0.2:4222"]);
        let s = Server::new("nats://127.0.0.1:4222,nats://u:p@10.0.0.2:4222", None, None);
        assert!(matches!(s.options("--publish"), Err(FleetError::Usage(_))));
        let s = Server::new("nats://127.0.0.1:4222,", None, None);
        assert!(matches!(s.options("--publish"), Err(FleetError::Usage(_))));
    }
}
