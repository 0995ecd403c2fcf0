//! The connection record: one JSON object per TCP connection. This is an interface: every
//! field is documented in `schema/connection.schema.json` and the README, and `schema`
//! names the version. Add fields freely; never rename or remove one without a new version.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::classify::{Outcome, Verdict, classify};
use crate::flow::Connection;
use crate::tls::cert::CertSummary;
use crate::tls::handshake::{cipher_name, version_name};
use crate::tls::{AlertEvent, Dir};

use super::community_id::{IPPROTO_TCP, community_id_v1};
use super::time::rfc3339_micros;

pub const CONNECTION_SCHEMA: &str = "pinwatch.connection/1";

/// Where a run's records come from: the sensor's name and the capture (an interface, or the
/// files in the order replayed). Shared by the source, which says where each file's packets
/// start, and the workers, which stamp each record with the file of its first packet.
#[derive(Debug, Default)]
pub struct Origin {
    pub sensor: Option<Arc<str>>,
    pub iface: Option<Arc<str>>,
    /// Each file and the packet index (from 1) of its first packet; 0 until it is opened.
    files: Vec<(Arc<str>, AtomicU64)>,
}

impl Origin {
    pub fn new(sensor: Option<&str>, iface: Option<&str>, files: &[String]) -> Origin {
        Origin {
            sensor: sensor.map(Arc::from),
            iface: iface.map(Arc::from),
            files: files
                .iter()
                .map(|f| {
                    let name = if f == "-" { "standard input" } else { f };
                    (Arc::from(name), AtomicU64::new(0))
                })
                .collect(),
        }
    }

    /// File `index` starts at packet `first_pkt` (every reader of it says the same).
    pub fn file_started(&self, index: usize, first_pkt: u64) {
        if let Some((_, start)) = self.files.get(index) {
            start.store(first_pkt, Ordering::Relaxed);
        }
    }

    /// The file packet `pkt` came from: the last opened file starting at or before it.
    fn file_of(&self, pkt: u64) -> Option<Arc<str>> {
        self.files
            .iter()
            .filter(|(_, s)| (1..=pkt).contains(&s.load(Ordering::Relaxed)))
            .max_by_key(|(_, s)| s.load(Ordering::Relaxed))
            .map(|(name, _)| Arc::clone(name))
    }

