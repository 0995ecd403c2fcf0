//! `pinwatch.observation/1`: the wire form of a [`Observation`], one JSON object per JetStream
//! message (schema/observation.schema.json documents every field).
//!
//! It carries everything an aggregator needs to re-derive what a sensor learns from the
//! connection (the certificate fields that proxy-CA learning reads, both endpoints for
//! proxy-endpoint and TLS 1.3 attribution and upstream-leg recognition, the capture time), and
//! names its sensor and its message id. The id is a function of the sensor, the flow and its
//! start time, so a resend (after a reconnect, a replay run again) has the same id: JetStream
//! drops it within the stream's duplicate window, and the aggregator drops it after that.
//!
//! Decoding is for untrusted input: anything that is not a `pinwatch.observation/N` object, a
//! newer version, or a field out of its range is a [`DecodeError`], never a panic. Fields are
//! only ever added within a version (readers ignore what they do not know); a rename, a removal
//! or a change of meaning bumps the version.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::classify::Outcome;
use crate::correlate::observation::Observation;
use crate::correlate::observation::{AlertDescription, FailureSignal, OBSERVATION_SCHEMA};
use crate::tls::cert::CertSummary;

/// The version this build writes, and the newest it reads.
pub const VERSION: u32 = 1;
/// Largest message decoded: an observation with a full certificate summary is a few KiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 10;

/// The certificate fields the correlator reads (proxy-CA learning and the proxy path), plus the
/// leaf's identity for a human reading the stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WireCert {
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_key_id: Option<String>,
    pub has_sct: bool,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub sha256: String,
}

/// The failure signal as written: `none`, `alert` (with `alert`: the wire code), `encrypted`,
/// `silent_after_server_flight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    None,
    Alert,
    Encrypted,
    SilentAfterServerFlight,
}

/// One `pinwatch.observation/1` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireObservation {
    pub schema: String,
    /// The message id (`Nats-Msg-Id`): see [`message_id`].
    pub id: String,
    pub sensor: String,
    pub ts_start_ns: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub ja4: String,
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub server_ip: IpAddr,
    pub server_port: u16,
    pub outcome: String,
    pub signal: SignalKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_delay_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_hello_delay_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<WireCert>,
    #[serde(default)]
    pub connect: bool,
}

/// Why a message was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("not a pinwatch observation: {0}")]
    Malformed(String),
    #[error("observation version {0} is newer than this pinwatch reads ({VERSION})")]
    Newer(u32),
    #[error("unknown outcome {0:?}")]
    UnknownOutcome(String),
}

