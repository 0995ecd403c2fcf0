//! Evidence and confidence: the scoring model of the README ("Scoring"), and the rule objects
//! it produces (`pinwatch.rule/2`, documented in `schema/rule.schema.json`). Which rules a name
//! gets, and with which scope, is `scope`'s work; this module weighs and scores.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::OnceLock;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::observation::FailureSignal;
use super::{Path, registrable};
use crate::classify::Outcome;
use crate::output::community_id::{IPPROTO_TCP, community_id_v1};
use crate::output::counted;
use crate::output::time::rfc3339_micros;

/// Failures a rule names by Community ID: enough to find them, few enough to keep rules small.
pub const SAMPLE_COMMUNITY_IDS: usize = 5;

pub const RULE_SCHEMA: &str = "pinwatch.rule/2";
/// Default emission threshold (`--min-confidence`).
pub const DEFAULT_MIN_CONFIDENCE: f64 = 0.6;
/// A client that closes within this many milliseconds of receiving the server's last
/// handshake packet aborts; later closes are idle closes (preconnects, pools). Measured net of
/// the client's round trip at the sensor, so the distance between sensor and client does not
/// move a close from one side to the other.
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

/// How much one failed connection says about pinning. `delay_ms` is the client's own delay
/// (the delay at the sensor less its round trip), so a far client's abort is as fast as a
/// near one's. A delay that could not be measured is neither fast nor slow: the failure weighs half what a measured fast one does, because an
/// idle close and a pinning abort look the same without it.
pub fn failure_weight(outcome: Outcome, signal: FailureSignal, delay_ms: Option<f64>) -> f64 {
    let speed = match delay_ms {
        Some(d) if d <= FAST_MS => 1.0,
        Some(_) => 0.0,
        None => 0.5,
    };
    match outcome {
        Outcome::ClientAlert if speed == 0.0 => 0.2,
        Outcome::ClientAlert => {
            speed
                * match signal {
                    FailureSignal::Alert(d) if d.rejects_certificate() => 1.0,
                    FailureSignal::EncryptedAlert => 0.8,
                    _ => 0.3,
                }
        }
        Outcome::ClientClosedAfterHandshake => speed * 0.6,
        Outcome::ClientClosedInHandshake if speed == 0.0 => 0.1,
        Outcome::ClientClosedInHandshake => speed * 0.45,
        Outcome::Incomplete if signal == FailureSignal::SilentAfterServerFlight => 0.2,
        _ => 0.0,
    }
}

/// [`failure_weight`] of a record read back from JSON (its `outcome` and `outcome_detail`
/// words); 0 for an outcome this build does not know.
pub fn record_failure_weight(outcome: &str, detail: Option<&str>, delay_ms: Option<f64>) -> f64 {
    Outcome::ALL
        .into_iter()
        .find(|o| o.as_str() == outcome)
        .map_or(0.0, |o| {
            failure_weight(o, FailureSignal::of_record(o, detail), delay_ms)
        })
}

/// What the rule matches. Exactly one of `host` and `suffix`; `client_ja4` and `client_ips`
/// only ever narrow it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ja4: Option<String>,
    /// Client addresses, in address order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ips: Option<Vec<IpAddr>>,
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

