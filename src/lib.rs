//! pinwatch: a passive sensor that finds apps whose certificate pinning breaks behind a
//! TLS-inspecting proxy.
//!
//! Data flows one way through one module per stage:
//! `capture` (files) -> `decode` (link/IP/TCP views) -> `flow` (connections, reassembly)
//! -> `session` + `tls` (CONNECT, records, handshake) -> `classify` (one outcome per
//! connection) -> `output` (records, sinks) -> `correlate` (proxy CAs, evidence, scored
//! candidate rules) -> `export` (rule-engine formats). `replay` wires them together;
//! `verify` judges replays against regression cases.

pub mod capture;
pub mod classify;
pub mod correlate;
pub mod decode;
pub mod elapsed;
pub mod export;
pub mod fleet;
pub mod flow;
pub mod memory;
pub mod output;
pub mod pipeline;
#[cfg(target_os = "linux")]
pub mod privs;
pub mod replay;
pub mod report;
pub mod session;
pub mod sinks;
pub mod state;
pub mod stats;
pub mod tls;
pub mod verify;
