//! The whole offline pipeline on a fuzzed capture file, as `replay` runs it (`pipeline::run`:
//! capture reader -> decode -> flow table -> connection records -> evidence table), then
//! correlation -> rules, and the rules through `export`'s reader and every renderer.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use libfuzzer_sys::fuzz_target;
use pinwatch::capture::CaptureReader;
use pinwatch::classify::Verdict;
use pinwatch::correlate::{Config, Correlator, EvidenceTable};
use pinwatch::export::{self, Format};
use pinwatch::flow::FlowConfig;
use pinwatch::output::record::ConnectionRecord;
use pinwatch::pipeline::{self, Next, Output, Source};
use pinwatch::stats::Stats;

/// The fuzzed bytes as a capture file for the pipeline.
struct Bytes(CaptureReader);

impl Source for Bytes {
    fn next(&mut self) -> Next<'_> {
        match self.0.advance() {
            Ok(true) => self.0.frame().map_or(Next::End, Next::Frame),
            _ => Next::End,
        }
    }
}

/// Records must serialise and agree with their verdict.
struct Check;

impl Output for Check {
    type Error = std::convert::Infallible;
    fn record(&mut self, rec: &ConnectionRecord, verdict: &Verdict) -> Result<(), Self::Error> {
        assert_eq!(rec.outcome, verdict.outcome);
        serde_json::to_string(rec).expect("a connection record serialises");
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = CaptureReader::from_read("fuzz".into(), std::io::Cursor::new(data.to_vec()))
    else {
        return;
    };
    // A small table so that eviction happens too; the default handshake cap; one worker (the
    // inline path: no threads in a fuzzer).
    let config = pipeline::Config {
        flow: FlowConfig {
            max_flows: 64,
            ..FlowConfig::default()
        },
        threads: 1,
        ..pipeline::Config::default()
    };
    let evidence = Arc::new(EvidenceTable::default());
    let correlator = Correlator::with_table(Config::default(), Arc::clone(&evidence));
    let stats = Arc::new(Stats::new(1));
    let summary = pipeline::run(
        &mut Bytes(reader),
        config,
        &evidence,
        &stats,
        &AtomicBool::new(false),
        &mut Check,
    )
    .unwrap_or_else(|never| match never {});
    assert!(summary.connections <= summary.tcp_segments, "more connections than segments");
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
