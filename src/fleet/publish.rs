//! `--publish`: the sensor side. Observations are turned into their wire form on the thread
//! that finished the connection and put in a bounded spool; a thread of its own publishes them
//! to JetStream, as many as are waiting (up to [`BATCH_MAX`]) in one message, one observation
//! per line, and waits for each message's acknowledgement.
//!
//! Contract: an observation leaves the spool only when the server has acknowledged its message
//! (stored, or recognised as a duplicate of one it stored); a message that fails or times out
//! is sent again, the same observations under the same message id, until the server is back. While the server is unreachable
//! the spool fills; when it is full, a live sensor drops the new observation and counts it
//! (the capture must keep draining), a replay waits (nothing lost) unless it is told to stop.
//! [`Publisher::finish`] waits, up to a deadline, for the spool to empty and says how many
//! observations were published, dropped, and left unsent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};

use super::spool::{DiskSpool, Lines};
use super::wire::WireObservation;
use super::{FleetError, Server, runtime, stream_config, subject_for};
use crate::correlate::Tap;

/// Publishes awaiting their acknowledgement at once: enough to keep a link busy, few enough
/// that a reconnect resends little.
const MAX_IN_FLIGHT: usize = 512;
/// Most observations in one message, and the size past which no more are added. One message
/// per observation cost the sensor and the server more than the observation itself (a header,
/// an acknowledgement, a write each); waiting observations are batched, so a live sensor's
/// lone observation still leaves at once.
const BATCH_MAX: usize = 64;
const BATCH_BYTES: usize = 48 << 10;
/// How long a batch that is not full waits after the last send for more observations: a
/// loopback server acknowledges in well under this, and batches of one or two otherwise keep
/// the publishing thread waking for every acknowledgement.
const LINGER: Duration = Duration::from_millis(2);
/// Wait between attempts while the server is unreachable.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// How a full spool is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Drop the new observation and count it (live capture).
    Drop,
    /// Wait for room (replay), unless the stop flag is set.
    Wait,
}

/// Settings of a publishing sensor.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub sensor: String,
    /// Observations held while the server is unreachable or slow.
    pub spool: usize,
    pub when_full: WhenFull,
    /// Where observations go when the memory spool is full, and what is unacknowledged at the
    /// end waits for the next start (`--publish-spool-dir`); with it a full memory spool never
    /// makes a replay wait.
    pub disk: Option<DiskConfig>,
}

/// `--publish-spool-dir` and its size.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    pub dir: std::path::PathBuf,
    pub max_bytes: u64,
}

/// What publishing achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Acknowledged by the server (stored, or already stored under the same id).
    pub published: u64,
    /// Of those, acknowledged as duplicates of messages the stream already held.
    pub duplicates: u64,
    /// Dropped because the spool was full.
    pub dropped: u64,
    /// Still unacknowledged when [`Publisher::finish`]'s deadline passed, and not kept on disk.
    pub unsent: u64,
    /// Waiting in the disk spool at the end: sent at the next start, not lost.
    pub on_disk: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    duplicates: AtomicU64,
    dropped: AtomicU64,
    unsent: AtomicU64,
    on_disk: AtomicU64,
}

struct Item {
    id: String,
    payload: Bytes,
    /// Read from the disk spool's `.sending` file.
    from_disk: bool,
}

impl Item {
    /// An observation read back from the disk spool; `None` for a line that is not one.
    fn of_line(line: Vec<u8>) -> Option<Item> {
        #[derive(serde::Deserialize)]
        struct Id {
            id: String,
        }
        let id = serde_json::from_slice::<Id>(&line).ok()?.id;
        Some(Item {
            id,
            payload: Bytes::from(line),
            from_disk: true,
        })
    }
}

/// Observations sent as one message. The id of a message of one observation is that
/// observation's id; of several, a hash of their ids, so a resend of the same batch is stored
/// once and another batch never takes its id.
struct Batch {
    id: String,
    items: Vec<Item>,
}

impl Batch {
    fn of(items: Vec<Item>) -> Batch {
        let id = match items.as_slice() {
            [one] => one.id.clone(),
            _ => {
                use sha2::Digest as _;
                let mut h = sha2::Sha256::new();
                for item in &items {
                    h.update(item.id.as_bytes());
                    h.update(b"\n");
                }
                hex::encode(&h.finalize()[..16])
            }
        };
        Batch { id, items }
    }

    /// One observation per line.
    fn payload(&self) -> Bytes {
        let len = self.items.iter().map(|i| i.payload.len() + 1).sum();
        let mut out = Vec::with_capacity(len);
        for (n, item) in self.items.iter().enumerate() {
            if n > 0 {
                out.push(b'\n');
            }
            out.extend_from_slice(&item.payload);
        }
        Bytes::from(out)
    }

