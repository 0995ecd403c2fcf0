//! TLS stage: follows both byte streams of one connection (after an optional HTTP CONNECT
//! prelude), frames TLS records, parses the plaintext handshake and notes, with the packet that
//! carried it, every event the classifier needs: hellos, certificate, change-cipher-spec,
//! Finished, alerts (plaintext or inferred encrypted), first application data.
//!
//! Only the record headers of encrypted traffic are read. Once the client has sent application
//! data nothing more can change the outcome, and the flow stage stops feeding bytes.

pub mod cert;
pub mod fingerprint;
pub mod handshake;
pub mod intern;
pub mod ocsp;

use compact_str::CompactString;

use crate::session::connect::{self, Exchange, Method, Reply, Request};
use crate::session::proxy_protocol::{self, Header as ProxyHeader};
use std::num::NonZeroU64;
use std::sync::Arc;

use crate::elapsed::Elapsed;
use cert::CertSummary;
use handshake::{ClientHello, Message, ServerHello};

/// The packet an event arrived in: capture time and global packet index (for ordering events
/// across the two directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct At {
    /// Packet indices start at 1, so `Option<At>` needs no tag: a connection keeps about twenty
    /// of them, and the tag cost 8 bytes each.
    pkt: NonZeroU64,
    pub ts_ns: i64,
}

impl At {
    /// An event in packet `pkt` (counted from 1; 0 is taken as 1) at capture time `ts_ns`.
    pub const fn new(pkt: u64, ts_ns: i64) -> At {
        let pkt = match NonZeroU64::new(pkt) {
            Some(p) => p,
            None => NonZeroU64::MIN,
        };
        At { pkt, ts_ns }
    }
    /// The packet's index in the run, from 1.
    pub const fn pkt(self) -> u64 {
        self.pkt.get()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Client,
    Server,
}

/// An alert as seen on the wire.
#[derive(Debug, Clone)]
pub struct AlertEvent {
    /// 1 warning, 2 fatal; `None` when encrypted.
    pub level: Option<u8>,
    pub description: Option<u8>,
    pub encrypted: bool,
    /// TLS 1.3: inferred from an alert-sized encrypted record, not read.
    pub inferred: bool,
    pub at: At,
}

impl AlertEvent {
    /// Fatal, or encrypted (and so possibly fatal). A plaintext close_notify is a close, not an abort.
    pub fn is_abort(&self) -> bool {
        !matches!((self.level, self.description), (_, Some(0)) | (Some(1), _))
    }
}

/// Everything the TLS stage learned about one connection.
#[derive(Debug, Default)]
pub struct Observations {
    /// The explicit-proxy prelude (HTTP CONNECT or SOCKS). Boxed: a connection without one
    /// carries 8 bytes for it.
    proxy: Option<Box<Exchange>>,
    pub client_hello: Option<ClientHello>,
    pub server_hello: Option<Arc<ServerHello>>,
    /// Shared with every connection that presented the same certificate message.
    pub cert: Option<Arc<CertSummary>>,
    /// When the handshake's steps happened; dropped once the client sent application data.
    timeline: Option<Box<Timeline>>,
    /// The packet that carried the client's first application data (its index orders it
    /// against the alerts; its time is not needed).
    client_app: Option<NonZeroU64>,
    /// Stream offsets of each direction's first application data record.
    client_app_offset: OptOffset,
    server_app_offset: OptOffset,
    /// Alerts seen before the outcome settled, and anomalies: boxed together, since most
    /// connections have neither.
    trouble: Option<Box<Trouble>>,
    /// What the streams were, as one bitset ([`Seen`]): six flags in the byte that six `bool`s
    /// would take six of, which leaves room for the two timings below.
    seen: Seen,
    /// The server's round trip at the sensor: from the client's SYN to the server's SYN-ACK
    /// (set by the flow stage, which has no room of its own for it).
    server_rtt: Elapsed,
    /// From the packet that completed the ClientHello to the ServerHello's: how long the
    /// server (or a proxy fetching the origin's certificate first) took to answer.
    hello_delay: Elapsed,
}

/// What a connection's streams turned out to be, a bit each.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen(u8);

impl Seen {
    /// The client's stream carried TLS records.
    pub const CLIENT_TLS: Seen = Seen(1);
    pub const SERVER_TLS: Seen = Seen(1 << 1);
    /// The client's stream started with something that is neither TLS nor CONNECT.
    pub const CLIENT_OPAQUE: Seen = Seen(1 << 2);
    pub const SERVER_OPAQUE: Seen = Seen(1 << 3);
    /// The client stream began with an SSLv2-compatible hello.
    pub const SSLV2_HELLO: Seen = Seen(1 << 4);
    /// The server answered with a HelloRetryRequest.
    pub const HELLO_RETRY: Seen = Seen(1 << 5);

    fn tls(dir: Dir) -> Seen {
        match dir {
            Dir::Client => Self::CLIENT_TLS,
            Dir::Server => Self::SERVER_TLS,
        }
    }
    fn opaque(dir: Dir) -> Seen {
        match dir {
            Dir::Client => Self::CLIENT_OPAQUE,
            Dir::Server => Self::SERVER_OPAQUE,
        }
    }
}

/// When the steps of a handshake happened. Only a connection whose client never sent
/// application data is judged by them (how far it got, how long the client took to abort), so
/// an established connection drops them: boxed, they cost its lifetime 8 bytes instead of 80.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// The packet that completed the first ClientHello.
    pub client_hello: Option<At>,
    pub server_hello: Option<At>,
    /// The server's last handshake packet (hello, certificate flight, CCS, Finished; in TLS 1.3
    /// its encrypted records sent before the client's Finished).
    pub last_server_handshake: Option<At>,
    pub server_hello_done: Option<At>,
    pub server_finished: Option<At>,
    pub client_finished: Option<At>,
    /// TLS 1.3: the encrypted record taken for the client's Finished is so far its only one,
    /// short enough to be a padded alert, and the server has not answered it. Padding makes a
    /// Finished and an alert the same size, so only what follows tells them apart (`conclude`).
    pub finished_unconfirmed: bool,
    /// TLS 1.3: length of the record taken for the client's Finished. An alert padded by the
    /// same rule is never longer.
    finished_len: u16,
    /// TLS 1.3: a client record after its Finished no longer than the Finished (data, or a
    /// padded close_notify/alert) and the stream offset of its header, held until what follows
    /// says which (`conclude`).
    pending_client_record: Option<(At, u64)>,
}

