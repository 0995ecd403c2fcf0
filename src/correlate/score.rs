//! Evidence and confidence: the scoring model of the README ("Scoring"), and the rule objects
//! it produces (`pinwatch.rule/1`, documented in `schema/rule.schema.json`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::OnceLock;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Path, registrable};
use crate::output::community_id::{IPPROTO_TCP, community_id_v1};
use crate::output::counted;

/// Failures a rule names by Community ID: enough to find them, few enough to keep rules small.
pub const SAMPLE_COMMUNITY_IDS: usize = 5;
use crate::output::time::rfc3339_micros;

pub const RULE_SCHEMA: &str = "pinwatch.rule/1";
/// Default emission threshold (`--min-confidence`).
pub const DEFAULT_MIN_CONFIDENCE: f64 = 0.6;
/// A close within this many milliseconds of the server's last handshake packet is an abort;
/// later closes are idle closes (preconnects, pools).
pub const FAST_MS: f64 = 1000.0;
/// Evidence scale: confidence = 1 - exp(-weighted failures / SCALE).
const SCALE: f64 = 1.2;
const CAP_SINGLE_HOST: f64 = 0.5;
const CAP_NO_NAME: f64 = 0.4;
const CAP_RECENT: f64 = 0.5;
/// A name whose first failure falls in the last RECENT_NS of an observation window at least
/// twice as long is "brand new".
const RECENT_NS: i64 = 10 * 60 * 1_000_000_000;
const CAP_BURST: f64 = 0.5;
/// A burst for a fresh name: the name first appeared after at least BURST_NS of observation,
/// and every failure came within BURST_NS, from hosts of one /24 (IPv6: one /64). That is what
/// a few machines of one subnet faking aborts to win a bypass look like. A real pinned app
/// keeps failing, later or on other subnets, and so lifts the cap; without that much history
/// (a lab capture) nothing tells the two apart and the cap does not apply.
const BURST_NS: i64 = 10 * 60 * 1_000_000_000;

/// How much one failed connection says about pinning.
pub fn failure_weight(outcome: &str, detail: Option<&str>, delay_ms: Option<f64>) -> f64 {
    let fast = delay_ms.is_none_or(|d| d <= FAST_MS);
    match outcome {
        "client_alert" if !fast => 0.2,
        "client_alert" => match detail {
            Some(
                "unknown_ca"
                | "bad_certificate"
                | "certificate_unknown"
                | "unsupported_certificate"
                | "access_denied"
                | "certificate_expired"
                | "certificate_revoked",
            ) => 1.0,
            Some("encrypted") => 0.8,
            _ => 0.3,
        },
        "client_closed_after_handshake" if fast => 0.6,
        "client_closed_in_handshake" if fast => 0.45,
        "client_closed_in_handshake" => 0.1,
        "incomplete" if detail == Some("client_silent_after_server_flight") => 0.2,
        _ => 0.0,
    }
}

/// What the rule matches. Exactly one of `host` and `suffix`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ja4: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct DelayStats {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub max: Option<f64>,
    /// Mergeable histogram: counts of delays <= 1, 10, 100, 1000, 10000 ms and above.
    pub buckets_ms: [u64; 6],
}

const BUCKET_EDGES: [f64; 5] = [1.0, 10.0, 100.0, 1000.0, 10000.0];