/// The name-level figures a rule's confidence is computed from: every failing fingerprint of
/// the name, from every client host that fails with it more often than it succeeds.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct NameEvidence {
    pub failures: u64,
    pub client_hosts: u64,
    pub client_fingerprints: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Evidence {
    pub connections: u64,
    pub failures: u64,
    pub failure_kinds: BTreeMap<String, u64>,
    pub alerts: BTreeMap<String, u64>,
    pub successes_same_fingerprint: u64,
    pub successes_other_fingerprints: u64,
    /// Successes through the proxy by the rule's fingerprint from hosts outside `client_ips`.
    pub successes_outside_scope: u64,
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
    pub name: NameEvidence,
    /// Community IDs of the first failures counted (at most [`SAMPLE_COMMUNITY_IDS`]): the
    /// connections to look up in Zeek, Suricata or Arkime.
    pub sample_community_ids: Vec<String>,
    /// Failure weight, after the discount for successes of the same software on the same host.
    #[serde(skip)]
    pub(super) weight: f64,
    #[serde(skip)]
    delays: Vec<f64>,
    /// Hosts with a failure counted here.
    #[serde(skip)]
    pub(super) hosts: BTreeSet<IpAddr>,
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

    /// Works out the figures written from the kept details: hosts and delays.
    pub(super) fn settle(&mut self) {
        self.client_hosts = self.hosts.len() as u64;
        self.abort_delay_ms = DelayStats::from(&mut self.delays);
    }

    /// Takes one connection of the rule's traffic.
    pub(super) fn add(&mut self, c: &ConnView<'_>, path: Path) {
        self.connections += 1;
        self.saw(c.ts_ns, c.ts_ns);
        let through_proxy = matches!(path, Path::Proxy | Path::ProxyInferred);
        if c.outcome == Outcome::Established {
            match path {
                Path::Origin => self.successes_outside_proxy += 1,
                _ if through_proxy => self.successes_same_fingerprint += 1,
                _ => {}
            }
            return;
        }
        if !through_proxy {
            return;
        }
        if c.outcome == Outcome::ClientClosedAfterHandshake
            && c.client_delay_ms.is_some_and(|d| d > FAST_MS)
        {
            self.idle_closes += 1;
        }
        let w = failure_weight(c.outcome, c.signal, c.client_delay_ms);
        if w <= 0.0 {
            return;
        }
        self.failures += 1;
        self.weight += w;
        if self.first_ns == 0 || c.ts_ns < self.first_ns {
            self.first_ns = c.ts_ns;
        }
        self.last_ns = self.last_ns.max(c.ts_ns);
        count(&mut self.failure_kinds, c.outcome.as_str());
        if c.outcome == Outcome::ClientAlert
            && let Some(d) = c.signal.alert_name()
        {
            count(&mut self.alerts, &d);
        }
        if let Some(d) = c.delay_ms {
            self.delays.push(d);
        }
        self.hosts.insert(c.client_ip);
        self.ip_literal |= c.ip_literal;
        if self.sample_community_ids.len() < SAMPLE_COMMUNITY_IDS {
            let (client, server) = c.flow;
            self.sample_community_ids
                .push(community_id_v1(0, IPPROTO_TCP, client, server));
        }
    }

    /// Discounts the failures of one (fingerprint, host) by the successes beside them: the same
    /// software on the same host succeeding through the proxy says it does not pin.
    pub(super) fn discount_own_successes(&mut self) {
        let (s, f) = (self.successes_same_fingerprint as f64, self.failures as f64);
        if s > 0.0 {
            self.weight *= (1.0 - s / (s + f)).powi(2);
        }
    }

    /// Adds another piece of evidence to this one.
    pub(super) fn merge(&mut self, e: &Evidence) {
        self.connections += e.connections;
        self.failures += e.failures;
        for (k, v) in &e.failure_kinds {
            *self.failure_kinds.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &e.alerts {
            *self.alerts.entry(k.clone()).or_default() += v;
        }
        self.successes_same_fingerprint += e.successes_same_fingerprint;
        self.successes_other_fingerprints += e.successes_other_fingerprints;
        self.successes_outside_scope += e.successes_outside_scope;
        self.successes_outside_proxy += e.successes_outside_proxy;
        self.idle_closes += e.idle_closes;
        self.weight += e.weight;
        self.delays.extend_from_slice(&e.delays);
        self.hosts.extend(e.hosts.iter().copied());
        self.ip_literal |= e.ip_literal;
        if self.first_ns == 0 || (e.first_ns != 0 && e.first_ns < self.first_ns) {
            self.first_ns = e.first_ns;
        }
        self.last_ns = self.last_ns.max(e.last_ns);
        if let Some((from, to)) = e.seen_ns {
            self.saw(from, to);
        }
        let room = SAMPLE_COMMUNITY_IDS.saturating_sub(self.sample_community_ids.len());
        self.sample_community_ids
            .extend(e.sample_community_ids.iter().take(room).cloned());
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
    pub ip_literal: bool,
    pub outcome: Outcome,
    pub signal: FailureSignal,
    /// The abort delay as seen at the sensor (what the rule's delay figures show).
    pub delay_ms: Option<f64>,
    /// The delay less the client's round trip (what fast and slow are judged on).
    pub client_delay_ms: Option<f64>,
    /// Client and server endpoints, for the rule's sample Community IDs.
    pub flow: ((IpAddr, u16), (IpAddr, u16)),
}

pub struct NameFacts<'a> {
    pub name: &'a str,
    /// The name's first connection, from any client.
    pub first_seen_ns: i64,
    pub origin_seen_upstream: bool,
    pub capture_span_ns: i64,
    pub capture_end_ns: i64,
    /// Issuers of the proxy certificates this name's clients were shown.
    pub proxy_issuers: Vec<String>,
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

/// What a rule covers, for [`scored_rule`]: its match, its own evidence, and the name-level
/// evidence its confidence comes from.
pub struct Scoped<'a> {
    pub matcher: RuleMatch,
    pub own: Evidence,
    pub pool: &'a Evidence,
    pub fingerprints_failing: u64,
}

/// Scores a rule's evidence and builds the rule.
pub fn scored_rule(facts: &NameFacts<'_>, scoped: Scoped<'_>) -> Rule {
    let Scoped {
        matcher,
        mut own,
        pool,
        fingerprints_failing,
    } = scoped;
    own.settle();
    own.proxy_issuers = facts.proxy_issuers.clone();
    own.origin_seen_upstream = facts.origin_seen_upstream;
    own.name = NameEvidence {
        failures: pool.failures,
        client_hosts: pool.hosts.len() as u64,
        client_fingerprints: fingerprints_failing,
    };
    let (confidence, reason, capped_by) = score(facts, &own, pool, &matcher);
    build_rule(matcher, confidence, reason, own, capped_by)
}

pub(super) fn build_rule(
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
    let mut key = format!(
        "bypass_inspection|host={}|suffix={}|ja4={}",
        matcher.host.as_deref().unwrap_or(""),
        matcher.suffix.as_deref().unwrap_or(""),
        matcher.client_ja4.as_deref().unwrap_or("")
    );
    // Rules without addresses keep the ids they had before `client_ips` existed.
    if let Some(ips) = &matcher.client_ips {
        let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        key.push_str(&format!("|ips={}", ips.join(",")));
    }
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

/// A scoped rule's own failures must weigh at least this much (one measured fast abort after
/// the handshake) to take the name's confidence in full; lighter ones get that share of it.
const MIN_SOFTWARE_WEIGHT: f64 = 0.6;

/// The scoring model (README, "Scoring"): confidence from the name-level `pool`, the reason
/// from the rule's `own` evidence, the caps from the pool (one host faking many fingerprints
/// is still one host).
fn score(
    facts: &NameFacts<'_>,
    own: &Evidence,
    pool: &Evidence,
    matcher: &RuleMatch,
) -> (f64, String, Vec<&'static str>) {
    let mut conf = 1.0 - (-pool.weight / SCALE).exp();
    let mut why = vec![describe_failures(own)];
    let scoped = matcher.client_ja4.is_some() || matcher.client_ips.is_some();
    if scoped && (pool.failures != own.failures || pool.hosts != own.hosts) {
        why.push(format!(
            "the name fails through the proxy {} from {} with {}",
            counted(pool.failures, "time", "times"),
            counted(pool.hosts.len() as u64, "client host", "client hosts"),
            counted(
                own.name.client_fingerprints,
                "client fingerprint",
                "client fingerprints"
            ),
        ));
    }
    if own.successes_same_fingerprint > 0 {
        why.push(format!(
            "but the same software on the same hosts also succeeded through the proxy {}",
            counted(own.successes_same_fingerprint, "time", "times")
        ));
    } else if matcher.client_ips.is_some() {
        why.push("never succeeded through the proxy from these hosts".into());
    } else {
        why.push("never succeeded through the proxy".into());
    }
    if let Some(ips) = &matcher.client_ips {
        why.push(format!(
            "the same client software succeeds through the proxy from other hosts ({}), so the \
             rule is narrowed to the {} that {}",
            counted(own.successes_outside_scope, "connection", "connections"),
            counted(ips.len() as u64, "address", "addresses"),
            if ips.len() == 1 { "fails" } else { "fail" }
        ));
    }
    if own.successes_outside_proxy > 0 {
        conf += (1.0 - conf) * 0.5;
        why.push(format!(
            "succeeds without the proxy ({})",
            counted(own.successes_outside_proxy, "connection", "connections")
        ));
    }
    if own.successes_other_fingerprints > 0 {
        why.push(format!(
            "other client software succeeds through the proxy ({})",
            counted(
                own.successes_other_fingerprints,
                "connection",
                "connections"
            )
        ));
    }
    if let Some(app) = catalogue_app(facts.name) {
        conf += (1.0 - conf) * 0.1;
        why.push(format!("listed by vendors as pinned ({app})"));
    }
    if scoped && own.weight < MIN_SOFTWARE_WEIGHT {
        let share = own.weight / MIN_SOFTWARE_WEIGHT;
        conf *= share;
        why.push(format!(
            "scaled by {share:.2}: this software's own failures weigh less than one fast abort"
        ));
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
    if pool.hosts.len() <= 1 {
        cap(
            CAP_SINGLE_HOST,
            "single_client_host",
            "evidence from one client host only",
            &mut conf,
            &mut why,
        );
    }
    if pool.ip_literal {
        cap(
            CAP_NO_NAME,
            "ip_literal_or_missing_sni",
            "no server name (IP literal or missing SNI)",
            &mut conf,
            &mut why,
        );
    }
    if facts.capture_span_ns >= 2 * RECENT_NS && pool.first_ns > facts.capture_end_ns - RECENT_NS {
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
        && pool.last_ns - pool.first_ns <= BURST_NS
        && let Some(net) = one_subnet(&pool.hosts)
    {
        cap(
            CAP_BURST,
            "subnet_burst",
            &format!("a new name, failing only from {net} and all within 10 minutes"),
            &mut conf,
            &mut why,
        );
    }
    // After the caps, so a capped pool still says which guard held it.
    if matcher.client_ips.is_some() {
        let alone = 1.0 - (-own.weight / SCALE).exp();
        let alone = if own.hosts.len() <= 1 {
            alone.min(CAP_SINGLE_HOST)
        } else {
            alone
        };
        if alone < conf {
            conf = alone;
            why.push(format!(
                "held at {alone:.2}, what this software's own failures from {} give alone",
                counted(own.hosts.len() as u64, "host", "hosts")
            ));
        }
    }
    (conf.clamp(0.0, 1.0), why.join("; "), capped)
}

/// The client network of a host: its /24 (IPv4) or /64 (IPv6).
pub fn subnet(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & !0xff).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) & !u128::from(u64::MAX)).into()),
    }
}

