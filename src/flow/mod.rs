//! Flow stage: a bidirectional table of TCP connections keyed by the 5-tuple plus VLAN tags and
//! the innermost tunnel's kind and id.
//! Each connection decides who the client is (the SYN sender, else the ClientHello or CONNECT
//! sender), reassembles both directions and feeds them to the TLS stage until the outcome can no
//! longer change; after that only headers are looked at (counters, FIN, RST).

pub mod reassembly;

use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::HashTable;

use crate::decode::{Segment, Tunnel, TunnelKey, flags};
use crate::elapsed::Elapsed;
use crate::tls::{At, Dir, Session};
use reassembly::{Chunk, Reassembler, ReassemblyStats};

/// Flow-table settings.
#[derive(Debug, Clone, Copy)]
pub struct FlowConfig {
    /// Bytes per direction reassembled and buffered for the handshake.
    pub handshake_cap: usize,
    /// A flow with no packet for this long is finished.
    pub idle_timeout_ns: i64,
    /// A closed flow (FIN both ways, or RST) is finished after this long without packets.
    pub close_linger_ns: i64,
    /// At most this many flows are tracked; the least recently seen is finished early.
    pub max_flows: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            handshake_cap: 64 * 1024,
            idle_timeout_ns: 300 * 1_000_000_000,
            close_linger_ns: 5 * 1_000_000_000,
            max_flows: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FlowKey {
    low: Endpoint,
    high: Endpoint,
    vlans: [u16; crate::decode::MAX_VLANS],
    vlan_count: u8,
    /// Keeps apart connections of different tunnels (VNI, GRE key, ERSPAN session) whose inner
    /// addresses overlap.
    tunnel: Option<TunnelKey>,
}

/// By hand rather than derived: the derived hash fed every field separately (the address
/// enums' tags, each address as a length-prefixed byte slice, all the VLAN slots), which was
/// about a fifth of the flow table's own work per packet. Equal keys still hash alike: every
/// part hashed is a function of fields `Eq` compares.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        fn bits(ip: IpAddr) -> u128 {
            match ip {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            }
        }
        match (self.low.ip, self.high.ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                state.write_u64((u64::from(u32::from(a)) << 32) | u64::from(u32::from(b)))
            }
            (a, b) => {
                state.write_u128(bits(a));
                state.write_u128(bits(b));
            }
        }
        state.write_u64(
            (u64::from(self.low.port) << 32)
                | (u64::from(self.high.port) << 16)
                | u64::from(self.vlan_count),
        );
        for vlan in self.vlans.iter().take(usize::from(self.vlan_count)) {
            state.write_u16(*vlan);
        }
        if let Some(tunnel) = &self.tunnel {
            std::hash::Hash::hash(tunnel, state);
        }
    }
}

impl FlowKey {
    fn of(seg: &Segment<'_>) -> Self {
        let a = Endpoint {
            ip: seg.src,
            port: seg.sport,
        };
        let b = Endpoint {
            ip: seg.dst,
            port: seg.dport,
        };
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        FlowKey {
            low,
            high,
            vlans: seg.vlans,
            vlan_count: seg.vlan_count,
            tunnel: seg.tunnel.map(|t| t.key()),
        }
    }
}

/// TCP-level facts about one direction.
#[derive(Debug)]
pub struct DirTcp {
    pub endpoint: Endpoint,
    pub packets: u64,
    /// Payload bytes on the wire, retransmissions included.
    pub payload_bytes: u64,
    /// Sequence number of this direction's first SYN, once the reassembler saw one (a flag of
    /// its own here would push the struct past 80 bytes).
    syn_seq: u32,
    reasm: Reassembler,
}

impl DirTcp {
    fn new(endpoint: Endpoint) -> Self {
        DirTcp {
            endpoint,
            packets: 0,
            payload_bytes: 0,
            syn_seq: 0,
            reasm: Reassembler::new(),
        }
    }
    /// Unique stream bytes by sequence space.
    pub fn stream_bytes(&self) -> u64 {
        self.reasm.stream_bytes()
    }
    pub fn reassembly(&self) -> ReassemblyStats {
        self.reasm.stats()
    }
    /// This direction sent a SYN.
    pub fn syn(&self) -> bool {
        self.reasm.syn_seen()
    }
}

/// When one side first sent a FIN and a RST.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirEnds {
    pub fin: Option<At>,
    pub rst: Option<At>,
}