/// The stream offset of a direction's first application data record, if any, in 4 bytes: every
/// tracked connection keeps two. `u32::MAX` means none. A first record more than 4 GiB into a
/// stream (only a hostile one sends that much before any application data) is taken to start
/// at 4 GiB, which only makes the record's application byte count larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OptOffset(u32);

impl Default for OptOffset {
    fn default() -> Self {
        OptOffset(u32::MAX)
    }
}

impl OptOffset {
    fn get(self) -> Option<u64> {
        (self.0 != u32::MAX).then_some(u64::from(self.0))
    }
    fn set_once(&mut self, offset: u64) {
        if self.0 == u32::MAX {
            self.0 = offset.min(u64::from(u32::MAX - 1)) as u32;
        }
    }
}

/// What went wrong on one connection: alerts and anomalies.
#[derive(Debug, Default)]
struct Trouble {
    client: Option<AlertEvent>,
    server: Option<AlertEvent>,
    /// TLS 1.3: an alert-sized encrypted record after the client's Finished (close_notify or a
    /// post-handshake rejection).
    client_post_handshake: Option<AlertEvent>,
    /// Anomaly names, deduplicated, in order of first occurrence.
    anomalies: Vec<&'static str>,
}

/// The timeline of a connection that has none (yet, or any more).
static NO_TIMELINE: Timeline = Timeline {
    client_hello: None,
    server_hello: None,
    last_server_handshake: None,
    server_hello_done: None,
    server_finished: None,
    client_finished: None,
    finished_unconfirmed: false,
    finished_len: 0,
    pending_client_record: None,
};

impl Observations {
    /// Stream offset of the client's first application data record.
    pub fn client_app_offset(&self) -> Option<u64> {
        self.client_app_offset.get()
    }
    /// Stream offset of the server's first application data record.
    pub fn server_app_offset(&self) -> Option<u64> {
        self.server_app_offset.get()
    }
    /// Index of the packet that carried the client's first application data.
    pub fn client_app(&self) -> Option<u64> {
        self.client_app.map(NonZeroU64::get)
    }
    /// The client's first abort, else its first alert.
    pub fn client_alert(&self) -> Option<&AlertEvent> {
        self.trouble.as_ref()?.client.as_ref()
    }
    /// The server's first abort, else its first alert.
    pub fn server_alert(&self) -> Option<&AlertEvent> {
        self.trouble.as_ref()?.server.as_ref()
    }
    /// TLS 1.3: an alert-sized encrypted record after the client's Finished (close_notify or a
    /// post-handshake rejection).
    pub fn client_post_handshake_alert(&self) -> Option<&AlertEvent> {
        self.trouble.as_ref()?.client_post_handshake.as_ref()
    }
    fn trouble_mut(&mut self) -> &mut Trouble {
        self.trouble.get_or_insert_with(Box::default)
    }
    pub fn timeline(&self) -> &Timeline {
        self.timeline.as_deref().unwrap_or(&NO_TIMELINE)
    }
    pub fn has(&self, seen: Seen) -> bool {
        self.seen.0 & seen.0 != 0
    }
    fn mark(&mut self, seen: Seen) {
        self.seen.0 |= seen.0;
    }
    /// The server answered with a HelloRetryRequest.
    pub fn hello_retry(&self) -> bool {
        self.has(Seen::HELLO_RETRY)
    }
    /// From the ClientHello to the server's answer, as the sensor saw it.
    pub fn hello_delay_ns(&self) -> Option<i64> {
        self.hello_delay.ns()
    }
    /// The server's round trip at the sensor (SYN to SYN-ACK).
    pub fn server_rtt_ns(&self) -> Option<i64> {
        self.server_rtt.ns()
    }
    pub fn server_rtt(&self) -> Elapsed {
        self.server_rtt
    }
    /// The flow stage's measurement of [`Observations::server_rtt_ns`].
    pub fn set_server_rtt(&mut self, rtt: Elapsed) {
        self.server_rtt = rtt;
    }
    fn timeline_mut(&mut self) -> &mut Timeline {
        self.timeline.get_or_insert_with(Box::default)
    }
    /// The explicit-proxy prelude, if the connection had one.
    pub fn proxy(&self) -> Option<&Exchange> {
        self.proxy.as_deref()
    }
    pub fn connect_request(&self) -> Option<&Request> {
        self.proxy()?.request.as_ref()
    }
    pub fn connect_reply(&self) -> Option<&Reply> {
        self.proxy()?.reply.as_ref()
    }
    /// Replaces the request (a failed parse clears it) without making the box for nothing.
    fn set_connect_request(&mut self, request: Option<Request>) {
        if request.is_some() || self.proxy.is_some() {
            self.proxy.get_or_insert_with(Box::default).request = request;
        }
    }
    /// The load balancer's PROXY protocol header, if the client's stream began with one.
    pub fn proxy_protocol(&self) -> Option<&ProxyHeader> {
        self.proxy()?.proxy_protocol.as_ref()
    }
    fn set_proxy_protocol(&mut self, header: ProxyHeader) {
        self.proxy.get_or_insert_with(Box::default).proxy_protocol = Some(header);
    }
    fn set_connect_reply(&mut self, reply: Option<Reply>) {
        if reply.is_some() || self.proxy.is_some() {
            self.proxy.get_or_insert_with(Box::default).reply = reply;
        }
    }
    pub fn flag(&mut self, anomaly: &'static str) {
        if !self.has_anomaly(anomaly) {
            self.trouble_mut().anomalies.push(anomaly);
        }
    }
    /// Anomaly names, deduplicated, in order of first occurrence.
    pub fn anomalies(&self) -> &[&'static str] {
        self.trouble
            .as_deref()
            .map_or(&[], |t| t.anomalies.as_slice())
    }
    pub fn has_anomaly(&self, anomaly: &str) -> bool {
        self.anomalies().contains(&anomaly)
    }
    /// TLS 1.3 was negotiated (a HelloRetryRequest already implies it).
    pub fn tls13(&self) -> bool {
        self.server_hello.as_ref().is_some_and(|s| s.is_tls13())
    }
    /// Size of an encrypted alert record body in TLS 1.3: 2 bytes + content type + AEAD tag.
    fn tls13_alert_len(&self) -> usize {
        2 + 1 + self.tls13_tag_len()
    }
    /// AEAD tag length of the negotiated TLS 1.3 suite.
    fn tls13_tag_len(&self) -> usize {
        match self.server_hello.as_ref().map(|s| s.cipher) {
            Some(0x1305) => 8, // TLS_AES_128_CCM_8_SHA256
            _ => 16,
        }
    }
    /// Smallest record a TLS 1.3 Finished fits in: message header, verify data (the suite's
    /// hash length), content type, AEAD tag. A shorter encrypted record cannot be a Finished.
    fn tls13_min_finished_len(&self) -> usize {
        let hash = match self.server_hello.as_ref().map(|s| s.cipher) {
            Some(0x1302) => 48, // TLS_AES_256_GCM_SHA384
            _ => 32,
        };
        4 + hash + 1 + self.tls13_tag_len()
    }
}

