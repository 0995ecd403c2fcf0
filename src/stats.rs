//! Live-mode statistics: counters shared by the capture, worker, output and webhook threads,
//! read by the periodic stats line (`stats_line`) and the Prometheus endpoint
//! (`sinks::metrics`).
//!
//! Cost model. A worker thread handling millions of packets per second must not touch a
//! shared cache line per packet, so per-packet facts (packet and byte counts, latency,
//! flow-table changes, outcomes, evictions, latency buckets) go into a thread-local [`WorkerStats`] that
//! merges into the shared [`Stats`] at most every [`FLUSH_INTERVAL`] (checked every
//! [`FLUSH_CHECK_EVERY`] packets), when told to (`flush`, e.g. when its input queue runs dry)
//! and when dropped. The latency histogram's mutex is therefore taken about ten times a second
//! per worker, never per packet. Rare events from other threads (capture drops, queue drops,
//! queue depths, rules, webhook) are plain relaxed atomics on [`Stats`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use pinwatch::stats::{Stats, stats_line};
//!
//! let stats = Arc::new(Stats::new(2)); // two worker queues
//! let mut local = stats.worker(); // one per worker thread
//! let t0 = Instant::now();
//! // ... process a 1514-byte packet ...
//! local.record_packet(1514, t0.elapsed().as_nanos() as u64);
//! local.flush(); // input queue empty: publish now
//!
//! let prev = stats.snapshot();
//! std::thread::sleep(Duration::from_secs(1));
//! let now = stats.snapshot();
//! eprintln!("{}", stats_line(&prev, &now, Duration::from_secs(1)));
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::classify::Outcome;

/// Highest latency the histogram resolves; slower packets are recorded as this (60 s).
pub const LATENCY_MAX_NS: u64 = 60_000_000_000;
/// Significant decimal digits kept by the latency histogram: 1% resolution is plenty for
/// p50/p99/p999 and keeps each histogram at about 30 KiB.
pub const LATENCY_SIGFIG: u8 = 2;
/// How stale a worker's published numbers may get while it is busy.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A busy worker looks at the clock once per this many packets.
pub const FLUSH_CHECK_EVERY: u64 = 1024;
/// Upper bounds (inclusive, nanoseconds) of the latency histogram's buckets, the ones the
/// Prometheus endpoint exposes: 1-2.5-5 steps from 250 ns to 10 ms, which is where per-packet
/// processing times fall (sub-microsecond for most packets, tens of microseconds for a
/// handshake parsed, milliseconds only when something is wrong). Slower packets are counted in
/// one more bucket past the last bound.
pub const LATENCY_BUCKETS_NS: [u64; 15] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];
/// Buckets in [`Snapshot::latency_buckets`]: one per bound and one past the last.
pub const BUCKETS: usize = LATENCY_BUCKETS_NS.len() + 1;

const OUTCOMES: usize = Outcome::ALL.len();

/// An empty latency histogram with the bounds every histogram in this module shares (so
/// merging never fails on range).
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, LATENCY_SIGFIG)
        .expect("constant histogram bounds are valid")
}

fn outcome_index(outcome: Outcome) -> usize {
    Outcome::ALL
        .iter()
        .position(|&o| o == outcome)
        .expect("Outcome::ALL lists every outcome")
}

/// Counters of the webhook sink, shared between `WebhookSink` (which updates them) and
/// [`Stats`] (which reports them). Pass `stats.webhook.clone()` to the webhook's config.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub dropped: AtomicU64,
    pub rejected: AtomicU64,
    pub pending_lost: AtomicU64,
    /// Gauge: suggestions accepted by `send` and not yet delivered, rejected or lost.
    pub queued: AtomicU64,
}

/// A copy of [`WebhookCounters`] at one moment; also what `WebhookSink::shutdown` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookCounts {
    /// Answered 2xx.
    pub delivered: u64,
    /// Attempts that failed transiently (refused, timeout, 5xx, 408, 429) and were retried.
    pub retried: u64,
    /// Refused by `send` because the queue was full.
    pub dropped: u64,
    /// Answered with a non-retryable status (4xx other than 408/429, 1xx, 3xx); not retried.
    pub rejected: u64,
    /// Still queued or in flight when the shutdown deadline passed.
    pub pending_lost: u64,
    /// Waiting in the queue or in flight.
    pub queued: u64,
}

