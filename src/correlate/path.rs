//! Which path a connection took: through the intercepting proxy, to the origin (direct or
//! bypassed), or unknown, and the signal that told.
//!
//! A certificate tells it: minted by the proxy or not. A connection without one (TLS 1.3 hides
//! it) takes the path that connections with one took from the same client network (/24, /64)
//! to the same server, for the same name if any did, else for any name: inline proxies
//! intercept some networks and bypass some names, so the path belongs to the connection, not to
//! the server address. Failing that it goes to a configured proxy address, to an explicit proxy
//! (it received CONNECT) that intercepts, or to a server address that showed one kind of
//! certificate only. Where the nearest evidence shows both kinds, the path stays unknown.
//!
//! One resolver serves two uses: the rule analysis, which knows every connection of the window
//! before it resolves any ([`PathIndex`] filled first), and the connection records, which are
//! written in run order and can only know what came before ([`RecordPaths`]).

use std::net::IpAddr;
use std::sync::Arc;

use super::observation::Observation;
use super::proxy::{self, CaVerdict, ProxyCas};
use super::{Config, HashMap, registrable, score};
use crate::tls::cert::CertSummary;

/// Which path a connection took, as far as the wire shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    /// The certificate was minted by the proxy.
    Proxy,
    /// Inferred to go through the proxy (its certificate is hidden or was not seen).
    ProxyInferred,
    /// The origin's own certificate: direct or bypassed.
    Origin,
    /// Nothing tells.
    Unknown,
}

impl Path {
    /// The record's word: `proxy` (seen or inferred; the signal says which), `origin`,
    /// `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            Path::Proxy | Path::ProxyInferred => "proxy",
            Path::Origin => "origin",
            Path::Unknown => "unknown",
        }
    }
}

/// What told a connection's path, nearest evidence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Its own certificate.
    Certificate,
    /// A `--proxy-addr`.
    ConfiguredAddress,
    /// Certificates from its client network to the same server for the same name.
    NetworkAndName,
    /// Certificates from its client network to the same server.
    Network,
    /// CONNECT to an explicit proxy that intercepts.
    ExplicitProxy,
    /// Certificates anyone was shown by the same server address.
    ServerAddress,
    /// The proxy's own upstream connection for the same name followed it (a span point that
    /// sees both legs; `legs`). Only the rule analysis, which sees what follows, uses it.
    UpstreamLeg,
    /// Nothing.
    Nothing,
}

impl Signal {
    /// The record's `path_signal` word.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Certificate => "certificate",
            Signal::ConfiguredAddress => "configured_address",
            Signal::NetworkAndName => "network_and_name",
            Signal::Network => "network",
            Signal::ExplicitProxy => "explicit_proxy",
            Signal::ServerAddress => "server_address",
            Signal::UpstreamLeg => "upstream_leg",
            Signal::Nothing => "nothing",
        }
    }
}

/// The path a certificate alone tells.
pub fn of_certificate(cas: &ProxyCas, cert: Option<&CertSummary>) -> Path {
    match cert {
        Some(c) if cas.verdict(&c.issuer, c.authority_key_id.as_deref()) == CaVerdict::Proxy => {
            Path::Proxy
        }
        Some(_) => Path::Origin,
        None => Path::Unknown,
    }
}

/// What the resolver reads of one connection.
pub struct Conn<'a> {
    pub client_ip: IpAddr,
    pub server: (IpAddr, u16),
    /// Lowercase, without a trailing dot; empty without one.
    pub name: &'a Arc<str>,
    pub connect: bool,
}

/// Whether connections with certificates were shown the proxy's, the origin's, or both.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    proxy: bool,
    origin: bool,
}

