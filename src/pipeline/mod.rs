//! The pipeline that replay and live share:
//!
//! ```text
//! source (capture + decode + shard) ──batches──▶ worker 1..N (flow, TLS, classify, record, line)
//!                                                   │ evidence ─▶ shared EvidenceTable
//!                                                   ▼ finished connections
//!                               collector (puts them back in run order) ─▶ Output
//! ```
//!
//! The source reads frames, decodes them just far enough to hash the flow symmetrically (both
//! directions of a connection land on one worker), and appends them to that worker's batch.
//! Workers own a shard of the flow table each. Once per capture second the source sends every
//! worker a tick that sweeps idle and closed flows, so sweeping happens at the same points
//! whatever the number of threads.
//!
//! Capture files are mapped and can be read any number of times for free, so there the source
//! stage is folded into the workers: each worker goes through every frame of the file itself,
//! counts and ticks on every packet, and processes only its own shard (see `run_scanning`).
//! The workers share one mapping of each file and, for classic pcap files, one index of its
//! frames that they take turns building (`capture::SplitWalk`), with each frame's flow hash
//! in it: a worker passes over the others' frames without touching their bytes. That is far
//! cheaper than a thread handing every frame over (a copy, a queue, and a third busy thread on
//! a two-core box).
//!
//! Every finished connection carries an [`Order`] key: which event finished it (a tick before
//! packet P, packet P itself, or the end of input) and which packet created it. Workers report
//! after each batch how far they have got; the collector releases connections in key order once
//! every worker is past them. With one thread or many, the output is the same records in the
//! same order, and the rule stage scores the same evidence.

pub mod source;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::capture::{CaptureError, Frame};
use crate::classify::{Outcome, Verdict, classify};
use crate::correlate::observation::Observation;
use crate::correlate::path::RecordPaths;
use crate::correlate::{EvidenceTable, Order};
use crate::decode::{self, Segment};
use crate::flow::{Connection, FlowConfig, FlowTable};
use crate::output::record::{self, ConnectionRecord, Origin};
use crate::stats::{Stats, WorkerStats};
use crate::tls::At;
#[cfg(feature = "live")]
pub use source::LiveSource;
pub use source::{FileSource, Next, Source};

/// How the pipeline runs.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub flow: FlowConfig,
    /// Worker threads; 1 runs every stage on the calling thread.
    pub threads: usize,
    /// A full worker queue makes the source wait (replay: nothing is lost) or drop the batch
    /// and count it (live: the capture must keep draining the kernel buffer).
    pub drop_when_full: bool,
    /// Time each packet's processing for the latency histogram (costs a clock read per packet).
    pub measure_latency: bool,
    /// In live mode, a partly filled batch is handed over after this long.
    pub max_batch_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            flow: FlowConfig::default(),
            threads: 1,
            drop_when_full: false,
            measure_latency: false,
            max_batch_delay: Duration::from_millis(20),
        }
    }
}

/// Packets per batch handed to a worker: large enough to amortise the channel, small enough
/// to keep a live sensor's latency low.
const BATCH_PACKETS: usize = 256;
/// Batches waiting per worker before the source waits or drops (at most ~6 MB of frames each).
const QUEUE_BATCHES: usize = 16;
/// Every worker hears from the source at least once per this many packets, even when its
/// share of the traffic is empty, so the collector never holds more than about this many
/// packets' worth of finished connections waiting for a quiet worker.
const HEARTBEAT_PACKETS: u64 = 4096;
/// Sweep idle and closed flows once per this much capture time.
const TICK_NS: i64 = 1_000_000_000;

/// What the caller does with the pipeline's results, on the calling thread.
pub trait Output {
    type Error;
    /// Whether this output takes connections as JSON lines ([`Output::line`]) rather than as
    /// records. The workers then serialise each connection as they finish it, while it is still
    /// in their cache, and drop the record there; the collector only puts lines in order.
    fn wants_lines(&self) -> bool {
        false
    }
    /// Whether this output uses connections at all. When it does not (only rules are written),
    /// no record is built: the evidence table takes the typed observation alone.
    fn wants_records(&self) -> bool {
        true
    }
    /// One finished connection, in run order.
    fn record(&mut self, rec: &ConnectionRecord, verdict: &Verdict) -> Result<(), Self::Error>;
    /// The evidence the records' `path` is worked out from, in run order; `None` leaves it
    /// null. An output that takes records keeps one for as long as it runs.
    fn record_paths(&mut self) -> Option<&mut RecordPaths> {
        None
    }
    /// One finished connection as its JSON object (no newline), in run order; called instead
    /// of [`Output::record`] when [`Output::wants_lines`] says so.
    fn line(&mut self, json: &[u8]) -> Result<(), Self::Error> {
        let _ = json;
        Ok(())
    }
    /// Every connection up to `upto` has been passed to the output, and its evidence is in the
    /// shared table; capture time is `ts_ns`. Called at least once per capture second of
    /// traffic and when a live capture is idle.
    fn progress(&mut self, upto: Order, ts_ns: i64) -> Result<(), Self::Error> {
        let _ = (upto, ts_ns);
        Ok(())
    }
}

