//! The page as data: what each section shows, worked out from the rules, the collected
//! connections and the findings. The template only lays it out; every string is escaped there.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::chart::{self, Histogram, Timeline};
use super::collect::{Class, Collector, NameLog, Point, suffixes_of};
use super::input::{CaIn, CertIn, ConnIn, Findings, MissingIn, RuleIn};
use crate::export;
use crate::output::counted;
use crate::output::time::rfc3339_micros;

/// Rules drawn in full (charts, tables, export lines); the rest are listed in one table.
pub const DETAILED_RULES: usize = 100;
/// Rows of the compact rule tables.
pub const LISTED_RULES: usize = 2_000;
/// Client hosts and certificates listed per rule.
const LISTED_HOSTS: usize = 12;
const LISTED_CERTS: usize = 8;

/// What the caller knows beyond the files.
#[derive(Debug, Default)]
pub struct Context {
    pub sources: Vec<String>,
    pub min_confidence: f64,
    /// Packets read, when the report comes from a replay (files only give per-connection counts).
    pub packets_read: Option<u64>,
    /// The correlator's count, when the report comes from a replay.
    pub ordinary_cert_failures: Option<u64>,
    pub generated_at: String,
}

#[derive(Debug, Serialize)]
pub struct Page {
    pub generated_at: String,
    pub sources: Vec<String>,
    pub min_confidence: f64,
    pub summary: Summary,
    pub proxy_cas: Vec<CaIn>,
    pub missing_proxy_ca: Vec<MissingIn>,
    pub rules: Vec<RuleView>,
    pub more_rules: Vec<RuleRow>,
    pub more_rules_hidden: usize,
    pub below: Vec<RuleRow>,
    pub below_hidden: usize,
    pub noise: Noise,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub span: String,
    pub packets: String,
    pub connections: u64,
    pub outcomes: Vec<(String, u64)>,
    pub emitted: usize,
    pub below: usize,
}

#[derive(Debug, Serialize)]
pub struct Noise {
    pub idle_closes: u64,
    pub server_aborts: u64,
    pub ordinary_cert_failures: u64,
    pub ordinary_cert_estimated: bool,
    pub not_kept: u64,
}

/// One line of a compact rule table.
#[derive(Debug, Serialize)]
pub struct RuleRow {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub confidence: String,
    pub failures: u64,
    pub successes: u64,
    pub client_hosts: u64,
    pub capped: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct HostRow {
    pub ip: String,
    pub failures: u64,
    pub successes: u64,
    pub other: u64,
}

#[derive(Debug, Serialize)]
pub struct CertRow {
    pub cert: CertIn,
    pub role: &'static str,
    pub connections: u64,
    pub sha_short: String,
}

#[derive(Debug, Serialize)]
pub struct ExportLines {
    pub squid: String,
    pub mitmproxy: String,
    pub domains: String,
}

#[derive(Debug, Serialize)]
pub struct RuleView {
    pub row: RuleRow,
    pub anchor: String,
    pub reason: String,
    pub app: Option<String>,
    pub ttl: String,
    pub capped_words: Vec<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub failure_kinds: Vec<(String, u64)>,
    pub alerts: Vec<(String, u64)>,
    pub successes_same_fingerprint: u64,
    pub successes_other_fingerprints: u64,
    pub successes_outside_proxy: u64,
    pub idle_closes: u64,
    pub delay: String,
    pub proxy_issuers: Vec<String>,
    pub timeline: Timeline,
    pub histogram: Histogram,
    pub hosts: Vec<HostRow>,
    pub hosts_hidden: usize,
    pub certs: Vec<CertRow>,
    pub connections: Vec<ConnIn>,
    pub connections_total: u64,
    pub export: ExportLines,
}

/// `capped_by` codes (schema/rule.schema.json) in words.
fn capped_in_words(code: &str) -> String {
    match code {
        "single_client_host" => {
            "all the evidence comes from one client host, and one machine can fake failures".into()
        }
        "ip_literal_or_missing_sni" => {
            "there is no server name to match on (an IP literal or no SNI)".into()
        }
        "name_first_seen_recently" => {
            "the name first appeared in the last 10 minutes of a longer capture".into()
        }
        "subnet_burst" => "a name new to the capture failed only from one /24 (or /64), all within 10 minutes: what faked failures from a few machines look like".into(),
        other => format!("{other} (a reason this report does not describe yet)"),
    }
}

fn rule_name(r: &RuleIn) -> String {
    match (&r.matcher.host, &r.matcher.suffix) {
        (Some(h), _) => h.clone(),
        (None, Some(s)) => format!("*.{s}"),
        (None, None) => "(no name)".into(),
    }
}

fn scope_text(r: &RuleIn) -> String {
    let software = r
        .matcher
        .client_ja4
        .as_ref()
        .map_or("every client".into(), |j| format!("clients with JA4 {j}"));
    match &r.matcher.client_ips {
        Some(ips) => format!(
            "{software} from {}: {}",
            counted(ips.len() as u64, "address", "addresses"),
            ips.join(", ")
        ),
        None => software,
    }
}

fn row(r: &RuleIn) -> RuleRow {
    let e = &r.evidence;
    RuleRow {
        id: r.id.clone(),
        name: rule_name(r),
        scope: scope_text(r),
        confidence: format!("{:.2}", r.confidence),
        failures: e.failures,
        successes: e.successes_same_fingerprint + e.successes_outside_proxy,
        client_hosts: e.client_hosts,
        capped: r.capped_by.clone(),
    }
}

/// Names the collector kept, grouped under each rule's index.
fn names_per_rule<'a>(rules: &[&RuleIn], names: &'a HashMap<String, NameLog>) -> Vec<Vec<&'a str>> {
    let mut hosts: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut suffixes: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        if let Some(h) = &r.matcher.host {
            hosts.entry(h).or_default().push(i);
        } else if let Some(s) = &r.matcher.suffix {
            suffixes.entry(s).or_default().push(i);
        }
    }
    let mut out = vec![Vec::new(); rules.len()];
    for name in names.keys() {
        for &i in hosts.get(name.as_str()).into_iter().flatten() {
            out[i].push(name.as_str());
        }
        for s in suffixes_of(name) {
            for &i in suffixes.get(s).into_iter().flatten() {
                out[i].push(name.as_str());
            }
        }
    }
    for names in &mut out {
        names.sort_unstable();
    }
    out
}

