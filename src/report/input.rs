//! What the report reads: candidate rules (`pinwatch.rule/3`, `/2` and `/1`; the rules in
//! force), connection records (`pinwatch.connection/1`) and findings (`pinwatch.finding/2` and
//! `/1`; those in force), either from NDJSON files or
//! straight from a replay. Only the fields the page shows are kept; unknown fields are ignored
//! (formats grow within a version). Every string here came off the wire or out of a file and is
//! hostile: the template escapes it, and nothing here interprets it beyond comparing names.

use std::collections::BTreeMap;
use std::io::{BufRead, Read as _};

use serde::{Deserialize, Serialize};

use crate::correlate::score::Rule as ScoredRule;
use crate::correlate::{LearnedCa, MissingProxyCa};
use crate::output::record::ConnectionRecord;
use crate::output::time::parse_rfc3339_ns;

/// Longest NDJSON line read; a longer one is refused rather than buffered without bound.
pub const MAX_LINE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RuleMatchIn {
    pub host: Option<String>,
    pub suffix: Option<String>,
    pub client_ja4: Option<String>,
    pub client_ips: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct DelayIn {
    #[serde(default)]
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct EvidenceIn {
    #[serde(default)]
    pub connections: u64,
    #[serde(default)]
    pub failures: u64,
    #[serde(default)]
    pub failure_kinds: BTreeMap<String, u64>,
    #[serde(default)]
    pub alerts: BTreeMap<String, u64>,
    #[serde(default)]
    pub successes_same_fingerprint: u64,
    #[serde(default)]
    pub successes_other_fingerprints: u64,
    #[serde(default)]
    pub successes_outside_proxy: u64,
    #[serde(default)]
    pub idle_closes: u64,
    #[serde(default)]
    pub client_hosts: u64,
    #[serde(default)]
    pub abort_delay_ms: DelayIn,
    #[serde(default)]
    pub proxy_issuers: Vec<String>,
    #[serde(default)]
    pub first_seen: String,
    #[serde(default)]
    pub last_seen: String,
}

/// One candidate rule.
#[derive(Debug, Clone, Deserialize)]
pub struct RuleIn {
    pub id: String,
    #[serde(rename = "match")]
    pub matcher: RuleMatchIn,
    pub confidence: f64,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub evidence: EvidenceIn,
    pub app: Option<String>,
    #[serde(default)]
    pub registrable_domain: String,
    #[serde(default)]
    pub ttl_s: u64,
    #[serde(default)]
    pub capped_by: Vec<String>,
    /// Lifecycle (`pinwatch.rule/3`): absent in older lines.
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub status: Option<String>,
}

/// The lines in force among `lines` of (id, seq, status, value), as the schemas' consumer
/// contract says: per id the latest line wins (the highest `seq`; lines without one by their
/// position), and an id whose latest line is `withdrawn` is gone. Order: as first read.
pub fn in_force<T>(lines: Vec<(String, Option<u64>, Option<String>, T)>) -> Vec<T> {
    let mut latest: std::collections::HashMap<String, (usize, (bool, u64, usize))> =
        std::collections::HashMap::new();
    for (at, (id, seq, _, _)) in lines.iter().enumerate() {
        let rank = (seq.is_some(), seq.unwrap_or(0), at);
        let first = latest.get(id).map_or(at, |(first, _)| *first);
        if latest.get(id).is_none_or(|(_, r)| rank > *r) {
            latest.insert(id.clone(), (first, rank));
        }
    }
    let mut kept: Vec<(usize, T)> = lines
        .into_iter()
        .enumerate()
        .filter(|(at, (id, _, status, _))| {
            latest[id].1.2 == *at && status.as_deref() != Some("withdrawn")
        })
        .map(|(_, (id, _, _, v))| (latest[&id].0, v))
        .collect();
    kept.sort_by_key(|(first, _)| *first);
    kept.into_iter().map(|(_, v)| v).collect()
}

impl RuleIn {
    /// The same rule as the correlator made it, through serde's data model (so a field the
    /// rule format gains reaches the report the same way from a file and from a replay).
    pub fn from_scored(rule: &ScoredRule) -> Option<RuleIn> {
        serde_json::to_value(rule)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ConnectIn {
    pub host: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AlertIn {
    pub from: String,
    pub description: Option<String>,
    #[serde(default)]
    pub encrypted: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct CertIn {
    pub subject: String,
    pub issuer: String,
    #[serde(default)]
    pub sha256: String,
    pub not_after: Option<String>,
    #[serde(default)]
    pub has_sct: bool,
}

/// One connection record.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ConnIn {
    pub ts_start: String,
    #[serde(default)]
    pub ts_end: String,
    pub client_ip: String,
    pub server_ip: String,
    pub server_port: u16,
    /// Written by records that carry it (join key); shown when present.
    pub community_id: Option<String>,
    pub sni: Option<String>,
    pub connect: Option<ConnectIn>,
    pub outcome: String,
    pub outcome_detail: Option<String>,
    pub alert: Option<AlertIn>,
    pub abort_delay_ms: Option<f64>,
    /// Absent from records written before it existed: the delay is then judged as seen.
    #[serde(default)]
    pub client_rtt_ms: Option<f64>,
    pub ja4: Option<String>,
    pub cert: Option<CertIn>,
    #[serde(default)]
    pub client_packets: u64,
    #[serde(default)]
    pub server_packets: u64,
}

impl ConnIn {
    /// The client's own abort delay, as scoring judges it.
    pub fn client_delay_ms(&self) -> Option<f64> {
        crate::correlate::observation::client_delay_ms(self.abort_delay_ms, self.client_rtt_ms)
    }

    /// The name the connection asked for: the SNI, else the CONNECT target's host.
    pub fn name(&self) -> Option<&str> {
        self.sni
            .as_deref()
            .or(self.connect.as_ref().map(|c| c.host.as_str()))
    }

    pub fn start_ns(&self) -> Option<i64> {
        parse_rfc3339_ns(&self.ts_start)
    }

    pub fn end_ns(&self) -> Option<i64> {
        parse_rfc3339_ns(&self.ts_end)
    }

    /// The fields the report shows, copied from a record made in this process.
    pub fn from_record(r: &ConnectionRecord) -> ConnIn {
        ConnIn {
            ts_start: r.ts_start.clone(),
            ts_end: r.ts_end.clone(),
            client_ip: r.client_ip.clone(),
            server_ip: r.server_ip.clone(),
            server_port: r.server_port,
            community_id: Some(r.community_id.clone()),
            sni: r.sni.clone(),
            connect: r.connect.as_ref().map(|c| ConnectIn {
                host: c.host.clone(),
            }),
            outcome: r.outcome.as_str().to_string(),
            outcome_detail: r.outcome_detail.clone(),
            alert: r.alert.as_ref().map(|a| AlertIn {
                from: a.from.to_string(),
                description: a.description.clone(),
                encrypted: a.encrypted,
            }),
            abort_delay_ms: r.abort_delay_ms,
            client_rtt_ms: r.client_rtt_ms,
            ja4: r.ja4.as_deref().map(str::to_string),
            cert: r.cert.as_deref().map(|c| CertIn {
                subject: c.subject.clone(),
                issuer: c.issuer.clone(),
                sha256: c.sha256.clone(),
                not_after: c.not_after.clone(),
                has_sct: c.has_sct,
            }),
            client_packets: r.client_packets,
            server_packets: r.server_packets,
        }
    }
}

/// Findings that are not rules.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub proxy_cas: Vec<CaIn>,
    pub missing_proxy_ca: Vec<MissingIn>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CaIn {
    pub issuer: String,
    #[serde(default)]
    pub why: Vec<String>,
    #[serde(default)]
    pub leaf_count: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MissingIn {
    pub client_ip: String,
    #[serde(default)]
    pub failures: u64,
    #[serde(default)]
    pub registrable_domains: Vec<String>,
    #[serde(default)]
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum FindingLine {
    ProxyCa {
        ca: CaIn,
    },
    MissingProxyCa {
        client: MissingIn,
    },
    /// A kind this version does not know: skipped (findings grow within a version).
    #[serde(other)]
    Other,
}

impl Findings {
    pub fn from_report(cas: &[LearnedCa], missing: &[MissingProxyCa]) -> Findings {
        Findings {
            proxy_cas: cas
                .iter()
                .map(|c| CaIn {
                    issuer: c.issuer.clone(),
                    why: c.why.clone(),
                    leaf_count: c.leaf_count as u64,
                })
                .collect(),
            missing_proxy_ca: missing
                .iter()
                .map(|m| MissingIn {
                    client_ip: m.client_ip.clone(),
                    failures: m.failures as u64,
                    registrable_domains: m.registrable_domains.clone(),
                    reason: m.reason.clone(),
                })
                .collect(),
        }
    }

    fn add(&mut self, line: FindingLine) {
        match line {
            FindingLine::ProxyCa { ca } => self.proxy_cas.push(ca),
            FindingLine::MissingProxyCa { client } => self.missing_proxy_ca.push(client),
            FindingLine::Other => {}
        }
    }
}

/// A file that could not be read as the NDJSON it should be.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}: not a {what} record ({why}); pass the file `pinwatch replay` wrote with the matching flag"
    )]
    Bad {
        path: String,
        line: usize,
        what: &'static str,
        why: String,
    },
    #[error("{path}:{line}: line longer than {MAX_LINE_BYTES} bytes")]
    TooLong { path: String, line: usize },
}

/// Calls `each` with every record of an NDJSON file (blank lines skipped), stopping at the first
/// line that is not a `T`.
pub fn read_ndjson<T: for<'de> Deserialize<'de>>(
    path: &str,
    what: &'static str,
    mut each: impl FnMut(T),
) -> Result<(), InputError> {
    let io = |source| InputError::Io {
        path: path.to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = std::io::BufReader::new(file);
    let mut buf = Vec::new();
    for line in 1.. {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        if buf.len() > MAX_LINE_BYTES {
            return Err(InputError::TooLong {
                path: path.to_string(),
                line,
            });
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = serde_json::from_slice(&buf).map_err(|e| InputError::Bad {
            path: path.to_string(),
            line,
            what,
            why: e.to_string(),
        })?;
        each(value);
    }
    Ok(())
}

/// A findings line with its lifecycle (`pinwatch.finding/2`; absent in `/1`).
#[derive(Deserialize)]
struct FindingEntry {
    id: Option<String>,
    seq: Option<u64>,
    status: Option<String>,
    #[serde(flatten)]
    line: FindingLine,
}

/// Reads a findings file: the findings in force (withdrawn ones are gone).
pub fn read_findings(path: &str) -> Result<Findings, InputError> {
    let mut lines = Vec::new();
    read_ndjson(path, "pinwatch.finding/2", |f: FindingEntry| {
        // A `/1` line has no id: each stands alone.
        let id = f.id.unwrap_or_else(|| format!("line {}", lines.len()));
        lines.push((id, f.seq, f.status, f.line));
    })?;
    let mut findings = Findings::default();
    for line in in_force(lines) {
        findings.add(line);
    }
    Ok(findings)
}

#[cfg(test)]
mod lifecycle_tests {
    use super::in_force;

    fn line(
        id: &str,
        seq: Option<u64>,
        status: &str,
        v: u32,
    ) -> (String, Option<u64>, Option<String>, u32) {
        (id.into(), seq, Some(status.into()), v)
    }

    #[test]
    fn latest_line_per_id_wins_and_withdrawn_ids_are_gone() {
        let lines = vec![
            line("a", Some(1), "new", 1),
            line("b", Some(2), "new", 2),
            line("a", Some(5), "updated", 3),
            line("b", Some(4), "withdrawn", 4),
            // An older line read later (a rotated file given second) does not win.
            line("a", Some(3), "new", 5),
            line("c", None, "new", 6),
            line("c", None, "new", 7),
        ];
        assert_eq!(in_force(lines), vec![3, 7]);
    }
}
