//! Benchmark of the rule analysis (`Correlator::conclude`): the pass that turns the evidence
//! table into rules. A replay runs it once at the end, after every worker has stopped, so its
//! time is added to the run's whole; a live run repeats it as evidence arrives, with a pause
//! that grows with its cost, so its time is also how stale streamed rules can get.
//!
//! The evidence is the connection records of every bundled capture, replayed for real, then
//! spread over many names, clients and seconds (each copy gets its own client address, a
//! prefix on its server name and a later start), so that the table holds as many observations
//! as a busy day would, with the same mix of outcomes, certificates and fingerprints.
//!
//! Run: `cargo bench --bench analysis` (about 20 s).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pinwatch::correlate::{Config, Correlator, EvidenceTable, Limits};
use pinwatch::output::record::ConnectionRecord;
use pinwatch::replay::{ReplayConfig, replay};

/// Client hosts the copies are spread over.
const HOSTS: usize = 2_000;
/// Names each original name is spread over.
const NAMES_PER_NAME: usize = 300;

fn bundled_records() -> Vec<ConnectionRecord> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/captures"));
    let mut paths: Vec<String> = std::fs::read_dir(dir)
        .expect("captures/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .map(|p| p.display().to_string())
        .collect();
    paths.sort();
    let mut records = Vec::new();
    replay(&paths, ReplayConfig::default(), &mut |rec, _| {
        records.push(rec.clone());
        Ok::<(), ()>(())
    })
    .expect("bundled captures replay");
    records.retain(|r| r.ja4.is_some());
    assert!(records.len() > 50, "only {} TLS records", records.len());
    records
}

/// A table of `n` observations made from copies of `records`.
fn table(records: &[ConnectionRecord], n: usize) -> EvidenceTable {
    let table = EvidenceTable::new(Limits {
        per_name: 2_000,
        total: n,
    });
    for i in 0..n {
        let mut rec = records[i % records.len()].clone();
        let copy = i / records.len();
        let host = copy % HOSTS;
        rec.client_ip = format!(
            "10.{}.{}.{}",
            1 + host / 65_536,
            (host / 256) % 256,
            host % 256
        );
        rec.sni = rec
            .sni
            .map(|sni| format!("n{}.{sni}", copy % NAMES_PER_NAME));
        rec.ts_start_ns += copy as i64 * 50_000_000;
        table.observe(&rec, (i as u64, 0));
    }
    assert_eq!(table.len(), n);
    table
}

fn bench_conclude(c: &mut Criterion) {
    let records = bundled_records();
    let mut g = c.benchmark_group("analysis");
    g.sample_size(10);
    for n in [30_000, 300_000] {
        let correlator = Correlator::with_table(Config::default(), table(&records, n).into());
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