/// Both sides' [`DirEnds`]. Set only as a connection closes, so kept out of line: an open
/// connection carries 8 bytes for them rather than 64.
#[derive(Debug, Default)]
struct Ends {
    client: DirEnds,
    server: DirEnds,
}

/// Why a connection was finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// Still open when the input ended.
    EndOfCapture,
    /// No packet for the idle timeout.
    IdleTimeout,
    /// FIN both ways or a RST, then the linger time passed (or the input ended).
    Closed,
    /// The table was full and this was the least recently active flow.
    Evicted,
    /// A new SYN opened another connection on the same addresses and ports.
    Reused,
}

impl EndedBy {
    /// The name records use.
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::EndOfCapture => "end_of_capture",
            EndedBy::IdleTimeout => "idle_timeout",
            EndedBy::Closed => "closed",
            EndedBy::Evicted => "evicted",
            EndedBy::Reused => "reused",
        }
    }
}

/// One TCP connection as tracked by the flow stage.
#[derive(Debug)]
pub struct Connection {
    vlans: [u16; crate::decode::MAX_VLANS],
    /// How many of `vlans` are tags, and how sure the roles are, in one byte.
    shape: Shape,
    /// The tunnel of the connection's first packet (outer endpoints as that packet had them).
    /// Boxed: few connections have one.
    pub tunnel: Option<Box<Tunnel>>,
    pub first: At,
    pub last: At,
    pub client: DirTcp,
    pub server: DirTcp,
    ends: Option<Box<Ends>>,
    /// Why the connection was finished.
    pub ended_by: EndedBy,
    rtt: ClientRtt,
    pub session: Session,
}

/// How sure the flow stage is of who the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roles {
    /// Not decided by evidence yet; a later SYN or ClientHello may swap them.
    Guessed = 0,
    /// Payload was fed before roles were settled by evidence; they stay as guessed.
    Frozen = 1,
    /// Decided by a SYN, a ClientHello or CONNECT.
    Certain = 2,
}

/// A connection's VLAN tag count and [`Roles`] packed into one byte: a connection must stay
/// in its allocator size class (tests/footprint.rs), and these two need four bits between them.
#[derive(Debug, Clone, Copy)]
struct Shape(u8);

impl Shape {
    fn new(vlan_count: u8, roles: Roles) -> Self {
        Shape((vlan_count & 0x0f) | (roles as u8) << 4)
    }
    fn vlan_count(self) -> u8 {
        self.0 & 0x0f
    }
    fn roles(self) -> Roles {
        match self.0 >> 4 {
            0 => Roles::Guessed,
            1 => Roles::Frozen,
            _ => Roles::Certain,
        }
    }
    fn set_roles(&mut self, roles: Roles) {
        *self = Shape::new(self.vlan_count(), roles);
    }
}

/// The round trips as the sensor sees them. The client's: from the server's SYN-ACK to the
/// client's next packet (its handshake ACK, or a ClientHello that carries the ACK); a client's
/// abort reaches the sensor that much after the server's flight passed it, so the correlator
/// judges abort delays net of it. The server's: from the client's SYN to the server's SYN-ACK,
/// which the path attribution compares with how long the server took to answer the
/// ClientHello. Each is [`Elapsed::PENDING`] while the packet that ends it is awaited; a
/// retransmitted SYN or SYN-ACK restarts the wait, since the answer follows the latest one.
/// The server's is kept in the session (`set_server_rtt`): the connection has no room for it.
#[derive(Debug, Default, Clone, Copy)]
struct ClientRtt(Elapsed);

impl ClientRtt {
    fn measured_ns(self) -> Option<i64> {
        self.0.ns()
    }

    /// Takes one packet; `previous` is the time of the connection's packet before it.
    fn observe(
        &mut self,
        server: &mut ServerRtt,
        previous: At,
        at: At,
        dir: Dir,
        syn: bool,
        ack: bool,
    ) {
        server.observe(previous, at, dir, syn, ack);
        if self.0.ns().is_some() {
            return;
        }
        self.0 = match dir {
            Dir::Server if syn && ack => Elapsed::PENDING,
            Dir::Client if ack && !syn && self.0.is_pending() => {
                Elapsed::between(previous.ts_ns, at.ts_ns)
            }
            _ => Elapsed::NONE,
        };
    }
}

/// The server's side of [`ClientRtt`], as the session keeps it.
struct ServerRtt<'a>(&'a mut crate::tls::Observations);