/// What a run saw, for the summary at the end.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: usize,
    pub packets: u64,
    /// Captured bytes handed to the decoder.
    pub bytes: u64,
    pub tcp_segments: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    pub connections: u64,
    pub outcomes: BTreeMap<Outcome, u64>,
    pub anomalies: BTreeMap<String, u64>,
    pub evicted: u64,
    /// Packets dropped because a worker's queue was full (live mode only).
    pub queue_drops: u64,
    pub threads: usize,
    pub elapsed: Duration,
    /// Inputs that could not be read to the end, with the reason (one line each).
    pub errors: Vec<CaptureError>,
}

impl Summary {
    pub fn packets_per_sec(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn gbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e9 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One finished connection on its way to the collector.
struct Finished {
    order: Order,
    /// For the run's summary.
    outcome: Outcome,
    anomalies: Vec<String>,
    /// For the record's path, which the collector works out in run order; only when the
    /// output takes records.
    observation: Option<Box<Observation>>,
    body: Body,
}

/// What the output gets of a finished connection. The record is boxed so that a queued
/// connection is a few words to move, whichever form it takes.
enum Body {
    Record {
        record: Box<ConnectionRecord>,
        verdict: Verdict,
    },
    Line(Vec<u8>),
    /// The output takes no connections ([`Output::wants_records`]).
    Nothing,
}

/// The order key of an event: ticks sort before the packet they precede.
fn tick_event(pkt: u64) -> u64 {
    pkt.saturating_mul(2)
}
fn packet_event(pkt: u64) -> u64 {
    pkt.saturating_mul(2).saturating_add(1)
}
const END_EVENT: u64 = u64::MAX;

/// One worker's shard of the flow table and what it finished.
struct Worker {
    table: FlowTable,
    finisher: Finisher,
    stats: WorkerStats,
    finished: Vec<Finished>,
    tracked: usize,
}

impl Worker {
    fn new(flow: FlowConfig, finisher: Finisher, stats: &Arc<Stats>) -> Self {
        Worker {
            table: FlowTable::new(flow),
            finisher,
            stats: stats.worker(),
            finished: Vec::new(),
            tracked: 0,
        }
    }

    fn packet(&mut self, seg: &Segment<'_>, at: At) {
        let event = packet_event(at.pkt());
        let (table, finisher, finished) = (&mut self.table, &mut self.finisher, &mut self.finished);
        let evicted_before = table.evicted;
        table.packet(seg, at, &mut |c| finisher.finish(c, event, finished));
        let evicted = table.evicted - evicted_before;
        if evicted > 0 {
            self.stats.evicted(evicted);
        }
        self.track_size();
    }

    fn tick(&mut self, now_ns: i64, pkt: u64) {
        let event = tick_event(pkt);
        let (table, finisher, finished) = (&mut self.table, &mut self.finisher, &mut self.finished);
        table.sweep(now_ns, &mut |c| finisher.finish(c, event, finished));
        self.track_size();
    }

    /// Finishes every flow, in creation order, handing them to `chunk` a few at a time with
    /// how far the drain has got: a table of a million open connections must not become a
    /// million records in memory at once.
    fn drain(&mut self, chunk: &mut dyn FnMut(Vec<Finished>, Order)) {
        let (table, finisher, finished, stats) = (
            &mut self.table,
            &mut self.finisher,
            &mut self.finished,
            &mut self.stats,
        );
        let mut drained = 0usize;
        table.drain(&mut |c| {
            let seq = c.seq();
            finisher.finish(c, END_EVENT, finished);
            if finished.len() >= REPORT_CONNECTIONS {
                count_outcomes(stats, finished);
                chunk(std::mem::take(finished), (END_EVENT, seq));
            }
            // The drain frees connections (one size class) while the evidence they leave grows
            // (others): without handing the freed pages back as it goes, a drain of a million
            // connections held both and set the run's memory peak.
            drained += 1;
            if drained.is_multiple_of(RELEASE_EVERY_DRAINED) {
                crate::memory::release_freed_memory();
            }
        });
        self.track_size();
    }

    /// Counts a processed packet; with a clock (live mode), also the time it took since the
    /// clock was last read, and restarts the clock.
    fn account(&mut self, bytes: u64, clock: &mut Option<Instant>) {
        match clock {
            Some(started) => {
                let now = Instant::now();
                let ns = now.duration_since(*started).as_nanos() as u64;
                *started = now;
                self.stats.record_packet(bytes, ns);
            }
            None => self.stats.count_packet(bytes),
        }
    }

    /// Keeps the shared flow gauge in step with this shard.
    fn track_size(&mut self) {
        let now = self.table.len();
        if now > self.tracked {
            (self.tracked..now).for_each(|_| self.stats.flow_opened());
        } else {
            (now..self.tracked).for_each(|_| self.stats.flow_closed());
        }
        self.tracked = now;
    }

    fn take_finished(&mut self) -> Vec<Finished> {
        count_outcomes(&mut self.stats, &self.finished);
        std::mem::take(&mut self.finished)
    }
}

fn count_outcomes(stats: &mut WorkerStats, finished: &[Finished]) {
    for f in finished {
        stats.outcome(f.outcome);
    }
}

/// What a worker does with the connections it finishes.
#[derive(Clone)]
struct Finisher {
    evidence: Arc<EvidenceTable>,
    /// Serialise records here (the output wants lines).
    lines: bool,
    /// Build records at all (the output uses them).
    records: bool,
    /// Where a line is serialised before it is copied out at its exact size: grown a few
    /// times at the start, not a few times for every line.
    scratch: Vec<u8>,
    /// Sensor, interface and files, stamped on every record.
    origin: Option<Arc<Origin>>,
}

impl Finisher {
    /// Classifies a finished connection, adds its observation to the shared table and builds
    /// its record if the output takes records.
    fn finish(&mut self, conn: Connection, event: u64, out: &mut Vec<Finished>) {
        let order = (event, conn.seq());
        let verdict = classify(&conn);
        let observation = Observation::of(&conn, &verdict);
        self.evidence.observe(&observation, order);
        let outcome = verdict.outcome;
        if !self.records {
            let anomalies = record::anomalies(&conn);
            out.push(Finished {
                order,
                outcome,
                anomalies,
                observation: None,
                body: Body::Nothing,
            });
            return;
        }
        let mut record = record::of(&conn, &verdict);
        if let Some(origin) = &self.origin {
            origin.stamp(&mut record, conn.seq());
        }
        // Its buffers go back to the allocator before the line takes new ones.
        drop(conn);
        let anomalies = record.anomalies.clone();
        self.scratch.clear();
        // A record that cannot be serialised (none can today) goes on whole, for the output
        // to report the error.
        let body = if self.lines && serde_json::to_writer(&mut self.scratch, &record).is_ok() {
            // Room for the path the collector sets, so that it does not move the line.
            let mut line = Vec::with_capacity(self.scratch.len() + PATH_ROOM);
            line.extend_from_slice(&self.scratch);
            Body::Line(line)
        } else {
            Body::Record {
                record: Box::new(record),
                verdict,
            }
        };
        out.push(Finished {
            order,
            outcome,
            anomalies,
            observation: Some(Box::new(observation)),
            body,
        });
    }
}

/// The longest path and signal words less the nulls they replace.
const PATH_ROOM: usize = 40;

/// Puts finished connections back in run order and hands them to the output.
///
/// Each worker finishes connections in key order (events in processing order, creation order
/// within an event), so the collector keeps one queue per worker and merges their heads. A
/// heap over every pending record moved each ~700-byte record a dozen times on its way
/// through; here a record is moved in and out of its queue once.
struct Collector<'o, O: Output> {
    output: &'o mut O,
    queues: Vec<VecDeque<Finished>>,
    /// How far each worker has got, and the capture time there.
    progress: Vec<(Order, i64)>,
    released: (Order, i64),
    summary: Summary,
}

impl<'o, O: Output> Collector<'o, O> {
    fn new(output: &'o mut O, workers: usize) -> Self {
        Collector {
            output,
            queues: (0..workers).map(|_| VecDeque::new()).collect(),
            progress: vec![((0, 0), i64::MIN); workers],
            released: ((0, 0), i64::MIN),
            summary: Summary::default(),
        }
    }

