//! `pinwatch export` on a fuzzed rules file: the NDJSON reader, the name checks and the
//! renderers. Rules files may come from elsewhere (another sensor, a hand edit), so nothing in
//! a rule may smuggle a directive into a proxy's configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinwatch::export::{self, Format};

/// A name as the renderers may write it: letters, digits, hyphens and dots.
fn dns_like(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = export::read_rules(&mut &data[..]) else {
        return;
    };
    let mut plan = export::plan(parsed.rules, 0.0, "fuzz");
    for line in export::render(Format::Squid, &mut plan).lines() {
        let ok = line.is_empty()
            || line.starts_with('#')
            || line == "ssl_bump splice pinwatch_bypass"
            || line
                .strip_prefix("acl pinwatch_bypass ssl::server_name ")
                .is_some_and(dns_like);
        assert!(
            ok,
            "squid line that is neither a comment nor a bypass: {line:?}"
        );
    }
    for line in export::render(Format::Mitmproxy, &mut plan).lines() {
        let t = line.trim_start();
        let ok = t.is_empty()
            || t.starts_with('#')
            || t == "ignore_hosts:"
            || t == "ignore_hosts: []"
            || (t.starts_with("- '") && t.ends_with('\'') && !t[3..t.len() - 1].contains('\''));
        assert!(
            ok,
            "mitmproxy line that is neither a comment nor an entry: {line:?}"
        );
    }
    for line in export::render(Format::Domains, &mut plan).lines() {
        assert!(
            dns_like(line),
            "domain list line that is not a name: {line:?}"
        );
    }
    for line in export::render(Format::Json, &mut plan).lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "json line that is not JSON"
        );
    }
});