impl DelayStats {
    fn from(delays: &mut [f64]) -> Self {
        delays.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            delays
                .get(((delays.len() as f64 - 1.0) * q).round() as usize)
                .copied()
        };
        let mut buckets_ms = [0u64; 6];
        for d in delays.iter() {
            buckets_ms[BUCKET_EDGES.iter().position(|e| d <= e).unwrap_or(5)] += 1;
        }
        DelayStats {
            count: delays.len() as u64,
            p50: pick(0.5),
            p90: pick(0.9),
            max: delays.last().copied(),
            buckets_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Evidence {
    pub connections: u64,
    pub failures: u64,
    pub failure_kinds: BTreeMap<String, u64>,
    pub alerts: BTreeMap<String, u64>,
    pub successes_same_fingerprint: u64,
    pub successes_other_fingerprints: u64,
    pub successes_outside_proxy: u64,
    /// Closes after an idle second or more: preconnects, not counted as failures.
    pub idle_closes: u64,
    pub client_hosts: u64,
    pub client_fingerprints: u64,
    pub abort_delay_ms: DelayStats,
    pub proxy_issuers: Vec<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// The proxy's own upstream connection showed this name's origin.
    pub origin_seen_upstream: bool,
    /// Community IDs of the first failures counted (at most [`SAMPLE_COMMUNITY_IDS`]): the
    /// connections to look up in Zeek, Suricata or Arkime.
    pub sample_community_ids: Vec<String>,
    #[serde(skip)]
    weight: f64,
    #[serde(skip)]
    delays: Vec<f64>,
    #[serde(skip)]
    hosts: BTreeSet<IpAddr>,
    #[serde(skip)]
    first_ns: i64,
    /// Time of the last failure.
    #[serde(skip)]
    last_ns: i64,
    #[serde(skip)]
    ip_literal: bool,
    /// Start times of the first and last connection counted; `first_seen` and `last_seen`
    /// are written from them when the rule is built, so observations need not keep a string.
    #[serde(skip)]
    seen_ns: Option<(i64, i64)>,
}

impl Evidence {
    fn saw(&mut self, from_ns: i64, to_ns: i64) {
        self.seen_ns = Some(match self.seen_ns {
            None => (from_ns, to_ns),
            Some((a, b)) => (a.min(from_ns), b.max(to_ns)),
        });
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub schema: &'static str,
    pub id: String,
    pub action: &'static str,
    #[serde(rename = "match")]
    pub matcher: RuleMatch,
    pub confidence: f64,
    pub reason: String,
    pub evidence: Evidence,
    pub app: Option<String>,
    pub registrable_domain: String,
    pub ttl_s: u64,
    pub capped_by: Vec<&'static str>,
}

/// A connection as scoring sees it.
pub struct ConnView<'a> {
    pub ts_ns: i64,
    pub ja4: &'a str,
    pub client_ip: IpAddr,
    /// Client and server endpoints, for the rule's sample Community IDs.
    pub flow: ((IpAddr, u16), (IpAddr, u16)),
    pub ip_literal: bool,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
    pub delay_ms: Option<f64>,
}

pub struct NameFacts<'a> {
    pub name: &'a str,
    /// The name's first connection, from any client.
    pub first_seen_ns: i64,
    pub origin_seen_upstream: bool,
    pub capture_span_ns: i64,
    pub capture_end_ns: i64,
    pub proxy_issuers: &'a [String],
}

fn add(ev: &mut Evidence, c: &ConnView<'_>, path: Path) {
    ev.connections += 1;
    ev.saw(c.ts_ns, c.ts_ns);
    let through_proxy = matches!(path, Path::Proxy | Path::ProxyInferred);
    if c.outcome == "established" {
        match path {
            Path::Origin => ev.successes_outside_proxy += 1,
            _ if through_proxy => ev.successes_same_fingerprint += 1,
            _ => {}
        }
        return;
    }
    if !through_proxy {
        return;
    }
    if c.outcome == "client_closed_after_handshake" && c.delay_ms.is_some_and(|d| d > FAST_MS) {
        ev.idle_closes += 1;
    }
    let w = failure_weight(c.outcome, c.detail, c.delay_ms);
    if w <= 0.0 {
        return;
    }
    ev.failures += 1;
    ev.weight += w;
    if ev.first_ns == 0 || c.ts_ns < ev.first_ns {
        ev.first_ns = c.ts_ns;
    }
    ev.last_ns = ev.last_ns.max(c.ts_ns);
    count(&mut ev.failure_kinds, c.outcome);
    if c.outcome == "client_alert"
        && let Some(d) = c.detail
    {
        count(&mut ev.alerts, d);
    }
    if let Some(d) = c.delay_ms {
        ev.delays.push(d);
    }
    ev.hosts.insert(c.client_ip);
    ev.ip_literal |= c.ip_literal;
    if ev.sample_community_ids.len() < SAMPLE_COMMUNITY_IDS {
        let (client, server) = c.flow;
        ev.sample_community_ids
            .push(community_id_v1(0, IPPROTO_TCP, client, server));
    }
}

/// One more `key` in `counts`; a key's string is made once, not per connection.
fn count(counts: &mut BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_string(), 1);
        }
    }
}

