//! Classify stage: turns what the flow and TLS stages saw into exactly one outcome per
//! connection, with who ended it, how, and how fast after the server's last handshake packet.
//! The outcomes are defined in the README; this module is the only place that decides them.

use serde::Serialize;

use crate::flow::Connection;
use crate::tls::{AlertEvent, At, Dir, Observations, Seen};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Established,
    ClientAlert,
    ClientClosedAfterHandshake,
    ClientClosedInHandshake,
    ClientClosedBeforeServerHello,
    ServerAbort,
    Incomplete,
    NotTls,
    Midstream,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Established,
        Outcome::ClientAlert,
        Outcome::ClientClosedAfterHandshake,
        Outcome::ClientClosedInHandshake,
        Outcome::ClientClosedBeforeServerHello,
        Outcome::ServerAbort,
        Outcome::Incomplete,
        Outcome::NotTls,
        Outcome::Midstream,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Established => "established",
            Outcome::ClientAlert => "client_alert",
            Outcome::ClientClosedAfterHandshake => "client_closed_after_handshake",
            Outcome::ClientClosedInHandshake => "client_closed_in_handshake",
            Outcome::ClientClosedBeforeServerHello => "client_closed_before_server_hello",
            Outcome::ServerAbort => "server_abort",
            Outcome::Incomplete => "incomplete",
            Outcome::NotTls => "not_tls",
            Outcome::Midstream => "midstream",
        }
    }
}

/// Why a client failure carries no abort delay. A missing delay is not a fast one: the scoring
/// must not weigh it like a measured millisecond abort, so the record says why it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DelayMissing {
    /// The client closed before any server handshake packet reached the wire.
    NoServerHandshakeBefore,
    /// The capture's clock runs backwards between the server's flight and the client's close.
    ClockOutOfOrder,
}

/// The classifier's answer for one connection.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub outcome: Outcome,
    /// Short machine-readable detail: the alert name, `encrypted`, how the client closed,
    /// where an incomplete connection stalled, the refused CONNECT status...
    pub detail: Option<String>,
    /// Who ended the connection first.
    pub closed_by: Option<Dir>,
    /// How each side closed, in order: `alert`, `encrypted_alert`, `close_notify`, `fin`, `rst`.
    pub client_close: Vec<&'static str>,
    pub server_close: Vec<&'static str>,
    /// Milliseconds from the server's last handshake packet to the client's abort.
    pub abort_delay_ms: Option<f64>,
    /// Set on a client failure whose abort delay could not be measured.
    pub delay_missing: Option<DelayMissing>,
    /// The alert that matters for the outcome, with its sender.
    pub alert: Option<(Dir, AlertEvent)>,
}

fn earliest(events: &[Option<At>]) -> Option<At> {
    events.iter().flatten().min().copied()
}

fn close_methods(
    alert: Option<&AlertEvent>,
    extra_alert: Option<&AlertEvent>,
    fin: Option<At>,
    rst: Option<At>,
) -> Vec<&'static str> {
    let mut ev: Vec<(At, &'static str)> = Vec::new();
    if let Some(a) = alert {
        let name = match (a.encrypted, a.description) {
            (false, Some(0)) => "close_notify",
            (false, _) => "alert",
            (true, _) => "encrypted_alert",
        };
        ev.push((a.at, name));
    }
    // TLS 1.3: one alert-sized record after the client's Finished is taken for close_notify.
    if let Some(a) = extra_alert {
        ev.push((a.at, "close_notify"));
    }
    if let Some(f) = fin {
        ev.push((f, "fin"));
    }
    if let Some(r) = rst {
        ev.push((r, "rst"));
    }
    ev.sort();
    ev.into_iter().map(|(_, n)| n).collect()
}

