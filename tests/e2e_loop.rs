//! End-to-end fix loop, for real: `scripts/e2e-loop` with the binary under test.
//!
//! A pinned client fails behind mitmproxy, `pinwatch replay` suggests a bypass rule from the
//! capture, `pinwatch export --format mitmproxy` turns it into `ignore_hosts`, mitmproxy is
//! restarted with it and the same client succeeds against the origin's certificate, which
//! pinwatch then sees on the wire.

mod netns;

#[test]
#[ignore = "needs root, network namespaces, tcpdump and mitmproxy; .ci/run runs it"]
fn fix_loop_through_mitmproxy() {
    netns::run("e2e-loop", "pwlt", env!("CARGO_BIN_EXE_pinwatch"));
}
