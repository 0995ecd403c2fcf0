//! The aggregator's rules on NATS, besides its files: the rules in force in a JetStream
//! key-value bucket, [`BUCKET`] (key = rule id, value = the rule's latest line,
//! `pinwatch.rule/3`; a withdrawal deletes the key), so a consumer that only wants the current
//! set reads (or watches) the bucket instead of following a log; and every rule line emitted
//! (new, updated, refreshed, withdrawn) on the core NATS subject `pinwatch.rules.<id>`
//! ([`super::rule_subject_for`]), for a consumer that follows changes as they happen (not
//! stored: a subscriber sees what is published while it is subscribed).
//!
//! Contract: the bucket and the subject follow the lines the aggregator emits, in their order;
//! they are written from a thread of its own (the reading side's runtime cannot be re-entered
//! from its callback), and [`RulesBucket::close`] waits for what is queued. A partitioned
//! aggregator writes and deletes only keys of its own partition: a rule handed to another
//! partition ([`KvOp::Keep`]) leaves the key as it is, and [`RulesBucket::prune`] deletes only
//! keys whose rule belongs to its partition.

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{FleetError, Server, rule_subject_for, runtime};
use crate::correlate::partition::Partition;

/// The key-value bucket of rules in force.
pub const BUCKET: &str = "pinwatch_rules";

/// What a rule line does to the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOp {
    /// The rule is in force: its line is the key's value.
    Put,
    /// The rule left the set in force: the key goes.
    Delete,
    /// The rule went to another partition, whose aggregator owns the key now.
    Keep,
}

/// One emitted rule line: published on its subject, and applied to the bucket.
#[derive(Debug, Clone)]
pub struct Change {
    pub id: String,
    pub line: Vec<u8>,
    pub kv: KvOp,
}

/// Work for the writer, in order.
enum Job {
    Changes(Vec<Change>),
    /// Delete the keys of `partition` that are not in `keep`.
    Prune {
        partition: Partition,
        keep: HashSet<String>,
    },
}

/// A running bucket writer.
pub struct RulesBucket {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl RulesBucket {
    /// Connects and opens (or creates) the bucket; an error here is the caller's to report.
    pub fn open(server: &Server) -> Result<RulesBucket, FleetError> {
        let options = server.options("--nats")?;
        let url = server.url.clone();
        let rt = runtime()?;
        let writer = rt.block_on(async {
            let client = options
                .connect(server.urls())
                .await
                .map_err(|e| FleetError::Server(format!("--nats {url}: {e}")))?;
            let js = async_nats::jetstream::new(client.clone());
            // The bucket's stream is made here rather than by the client's bucket creation,
            // whose reply Debian's nats-server 2.9 answers in a form the client does not read;
            // this is the stream a 2.9 server makes for a bucket with a history of 1.
            let failed = |e: &dyn std::fmt::Display| {
                FleetError::Server(format!("--nats {url}: bucket {BUCKET}: {e}"))
            };
            let config = async_nats::jetstream::stream::Config {
                name: format!("KV_{BUCKET}"),
                description: Some("pinwatch rules in force, by rule id".to_string()),
                subjects: vec![format!("$KV.{BUCKET}.>")],
                max_messages_per_subject: 1,
                discard: async_nats::jetstream::stream::DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                storage: async_nats::jetstream::stream::StorageType::File,
                num_replicas: server.replicas.max(1),
                ..Default::default()
            };
            super::with_retries(|| js.get_or_create_stream(config.clone()))
                .await
                .map_err(|e| failed(&e))?;
            let store = super::with_retries(|| js.get_key_value(BUCKET))
                .await
                .map_err(|e| failed(&e))?;
            Ok::<_, FleetError>((client, store))
        })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("pinwatch-rules-kv".into())
            .spawn(move || {
                rt.block_on(async move {
                    let (client, store) = writer;
                    while let Ok(job) = rx.recv() {
                        match job {
                            Job::Changes(changes) => apply(&client, &store, changes).await?,
                            Job::Prune { partition, keep } => {
                                prune(&store, partition, &keep).await?;
                            }
                        }
                    }
                    // Core NATS publishes are buffered by the client: out before it goes.
                    client
                        .flush()
                        .await
                        .map_err(|e| format!("subject {}.>: {e}", super::RULES_SUBJECT_PREFIX))
                })
            })
            .map_err(|e| FleetError::Server(format!("bucket {BUCKET}: cannot start: {e}")))?;
        Ok(RulesBucket {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues changes, in order.
    pub fn apply(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.send(Job::Changes(changes));
    }

    /// Queues, after the changes before it, the deletion of every key of `partition` whose
    /// rule is not in `keep` (the rules in force): what an earlier run (of this partition, or
    /// of an aggregator that owned these domains before the partitions changed) left there.
    pub fn prune(&self, partition: Partition, keep: HashSet<String>) {
        self.send(Job::Prune { partition, keep });
    }

    fn send(&self, job: Job) {
        if let Some(tx) = &self.tx {
            // A writer that failed has said why; close() reports it.
            let _ = tx.send(job);
        }
    }

    /// Waits for every queued change; the first failure, if any.
    pub fn close(mut self) -> Result<(), String> {
        drop(self.tx.take());
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(format!("bucket {BUCKET}: the writer failed")),
            None => Ok(()),
        }
    }
}

impl Drop for RulesBucket {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Store = async_nats::jetstream::kv::Store;

/// Publishes each line on its subject and applies it to the bucket.
async fn apply(
    client: &async_nats::Client,
    store: &Store,
    changes: Vec<Change>,
) -> Result<(), String> {
    for Change { id, line, kv } in changes {
        let line = Bytes::from(line);
        client
            .publish(rule_subject_for(&id), line.clone())
            .await
            .map_err(|e| format!("subject {}: {e}", rule_subject_for(&id)))?;
        let done = match kv {
            KvOp::Put => super::with_retries(|| store.put(&id, line.clone()))
                .await
                .map(|_| ()),
            KvOp::Delete => super::with_retries(|| store.delete(&id)).await,
            KvOp::Keep => Ok(()),
        };
        done.map_err(|e| format!("bucket {BUCKET}: rule {id}: {e}"))?;
    }
    Ok(())
}

/// Deletes the keys of `partition` not in `keep`. A key's partition is its rule's
/// `registrable_domain`; a value that is not a rule line is left alone (not ours to judge).
async fn prune(store: &Store, partition: Partition, keep: &HashSet<String>) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("bucket {BUCKET}: listing the rules: {e}");
    let mut keys = super::with_retries(|| store.keys())
        .await
        .map_err(|e| failed(&e))?;
    let mut stale = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| failed(&e))?;
        if keep.contains(&key) {
            continue;
        }
        let value = super::with_retries(|| store.get(&key)).await;
        let Some(value) = value.map_err(|e| failed(&e))? else {
            continue;
        };
        let domain = serde_json::from_slice::<serde_json::Value>(&value)
            .ok()
            .and_then(|v| v["registrable_domain"].as_str().map(str::to_string));
        if domain.is_some_and(|d| partition.owns(&d)) {
            stale.push(key);
        }
    }
    for key in stale {
        super::with_retries(|| store.delete(&key))
            .await
            .map_err(|e| format!("bucket {BUCKET}: rule {key}: {e}"))?;
    }
    Ok(())
}