impl ServerRtt<'_> {
    fn observe(&mut self, previous: At, at: At, dir: Dir, syn: bool, ack: bool) {
        let now = self.0.server_rtt();
        if now.ns().is_some() {
            return;
        }
        self.0.set_server_rtt(match dir {
            Dir::Client if syn && !ack => Elapsed::PENDING,
            Dir::Server if syn && ack && now.is_pending() => {
                Elapsed::between(previous.ts_ns, at.ts_ns)
            }
            _ => Elapsed::NONE,
        });
    }
}

impl Connection {
    fn new(seg: &Segment<'_>, at: At, cap: usize) -> Self {
        let src = Endpoint {
            ip: seg.src,
            port: seg.sport,
        };
        let dst = Endpoint {
            ip: seg.dst,
            port: seg.dport,
        };
        let syn_only = seg.has(flags::SYN) && !seg.has(flags::ACK);
        let syn_ack = seg.has(flags::SYN) && seg.has(flags::ACK);
        let (client, server, certain) = if syn_only {
            (src, dst, true)
        } else if syn_ack {
            (dst, src, true)
        } else if looks_like_client_start(seg.payload) {
            (src, dst, true)
        } else if seg.sport < seg.dport && !seg.payload.is_empty() {
            // Midstream guess: the lower port is more often the server.
            (dst, src, false)
        } else {
            (src, dst, false)
        };
        Connection {
            vlans: seg.vlans,
            shape: Shape::new(
                seg.vlan_count,
                if certain {
                    Roles::Certain
                } else {
                    Roles::Guessed
                },
            ),
            tunnel: seg.tunnel.map(Box::new),
            first: at,
            last: at,
            client: DirTcp::new(client),
            server: DirTcp::new(server),
            ends: None,
            ended_by: EndedBy::EndOfCapture,
            rtt: ClientRtt::default(),
            session: Session::new(cap),
        }
    }

    /// Roles were decided by a SYN, a ClientHello or CONNECT rather than guessed.
    pub fn roles_certain(&self) -> bool {
        self.shape.roles() == Roles::Certain
    }

    /// Index of the packet that created it: unique in a run and the same whichever worker
    /// thread tracks the connection, so it orders connections deterministically.
    pub fn seq(&self) -> u64 {
        self.first.pkt()
    }

    /// The VLAN tags of the connection's first packet, outermost first.
    pub fn vlans(&self) -> &[u16] {
        let count = usize::from(self.shape.vlan_count()).min(self.vlans.len());
        &self.vlans[..count]
    }

    /// The flow-table key of this connection, rebuilt from what it keeps anyway.
    fn key(&self) -> FlowKey {
        let (a, b) = (self.client.endpoint, self.server.endpoint);
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        FlowKey {
            low,
            high,
            vlans: self.vlans,
            vlan_count: self.shape.vlan_count(),
            tunnel: self.tunnel.as_ref().map(|t| t.key()),
        }
    }

    /// Whether `key` is this connection's key, without building it (a lookup compares every
    /// candidate the hash leads to).
    fn matches(&self, key: &FlowKey) -> bool {
        let (a, b) = (&self.client.endpoint, &self.server.endpoint);
        ((*a == key.low && *b == key.high) || (*a == key.high && *b == key.low))
            && self.shape.vlan_count() == key.vlan_count
            && self.vlans == key.vlans
            && self.tunnel.as_ref().map(|t| t.key()) == key.tunnel
    }

    /// The client's round trip measured at the sensor (server SYN-ACK to the client's
    /// answer), in nanoseconds (to the microsecond on a LAN, 0.2 ms beyond 33 ms); `None` when the TCP handshake was not seen.
    pub fn client_rtt_ns(&self) -> Option<i64> {
        self.rtt.measured_ns()
    }

    /// When `dir` first sent a FIN and a RST.
    pub fn ends(&self, dir: Dir) -> DirEnds {
        match (self.ends.as_deref(), dir) {
            (None, _) => DirEnds::default(),
            (Some(e), Dir::Client) => e.client,
            (Some(e), Dir::Server) => e.server,
        }
    }

    /// Both sides sent FIN, or either sent RST.
    pub fn closed(&self) -> bool {
        let Some(e) = self.ends.as_deref() else {
            return false;
        };
        (e.client.fin.is_some() && e.server.fin.is_some())
            || e.client.rst.is_some()
            || e.server.rst.is_some()
    }

