//! `--publish`: the sensor side. Observations are turned into their wire form on the thread
//! that finished the connection and put in a bounded spool; a thread of its own publishes them
//! to JetStream and waits for each one's acknowledgement.
//!
//! Contract: an observation leaves the spool only when the server has acknowledged it (stored,
//! or recognised as a duplicate of one it stored); a publish that fails or times out is sent
//! again, with the same message id, until the server is back. While the server is unreachable
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

use super::wire::WireObservation;
use super::{FleetError, Server, runtime, stream_config, subject_for};
use crate::correlate::Tap;

/// Publishes awaiting their acknowledgement at once: enough to keep a link busy, few enough
/// that a reconnect resends little.
const MAX_IN_FLIGHT: usize = 512;
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
    /// Still unacknowledged when [`Publisher::finish`]'s deadline passed.
    pub unsent: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    duplicates: AtomicU64,
    dropped: AtomicU64,
    unsent: AtomicU64,
}

struct Item {
    id: String,
    payload: Bytes,
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
        Ok(Prepared { config, options })
    }
}

/// A publisher whose settings and credentials are read, not started yet.
pub struct Prepared {
    config: Config,
    options: async_nats::ConnectOptions,
}

impl Prepared {
    pub fn start(self, stop: Arc<AtomicBool>) -> Result<Publisher, FleetError> {
        let Prepared { config, options } = self;
        let rt = runtime()?;
        let (tx, rx) = mpsc::channel(config.spool.max(1));
        let counters = Arc::new(Counters::default());
        let give_up = Arc::new(AtomicBool::new(false));
        let closing = Arc::new(AtomicBool::new(false));
        let url = config.server.url.clone();
        let subject = subject_for(&config.sensor);
        let thread = {
            let counters = Arc::clone(&counters);
            let give_up = Arc::clone(&give_up);
            let closing = Arc::clone(&closing);
            std::thread::Builder::new()
                .name("pinwatch-publish".into())
                .spawn(move || {
                    rt.block_on(run(
                        options, url, subject, rx, &counters, &give_up, &closing,
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
        Tap(Arc::new(move |o| {
            let (Some(tx), Some(wire)) = (&tx, WireObservation::of(&sensor, o)) else {
                return;
            };
            let mut item = Item {
                payload: Bytes::from(wire.to_json()),
                id: wire.id,
            };
            loop {
                match tx.try_send(item) {
                    Ok(()) => return,
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
    Item,
    Result<async_nats::jetstream::publish::PublishAck, String>,
);

/// The publishing loop: spool to server, until the spool is closed and empty, or told to
/// give up.
async fn run(
    options: async_nats::ConnectOptions,
    url: String,
    subject: String,
    mut rx: mpsc::Receiver<Item>,
    counters: &Counters,
    give_up: &AtomicBool,
    closing: &AtomicBool,
) {
    let client = match options.connect(url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pinwatch: warning: --publish {url}: {e}; nothing is published");
            rx.close();
            let mut left = 0;
            while rx.recv().await.is_some() {
                left += 1;
            }
            counters.unsent.fetch_add(left, Ordering::Relaxed);
            return;
        }
    };
    let js = async_nats::jetstream::new(client.clone());
    // Taken from the spool, not yet acknowledged: to send (again), or in flight.
    let mut again: std::collections::VecDeque<Item> = std::collections::VecDeque::new();
    let mut in_flight = FuturesUnordered::new();
    let mut stream_ready = false;
    let mut closed = false;
    let mut warned = false;
    loop {
        if give_up.load(Ordering::Relaxed) {
            break;
        }
        if !stream_ready {
            match js.get_or_create_stream(stream_config()).await {
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
        while in_flight.len() < MAX_IN_FLIGHT {
            let item = match again.pop_front() {
                Some(item) => item,
                None => match rx.try_recv() {
                    Ok(item) => item,
                    Err(TryRecvError::Empty) => {
                        closed = closing.load(Ordering::Relaxed);
                        break;
                    }
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                },
            };
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .payload(item.payload.clone())
                .message_id(item.id.as_str());
            match js.send_publish(subject.clone(), publish).await {
                Ok(ack) => in_flight.push(async move {
                    let r: Acked = (item, ack.await.map_err(|e| e.to_string()));
                    r
                }),
                Err(_) => {
                    again.push_front(item);
                    break;
                }
            }
        }
        if in_flight.is_empty() {
            if closed && again.is_empty() {
                break;
            }
            if !again.is_empty() {
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
            // Nothing to do until the next observation (or the end), checking now and then
            // whether to give up.
            match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                Ok(Some(item)) => again.push_back(item),
                Ok(None) => closed = true,
                Err(_) => closed = closing.load(Ordering::Relaxed) && rx.is_empty(),
            }
            continue;
        }
        if let Some((item, result)) = in_flight.next().await {
            match result {
                Ok(ack) => {
                    counters.published.fetch_add(1, Ordering::Relaxed);
                    if ack.duplicate {
                        counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    // Timed out or refused (the server went away, the stream was deleted):
                    // send again once the stream is there.
                    again.push_back(item);
                    stream_ready = false;
                }
            }
        }
    }
    // Given up: whatever was not acknowledged is unsent.
    let mut left = (again.len() + in_flight.len()) as u64;
    rx.close();
    while rx.try_recv().is_ok() {
        left += 1;
    }
    counters.unsent.fetch_add(left, Ordering::Relaxed);
    // Let the client write out what it holds before the runtime goes.
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
}
