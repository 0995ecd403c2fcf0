//! The flow table fed synthetic TCP segments: connections opened, reused, closed, evicted and
//! timed out in any order, both directions reassembled into the TLS stage, every finished
//! connection turned into its record.
//!
//! Input: a config byte (bits 0-2: handshake cap 256 << n; bits 3-5: at most 1 + n flows;
//! bit 6: a 2 s idle timeout instead of 300 s), then packets of 17 header bytes and a payload:
//!   u8  addresses: bits 0-1 source, 2-3 destination (one of four hosts); bit 4 IPv6;
//!       bits 5-6 time since the last packet (0, 1 ms, 1.5 s, 400 s); bit 7 VLAN tag
//!   u16 source port, u16 destination port, u8 TCP flags, u32 seq, u32 ack,
//!   u16 payload length, u8 bytes cut from the end (wire length beyond the bytes present),
//!   then the payload (fewer bytes at the end of the input).
//!
//! Checked: the table never tracks more flows than allowed; every connection comes out exactly
//! once (by the index of the packet that created it) and its record serialises; the memory held by the table stays
//! within a fixed multiple of flows times the handshake cap.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use pinwatch::decode::Segment;
use pinwatch::flow::{Connection, FlowConfig, FlowTable};
use pinwatch::output::record;
use pinwatch::tls::At;
use pinwatch_fuzz::{Input, live_bytes};

const STEPS_NS: [i64; 4] = [0, 1_000_000, 1_500_000_000, 400_000_000_000];
const HEADER: usize = 17;

fn host(i: u8, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            u16::from(i) + 1,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, i + 1))
    }
}

/// Checks each finished connection and notes that it came out.
struct Finished {
    /// Indexed by the packet that created the connection (1-based).
    seen: Vec<bool>,
    /// How many came out so far.
    count: usize,
}

impl Finished {
    fn take(&mut self, conn: Connection) {
        let n = conn.seq() as usize;
        assert!(
            n >= 1 && n < self.seen.len(),
            "creation packet {n} out of range"
        );
        assert!(!self.seen[n], "connection {n} finished twice");
        self.seen[n] = true;
        self.count += 1;
        let (rec, verdict) = record::build(&conn);
        assert_eq!(rec.outcome, verdict.outcome);
        assert!(conn.first <= conn.last);
        serde_json::to_string(&rec).expect("a connection record serialises");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let Some(config) = input.u8() else { return };
    let cap = 256usize << (config & 7);
    let max_flows = 1 + ((config >> 3) & 7) as usize;
    let flow_config = FlowConfig {
        handshake_cap: cap,
        max_flows,
        idle_timeout_ns: if config & 0x40 != 0 {
            2_000_000_000
        } else {
            300_000_000_000
        },
        ..FlowConfig::default()
    };
    // At most one connection per packet; allocated before the baseline.
    let mut finished = Finished {
        seen: vec![false; data.len() / HEADER + 2],
        count: 0,
    };
    // Which packets created a connection, worked out from the table's size and what came out.
    let mut created = vec![false; data.len() / HEADER + 2];
    let baseline = live_bytes();
    let mut table = FlowTable::new(flow_config);
    // Per flow: two reassemblers (queue and retained prefix), the TLS session's buffers and
    // what it keeps of the hellos and certificate; plus the table's own map.
    let bound = max_flows * (40 * cap + (300 << 10)) + (64 << 10);
    let mut pkt = 0u64;
    let mut at = At::new(1, 1_700_000_000_000_000_000);
    let mut last_sweep_ns = at.ts_ns;
    while let Some(head) = input.take(HEADER) {
        let mut h = Input::new(head);
        let (Some(addrs), Some(sport), Some(dport), Some(flags)) =
            (h.u8(), h.u16(), h.u16(), h.u8())
        else {
            break;
        };
        let (Some(seq), Some(ack), Some(len), Some(cut)) = (h.u32(), h.u32(), h.u16(), h.u8())
        else {
            break;
        };
        let payload = input.take_up_to(len as usize);
        let v6 = addrs & 0x10 != 0;
        pkt += 1;
        at = At::new(pkt, at.ts_ns + STEPS_NS[((addrs >> 5) & 3) as usize]);
        let seg = Segment {
            vlans: [100, 0],
            vlan_count: addrs >> 7,
            src: host(addrs & 3, v6),
            dst: host((addrs >> 2) & 3, v6),
            sport,
            dport,
            seq,
            ack,
            flags,
            payload,
            wire_len: payload.len() as u32 + u32::from(cut),
            tunnel: None,
        };
        // The pipeline sweeps once per capture second; so does this.
        if at.ts_ns - last_sweep_ns >= 1_000_000_000 {
            last_sweep_ns = at.ts_ns;
            table.sweep(at.ts_ns, &mut |c| finished.take(c));
        }
        let (len_before, out_before) = (table.len(), finished.count);
        table.packet(&seg, at, &mut |c| finished.take(c));
        let opened = (table.len() + (finished.count - out_before)) as isize - len_before as isize;
        assert!((0..=1).contains(&opened), "one packet opened {opened} connections");
        created[at.pkt() as usize] = opened == 1;
        assert!(
            table.len() <= max_flows,
            "{} flows tracked, {max_flows} allowed",
            table.len()
        );
        let held = live_bytes().saturating_sub(baseline);
        assert!(
            held <= bound,
            "flow table holds {held} bytes ({max_flows} flows, cap {cap})"
        );
    }
    table.drain(&mut |c| finished.take(c));
    assert!(table.is_empty());
    // Exactly the connections that were opened came out: none lost, none invented.
    assert_eq!(finished.seen, created, "a connection was lost or invented");
});
