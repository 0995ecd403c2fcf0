//! Gathers what the page needs from a stream of connection records, in bounded memory: totals
//! over every connection (outcomes, span, packets, the noise that scoring set aside), and per
//! name a compact point per connection (for the charts) plus the first few full rows (for the
//! tables). Beyond the limits connections are still counted, just not kept, and the page says
//! how many it left out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::input::ConnIn;
use crate::correlate::score::{FAST_MS, record_failure_weight};

/// How much the collector keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Full rows kept per name (the connection table of a rule shows these).
    pub rows_per_name: usize,
    /// Full rows kept in all.
    pub rows_total: usize,
    /// Chart points kept per name.
    pub points_per_name: usize,
    /// Chart points kept in all (about 40 bytes each).
    pub points_total: usize,
    /// Distinct names tracked; later names are counted only.
    pub names: usize,
    /// Distinct certificate issuers counted for the noise section.
    pub issuers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rows_per_name: 20,
            rows_total: 50_000,
            points_per_name: 2_000,
            points_total: 1_000_000,
            names: 200_000,
            issuers: 10_000,
        }
    }
}

/// Distinct outcome names counted.
const MAX_OUTCOMES: usize = 64;

/// One more `key` in `counts`, unless it is new and `counts` already holds `cap` keys
/// (then `false`).
fn bump(counts: &mut BTreeMap<String, u64>, key: &str, cap: usize) -> bool {
    if let Some(n) = counts.get_mut(key) {
        *n += 1;
    } else if counts.len() < cap {
        counts.insert(key.to_string(), 1);
    } else {
        return false;
    }
    true
}

/// How a connection ended, as the charts colour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// An outcome scoring counts as a pinning failure (when through the proxy).
    Failure,
    Success,
    /// Anything else: idle closes, server-side aborts, incomplete connections.
    Other,
}

impl Class {
    fn of(c: &ConnIn) -> Class {
        if c.outcome == "established" {
            Class::Success
        } else if record_failure_weight(
            &c.outcome,
            c.outcome_detail.as_deref(),
            c.client_delay_ms(),
        ) > 0.0
        {
            Class::Failure
        } else {
            Class::Other
        }
    }
}

/// One connection, as small as the charts need it.
#[derive(Debug, Clone)]
pub struct Point {
    pub ts_ns: i64,
    pub client: IpAddr,
    pub ja4: Arc<str>,
    pub class: Class,
    pub delay_ms: Option<f64>,
}

/// Everything kept about one name.
#[derive(Debug, Default)]
pub struct NameLog {
    pub rows: Vec<ConnIn>,
    pub points: Vec<Point>,
    /// Connections to the name, kept or not.
    pub seen: u64,
}

/// Totals over every connection read.
#[derive(Debug, Default)]
pub struct Totals {
    pub connections: u64,
    pub packets: u64,
    pub outcomes: BTreeMap<String, u64>,
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
    /// Closes after the handshake, later than an abort would come: preconnects and pools.
    pub idle_closes: u64,
    /// The server side (the proxy, or the origin through it) ended the connection.
    pub server_aborts: u64,
    /// Failures by the issuer of the certificate the client saw (to tell the proxy's from others).
    pub failures_by_issuer: BTreeMap<String, u64>,
    /// Failures whose issuer was not counted because `Limits::issuers` was reached.
    pub failures_issuer_uncounted: u64,
    /// Connections to names beyond `Limits::names`, or past the row and point limits.
    pub not_kept: u64,
}

/// Names worth keeping: those some rule matches. `None` keeps every name (a replay, where the
/// rules are known only at the end).
#[derive(Debug, Default)]
pub struct NameFilter {
    hosts: HashSet<String>,
    suffixes: HashSet<String>,
}

impl NameFilter {
    pub fn add(&mut self, host: Option<&str>, suffix: Option<&str>) {
        if let Some(h) = host {
            self.hosts.insert(h.to_string());
        }
        if let Some(s) = suffix {
            self.suffixes.insert(s.to_string());
        }
    }

    fn keeps(&self, name: &str) -> bool {
        self.hosts.contains(name) || suffixes_of(name).any(|s| self.suffixes.contains(s))
    }
}

/// `a.b.c`, `b.c`, `c`: the name and every parent at a dot.
pub fn suffixes_of(name: &str) -> impl Iterator<Item = &str> {
    std::iter::once(name).chain(name.match_indices('.').map(move |(i, _)| &name[i + 1..]))
}

#[derive(Debug, Default)]
pub struct Collector {
    limits: Limits,
    filter: Option<NameFilter>,
    pub totals: Totals,
    pub names: HashMap<String, NameLog>,
    rows: usize,
    points: usize,
}

impl Collector {
    pub fn new(limits: Limits, filter: Option<NameFilter>) -> Collector {
        Collector {
            limits,
            filter,
            ..Collector::default()
        }
    }

    pub fn add(&mut self, c: ConnIn) {
        let class = Class::of(&c);
        self.count(&c, class);
        let Some(name) = c.name() else { return };
        if self.filter.as_ref().is_some_and(|f| !f.keeps(name)) {
            return;
        }
        if !self.names.contains_key(name) && self.names.len() >= self.limits.names {
            self.totals.not_kept += 1;
            return;
        }
        let log = self.names.entry(name.to_string()).or_default();
        log.seen += 1;
        let room_points = log.points.len() < self.limits.points_per_name
            && self.points < self.limits.points_total;
        if !room_points {
            self.totals.not_kept += 1;
            return;
        }
        let Some(ts_ns) = c.start_ns() else { return };
        // The fingerprint string is shared with the previous point of the same name when equal,
        // which it mostly is.
        let ja4: Arc<str> = match (log.points.last(), c.ja4.as_deref()) {
            (Some(p), Some(j)) if &*p.ja4 == j => Arc::clone(&p.ja4),
            (_, j) => Arc::from(j.unwrap_or("")),
        };
        log.points.push(Point {
            ts_ns,
            client: c
                .client_ip
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ja4,
            class,
            delay_ms: c.abort_delay_ms.filter(|d| d.is_finite()),
        });
        self.points += 1;
        if log.rows.len() < self.limits.rows_per_name && self.rows < self.limits.rows_total {
            log.rows.push(c);
            self.rows += 1;
        }
    }

    fn count(&mut self, c: &ConnIn, class: Class) {
        let t = &mut self.totals;
        t.connections += 1;
        t.packets = t
            .packets
            .saturating_add(c.client_packets.saturating_add(c.server_packets));
        // Outcome names are a closed set when the records come from pinwatch; a hostile file
        // could make up many, so their number is bounded like the issuers'.
        bump(&mut t.outcomes, &c.outcome, MAX_OUTCOMES);
        if let Some(s) = c.start_ns() {
            t.first_ns = Some(t.first_ns.map_or(s, |f| f.min(s)));
        }
        if let Some(e) = c.end_ns().or(c.start_ns()) {
            t.last_ns = Some(t.last_ns.map_or(e, |l| l.max(e)));
        }
        if c.outcome == "client_closed_after_handshake"
            && c.client_delay_ms().is_some_and(|d| d > FAST_MS)
        {
            t.idle_closes += 1;
        }
        if c.outcome == "server_abort" {
            t.server_aborts += 1;
        }
        if class == Class::Failure
            && let Some(cert) = &c.cert
            && !bump(&mut t.failures_by_issuer, &cert.issuer, self.limits.issuers)
        {
            t.failures_issuer_uncounted += 1;
        }
    }
}