    /// Fills in the record's `sensor`, `iface` and `file`; `first_pkt` is the packet index of
    /// the connection's first packet.
    pub fn stamp(&self, record: &mut ConnectionRecord, first_pkt: u64) {
        record.sensor = self.sensor.clone();
        record.iface = self.iface.clone();
        record.file = self.file_of(first_pkt);
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub from: &'static str,
    /// `fatal`, `warning`, or null when encrypted.
    pub level: Option<&'static str>,
    /// IANA name, or null when encrypted.
    pub description: Option<String>,
    pub encrypted: bool,
    /// True when the alert was inferred from the size of an encrypted record (TLS 1.3).
    pub inferred: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectRecord {
    pub target: String,
    pub host: String,
    pub status: Option<u16>,
    pub reason: Option<String>,
}

/// The tunnel a connection was carried in (the innermost one when tunnels nest).
#[derive(Debug, Clone, Serialize)]
pub struct TunnelRecord {
    /// `vxlan`, `gre`, `erspan_i`, `erspan_ii`, `erspan_iii`, `geneve`, `gtp_u` or `ip_in_ip`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// VXLAN/Geneve VNI, GRE key, ERSPAN session id, GTP-U TEID; null for GRE without a key,
    /// ERSPAN type I and IP in IP.
    pub id: Option<u32>,
    /// Underlay source and destination of the connection's first packet.
    pub outer_src: String,
    pub outer_dst: String,
    /// Tunnel layers around the connection's packets (1 = not nested).
    pub layers: u8,
}

/// The PROXY protocol header a load balancer sent in front of the client's stream.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyProtocolRecord {
    /// 1 (text) or 2 (binary).
    pub version: u8,
    /// `proxy` (relayed for a client) or `local` (the balancer's own health check).
    pub command: &'static str,
    /// `inet`, `inet6`, `unix` or `unspec`; `transport` is `stream`, `dgram` or `unspec`.
    pub family: &'static str,
    pub transport: &'static str,
    /// The client the balancer accepted the connection from, and where it was addressed; null
    /// when the header carries no IP addresses.
    pub src_ip: Option<String>,
    pub src_port: Option<u16>,
    pub dst_ip: Option<String>,
    pub dst_port: Option<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionRecord {
    pub schema: &'static str,
    /// `ts_start` in nanoseconds, for stages that compute with time.
    #[serde(skip)]
    pub ts_start_ns: i64,
    pub ts_start: String,
    pub ts_end: String,
    /// Community ID v1 (seed 0) of the 5-tuple: the key Zeek, Suricata, Arkime and Elastic share.
    pub community_id: String,
    /// This connection among others of the same 5-tuple (port reuse): 16 hex digits over the
    /// Community ID, the start time and the VLAN tags.
    pub flow_id: String,
    /// The sensor's name (`--sensor`, default the host name); null from the library.
    pub sensor: Option<Arc<str>>,
    /// Live: the interface captured on. Absent in replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iface: Option<Arc<str>>,
    /// Replay: the capture file the connection's first packet came from. Absent in live mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<Arc<str>>,
    pub client_ip: String,
    pub client_port: u16,
    pub server_ip: String,
    pub server_port: u16,
    pub vlan: Vec<u16>,
    /// Absent (not null) for connections outside any tunnel, so records of plain captures keep
    /// their shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelRecord>,
    pub sni: Option<String>,
    pub outcome: Outcome,
    pub outcome_detail: Option<String>,
    pub alert: Option<AlertRecord>,
    pub abort_delay_ms: Option<f64>,
    /// The client's round trip at the sensor, from the server's SYN-ACK to the client's answer,
    /// in milliseconds; null when the TCP handshake was not seen. Abort delays are judged net
    /// of it.
    pub client_rtt_ms: Option<f64>,
    /// The server's round trip at the sensor, from the client's SYN to the server's SYN-ACK,
    /// in milliseconds; null when the TCP handshake was not seen.
    pub server_rtt_ms: Option<f64>,
    /// From the packet that completed the ClientHello to the server's first answer
    /// (ServerHello or HelloRetryRequest), in milliseconds; null without both.
    pub server_hello_delay_ms: Option<f64>,
    /// Why a client failure has no `abort_delay_ms` (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_missing: Option<crate::classify::DelayMissing>,
    pub closed_by: Option<&'static str>,
    pub client_close: Vec<&'static str>,
    pub server_close: Vec<&'static str>,
    pub ja4: Option<Arc<str>>,
    pub ja3: Option<Arc<str>>,
    pub ja3_string: Option<Arc<str>>,
    pub ja3s: Option<Arc<str>>,
    pub ja3s_string: Option<Arc<str>>,
    pub tls_version: Option<String>,
    pub client_version: Option<String>,
    pub offered_versions: Vec<String>,
    pub cipher: Option<String>,
    pub alpn_offered: Vec<String>,
    pub alpn: Option<String>,
    pub hello_retry: bool,
    pub connect: Option<ConnectRecord>,
    /// Absent (not null) unless the client's stream began with a PROXY protocol header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolRecord>,
    pub cert: Option<Arc<CertSummary>>,
    pub client_app_bytes: u64,
    pub server_app_bytes: u64,
    pub client_packets: u64,
    pub server_packets: u64,
    pub client_bytes: u64,
    pub server_bytes: u64,
    pub roles: &'static str,
    pub ended_by: &'static str,
    pub anomalies: Vec<String>,
    /// Which path the connection took (`proxy`, `origin`, `unknown`), concluded from it and
    /// the connections before it in run order, and what told (`path_signal`); null without a
    /// ClientHello. Last, and set by the pipeline once the record is in run order
    /// ([`set_line_path`]).
    pub path: Option<&'static str>,
    pub path_signal: Option<&'static str>,
}

/// How a serialised record ends while its path is not set.
const PATH_UNSET: &[u8] = br#","path":null,"path_signal":null}"#;

/// Sets the path of a record serialised before its path was known: the line ends with
/// [`PATH_UNSET`] (the record's last fields), which this replaces. The words are the
/// pipeline's own (`Path::name`, `Signal::name`), plain ASCII with nothing to escape.
pub fn set_line_path(line: &mut Vec<u8>, path: &str, signal: &str) {
    if !line.ends_with(PATH_UNSET) {
        debug_assert!(false, "a record line that does not end with its unset path");
        return;
    }
    line.truncate(line.len() - PATH_UNSET.len());
    for part in [
        r#","path":""#,
        path,
        r#"","path_signal":""#,
        signal,
        r#""}"#,
    ] {
        line.extend_from_slice(part.as_bytes());
    }
}

/// `ip` as `Display` writes it (dotted decimal for IPv4), without going through the formatting
/// machinery for the common case: two addresses go into every record.
fn ip_string(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// Lowercase hex of `bytes`, as `hex::encode` writes it.
fn lower_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

fn side(dir: Dir) -> &'static str {
    match dir {
        Dir::Client => "client",
        Dir::Server => "server",
    }
}

fn alert_record(dir: Dir, a: &AlertEvent) -> AlertRecord {
    AlertRecord {
        from: side(dir),
        level: match a.level {
            Some(1) => Some("warning"),
            Some(2) => Some("fatal"),
            Some(_) => Some("unknown"),
            None => None,
        },
        description: if a.encrypted {
            None
        } else {
            a.description.map(crate::tls::handshake::alert_name)
        },
        encrypted: a.encrypted,
        inferred: a.inferred,
    }
}

/// Classifies a finished connection and builds its record.
pub fn build(conn: &Connection) -> (ConnectionRecord, Verdict) {
    let verdict = classify(conn);
    (of(conn, &verdict), verdict)
}

/// The anomaly names of a finished connection: the TLS stage's, then reassembly's and the
/// role guess, as the record's `anomalies` lists them.
pub fn anomalies(conn: &Connection) -> Vec<String> {
    let o = &conn.session.obs;
    let mut anomalies: Vec<String> = o.anomalies().iter().map(|s| s.to_string()).collect();
    // The names are spelled out rather than made with `format!` for every connection: most
    // connections have none of them.
    for (names, dir) in [
        (
            [
                "client_gap",
                "client_overlap_mismatch",
                "client_truncated_segment",
                "client_reassembly_queue_full",
            ],
            &conn.client,
        ),
        (
            [
                "server_gap",
                "server_overlap_mismatch",
                "server_truncated_segment",
                "server_reassembly_queue_full",
            ],
            &conn.server,
        ),
    ] {
        let r = dir.reassembly();
        let [gap, overlap, truncated, queue_full] = names;
        if r.gaps > 0 && !anomalies.iter().any(|a| a == gap) {
            anomalies.push(gap.to_string());
        }
        if r.overlap_mismatches > 0 {
            anomalies.push(overlap.to_string());
        }
        if r.truncated_segments > 0 {
            anomalies.push(truncated.to_string());
        }
        if r.queue_overflows > 0 {
            anomalies.push(queue_full.to_string());
        }
    }
    if !conn.roles_certain() {
        anomalies.push("roles_guessed".into());
    }
    anomalies
}

/// The record of a finished connection classified as `verdict`.
pub fn of(conn: &Connection, verdict: &Verdict) -> ConnectionRecord {
    let o = &conn.session.obs;
    let ch = o.client_hello.as_ref().map(|c| &*c.print);
    let sh = o.server_hello.as_deref();
    let app_bytes = |dir: &crate::flow::DirTcp, offset: Option<u64>| {
        offset.map_or(0, |off| dir.stream_bytes().saturating_sub(off))
    };

    let anomalies = anomalies(conn);

    let proxy_protocol = o.proxy_protocol().map(|h| ProxyProtocolRecord {
        version: h.version,
        command: h.command.as_str(),
        family: h.family.as_str(),
        transport: h.transport.as_str(),
        src_ip: h.source.map(|a| a.ip().to_string()),
        src_port: h.source.map(|a| a.port()),
        dst_ip: h.destination.map(|a| a.ip().to_string()),
        dst_port: h.destination.map(|a| a.port()),
    });
    let connect = o.connect_request().map(|r| ConnectRecord {
        target: r.target.to_string(),
        host: r.target_host().to_string(),
        status: o.connect_reply().map(|x| x.status),
        reason: o
            .connect_reply()
            .map(|x| x.reason.to_string())
            .filter(|r| !r.is_empty()),
    });

    let community_id = community_id_v1(
        0,
        IPPROTO_TCP,
        (conn.client.endpoint.ip, conn.client.endpoint.port),
        (conn.server.endpoint.ip, conn.server.endpoint.port),
    );
    let flow_id = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(community_id.as_bytes());
        h.update(conn.first.ts_ns.to_be_bytes());
        for v in conn.vlans() {
            h.update(v.to_be_bytes());
        }
        lower_hex(&h.finalize()[..8])
    };
    ConnectionRecord {
        schema: CONNECTION_SCHEMA,
        ts_start_ns: conn.first.ts_ns,
        ts_start: rfc3339_micros(conn.first.ts_ns),
        ts_end: rfc3339_micros(conn.last.ts_ns),
        community_id,
        flow_id,
        sensor: None,
        iface: None,
        file: None,
        client_ip: ip_string(conn.client.endpoint.ip),
        client_port: conn.client.endpoint.port,
        server_ip: ip_string(conn.server.endpoint.ip),
        server_port: conn.server.endpoint.port,
        vlan: conn.vlans().to_vec(),
        tunnel: conn.tunnel.as_deref().map(|t| TunnelRecord {
            kind: t.kind.as_str(),
            id: t.id,
            outer_src: t.outer_src.to_string(),
            outer_dst: t.outer_dst.to_string(),
            layers: t.layers,
        }),
        sni: o
            .client_hello
            .as_ref()
            .and_then(|c| c.sni.as_deref().map(str::to_owned)),
        outcome: verdict.outcome,
        outcome_detail: verdict.detail.clone(),
        alert: verdict.alert.as_ref().map(|(d, a)| alert_record(*d, a)),
        abort_delay_ms: verdict.abort_delay_ms,
        client_rtt_ms: conn.client_rtt_ns().map(super::time::millis),
        server_rtt_ms: o.server_rtt_ns().map(super::time::millis),
        server_hello_delay_ms: o.hello_delay_ns().map(super::time::millis),
        delay_missing: verdict.delay_missing,
        closed_by: verdict.closed_by.map(side),
        client_close: verdict.client_close.clone(),
        server_close: verdict.server_close.clone(),
        ja4: ch.map(|c| c.ja4.clone()),
        ja3: ch.map(|c| c.ja3.clone()),
        ja3_string: ch.map(|c| c.ja3_string.clone()),
        ja3s: sh.map(|s| s.ja3s.clone()),
        ja3s_string: sh.map(|s| s.ja3s_string.clone()),
        tls_version: sh.map(|s| version_name(s.version)),
        client_version: ch.map(|c| version_name(c.max_version())),
        offered_versions: ch.map_or_else(Vec::new, |c| {
            c.offered_versions().into_iter().map(version_name).collect()
        }),
        cipher: sh.map(|s| cipher_name(s.cipher)),
        alpn_offered: ch.map_or_else(Vec::new, |c| c.alpn()),
        alpn: sh.and_then(|s| s.alpn.clone()),
        hello_retry: o.hello_retry(),
        connect,
        proxy_protocol,
        cert: o.cert.clone(),
        client_app_bytes: app_bytes(&conn.client, o.client_app_offset()),
        server_app_bytes: app_bytes(&conn.server, o.server_app_offset()),
        client_packets: conn.client.packets,
        server_packets: conn.server.packets,
        client_bytes: conn.client.payload_bytes,
        server_bytes: conn.server.payload_bytes,
        roles: if conn.roles_certain() {
            "observed"
        } else {
            "guessed"
        },
        ended_by: conn.ended_by.as_str(),
        anomalies,
        path: None,
        path_signal: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// The collector sets the path of a line serialised without it; the line stays one JSON
    /// object with the words in the record's last fields.
    #[test]
    fn a_serialised_record_takes_its_path_in_place() {
        let mut line =
            br#"{"schema":"pinwatch.connection/1","path":null,"path_signal":null}"#.to_vec();
        set_line_path(&mut line, "proxy", "network_and_name");
        let v: serde_json::Value = serde_json::from_slice(&line).expect("JSON");
        assert_eq!(v["path"], "proxy");
        assert_eq!(v["path_signal"], "network_and_name");
        assert_eq!(v["schema"], "pinwatch.connection/1");
    }

    #[test]
    fn ip_string_is_display() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..50_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v4 = match i {
                0 => Ipv4Addr::new(0, 0, 0, 0),
                1 => Ipv4Addr::new(255, 255, 255, 255),
                2 => Ipv4Addr::new(9, 10, 99, 100),
                _ => Ipv4Addr::from(x as u32),
            };
            assert_eq!(ip_string(IpAddr::V4(v4)), v4.to_string());
        }
        for v6 in ["::1", "2001:db8::1", "::ffff:10.0.0.1", "fe80::1:2:3:4"] {
            let ip: Ipv6Addr = v6.parse().unwrap();
            assert_eq!(ip_string(IpAddr::V6(ip)), ip.to_string());
        }
    }

    #[test]
    fn lower_hex_is_hex_encode() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(lower_hex(&bytes), hex::encode(&bytes));
        assert_eq!(lower_hex(&[]), "");
    }
}