    /// Worker `w` finished these connections and will not finish any other up to `upto`.
    fn take(
        &mut self,
        w: usize,
        finished: Vec<Finished>,
        upto: Order,
        ts_ns: i64,
    ) -> Result<(), O::Error> {
        enqueue(&mut self.queues[w], finished);
        self.progress[w] = (upto, ts_ns);
        let (upto, ts) = self
            .progress
            .iter()
            .copied()
            .min_by_key(|p| p.0)
            .unwrap_or(((0, 0), i64::MIN));
        while let Some(f) = self.next_through(upto) {
            self.summary.connections += 1;
            *self.summary.outcomes.entry(f.outcome).or_default() += 1;
            for a in f.anomalies {
                *self.summary.anomalies.entry(a).or_default() += 1;
            }
            let path = match (self.output.record_paths(), &f.observation) {
                (Some(paths), Some(o)) => paths.next(o),
                _ => None,
            };
            match f.body {
                Body::Record {
                    mut record,
                    verdict,
                } => {
                    if let Some((p, s)) = path {
                        record.path = Some(p.name());
                        record.path_signal = Some(s.name());
                    }
                    self.output.record(&record, &verdict)?
                }
                Body::Line(mut json) => {
                    if let Some((p, s)) = path {
                        record::set_line_path(&mut json, p.name(), s.name());
                    }
                    self.output.line(&json)?
                }
                Body::Nothing => {}
            }
        }
        if (upto, ts) > self.released {
            self.released = (upto, ts);
            self.output.progress(upto, ts)?;
        }
        Ok(())
    }

    /// The earliest pending connection, if it is at or before `upto`.
    fn next_through(&mut self, upto: Order) -> Option<Finished> {
        let (_, queue) = self
            .queues
            .iter_mut()
            .filter_map(|q| Some((q.front()?.order, q)))
            .filter(|(order, _)| *order <= upto)
            .min_by_key(|(order, _)| *order)?;
        queue.pop_front()
    }
}

/// Appends one worker's report to its queue, keeping the queue in key order. Reports arrive
/// in order already; a record that does not is inserted where it belongs rather than trusted.
fn enqueue(queue: &mut VecDeque<Finished>, finished: Vec<Finished>) {
    for f in finished {
        match queue.back() {
            Some(last) if last.order > f.order => {
                let at = queue.partition_point(|q| q.order < f.order);
                queue.insert(at, f);
            }
            _ => queue.push_back(f),
        }
    }
}

/// One unit of work for a worker.
enum Item {
    Packet {
        at: At,
        linktype: i32,
        start: usize,
        len: u32,
    },
    Tick {
        now_ns: i64,
        pkt: u64,
    },
    /// End of input: finish every flow.
    Drain,
}

/// Frames for one worker, copied into one buffer.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    items: Vec<Item>,
    /// The source had dispatched every event up to this key when it sent the batch.
    upto: u64,
    ts_ns: i64,
}

