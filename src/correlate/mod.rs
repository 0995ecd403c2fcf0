//! Correlate stage: reads typed observations of finished connections, works out which connections went through the
//! intercepting proxy (proxy-minted certificate, or a TLS 1.3 connection to an address where the
//! proxy's certificate was seen), which were the proxy's own upstream legs, and which clients
//! lack the proxy CA altogether; then aggregates pinning evidence per (name, client fingerprint)
//! and scores it. The scoring model is documented in the README ("Scoring").

mod legs;
pub mod observation;
pub mod partition;
pub mod path;
pub mod proxy;
pub mod scope;
pub mod score;
pub mod stream;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::classify::Outcome;
use crate::tls::cert::CertSummary;
use observation::{FailureSignal, Observation};
pub use path::{Path, Signal};
use proxy::ProxyCas;
pub use score::{Evidence, Rule, RuleMatch};

/// The analysis's working maps: keyed by names, addresses and fingerprints from the traffic,
/// so seeded, and far faster than the standard library's SipHash over a million observations.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Settings of the correlate stage.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub proxy_cas: ProxyCas,
    /// Addresses of the proxy (its client-facing or upstream-facing side).
    pub proxy_addrs: Vec<IpAddr>,
    /// The rules scored: those of this partition's registrable domains (all by default).
    pub partition: partition::Partition,
}

/// Where a connection stands in the run's deterministic order: the pipeline's release key
/// (which packet or tick finished it, then which packet created it). Evidence is analysed in
/// this order whatever thread observed it.
pub type Order = (u64, u64);

/// The fields of a record that correlation needs. Kept for up to [`Limits::total`]
/// connections, so what many share is shared: the name with its table key, the fingerprint
/// and the certificate summary with the TLS stage's caches; and what is not is kept small
/// (128 bytes in all).
#[derive(Debug, Clone)]
struct Obs {
    order: Order,
    ts_ns: i64,
    name: Option<Arc<str>>,
    ip_literal: bool,
    ja4: Arc<str>,
    client_ip: IpAddr,
    client_port: u16,
    server: (IpAddr, u16),
    outcome: Outcome,
    signal: FailureSignal,
    delay_ms: DelayMs,
    /// The delay less the client's round trip: what fast and slow are judged on.
    client_delay_ms: DelayMs,
    cert: Option<Arc<CertSummary>>,
    connect: bool,
}

/// The client's abort delay, in 8 bytes where `Option<f64>` takes 16: NaN stands for none (a
/// delay computed from capture times is never NaN).
#[derive(Debug, Clone, Copy)]
struct DelayMs(f64);

impl DelayMs {
    fn new(ms: Option<f64>) -> Self {
        DelayMs(ms.filter(|d| !d.is_nan()).unwrap_or(f64::NAN))
    }
    fn get(self) -> Option<f64> {
        (!self.0.is_nan()).then_some(self.0)
    }
}

impl Obs {
    fn path_view<'a>(&'a self, empty: &'a Arc<str>) -> path::Conn<'a> {
        path::Conn {
            client_ip: self.client_ip,
            server: self.server,
            name: self.name.as_ref().unwrap_or(empty),
            connect: self.connect,
        }
    }
    fn issuer(&self) -> Option<&str> {
        self.cert.as_deref().map(|c| c.issuer.as_str())
    }
    fn has_sct(&self) -> bool {
        self.cert.as_deref().is_some_and(|c| c.has_sct)
    }
}

/// An interception CA the correlator believes in, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LearnedCa {
    pub issuer: String,
    pub why: Vec<String>,
    pub leaf_count: usize,
    pub registrable_domains: usize,
}

/// A client that fails on many unrelated domains and succeeds on none: it lacks the proxy CA.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MissingProxyCa {
    pub client_ip: String,
    pub client_ja4: Vec<String>,
    pub failures: usize,
    pub registrable_domains: Vec<String>,
    pub reason: String,
}