    /// A SYN that opens a new connection on this 4-tuple rather than repeating the first.
    fn is_reuse(&self, seg: &Segment<'_>) -> bool {
        if !seg.has(flags::SYN) || seg.has(flags::ACK) {
            return false;
        }
        let from_client =
            seg.src == self.client.endpoint.ip && seg.sport == self.client.endpoint.port;
        let same_syn = from_client && self.client.reasm_isn_matches(seg.seq);
        if same_syn {
            return false;
        }
        self.closed()
            || !self.client.syn()
            || self.client.payload_bytes > 0
            || self.server.payload_bytes > 0
            || !from_client
    }

    /// Takes one segment; `cap` is the flow table's handshake cap.
    fn process(&mut self, seg: &Segment<'_>, at: At, cap: usize) {
        let previous = std::mem::replace(&mut self.last, at);
        let from_client =
            seg.src == self.client.endpoint.ip && seg.sport == self.client.endpoint.port;
        if self.shape.roles() == Roles::Guessed {
            let evidence_client = (seg.has(flags::SYN) && !seg.has(flags::ACK))
                || looks_like_client_start(seg.payload);
            let evidence_server = seg.has(flags::SYN) && seg.has(flags::ACK);
            if (evidence_client && !from_client) || (evidence_server && from_client) {
                std::mem::swap(&mut self.client, &mut self.server);
                if let Some(e) = self.ends.as_deref_mut() {
                    std::mem::swap(&mut e.client, &mut e.server);
                }
            }
            if evidence_client || evidence_server {
                self.shape.set_roles(Roles::Certain);
            } else if !seg.payload.is_empty() {
                self.shape.set_roles(Roles::Frozen);
            }
        }
        let from_client =
            seg.src == self.client.endpoint.ip && seg.sport == self.client.endpoint.port;
        let (dir, this, other) = if from_client {
            (Dir::Client, &mut self.client, &mut self.server)
        } else {
            (Dir::Server, &mut self.server, &mut self.client)
        };
        let session = &mut self.session;
        // Judged before the segment's own bytes move the next sequence number on.
        let rst_accepted = seg.has(flags::RST) && this.reasm.rst_acceptable(seg.seq);
        if seg.has(flags::RST) && !rst_accepted {
            session.obs.flag(match dir {
                Dir::Client => "client_rst_not_accepted",
                Dir::Server => "server_rst_not_accepted",
            });
        }
        this.packets += 1;
        this.payload_bytes += seg.wire_len as u64;
        self.rtt.observe(
            &mut ServerRtt(&mut session.obs),
            previous,
            at,
            dir,
            seg.has(flags::SYN),
            seg.has(flags::ACK),
        );
        if seg.has(flags::SYN) {
            if !this.syn() {
                this.syn_seq = seg.seq;
            }
            this.reasm.syn(seg.seq);
        }
        let other_dir = match dir {
            Dir::Client => Dir::Server,
            Dir::Server => Dir::Client,
        };
        if seg.has(flags::ACK) {
            other
                .reasm
                .peer_acked(seg.ack, cap, &mut |c| deliver(session, other_dir, c, at));
        }
        // The SYN takes one sequence number; bytes it carries (TCP Fast Open, RFC 7413: a
        // ClientHello in the SYN) start after it.
        let data_seq = if seg.has(flags::SYN) {
            seg.seq.wrapping_add(1)
        } else {
            seg.seq
        };
        if seg.wire_len > 0 {
            this.reasm
                .segment(data_seq, seg.payload, seg.wire_len, cap, &mut |c| {
                    deliver(session, dir, c, at)
                });
        }
        if seg.has(flags::FIN) || rst_accepted {
            let ends = self.ends.get_or_insert_with(Box::default);
            let ends = match dir {
                Dir::Client => &mut ends.client,
                Dir::Server => &mut ends.server,
            };
            if seg.has(flags::FIN) {
                ends.fin.get_or_insert(at);
                this.reasm.fin(data_seq, seg.wire_len);
            }
            if rst_accepted {
                ends.rst.get_or_insert(at);
            }
        }
        if !session.wants(dir) {
            this.reasm.stop_delivering();
        }
        if !session.wants(other_dir) {
            other.reasm.stop_delivering();
        }
    }