/// Decides the outcome of a finished connection.
pub fn classify(conn: &Connection) -> Verdict {
    let o = &conn.session.obs;
    let client_abort = o.client_alert().filter(|a| a.is_abort());
    let server_abort = o.server_alert().filter(|a| a.is_abort());
    let client_close_notify = o.client_alert().filter(|a| !a.is_abort()).map(|a| a.at);
    let post_hs = o.client_post_handshake_alert();
    let (client_ends, server_ends) = (conn.ends(Dir::Client), conn.ends(Dir::Server));

    let client_term = earliest(&[
        client_abort.map(|a| a.at),
        client_close_notify,
        post_hs.map(|a| a.at),
        client_ends.fin,
        client_ends.rst,
    ]);
    let server_term = earliest(&[server_abort.map(|a| a.at), server_ends.fin, server_ends.rst]);

    let closed_by = match (&client_term, &server_term) {
        (Some(c), Some(s)) => Some(if *c <= *s { Dir::Client } else { Dir::Server }),
        (Some(_), None) => Some(Dir::Client),
        (None, Some(_)) => Some(Dir::Server),
        (None, None) => None,
    };
    let mut v = Verdict {
        outcome: Outcome::Incomplete,
        detail: None,
        closed_by,
        client_close: close_methods(o.client_alert(), post_hs, client_ends.fin, client_ends.rst),
        server_close: close_methods(o.server_alert(), None, server_ends.fin, server_ends.rst),
        abort_delay_ms: None,
        delay_missing: None,
        alert: None,
    };

    // A mirror of one direction (asymmetric routing): nothing can be judged from half a
    // conversation, and calling it a failure would feed false evidence.
    if let Some(detail) = one_sided(conn) {
        v.outcome = Outcome::Incomplete;
        v.detail = Some(detail.into());
        v.alert = first_alert(o);
        return v;
    }

    if o.client_hello.is_none() {
        before_tls(conn, o, &mut v);
        v.alert = first_alert(o);
        return v;
    }

    // The capture lost the server's hello: nothing the client did can be judged.
    if o.server_hello.is_none() && o.has_anomaly("server_gap") {
        v.outcome = Outcome::Incomplete;
        v.detail = Some("server_hello_not_captured".into());
        v.alert = first_alert(o);
        return v;
    }

    // Application data from the client settles it, unless the client aborted before sending it.
    if let Some(app) = o.client_app()
        // The same packet can carry data, close_notify and FIN (TLS 1.2): records in one
        // segment come in stream order, and the data came first.
        && client_abort.is_none_or(|a| a.at.pkt() >= app)
    {
        v.outcome = Outcome::Established;
        v.alert = first_alert(o);
        return v;
    }

    let server_first = match (&client_term, &server_term) {
        (Some(c), Some(s)) => *s < *c,
        (None, Some(_)) => true,
        _ => false,
    };
    if server_first {
        v.outcome = Outcome::ServerAbort;
        v.alert = server_abort.map(|a| (Dir::Server, a.clone()));
        v.detail = Some(match server_abort {
            Some(a) => alert_detail(a),
            None => join(&v.server_close),
        });
        return v;
    }

    let Some(term) = client_term else {
        v.outcome = Outcome::Incomplete;
        v.detail = Some(stall(o).to_string());
        v.alert = first_alert(o);
        return v;
    };

    let timeline = o.timeline();
    // Decided by order on the wire: a ServerHello that arrives after the client closed does
    // not make the close an in-handshake one (a cancelled raced connection, a slow proxy).
    if timeline.server_hello.is_some_and(|sh| term < sh)
        && timeline.client_finished.is_none()
        && client_abort.is_none()
    {
        v.alert = o.client_alert().map(|a| (Dir::Client, a.clone()));
        v.detail = Some(join(&v.client_close));
        v.outcome = Outcome::ClientClosedBeforeServerHello;
        v.delay_missing = Some(DelayMissing::NoServerHandshakeBefore);
        return v;
    }
    match timeline.last_server_handshake.filter(|s| *s <= term) {
        // Milliseconds, to the microsecond. Saturating: times centuries apart overflowed
        // (fuzz_regressions.rs).
        Some(s) if term.ts_ns >= s.ts_ns => {
            v.abort_delay_ms =
                Some((term.ts_ns.saturating_sub(s.ts_ns) as f64 / 1000.0).round() / 1000.0);
        }
        // Packet order is not time order in a damaged or hostile capture: no delay, rather
        // than a measured zero.
        Some(_) => v.delay_missing = Some(DelayMissing::ClockOutOfOrder),
        None => v.delay_missing = Some(DelayMissing::NoServerHandshakeBefore),
    }

    // A readable fatal alert, or an encrypted one sent where the client's Finished would be.
    let in_handshake_alert =
        client_abort.filter(|a| !a.encrypted || timeline.client_finished.is_none_or(|f| a.at < f));
    if let Some(a) = in_handshake_alert {
        v.outcome = Outcome::ClientAlert;
        v.alert = Some((Dir::Client, a.clone()));
        v.detail = Some(alert_detail(a));
        return v;
    }
    v.alert = client_abort
        .or(post_hs)
        .or(o.client_alert())
        .map(|a| (Dir::Client, a.clone()));
    v.detail = Some(join(&v.client_close));
    v.outcome = if timeline.client_finished.is_some() {
        Outcome::ClientClosedAfterHandshake
    } else if o.server_hello.is_some() {
        Outcome::ClientClosedInHandshake
    } else {
        v.abort_delay_ms = None;
        v.delay_missing = Some(DelayMissing::NoServerHandshakeBefore);
        Outcome::ClientClosedBeforeServerHello
    };
    v
}