/// The rules one name deserves: one per failing fingerprint when other software succeeds on
/// the name through the proxy, else one for the name.
pub fn rules_for_name<'a>(
    facts: &NameFacts<'_>,
    conns: impl Iterator<Item = (ConnView<'a>, Path)>,
) -> Vec<Rule> {
    let mut per_ja4: BTreeMap<&str, Evidence> = BTreeMap::new();
    for (c, path) in conns {
        add(per_ja4.entry(c.ja4).or_default(), &c, path);
    }
    let succeeding: BTreeSet<&str> = per_ja4
        .iter()
        .filter(|(_, e)| e.successes_same_fingerprint > 0)
        .map(|(k, _)| *k)
        .collect();
    let failing: Vec<&str> = per_ja4
        .iter()
        .filter(|(_, e)| e.failures > 0)
        .map(|(k, _)| *k)
        .collect();
    if failing.is_empty() {
        return Vec::new();
    }
    let other_software_works = failing.iter().any(|j| succeeding.iter().any(|s| s != j));
    let mut rules = Vec::new();
    if other_software_works {
        for ja4 in failing {
            let mut ev = per_ja4[ja4].clone();
            ev.successes_other_fingerprints = per_ja4
                .iter()
                .filter(|(k, _)| **k != ja4)
                .map(|(_, e)| e.successes_same_fingerprint)
                .sum();
            ev.client_fingerprints = 1;
            rules.push(finish(facts, ev, Some(ja4.to_string())));
        }
    } else {
        let mut ev = Evidence::default();
        for e in per_ja4.values() {
            merge(&mut ev, e);
        }
        ev.client_fingerprints = per_ja4.values().filter(|e| e.failures > 0).count() as u64;
        rules.push(finish(facts, ev, None));
    }
    rules
}

fn merge(into: &mut Evidence, e: &Evidence) {
    into.connections += e.connections;
    into.failures += e.failures;
    for (k, v) in &e.failure_kinds {
        *into.failure_kinds.entry(k.clone()).or_default() += v;
    }
    for (k, v) in &e.alerts {
        *into.alerts.entry(k.clone()).or_default() += v;
    }
    into.successes_same_fingerprint += e.successes_same_fingerprint;
    into.successes_other_fingerprints += e.successes_other_fingerprints;
    into.successes_outside_proxy += e.successes_outside_proxy;
    into.idle_closes += e.idle_closes;
    into.weight += e.weight;
    into.delays.extend_from_slice(&e.delays);
    into.hosts.extend(e.hosts.iter().copied());
    into.ip_literal |= e.ip_literal;
    let room = SAMPLE_COMMUNITY_IDS.saturating_sub(into.sample_community_ids.len());
    into.sample_community_ids
        .extend(e.sample_community_ids.iter().take(room).cloned());
    if into.first_ns == 0 || (e.first_ns != 0 && e.first_ns < into.first_ns) {
        into.first_ns = e.first_ns;
    }
    into.last_ns = into.last_ns.max(e.last_ns);
    if let Some((from, to)) = e.seen_ns {
        into.saw(from, to);
    }
}

/// Scores the evidence and builds the rule.
fn finish(facts: &NameFacts<'_>, mut ev: Evidence, ja4: Option<String>) -> Rule {
    ev.client_hosts = ev.hosts.len() as u64;
    ev.abort_delay_ms = DelayStats::from(&mut ev.delays);
    ev.proxy_issuers = facts.proxy_issuers.to_vec();
    ev.origin_seen_upstream = facts.origin_seen_upstream;
    let (confidence, reason, capped_by) = score(facts, &ev);
    let matcher = RuleMatch {
        host: Some(facts.name.to_string()),
        suffix: None,
        client_ja4: ja4,
    };
    build_rule(matcher, confidence, reason, ev, capped_by)
}