fn export_lines(r: &RuleIn) -> ExportLines {
    let rule = export::Rule {
        id: r.id.clone(),
        host: r.matcher.host.clone(),
        suffix: r.matcher.suffix.clone(),
        client_ja4: r.matcher.client_ja4.clone(),
        client_ips: r.matcher.client_ips.clone(),
        confidence: r.confidence,
        reason: r.reason.clone(),
        line: 1,
        raw: String::new(),
    };
    let mut plan = export::plan(vec![rule], 0.0, "report");
    let squid = export::render_squid(&plan);
    let mitmproxy = export::render_mitmproxy(&plan);
    let mut domains = export::render_domains(&mut plan);
    for note in &plan.notes {
        domains.push_str(&format!("# {note}\n"));
    }
    ExportLines {
        squid,
        mitmproxy,
        domains,
    }
}

fn hosts_of(points: &[&Point]) -> (Vec<HostRow>, usize) {
    let mut by: BTreeMap<std::net::IpAddr, (u64, u64, u64)> = BTreeMap::new();
    for p in points {
        let e = by.entry(p.client).or_default();
        match p.class {
            Class::Failure => e.0 += 1,
            Class::Success => e.1 += 1,
            Class::Other => e.2 += 1,
        }
    }
    let mut rows: Vec<HostRow> = by
        .into_iter()
        .map(|(ip, (f, s, o))| HostRow {
            ip: ip.to_string(),
            failures: f,
            successes: s,
            other: o,
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.failures));
    let hidden = rows.len().saturating_sub(LISTED_HOSTS);
    rows.truncate(LISTED_HOSTS);
    (rows, hidden)
}

fn certs_of(rows: &[&ConnIn], proxy_issuers: &[&str]) -> Vec<CertRow> {
    let mut by: BTreeMap<&CertIn, u64> = BTreeMap::new();
    for c in rows.iter().filter_map(|c| c.cert.as_ref()) {
        *by.entry(c).or_default() += 1;
    }
    let mut out: Vec<CertRow> = by
        .into_iter()
        .map(|(cert, n)| CertRow {
            role: if proxy_issuers.contains(&cert.issuer.as_str()) {
                "presented by the proxy"
            } else {
                "the origin's (not the proxy's)"
            },
            sha_short: chart::shorten(&cert.sha256, 17),
            cert: cert.clone(),
            connections: n,
        })
        .collect();
    out.sort_by(|a, b| a.role.cmp(b.role).then(b.connections.cmp(&a.connections)));
    out.truncate(LISTED_CERTS);
    out
}

fn delay_words(r: &RuleIn) -> String {
    let d = &r.evidence.abort_delay_ms;
    match (d.p50, d.p90, d.max) {
        (Some(p50), Some(p90), Some(max)) => format!(
            "{}: median {p50:.1} ms, 90th percentile {p90:.1} ms, longest {max:.1} ms",
            counted(d.count, "abort", "aborts")
        ),
        _ => "no abort delays measured".into(),
    }
}