impl Seen {
    fn add(&mut self, path: Path) {
        match path {
            Path::Proxy => self.proxy = true,
            Path::Origin => self.origin = true,
            _ => {}
        }
    }
    fn verdict(self) -> Option<Path> {
        match (self.proxy, self.origin) {
            (true, false) => Some(Path::ProxyInferred),
            (false, true) => Some(Path::Origin),
            (true, true) => Some(Path::Unknown),
            (false, false) => None,
        }
    }
}

type NameKey = (IpAddr, (IpAddr, u16), Arc<str>);

/// The paths certificates showed, by (client network, server, name), (client network, server)
/// and server.
#[derive(Debug, Default)]
pub struct PathIndex {
    by_name: HashMap<NameKey, Seen>,
    by_net: HashMap<(IpAddr, (IpAddr, u16)), Seen>,
    by_server: HashMap<(IpAddr, u16), Seen>,
}

impl PathIndex {
    /// Takes a connection whose certificate told `path` (anything else adds nothing).
    pub fn add(&mut self, c: &Conn<'_>, path: Path) {
        if !matches!(path, Path::Proxy | Path::Origin) {
            return;
        }
        let net = score::subnet(c.client_ip);
        self.by_name
            .entry((net, c.server, Arc::clone(c.name)))
            .or_default()
            .add(path);
        self.by_net.entry((net, c.server)).or_default().add(path);
        self.by_server.entry(c.server).or_default().add(path);
    }

    fn len(&self) -> usize {
        self.by_name.len()
    }

    /// The path of a connection whose certificate told `own`, from the evidence taken so far.
    pub fn resolve(&self, c: &Conn<'_>, own: Path, proxy_addrs: &[IpAddr]) -> (Path, Signal) {
        if own != Path::Unknown {
            return (own, Signal::Certificate);
        }
        if proxy_addrs.contains(&c.server.0) {
            return (Path::ProxyInferred, Signal::ConfiguredAddress);
        }
        let net = score::subnet(c.client_ip);
        let key = (net, c.server, Arc::clone(c.name));
        if let Some(p) = self.by_name.get(&key).and_then(|s| s.verdict()) {
            return (p, Signal::NetworkAndName);
        }
        if let Some(p) = self.by_net.get(&(net, c.server)).and_then(|s| s.verdict()) {
            return (p, Signal::Network);
        }
        let at_server = self.by_server.get(&c.server);
        // A tunnel through an explicit proxy that never showed the origin's certificate is
        // taken as intercepted even when no certificate was seen at all (every client on TLS
        // 1.3): a proxy that only tunnels shows the origins' certificates to its TLS 1.2
        // clients, and through it a pinned app does not fail, so what the inference can add
        // there is at most a bypass of inspection that is not happening.
        if c.connect && at_server.is_none_or(|s| !s.origin) {
            return (Path::ProxyInferred, Signal::ExplicitProxy);
        }
        match at_server.and_then(|s| s.verdict()) {
            Some(p) => (p, Signal::ServerAddress),
            None => (Path::Unknown, Signal::Nothing),
        }
    }
}

/// Most (client network, server, name) keys the records' path evidence holds; past it the
/// evidence starts again from nothing, so a sensor that runs for months holds a bounded amount
/// (about 100 bytes a key, in three maps) and its records lean on recent evidence.
pub const RECORD_PATH_KEYS: usize = 200_000;
/// Most issuers whose breadth the records' CA learning follows; later ones are not learned
/// for the records (the rule analysis learns from every certificate of its window).
pub const RECORD_ISSUERS: usize = 10_000;

/// What one issuer's leaves showed so far: the registrable domains (as many as learning
/// needs), and whether any carried an embedded SCT.
#[derive(Debug, Default)]
struct Issuer {
    domains: Vec<String>,
    any_sct: bool,
}

/// The path of each connection record, from the connections before it in run order: the
/// configured CAs and addresses, the interception CAs learned so far (the same signs the rule
/// analysis learns by), and the certificates seen so far. The analysis behind the rules sees
/// the whole window and can conclude differently for a connection early in it.
#[derive(Debug)]
pub struct RecordPaths {
    cas: ProxyCas,
    proxy_addrs: Vec<IpAddr>,
    issuers: HashMap<String, Issuer>,
    index: PathIndex,
    empty: Arc<str>,
}