/// Bytes an incomplete handshake message lacks: the rest of its 4-byte header, else the rest
/// of its body (none for a message over `cap`, which is skipped rather than held).
fn message_lack(held: &[u8], cap: usize) -> usize {
    match held {
        [_, a, b, c, ..] => {
            let total = 4 + u32::from_be_bytes([0, *a, *b, *c]) as usize;
            if total > cap {
                0
            } else {
                total.saturating_sub(held.len())
            }
        }
        _ => 4 - held.len(),
    }
}

/// Largest record body TLS allows (2^14 plus the expansion allowances).
const MAX_RECORD_BODY: usize = (1 << 14) + 2048;
/// An emptied handshake buffer with more capacity than this is freed.
const KEEP_EMPTY_BUFFER: usize = 1024;
/// A CONNECT request or reply head longer than this is not a proxy handshake.
const MAX_HTTP_HEAD: usize = 8192;
/// TLS 1.3: the longest record still taken for a possibly padded alert (1 KiB of padded
/// plaintext plus the largest AEAD expansion TLS allows). A longer lone record is a Finished
/// (with a client certificate flight, say), never an alert.
const MAX_PADDED_ALERT_RECORD: usize = 1024 + 256;

/// RFC 6962: the SCT list as a TLS extension.
const EXT_SIGNED_CERTIFICATE_TIMESTAMP: u16 = 18;

const CONTENT_CCS: u8 = 20;
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPDATA: u8 = 23;
const CONTENT_HEARTBEAT: u8 = 24;

#[derive(Debug)]
enum Mode {
    /// Nothing decided yet; the first bytes are held until they say what the stream is.
    Start(Vec<u8>),
    HttpHead(Vec<u8>),
    /// SOCKS prelude bytes held until complete.
    Socks(Vec<u8>),
    /// A PROXY protocol header held until complete.
    ProxyHeader(Vec<u8>),
    /// An SSLv2-format ClientHello record held until complete (at most 2 + 32767 bytes).
    Sslv2Hello(Vec<u8>),
    Tls,
    /// Not TLS (or lost beyond recovery): bytes are only counted.
    Opaque,
    /// A gap broke the record framing; look for a record header at the next segment start.
    Resync,
}

/// Record framing state of one direction.
#[derive(Debug)]
struct DirState {
    mode: Mode,
    header: [u8; 5],
    header_len: u8,
    body_left: u16,
    record_type: u8,
    record_len: u16,
    /// Stream offset of the current record's header.
    record_start: u64,
    /// The first two body bytes of an alert record: level and description, when it is a
    /// plaintext alert (exactly two bytes long).
    alert_body: [u8; 2],
    /// Plaintext handshake bytes not yet parsed into whole messages.
    handshake: Vec<u8>,
    /// Bytes of an oversized handshake message still to discard.
    handshake_skip: usize,
    /// This direction sent ChangeCipherSpec (TLS <= 1.2): its later handshake is encrypted.
    ccs: bool,
}

impl DirState {
    /// Takes the piece of an alert record's body that starts `at` bytes into it.
    fn collect_alert(&mut self, at: usize, piece: &[u8]) {
        for (slot, byte) in self.alert_body.iter_mut().skip(at).zip(piece) {
            *slot = *byte;
        }
    }

    fn new() -> Self {
        DirState::in_mode(Mode::Start(Vec::new()))
    }

    const fn in_mode(mode: Mode) -> Self {
        DirState {
            mode,
            header: [0; 5],
            header_len: 0,
            body_left: 0,
            record_type: 0,
            record_len: 0,
            record_start: 0,
            alert_body: [0; 2],
            handshake: Vec::new(),
            handshake_skip: 0,
            ccs: false,
        }
    }
}

/// The parsing state of both directions, needed only until the session is settled.
#[derive(Debug)]
struct Framing {
    client: DirState,
    server: DirState,
    /// Cap on buffered handshake bytes per direction.
    handshake_cap: usize,
    /// The client opened with a SOCKS prelude of this version (the proxy answers in kind,
    /// SOCKS5 even before the client's request is complete).
    socks_version: Option<u8>,
}

/// How a direction looks once its framing state is gone: nothing more is parsed.
static SETTLED: DirState = DirState::in_mode(Mode::Opaque);

/// Both directions of one connection.
#[derive(Debug)]
pub struct Session {
    /// Dropped when the session settles: a tracked connection then keeps only what it learned.
    framing: Option<Box<Framing>>,
    pub obs: Observations,
}

impl Session {
    pub fn new(handshake_cap: usize) -> Self {
        Session {
            framing: Some(Box::new(Framing {
                client: DirState::new(),
                server: DirState::new(),
                handshake_cap,
                socks_version: None,
            })),
            obs: Observations::default(),
        }
    }

    /// True once nothing in the byte streams can change the outcome: the client sent
    /// application data, or neither side speaks TLS.
    pub fn settled(&self) -> bool {
        self.obs.client_app.is_some()
            || (matches!(self.state(Dir::Client).mode, Mode::Opaque)
                && matches!(self.state(Dir::Server).mode, Mode::Opaque))
    }

    /// Whether a direction's bytes are still wanted.
    pub fn wants(&self, dir: Dir) -> bool {
        if self.settled() {
            return false;
        }
        !matches!(self.state(dir).mode, Mode::Opaque)
    }