/// The /24 (IPv4) or /64 (IPv6) holding every one of the hosts, if there is one.
fn one_subnet(hosts: &BTreeSet<IpAddr>) -> Option<String> {
    let first = subnet(*hosts.first()?);
    if !hosts.iter().all(|h| subnet(*h) == first) {
        return None;
    }
    Some(match first {
        IpAddr::V4(_) => format!("{first}/24"),
        IpAddr::V6(_) => format!("{first}/64"),
    })
}

pub(super) fn describe_failures(ev: &Evidence) -> String {
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
        counted(ev.hosts.len() as u64, "client host", "client hosts"),
        kinds.join(", "),
        delay
    )
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
    use crate::correlate::observation::AlertDescription;

    #[test]
    fn weights_order_the_failure_kinds() {
        let alert = failure_weight(
            Outcome::ClientAlert,
            FailureSignal::Alert(AlertDescription::UNKNOWN_CA),
            Some(1.0),
        );
        let encrypted = failure_weight(
            Outcome::ClientAlert,
            FailureSignal::EncryptedAlert,
            Some(1.0),
        );
        let after = failure_weight(
            Outcome::ClientClosedAfterHandshake,
            FailureSignal::None,
            Some(1.0),
        );
        let silent = failure_weight(
            Outcome::ClientClosedInHandshake,
            FailureSignal::None,
            Some(1.0),
        );
        let hang = failure_weight(
            Outcome::Incomplete,
            FailureSignal::SilentAfterServerFlight,
            None,
        );
        assert!(
            alert > encrypted && encrypted > after && after > silent && silent > hang && hang > 0.0
        );
        assert_eq!(
            failure_weight(
                Outcome::ClientClosedAfterHandshake,
                FailureSignal::None,
                Some(1800.0)
            ),
            0.0
        );
        assert_eq!(
            failure_weight(
                Outcome::ServerAbort,
                FailureSignal::Alert(AlertDescription(40)),
                None
            ),
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
            ..Evidence::default()
        };
        ev.hosts.insert([10, 0, 0, 1].into());
        ev.failure_kinds.insert("client_alert".into(), 1);
        ev.alerts.insert("bad_certificate".into(), 1);
        assert_eq!(
            describe_failures(&ev),
            "1 failure through the proxy from 1 client host: 1 client alert (1 bad_certificate)"
        );
        ev.failures = 3;
        ev.hosts.insert([10, 0, 0, 2].into());
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
