//! Comparing a case's expectations with what its run showed: one [`Difference`] per expectation
//! that does not hold, with the connections behind it.
//!
//! Everything compared is a count or a set, never an order or a timestamp, so a result stands
//! whatever the thread count, the capture files' order or a shift of the capture's clock.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::case::{Case, ConnectionExpect, NoRule, RuleExpect};
use super::run::{Conn, Observed, RuleSeen};

/// Connections listed under one difference; the rest are counted.
pub const SHOWN_CONNECTIONS: usize = 10;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Difference {
    /// Which expectation: `outcomes.client_alert`, `rule "api.example.test"`, ...
    pub expectation: String,
    pub expected: String,
    pub got: String,
    /// Up to [`SHOWN_CONNECTIONS`] of the connections behind the difference.
    pub connections: Vec<Conn>,
    /// How many there were in all.
    pub connections_total: usize,
}

impl Difference {
    fn new(expectation: String, expected: String, got: String) -> Self {
        Difference {
            expectation,
            expected,
            got,
            connections: Vec::new(),
            connections_total: 0,
        }
    }

    fn behind<'a>(mut self, conns: impl Iterator<Item = &'a Conn>) -> Self {
        for c in conns {
            if self.connections.len() < SHOWN_CONNECTIONS {
                self.connections.push(c.clone());
            }
            self.connections_total += 1;
        }
        self
    }
}

/// A selector's address: `IP` or `IP:PORT`. `None` when it is neither (reported, never matched).
fn parse_endpoint(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    s.parse::<SocketAddr>()
        .ok()
        .map(|a| (a.ip(), Some(a.port())))
}

fn endpoint_matches(want: &Option<(IpAddr, Option<u16>)>, ip: IpAddr, port: u16) -> bool {
    match want {
        Some((w, p)) => *w == ip && p.is_none_or(|p| p == port),
        None => false,
    }
}

pub fn selects(e: &ConnectionExpect, c: &Conn) -> bool {
    e.sni.as_ref().is_none_or(|s| c.sni.as_ref() == Some(s))
        && e.client
            .as_ref()
            .is_none_or(|s| endpoint_matches(&parse_endpoint(s), c.client_ip, c.client_port))
        && e.server
            .as_ref()
            .is_none_or(|s| endpoint_matches(&parse_endpoint(s), c.server_ip, c.server_port))
}

/// How a selector reads in a difference: `connection sni="a" client=10.0.0.1`.
pub fn selector(e: &ConnectionExpect) -> String {
    let mut out = String::from("connection");
    for (k, v) in [
        ("sni", &e.sni),
        ("client", &e.client),
        ("server", &e.server),
    ] {
        if let Some(v) = v {
            out.push_str(&format!(" {k}={v:?}"));
        }
    }
    out
}

fn connection_differences(e: &ConnectionExpect, got: &Observed, out: &mut Vec<Difference>) {
    let what = selector(e);
    for (field, value) in [("client", &e.client), ("server", &e.server)] {
        if let Some(v) = value
            && parse_endpoint(v).is_none()
        {
            out.push(Difference::new(
                what.clone(),
                format!("{field} as IP or IP:PORT"),
                format!("{v:?}, which is neither"),
            ));
            return;
        }
    }
    let picked: Vec<&Conn> = got.connections.iter().filter(|c| selects(e, c)).collect();
    match e.count {
        Some(n) if picked.len() as u64 != n => out.push(
            Difference::new(
                what.clone(),
                format!("{n} connections"),
                format!("{}", picked.len()),
            )
            .behind(picked.iter().copied()),
        ),
        None if picked.is_empty() => out.push(Difference::new(
            what.clone(),
            "at least 1 connection".into(),
            "none".into(),
        )),
        _ => {}
    }
    if let Some(want) = &e.outcome {
        let wrong: Vec<&Conn> = picked
            .iter()
            .copied()
            .filter(|c| &c.outcome != want)
            .collect();
        if !wrong.is_empty() {
            let mut kinds: BTreeSet<&str> = BTreeSet::new();
            kinds.extend(wrong.iter().map(|c| c.outcome.as_str()));
            out.push(
                Difference::new(
                    format!("{what} outcome"),
                    want.clone(),
                    kinds.into_iter().collect::<Vec<_>>().join(", "),
                )
                .behind(wrong.into_iter()),
            );
        }
    }
}

fn matching<'a>(
    got: &'a Observed,
    name: &'a str,
    scope: &'a Option<String>,
    ja4: &'a Option<String>,
) -> impl Iterator<Item = &'a RuleSeen> {
    got.rules.iter().filter(move |r| r.is(name, scope, ja4))
}

fn rule_label(name: &str, scope: &Option<String>, ja4: &Option<String>) -> String {
    let mut out = format!("rule {name:?}");
    match (scope, ja4) {
        (Some(s), Some(j)) => out.push_str(&format!(" ({s} {j:?})")),
        (Some(s), None) => out.push_str(&format!(" ({s})")),
        (None, Some(j)) => out.push_str(&format!(" (ja4 {j:?})")),
        (None, None) => {}
    }
    out
}

/// How a difference names a rule's client addresses.
fn addresses(ips: &[std::net::IpAddr]) -> String {
    if ips.is_empty() {
        return "not narrowed to client addresses".into();
    }
    let list: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
    format!("for client addresses {}", list.join(", "))
}

/// The connections a rule's name stands for: the host itself, or names under the suffix.
fn connections_of<'a>(got: &'a Observed, name: &'a str) -> impl Iterator<Item = &'a Conn> {
    let suffix = name.strip_prefix("*.");
    got.connections.iter().filter(move |c| {
        c.sni.as_deref().is_some_and(|s| match suffix {
            Some(suf) => s == suf || s.ends_with(&format!(".{suf}")),
            None => s == name,
        })
    })
}