/// What correlation concluded.
#[derive(Debug, Default)]
pub struct Report {
    /// All candidates, above and below the threshold, highest confidence first.
    pub candidates: Vec<Rule>,
    pub proxy_cas: Vec<LearnedCa>,
    pub missing_proxy_ca: Vec<MissingProxyCa>,
    /// Failures behind certificates not minted by the proxy: ordinary certificate errors.
    pub ordinary_cert_failures: u64,
    /// Connections recognised as the proxy's own upstream legs.
    pub upstream_legs: u64,
    pub upstream_hosts: Vec<String>,
}

impl Report {
    pub fn rules(&self, min_confidence: f64) -> impl Iterator<Item = &Rule> {
        self.candidates
            .iter()
            .filter(move |r| r.confidence >= min_confidence)
    }
}

/// Bounds of the evidence table. A sensor runs for days: the oldest evidence goes first.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Observations kept per name (most recent).
    pub per_name: usize,
    /// Observations kept in all.
    pub total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_name: 2_000,
            total: 1_000_000,
        }
    }
}

/// The shared evidence table: one small observation per finished TLS connection, keyed by
/// name. Worker threads add to it concurrently; the rule stage reads a consistent prefix of it
/// (everything up to an [`Order`]) when it scores.
#[derive(Debug, Default)]
pub struct EvidenceTable {
    by_name: DashMap<Arc<str>, VecDeque<Obs>>,
    limits: Limits,
    total: AtomicUsize,
    /// Observations dropped to stay within the limits.
    pub dropped: AtomicU64,
    /// Also hands every observation that is evidence to this (a fleet sensor publishes it).
    tap: Option<Tap>,
}

/// A receiver of every observation that is evidence (has a ClientHello), called on the thread
/// that finished the connection, in no particular order across threads.
#[derive(Clone)]
pub struct Tap(pub Arc<dyn Fn(&Observation) + Send + Sync>);

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

impl EvidenceTable {
    pub fn new(limits: Limits) -> Self {
        EvidenceTable {
            limits,
            ..EvidenceTable::default()
        }
    }

    /// A table that also hands every observation it takes to `tap`.
    pub fn with_tap(limits: Limits, tap: Tap) -> Self {
        EvidenceTable {
            limits,
            tap: Some(tap),
            ..EvidenceTable::default()
        }
    }