fn build_rule(
    matcher: RuleMatch,
    confidence: f64,
    reason: String,
    mut evidence: Evidence,
    capped_by: Vec<&'static str>,
) -> Rule {
    if let Some((from, to)) = evidence.seen_ns {
        evidence.first_seen = rfc3339_micros(from);
        evidence.last_seen = rfc3339_micros(to);
    }
    let name = matcher
        .host
        .as_deref()
        .or(matcher.suffix.as_deref())
        .unwrap_or_default();
    let key = format!(
        "bypass_inspection|host={}|suffix={}|ja4={}",
        matcher.host.as_deref().unwrap_or(""),
        matcher.suffix.as_deref().unwrap_or(""),
        matcher.client_ja4.as_deref().unwrap_or("")
    );
    Rule {
        schema: RULE_SCHEMA,
        id: format!("pw-{}", &hex::encode(Sha256::digest(key.as_bytes()))[..16]),
        action: "bypass_inspection",
        app: catalogue_app(name),
        registrable_domain: registrable(name),
        ttl_s: if confidence >= 0.9 {
            7 * 86_400
        } else {
            86_400
        },
        matcher,
        confidence: (confidence * 1000.0).round() / 1000.0,
        reason,
        evidence,
        capped_by,
    }
}

/// The scoring model (README, "Scoring").
fn score(facts: &NameFacts<'_>, ev: &Evidence) -> (f64, String, Vec<&'static str>) {
    let mut conf = 1.0 - (-ev.weight / SCALE).exp();
    let mut why = vec![describe_failures(ev)];
    let fails = ev.failures as f64;
    if ev.successes_same_fingerprint > 0 {
        let ratio =
            ev.successes_same_fingerprint as f64 / (ev.successes_same_fingerprint as f64 + fails);
        conf *= (1.0 - ratio).powi(2);
        why.push(format!(
            "but also succeeded through the proxy {}",
            counted(ev.successes_same_fingerprint, "time", "times")
        ));
    } else {
        why.push("never succeeded through the proxy".into());
    }
    if ev.successes_outside_proxy > 0 {
        conf += (1.0 - conf) * 0.5;
        why.push(format!(
            "succeeds without the proxy ({})",
            counted(ev.successes_outside_proxy, "connection", "connections")
        ));
    }
    if ev.successes_other_fingerprints > 0 {
        why.push(format!(
            "other client software succeeds through the proxy ({})",
            ev.successes_other_fingerprints
        ));
    }
    if let Some(app) = catalogue_app(facts.name) {
        conf += (1.0 - conf) * 0.1;
        why.push(format!("listed by vendors as pinned ({app})"));
    }
    let mut capped = Vec::new();
    let mut cap =
        |limit: f64, name: &'static str, text: &str, conf: &mut f64, why: &mut Vec<String>| {
            if *conf > limit {
                *conf = limit;
                capped.push(name);
                why.push(format!("capped at {limit}: {text}"));
            }
        };
    if ev.client_hosts <= 1 {
        cap(
            CAP_SINGLE_HOST,
            "single_client_host",
            "evidence from one client host only",
            &mut conf,
            &mut why,
        );
    }
    if ev.ip_literal {
        cap(
            CAP_NO_NAME,
            "ip_literal_or_missing_sni",
            "no server name (IP literal or missing SNI)",
            &mut conf,
            &mut why,
        );
    }
    if facts.capture_span_ns >= 2 * RECENT_NS && ev.first_ns > facts.capture_end_ns - RECENT_NS {
        cap(
            CAP_RECENT,
            "name_first_seen_recently",
            "name first seen in the last 10 minutes",
            &mut conf,
            &mut why,
        );
    }
    let capture_start = facts.capture_end_ns - facts.capture_span_ns;
    if facts.first_seen_ns - capture_start >= BURST_NS
        && ev.last_ns - ev.first_ns <= BURST_NS
        && let Some(net) = one_subnet(&ev.hosts)
    {
        cap(
            CAP_BURST,
            "subnet_burst",
            &format!("a new name, failing only from {net} and all within 10 minutes"),
            &mut conf,
            &mut why,
        );
    }
    (conf.clamp(0.0, 1.0), why.join("; "), capped)
}