    fn state(&self, dir: Dir) -> &DirState {
        match (self.framing.as_deref(), dir) {
            (None, _) => &SETTLED,
            (Some(f), Dir::Client) => &f.client,
            (Some(f), Dir::Server) => &f.server,
        }
    }

    /// In-order bytes of one direction.
    pub fn feed(&mut self, dir: Dir, offset: u64, mut bytes: &[u8], at: At) {
        if self.framing.is_none() {
            return;
        }
        let mut offset = offset;
        // Stops where the connection settles, not at the end of the segment: what follows the
        // client's first application data (a close_notify in the same segment, say) is never
        // read, so the record does not depend on how the sender cut its segments.
        while !bytes.is_empty() && !self.settled() {
            let used = self.step(dir, offset, bytes, at);
            if used == 0 {
                break;
            }
            bytes = &bytes[used..];
            offset += used as u64;
        }
        self.drop_framing_if_settled();
    }

    /// Parsed flights leave buffers behind (a certificate chain: kilobytes per connection for
    /// as long as it lives); once settled, the whole framing state goes.
    fn drop_framing_if_settled(&mut self) {
        if self.settled() {
            self.framing = None;
            if self.obs.client_app.is_some() {
                self.obs.timeline = None;
            }
        }
    }

    /// Bytes the capture lost in one direction.
    pub fn gap(&mut self, dir: Dir) {
        let name = match dir {
            Dir::Client => "client_gap",
            Dir::Server => "server_gap",
        };
        self.obs.flag(name);
        if self.framing.is_none() {
            return;
        }
        let st = self.state_mut(dir);
        st.handshake.clear();
        st.handshake_skip = 0;
        st.header_len = 0;
        st.body_left = 0;
        st.mode = match st.mode {
            Mode::Tls | Mode::Resync => Mode::Resync,
            Mode::Start(_)
            | Mode::HttpHead(_)
            | Mode::Socks(_)
            | Mode::ProxyHeader(_)
            | Mode::Sslv2Hello(_)
            | Mode::Opaque => Mode::Opaque,
        };
        self.drop_framing_if_settled();
    }

    /// The framing state, made again in the settled form if it is gone. Only the parsing
    /// path asks for it, and that path does not run once a session is settled.
    fn framing_mut(&mut self) -> &mut Framing {
        self.framing.get_or_insert_with(|| {
            Box::new(Framing {
                client: DirState::in_mode(Mode::Opaque),
                server: DirState::in_mode(Mode::Opaque),
                handshake_cap: 0,
                socks_version: None,
            })
        })
    }

    fn state_mut(&mut self, dir: Dir) -> &mut DirState {
        let framing = self.framing_mut();
        match dir {
            Dir::Client => &mut framing.client,
            Dir::Server => &mut framing.server,
        }
    }

    /// Consumes a prefix of `bytes`; returns how much.
    fn step(&mut self, dir: Dir, offset: u64, bytes: &[u8], at: At) -> usize {
        match self.state(dir).mode {
            Mode::Tls => return self.records(dir, offset, bytes, at),
            Mode::Opaque => return bytes.len(),
            Mode::Resync => {
                if !plausible_record_start(bytes) {
                    return bytes.len();
                }
                self.obs.flag("tls_resynced");
                self.state_mut(dir).mode = Mode::Tls;
                return self.records(dir, offset, bytes, at);
            }
            Mode::Start(_)
            | Mode::HttpHead(_)
            | Mode::Socks(_)
            | Mode::ProxyHeader(_)
            | Mode::Sslv2Hello(_) => {}
        }
        let (mode, used) = match std::mem::replace(&mut self.state_mut(dir).mode, Mode::Opaque) {
            Mode::Start(held) => self.start(dir, held, offset, bytes, at),
            Mode::HttpHead(head) => self.http_head(dir, head, bytes),
            Mode::Socks(held) => self.socks(dir, held, bytes),
            Mode::ProxyHeader(held) => self.proxy_header(held, bytes),
            Mode::Sslv2Hello(held) => self.sslv2_hello(held, bytes),
            other => (other, 0),
        };
        self.state_mut(dir).mode = mode;
        used
    }

    /// Decides what a stream is from its first bytes.
    fn start(
        &mut self,
        dir: Dir,
        mut held: Vec<u8>,
        offset: u64,
        bytes: &[u8],
        at: At,
    ) -> (Mode, usize) {
        const NEED: usize = 8;
        let take = (NEED - held.len().min(NEED)).min(bytes.len());
        held.extend_from_slice(&bytes[..take]);
        let awaiting_reply =
            self.obs.connect_request().is_some() && self.obs.connect_reply().is_none();
        let socks_reply =
            self.framing_mut().socks_version.is_some() && self.obs.connect_reply().is_none();
        // A load balancer's PROXY header comes first, once, before CONNECT or TLS.
        let proxy_header = dir == Dir::Client
            && self.obs.proxy_protocol().is_none()
            && proxy_protocol::may_start(&held);
        let verdict = if dir == Dir::Server && socks_reply {
            StartVerdict::Socks
        } else if proxy_header {
            StartVerdict::ProxyProtocol
        } else {
            classify_start(dir, &held, awaiting_reply)
        };
        let mode = match verdict {
            StartVerdict::NeedMore => return (Mode::Start(held), take),
            StartVerdict::Http => Mode::HttpHead(Vec::new()),
            StartVerdict::ProxyProtocol => Mode::ProxyHeader(Vec::new()),
            StartVerdict::Socks => {
                if dir == Dir::Client {
                    self.framing_mut().socks_version = held.first().copied();
                }
                Mode::Socks(Vec::new())
            }
            StartVerdict::Tls => {
                self.obs.mark(Seen::tls(dir));
                Mode::Tls
            }
            StartVerdict::Sslv2 => {
                self.obs.mark(Seen::SSLV2_HELLO);
                self.obs.flag("sslv2_hello");
                Mode::Sslv2Hello(Vec::new())
            }
            StartVerdict::Opaque => {
                self.obs.mark(Seen::opaque(dir));
                Mode::Opaque
            }
        };
        // Replay the held bytes (those from earlier segments plus this one's) in the new mode.
        let earlier = held.len() - take;
        let start_offset = offset - earlier as u64;
        self.state_mut(dir).mode = mode;
        self.feed(dir, start_offset, &held, at);
        let mode = std::mem::replace(&mut self.state_mut(dir).mode, Mode::Opaque);
        (mode, take)
    }