impl RecordPaths {
    pub fn new(config: &Config) -> Self {
        RecordPaths {
            cas: config.proxy_cas.clone(),
            proxy_addrs: config.proxy_addrs.clone(),
            issuers: HashMap::default(),
            index: PathIndex::default(),
            empty: Arc::from(""),
        }
    }

    /// Takes the next connection in run order and says its path; `None` for a connection
    /// that is not evidence (no ClientHello).
    pub fn next(&mut self, o: &Observation) -> Option<(Path, Signal)> {
        o.ja4.as_ref()?;
        let name: Arc<str> = match o.name.as_deref() {
            Some(n) => Arc::from(n.trim_end_matches('.').to_ascii_lowercase()),
            None => Arc::clone(&self.empty),
        };
        if let Some(cert) = o.cert.as_deref() {
            self.learn(cert, &name);
        }
        let own = of_certificate(&self.cas, o.cert.as_deref());
        let conn = Conn {
            client_ip: o.client_ip,
            server: (o.server_ip, o.server_port),
            name: &name,
            connect: o.connect,
        };
        if self.index.len() >= RECORD_PATH_KEYS {
            self.index = PathIndex::default();
        }
        self.index.add(&conn, own);
        Some(self.index.resolve(&conn, own, &self.proxy_addrs))
    }

    /// Follows the issuer's breadth and SCTs; learns it once it looks like an interception CA,
    /// forgets it once one of its leaves carries an SCT.
    fn learn(&mut self, cert: &CertSummary, name: &str) {
        if self.cas.not_proxy_issuer(&cert.issuer) || self.cas.configured_issuer(&cert.issuer) {
            return;
        }
        if !self.issuers.contains_key(&cert.issuer) && self.issuers.len() >= RECORD_ISSUERS {
            return;
        }
        let issuer = self.issuers.entry(cert.issuer.clone()).or_default();
        issuer.any_sct |= cert.has_sct;
        if !name.is_empty() && issuer.domains.len() < proxy::MANY_DOMAINS {
            let domain = registrable(name);
            if !issuer.domains.contains(&domain) {
                issuer.domains.push(domain);
            }
        }
        if proxy::looks_minted(&cert.issuer, issuer.domains.len(), !issuer.any_sct) {
            self.cas.learn(&cert.issuer);
        } else {
            self.cas.forget(&cert.issuer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn<'a>(client: &str, server: &str, name: &'a Arc<str>) -> Conn<'a> {
        Conn {
            client_ip: client.parse().expect("address"),
            server: (server.parse().expect("address"), 443),
            name,
            connect: false,
        }
    }

    /// An inline proxy that intercepts one client network and not another: a TLS 1.3
    /// connection takes the path its own network's certificates showed, not the server's.
    #[test]
    fn a_hidden_certificate_takes_the_path_of_its_own_network() {
        let name: Arc<str> = Arc::from("app.example");
        let mut index = PathIndex::default();
        index.add(&conn("10.1.0.5", "192.0.2.1", &name), Path::Proxy);
        index.add(&conn("10.2.0.5", "192.0.2.1", &name), Path::Origin);
        let resolve = |client| index.resolve(&conn(client, "192.0.2.1", &name), Path::Unknown, &[]);
        assert_eq!(
            resolve("10.1.0.9"),
            (Path::ProxyInferred, Signal::NetworkAndName)
        );
        assert_eq!(resolve("10.2.0.9"), (Path::Origin, Signal::NetworkAndName));
        assert_eq!(
            resolve("10.3.0.9"),
            (Path::Unknown, Signal::ServerAddress),
            "a third network: the server showed both kinds"
        );
    }
}