impl WebhookCounters {
    pub fn snapshot(&self) -> WebhookCounts {
        WebhookCounts {
            delivered: self.delivered.load(Relaxed),
            retried: self.retried.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            pending_lost: self.pending_lost.load(Relaxed),
            queued: self.queued.load(Relaxed),
        }
    }
}

/// The shared counters. Create one per run, wrap it in an `Arc`, hand clones to every thread.
#[derive(Debug)]
pub struct Stats {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// Signed because workers publish deltas and a close may be published before its open.
    flows: AtomicI64,
    outcomes: [AtomicU64; OUTCOMES],
    capture_drops_kernel: AtomicU64,
    capture_drops_interface: AtomicU64,
    queue_drops: AtomicU64,
    queue_depths: Box<[AtomicU64]>,
    evictions: AtomicU64,
    rules_emitted: AtomicU64,
    pub webhook: Arc<WebhookCounters>,
    latency: Mutex<Histogram<u64>>,
    latency_sum_ns: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS],
    started: Instant,
}

impl Stats {
    /// Counters for a pipeline with `queues` worker queues (their depths are gauges 0..queues).
    pub fn new(queues: usize) -> Self {
        Stats {
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            flows: AtomicI64::new(0),
            outcomes: Default::default(),
            capture_drops_kernel: AtomicU64::new(0),
            capture_drops_interface: AtomicU64::new(0),
            queue_drops: AtomicU64::new(0),
            queue_depths: (0..queues).map(|_| AtomicU64::new(0)).collect(),
            evictions: AtomicU64::new(0),
            rules_emitted: AtomicU64::new(0),
            webhook: Arc::new(WebhookCounters::default()),
            latency: Mutex::new(new_latency_histogram()),
            latency_sum_ns: AtomicU64::new(0),
            latency_buckets: Default::default(),
            started: Instant::now(),
        }
    }

    /// A thread-local accumulator for one worker thread.
    pub fn worker(self: &Arc<Self>) -> WorkerStats {
        WorkerStats::new(Arc::clone(self))
    }

    /// Sets libpcap's cumulative drop counters (`ps_drop`, `ps_ifdrop`): kernel buffer full,
    /// and dropped by the interface or driver.
    pub fn set_capture_drops(&self, kernel: u64, interface: u64) {
        self.capture_drops_kernel.store(kernel, Relaxed);
        self.capture_drops_interface.store(interface, Relaxed);
    }

    /// Packets the capture thread could not hand to a worker because its queue was full.
    pub fn add_queue_drops(&self, n: u64) {
        self.queue_drops.fetch_add(n, Relaxed);
    }

    /// Gauge: items waiting in worker queue `queue`. Out-of-range indexes are ignored.
    pub fn set_queue_depth(&self, queue: usize, depth: u64) {
        if let Some(slot) = self.queue_depths.get(queue) {
            slot.store(depth, Relaxed);
        }
    }

    pub fn add_rules_emitted(&self, n: u64) {
        self.rules_emitted.fetch_add(n, Relaxed);
    }

    /// For threads without a `WorkerStats`: one classified connection.
    pub fn add_outcome(&self, outcome: Outcome) {
        self.outcomes[outcome_index(outcome)].fetch_add(1, Relaxed);
    }

    /// For threads without a `WorkerStats`: flows tracked went up (or down) by `delta`.
    pub fn adjust_flows(&self, delta: i64) {
        self.flows.fetch_add(delta, Relaxed);
    }

    /// For threads without a `WorkerStats`: flows evicted from the table (timeout or memory).
    pub fn add_evictions(&self, n: u64) {
        self.evictions.fetch_add(n, Relaxed);
    }