    fn len(&self) -> u64 {
        self.items.len() as u64
    }
}

/// A running publisher.
pub struct Publisher {
    tx: Option<mpsc::Sender<Item>>,
    counters: Arc<Counters>,
    /// Tells the publishing thread to give up on what is left.
    give_up: Arc<AtomicBool>,
    /// No more observations come: the thread ends when the spool is empty.
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    sensor: Arc<str>,
    when_full: WhenFull,
    stop: Arc<AtomicBool>,
    disk: Option<Arc<DiskSpool>>,
}

impl Publisher {
    /// Checks the settings, and starts the publishing thread; the connection is made there, and
    /// retried until the server answers (a sensor may start before its server). `stop` is the
    /// run's stop flag: a replay waiting for room in the spool gives up when it is set.
    pub fn start(config: Config, stop: Arc<AtomicBool>) -> Result<Publisher, FleetError> {
        Publisher::prepare(config)?.start(stop)
    }

    /// Checks the settings and reads the credentials, starting no thread (a live sensor does
    /// this before it drops its privileges, and [`Prepared::start`] after).
    pub fn prepare(config: Config) -> Result<Prepared, FleetError> {
        let disk = config
            .disk
            .as_ref()
            .map(|d| DiskSpool::open(&d.dir, &config.sensor, d.max_bytes).map(Arc::new))
            .transpose()?;
        let options = config
            .server
            .options("--publish")?
            .retry_on_initial_connect()
            .event_callback(|event| async move {
                use async_nats::Event;
                match event {
                    Event::Disconnected => eprintln!(
                        "pinwatch: warning: --publish: disconnected from the NATS server; observations are spooled"
                    ),
                    Event::Connected => eprintln!("pinwatch: --publish: connected"),
                    Event::ServerError(e) => eprintln!("pinwatch: warning: --publish: {e}"),
                    _ => {}
                }
            });
        Ok(Prepared {
            config,
            options,
            disk,
        })
    }
}

/// A publisher whose settings and credentials are read, not started yet.
pub struct Prepared {
    config: Config,
    options: async_nats::ConnectOptions,
    disk: Option<Arc<DiskSpool>>,
}

impl Prepared {
    pub fn start(self, stop: Arc<AtomicBool>) -> Result<Publisher, FleetError> {
        let Prepared {
            config,
            options,
            disk,
        } = self;
        let rt = runtime()?;
        let (tx, rx) = mpsc::channel(config.spool.max(1));
        let counters = Arc::new(Counters::default());
        let give_up = Arc::new(AtomicBool::new(false));
        let closing = Arc::new(AtomicBool::new(false));
        let server = config.server.clone();
        let subject = subject_for(&config.sensor);
        let thread = {
            let counters = Arc::clone(&counters);
            let give_up = Arc::clone(&give_up);
            let closing = Arc::clone(&closing);
            let disk = disk.clone();
            std::thread::Builder::new()
                .name("pinwatch-publish".into())
                .spawn(move || {
                    let flags = Flags {
                        give_up: &give_up,
                        closing: &closing,
                    };
                    rt.block_on(run(
                        options,
                        server,
                        subject,
                        rx,
                        &counters,
                        flags,
                        disk.as_deref(),
                    ));
                })
                .map_err(|e| FleetError::Server(format!("--publish: cannot start: {e}")))?
        };
        Ok(Publisher {
            tx: Some(tx),
            counters,
            give_up,
            closing,
            thread: Some(thread),
            sensor: Arc::from(config.sensor.as_str()),
            when_full: config.when_full,
            stop,
            disk,
        })
    }
}