    /// The client's SSLv2-format ClientHello (a client that can speak SSL 2.0 offering SSL 3.0
    /// or TLS): held until its record is whole, read into a ClientHello, then the stream goes
    /// on as TLS records (the server answers with an SSL 3.0/TLS ServerHello).
    fn sslv2_hello(&mut self, mut held: Vec<u8>, bytes: &[u8]) -> (Mode, usize) {
        let mut take = 2usize.saturating_sub(held.len()).min(bytes.len());
        held.extend_from_slice(&bytes[..take]);
        let [high, low, ..] = held[..] else {
            return (Mode::Sslv2Hello(held), take);
        };
        let total = 2 + ((usize::from(high & 0x7f) << 8) | usize::from(low));
        let more = (total - held.len().min(total)).min(bytes.len() - take);
        held.extend_from_slice(&bytes[take..take + more]);
        take += more;
        if held.len() < total {
            return (Mode::Sslv2Hello(held), take);
        }
        match handshake::parse_sslv2_hello(&held[2..]) {
            Some(hello) => {
                self.obs.client_hello = Some(hello);
                self.obs.mark(Seen::CLIENT_TLS);
                (Mode::Tls, take)
            }
            None => {
                self.obs.flag("malformed_hello");
                self.obs.mark(Seen::CLIENT_OPAQUE);
                (Mode::Opaque, take)
            }
        }
    }

    fn http_head(&mut self, dir: Dir, mut head: Vec<u8>, bytes: &[u8]) -> (Mode, usize) {
        let before = head.len();
        let room = MAX_HTTP_HEAD.saturating_sub(before);
        head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        let Some(end) = connect::head_end(&head) else {
            if head.len() >= MAX_HTTP_HEAD {
                self.obs.flag("http_head_too_long");
                return (Mode::Opaque, bytes.len());
            }
            return (Mode::HttpHead(head), bytes.len());
        };
        let used = end - before;
        let tunnel_open = match dir {
            Dir::Client => {
                self.obs
                    .set_connect_request(connect::parse_request(&head[..end]));
                self.obs.connect_request().is_some()
            }
            Dir::Server => {
                self.obs
                    .set_connect_reply(connect::parse_response(&head[..end]));
                self.obs.proxy().is_some_and(Exchange::opened)
            }
        };
        if tunnel_open {
            (Mode::Start(Vec::new()), used)
        } else {
            self.obs.mark(Seen::opaque(dir));
            (Mode::Opaque, bytes.len())
        }
    }

    fn proxy_header(&mut self, mut held: Vec<u8>, bytes: &[u8]) -> (Mode, usize) {
        use proxy_protocol::{MAX_HEADER_LEN, Parse};
        let before = held.len();
        let room = MAX_HEADER_LEN.saturating_sub(before);
        held.extend_from_slice(&bytes[..room.min(bytes.len())]);
        match proxy_protocol::parse(&held) {
            Parse::NeedMore if held.len() < MAX_HEADER_LEN => {
                (Mode::ProxyHeader(held), bytes.len())
            }
            Parse::NeedMore | Parse::Invalid => {
                if held.starts_with(proxy_protocol::V1_PREFIX)
                    || held.starts_with(&proxy_protocol::V2_SIGNATURE)
                {
                    self.obs.flag("proxy_protocol_not_understood");
                }
                self.obs.mark(Seen::CLIENT_OPAQUE);
                (Mode::Opaque, bytes.len())
            }
            Parse::Header { len, header } => {
                self.obs.set_proxy_protocol(header);
                (Mode::Start(Vec::new()), len.saturating_sub(before))
            }
        }
    }

    fn socks(&mut self, dir: Dir, mut held: Vec<u8>, bytes: &[u8]) -> (Mode, usize) {
        use crate::session::socks::{self, Prelude};
        let before = held.len();
        let room = socks::MAX_PRELUDE.saturating_sub(before);
        held.extend_from_slice(&bytes[..room.min(bytes.len())]);
        let version = self.framing_mut().socks_version.unwrap_or(5);
        let parsed = match dir {
            Dir::Client => socks::client(&held),
            Dir::Server => socks::server(&held, version),
        };
        let len = match parsed {
            Prelude::NeedMore if held.len() < socks::MAX_PRELUDE => {
                return (Mode::Socks(held), bytes.len());
            }
            Prelude::NeedMore | Prelude::Invalid => {
                self.obs.flag("socks_not_understood");
                return (Mode::Opaque, bytes.len());
            }
            Prelude::Client {
                len,
                version,
                target,
            } => {
                let method = if version == 4 {
                    Method::Socks4
                } else {
                    Method::Socks5
                };
                self.obs.set_connect_request(Some(Request {
                    method,
                    target: CompactString::new(target),
                }));
                len
            }
            Prelude::Server { len, code } => {
                self.obs.set_connect_reply(Some(Reply {
                    status: u16::from(code),
                    reason: CompactString::default(),
                }));
                len
            }
        };
        let tunnel_open = dir == Dir::Client || self.obs.proxy().is_some_and(Exchange::opened);
        let used = len.saturating_sub(before).min(bytes.len());
        if tunnel_open {
            (Mode::Start(Vec::new()), used)
        } else {
            (Mode::Opaque, bytes.len())
        }
    }

    /// Frames TLS records; returns bytes consumed.
    fn records(&mut self, dir: Dir, offset: u64, bytes: &[u8], at: At) -> usize {
        let st = self.state_mut(dir);
        if st.body_left == 0 {
            if st.header_len == 0 {
                st.record_start = offset;
            }
            let have = usize::from(st.header_len);
            let take = (5 - have).min(bytes.len());
            st.header[have..have + take].copy_from_slice(&bytes[..take]);
            if have + take < 5 {
                st.header_len = (have + take) as u8;
                return take;
            }
            st.header_len = 0;
            let h = st.header;
            let len = u16::from_be_bytes([h[3], h[4]]);
            if !valid_header(&h) {
                self.desync(dir);
                return take;
            }
            st.record_type = h[0];
            st.record_len = len;
            st.body_left = len;
            if len == 0 {
                self.record_end(dir, at);
            }
            return take;
        }
        let take = usize::from(st.body_left).min(bytes.len());
        let body = &bytes[..take];
        let body_at = usize::from(st.record_len - st.body_left);
        st.body_left -= take as u16;
        match st.record_type {
            CONTENT_HANDSHAKE if !st.ccs => self.handshake_bytes(dir, body, at),
            CONTENT_ALERT => st.collect_alert(body_at, body),
            _ => {}
        }
        let st = self.state_mut(dir);
        if st.body_left == 0 {
            // An empty handshake buffer is kept within a record (a flight split over many
            // segments would otherwise free and regrow it for each) but not past it: a
            // connection that stays unsettled, such as a client that rejected the certificate
            // and went quiet, would carry it for as long as it is tracked.
            if st.handshake.is_empty() {
                st.handshake = Vec::new();
            }
            self.record_end(dir, at);
        }
        take
    }