/// The stable id of a connection seen by `sensor`: the first 32 hex digits of SHA-256 over
/// the sensor, both endpoints (address octets, 4 or 16, and port) and the start time.
pub fn message_id(sensor: &str, o: &Observation) -> String {
    fn octets(ip: IpAddr) -> ([u8; 16], usize) {
        let mut out = [0; 16];
        match ip {
            IpAddr::V4(v4) => {
                out[..4].copy_from_slice(&v4.octets());
                (out, 4)
            }
            IpAddr::V6(v6) => (v6.octets(), 16),
        }
    }
    let (client, client_len) = octets(o.client_ip);
    let (server, server_len) = octets(o.server_ip);
    let mut h = Sha256::new();
    for part in [
        sensor.as_bytes(),
        &client[..client_len],
        &o.client_port.to_be_bytes(),
        &server[..server_len],
        &o.server_port.to_be_bytes(),
        &o.ts_start_ns.to_be_bytes(),
    ] {
        // Length-prefixed, so no two different tuples hash the same bytes.
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    hex::encode(&h.finalize()[..16])
}

impl WireObservation {
    /// The wire form of an observation; `None` for a connection without a ClientHello, which
    /// is no evidence and is not published.
    pub fn of(sensor: &str, o: &Observation) -> Option<WireObservation> {
        let ja4 = o.ja4.as_deref()?.to_string();
        let (signal, alert) = match o.signal {
            FailureSignal::None => (SignalKind::None, None),
            FailureSignal::Alert(d) => (SignalKind::Alert, Some(d.0)),
            FailureSignal::EncryptedAlert => (SignalKind::Encrypted, None),
            FailureSignal::SilentAfterServerFlight => (SignalKind::SilentAfterServerFlight, None),
        };
        Some(WireObservation {
            schema: OBSERVATION_SCHEMA.to_string(),
            id: message_id(sensor, o),
            sensor: sensor.to_string(),
            ts_start_ns: o.ts_start_ns,
            name: o.name.clone(),
            ja4,
            client_ip: o.client_ip,
            client_port: o.client_port,
            server_ip: o.server_ip,
            server_port: o.server_port,
            outcome: o.outcome.as_str().to_string(),
            signal,
            alert,
            abort_delay_ms: o.abort_delay_ms,
            client_rtt_ms: o.client_rtt_ms,
            server_rtt_ms: o.server_rtt_ms,
            server_hello_delay_ms: o.server_hello_delay_ms,
            cert: o.cert.as_deref().map(|c| WireCert {
                issuer: c.issuer.clone(),
                authority_key_id: c.authority_key_id.clone(),
                has_sct: c.has_sct,
                subject: c.subject.clone(),
                sha256: c.sha256.clone(),
            }),
            connect: o.connect,
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, numbers and options always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads one message. The version is checked before the fields, so a newer message is
    /// told apart from a damaged one.
    pub fn decode(bytes: &[u8]) -> Result<WireObservation, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge);
        }
        #[derive(Deserialize)]
        struct Header {
            schema: String,
        }
        let header: Header =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let version = header
            .schema
            .strip_prefix("pinwatch.observation/")
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| DecodeError::Malformed(format!("schema {:?}", header.schema)))?;
        if version > VERSION {
            return Err(DecodeError::Newer(version));
        }
        let wire: WireObservation =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !Outcome::ALL.iter().any(|o| o.as_str() == wire.outcome) {
            return Err(DecodeError::UnknownOutcome(wire.outcome));
        }
        if wire
            .abort_delay_ms
            .is_some_and(|d| !d.is_finite() || d < 0.0)
        {
            return Err(DecodeError::Malformed("abort_delay_ms out of range".into()));
        }
        for (field, value) in [
            ("client_rtt_ms", wire.client_rtt_ms),
            ("server_rtt_ms", wire.server_rtt_ms),
            ("server_hello_delay_ms", wire.server_hello_delay_ms),
        ] {
            if value.is_some_and(|d| !d.is_finite() || d < 0.0) {
                return Err(DecodeError::Malformed(format!("{field} out of range")));
            }
        }
        Ok(wire)
    }

    /// The observation the evidence table takes. `certs` shares one summary between the
    /// observations that carry the same certificate, as the TLS stage's cache does on a sensor.
    pub fn observation(&self, certs: &mut CertCache) -> Observation {
        let outcome = Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == self.outcome)
            .unwrap_or(Outcome::Incomplete);
        let signal = match (self.signal, self.alert) {
            (SignalKind::Alert, Some(code)) => FailureSignal::Alert(AlertDescription(code)),
            (SignalKind::Alert, None) | (SignalKind::None, _) => FailureSignal::None,
            (SignalKind::Encrypted, _) => FailureSignal::EncryptedAlert,
            (SignalKind::SilentAfterServerFlight, _) => FailureSignal::SilentAfterServerFlight,
        };
        Observation {
            ts_start_ns: self.ts_start_ns,
            name: self.name.clone(),
            ja4: Some(certs.ja4(&self.ja4)),
            client_ip: self.client_ip,
            client_port: self.client_port,
            server_ip: self.server_ip,
            server_port: self.server_port,
            outcome,
            signal,
            abort_delay_ms: self.abort_delay_ms,
            client_rtt_ms: self.client_rtt_ms,
            server_rtt_ms: self.server_rtt_ms,
            server_hello_delay_ms: self.server_hello_delay_ms,
            cert: self.cert.as_ref().map(|c| certs.cert(c)),
            connect: self.connect,
        }
    }
}

/// Shared certificate summaries and fingerprints of decoded observations: a million
/// observations carry a few thousand distinct ones.
#[derive(Default)]
pub struct CertCache {
    certs: std::collections::HashMap<WireCert, Arc<CertSummary>>,
    ja4s: std::collections::HashSet<Arc<str>>,
}

