//! Benchmark of the rule analysis (`Correlator::conclude`): the pass that turns the evidence
//! table into rules. A replay runs it once at the end, after every worker has stopped, so its
//! time is added to the run's whole; a live run repeats it as evidence arrives, with a pause
//! that grows with its cost, so its time is also how stale streamed rules can get.
//!
//! The evidence is the observations of the connections of every bundled capture, replayed for real, then
//! spread over many names, clients and seconds (each copy gets its own client address, a
//! prefix on its server name and a later start), so that the table holds as many observations
//! as a busy day would, with the same mix of outcomes, certificates and fingerprints.
//!
//! Run: `cargo bench --bench analysis` (about 20 s).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pinwatch::correlate::observation::{FailureSignal, Observation};
use pinwatch::correlate::{Config, Correlator, EvidenceTable, Limits};
use pinwatch::replay::{ReplayConfig, replay};

/// Client hosts the copies are spread over.
const HOSTS: usize = 2_000;
/// Names each original name is spread over.
const NAMES_PER_NAME: usize = 300;

/// The observations of the bundled captures' TLS connections.
fn bundled_observations() -> Vec<Observation> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/captures"));
    let mut paths: Vec<String> = std::fs::read_dir(dir)
        .expect("captures/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .map(|p| p.display().to_string())
        .collect();
    paths.sort();
    let mut observations = Vec::new();
    replay(&paths, ReplayConfig::default(), &mut |rec, verdict| {
        let client = rec
            .proxy_protocol
            .as_ref()
            .and_then(|p| p.src_ip.as_deref());
        observations.push(Observation {
            ts_start_ns: rec.ts_start_ns,
            name: rec
                .sni
                .clone()
                .or_else(|| rec.connect.as_ref().map(|c| c.host.clone())),
            ja4: rec.ja4.clone(),
            client_ip: client.unwrap_or(&rec.client_ip).parse().expect("address"),
            client_port: rec.client_port,
            server_ip: rec.server_ip.parse().expect("address"),
            server_port: rec.server_port,
            outcome: verdict.outcome,
            signal: FailureSignal::of(verdict),
            abort_delay_ms: verdict.abort_delay_ms,
            client_rtt_ms: rec.client_rtt_ms,
            server_rtt_ms: None,
            server_hello_delay_ms: None,
            cert: rec.cert.clone(),
            connect: rec.connect.is_some(),
        });
        Ok::<(), ()>(())
    })
    .expect("bundled captures replay");
    observations.retain(|o| o.ja4.is_some());
    assert!(
        observations.len() > 50,
        "only {} TLS connections",
        observations.len()
    );
    observations
}

/// A table of `n` observations made from copies of `observations`.
fn table(observations: &[Observation], n: usize) -> EvidenceTable {
    let table = EvidenceTable::new(Limits {
        per_name: 2_000,
        total: n,
    });
    for i in 0..n {
        let mut o = observations[i % observations.len()].clone();
        let copy = i / observations.len();
        let host = copy % HOSTS;
        o.client_ip = std::net::IpAddr::from([
            10,
            (1 + host / 65_536) as u8,
            ((host / 256) % 256) as u8,
            (host % 256) as u8,
        ]);
        o.name = o
            .name
            .map(|name| format!("n{}.{name}", copy % NAMES_PER_NAME));
        o.ts_start_ns += copy as i64 * 50_000_000;
        table.observe(&o, (i as u64, 0));
    }
    assert_eq!(table.len(), n);
    table
}

fn bench_conclude(c: &mut Criterion) {
    let observations = bundled_observations();
    let mut g = c.benchmark_group("analysis");
    g.sample_size(10);
    for n in [30_000, 300_000] {
        let correlator = Correlator::with_table(Config::default(), table(&observations, n).into());
        let report = correlator.conclude();
        assert!(!report.candidates.is_empty(), "the copies make no rule");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("conclude", n), &n, |b, _| {
            b.iter(|| black_box(correlator.conclude()))
        });
    }
    g.finish();
}

criterion_group! {
    name = analysis;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = bench_conclude
}
criterion_main!(analysis);