    fn desync(&mut self, dir: Dir) {
        self.obs.flag(match dir {
            Dir::Client => "client_not_tls_after_start",
            Dir::Server => "server_not_tls_after_start",
        });
        let st = self.state_mut(dir);
        st.mode = Mode::Opaque;
        st.handshake = Vec::new();
    }

    fn handshake_bytes(&mut self, dir: Dir, body: &[u8], at: At) {
        let cap = self.framing_mut().handshake_cap;
        let mut body = self.skip_oversized(dir, body);
        // Whole messages are parsed where they lie; only an incomplete one is copied and held
        // until the rest arrives. The held message takes only the bytes it lacks: copying the
        // whole segment behind it grew the buffer to the segment's size for nothing.
        let mut held = std::mem::take(&mut self.state_mut(dir).handshake);
        if !held.is_empty() {
            // Twice: a held header fragment first, then the body its completed header announces.
            for _ in 0..2 {
                let lack = message_lack(&held, cap).min(body.len());
                held.extend_from_slice(&body[..lack]);
                body = &body[lack..];
            }
            // Either the held message is whole now (or over the cap), or `body` is used up.
            let used = self.whole_messages(dir, &held, cap, at);
            held.drain(..used);
            body = self.skip_oversized(dir, body);
        }
        if held.is_empty() {
            let used = self.whole_messages(dir, body, cap, at);
            held.extend_from_slice(&body[used..]);
        }
        // A parsed flight (a certificate chain split over records) leaves kilobytes of capacity
        // behind for as long as the connection stays unsettled. Small buffers are kept: freeing
        // and regrowing them for every tiny record would churn the allocator.
        if held.is_empty() && held.capacity() > KEEP_EMPTY_BUFFER {
            held = Vec::new();
        }
        self.state_mut(dir).handshake = held;
    }

