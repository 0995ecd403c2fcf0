//! SOCKS preludes whose tunnel carries no ClientHello: the proxy's reply is read with the codes
//! of the protocol the client asked in. SOCKS4 grants with 90 and SOCKS5 with 0; read as HTTP
//! status codes, both looked like a refusal, and a tunnel the proxy had opened was reported as
//! `server_abort` / `connect_refused_0`.

mod common;
mod hostile;

use common::{path_string, temp_dir};
use hostile::*;
use serde_json::Value;

const PROXY: ([u8; 4], u16) = ([10, 9, 0, 1], 1080);

/// A client asks the SOCKS proxy for www.example.com:443, gets `reply`, sends nothing more and
/// closes.
fn socks_conv(client_port: u16, request: &[u8], reply: &[u8], ts_ns: i64) -> Conv {
    let mut conv = Conv::new(([10, 1, 0, 5], client_port), PROXY, ts_ns);
    conv.open();
    conv.client(request);
    conv.server(reply);
    conv.client_fin();
    conv.server_fin();
    conv
}

fn socks5_request() -> Vec<u8> {
    let mut req = vec![5, 1, 0, 5, 1, 0, 3, 15];
    req.extend_from_slice(b"www.example.com");
    req.extend_from_slice(&443u16.to_be_bytes());
    req
}

fn socks5_reply(code: u8) -> Vec<u8> {
    vec![5, 0, 5, code, 0, 1, 10, 9, 0, 1, 0x04, 0x38]
}

fn socks4a_request() -> Vec<u8> {
    let mut req = vec![4, 1, 0x01, 0xbb, 0, 0, 0, 1];
    req.extend_from_slice(b"user\0www.example.com\0");
    req
}

fn socks4_reply(code: u8) -> Vec<u8> {
    vec![0, code, 0, 0, 0, 0, 0, 0]
}

fn records() -> Vec<Value> {
    let start = 1_700_000_000_000_000_000;
    let convs = [
        socks_conv(41_001, &socks5_request(), &socks5_reply(0), start),
        socks_conv(
            41_002,
            &socks5_request(),
            &socks5_reply(5),
            start + 10_000_000,
        ),
        socks_conv(
            41_003,
            &socks4a_request(),
            &socks4_reply(90),
            start + 20_000_000,
        ),
        socks_conv(
            41_004,
            &socks4a_request(),
            &socks4_reply(91),
            start + 30_000_000,
        ),
    ];
    let dir = temp_dir("socks");
    let pcap = dir.join("socks.pcap");
    let mut w = PcapWriter::create(&pcap);
    for conv in &convs {
        w.packets(&conv.packets);
    }
    w.finish();
    let (m, mut recs) = run_json(&[
        "replay",
        &path_string(&pcap),
        "--connections",
        "-",
        "--quiet",
    ]);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    recs.sort_by_key(|r| r["client_port"].as_u64());
    recs
}

#[test]
fn a_granted_socks_tunnel_is_not_reported_as_refused() {
    let recs = records();
    assert_eq!(recs.len(), 4, "{recs:#?}");
    let by_port = |port: u64| {
        recs.iter()
            .find(|r| r["client_port"] == port)
            .unwrap_or_else(|| panic!("no record for port {port}: {recs:#?}"))
    };
    for (port, status) in [(41_001, 0), (41_003, 90)] {
        let r = by_port(port);
        assert_eq!(r["connect"]["target"], "www.example.com:443", "{r:#}");
        assert_eq!(r["connect"]["status"], status, "{r:#}");
        assert_ne!(r["outcome"], "server_abort", "{r:#}");
        assert!(
            !r["outcome_detail"]
                .as_str()
                .unwrap_or_default()
                .starts_with("connect_refused"),
            "{r:#}"
        );
        // The client closed a tunnel it never used.
        assert_eq!(r["closed_by"], "client", "{r:#}");
    }
    for (port, detail) in [
        (41_002, "connect_refused_5"),
        (41_004, "connect_refused_91"),
    ] {
        let r = by_port(port);
        assert_eq!(r["outcome"], "server_abort", "{r:#}");
        assert_eq!(r["outcome_detail"], detail, "{r:#}");
    }
}
