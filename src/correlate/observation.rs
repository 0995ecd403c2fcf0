//! The typed observation: what the correlator learns from one finished connection, built from
//! the connection and its verdict by the finishing step, beside (and independent of) the
//! connection record, which exists only to be serialised. Addresses are addresses, the outcome
//! and the alert are enums, the delay a number: nothing here is formatted or parsed back.
//!
//! Plain data, serde-serialisable: a fleet may publish it (`pinwatch.observation/1`) and the
//! evidence table's state may be written out; adding a field is compatible, renaming is not.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::classify::{Outcome, Verdict};
use crate::flow::Connection;
use crate::tls::cert::CertSummary;

pub const OBSERVATION_SCHEMA: &str = "pinwatch.observation/1";

/// A TLS alert description (the wire code, RFC 8446 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AlertDescription(pub u8);

impl AlertDescription {
    pub const BAD_CERTIFICATE: Self = Self(42);
    pub const UNSUPPORTED_CERTIFICATE: Self = Self(43);
    pub const CERTIFICATE_REVOKED: Self = Self(44);
    pub const CERTIFICATE_EXPIRED: Self = Self(45);
    pub const CERTIFICATE_UNKNOWN: Self = Self(46);
    pub const UNKNOWN_CA: Self = Self(48);
    pub const ACCESS_DENIED: Self = Self(49);

    /// The alerts a client sends when it rejects the certificate it was shown (a pinning
    /// client behind a proxy says one of these, or nothing readable).
    pub const REJECTING_CERTIFICATE: [Self; 7] = [
        Self::BAD_CERTIFICATE,
        Self::UNSUPPORTED_CERTIFICATE,
        Self::CERTIFICATE_REVOKED,
        Self::CERTIFICATE_EXPIRED,
        Self::CERTIFICATE_UNKNOWN,
        Self::UNKNOWN_CA,
        Self::ACCESS_DENIED,
    ];

    pub fn rejects_certificate(self) -> bool {
        Self::REJECTING_CERTIFICATE.contains(&self)
    }

    /// The IANA name (`unknown_ca`), as records and rules write it.
    pub fn name(self) -> String {
        crate::tls::handshake::alert_name(self.0)
    }
}

/// What of a failure, beyond its outcome, the scoring weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureSignal {
    /// Nothing the scoring looks at.
    None,
    /// A readable alert decided the outcome (the client's for `client_alert`).
    Alert(AlertDescription),
    /// An encrypted alert decided it.
    EncryptedAlert,
    /// An incomplete connection whose client went silent after the server's whole flight.
    SilentAfterServerFlight,
}

impl FailureSignal {
    /// The signal of a verdict: the alert that decided a client or server failure, or where an
    /// incomplete connection stalled.
    pub fn of(verdict: &Verdict) -> FailureSignal {
        match verdict.outcome {
            Outcome::ClientAlert | Outcome::ServerAbort => match &verdict.alert {
                Some((_, a)) if !a.encrypted && a.description.is_some() => {
                    FailureSignal::Alert(AlertDescription(a.description.unwrap_or_default()))
                }
                Some(_) => FailureSignal::EncryptedAlert,
                None => FailureSignal::None,
            },
            // classify says where a connection stalled only in its detail word.
            Outcome::Incomplete
                if verdict.detail.as_deref() == Some("client_silent_after_server_flight") =>
            {
                FailureSignal::SilentAfterServerFlight
            }
            _ => FailureSignal::None,
        }
    }

    /// The signal of a record read back from JSON (the report reads record files): its
    /// `outcome` and `outcome_detail` words.
    pub fn of_record(outcome: Outcome, detail: Option<&str>) -> FailureSignal {
        match (outcome, detail) {
            (Outcome::ClientAlert | Outcome::ServerAbort, Some("encrypted")) => {
                FailureSignal::EncryptedAlert
            }
            (Outcome::ClientAlert | Outcome::ServerAbort, Some(name)) => (0..=u8::MAX)
                .map(AlertDescription)
                .find(|d| d.name() == name)
                .map_or(FailureSignal::None, FailureSignal::Alert),
            (Outcome::Incomplete, Some("client_silent_after_server_flight")) => {
                FailureSignal::SilentAfterServerFlight
            }
            _ => FailureSignal::None,
        }
    }

