//! `pinwatch aggregate`: the fleet's reading side. It reads the observation stream from its
//! start, skips (and counts) what it cannot read, drops every message id it has already taken,
//! and hands the observations on in batches, each in capture-time order (start time, then
//! message id: a key every aggregator computes the same way from the messages alone).
//!
//! Contract: the first batch holds everything the stream held when reading began (the
//! catch-up); with `follow`, later batches hold what arrived since, about once a second. The
//! caller scores them with the same code replay uses. Nothing is acknowledged: the stream keeps
//! the evidence, so a restarted aggregator reads it all again and gets the same evidence, with
//! no observation counted twice (ids are unique in what it takes).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use futures_util::StreamExt;

use super::wire::{CertCache, DecodeError, WireObservation};
use super::{FleetError, STREAM, Server, runtime, stream_config};
use crate::correlate::observation::Observation;

/// How long a batch of new observations is gathered after the catch-up.
const FOLLOW_BATCH: Duration = Duration::from_secs(1);

/// What reading skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages read (each holds one or more observations, one per line).
    pub messages: u64,
    /// Observations taken.
    pub taken: u64,
    /// Observations whose id had been taken before (resent past the server's duplicate
    /// window, or after a sensor's restart in another batch).
    pub duplicates: u64,
    /// Lines that are not observations (bad JSON, missing fields, values out of range).
    pub malformed: u64,
    /// Observations of a newer version than this pinwatch reads.
    pub newer: u64,
}

/// One batch for the scoring: observations in capture-time order.
pub struct Batch {
    pub observations: Vec<Observation>,
    /// The first batch: everything the stream held when reading began.
    pub caught_up: bool,
    pub counts: Counts,
}

/// Reads the stream; `sink` gets each batch and says whether to go on. Returns when caught up
/// (unless `follow`), when `sink` says stop, or when `stop` is set.
pub fn read(
    server: &Server,
    follow: bool,
    stop: &AtomicBool,
    sink: &mut dyn FnMut(Batch) -> bool,
) -> Result<Counts, FleetError> {
    let options = server.options("--nats")?;
    let rt = runtime()?;
    rt.block_on(async move {
        let client = options
            .connect(server.urls())
            .await
            .map_err(|e| FleetError::Server(format!("--nats {}: {e}", server.url)))?;
        let js = async_nats::jetstream::new(client);
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            FleetError::Server(format!("--nats {}: {what}: {e}", server.url))
        };
        let stream = super::with_retries(|| js.get_or_create_stream(stream_config(server)))
            .await
            .map_err(|e| failed(&format!("stream {STREAM}"), &e))?;
        let info = super::with_retries(|| stream.get_info())
            .await
            .map_err(|e| failed(&format!("stream {STREAM}"), &e))?;
        let last_at_start = info.state.last_sequence;
        let mut reader = Reader::default();
        if info.state.messages == 0 {
            let batch = reader.batch(true);
            if !sink(batch) || !follow {
                return Ok(reader.counts);
            }
        }
        let mut messages = messages_from(&stream, 1)
            .await
            .map_err(|e| failed("consumer", &e))?;
        let mut caught_up = info.state.messages == 0;
        let mut last_seq = 0;
        let mut lost = 0;
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let next = tokio::time::timeout(FOLLOW_BATCH, messages.next()).await;
            match next {
                Ok(Some(Ok(message))) => {
                    lost = 0;
                    let seq = message.info().map_or(0, |i| i.stream_sequence);
                    last_seq = last_seq.max(seq);
                    reader.take(&message.payload);
                    if !caught_up && seq >= last_at_start {
                        caught_up = true;
                        if !sink(reader.batch(true)) || !follow {
                            break;
                        }
                    }
                }
                // The consumer's node went away (a cluster lost it): a new consumer goes on
                // after the last message taken; ids already taken are dropped anyway.
                Ok(Some(Err(_)) | None) if lost < CONSUMER_LOSSES => {
                    lost += 1;
                    messages = messages_from(&stream, last_seq + 1)
                        .await
                        .map_err(|e| failed("consumer", &e))?;
                }
                Ok(Some(Err(e))) => return Err(failed("reading", &e)),
                Ok(None) => return Err(failed("reading", &"the consumer went away")),
                Err(_) => {
                    // A quiet second: hand over what came in it.
                    if caught_up && !reader.pending.is_empty() && !sink(reader.batch(false)) {
                        break;
                    }
                }
            }
            if caught_up && reader.pending.len() >= 10_000 && !sink(reader.batch(false)) {
                break;
            }
        }
        Ok(reader.counts)
    })
}