    /// Flushes what reassembly still holds (past any holes) into the TLS stage.
    fn flush(&mut self, cap: usize) {
        let at = self.last;
        let session = &mut self.session;
        self.client
            .reasm
            .finish(cap, &mut |c| deliver(session, Dir::Client, c, at));
        self.server
            .reasm
            .finish(cap, &mut |c| deliver(session, Dir::Server, c, at));
        // What a record meant can depend on who closed first (padded TLS 1.3 records).
        let close = |e: DirEnds| [e.fin, e.rst].into_iter().flatten().min();
        let (client, server) = (close(self.ends(Dir::Client)), close(self.ends(Dir::Server)));
        self.session.conclude(client, server);
    }
}

impl DirTcp {
    fn reasm_isn_matches(&self, seq: u32) -> bool {
        self.syn() && self.syn_seq == seq
    }
}

fn deliver(session: &mut Session, dir: Dir, chunk: Chunk<'_>, at: At) {
    match chunk {
        Chunk::Data { offset, bytes } => {
            if session.wants(dir) {
                session.feed(dir, offset, bytes, at);
            }
        }
        Chunk::Gap { .. } => session.gap(dir),
    }
}

/// The first bytes a client sends: a TLS ClientHello record or an HTTP CONNECT.
fn looks_like_client_start(payload: &[u8]) -> bool {
    (payload.len() >= 6 && payload[0] == 0x16 && payload[1] == 3 && payload[5] == 1)
        || payload.starts_with(b"CONNECT ")
}

/// The flow table's hasher: keyed per process (so an attacker cannot aim keys at one bucket)
/// and much cheaper than SipHash, which cost about 12% of all instructions in a replay.
type FlowHasher = foldhash::fast::RandomState;

/// Connections by key. The key is not stored beside each connection but rebuilt from it (its
/// endpoints, VLANs and tunnel): the table keeps up to twice as many buckets as flows, and a
/// bucket holding a key and a pointer cost about 140 bytes per flow at a million flows, where
/// a bucket holding only the pointer costs 18. Connections are boxed for the same reason.
#[derive(Default)]
struct Flows {
    table: HashTable<Box<Connection>>,
    hasher: FlowHasher,
}

impl Flows {
    fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash_one(key)
    }
    fn len(&self) -> usize {
        self.table.len()
    }
    fn get(&self, key: &FlowKey) -> Option<&Connection> {
        let found = self.table.find(self.hash(key), |c| c.matches(key))?;
        Some(&**found)
    }
    fn contains_key(&self, key: &FlowKey) -> bool {
        self.get(key).is_some()
    }
    fn remove(&mut self, key: &FlowKey) -> Option<Box<Connection>> {
        let entry = self
            .table
            .find_entry(self.hash(key), |c| c.matches(key))
            .ok()?;
        Some(entry.remove().0)
    }
    fn get_or_insert_with(
        &mut self,
        key: FlowKey,
        make: impl FnOnce() -> Connection,
    ) -> &mut Connection {
        let hasher = &self.hasher;
        let entry = self.table.entry(
            hasher.hash_one(key),
            |c| c.matches(&key),
            |c| hasher.hash_one(c.key()),
        );
        entry.or_insert_with(|| Box::new(make())).into_mut()
    }
    fn values(&self) -> impl Iterator<Item = &Connection> {
        self.table.iter().map(|c| &**c)
    }
    /// Every connection, out of the table; the table's buckets are freed as the table is
    /// emptied (a drain would keep them, 18 MB at a million flows, while the connections end).
    #[allow(clippy::vec_box)] // see `FlowTable::drain`
    fn take_all(&mut self) -> Vec<Box<Connection>> {
        std::mem::take(&mut self.table).into_iter().collect()
    }
}

/// The table of live connections.
pub struct FlowTable {
    config: FlowConfig,
    flows: Flows,
    pub evicted: u64,
    /// The least recently active flows as of the last scan, most recent first (popped from the
    /// end). Scanning the whole table for every eviction made a SYN flood quadratic (a million
    /// SYNs against `--max-flows 10000` took minutes); one scan now serves a batch of evictions.
    evict_queue: Vec<(At, u64, FlowKey)>,
}