impl Batch {
    fn push_frame(&mut self, frame: &Frame<'_>, at: At) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(frame.data);
        self.items.push(Item::Packet {
            at,
            linktype: frame.linktype,
            start,
            len: frame.data.len() as u32,
        });
    }

    fn frame(&self, start: usize, len: u32) -> &[u8] {
        &self.bytes[start..start + len as usize]
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
    }

    fn packets(&self) -> usize {
        self.items.len()
    }
}

/// A worker's report after a batch.
struct Report {
    worker: usize,
    finished: Vec<Finished>,
    upto: Order,
    ts_ns: i64,
}

/// Everything up to and including event `event`.
fn through(event: u64) -> Order {
    (event, u64::MAX)
}

/// Feeds worker reports to the collector until every worker has hung up. After an output
/// error it sets `abort` (so the workers stop) and keeps draining, so no worker blocks on a
/// full report queue.
fn collect<O: Output>(
    collector: &mut Collector<'_, O>,
    reports: &Receiver<Report>,
    abort: &AtomicBool,
) -> Result<(), O::Error> {
    let mut result = Ok(());
    for report in reports.iter() {
        if result.is_ok() {
            result = collector.take(report.worker, report.finished, report.upto, report.ts_ns);
            if result.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
        }
    }
    result
}

/// Runs `source` through the pipeline to its end, or until `stop` is set. Connection records
/// go to `output` in run order; evidence goes to `evidence`. An error from `output` stops the
/// run and is returned.
pub fn run<S: Source + Send, O: Output>(
    source: &mut S,
    config: Config,
    evidence: &Arc<EvidenceTable>,
    stats: &Arc<Stats>,
    stop: &AtomicBool,
    output: &mut O,
) -> Result<Summary, O::Error> {
    let started = Instant::now();
    let threads = config.threads.max(1);
    let finisher = Finisher {
        evidence: Arc::clone(evidence),
        lines: output.wants_lines(),
        records: output.wants_records() || output.wants_lines(),
        scratch: Vec::new(),
        origin: source.origin(),
    };
    let mut collector = Collector::new(output, threads);
    let mut counts = SourceCounts::default();
    let result = if threads == 1 {
        run_inline(
            source,
            config,
            &finisher,
            stats,
            stop,
            &mut collector,
            &mut counts,
        )
    } else if let Some(copies) = source.copies(threads - 1) {
        run_scanning(
            source,
            copies,
            config,
            &finisher,
            stats,
            stop,
            &mut collector,
            &mut counts,
        )
    } else {
        run_threaded(
            source,
            config,
            &finisher,
            stats,
            stop,
            &mut collector,
            &mut counts,
        )
    };
    let mut summary = std::mem::take(&mut collector.summary);
    result?;
    summary.threads = threads;
    summary.files = source.files_opened();
    summary.errors = source.take_errors();
    summary.packets = counts.packets;
    summary.bytes = counts.bytes;
    summary.tcp_segments = counts.tcp_segments;
    summary.skipped = counts.skipped;
    summary.queue_drops = counts.queue_drops;
    summary.evicted = counts.evicted;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// What the source stage counts.
#[derive(Default)]
struct SourceCounts {
    packets: u64,
    bytes: u64,
    tcp_segments: u64,
    skipped: BTreeMap<&'static str, u64>,
    queue_drops: u64,
    evicted: u64,
    last_tick_ns: Option<i64>,
}

impl SourceCounts {
    /// With no packet arriving, a tick is due when the clock has moved a tick past the last
    /// one; it goes before the next packet index. Returns that packet index.
    fn idle_tick(&mut self, now_ns: Option<i64>) -> Option<u64> {
        let now = now_ns?;
        let last = self.last_tick_ns?;
        if now.saturating_sub(last) < TICK_NS {
            return None;
        }
        self.last_tick_ns = Some(now);
        Some(self.packets + 1)
    }

    /// Counts a frame and gives it its packet index (its count so far); says whether a tick is
    /// due before it.
    fn admit(&mut self, frame: &Frame<'_>) -> (At, bool) {
        self.packets += 1;
        self.bytes += frame.data.len() as u64;
        let tick = match self.last_tick_ns {
            None => {
                self.last_tick_ns = Some(frame.ts_ns);
                false
            }
            Some(last) if frame.ts_ns.saturating_sub(last) >= TICK_NS => {
                self.last_tick_ns = Some(frame.ts_ns);
                true
            }
            Some(_) => false,
        };
        let at = At::new(self.packets, frame.ts_ns);
        (at, tick)
    }
}

/// Every stage on the calling thread: no copies, no channels.
fn run_inline<S: Source, O: Output>(
    source: &mut S,
    config: Config,
    finisher: &Finisher,
    stats: &Arc<Stats>,
    stop: &AtomicBool,
    collector: &mut Collector<'_, O>,
    counts: &mut SourceCounts,
) -> Result<(), O::Error> {
    let mut report = |finished, upto, ts| collector.take(0, finished, upto, ts);
    let everything = Shard {
        index: 0,
        of: 1,
        pace: None,
    };
    let halt = AtomicBool::new(false);
    let evicted = scan(
        source,
        config.flow,
        finisher,
        stats,
        config.measure_latency,
        [stop, &halt],
        everything,
        counts,
        &mut report,
    )?;
    counts.evicted = evicted;
    Ok(())
}

/// The flows a reading worker keeps: those whose flow hash is `index` modulo `of`.
#[derive(Debug, Clone, Copy)]
struct Shard<'p> {
    index: usize,
    of: usize,
    /// Keeps the readers in step (none when reading alone).
    pace: Option<&'p Pace>,
}

