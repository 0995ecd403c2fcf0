//! The whole offline pipeline on a fuzzed capture file, wired as `replay` wires it: capture
//! reader -> decode -> flow table -> connection records -> correlation -> rules, and the rules
//! through `export`'s reader and every renderer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinwatch::capture::CaptureReader;
use pinwatch::correlate::{Config, Correlator};
use pinwatch::decode;
use pinwatch::export::{self, Format};
use pinwatch::flow::{Connection, FlowConfig, FlowTable};
use pinwatch::output::record;
use pinwatch::tls::At;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) =
        CaptureReader::from_read("fuzz".into(), std::io::Cursor::new(data.to_vec()))
    else {
        return;
    };
    // A small table so that eviction happens too; the default handshake cap.
    let mut table = FlowTable::new(FlowConfig {
        max_flows: 64,
        ..FlowConfig::default()
    });
    let mut correlator = Correlator::new(Config::default());
    let mut finish = |conn: Connection| {
        let (rec, verdict) = record::build(&conn);
        assert_eq!(rec.outcome, verdict.outcome.as_str());
        serde_json::to_string(&rec).expect("a connection record serialises");
        correlator.observe(&rec, rec.ts_start_ns);
    };
    let mut pkt = 0;
    while let Ok(Some(frame)) = reader.next_frame() {
        pkt += 1;
        let at = At {
            pkt,
            ts_ns: frame.ts_ns,
        };
        if let Ok(seg) = decode::decode(frame.linktype, frame.data) {
            table.packet(&seg, at, &mut finish);
        }
    }
    table.drain(&mut finish);
    let report = correlator.conclude();
    let mut ndjson = String::new();
    for rule in &report.candidates {
        assert!(
            (0.0..=1.0).contains(&rule.confidence),
            "confidence outside 0..1"
        );
        ndjson.push_str(&serde_json::to_string(rule).expect("a rule serialises"));
        ndjson.push('\n');
    }
    for ca in &report.proxy_cas {
        serde_json::to_string(ca).expect("a finding serialises");
    }
    for m in &report.missing_proxy_ca {
        serde_json::to_string(m).expect("a finding serialises");
    }
    // What replay writes, export must read back whole.
    let parsed = export::read_rules(&mut ndjson.as_bytes()).expect("reading from memory");
    assert_eq!(
        parsed.rules.len(),
        report.candidates.len(),
        "export refused a rule replay wrote: {:?}",
        parsed.skipped
    );
    let mut plan = export::plan(parsed.rules, 0.0, "fuzz");
    for format in [
        Format::Squid,
        Format::Mitmproxy,
        Format::Domains,
        Format::Json,
    ] {
        export::render(format, &mut plan);
    }
});