impl Publisher {
    /// The evidence table's tap that feeds this publisher.
    pub fn tap(&self) -> Tap {
        let tx = self.tx.clone();
        let sensor = Arc::clone(&self.sensor);
        let counters = Arc::clone(&self.counters);
        let when_full = self.when_full;
        let stop = Arc::clone(&self.stop);
        let disk = self.disk.clone();
        Tap(Arc::new(move |o| {
            let (Some(tx), Some(wire)) = (&tx, WireObservation::of(&sensor, o)) else {
                return;
            };
            let mut item = Item {
                payload: Bytes::from(wire.to_json()),
                id: wire.id,
                from_disk: false,
            };
            loop {
                match tx.try_send(item) {
                    Ok(()) => return,
                    // Full, or the publishing thread has ended (it could not connect): the
                    // disk keeps it for the next start.
                    Err(TrySendError::Full(back) | TrySendError::Closed(back))
                        if disk.is_some() =>
                    {
                        if !disk.as_deref().is_some_and(|d| d.push(&back.payload)) {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                    Err(TrySendError::Full(back))
                        if when_full == WhenFull::Wait && !stop.load(Ordering::Relaxed) =>
                    {
                        item = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }))
    }

    /// The counts so far.
    pub fn summary(&self) -> Summary {
        let c = &self.counters;
        Summary {
            published: c.published.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            unsent: c.unsent.load(Ordering::Relaxed),
            on_disk: c.on_disk.load(Ordering::Relaxed),
        }
    }

    /// No more observations: waits until every one in the spool is acknowledged, or `wait`
    /// has passed (what is left is then `unsent`). The caller has stopped feeding the taps.
    pub fn finish(mut self, wait: Duration) -> Summary {
        drop(self.tx.take());
        self.closing.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + wait;
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            self.give_up.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
        self.summary()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.give_up.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Acked = (
    Batch,
    Result<async_nats::jetstream::publish::PublishAck, String>,
);

/// The publishing thread's stop signals.
#[derive(Clone, Copy)]
struct Flags<'a> {
    /// Give up on what is left.
    give_up: &'a AtomicBool,
    /// No more observations come: end once the spool is empty.
    closing: &'a AtomicBool,
}

/// What is taken from the spools and not acknowledged yet.
#[derive(Default)]
struct Outstanding {
    /// To send (again).
    again: std::collections::VecDeque<Batch>,
    /// Sent, awaiting the acknowledgement: the observations, by message id.
    in_flight: std::collections::HashMap<String, Vec<Bytes>>,
    /// The disk spool's `.sending` file being read, and how many of its lines are not
    /// acknowledged yet.
    disk_lines: Option<Lines>,
    from_disk: u64,
}

impl Outstanding {
    /// The next line of the disk spool, taking its file when none is being read (at most once
    /// per `RETRY_AFTER`, so that an idle sensor does not rename files all the time).
    fn next_from_disk(
        &mut self,
        disk: Option<&DiskSpool>,
        last_look: &mut Instant,
    ) -> Option<Item> {
        let disk = disk?;
        if self.disk_lines.is_none() && self.from_disk == 0 {
            if last_look.elapsed() < RETRY_AFTER {
                return None;
            }
            *last_look = Instant::now();
            self.disk_lines = disk.take();
        }
        let lines = self.disk_lines.as_mut()?;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(item) = Item::of_line(line) {
                self.from_disk += 1;
                return Some(item);
            }
        }
        self.disk_lines = None;
        if self.from_disk == 0 {
            disk.sent();
        }
        None
    }

    /// One message acknowledged.
    fn acked(&mut self, batch: &Batch, disk: Option<&DiskSpool>) {
        self.in_flight.remove(&batch.id);
        let from_disk = batch.items.iter().filter(|i| i.from_disk).count() as u64;
        if from_disk > 0 {
            self.from_disk = self.from_disk.saturating_sub(from_disk);
            if self.from_disk == 0
                && self.disk_lines.is_none()
                && let Some(d) = disk
            {
                d.sent();
            }
        }
    }

    /// The next message to send: one to send again, else what waits in the spools (memory
    /// first), up to a batch. Sets `memory_empty` and `closed` as the memory spool says.
    fn next_batch(
        &mut self,
        rx: &mut mpsc::Receiver<Item>,
        disk: Option<&DiskSpool>,
        last_look: &mut Instant,
        closing: bool,
        (memory_empty, closed): (&mut bool, &mut bool),
    ) -> Option<Batch> {
        if let Some(batch) = self.again.pop_front() {
            return Some(batch);
        }
        let mut items = Vec::new();
        let mut bytes = 0;
        while items.len() < BATCH_MAX && bytes < BATCH_BYTES {
            let item = match rx.try_recv() {
                Ok(item) => item,
                Err(e) => {
                    *memory_empty = true;
                    *closed = matches!(e, TryRecvError::Disconnected) || closing;
                    match self.next_from_disk(disk, last_look) {
                        Some(item) => item,
                        None => break,
                    }
                }
            };
            bytes += item.payload.len() + 1;
            items.push(item);
        }
        (!items.is_empty()).then(|| Batch::of(items))
    }
}

/// The publishing loop: spools to server, until the spools are empty and no more come, or
/// told to give up.
async fn run(
    options: async_nats::ConnectOptions,
    server: Server,
    subject: String,
    mut rx: mpsc::Receiver<Item>,
    counters: &Counters,
    flags: Flags<'_>,
    disk: Option<&DiskSpool>,
) {
    let mut left = Outstanding::default();
    let url = &server.url;
    let client = match options.connect(server.urls()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pinwatch: warning: --publish {url}: {e}; nothing is published");
            keep_unsent(&mut rx, left, counters, disk);
            return;
        }
    };
    let js = async_nats::jetstream::new(client.clone());
    let mut in_flight = FuturesUnordered::new();
    let mut stream_ready = false;
    let mut closed = false;
    let mut warned = false;
    let mut last_look = Instant::now() - RETRY_AFTER;
    let mut last_sent = Instant::now() - LINGER;
    loop {
        if flags.give_up.load(Ordering::Relaxed) {
            break;
        }
        if !stream_ready {
            match js.get_or_create_stream(stream_config(&server)).await {
                Ok(_) => stream_ready = true,
                Err(e) => {
                    if !warned {
                        eprintln!(
                            "pinwatch: warning: --publish: stream {}: {e}; retrying",
                            super::STREAM
                        );
                        warned = true;
                    }
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
            }
        }
        let mut memory_empty = false;
        let linger = LINGER.saturating_sub(last_sent.elapsed());
        let gather = !linger.is_zero()
            && !closed
            && left.again.is_empty()
            && rx.len() < BATCH_MAX
            && !flags.closing.load(Ordering::Relaxed);
        while !gather && in_flight.len() < MAX_IN_FLIGHT {
            let closing = flags.closing.load(Ordering::Relaxed);
            let flags_now = (&mut memory_empty, &mut closed);
            let Some(batch) = left.next_batch(&mut rx, disk, &mut last_look, closing, flags_now)
            else {
                break;
            };
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .payload(batch.payload())
                .message_id(batch.id.as_str());
            match js.send_publish(subject.clone(), publish).await {
                Ok(ack) => {
                    last_sent = Instant::now();
                    let payloads = batch.items.iter().map(|i| i.payload.clone()).collect();
                    left.in_flight.insert(batch.id.clone(), payloads);
                    in_flight.push(async move {
                        let r: Acked = (batch, ack.await.map_err(|e| e.to_string()));
                        r
                    })
                }
                Err(_) => {
                    left.again.push_front(batch);
                    break;
                }
            }
        }
        if in_flight.is_empty() && gather {
            tokio::time::sleep(linger).await;
            continue;
        }
        if in_flight.is_empty() {
            let disk_done = left.disk_lines.is_none() && left.from_disk == 0;
            if closed && memory_empty && left.again.is_empty() && disk_done {
                // What the taps spooled to disk at the end is sent before the thread ends.
                if disk.is_some_and(|d| !d.is_empty()) {
                    last_look = Instant::now() - RETRY_AFTER;
                    continue;
                }
                break;
            }
            if !left.again.is_empty() {
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
            // Nothing to do until the next observation (or the end), checking now and then
            // whether to give up and whether the disk spool holds any.
            match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                Ok(Some(item)) => left.again.push_back(Batch::of(vec![item])),
                Ok(None) => closed = true,
                Err(_) => closed = flags.closing.load(Ordering::Relaxed) && rx.is_empty(),
            }
            continue;
        }
        let acked = if gather {
            tokio::time::timeout(linger, in_flight.next())
                .await
                .ok()
                .flatten()
        } else {
            in_flight.next().await
        };
        if let Some((batch, result)) = acked {
            match result {
                Ok(ack) => {
                    counters.published.fetch_add(batch.len(), Ordering::Relaxed);
                    if ack.duplicate {
                        counters
                            .duplicates
                            .fetch_add(batch.len(), Ordering::Relaxed);
                    }
                    left.acked(&batch, disk);
                }
                Err(_) => {
                    // Timed out or refused (the server went away, the stream was deleted):
                    // send again once the stream is there.
                    left.in_flight.remove(&batch.id);
                    left.again.push_back(batch);
                    stream_ready = false;
                }
            }
        }
    }
    keep_unsent(&mut rx, left, counters, disk);
    // Let the client write out what it holds before the runtime goes.
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
}

/// Given up: what was not acknowledged goes to the disk spool when there is one (counted as
/// waiting there), else it is unsent.
fn keep_unsent(
    rx: &mut mpsc::Receiver<Item>,
    left: Outstanding,
    counters: &Counters,
    disk: Option<&DiskSpool>,
) {
    rx.close();
    let mut payloads: Vec<Bytes> = left
        .again
        .into_iter()
        .flat_map(|b| b.items)
        .map(|i| i.payload)
        .collect();
    payloads.extend(left.in_flight.into_values().flatten());
    while let Ok(item) = rx.try_recv() {
        payloads.push(item.payload);
    }
    let Some(disk) = disk else {
        counters
            .unsent
            .fetch_add(payloads.len() as u64, Ordering::Relaxed);
        return;
    };
    // The rest of the file being read goes behind these, and the file with it.
    let mut unsent = 0;
    for p in &payloads {
        unsent += u64::from(!disk.keep(p));
    }
    match left.disk_lines {
        Some(rest) => disk.put_back(rest),
        // Read to its end: what of it is unacknowledged is among the payloads kept above.
        None => disk.sent(),
    }
    counters.unsent.fetch_add(unsent, Ordering::Relaxed);
    counters.on_disk.store(disk.waiting(), Ordering::Relaxed);
}
