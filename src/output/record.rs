//! The connection record: one JSON object per TCP connection. This is an interface: every
//! field is documented in `schema/connection.schema.json` and the README, and `schema`
//! names the version. Add fields freely; never rename or remove one without a new version.

use std::sync::Arc;

use serde::Serialize;

use crate::classify::{Outcome, Verdict, classify};
use crate::flow::Connection;
use crate::tls::cert::CertSummary;
use crate::tls::handshake::{cipher_name, version_name};
use crate::tls::{AlertEvent, Dir};

use super::time::rfc3339_micros;

pub const CONNECTION_SCHEMA: &str = "pinwatch.connection/1";

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
    /// `vxlan`, `gre`, `erspan_i`, `erspan_ii` or `erspan_iii`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// VXLAN VNI, GRE key, ERSPAN session id; null for GRE without a key and ERSPAN type I.
    pub id: Option<u32>,
    /// Underlay source and destination of the connection's first packet.
    pub outer_src: String,
    pub outer_dst: String,
    /// Tunnel layers around the connection's packets (1 = not nested).
    pub layers: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionRecord {
    pub schema: &'static str,
    /// `ts_start` in nanoseconds, for stages that compute with time.
    #[serde(skip)]
    pub ts_start_ns: i64,
    pub ts_start: String,
    pub ts_end: String,
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

/// Builds the record of a finished connection.
pub fn build(conn: &Connection) -> (ConnectionRecord, Verdict) {
    let verdict = classify(conn);
    let o = &conn.session.obs;
    let ch = o.client_hello.as_ref().map(|c| &*c.print);
    let sh = o.server_hello.as_deref();
    let app_bytes = |dir: &crate::flow::DirTcp, offset: Option<u64>| {
        offset.map_or(0, |off| dir.stream_bytes().saturating_sub(off))
    };

    let mut anomalies: Vec<String> = o.anomalies().iter().map(|s| s.to_string()).collect();
    for (name, dir) in [("client", &conn.client), ("server", &conn.server)] {
        let r = dir.reassembly();
        let gap = format!("{name}_gap");
        if r.gaps > 0 && !anomalies.contains(&gap) {
            anomalies.push(gap);
        }
        if r.overlap_mismatches > 0 {
            anomalies.push(format!("{name}_overlap_mismatch"));
        }
        if r.truncated_segments > 0 {
            anomalies.push(format!("{name}_truncated_segment"));
        }
        if r.queue_overflows > 0 {
            anomalies.push(format!("{name}_reassembly_queue_full"));
        }
    }
    if !conn.roles_certain {
        anomalies.push("roles_guessed".into());
    }

    let connect = o.connect_request().map(|r| ConnectRecord {
        target: r.target.to_string(),
        host: r.target_host().to_string(),
        status: o.connect_reply().map(|x| x.status),
        reason: o
            .connect_reply()
            .map(|x| x.reason.to_string())
            .filter(|r| !r.is_empty()),
    });

    let record = ConnectionRecord {
        schema: CONNECTION_SCHEMA,
        ts_start_ns: conn.first.ts_ns,
        ts_start: rfc3339_micros(conn.first.ts_ns),
        ts_end: rfc3339_micros(conn.last.ts_ns),
        client_ip: conn.client.endpoint.ip.to_string(),
        client_port: conn.client.endpoint.port,
        server_ip: conn.server.endpoint.ip.to_string(),
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
        hello_retry: o.hello_retry,
        connect,
        cert: o.cert.clone(),
        client_app_bytes: app_bytes(&conn.client, o.client_app_offset()),
        server_app_bytes: app_bytes(&conn.server, o.server_app_offset()),
        client_packets: conn.client.packets,
        server_packets: conn.server.packets,
        client_bytes: conn.client.payload_bytes,
        server_bytes: conn.server.payload_bytes,
        roles: if conn.roles_certain {
            "observed"
        } else {
            "guessed"
        },
        ended_by: conn.ended_by.as_str(),
        anomalies,
    };
    (record, verdict)
}