/// How far each reading worker has got. The collector can only release a finished connection
/// once every worker is past it, so a worker running ahead makes it hold everything finished
/// since; a worker more than [`MAX_LEAD_PACKETS`] ahead of the slowest waits for it.
#[derive(Debug)]
struct Pace {
    scanned: Vec<std::sync::atomic::AtomicU64>,
}

/// A reading worker among several reports at the latest when it has finished this many
/// connections.
const REPORT_CONNECTIONS: usize = 64;

/// How many connections a drain finishes between two returns of freed memory to the system.
const RELEASE_EVERY_DRAINED: usize = 1 << 13;

/// How far one reading worker may run ahead of another.
const MAX_LEAD_PACKETS: u64 = 2 * HEARTBEAT_PACKETS;
/// Readers compare their progress this often.
const PACE_PACKETS: u64 = 1024;

impl Pace {
    fn new(workers: usize) -> Self {
        Pace {
            scanned: (0..workers).map(|_| 0.into()).collect(),
        }
    }

    /// Worker `me` has read `packets`; returns once no other worker is too far behind, or
    /// when `halt` is set.
    fn step(&self, me: usize, packets: u64, halt: [&AtomicBool; 2]) {
        self.scanned[me].store(packets, Ordering::Release);
        let behind = || {
            self.scanned
                .iter()
                .map(|s| s.load(Ordering::Acquire))
                .min()
                .unwrap_or(packets)
        };
        let mut waits = 0u32;
        while packets.saturating_sub(behind()) > MAX_LEAD_PACKETS
            && !halt.iter().any(|h| h.load(Ordering::Relaxed))
        {
            // The slowest reader is usually one yield away; a long wait sleeps.
            if waits < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
            waits += 1;
        }
    }

    /// Worker `me` is done: nobody waits for it any more.
    fn finish(&self, me: usize) {
        self.scanned[me].store(u64::MAX, Ordering::Release);
    }
}

/// Marks a reader finished when dropped.
struct ReaderDone<'p>(&'p Pace, usize);

impl Drop for ReaderDone<'_> {
    fn drop(&mut self) {
        self.0.finish(self.1);
    }
}

impl Shard<'_> {
    fn keeps(&self, seg: &Segment<'_>) -> bool {
        self.of == 1 || self.owns(seg.flow_hash())
    }

    fn owns(&self, flow_hash: u64) -> bool {
        // Asked for every packet by every reader: a mask, not a division, for 2, 4, 8 shards.
        let of = self.of as u64;
        let shard = if of.is_power_of_two() {
            flow_hash & (of - 1)
        } else {
            flow_hash % of
        };
        shard as usize == self.index
    }
}