/// The /24 (IPv4) or /64 (IPv6) holding every one of the hosts, if there is one.
fn one_subnet(hosts: &BTreeSet<IpAddr>) -> Option<String> {
    let net = |ip: &IpAddr| match ip {
        IpAddr::V4(a) => IpAddr::V4((u32::from(*a) & !0xff).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(*a) & !u128::from(u64::MAX)).into()),
    };
    let first = net(hosts.first()?);
    if !hosts.iter().all(|h| net(h) == first) {
        return None;
    }
    Some(match first {
        IpAddr::V4(_) => format!("{first}/24"),
        IpAddr::V6(_) => format!("{first}/64"),
    })
}

fn describe_failures(ev: &Evidence) -> String {
    let kinds: Vec<String> = ev
        .failure_kinds
        .iter()
        .map(|(k, n)| match k.as_str() {
            "client_alert" => {
                let alerts: Vec<String> =
                    ev.alerts.iter().map(|(a, n)| format!("{n} {a}")).collect();
                format!(
                    "{} ({})",
                    counted(*n, "client alert", "client alerts"),
                    alerts.join(", ")
                )
            }
            other => format!("{n} {}", other.replace('_', " ")),
        })
        .collect();
    let delay = ev.abort_delay_ms.p50.map_or(String::new(), |p| {
        format!(", median {p:.1} ms after the server's handshake")
    });
    format!(
        "{} through the proxy from {}: {}{}",
        counted(ev.failures, "failure", "failures"),
        counted(ev.client_hosts, "client host", "client hosts"),
        kinds.join(", "),
        delay
    )
}

/// Several failing hosts of one registrable domain that is not a shared platform become one
/// suffix rule, when every one of them stands on its own: uncapped and at or above the default
/// threshold (a lower `--min-confidence` must not widen scopes).
pub fn roll_up_suffixes(rules: &mut Vec<Rule>) {
    let mut by_domain: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in rules.iter().enumerate() {
        if r.matcher.client_ja4.is_none()
            && r.matcher.host.is_some()
            && r.capped_by.is_empty()
            && r.confidence >= DEFAULT_MIN_CONFIDENCE
        {
            by_domain
                .entry(r.registrable_domain.clone())
                .or_default()
                .push(i);
        }
    }
    let mut remove = BTreeSet::new();
    let mut added = Vec::new();
    for (domain, idx) in by_domain {
        if idx.len() < 2 || shared_platform(&domain) {
            continue;
        }
        let mut ev = Evidence::default();
        let mut hosts = Vec::new();
        let mut conf: f64 = 0.0;
        for &i in &idx {
            merge(&mut ev, &rules[i].evidence);
            ev.client_hosts = ev.client_hosts.max(rules[i].evidence.client_hosts);
            hosts.push(rules[i].matcher.host.clone().unwrap_or_default());
            conf = conf.max(rules[i].confidence);
            remove.insert(i);
        }
        ev.proxy_issuers = rules[idx[0]].evidence.proxy_issuers.clone();
        ev.abort_delay_ms = DelayStats::from(&mut ev.delays);
        let reason = format!(
            "{} hosts of {domain} fail the same way ({}): {}",
            hosts.len(),
            hosts.join(", "),
            rules[idx[0]].reason
        );
        let matcher = RuleMatch {
            host: None,
            suffix: Some(domain.clone()),
            client_ja4: None,
        };
        added.push(build_rule(matcher, conf, reason, ev, Vec::new()));
    }
    let mut i = 0;
    rules.retain(|_| {
        i += 1;
        !remove.contains(&(i - 1))
    });
    rules.extend(added);
}

