//! The aggregator's rules in force in a JetStream key-value bucket, [`BUCKET`]: key = rule id,
//! value = the rule's latest line (`pinwatch.rule/3`); a withdrawal deletes the key. A consumer
//! that only wants the current set reads (or watches) the bucket instead of following a log.
//!
//! Contract: the bucket mirrors the lines the aggregator emits, in their order; it is written
//! from a thread of its own (the reading side's runtime cannot be re-entered from its
//! callback), and [`RulesBucket::close`] waits for what is queued.

use std::sync::mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;

use super::{FleetError, Server, runtime};

/// The key-value bucket of rules in force.
pub const BUCKET: &str = "pinwatch_rules";

/// One change: `Some(line)` puts, `None` deletes.
pub type Change = (String, Option<Vec<u8>>);

/// A running bucket writer.
pub struct RulesBucket {
    tx: Option<mpsc::Sender<Vec<Change>>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl RulesBucket {
    /// Connects and opens (or creates) the bucket; an error here is the caller's to report.
    pub fn open(server: &Server) -> Result<RulesBucket, FleetError> {
        let options = server.options("--nats")?;
        let url = server.url.clone();
        let rt = runtime()?;
        let store = rt.block_on(async {
            let client = options
                .connect(url.as_str())
                .await
                .map_err(|e| FleetError::Server(format!("--nats {url}: {e}")))?;
            let js = async_nats::jetstream::new(client);
            // The bucket's stream is made here rather than by the client's bucket creation,
            // whose reply Debian's nats-server 2.9 answers in a form the client does not read;
            // this is the stream a 2.9 server makes for a bucket with a history of 1.
            let failed = |e: &dyn std::fmt::Display| {
                FleetError::Server(format!("--nats {url}: bucket {BUCKET}: {e}"))
            };
            js.get_or_create_stream(async_nats::jetstream::stream::Config {
                name: format!("KV_{BUCKET}"),
                description: Some("pinwatch rules in force, by rule id".to_string()),
                subjects: vec![format!("$KV.{BUCKET}.>")],
                max_messages_per_subject: 1,
                discard: async_nats::jetstream::stream::DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| failed(&e))?;
            let store = js.get_key_value(BUCKET).await.map_err(|e| failed(&e))?;
            Ok::<_, FleetError>(store)
        })?;
        let (tx, rx) = mpsc::channel::<Vec<Change>>();
        let thread = std::thread::Builder::new()
            .name("pinwatch-rules-kv".into())
            .spawn(move || {
                rt.block_on(async move {
                    while let Ok(changes) = rx.recv() {
                        for (id, line) in changes {
                            let done = match line {
                                Some(v) => store
                                    .put(&id, Bytes::from(v))
                                    .await
                                    .map(|_| ())
                                    .map_err(|e| e.to_string()),
                                None => store.delete(&id).await.map_err(|e| e.to_string()),
                            };
                            done.map_err(|e| format!("bucket {BUCKET}: rule {id}: {e}"))?;
                        }
                    }
                    Ok(())
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
        if let Some(tx) = &self.tx {
            // A writer that failed has said why; close() reports it.
            let _ = tx.send(changes);
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