fn rule_differences(e: &RuleExpect, got: &Observed, out: &mut Vec<Difference>) {
    let label = rule_label(&e.name, &e.scope, &e.ja4);
    let mut expected = match e.confidence {
        Some([lo, hi]) => format!("emitted, confidence {lo:.2}..{hi:.2}"),
        None => "emitted".to_string(),
    };
    if let Some(ips) = &e.client_ips {
        expected.push_str(&format!(", {}", addresses(ips)));
    }
    let seen: Vec<&RuleSeen> = matching(got, &e.name, &e.scope, &e.ja4).collect();
    let emitted: Vec<&&RuleSeen> = seen.iter().filter(|r| r.emitted).collect();
    let in_range = |r: &RuleSeen| {
        e.confidence
            .is_none_or(|[lo, hi]| lo <= r.confidence && r.confidence <= hi)
            && r.narrowed_as(&e.client_ips)
    };
    if emitted.iter().any(|r| in_range(r)) {
        return;
    }
    let got_text = match (emitted.first(), seen.first()) {
        (Some(r), _) => format!(
            "emitted at {:.2}, {} ({})",
            r.confidence,
            addresses(&r.client_ips),
            r.reason
        ),
        (None, Some(r)) => format!(
            "missing: a candidate at {:.2}, below the threshold {:.2} ({})",
            r.confidence, got.min_confidence, r.reason
        ),
        (None, None) => "missing: no such rule".to_string(),
    };
    out.push(Difference::new(label, expected, got_text).behind(connections_of(got, &e.name)));
}

fn no_rule_differences(e: &NoRule, got: &Observed, out: &mut Vec<Difference>) {
    if let Some(r) = matching(got, &e.name, &e.scope, &e.ja4).find(|r| r.emitted) {
        out.push(
            Difference::new(
                rule_label(&e.name, &e.scope, &e.ja4),
                "not emitted".into(),
                format!("emitted at {:.2} ({})", r.confidence, r.reason),
            )
            .behind(connections_of(got, &e.name)),
        );
    }
}

fn set_difference(label: &str, want: &[String], got: &[String], out: &mut Vec<Difference>) {
    let w: BTreeSet<&String> = want.iter().collect();
    let g: BTreeSet<&String> = got.iter().collect();
    if w != g {
        let missing: Vec<&&String> = w.difference(&g).collect();
        let extra: Vec<&&String> = g.difference(&w).collect();
        out.push(Difference::new(
            label.to_string(),
            format!("{want:?}"),
            format!("{got:?} (missing {missing:?}, unexpected {extra:?})"),
        ));
    }
}

/// Every expectation of `case` that `got` does not meet.
pub fn compare(case: &Case, got: &Observed) -> Vec<Difference> {
    let mut out = Vec::new();
    if let Some(want) = &case.outcomes {
        let names: BTreeSet<&String> = want.keys().chain(got.outcomes.keys()).collect();
        for name in names {
            let (w, g) = (
                want.get(name).copied().unwrap_or(0),
                got.outcomes.get(name).copied().unwrap_or(0),
            );
            if w != g {
                let behind = got.connections.iter().filter(|c| &c.outcome == name);
                out.push(
                    Difference::new(format!("outcomes.{name}"), w.to_string(), g.to_string())
                        .behind(behind),
                );
            }
        }
    }
    for e in &case.connections {
        connection_differences(e, got, &mut out);
    }
    for e in &case.rules {
        rule_differences(e, got, &mut out);
    }
    for e in &case.no_rules {
        no_rule_differences(e, got, &mut out);
    }
    if let Some(f) = &case.findings {
        if let Some(want) = &f.interception_ca {
            set_difference(
                "findings.interception_ca",
                want,
                &got.interception_ca,
                &mut out,
            );
        }
        if let Some(want) = &f.missing_ca_clients {
            set_difference(
                "findings.missing_ca_clients",
                want,
                &got.missing_ca_clients,
                &mut out,
            );
        }
    }
    if let Some(allowed) = &case.anomalies_allowed {
        for (name, n) in &got.anomalies {
            if !allowed.contains(name) {
                out.push(Difference::new(
                    format!("anomaly {name:?}"),
                    "not allowed (anomalies_allowed)".into(),
                    format!("{n} connections"),
                ));
            }
        }
    }
    out
}

/// A connection on one line, every name quoted and escaped (a name cannot start a new line or
/// pass for another field).
pub fn conn_line(c: &Conn) -> String {
    let sni = c
        .sni
        .as_deref()
        .map_or_else(|| "-".to_string(), |s| format!("{s:?}"));
    format!(
        "{} -> {} sni={sni} {}",
        SocketAddr::new(c.client_ip, c.client_port),
        SocketAddr::new(c.server_ip, c.server_port),
        c.outcome
    )
}

/// The readable diff of one case: one block per difference.
pub fn render(diffs: &[Difference]) -> String {
    let mut out = String::new();
    for d in diffs {
        out.push_str(&format!(
            "  {}\n    expected: {}\n    got:      {}\n",
            escape_line(&d.expectation),
            escape_line(&d.expected),
            escape_line(&d.got)
        ));
        for c in &d.connections {
            out.push_str(&format!("      {}\n", conn_line(c)));
        }
        if d.connections_total > d.connections.len() {
            out.push_str(&format!(
                "      ... and {} more\n",
                d.connections_total - d.connections.len()
            ));
        }
    }
    out
}

/// Control characters shown as escapes: a difference stays on its own lines.
pub fn escape_line(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        s.to_string()
    }
}