    /// Drops the bytes of an oversized message still to be discarded from the front of `body`.
    fn skip_oversized<'b>(&mut self, dir: Dir, body: &'b [u8]) -> &'b [u8] {
        let st = self.state_mut(dir);
        let n = st.handshake_skip.min(body.len());
        st.handshake_skip -= n;
        &body[n..]
    }

    /// Parses the whole messages at the front of `buf`; returns the bytes consumed. Messages are
    /// read at a cursor: draining each from the front of a buffer moved the rest of the record
    /// every time, quadratic in the record size (a 16 KiB record holds 4096 empty messages).
    fn whole_messages(&mut self, dir: Dir, buf: &[u8], cap: usize, at: At) -> usize {
        let mut pos = 0;
        while let Some(h) = buf.get(pos..pos + 4) {
            let (kind, len) = (h[0], u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize);
            if 4 + len > cap {
                // Larger than anything worth buffering (a 16 MiB claim, or a huge chain):
                // skip it without allocating and say so. Bytes after it stay (a small cap
                // and a large record can hold both).
                let have = buf.len() - pos - 4;
                if have >= len {
                    pos += 4 + len;
                } else {
                    self.state_mut(dir).handshake_skip = len - have;
                    pos = buf.len();
                }
                self.obs.flag("handshake_message_over_cap");
                self.message_skipped(dir, kind, at);
                continue;
            }
            let Some(msg) = buf.get(pos..pos + 4 + len) else {
                break;
            };
            self.message(dir, msg, at);
            pos += 4 + len;
        }
        pos
    }

    /// An oversized message still moves the handshake forward.
    fn message_skipped(&mut self, dir: Dir, kind: u8, at: At) {
        if dir == Dir::Server {
            self.obs.timeline_mut().last_server_handshake = Some(at);
            if kind == 11 {
                self.obs.flag("certificate_not_parsed");
            }
        }
    }

    fn message(&mut self, dir: Dir, msg: &[u8], at: At) {
        let parsed = handshake::parse(msg);
        if dir == Dir::Server {
            self.obs.timeline_mut().last_server_handshake = Some(at);
        }
        match (dir, parsed) {
            (Dir::Client, Message::ClientHello(ch)) => {
                if self.obs.client_hello.is_none() {
                    self.obs.client_hello = Some(ch);
                    self.obs.timeline_mut().client_hello = Some(at);
                } else if !self.obs.has(Seen::HELLO_RETRY) {
                    self.obs.flag("duplicate_client_hello");
                }
            }
            (Dir::Server, Message::ServerHello(sh)) => {
                if sh.hello_retry {
                    self.obs.mark(Seen::HELLO_RETRY);
                }
                // The first answer to the first ClientHello, retry request or not.
                if self.obs.server_hello.is_none()
                    && let Some(hello) = self.obs.timeline().client_hello
                {
                    self.obs.hello_delay = Elapsed::between(hello.ts_ns, at.ts_ns);
                }
                if self
                    .obs
                    .server_hello
                    .as_ref()
                    .is_none_or(|prev| prev.hello_retry)
                {
                    self.obs.server_hello = Some(sh);
                    self.obs.timeline_mut().server_hello = Some(at);
                }
            }
            (Dir::Server, Message::Certificate(chain)) if self.obs.cert.is_none() => {
                self.obs.cert = cert::summarize_shared(msg, &chain);
                let sct_extension = self.obs.server_hello.as_ref().is_some_and(|sh| {
                    !sh.is_tls13() && sh.extensions.contains(&EXT_SIGNED_CERTIFICATE_TIMESTAMP)
                });
                if sct_extension {
                    self.sct_delivered_in("tls_extension");
                }
            }
            (Dir::Server, Message::CertificateStatus(true)) => {
                self.sct_delivered_in("ocsp_response");
            }
            (Dir::Server, Message::ServerHelloDone) => {
                self.obs.timeline_mut().server_hello_done = Some(at)
            }
            (_, Message::Malformed(kind)) => {
                self.obs.flag(if kind == 1 || kind == 2 {
                    "malformed_hello"
                } else {
                    "malformed_handshake_message"
                });
            }
            _ => {}
        }
    }

    /// The leaf's SCTs came beside it (`source`): this connection's summary says so. The shared
    /// summary is of the certificate alone, so the connection takes its own copy.
    fn sct_delivered_in(&mut self, source: &'static str) {
        let Some(shared) = self.obs.cert.as_ref() else {
            return;
        };
        if shared.sct_delivered_in.contains(&source) {
            return;
        }
        let mut own = CertSummary::clone(shared);
        own.has_sct = true;
        own.sct_delivered_in.push(source);
        self.obs.cert = Some(Arc::new(own));
    }

    /// A whole record has been read; note what it means for the handshake.
    fn record_end(&mut self, dir: Dir, at: At) {
        let st = self.state(dir);
        let (kind, len, ccs, offset) = (st.record_type, st.record_len, st.ccs, st.record_start);
        let tls13 = self.obs.tls13();
        match (dir, kind) {
            (_, CONTENT_CCS) => {
                // In TLS 1.3 the CCS is a compatibility no-op and does not mean encryption starts
                // for the record layer as TLS 1.2 parsing sees it.
                if !tls13 {
                    self.state_mut(dir).ccs = true;
                }
                if dir == Dir::Server {
                    self.obs.timeline_mut().last_server_handshake = Some(at);
                }
            }
            (Dir::Client, CONTENT_HANDSHAKE) if ccs => {
                self.obs.timeline_mut().client_finished.get_or_insert(at);
            }
            (Dir::Server, CONTENT_HANDSHAKE) if ccs => {
                self.obs.timeline_mut().server_finished.get_or_insert(at);
                self.obs.timeline_mut().last_server_handshake = Some(at);
            }
            (_, CONTENT_ALERT) => self.alert(dir, len, ccs || tls13, at),
            (Dir::Client, CONTENT_APPDATA) => self.client_appdata(offset, usize::from(len), at),
            (Dir::Server, CONTENT_APPDATA) => {
                if tls13
                    && self.obs.timeline().client_finished.is_none()
                    && self.obs.client_alert().is_none()
                {
                    // The server's encrypted handshake flight.
                    self.obs.timeline_mut().last_server_handshake = Some(at);
                } else {
                    if tls13 && self.obs.timeline().finished_unconfirmed {
                        // The server answered the record taken for the Finished (its session
                        // tickets, its data): it was one, whatever its padded size.
                        self.obs.timeline_mut().finished_unconfirmed = false;
                    }
                    // Counted as it was before a held client record deferred the settling:
                    // from the server's first record after the client's Finished, up to the
                    // client's first data, not past it.
                    if self.obs.timeline().pending_client_record.is_none() {
                        self.obs.server_app_offset.set_once(offset);
                    }
                }
            }
            (_, CONTENT_HEARTBEAT) => self.obs.flag("heartbeat"),
            _ => {}
        }
    }

    fn alert(&mut self, dir: Dir, len: u16, after_encryption: bool, at: At) {
        // A record ends only once its whole body went through `records`.
        let body = self.state(dir).alert_body;
        let event = if len == 2 {
            AlertEvent {
                level: Some(body[0]),
                description: Some(body[1]),
                encrypted: false,
                inferred: false,
                at,
            }
        } else {
            if !after_encryption {
                self.obs.flag("odd_alert_length");
            }
            AlertEvent {
                level: None,
                description: None,
                encrypted: true,
                inferred: false,
                at,
            }
        };
        let alerts = self.obs.trouble_mut();
        let slot = match dir {
            Dir::Client => &mut alerts.client,
            Dir::Server => &mut alerts.server,
        };
        // Keep the first abort; a later close_notify does not replace it.
        if slot
            .as_ref()
            .is_none_or(|prev| !prev.is_abort() && event.is_abort())
        {
            *slot = Some(event);
        }
    }

    fn client_appdata(&mut self, offset: u64, len: usize, at: At) {
        if self.obs.tls13() {
            let alert_len = self.obs.tls13_alert_len();
            if self.obs.timeline().client_finished.is_none() && self.obs.client_alert().is_none() {
                // Where the client's Finished would be: a record too short for one is an
                // alert, padded or not. A longer one may still be a padded alert: it stays
                // unconfirmed until a second record or the server's answer shows a Finished.
                if len == alert_len || len < self.obs.tls13_min_finished_len() {
                    self.set_inferred_client_alert(at);
                } else {
                    let t = self.obs.timeline_mut();
                    t.client_finished = Some(at);
                    t.finished_len = u16::try_from(len).unwrap_or(u16::MAX);
                    t.finished_unconfirmed = len <= MAX_PADDED_ALERT_RECORD;
                }
                return;
            }
            // A second record: the first was the Finished. A held short record followed by
            // another one was data (an alert ends the stream).
            self.obs.timeline_mut().finished_unconfirmed = false;
            if let Some((held, held_offset)) = self.obs.timeline_mut().pending_client_record.take()
            {
                self.set_client_app(held_offset, held);
                return;
            }
            if self.obs.client_app.is_none()
                && len == alert_len
                && self.obs.client_post_handshake_alert().is_none()
            {
                self.obs.trouble_mut().client_post_handshake = Some(inferred_alert(at));
                return;
            }
            let finished_len = usize::from(self.obs.timeline().finished_len);
            if self.obs.client_app.is_none()
                && self.obs.client_post_handshake_alert().is_none()
                && len <= finished_len
            {
                self.obs.timeline_mut().pending_client_record = Some((at, offset));
                return;
            }
        } else if self.obs.server_hello.is_none() {
            // Before any ServerHello only 0-RTT early data can be application data; without an
            // early_data offer the ServerHello was lost and this is the client's encrypted
            // handshake, which must not pass for data.
            self.obs.flag("client_data_before_server_hello");
            let handshake_without_early_data = self
                .obs
                .client_hello
                .as_ref()
                .is_some_and(|ch| !ch.print.fields.extensions.contains(&42));
            if handshake_without_early_data {
                return;
            }
        }
        self.set_client_app(offset, at);
    }

    fn set_client_app(&mut self, offset: u64, at: At) {
        if self.obs.client_app.is_none() {
            self.obs.client_app = Some(at.pkt);
            self.obs.client_app_offset.set_once(offset);
        }
    }

    fn set_inferred_client_alert(&mut self, at: At) {
        self.obs.trouble_mut().client = Some(inferred_alert(at));
    }

    /// The connection is over: settles what only the rest of the connection could tell, given
    /// when each side first sent FIN or RST. TLS 1.3 with padded records:
    /// - the client's only encrypted record, unanswered by the server, then the client's close:
    ///   an encrypted alert sent instead of the Finished;
    /// - a held short record after the Finished, then the client's close before the server's:
    ///   a close_notify or alert (a pin check after the handshake). Had the server closed first,
    ///   it was data the server answered, and a late close_notify would be a record after it.
    pub fn conclude(&mut self, client_close: Option<At>, server_close: Option<At>) {
        let Some(client_close) = client_close else {
            self.confirm_pending_as_data();
            return;
        };
        if self.obs.timeline().finished_unconfirmed && self.obs.client_app.is_none() {
            let t = self.obs.timeline_mut();
            t.finished_unconfirmed = false;
            if let Some(at) = t.client_finished.take() {
                self.set_inferred_client_alert(at);
            }
            return;
        }
        let client_first = server_close.is_none_or(|s| client_close < s);
        if client_first && let Some((at, _)) = self.obs.timeline().pending_client_record {
            self.obs.timeline_mut().pending_client_record = None;
            self.obs.trouble_mut().client_post_handshake = Some(inferred_alert(at));
            return;
        }
        self.confirm_pending_as_data();
    }

    fn confirm_pending_as_data(&mut self) {
        if let Some((at, offset)) = self.obs.timeline().pending_client_record {
            self.obs.timeline_mut().pending_client_record = None;
            self.set_client_app(offset, at);
        }
    }
}

