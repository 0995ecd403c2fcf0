//! Live-mode outputs, each usable on its own:
//! - [`file`]: NDJSON lines to standard output or a file, reopened on request (log rotation).
//! - [`webhook`]: rule suggestions POSTed to an HTTP receiver from a background thread with a
//!   bounded queue and retries.
//! - [`metrics`]: the [`crate::stats::Stats`] counters as a Prometheus endpoint.
//! - [`replace`]: whole files other programs read (rules, proxy includes) replaced atomically,
//!   mode and owner kept.
//!
//! The record types and the batch-mode `NdjsonSink` stay in [`crate::output`].

pub mod file;
pub mod metrics;
pub mod replace;
pub mod webhook;