/// A worker that reads the source itself and processes the packets of its shard; it still
/// counts every packet and ticks at every capture second, so ticks, packet indices and order
/// keys are the same in every shard. Reports what it finished, and how far it has got, at each
/// tick and, alone, after each finished connection, or, as one of several, every
/// [`HEARTBEAT_PACKETS`] packets or [`REPORT_CONNECTIONS`] connections; an error from `report`
/// stops it. Stops early when either `halt` flag is set. Returns its evictions.
#[allow(clippy::too_many_arguments)]
fn scan<S: Source, E>(
    source: &mut S,
    flow: FlowConfig,
    finisher: &Finisher,
    stats: &Arc<Stats>,
    measure_latency: bool,
    halt: [&AtomicBool; 2],
    shard: Shard<'_>,
    counts: &mut SourceCounts,
    report: &mut dyn FnMut(Vec<Finished>, Order, i64) -> Result<(), E>,
) -> Result<u64, E> {
    // However this returns, the other readers must stop waiting for this one.
    let _done = shard.pace.map(|pace| ReaderDone(pace, shard.index));
    let mut worker = Worker::new(flow, finisher.clone(), stats);
    let mut clock = measure_latency.then(Instant::now);
    let mut last_ts = i64::MIN;
    while !halt.iter().any(|h| h.load(Ordering::Relaxed)) {
        let frame = match source.next() {
            Next::Frame(f) => f,
            Next::Idle(now) => {
                worker.stats.flush();
                let mut upto = packet_event(counts.packets);
                if let Some(pkt) = counts.idle_tick(now) {
                    let now = now.unwrap_or(last_ts);
                    worker.tick(now, pkt);
                    upto = tick_event(pkt);
                    last_ts = now;
                }
                report(worker.take_finished(), through(upto), last_ts)?;
                clock = clock.map(|_| Instant::now());
                continue;
            }
            Next::End => break,
        };
        let (at, tick) = counts.admit(&frame);
        last_ts = at.ts_ns;
        if tick {
            worker.tick(at.ts_ns, at.pkt());
        }
        // Each packet is decoded and counted by exactly one shard: its flow's (by the quick
        // hash when the frame has the common shape, so the others pass over it without a
        // decode), or the first when it is not TCP.
        let quick = if shard.of > 1 {
            frame
                .flow_hash
                .unwrap_or_else(|| decode::quick_flow_hash(frame.linktype, frame.data))
        } else {
            None
        };
        let mine = match quick {
            Some(hash) if !shard.owns(hash) => false,
            _ => match decode::decode(frame.linktype, frame.data) {
                Ok(seg) => {
                    // A quick hash already said the packet is ours.
                    let mine = quick.is_some() || shard.keeps(&seg);
                    if mine {
                        counts.tcp_segments += 1;
                        worker.packet(&seg, at);
                    }
                    mine
                }
                Err(skip) => {
                    let mine = quick.is_some() || shard.index == 0;
                    if mine {
                        *counts.skipped.entry(skip.as_str()).or_default() += 1;
                    }
                    mine
                }
            },
        };
        if mine {
            worker.account(frame.data.len() as u64, &mut clock);
        }
        // Alone, a worker hands each finished connection straight on. As one of several it
        // reports in bulk (a channel message per connection kept the collector's thread so
        // busy that the workers waited on its queue), but in bounded amounts: what sits in the
        // report queue is memory too.
        let heartbeat = counts.packets.is_multiple_of(HEARTBEAT_PACKETS);
        let due = if shard.of == 1 {
            !worker.finished.is_empty()
        } else {
            heartbeat || worker.finished.len() >= REPORT_CONNECTIONS
        };
        if tick || due {
            report(
                worker.take_finished(),
                through(packet_event(at.pkt())),
                at.ts_ns,
            )?;
        }
        if counts.packets.is_multiple_of(PACE_PACKETS)
            && let Some(pace) = shard.pace
        {
            pace.step(shard.index, counts.packets, halt);
        }
    }
    let mut failed = None;
    worker.drain(&mut |finished, upto| {
        if failed.is_none() {
            failed = report(finished, upto, last_ts).err();
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    worker.stats.flush();
    report(worker.take_finished(), through(END_EVENT), last_ts)?;
    Ok(worker.table.evicted)
}

/// Sources that can be read several times at no cost (files mapped in place): one reading
/// worker per copy, nothing handed between threads, the collector on the calling thread.
#[allow(clippy::too_many_arguments)]
fn run_scanning<S: Source + Send, O: Output>(
    source: &mut S,
    copies: Vec<S>,
    config: Config,
    finisher: &Finisher,
    stats: &Arc<Stats>,
    stop: &AtomicBool,
    collector: &mut Collector<'_, O>,
    counts: &mut SourceCounts,
) -> Result<(), O::Error> {
    let of = copies.len() + 1;
    let (report_tx, report_rx) = bounded::<Report>(of * QUEUE_BATCHES);
    let pace = Pace::new(of);
    // The collector stopping early (an output error) must stop the workers too.
    let abort = AtomicBool::new(false);
    let flow = FlowConfig {
        max_flows: (config.flow.max_flows / of).max(1),
        ..config.flow
    };
    let mut copies = copies;
    let mut copy_counts: Vec<SourceCounts> = (1..of).map(|_| SourceCounts::default()).collect();
    // Worker 0 reads the caller's source and keeps the frame counts the summary reports.
    let readers = std::iter::once((&mut *source, &mut *counts))
        .chain(copies.iter_mut().zip(copy_counts.iter_mut()))
        .enumerate();
    let (result, evicted) = std::thread::scope(|scope| {
        let (abort, pace) = (&abort, &pace);
        let mut handles = Vec::with_capacity(of);
        for (index, (source, counts)) in readers {
            let report_tx = report_tx.clone();
            let worker = move || {
                let mut report = |finished, upto, ts_ns| {
                    report_tx.send(Report {
                        worker: index,
                        finished,
                        upto,
                        ts_ns,
                    })
                };
                scan(
                    source,
                    flow,
                    finisher,
                    stats,
                    config.measure_latency,
                    [stop, abort],
                    Shard {
                        index,
                        of,
                        pace: Some(pace),
                    },
                    counts,
                    &mut report,
                )
                .unwrap_or(0)
            };
            let handle = std::thread::Builder::new()
                .name(format!("pw-worker-{index}"))
                .spawn_scoped(scope, worker)
                .expect("spawn a worker thread");
            handles.push(handle);
        }
        drop(report_tx);
        let result = collect(collector, &report_rx, abort);
        let evicted: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        (result, evicted)
    });
    counts.evicted = evicted;
    // Every reader counted the segments and skips of the packets it decoded.
    for copy in copy_counts {
        counts.tcp_segments += copy.tcp_segments;
        for (reason, n) in copy.skipped {
            *counts.skipped.entry(reason).or_default() += n;
        }
    }
    result
}

/// The source on a scoped thread, `threads` workers, the collector on the calling thread.
fn run_threaded<S: Source + Send, O: Output>(
    source: &mut S,
    config: Config,
    finisher: &Finisher,
    stats: &Arc<Stats>,
    stop: &AtomicBool,
    collector: &mut Collector<'_, O>,
    counts: &mut SourceCounts,
) -> Result<(), O::Error> {
    let threads = config.threads;
    let (report_tx, report_rx) = bounded::<Report>(threads * QUEUE_BATCHES);
    let (free_tx, free_rx) = bounded::<Batch>(threads * (QUEUE_BATCHES + 2));
    let mut queues = Vec::with_capacity(threads);
    let mut inputs = Vec::with_capacity(threads);
    for _ in 0..threads {
        let (tx, rx) = bounded::<Batch>(QUEUE_BATCHES);
        queues.push(tx);
        inputs.push(rx);
    }
    // The collector stopping early (an output error) must stop the source too.
    let abort = AtomicBool::new(false);
    let (result, evicted) = std::thread::scope(|scope| {
        let mut evicted_total = Vec::new();
        for (w, input) in inputs.into_iter().enumerate() {
            let report_tx = report_tx.clone();
            let free_tx = free_tx.clone();
            let finisher = finisher.clone();
            let flow = FlowConfig {
                max_flows: (config.flow.max_flows / threads).max(1),
                ..config.flow
            };
            evicted_total.push(
                std::thread::Builder::new()
                    .name(format!("pw-worker-{w}"))
                    .spawn_scoped(scope, move || {
                        work(w, flow, finisher, stats, config, input, report_tx, free_tx)
                    })
                    .expect("spawn a worker thread"),
            );
        }
        drop(report_tx);
        let abort_ref = &abort;
        let counts_ref = &mut *counts;
        let source_thread = std::thread::Builder::new()
            .name("pw-source".into())
            .spawn_scoped(scope, move || {
                dispatch(
                    source, config, stats, stop, abort_ref, queues, free_rx, counts_ref,
                )
            })
            .expect("spawn the source thread");
        let result = collect(collector, &report_rx, abort_ref);
        let _ = source_thread.join();
        let evicted: u64 = evicted_total
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .sum();
        (result, evicted)
    });
    counts.evicted = evicted;
    result
}

/// The source stage: reads, decodes far enough to shard, batches, ticks.
#[allow(clippy::too_many_arguments)]
fn dispatch<S: Source>(
    source: &mut S,
    config: Config,
    stats: &Stats,
    stop: &AtomicBool,
    abort: &AtomicBool,
    queues: Vec<Sender<Batch>>,
    free: Receiver<Batch>,
    counts: &mut SourceCounts,
) {
    let n = queues.len();
    let mut batches: Vec<Batch> = (0..n).map(|_| Batch::default()).collect();
    let mut dispatched: u64 = 0;
    let mut last_ts = i64::MIN;
    let mut last_handover = Instant::now();
    let send = |w: usize, batch: &mut Batch, upto: u64, ts: i64, counts: &mut SourceCounts| {
        let fresh = free.try_recv().unwrap_or_default();
        let mut full = std::mem::replace(batch, fresh);
        full.upto = upto;
        full.ts_ns = ts;
        let packets = full.packets() as u64;
        if config.drop_when_full {
            match queues[w].try_send(full) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    counts.queue_drops += packets;
                    stats.add_queue_drops(packets);
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        } else {
            let _ = queues[w].send(full);
        }
        stats.set_queue_depth(w, queues[w].len() as u64);
    };
    // Hands every worker its batch, after a tick (capture time, packet index) when one is due.
    let send_all =
        |batches: &mut [Batch], tick: Option<(i64, u64)>, upto, ts, counts: &mut SourceCounts| {
            for (w, b) in batches.iter_mut().enumerate() {
                if let Some((now_ns, pkt)) = tick {
                    b.items.push(Item::Tick { now_ns, pkt });
                }
                send(w, b, upto, ts, counts);
            }
        };
    while !stop.load(Ordering::Relaxed) && !abort.load(Ordering::Relaxed) {
        let frame = match source.next() {
            Next::Frame(f) => f,
            Next::Idle(now) => {
                let tick = counts
                    .idle_tick(now)
                    .map(|pkt| (now.unwrap_or(last_ts), pkt));
                if let Some((now_ns, pkt)) = tick {
                    last_ts = now_ns;
                    dispatched = tick_event(pkt);
                }
                send_all(&mut batches, tick, dispatched, last_ts, counts);
                last_handover = Instant::now();
                continue;
            }
            Next::End => break,
        };
        let (at, tick) = counts.admit(&frame);
        last_ts = at.ts_ns;
        if tick {
            dispatched = tick_event(at.pkt());
            send_all(
                &mut batches,
                Some((at.ts_ns, at.pkt())),
                dispatched,
                at.ts_ns,
                counts,
            );
            last_handover = Instant::now();
        }
        match decode::decode(frame.linktype, frame.data) {
            Ok(seg) => {
                counts.tcp_segments += 1;
                let w = (seg.flow_hash() % n as u64) as usize;
                dispatched = packet_event(at.pkt());
                batches[w].push_frame(&frame, at);
                if batches[w].packets() >= BATCH_PACKETS {
                    send(w, &mut batches[w], dispatched, at.ts_ns, counts);
                }
            }
            Err(skip) => *counts.skipped.entry(skip.as_str()).or_default() += 1,
        }
        // Every worker hears from the source regularly (see HEARTBEAT_PACKETS), and a slow
        // live link must not leave packets waiting in a half-full batch.
        let heartbeat = counts.packets.is_multiple_of(HEARTBEAT_PACKETS);
        let stale = config.drop_when_full
            && counts.packets.is_multiple_of(64)
            && last_handover.elapsed() >= config.max_batch_delay;
        if heartbeat || stale {
            send_all(&mut batches, None, dispatched, last_ts, counts);
            last_handover = Instant::now();
        }
    }
    for (w, b) in batches.iter_mut().enumerate() {
        b.items.push(Item::Drain);
        // The end of input must arrive even when the queue is full.
        let mut last = std::mem::take(b);
        last.upto = END_EVENT;
        last.ts_ns = last_ts;
        let _ = queues[w].send(last);
    }
}

/// A worker thread: processes batches in order, reports after each. Returns its evictions.
#[allow(clippy::too_many_arguments)]
fn work(
    w: usize,
    flow: FlowConfig,
    finisher: Finisher,
    stats: &Arc<Stats>,
    config: Config,
    input: Receiver<Batch>,
    reports: Sender<Report>,
    free: Sender<Batch>,
) -> u64 {
    let mut worker = Worker::new(flow, finisher, stats);
    for mut batch in input.iter() {
        let mut clock = config.measure_latency.then(Instant::now);
        let mut drained = false;
        for item in &batch.items {
            match *item {
                Item::Packet {
                    at,
                    linktype,
                    start,
                    len,
                } => {
                    let data = batch.frame(start, len);
                    if let Ok(seg) = decode::decode(linktype, data) {
                        worker.packet(&seg, at);
                    }
                    worker.account(u64::from(len), &mut clock);
                }
                Item::Tick { now_ns, pkt } => worker.tick(now_ns, pkt),
                Item::Drain => {
                    worker.drain(&mut |finished, upto| {
                        let _ = reports.send(Report {
                            worker: w,
                            finished,
                            upto,
                            ts_ns: batch.ts_ns,
                        });
                    });
                    drained = true;
                }
            }
        }
        if input.is_empty() {
            worker.stats.flush();
        }
        let report = Report {
            worker: w,
            finished: worker.take_finished(),
            upto: through(batch.upto),
            ts_ns: batch.ts_ns,
        };
        if reports.send(report).is_err() {
            break;
        }
        batch.clear();
        let _ = free.try_send(batch);
        if drained {
            break;
        }
    }
    worker.stats.flush();
    worker.table.evicted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes no connections (a rules-only run): any record it is handed is a wasted one.
    #[derive(Default)]
    struct RulesOnly {
        records: usize,
    }

    impl Output for RulesOnly {
        type Error = ();
        fn wants_records(&self) -> bool {
            false
        }
        fn record(&mut self, _: &ConnectionRecord, _: &Verdict) -> Result<(), ()> {
            self.records += 1;
            Ok(())
        }
    }

    /// A run that writes only rules builds no record, yet the evidence table and the summary
    /// see every connection (the rules come from the table).
    #[test]
    fn a_rules_only_run_builds_no_record_and_still_gathers_the_evidence() {
        let capture = concat!(env!("CARGO_MANIFEST_DIR"), "/captures/both-legs.pcap").to_string();
        for threads in [1, 2] {
            let evidence = Arc::new(EvidenceTable::default());
            let mut output = RulesOnly::default();
            let summary = run(
                &mut FileSource::new(std::slice::from_ref(&capture), false),
                Config {
                    threads,
                    ..Config::default()
                },
                &evidence,
                &Arc::new(Stats::new(threads)),
                &AtomicBool::new(false),
                &mut output,
            )
            .expect("replay");
            assert_eq!(output.records, 0, "{threads} threads");
            assert!(summary.connections > 0, "{threads} threads");
            assert!(!evidence.is_empty(), "{threads} threads");
        }
    }

    /// Keeps the lines it is given, in the order it is given them.
    #[derive(Default)]
    struct Lines(Vec<String>);

    impl Output for Lines {
        type Error = ();
        fn wants_lines(&self) -> bool {
            true
        }
        fn record(&mut self, _: &ConnectionRecord, _: &Verdict) -> Result<(), ()> {
            Err(())
        }
        fn line(&mut self, json: &[u8]) -> Result<(), ()> {
            self.0.push(String::from_utf8_lossy(json).into_owned());
            Ok(())
        }
    }

    fn done(event: u64, seq: u64) -> Finished {
        Finished {
            order: (event, seq),
            outcome: Outcome::Established,
            anomalies: Vec::new(),
            observation: None,
            body: Body::Line(format!("{event}.{seq}").into_bytes()),
        }
    }

    #[test]
    fn collector_releases_in_key_order_only_once_every_worker_is_past() {
        let mut out = Lines::default();
        let mut collector = Collector::new(&mut out, 2);
        // Worker 0 is ahead: nothing is released until worker 1 has caught up.
        collector
            .take(0, vec![done(3, 1), done(9, 2)], through(9), 0)
            .unwrap();
        collector.take(1, vec![done(5, 4)], through(5), 0).unwrap();
        assert_eq!(collector.output.0, ["3.1", "5.4"]);
        // A report out of key order (no worker sends one) is still released in order.
        collector
            .take(1, vec![done(8, 7), done(7, 6)], through(20), 0)
            .unwrap();
        assert_eq!(collector.output.0, ["3.1", "5.4", "7.6", "8.7", "9.2"]);
        assert_eq!(collector.summary.connections, 5);
    }
}