    /// Takes one finished connection (anything without a ClientHello is ignored).
    pub fn observe(&self, observation: &Observation, order: Order) {
        let Some((name, mut obs)) = Obs::of(observation, order) else {
            return;
        };
        if let Some(tap) = &self.tap {
            (tap.0)(observation);
        }
        let key = name.as_deref().unwrap_or_default();
        let mut queue = match self.by_name.get_mut(key) {
            Some(queue) => queue,
            None => self.by_name.entry(Arc::from(key)).or_default(),
        };
        obs.name = name.is_some().then(|| Arc::clone(queue.key()));
        queue.push_back(obs);
        if queue.len() > self.limits.per_name.max(1) {
            queue.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Observations held.
    pub fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the oldest observations until a quarter of the room is free again, when the table
    /// is over its total limit.
    pub fn prune(&self) {
        let held = self.len();
        if held <= self.limits.total {
            return;
        }
        let mut times: Vec<i64> = Vec::with_capacity(held);
        for entry in self.by_name.iter() {
            times.extend(entry.value().iter().map(|o| o.ts_ns));
        }
        let goal = self.limits.total / 4 * 3;
        let drop_count = times.len().saturating_sub(goal);
        if drop_count == 0 {
            return;
        }
        let (_, cutoff, _) = times.select_nth_unstable(drop_count - 1);
        let cutoff = *cutoff;
        let mut removed = 0usize;
        self.by_name.retain(|_, queue| {
            let before = queue.len();
            queue.retain(|o| o.ts_ns > cutoff);
            removed += before - queue.len();
            !queue.is_empty()
        });
        self.total.fetch_sub(removed, Ordering::Relaxed);
        self.dropped.fetch_add(removed as u64, Ordering::Relaxed);
    }

    /// Everything observed up to `upto` (all of it when `None`), in run order.
    fn snapshot(&self, upto: Option<Order>) -> Vec<Obs> {
        let mut all: Vec<Obs> = Vec::with_capacity(self.len());
        for entry in self.by_name.iter() {
            all.extend(
                entry
                    .value()
                    .iter()
                    .filter(|o| upto.is_none_or(|u| o.order <= u))
                    .cloned(),
            );
        }
        all.sort_unstable_by_key(|o| o.order);
        all
    }

    /// Everything observed, moved out in run order; the table is left empty. Each name's queue
    /// is freed as soon as it is moved, so the observations are not held twice.
    fn take_all(&self) -> Vec<Obs> {
        let mut all: Vec<Obs> = Vec::with_capacity(self.len());
        self.by_name.retain(|_, queue| {
            all.extend(queue.drain(..));
            false
        });
        self.total.store(0, Ordering::Relaxed);
        all.sort_unstable_by_key(|o| o.order);
        all
    }
}

impl Obs {
    /// The table's form of an observation, and its name (lowercase, no trailing dot), which
    /// the table turns into the shared key.
    fn of(o: &Observation, order: Order) -> Option<(Option<String>, Obs)> {
        let ja4 = o.ja4.clone()?;
        let name = o
            .name
            .as_deref()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let ip_literal = name.as_deref().is_none_or(|n| n.parse::<IpAddr>().is_ok());
        let obs = Obs {
            order,
            ts_ns: o.ts_start_ns,
            name: None,
            ip_literal,
            ja4,
            client_ip: o.client_ip,
            client_port: o.client_port,
            server: (o.server_ip, o.server_port),
            outcome: o.outcome,
            signal: o.signal,
            delay_ms: DelayMs::new(o.abort_delay_ms),
            client_delay_ms: DelayMs::new(observation::client_delay_ms(
                o.abort_delay_ms,
                o.client_rtt_ms,
            )),
            cert: o.cert.clone(),
            connect: o.connect,
        };
        Some((name, obs))
    }
}

/// The rule stage's view of the evidence: configuration plus the shared table.
#[derive(Default)]
pub struct Correlator {
    config: Config,
    table: Arc<EvidenceTable>,
}

/// The registrable domain (public suffix + 1) of a host name.
pub fn registrable(name: &str) -> String {
    if name.parse::<IpAddr>().is_ok() {
        return name.to_string();
    }
    psl::domain_str(name).unwrap_or(name).to_ascii_lowercase()
}

impl Correlator {
    pub fn new(config: Config) -> Self {
        Self::with_table(config, Arc::new(EvidenceTable::default()))
    }

    /// A correlator reading a table that other threads fill.
    pub fn with_table(config: Config, table: Arc<EvidenceTable>) -> Self {
        Correlator { config, table }
    }

    pub fn table(&self) -> &Arc<EvidenceTable> {
        &self.table
    }

    /// Draws conclusions from everything observed.
    pub fn conclude(&self) -> Report {
        self.conclude_upto(None)
    }

    /// The run's last conclusions: the evidence is moved into the analysis rather than copied
    /// (at a million observations a copy is about 128 MB at the run's memory peak), so the
    /// table is empty afterwards.
    pub fn conclude_final(&self) -> Report {
        Analysis {
            config: &self.config,
            obs: self.table.take_all(),
        }
        .conclude()
    }

    /// Draws conclusions from the evidence up to `upto` in run order.
    pub fn conclude_upto(&self, upto: Option<Order>) -> Report {
        Analysis {
            config: &self.config,
            obs: self.table.snapshot(upto),
        }
        .conclude()
    }
}

/// Times and hosts of one name's proxied connections in time order, and for each entry the
/// index of the next entry from another host.
type ProxiedTimes = (Vec<(i64, IpAddr)>, Vec<usize>);

/// Per client address: registrable domains failed on, fingerprints that failed, failures,
/// successes.
type ClientFailures<'a> = (BTreeSet<&'a str>, BTreeSet<Arc<str>>, usize, usize);

/// The registrable domain of every name observed, worked out once per name rather than once
/// per connection.
type Domains<'a> = HashMap<&'a str, String>;

/// One scoring pass over a snapshot of the evidence.
struct Analysis<'a> {
    config: &'a Config,
    obs: Vec<Obs>,
}