    /// A consistent-enough copy of everything (each counter is read once; counters published
    /// by different threads may be a flush interval apart).
    pub fn snapshot(&self) -> Snapshot {
        let latency = self
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Snapshot {
            packets: self.packets.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            flows: self.flows.load(Relaxed).max(0) as u64,
            outcomes: std::array::from_fn(|i| self.outcomes[i].load(Relaxed)),
            capture_drops_kernel: self.capture_drops_kernel.load(Relaxed),
            capture_drops_interface: self.capture_drops_interface.load(Relaxed),
            queue_drops: self.queue_drops.load(Relaxed),
            queue_depths: self.queue_depths.iter().map(|d| d.load(Relaxed)).collect(),
            evictions: self.evictions.load(Relaxed),
            rules_emitted: self.rules_emitted.load(Relaxed),
            webhook: self.webhook.snapshot(),
            latency_sum_ns: self.latency_sum_ns.load(Relaxed),
            latency_buckets: std::array::from_fn(|i| self.latency_buckets[i].load(Relaxed)),
            latency,
            uptime: self.started.elapsed(),
        }
    }
}

/// Everything [`Stats`] counts, at one moment. Counters are totals since start.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub packets: u64,
    pub bytes: u64,
    /// Gauge: connections in the flow tables.
    pub flows: u64,
    /// Classified connections per outcome, indexed like `Outcome::ALL`.
    pub outcomes: [u64; OUTCOMES],
    pub capture_drops_kernel: u64,
    pub capture_drops_interface: u64,
    pub queue_drops: u64,
    /// Gauges, one per worker queue.
    pub queue_depths: Vec<u64>,
    pub evictions: u64,
    pub rules_emitted: u64,
    pub webhook: WebhookCounts,
    /// Per-packet processing latency in nanoseconds, since start.
    pub latency: Histogram<u64>,
    pub latency_sum_ns: u64,
    /// Packets per [`LATENCY_BUCKETS_NS`] bucket (not cumulative), the last one for packets
    /// slower than every bound. Exact, unlike `latency`, whose values are rounded to 1%.
    pub latency_buckets: [u64; BUCKETS],
    pub uptime: Duration,
}

impl Snapshot {
    pub fn outcome(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome_index(outcome)]
    }
}

/// Per-thread accumulator: plain fields, published to the shared [`Stats`] in one go.
pub struct WorkerStats {
    shared: Arc<Stats>,
    packets: u64,
    bytes: u64,
    flows_delta: i64,
    outcomes: [u64; OUTCOMES],
    evictions: u64,
    latency: Histogram<u64>,
    latency_sum_ns: u64,
    latency_buckets: [u64; BUCKETS],
    since_check: u64,
    last_flush: Instant,
}

impl WorkerStats {
    fn new(shared: Arc<Stats>) -> Self {
        WorkerStats {
            shared,
            packets: 0,
            bytes: 0,
            flows_delta: 0,
            outcomes: [0; OUTCOMES],
            evictions: 0,
            latency: new_latency_histogram(),
            latency_sum_ns: 0,
            latency_buckets: [0; BUCKETS],
            since_check: 0,
            last_flush: Instant::now(),
        }
    }

    /// One packet of `bytes` (captured length) that took `latency_ns` to process. Publishes
    /// by itself when the last publication is older than [`FLUSH_INTERVAL`].
    #[inline]
    pub fn record_packet(&mut self, bytes: u64, latency_ns: u64) {
        // Zero would be outside the histogram's range; sub-nanosecond means "too fast to see".
        self.latency.saturating_record(latency_ns.max(1));
        self.latency_sum_ns = self.latency_sum_ns.saturating_add(latency_ns);
        // Counted without branches: a binary search mispredicts on every other packet.
        let bucket = LATENCY_BUCKETS_NS
            .iter()
            .map(|&le| usize::from(le < latency_ns))
            .sum::<usize>();
        self.latency_buckets[bucket] += 1;
        self.count_packet(bytes);
    }

    /// One packet of `bytes` whose processing time was not measured (replay).
    #[inline]
    pub fn count_packet(&mut self, bytes: u64) {
        self.packets += 1;
        self.bytes += bytes;
        self.since_check += 1;
        if self.since_check >= FLUSH_CHECK_EVERY {
            self.since_check = 0;
            if self.last_flush.elapsed() >= FLUSH_INTERVAL {
                self.flush();
            }
        }
    }

    pub fn flow_opened(&mut self) {
        self.flows_delta += 1;
    }

    pub fn flow_closed(&mut self) {
        self.flows_delta -= 1;
    }

    pub fn outcome(&mut self, outcome: Outcome) {
        self.outcomes[outcome_index(outcome)] += 1;
    }