/// Names the direction a capture lacks: one side sent payload while the other has no packet
/// at all, or the client sent data without the server's SYN-ACK ever being seen after its SYN.
fn one_sided(conn: &Connection) -> Option<&'static str> {
    let (c, s) = (&conn.client, &conn.server);
    if c.payload_bytes > 0 && s.packets == 0 {
        Some("server_direction_not_captured")
    } else if s.payload_bytes > 0 && c.packets == 0 {
        Some("client_direction_not_captured")
    } else {
        None
    }
}

/// Connections without a ClientHello: CONNECT preludes, plain TCP, joined midstream.
fn before_tls(conn: &Connection, o: &Observations, v: &mut Verdict) {
    let payload = conn.client.payload_bytes + conn.server.payload_bytes;
    if let Some(proxy) = o.proxy()
        && let Some(reply) = &proxy.reply
        && !proxy.opened()
    {
        v.outcome = Outcome::ServerAbort;
        v.detail = Some(format!("connect_refused_{}", reply.status));
        return;
    }
    if o.connect_request().is_some() {
        if o.connect_reply().is_none() && o.has_anomaly("server_gap") {
            v.outcome = Outcome::Incomplete;
            v.detail = Some("connect_reply_not_captured".into());
            return;
        }
        if o.has(Seen::CLIENT_OPAQUE) {
            v.outcome = Outcome::NotTls;
            v.detail = Some("connect_tunnel_not_tls".into());
            return;
        }
        match v.closed_by {
            Some(Dir::Server) => {
                v.outcome = Outcome::ServerAbort;
                v.detail = Some(if o.connect_reply().is_some() {
                    "closed_before_client_hello".into()
                } else {
                    "closed_before_connect_reply".into()
                });
            }
            Some(Dir::Client) => {
                v.outcome = Outcome::ClientClosedBeforeServerHello;
                v.detail = Some(join(&v.client_close));
            }
            None => {
                v.outcome = Outcome::Incomplete;
                v.detail = Some(if o.connect_reply().is_some() {
                    "awaiting_client_hello".into()
                } else {
                    "awaiting_connect_reply".into()
                });
            }
        }
        return;
    }
    let saw_start = conn.client.syn() || conn.server.syn();
    if payload == 0 {
        v.outcome = if v.closed_by.is_some() || saw_start && !conn.server.syn() && conn.closed() {
            Outcome::NotTls
        } else {
            Outcome::Incomplete
        };
        v.detail = Some("no_payload".into());
        return;
    }
    if !saw_start {
        v.outcome = Outcome::Midstream;
        v.detail = Some(
            if o.has(Seen::CLIENT_TLS) || o.has(Seen::SERVER_TLS) {
                "tls_without_handshake"
            } else {
                "no_connection_start"
            }
            .into(),
        );
        return;
    }
    if o.has_anomaly("client_gap") && !o.has(Seen::CLIENT_OPAQUE) {
        v.outcome = Outcome::Incomplete;
        v.detail = Some("client_hello_not_captured".into());
        return;
    }
    v.outcome = Outcome::NotTls;
    v.detail = Some(
        if o.has(Seen::SSLV2_HELLO) {
            "sslv2_hello"
        } else {
            "not_tls"
        }
        .into(),
    );
}

/// Where a connection that nobody closed was left hanging.
fn stall(o: &Observations) -> &'static str {
    if o.server_hello.is_none() {
        return "awaiting_server_hello";
    }
    let timeline = o.timeline();
    if timeline.client_finished.is_some() {
        return "idle_after_handshake";
    }
    let flight_done = timeline.server_hello_done.is_some()
        || timeline.server_finished.is_some()
        || (o.tls13() && timeline.last_server_handshake > timeline.server_hello);
    if flight_done {
        "client_silent_after_server_flight"
    } else {
        "awaiting_server_flight"
    }
}

fn first_alert(o: &Observations) -> Option<(Dir, AlertEvent)> {
    let c = o.client_alert().map(|a| (Dir::Client, a.clone()));
    let s = o.server_alert().map(|a| (Dir::Server, a.clone()));
    match (c, s) {
        (Some(c), Some(s)) => Some(if c.1.at <= s.1.at { c } else { s }),
        (c, s) => c.or(s),
    }
}

fn alert_detail(a: &AlertEvent) -> String {
    match a.description {
        Some(d) if !a.encrypted => crate::tls::handshake::alert_name(d),
        _ => "encrypted".into(),
    }
}

fn join(parts: &[&str]) -> String {
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("+")
    }
}