impl Analysis<'_> {
    fn conclude(&self) -> Report {
        let mut report = Report::default();
        let domains = self.domains();
        let cas = self.learn_cas(&domains, &mut report);
        let (mut paths, mut signals) = self.paths(&cas);
        let legs = legs::find(&self.leg_view(&paths, &signals));
        for answered in legs.answers.iter().flatten() {
            if paths[*answered] == Path::Unknown {
                paths[*answered] = Path::ProxyInferred;
                signals[*answered] = Signal::UpstreamLeg;
            }
        }
        let mut upstream = self.upstream_hosts(&paths, &signals);
        upstream.extend(legs.hosts);
        report.upstream_hosts = upstream.iter().map(|ip| ip.to_string()).collect();
        let clients: Vec<usize> = (0..self.obs.len())
            .filter(|&i| !upstream.contains(&self.obs[i].client_ip))
            .collect();
        report.upstream_legs = (self.obs.len() - clients.len()) as u64;
        let origin_names: BTreeSet<&str> = (0..self.obs.len())
            .filter(|&i| upstream.contains(&self.obs[i].client_ip))
            .filter_map(|i| self.obs[i].name.as_deref())
            .collect();

        let missing = self.missing_ca(&clients, &paths, &domains);
        // Per client address, the fingerprints the missing-CA findings cover.
        let mut excluded: HashMap<IpAddr, BTreeSet<String>> = HashMap::default();
        for m in &missing {
            if let Ok(ip) = m.client_ip.parse() {
                excluded
                    .entry(ip)
                    .or_default()
                    .extend(m.client_ja4.iter().cloned());
            }
        }
        report.missing_proxy_ca = missing;

        let mut per_name: HashMap<&str, Vec<(usize, Path)>> = HashMap::default();
        for &i in &clients {
            let o = &self.obs[i];
            let Some(name) = o.name.as_deref() else {
                continue;
            };
            if excluded
                .get(&o.client_ip)
                .is_some_and(|ja4s| ja4s.contains(&*o.ja4))
            {
                continue;
            }
            let path = paths[i];
            if path == Path::Origin
                && score::failure_weight(o.outcome, o.signal, o.client_delay_ms.get()) > 0.0
            {
                report.ordinary_cert_failures += 1;
            }
            // Another partition's name: everything above learned from it, only its scoring is
            // another aggregator's. A domain's names are all in one partition, so suffix rules
            // still see every name of their domain.
            if !self.owned(name, &domains) {
                continue;
            }
            per_name.entry(name).or_default().push((i, path));
        }
        let capture_end = self.obs.iter().map(|o| o.ts_ns).max().unwrap_or(0);
        let capture_start = self.obs.iter().map(|o| o.ts_ns).min().unwrap_or(0);
        let issuers_at = self.issuers_by_server(&paths);
        // Per registrable domain, the names seen through the proxy: a suffix rule must cover
        // every one of them.
        let mut proxied_names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        // Names in order, so rules come out the same however the map hashed them.
        let mut per_name: Vec<(&str, Vec<(usize, Path)>)> = per_name.into_iter().collect();
        per_name.sort_unstable_by_key(|&(name, _)| name);
        let mut candidates = Vec::new();
        for (name, conns) in &per_name {
            if conns
                .iter()
                .any(|&(_, p)| matches!(p, Path::Proxy | Path::ProxyInferred))
                && let Some(domain) = domains.get(name)
            {
                proxied_names
                    .entry(domain.clone())
                    .or_default()
                    .insert(name.to_string());
            }
            let facts = score::NameFacts {
                name,
                first_seen_ns: conns
                    .iter()
                    .map(|&(i, _)| self.obs[i].ts_ns)
                    .min()
                    .unwrap_or(capture_start),
                origin_seen_upstream: origin_names.contains(name),
                capture_span_ns: capture_end - capture_start,
                capture_end_ns: capture_end,
                proxy_issuers: self.issuers_shown(conns, &issuers_at),
            };
            candidates.extend(scope::rules_for_name(
                &facts,
                conns.iter().map(|&(i, p)| (self.view(i), p)),
            ));
        }
        scope::roll_up_suffixes(&mut candidates, &proxied_names);
        candidates.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then_with(|| a.id.cmp(&b.id))
        });
        report.candidates = candidates;
        if !self.config.partition.owns_findings() {
            report.proxy_cas.clear();
            report.missing_proxy_ca.clear();
        }
        report
    }

    /// Whether this partition scores `name`.
    fn owned(&self, name: &str, domains: &Domains<'_>) -> bool {
        let partition = self.config.partition;
        partition.is_whole() || domains.get(name).is_some_and(|d| partition.owns(d))
    }

    fn view(&self, i: usize) -> score::ConnView<'_> {
        let o = &self.obs[i];
        score::ConnView {
            ts_ns: o.ts_ns,
            ja4: &o.ja4,
            client_ip: o.client_ip,
            flow: ((o.client_ip, o.client_port), o.server),
            ip_literal: o.ip_literal,
            outcome: o.outcome,
            signal: o.signal,
            delay_ms: o.delay_ms.get(),
            client_delay_ms: o.client_delay_ms.get(),
        }
    }

    /// Per server address and port, the issuers of the proxy certificates it presented.
    fn issuers_by_server(&self, paths: &[Path]) -> HashMap<(IpAddr, u16), BTreeSet<&str>> {
        let mut at: HashMap<(IpAddr, u16), BTreeSet<&str>> = HashMap::default();
        for (o, p) in self.obs.iter().zip(paths) {
            if *p == Path::Proxy
                && let Some(issuer) = o.issuer()
            {
                at.entry(o.server).or_default().insert(issuer);
            }
        }
        at
    }

    /// The proxy issuers one name's clients were shown: those on its own certificates, or for
    /// a name seen only under TLS 1.3 (certificates hidden), those the same proxy addresses
    /// presented to anyone.
    fn issuers_shown(
        &self,
        conns: &[(usize, Path)],
        at: &HashMap<(IpAddr, u16), BTreeSet<&str>>,
    ) -> Vec<String> {
        let mut own: BTreeSet<&str> = conns
            .iter()
            .filter(|&&(_, p)| p == Path::Proxy)
            .filter_map(|&(i, _)| self.obs[i].issuer())
            .collect();
        if own.is_empty() {
            for &(i, p) in conns {
                if p == Path::ProxyInferred
                    && let Some(set) = at.get(&self.obs[i].server)
                {
                    own.extend(set.iter().copied());
                }
            }
        }
        own.into_iter().map(str::to_string).collect()
    }

    fn domains(&self) -> Domains<'_> {
        let mut domains = Domains::default();
        for name in self.obs.iter().filter_map(|o| o.name.as_deref()) {
            domains.entry(name).or_insert_with(|| registrable(name));
        }
        domains
    }

    /// Interception CAs: configured ones, plus issuers that look like one.
    fn learn_cas(&self, domains: &Domains<'_>, report: &mut Report) -> ProxyCas {
        let mut by_issuer: BTreeMap<&str, (usize, BTreeSet<&str>, usize)> = BTreeMap::new();
        for o in &self.obs {
            if let (Some(issuer), Some(name)) = (o.issuer(), o.name.as_deref()) {
                let e = by_issuer.entry(issuer).or_default();
                e.0 += 1;
                if let Some(domain) = domains.get(name) {
                    e.1.insert(domain);
                }
                e.2 += usize::from(!o.has_sct());
            }
        }
        let mut cas = self.config.proxy_cas.clone();
        for (issuer, (leaves, domains, without_sct)) in by_issuer {
            // An enterprise's own PKI looks like interception (many domains, no SCTs).
            if cas.not_proxy_issuer(issuer) {
                continue;
            }
            let mut why = Vec::new();
            if cas.configured_issuer(issuer) {
                why.push("configured with --proxy-ca".to_string());
            }
            // A publicly trusted CA also mints for many unrelated domains (the origins of
            // bypassed and direct connections, the proxy's upstream legs), but logs its leaves in
            // Certificate Transparency and embeds the SCTs; an inspection proxy's leaves never
            // carry them. So neither breadth nor a product word counts alone for an issuer
            // whose leaves carry one: it is otherwise an ordinary public CA.
            let no_sct = without_sct == leaves;
            if let Some(product) = proxy::known_product(issuer).filter(|_| no_sct) {
                why.push(format!("issuer names an inspection product ({product})"));
            }
            if domains.len() >= proxy::MANY_DOMAINS && no_sct {
                why.push(format!(
                    "mints leaf certificates for {} unrelated registrable domains",
                    domains.len()
                ));
            }
            if why.is_empty() {
                continue;
            }
            if no_sct {
                why.push("its leaves carry no embedded SCTs".to_string());
            }
            cas.learn(issuer);
            report.proxy_cas.push(LearnedCa {
                issuer: issuer.to_string(),
                why,
                leaf_count: leaves,
                registrable_domains: domains.len(),
            });
        }
        cas
    }

    /// The path of every connection (`path`), from every connection of the window.
    fn paths(&self, cas: &ProxyCas) -> (Vec<Path>, Vec<Signal>) {
        let empty: Arc<str> = Arc::from("");
        let conn = |o| Obs::path_view(o, &empty);
        let own: Vec<Path> = self
            .obs
            .iter()
            .map(|o| path::of_certificate(cas, o.cert.as_deref()))
            .collect();
        let mut index = path::PathIndex::default();
        for (o, p) in self.obs.iter().zip(&own) {
            index.add(&conn(o), *p);
        }
        self.obs
            .iter()
            .zip(own)
            .map(|(o, p)| index.resolve(&conn(o), p, &self.config.proxy_addrs))
            .unzip()
    }

    /// What the upstream-leg recognition (`legs`) reads of each connection.
    fn leg_view(&self, paths: &[Path], signals: &[Signal]) -> Vec<legs::Conn<'_>> {
        self.obs
            .iter()
            .zip(paths.iter().zip(signals))
            .map(|(o, (p, s))| legs::Conn {
                ts_ns: o.ts_ns,
                client: o.client_ip,
                name: o.name.as_deref(),
                client_alert: o.outcome == Outcome::ClientAlert,
                proxied_by_certificate: *p == Path::Proxy && *s == Signal::Certificate,
            })
            .collect()
    }

    /// Hosts that are the proxy's upstream side: configured, or a client whose connections
    /// repeat, within a second, the names that clients just asked the proxy for.
    fn upstream_hosts(&self, paths: &[Path], signals: &[Signal]) -> BTreeSet<IpAddr> {
        let mut hosts: BTreeSet<IpAddr> = self.config.proxy_addrs.iter().copied().collect();
        // Per name, the times and hosts of connections that went through the proxy, in time
        // order, so each candidate leg looks only at the second before it.
        let mut proxied: HashMap<&str, Vec<(i64, IpAddr)>> = HashMap::default();
        for (o, p) in self.obs.iter().zip(paths) {
            if matches!(p, Path::Proxy | Path::ProxyInferred)
                && let Some(n) = o.name.as_deref()
            {
                proxied.entry(n).or_default().push((o.ts_ns, o.client_ip));
            }
        }
        // Beside each entry, the index of the next entry from another host: answers "any other
        // host in this window?" in constant time, even under a flood from one host.
        // Beside each name's times, where its last search ended (below): connections come in
        // run order, close to time order, so the next search for the name starts near there.
        let mut proxied: HashMap<&str, (ProxiedTimes, usize)> = proxied
            .into_iter()
            .map(|(n, mut times)| {
                times.sort_unstable();
                let mut next_other = vec![times.len(); times.len()];
                for i in (0..times.len().saturating_sub(1)).rev() {
                    next_other[i] = if times[i + 1].1 != times[i].1 {
                        i + 1
                    } else {
                        next_other[i + 1]
                    };
                }
                (n, ((times, next_other), 0))
            })
            .collect();
        let mut per_client: HashMap<IpAddr, (usize, usize)> = HashMap::default();
        for ((o, p), signal) in self.obs.iter().zip(paths).zip(signals) {
            let e = per_client.entry(o.client_ip).or_default();
            e.0 += 1;
            // An upstream leg shows the origin (or hides it under TLS 1.3), never the proxy's
            // certificate, and follows another host's request for the same name. A client
            // retrying a popular name through the proxy takes the proxy's path by its own
            // certificate or its network's, so it is never taken for the proxy; a path known
            // only from the server address (a transparent proxy answers for the origin's
            // address, which its own upstream legs go to as well) does not tell.
            let follows = (matches!(p, Path::Origin | Path::Unknown)
                || *signal == Signal::ServerAddress)
                && o.name
                    .as_deref()
                    .and_then(|n| proxied.get_mut(n))
                    .is_some_and(|((times, next_other), last)| {
                        let to = partition_point_from(times, *last, |&(t, _)| t <= o.ts_ns);
                        // Saturating: capture times may be centuries apart (hostile files).
                        let since = o.ts_ns.saturating_sub(1_000_000_000);
                        let from = partition_point_from(times, to, |&(t, _)| t < since);
                        *last = to;
                        from < to && (times[from].1 != o.client_ip || next_other[from] < to)
                    });
            e.1 += usize::from(follows);
        }
        for (ip, (total, follows)) in per_client {
            if follows >= 2 && follows * 10 >= total * 8 {
                hosts.insert(ip);
            }
        }
        hosts
    }

    /// Clients (host + fingerprint) that fail through the proxy on many unrelated domains and
    /// never succeed through it.
    fn missing_ca(
        &self,
        clients: &[usize],
        paths: &[Path],
        domains: &Domains<'_>,
    ) -> Vec<MissingProxyCa> {
        let mut per: BTreeMap<IpAddr, ClientFailures> = BTreeMap::new();
        for &i in clients {
            let o = &self.obs[i];
            if !matches!(paths[i], Path::Proxy | Path::ProxyInferred) {
                continue;
            }
            let e = per.entry(o.client_ip).or_default();
            if o.outcome == Outcome::Established {
                e.3 += 1;
            } else if score::failure_weight(o.outcome, o.signal, o.client_delay_ms.get()) > 0.0 {
                if let Some(domain) = o.name.as_deref().and_then(|n| domains.get(n)) {
                    e.0.insert(domain);
                }
                e.1.insert(o.ja4.clone());
                e.2 += 1;
            }
        }
        per.into_iter()
            .filter(|(_, (domains, _, _, successes))| domains.len() >= proxy::MANY_DOMAINS && *successes == 0)
            .map(|(ip, (domains, ja4s, failures, _))| MissingProxyCa {
                client_ip: ip.to_string(),
                client_ja4: ja4s.iter().map(|j| j.to_string()).collect(),
                failures,
                reason: format!(
                    "fails through the proxy on {} unrelated domains and succeeds on none: install the proxy CA on this client",
                    domains.len()
                ),
                registrable_domains: domains.into_iter().map(str::to_string).collect(),
            })
            .collect()
    }
}