    pub fn evicted(&mut self, n: u64) {
        self.evictions += n;
    }

    /// Publishes everything accumulated so far. Call it when the input queue runs dry so an
    /// idle sensor's numbers are current; `record_packet` and `Drop` call it too.
    pub fn flush(&mut self) {
        let s = &self.shared;
        self.last_flush = Instant::now();
        publish(&s.packets, &mut self.packets);
        publish(&s.bytes, &mut self.bytes);
        publish(&s.evictions, &mut self.evictions);
        publish(&s.latency_sum_ns, &mut self.latency_sum_ns);
        for (shared, local) in s.outcomes.iter().zip(self.outcomes.iter_mut()) {
            publish(shared, local);
        }
        for (shared, local) in s
            .latency_buckets
            .iter()
            .zip(self.latency_buckets.iter_mut())
        {
            publish(shared, local);
        }
        if self.flows_delta != 0 {
            s.flows
                .fetch_add(std::mem::take(&mut self.flows_delta), Relaxed);
        }
        if !self.latency.is_empty() {
            let mut shared = s.latency.lock().unwrap_or_else(PoisonError::into_inner);
            // Same bounds on both sides, so adding cannot fail on range; a counter overflow
            // after 2^64 samples would only lose this batch.
            let _ = shared.add(&self.latency);
            drop(shared);
            self.latency.reset();
        }
    }
}

fn publish(shared: &AtomicU64, local: &mut u64) {
    if *local != 0 {
        shared.fetch_add(std::mem::take(local), Relaxed);
    }
}

impl Drop for WorkerStats {
    fn drop(&mut self) {
        self.flush();
    }
}

/// One human-readable status line for the interval from `prev` to `now` (`dt` long): rates
/// for packets and bytes, the flow gauge, totals since start for connections by outcome
/// (non-zero ones only), drops, rules and webhook, queue depths, and latency quantiles over
/// the interval.
///
/// `12.3k pkt/s 81.2 Mbit/s | flows 1024 | conns established=120 client_alert=3 |
/// drops kernel=0 iface=0 queue=0 | queues 3,0 | latency p50=1.2µs p99=8.1µs p99.9=40µs`
pub fn stats_line(prev: &Snapshot, now: &Snapshot, dt: Duration) -> String {
    let secs = dt.as_secs_f64().max(1e-9);
    let pps = now.packets.saturating_sub(prev.packets) as f64 / secs;
    let mbps = now.bytes.saturating_sub(prev.bytes) as f64 * 8.0 / secs / 1e6;
    let mut line = format!("{} pkt/s {mbps:.1} Mbit/s | flows {}", si(pps), now.flows);

    let conns: Vec<String> = Outcome::ALL
        .iter()
        .zip(now.outcomes)
        .filter(|(_, n)| *n > 0)
        .map(|(o, n)| format!("{}={n}", o.as_str()))
        .collect();
    if !conns.is_empty() {
        let _ = write!(line, " | conns {}", conns.join(" "));
    }
    let _ = write!(
        line,
        " | drops kernel={} iface={} queue={}",
        now.capture_drops_kernel, now.capture_drops_interface, now.queue_drops
    );
    if now.evictions > 0 {
        let _ = write!(line, " | evicted {}", now.evictions);
    }
    if now.rules_emitted > 0 {
        let _ = write!(line, " | rules {}", now.rules_emitted);
    }
    let w = &now.webhook;
    if *w != WebhookCounts::default() {
        let _ = write!(
            line,
            " | webhook delivered={} queued={} retried={} dropped={} rejected={}",
            w.delivered, w.queued, w.retried, w.dropped, w.rejected
        );
    }
    if !now.queue_depths.is_empty() {
        let depths: Vec<String> = now.queue_depths.iter().map(u64::to_string).collect();
        let _ = write!(line, " | queues {}", depths.join(","));
    }
    line.push_str(" | latency ");
    line.push_str(&interval_latency(prev, now));
    line
}