/// An encrypted alert inferred from a TLS 1.3 record's place and size, not read.
fn inferred_alert(at: At) -> AlertEvent {
    AlertEvent {
        level: None,
        description: None,
        encrypted: true,
        inferred: true,
        at,
    }
}

enum StartVerdict {
    NeedMore,
    Http,
    ProxyProtocol,
    Socks,
    Tls,
    Sslv2,
    Opaque,
}

fn classify_start(dir: Dir, held: &[u8], expect_connect_reply: bool) -> StartVerdict {
    let prefix_of = |word: &[u8]| held.len() < word.len() && word.starts_with(held);
    match dir {
        Dir::Client if held.starts_with(b"CONNECT ") => return StartVerdict::Http,
        Dir::Client if prefix_of(b"CONNECT ") => return StartVerdict::NeedMore,
        Dir::Client if held.first() == Some(&4) && held.get(1).is_none_or(|&c| c == 1) => {
            return StartVerdict::Socks;
        }
        Dir::Client
            if held.first() == Some(&5) && held.get(1).is_none_or(|&n| (1..=16).contains(&n)) =>
        {
            return StartVerdict::Socks;
        }
        Dir::Server if expect_connect_reply && held.starts_with(b"HTTP/") => {
            return StartVerdict::Http;
        }
        Dir::Server if expect_connect_reply && prefix_of(b"HTTP/") => {
            return StartVerdict::NeedMore;
        }
        _ => {}
    }
    if held.len() < 3 {
        return if held
            .first()
            .is_some_and(|&b| (20..=24).contains(&b) || b & 0x80 != 0)
        {
            StartVerdict::NeedMore
        } else {
            StartVerdict::Opaque
        };
    }
    if (20..=24).contains(&held[0]) && held[1] == 3 && held[2] <= 4 {
        return StartVerdict::Tls;
    }
    // SSLv2-compatible ClientHello: 2-byte length with the high bit set, then message type 1.
    if dir == Dir::Client && held[0] & 0x80 != 0 && held[2] == 1 {
        return StartVerdict::Sslv2;
    }
    StartVerdict::Opaque
}

fn valid_header(h: &[u8; 5]) -> bool {
    let len = u16::from_be_bytes([h[3], h[4]]) as usize;
    (20..=24).contains(&h[0]) && h[1] == 3 && h[2] <= 4 && len <= MAX_RECORD_BODY
}

/// After a gap: does this segment start with a record header whose successor (if it lies
/// within the segment) is also a header?
fn plausible_record_start(bytes: &[u8]) -> bool {
    let Some(h) = bytes.get(..5) else {
        return false;
    };
    let h: [u8; 5] = [h[0], h[1], h[2], h[3], h[4]];
    if !valid_header(&h) {
        return false;
    }
    let next = 5 + u16::from_be_bytes([h[3], h[4]]) as usize;
    match bytes.get(next..next + 5) {
        Some(n) => valid_header(&[n[0], n[1], n[2], n[3], n[4]]),
        None => true,
    }
}

#[cfg(test)]
mod footprint {
    /// A connection whose handshake has not settled carries its framing state: 192 bytes is one
    /// of the allocator's size classes, and the next is 224. (It was 272, in the 320 class,
    /// while record lengths were `usize` and alert bodies a vector.)
    #[test]
    fn framing_state_fits_the_192_byte_size_class() {
        let size = std::mem::size_of::<super::Framing>();
        assert!(size <= 192, "Framing is {size} bytes");
    }

    /// Application-data offsets are kept in 4 bytes: exact below 4 GiB, saturated past it,
    /// never mistaken for "none", and set only once.
    #[test]
    fn app_data_offsets_are_exact_below_4_gib_and_saturate_past_it() {
        let mut none = super::OptOffset::default();
        assert_eq!(none.get(), None);
        none.set_once(5_000);
        none.set_once(6_000);
        assert_eq!(none.get(), Some(5_000));
        let mut far = super::OptOffset::default();
        far.set_once(u64::from(u32::MAX) + 10);
        assert_eq!(far.get(), Some(u64::from(u32::MAX - 1)));
        let mut edge = super::OptOffset::default();
        edge.set_once(u64::from(u32::MAX));
        assert!(
            edge.get().is_some(),
            "an offset of exactly u32::MAX is not none"
        );
    }
}
