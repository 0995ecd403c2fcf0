//! Running a case: its captures through the library pipeline and the correlator, in-process,
//! into [`Observed`], the typed facts the expectations are compared with.
//!
//! Facts are kept in a canonical order (sorted), never in run order, so a case does not depend
//! on the thread count or on the order of its capture files.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;

use crate::correlate::Config as CorrelateConfig;
use crate::correlate::proxy::ProxyCas;
use crate::correlate::score::{DEFAULT_MIN_CONFIDENCE, Rule};
use crate::replay::{ReplayConfig, replay_correlated};

use super::case::LoadedCase;

/// One connection as a case selects it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conn {
    pub sni: Option<String>,
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub server_ip: IpAddr,
    pub server_port: u16,
    pub outcome: String,
}

/// A candidate rule by its identity in a case.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleSeen {
    pub name: String,
    pub scope: &'static str,
    /// The client fingerprint a `ja4`-scoped rule is limited to.
    pub ja4: Option<String>,
    /// The client addresses the rule is narrowed to, sorted; empty when it is not narrowed.
    pub client_ips: Vec<IpAddr>,
    pub confidence: f64,
    pub emitted: bool,
    pub reason: String,
}

impl RuleSeen {
    /// Whether its client addresses are exactly `want`'s (any order); `None` holds for any.
    pub fn narrowed_as(&self, want: &Option<Vec<IpAddr>>) -> bool {
        want.as_ref().is_none_or(|w| {
            let mut w = w.clone();
            w.sort();
            w.dedup();
            w == self.client_ips
        })
    }

    /// Whether a case's rule expectation (name, and scope and fingerprint when given) names it.
    pub fn is(&self, name: &str, scope: &Option<String>, ja4: &Option<String>) -> bool {
        self.name == name
            && scope.as_deref().is_none_or(|s| s == self.scope)
            && ja4.as_ref().is_none_or(|j| self.ja4.as_ref() == Some(j))
    }
}

/// What a run of a case showed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observed {
    pub outcomes: BTreeMap<String, u64>,
    pub connections: Vec<Conn>,
    /// Candidates with failures behind them, emitted or not, sorted by name and scope.
    pub rules: Vec<RuleSeen>,
    pub interception_ca: Vec<String>,
    pub missing_ca_clients: Vec<String>,
    pub anomalies: BTreeMap<String, u64>,
    pub min_confidence: f64,
}

/// A case that could not be run (as opposed to one whose expectations failed).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Setup(String),
    /// A capture could not be read to the end; `damaged` when it broke off mid-file.
    #[error("{message}")]
    Capture { message: String, damaged: bool },
}

/// The capture files of a case, sorted by name so their order cannot change a result.
pub fn capture_paths(case: &LoadedCase) -> Result<Vec<String>, RunError> {
    let mut paths: Vec<String> = if case.case.captures.is_empty() {
        let entries = std::fs::read_dir(&case.dir)
            .map_err(|e| RunError::Setup(format!("{}: {e}", case.dir.display())))?;
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    } else {
        case.case
            .captures
            .iter()
            .map(|c| case.dir.join(c).to_string_lossy().into_owned())
            .collect()
    };
    paths.sort_by(|a, b| file_name(a).cmp(file_name(b)).then(a.cmp(b)));
    if paths.is_empty() {
        return Err(RunError::Setup(format!(
            "{}: no captures (list them in `captures = [...]` or put *.pcap files beside case.toml)",
            case.dir.display()
        )));
    }
    Ok(paths)
}

fn file_name(p: &str) -> &str {
    Path::new(p)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(p)
}

/// The name and scope a case gives a rule: `api.example.test`/`host`, `*.example.test`/`suffix`.
pub fn rule_identity(r: &Rule) -> (String, &'static str) {
    match (&r.matcher.host, &r.matcher.suffix, &r.matcher.client_ja4) {
        (Some(h), _, Some(_)) => (h.clone(), "ja4"),
        (Some(h), _, None) => (h.clone(), "host"),
        (None, Some(s), _) => (format!("*.{s}"), "suffix"),
        _ => (String::new(), "other"),
    }
}

pub fn run(case: &LoadedCase, threads: usize) -> Result<Observed, RunError> {
    let paths = capture_paths(case)?;
    let mut proxy_cas = ProxyCas::default();
    for pem in &case.case.options.proxy_ca {
        let path = case.dir.join(pem);
        proxy_cas
            .load_pem(&path.to_string_lossy())
            .map_err(|e| RunError::Setup(format!("options.proxy_ca {e}")))?;
    }
    let correlate = CorrelateConfig {
        proxy_cas,
        proxy_addrs: case.case.options.proxy_addr.clone(),
        ..CorrelateConfig::default()
    };
    let config = ReplayConfig {
        threads,
        ..ReplayConfig::default()
    };
    let mut connections = Vec::new();
    let (summary, report) =
        replay_correlated::<std::convert::Infallible>(&paths, config, correlate, &mut |rec, _| {
            connections.push(Conn {
                sni: rec.sni.clone(),
                // The record's addresses are the pipeline's own formatting of an IpAddr.
                client_ip: rec.client_ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                client_port: rec.client_port,
                server_ip: rec.server_ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                server_port: rec.server_port,
                outcome: rec.outcome.as_str().to_string(),
            });
            Ok(())
        })
        .unwrap_or_else(|never| match never {});
    if let Some(e) = summary.errors.first() {
        return Err(RunError::Capture {
            message: e.to_string(),
            damaged: e.is_mid_file(),
        });
    }
    connections.sort();
    let min_confidence = case
        .case
        .options
        .min_confidence
        .unwrap_or(DEFAULT_MIN_CONFIDENCE);
    let mut rules: Vec<RuleSeen> = report
        .candidates
        .iter()
        .filter(|r| r.evidence.failures > 0 || r.confidence >= min_confidence)
        .map(|r| {
            let (name, scope) = rule_identity(r);
            RuleSeen {
                name,
                scope,
                ja4: r.matcher.client_ja4.clone(),
                client_ips: {
                    let mut ips = r.matcher.client_ips.clone().unwrap_or_default();
                    ips.sort();
                    ips
                },
                confidence: r.confidence,
                emitted: r.confidence >= min_confidence,
                reason: r.reason.clone(),
            }
        })
        .collect();
    rules.sort_by(|a, b| (&a.name, a.scope, &a.ja4).cmp(&(&b.name, b.scope, &b.ja4)));
    let mut interception_ca: Vec<String> =
        report.proxy_cas.iter().map(|c| c.issuer.clone()).collect();
    interception_ca.sort();
    let mut missing_ca_clients: Vec<String> = report
        .missing_proxy_ca
        .iter()
        .map(|m| m.client_ip.clone())
        .collect();
    missing_ca_clients.sort();
    Ok(Observed {
        outcomes: summary
            .outcomes
            .iter()
            .map(|(o, n)| (o.as_str().to_string(), *n))
            .collect(),
        connections,
        rules,
        interception_ca,
        missing_ca_clients,
        anomalies: summary.anomalies,
        min_confidence,
    })
}