#[derive(serde::Deserialize)]
struct Catalogue {
    apps: Vec<CatalogueApp>,
    shared_platform_domains: Vec<String>,
}

#[derive(serde::Deserialize)]
struct CatalogueApp {
    app: String,
    hosts: Vec<String>,
    suffixes: Vec<String>,
}

fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        serde_json::from_str(include_str!("../../data/known-pinning.json"))
            .expect("data/known-pinning.json is valid")
    })
}

/// The app vendors list for this name, if any.
pub fn catalogue_app(name: &str) -> Option<String> {
    catalogue()
        .apps
        .iter()
        .find(|a| {
            a.hosts.iter().any(|h| h == name)
                || a.suffixes
                    .iter()
                    .any(|s| name == s || name.ends_with(&format!(".{s}")))
        })
        .map(|a| a.app.clone())
}

/// Domains shared by many services, never bypassed by suffix.
pub fn shared_platform(domain: &str) -> bool {
    catalogue()
        .shared_platform_domains
        .iter()
        .any(|d| d == domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_order_the_failure_kinds() {
        let alert = failure_weight("client_alert", Some("unknown_ca"), Some(1.0));
        let encrypted = failure_weight("client_alert", Some("encrypted"), Some(1.0));
        let after = failure_weight("client_closed_after_handshake", Some("fin"), Some(1.0));
        let silent = failure_weight("client_closed_in_handshake", Some("fin"), Some(1.0));
        let hang = failure_weight(
            "incomplete",
            Some("client_silent_after_server_flight"),
            None,
        );
        assert!(
            alert > encrypted && encrypted > after && after > silent && silent > hang && hang > 0.0
        );
        assert_eq!(
            failure_weight("client_closed_after_handshake", Some("fin"), Some(1800.0)),
            0.0
        );
        assert_eq!(
            failure_weight("server_abort", Some("handshake_failure"), None),
            0.0
        );
    }

    #[test]
    fn one_subnet_is_a_shared_slash_24_or_slash_64() {
        let set =
            |ips: &[&str]| -> BTreeSet<IpAddr> { ips.iter().map(|i| i.parse().unwrap()).collect() };
        assert_eq!(
            one_subnet(&set(&["10.66.6.1", "10.66.6.254"])).as_deref(),
            Some("10.66.6.0/24")
        );
        assert_eq!(one_subnet(&set(&["10.66.6.1", "10.66.7.1"])), None);
        assert_eq!(
            one_subnet(&set(&["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"])).as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            one_subnet(&set(&["2001:db8:1:2::1", "2001:db8:1:3::1"])),
            None
        );
        assert_eq!(one_subnet(&set(&["10.66.6.1", "::ffff:10.66.6.2"])), None);
        assert_eq!(one_subnet(&set(&[])), None);
    }

    #[test]
    fn the_reason_counts_in_words_a_reader_expects() {
        let mut ev = Evidence {
            failures: 1,
            client_hosts: 1,
            ..Evidence::default()
        };
        ev.failure_kinds.insert("client_alert".into(), 1);
        ev.alerts.insert("bad_certificate".into(), 1);
        assert_eq!(
            describe_failures(&ev),
            "1 failure through the proxy from 1 client host: 1 client alert (1 bad_certificate)"
        );
        ev.failures = 3;
        ev.client_hosts = 2;
        ev.failure_kinds.insert("client_alert".into(), 2);
        ev.failure_kinds
            .insert("client_closed_after_handshake".into(), 1);
        ev.alerts.insert("bad_certificate".into(), 2);
        assert_eq!(
            describe_failures(&ev),
            "3 failures through the proxy from 2 client hosts: 2 client alerts (2 bad_certificate), \
             1 client closed after handshake"
        );
    }

    #[test]
    fn catalogue_names_apps_and_platforms() {
        assert_eq!(
            catalogue_app("p24-keyvalueservice.icloud.com").as_deref(),
            Some("Apple iMessage")
        );
        assert!(catalogue_app("www.example.org").is_none());
        assert!(shared_platform("googleapis.com"));
        assert!(!shared_platform("pinnedbank.test"));
    }
}
