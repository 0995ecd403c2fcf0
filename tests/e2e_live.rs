//! The live sensor end to end: `scripts/e2e-live` with the binary under test (built with the
//! `live` feature).
//!
//! `pinwatch live --threads 2 --user nobody` captures on a proxy's client-side bridge while
//! real pinned clients fail through mitmproxy and a browser-like client succeeds. The script
//! asserts that the sensor runs as nobody with no capability in any thread, that the rule for
//! the pinned name reaches a webhook receiver while traffic still runs, that Prometheus
//! metrics, the SIGUSR1 stats line and SIGHUP rotation work, and that SIGTERM drains, flushes
//! and exits 0 with a summary. The clients reach the bridge over a VXLAN overlay; a second
//! sensor on the underlay must find the same rule and record the tunnel.
#![cfg(feature = "live")]

mod netns;

#[test]
#[ignore = "needs root, network namespaces, tcpdump and mitmproxy; .ci/run runs it"]
fn live_sensor_streams_rules_to_a_webhook() {
    netns::run("e2e-live", "pwvt", env!("CARGO_BIN_EXE_pinwatch"));
}