/// The same as `v.partition_point(pred)` (`pred` true for a prefix of `v`, false after), found
/// by galloping from `hint`: a few probes when the answer is near it, as it is for searches
/// that follow one another, where a binary search over the whole would miss the cache at
/// nearly every probe of a large `v`.
fn partition_point_from<T>(v: &[T], hint: usize, pred: impl Fn(&T) -> bool) -> usize {
    let hint = hint.min(v.len());
    let (mut lo, mut hi) = (0, v.len());
    let mut step = 1;
    if hint < v.len() && pred(&v[hint]) {
        // The answer is past `hint`.
        lo = hint + 1;
        while lo < hi {
            let probe = lo + step - 1;
            if probe >= hi {
                break;
            }
            if !pred(&v[probe]) {
                hi = probe;
                break;
            }
            lo = probe + 1;
            step *= 2;
        }
    } else {
        // The answer is at or before `hint`.
        hi = hint;
        while hi > lo {
            let probe = hi.saturating_sub(step);
            if pred(&v[probe]) {
                lo = probe + 1;
                break;
            }
            hi = probe;
            step *= 2;
        }
    }
    lo + v[lo..hi].partition_point(pred)
}

#[cfg(test)]
mod search {
    use super::partition_point_from;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn galloping_from_any_hint_finds_what_a_binary_search_finds(
            mut v in proptest::collection::vec(0i64..50, 0..200),
            hint in 0usize..250,
            x in -5i64..55,
        ) {
            v.sort_unstable();
            prop_assert_eq!(partition_point_from(&v, hint, |&t| t <= x), v.partition_point(|&t| t <= x));
            prop_assert_eq!(partition_point_from(&v, hint, |&t| t < x), v.partition_point(|&t| t < x));
        }
    }
}