/// Consumers lost in a row (with no message between) before the aggregator gives up.
const CONSUMER_LOSSES: u32 = 3;

/// The stream's messages from sequence `start` on, through an ephemeral pull consumer.
async fn messages_from(
    stream: &async_nats::jetstream::stream::Stream,
    start: u64,
) -> Result<pull::Stream, String> {
    let consumer = super::with_retries(|| {
        stream.create_consumer(pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: consumer::AckPolicy::None,
            // An aggregator that goes away leaves no consumer behind for long.
            inactive_threshold: Duration::from_secs(300),
            ..Default::default()
        })
    })
    .await?;
    consumer.messages().await.map_err(|e| e.to_string())
}

/// Decoded observations waiting for their batch, and every id taken.
#[derive(Default)]
struct Reader {
    seen: HashSet<u128>,
    /// Converted as read (the wire form is not kept), with the aggregation order's key:
    /// capture start time, then the id.
    pending: Vec<(i64, u128, Observation)>,
    certs: CertCache,
    counts: Counts,
}

impl Reader {
    fn take(&mut self, payload: &[u8]) {
        self.counts.messages += 1;
        for line in payload.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.take_one(line);
        }
    }

    fn take_one(&mut self, line: &[u8]) {
        let wire = match WireObservation::decode(line) {
            Ok(w) => w,
            Err(DecodeError::Newer(_)) => {
                self.counts.newer += 1;
                return;
            }
            Err(_) => {
                self.counts.malformed += 1;
                return;
            }
        };
        // Ids are hex; one that is not (another writer's) still dedupes by its hash.
        let key = u128::from_str_radix(&wire.id, 16).unwrap_or_else(|_| {
            use sha2::Digest as _;
            let h = sha2::Sha256::digest(wire.id.as_bytes());
            u128::from_be_bytes(h[..16].try_into().unwrap_or_default())
        });
        if !self.seen.insert(key) {
            self.counts.duplicates += 1;
            return;
        }
        self.counts.taken += 1;
        let observation = wire.observation(&mut self.certs);
        self.pending.push((wire.ts_start_ns, key, observation));
    }

    /// What was read since the last batch, in the aggregation order: capture time, then id
    /// (for the hex ids pinwatch writes, the order of the id strings).
    fn batch(&mut self, caught_up: bool) -> Batch {
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_unstable_by_key(|&(ts, key, _)| (ts, key));
        let observations = pending.into_iter().map(|(_, _, o)| o).collect();
        Batch {
            observations,
            caught_up,
            counts: self.counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_counts_junk_newer_and_resent_and_sorts_by_time() {
        let mut r = Reader::default();
        let mk = |ts: i64, port: u16| {
            let o = Observation {
                ts_start_ns: ts,
                name: Some("x.test".into()),
                ja4: Some(std::sync::Arc::from("t13d1516h2_8daaf6152771_02713d6af862")),
                client_ip: "10.0.0.1".parse().unwrap(),
                client_port: port,
                server_ip: "192.0.2.1".parse().unwrap(),
                server_port: 443,
                outcome: crate::classify::Outcome::Established,
                signal: crate::correlate::observation::FailureSignal::None,
                abort_delay_ms: None,
                client_rtt_ms: None,
                server_rtt_ms: None,
                server_hello_delay_ms: None,
                cert: None,
                connect: false,
            };
            WireObservation::of("s", &o).unwrap().to_json()
        };
        r.take(&mk(20, 1));
        r.take(&mk(10, 2));
        r.take(&mk(20, 1));
        r.take(b"{not json");
        // A message of several observations: one per line.
        let two = [mk(30, 4), mk(25, 5)].join(&b'\n');
        r.take(&two);
        r.take(
            String::from_utf8(mk(5, 3))
                .unwrap()
                .replace("observation/1", "observation/9")
                .as_bytes(),
        );
        let b = r.batch(true);
        assert_eq!(
            b.counts,
            Counts {
                messages: 6,
                taken: 4,
                duplicates: 1,
                malformed: 1,
                newer: 1
            }
        );
        let times: Vec<i64> = b.observations.iter().map(|o| o.ts_start_ns).collect();
        assert_eq!(times, [10, 20, 25, 30]);
    }
}