impl CertCache {
    fn cert(&mut self, c: &WireCert) -> Arc<CertSummary> {
        if let Some(s) = self.certs.get(c) {
            return Arc::clone(s);
        }
        let summary = Arc::new(CertSummary {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            san: Vec::new(),
            not_before: None,
            not_after: None,
            sha256: c.sha256.clone(),
            spki_sha256: String::new(),
            has_sct: c.has_sct,
            sct_delivered_in: Vec::new(),
            authority_key_id: c.authority_key_id.clone(),
            self_signed: false,
            chain_len: 0,
            chain: Vec::new(),
            parsed: true,
        });
        self.certs.insert(c.clone(), Arc::clone(&summary));
        summary
    }

    fn ja4(&mut self, ja4: &str) -> Arc<str> {
        if let Some(j) = self.ja4s.get(ja4) {
            return Arc::clone(j);
        }
        let j: Arc<str> = Arc::from(ja4);
        self.ja4s.insert(Arc::clone(&j));
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Observation {
        Observation {
            ts_start_ns: 1_765_000_000_123_456_789,
            name: Some("api.pinned.test".into()),
            ja4: Some(Arc::from("t13d1516h2_8daaf6152771_02713d6af862")),
            client_ip: "10.0.0.7".parse().unwrap(),
            client_port: 50123,
            server_ip: "192.0.2.1".parse().unwrap(),
            server_port: 443,
            outcome: Outcome::ClientAlert,
            signal: FailureSignal::Alert(AlertDescription::UNKNOWN_CA),
            abort_delay_ms: Some(1.5),
            client_rtt_ms: Some(0.2),
            server_rtt_ms: Some(0.3),
            server_hello_delay_ms: Some(12.5),
            cert: None,
            connect: false,
        }
    }

    #[test]
    fn an_observation_survives_the_wire() {
        let o = sample();
        let wire = WireObservation::of("s1", &o).unwrap();
        let back = WireObservation::decode(&wire.to_json()).unwrap();
        assert_eq!(back, wire);
        let mut cache = CertCache::default();
        let again = back.observation(&mut cache);
        assert_eq!(again.ts_start_ns, o.ts_start_ns);
        assert_eq!(again.signal, o.signal);
        assert_eq!(again.outcome, o.outcome);
        assert_eq!(again.ja4, o.ja4);
    }

    #[test]
    fn the_id_depends_on_sensor_flow_and_time_only() {
        let o = sample();
        let a = message_id("s1", &o);
        assert_eq!(a, message_id("s1", &o));
        assert_ne!(a, message_id("s2", &o));
        let mut later = o.clone();
        later.ts_start_ns += 1;
        assert_ne!(a, message_id("s1", &later));
        let mut other_outcome = o;
        other_outcome.outcome = Outcome::Established;
        assert_eq!(a, message_id("s1", &other_outcome));
    }

    #[test]
    fn hostile_messages_are_errors_not_panics() {
        let wire = WireObservation::of("s1", &sample()).unwrap();
        let json = String::from_utf8(wire.to_json()).unwrap();
        let newer = json.replace("pinwatch.observation/1", "pinwatch.observation/2");
        assert_eq!(
            WireObservation::decode(newer.as_bytes()),
            Err(DecodeError::Newer(2))
        );
        let bad_outcome = json.replace("client_alert", "exploded");
        assert!(matches!(
            WireObservation::decode(bad_outcome.as_bytes()),
            Err(DecodeError::UnknownOutcome(_))
        ));
        for junk in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"schema\":7}",
            b"{\"schema\":\"pinwatch.observation/x\"}",
            b"{\"schema\":\"pinwatch.observation/1\"}",
            b"\xff\xfe",
        ] {
            assert!(matches!(
                WireObservation::decode(junk),
                Err(DecodeError::Malformed(_))
            ));
        }
        let port = json.replace("50123", "70000");
        assert!(WireObservation::decode(port.as_bytes()).is_err());
        let huge = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(WireObservation::decode(&huge), Err(DecodeError::TooLarge));
    }
}