#[cfg(test)]
mod learning {
    use super::*;

    /// A failed connection from `client` to `name` behind a leaf from `issuer`.
    fn obs(i: u64, client: &str, name: &str, issuer: &str, has_sct: bool) -> Obs {
        let cert = CertSummary {
            subject: format!("CN={name}"),
            issuer: issuer.to_string(),
            san: vec![name.to_string()],
            not_before: None,
            not_after: None,
            sha256: String::new(),
            spki_sha256: String::new(),
            has_sct,
            sct_delivered_in: Vec::new(),
            authority_key_id: None,
            self_signed: false,
            chain_len: 1,
            chain: Vec::new(),
            parsed: true,
        };
        Obs {
            order: (i, 0),
            ts_ns: i as i64 * 1_000_000_000,
            name: Some(Arc::from(name)),
            ip_literal: false,
            ja4: Arc::from("t13d1516h2_8daaf6152771_02713d6af862"),
            client_ip: client.parse().expect("address"),
            client_port: 40000,
            server: ("192.0.2.1".parse().expect("address"), 443),
            outcome: Outcome::ClientAlert,
            signal: FailureSignal::Alert(observation::AlertDescription::UNKNOWN_CA),
            delay_ms: DelayMs::new(Some(2.0)),
            client_delay_ms: DelayMs::new(Some(2.0)),
            cert: Some(Arc::new(cert)),
            connect: false,
        }
    }