    /// The alert's name for the rule's alert counts: the IANA name or `encrypted`.
    pub fn alert_name(self) -> Option<String> {
        match self {
            FailureSignal::Alert(d) => Some(d.name()),
            FailureSignal::EncryptedAlert => Some("encrypted".into()),
            _ => None,
        }
    }
}

/// One finished connection as the evidence table takes it.
#[derive(Debug, Clone, Serialize)]
pub struct Observation {
    /// Capture time of the connection's first packet, in nanoseconds since the epoch.
    pub ts_start_ns: i64,
    /// The ClientHello's SNI, else the host of the CONNECT request, as sent.
    pub name: Option<String>,
    /// The client's JA4; `None` for a connection without a ClientHello (not evidence).
    pub ja4: Option<Arc<str>>,
    /// The client host: the PROXY protocol header's source when a balancer relayed it.
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub server_ip: IpAddr,
    pub server_port: u16,
    pub outcome: Outcome,
    pub signal: FailureSignal,
    /// Milliseconds from the server's last handshake packet to the client's abort.
    pub abort_delay_ms: Option<f64>,
    /// The client's round trip at the sensor (SYN-ACK to the client's answer), milliseconds.
    pub client_rtt_ms: Option<f64>,
    /// The server's round trip at the sensor (client SYN to server SYN-ACK), milliseconds.
    pub server_rtt_ms: Option<f64>,
    /// From the ClientHello to the server's first answer at the sensor, milliseconds.
    pub server_hello_delay_ms: Option<f64>,
    /// The certificate the client was shown (shared with the TLS stage's cache).
    pub cert: Option<Arc<CertSummary>>,
    /// The connection went through an explicit proxy (HTTP CONNECT or SOCKS).
    pub connect: bool,
}

impl Observation {
    pub fn of(conn: &Connection, verdict: &Verdict) -> Observation {
        let o = &conn.session.obs;
        let ch = o.client_hello.as_ref();
        let name = ch
            .and_then(|c| c.sni.as_deref())
            .or_else(|| o.connect_request().map(|r| r.target_host()))
            .map(str::to_owned);
        Observation {
            ts_start_ns: conn.first.ts_ns,
            name,
            ja4: ch.map(|c| c.print.ja4.clone()),
            client_ip: o
                .proxy_protocol()
                .and_then(|h| h.source)
                .map_or(conn.client.endpoint.ip, |a| a.ip()),
            client_port: conn.client.endpoint.port,
            server_ip: conn.server.endpoint.ip,
            server_port: conn.server.endpoint.port,
            outcome: verdict.outcome,
            signal: FailureSignal::of(verdict),
            abort_delay_ms: verdict.abort_delay_ms,
            client_rtt_ms: conn.client_rtt_ns().map(crate::output::time::millis),
            server_rtt_ms: o.server_rtt_ns().map(crate::output::time::millis),
            server_hello_delay_ms: o.hello_delay_ns().map(crate::output::time::millis),
            cert: o.cert.clone(),
            connect: o.connect_request().is_some(),
        }
    }
}

/// How long the client itself took to abort: the delay seen at the sensor less the client's
/// round trip, which the abort travelled on top (a sensor far from its clients sees every
/// abort that much later). Without a measured round trip, the delay as seen.
pub fn client_delay_ms(abort_delay_ms: Option<f64>, client_rtt_ms: Option<f64>) -> Option<f64> {
    abort_delay_ms.map(|d| (d - client_rtt_ms.unwrap_or(0.0)).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report weighs records read back from JSON; it must see the same signal the live
    /// table saw, or its failure counts disagree with the rules.
    #[test]
    fn a_record_s_detail_words_give_the_signal_the_verdict_gave() {
        let alert = |d: &str| FailureSignal::of_record(Outcome::ClientAlert, Some(d));
        assert_eq!(
            alert("unknown_ca"),
            FailureSignal::Alert(AlertDescription::UNKNOWN_CA)
        );
        assert_eq!(alert("encrypted"), FailureSignal::EncryptedAlert);
        assert_eq!(alert("no_such_alert"), FailureSignal::None);
        assert_eq!(
            FailureSignal::of_record(
                Outcome::Incomplete,
                Some("client_silent_after_server_flight")
            ),
            FailureSignal::SilentAfterServerFlight
        );
        assert_eq!(
            FailureSignal::of_record(Outcome::Incomplete, Some("awaiting_server_hello")),
            FailureSignal::None
        );
        assert!(AlertDescription::UNKNOWN_CA.rejects_certificate());
        assert!(!AlertDescription(40).rejects_certificate());
    }
}