fn detailed(r: &RuleIn, index: usize, names: &[&str], c: &Collector, cas: &[&str]) -> RuleView {
    let ja4 = r.matcher.client_ja4.as_deref();
    let ips = r.matcher.client_ips.as_deref();
    let from = |ip: Option<std::net::IpAddr>| {
        ips.is_none_or(|ips| ip.is_some_and(|ip| export::address_in(ips, ip)))
    };
    let wanted = |j: Option<&str>| ja4.is_none() || ja4 == j;
    let logs: Vec<&NameLog> = names.iter().filter_map(|n| c.names.get(*n)).collect();
    let points: Vec<&Point> = logs
        .iter()
        .flat_map(|l| &l.points)
        .filter(|p| wanted(Some(&p.ja4)) && from(Some(p.client)))
        .collect();
    let mut rows: Vec<&ConnIn> = logs
        .iter()
        .flat_map(|l| &l.rows)
        .filter(|c| wanted(c.ja4.as_deref()) && from(c.client_ip.parse().ok()))
        .collect();
    rows.sort_by(|a, b| a.ts_start.cmp(&b.ts_start));
    let mut issuers: Vec<&str> = r
        .evidence
        .proxy_issuers
        .iter()
        .map(String::as_str)
        .collect();
    issuers.extend_from_slice(cas);
    let (hosts, hosts_hidden) = hosts_of(&points);
    let e = &r.evidence;
    RuleView {
        row: row(r),
        anchor: format!("rule-{index}"),
        reason: r.reason.clone(),
        app: r.app.clone(),
        ttl: format!("{:.1} days", r.ttl_s as f64 / 86_400.0),
        capped_words: r.capped_by.iter().map(|c| capped_in_words(c)).collect(),
        first_seen: e.first_seen.clone(),
        last_seen: e.last_seen.clone(),
        failure_kinds: e
            .failure_kinds
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        alerts: e.alerts.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        successes_same_fingerprint: e.successes_same_fingerprint,
        successes_other_fingerprints: e.successes_other_fingerprints,
        successes_outside_proxy: e.successes_outside_proxy,
        idle_closes: e.idle_closes,
        delay: delay_words(r),
        proxy_issuers: e.proxy_issuers.clone(),
        timeline: chart::timeline(&points),
        histogram: chart::delay_histogram(&points),
        hosts,
        hosts_hidden,
        certs: certs_of(&rows, &issuers),
        connections_total: logs.iter().map(|l| l.seen).sum(),
        connections: rows.into_iter().cloned().collect(),
        export: export_lines(r),
    }
}

fn span(c: &Collector) -> String {
    match (c.totals.first_ns, c.totals.last_ns) {
        (Some(a), Some(b)) => {
            let secs = b.saturating_sub(a) as f64 / 1e9;
            format!(
                "{} to {} ({secs:.1} s)",
                rfc3339_micros(a),
                rfc3339_micros(b)
            )
        }
        _ => "no timestamps".into(),
    }
}

pub fn build(mut rules: Vec<RuleIn>, c: &Collector, findings: Findings, ctx: Context) -> Page {
    rules.retain(|r| r.confidence.is_finite());
    rules.sort_by(|a, b| b.confidence.total_cmp(&a.confidence).then(a.id.cmp(&b.id)));
    let (above, below): (Vec<&RuleIn>, Vec<&RuleIn>) = rules
        .iter()
        .filter(|r| r.evidence.failures > 0 || r.confidence >= ctx.min_confidence)
        .partition(|r| r.confidence >= ctx.min_confidence);
    let shown = &above[..above.len().min(DETAILED_RULES)];
    let per_rule = names_per_rule(shown, &c.names);
    let cas: Vec<&str> = findings
        .proxy_cas
        .iter()
        .map(|c| c.issuer.as_str())
        .collect();
    let details = shown
        .iter()
        .zip(&per_rule)
        .enumerate()
        .map(|(i, (r, names))| detailed(r, i, names, c, &cas))
        .collect();
    let listed = |rs: &[&RuleIn]| -> (Vec<RuleRow>, usize) {
        let rows = rs.iter().take(LISTED_RULES).map(|r| row(r)).collect();
        (rows, rs.len().saturating_sub(LISTED_RULES))
    };
    let (more_rules, more_rules_hidden) = listed(&above[shown.len()..]);
    let (below_rows, below_hidden) = listed(&below);
    let t = &c.totals;
    let estimated: u64 = t
        .failures_by_issuer
        .iter()
        .filter(|(issuer, _)| !cas.contains(&issuer.as_str()))
        .map(|(_, n)| n)
        .sum();
    Page {
        generated_at: ctx.generated_at,
        sources: ctx.sources,
        min_confidence: ctx.min_confidence,
        summary: Summary {
            span: span(c),
            packets: match ctx.packets_read {
                Some(n) => counted(n, "packet", "packets"),
                None => format!(
                    "{} in TCP connections",
                    counted(t.packets, "packet", "packets")
                ),
            },
            connections: t.connections,
            outcomes: t.outcomes.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            emitted: above.len(),
            below: below.len(),
        },
        proxy_cas: findings.proxy_cas,
        missing_proxy_ca: findings.missing_proxy_ca,
        rules: details,
        more_rules,
        more_rules_hidden,
        below: below_rows,
        below_hidden,
        noise: Noise {
            idle_closes: t.idle_closes,
            server_aborts: t.server_aborts,
            ordinary_cert_failures: ctx.ordinary_cert_failures.unwrap_or(estimated),
            ordinary_cert_estimated: ctx.ordinary_cert_failures.is_none(),
            not_kept: t.not_kept,
        },
    }
}