impl FlowTable {
    pub fn new(config: FlowConfig) -> Self {
        FlowTable {
            config,
            flows: Flows::default(),
            evicted: 0,
            evict_queue: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.len() == 0
    }

    /// Handles one segment; finished connections are passed to `done`. Idle and closed flows
    /// are only finished by [`FlowTable::sweep`], which the caller runs on capture-time ticks.
    pub fn packet(&mut self, seg: &Segment<'_>, at: At, done: &mut dyn FnMut(Connection)) {
        let key = FlowKey::of(seg);
        // Only a bare SYN can open a new connection on a known 4-tuple.
        let bare_syn = seg.has(flags::SYN) && !seg.has(flags::ACK);
        if bare_syn
            && let Some(conn) = self.flows.get(&key)
            && conn.is_reuse(seg)
        {
            let mut old = self.flows.remove(&key).expect("present");
            old.ended_by = EndedBy::Reused;
            old.flush(self.config.handshake_cap);
            done(*old);
        }
        if self.flows.len() >= self.config.max_flows && !self.flows.contains_key(&key) {
            self.evict_oldest(done);
        }
        let cap = self.config.handshake_cap;
        let conn = self
            .flows
            .get_or_insert_with(key, || Connection::new(seg, at, cap));
        conn.process(seg, at, cap);
    }

    /// Finishes the least recently active flow. `last` orders by packet index, which only
    /// grows, so a flow untouched since the scan that queued it is older than every flow not
    /// queued: popping the queue (skipping flows touched or finished since) is exact LRU.
    fn evict_oldest(&mut self, done: &mut dyn FnMut(Connection)) {
        loop {
            if self.evict_queue.is_empty() {
                self.queue_oldest();
            }
            let Some((last, seq, key)) = self.evict_queue.pop() else {
                return;
            };
            let unchanged = self
                .flows
                .get(&key)
                .is_some_and(|c| c.seq() == seq && c.last == last);
            if unchanged && let Some(mut conn) = self.flows.remove(&key) {
                self.evicted += 1;
                conn.ended_by = EndedBy::Evicted;
                conn.flush(self.config.handshake_cap);
                done(*conn);
                return;
            }
        }
    }

    /// Queues the oldest sixteenth of the table for eviction, in two passes over the table so
    /// that only the batch's keys are copied.
    fn queue_oldest(&mut self) {
        let mut ages: Vec<(At, u64)> = self.flows.values().map(|c| (c.last, c.seq())).collect();
        let batch = (ages.len() / 16).max(1);
        if ages.len() > batch {
            ages.select_nth_unstable(batch - 1);
        }
        let Some(&newest) = ages[..batch.min(ages.len())].iter().max() else {
            return;
        };
        let mut queue: Vec<(At, u64, FlowKey)> = self
            .flows
            .values()
            .filter(|c| (c.last, c.seq()) <= newest)
            .map(|c| (c.last, c.seq(), c.key()))
            .collect();
        queue.sort_unstable_by_key(|&(last, seq, _)| std::cmp::Reverse((last, seq)));
        self.evict_queue = queue;
    }

    /// Finishes idle flows and flows closed long enough ago. Scans the whole table, so the
    /// caller runs it about once per capture second.
    pub fn sweep(&mut self, now_ns: i64, done: &mut dyn FnMut(Connection)) {
        let cfg = self.config;
        let mut expired: Vec<(u64, FlowKey)> = self
            .flows
            .values()
            .filter(|c| {
                let idle = now_ns.saturating_sub(c.last.ts_ns);
                idle > cfg.idle_timeout_ns || (c.closed() && idle > cfg.close_linger_ns)
            })
            .map(|c| (c.seq(), c.key()))
            .collect();
        // Deterministic output order: by creation.
        expired.sort_unstable_by_key(|(seq, _)| *seq);
        for (_, key) in expired {
            if let Some(mut conn) = self.flows.remove(&key) {
                conn.ended_by = if conn.closed() {
                    EndedBy::Closed
                } else {
                    EndedBy::IdleTimeout
                };
                conn.flush(cfg.handshake_cap);
                done(*conn);
            }
        }
    }

    /// End of input: finish everything, in order of creation. The boxes are sorted, not the
    /// connections: a vector of whole connections would double the memory at the very end.
    pub fn drain(&mut self, done: &mut dyn FnMut(Connection)) {
        let mut all = self.flows.take_all();
        self.evict_queue = Vec::new();
        all.sort_unstable_by_key(|c| c.seq());
        for mut conn in all {
            if conn.closed() {
                conn.ended_by = EndedBy::Closed;
            }
            conn.flush(self.config.handshake_cap);
            done(*conn);
        }
    }
}