    fn learned(obs: Vec<Obs>) -> Vec<String> {
        let config = Config::default();
        Analysis {
            config: &config,
            obs,
        }
        .conclude()
        .proxy_cas
        .into_iter()
        .map(|ca| ca.issuer)
        .collect()
    }

    /// Five failures for five unrelated domains behind leaves from `issuer`; `sct(i)`: whether
    /// leaf `i` embeds SCTs.
    fn five_domains(issuer: &str, sct: impl Fn(u64) -> bool) -> Vec<Obs> {
        let names = [
            "a.example",
            "b.test",
            "c.example.org",
            "d.test",
            "e.example",
        ];
        (0..5)
            .map(|i| obs(i, "10.0.0.1", names[i as usize], issuer, sct(i)))
            .collect()
    }

    #[test]
    fn an_issuer_minting_for_many_domains_without_scts_is_learned() {
        let obs = five_domains("CN=Corp Inspect CA", |_| false);
        assert_eq!(learned(obs), ["CN=Corp Inspect CA"]);
    }

    /// Public CAs mint for many domains too; their leaves embed SCTs and must not make every
    /// failure behind them a pinning candidate.
    #[test]
    fn a_public_ca_whose_leaves_embed_scts_is_not_learned() {
        let obs = five_domains("CN=R11, O=Let's Encrypt", |i| i != 3);
        assert!(learned(obs).is_empty());
    }
}

#[cfg(test)]
mod footprint {
    use super::DelayMs;

    /// The evidence table holds up to a million observations by default (`Limits::total`), so
    /// each byte here can be a megabyte of a sensor's memory; no string per observation. (It
    /// was 152 bytes until the outcome became its enum and the delay a NaN-for-none float; the
    /// client port, for the rules' sample Community IDs, took it from 128 to 136.)
    #[test]
    fn an_observation_takes_136_bytes() {
        assert!(std::mem::size_of::<super::Obs>() <= 136);
    }

    #[test]
    fn a_missing_delay_stays_missing_and_a_delay_keeps_its_value() {
        assert_eq!(DelayMs::new(None).get(), None);
        assert_eq!(DelayMs::new(Some(f64::NAN)).get(), None);
        assert_eq!(DelayMs::new(Some(123_456.789)).get(), Some(123_456.789));
        assert_eq!(DelayMs::new(Some(0.0)).get(), Some(0.0));
    }
}