/// p50/p99/p99.9 of the packets processed between the two snapshots.
fn interval_latency(prev: &Snapshot, now: &Snapshot) -> String {
    let mut interval = now.latency.clone();
    // Cumulative histograms only grow, so this succeeds unless the snapshots are swapped or
    // from different runs; then the totals since start are the honest fallback.
    if interval.subtract(&prev.latency).is_err() {
        interval = now.latency.clone();
    }
    if interval.is_empty() {
        return "-".to_string();
    }
    let q = |q: f64| micros(interval.value_at_quantile(q));
    format!("p50={} p99={} p99.9={}", q(0.5), q(0.99), q(0.999))
}

fn micros(ns: u64) -> String {
    let us = ns as f64 / 1000.0;
    if us < 10.0 {
        format!("{us:.1}µs")
    } else {
        format!("{us:.0}µs")
    }
}

/// 950, 12.3k, 4.56M: three significant digits are what a reader takes in at a glance.
fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts_reach_the_shared_stats_on_flush_and_drop() {
        let stats = Arc::new(Stats::new(2));
        let mut a = stats.worker();
        let mut b = stats.worker();
        for _ in 0..10 {
            a.record_packet(100, 2_000);
        }
        b.record_packet(1500, 50_000);
        b.flow_opened();
        b.flow_opened();
        b.flow_closed();
        b.outcome(Outcome::ClientAlert);
        assert_eq!(
            stats.snapshot().packets,
            0,
            "nothing published before a flush"
        );
        a.flush();
        drop(b);
        let s = stats.snapshot();
        assert_eq!(s.packets, 11);
        assert_eq!(s.bytes, 2500);
        assert_eq!(s.flows, 1);
        assert_eq!(s.outcome(Outcome::ClientAlert), 1);
        assert_eq!(s.latency.len(), 11);
        assert_eq!(s.latency_sum_ns, 10 * 2_000 + 50_000);
        // 2 µs falls in the bucket up to 2.5 µs, 50 µs exactly on the 50 µs bound.
        let bucket = |le: u64| LATENCY_BUCKETS_NS.iter().position(|&b| b == le).unwrap();
        assert_eq!(s.latency_buckets[bucket(2_500)], 10);
        assert_eq!(s.latency_buckets[bucket(50_000)], 1);
        assert_eq!(s.latency_buckets.iter().sum::<u64>(), 11);
    }

    #[test]
    fn latency_slower_than_every_bucket_lands_in_the_last_one() {
        let stats = Arc::new(Stats::new(0));
        let mut w = stats.worker();
        w.record_packet(60, 0);
        w.record_packet(60, 10_000_001);
        drop(w);
        let s = stats.snapshot();
        assert_eq!(s.latency_buckets[0], 1);
        assert_eq!(s.latency_buckets[LATENCY_BUCKETS_NS.len()], 1);
    }

    #[test]
    fn stats_line_shows_rates_nonzero_outcomes_drops_queues_and_interval_latency() {
        let stats = Arc::new(Stats::new(2));
        let mut w = stats.worker();
        for _ in 0..100 {
            w.record_packet(1000, 900_000); // slow packets before the interval
        }
        w.flush();
        let prev = stats.snapshot();
        for _ in 0..2000 {
            w.record_packet(1250, 3_000);
        }
        w.outcome(Outcome::Established);
        w.flush();
        stats.set_capture_drops(7, 1);
        stats.set_queue_depth(1, 42);
        stats.set_queue_depth(9, 1); // no such queue: ignored
        let now = stats.snapshot();
        let line = stats_line(&prev, &now, Duration::from_secs(2));
        assert!(
            line.starts_with("1.0k pkt/s 10.0 Mbit/s | flows 0"),
            "{line}"
        );
        assert!(line.contains("conns established=1 |"), "{line}");
        assert!(!line.contains("client_alert"), "{line}");
        assert!(line.contains("drops kernel=7 iface=1 queue=0"), "{line}");
        assert!(line.contains("queues 0,42"), "{line}");
        // The interval saw only 3 µs packets; the 900 µs ones belong to before it.
        assert!(
            line.ends_with("latency p50=3.0µs p99=3.0µs p99.9=3.0µs"),
            "{line}"
        );
    }

    #[test]
    fn stats_line_for_an_idle_interval_has_no_latency() {
        let stats = Stats::new(0);
        let s = stats.snapshot();
        let line = stats_line(&s, &s, Duration::from_secs(1));
        assert!(line.ends_with("| latency -"), "{line}");
        assert!(!line.contains("queues"), "{line}");
    }
}
