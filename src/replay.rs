//! Offline replay: capture files -> decode -> flows -> TLS -> classify -> sinks, on one thread.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::capture::{CaptureError, CaptureReader};
use crate::classify::{Outcome, Verdict};
use crate::decode;
use crate::flow::{Connection, FlowConfig, FlowTable};
use crate::output::record::{self, ConnectionRecord};
use crate::tls::At;

/// What a replay saw, for the summary at the end.
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
    pub elapsed: Duration,
    /// Files that could not be read to the end, with the reason (one line each).
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

#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayConfig {
    pub flow: FlowConfig,
    /// Draw a progress bar on standard error when it is a terminal.
    pub progress: bool,
}

/// Replays the files in order through one flow table. `on_record` receives each finished
/// connection; an error from it stops the replay and is returned.
pub fn replay<E>(
    paths: &[String],
    config: ReplayConfig,
    on_record: &mut dyn FnMut(&ConnectionRecord, &Verdict) -> Result<(), E>,
) -> Result<Summary, E> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut table = FlowTable::new(config.flow);
    let mut failure: Option<E> = None;
    let mut pkt_index: u64 = 0;
    let bar = progress_bar(paths, config.progress);

    let mut finish = |conn: Connection, summary: &mut Summary, failure: &mut Option<E>| {
        if failure.is_some() {
            return;
        }
        let (rec, verdict) = record::build(&conn);
        summary.connections += 1;
        *summary.outcomes.entry(verdict.outcome).or_default() += 1;
        for a in &rec.anomalies {
            *summary.anomalies.entry(a.clone()).or_default() += 1;
        }
        if let Err(e) = on_record(&rec, &verdict) {
            *failure = Some(e);
        }
    };

    for path in paths {
        let mut reader = match CaptureReader::open(path) {
            Ok(r) => r,
            Err(e) => {
                summary.errors.push(e);
                continue;
            }
        };
        summary.files += 1;
        let mut bar_base = bar.as_ref().map_or(0, |b| b.position());
        loop {
            let frame = match reader.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    summary.errors.push(e);
                    break;
                }
            };
            pkt_index += 1;
            summary.packets += 1;
            summary.bytes += frame.data.len() as u64;
            let at = At {
                pkt: pkt_index,
                ts_ns: frame.ts_ns,
            };
            match decode::decode(frame.linktype, frame.data) {
                Ok(seg) => {
                    summary.tcp_segments += 1;
                    table.packet(&seg, at, &mut |c| finish(c, &mut summary, &mut failure));
                }
                Err(skip) => *summary.skipped.entry(skip.as_str()).or_default() += 1,
            }
            if let Some(e) = failure.take() {
                return Err(e);
            }
            if pkt_index.is_multiple_of(8192)
                && let Some(b) = &bar
            {
                b.set_position(bar_base + reader.bytes_read());
            }
        }
        if let Some(b) = &bar {
            bar_base += reader.bytes_read();
            b.set_position(bar_base);
        }
    }
    table.drain(&mut |c| finish(c, &mut summary, &mut failure));
    if let Some(e) = failure.take() {
        return Err(e);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    summary.evicted = table.evicted;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// A byte-based progress bar, only for a terminal and only when the input is large enough
/// for the wait to be noticed.
fn progress_bar(paths: &[String], wanted: bool) -> Option<indicatif::ProgressBar> {
    if !wanted || !std::io::stderr().is_terminal() {
        return None;
    }
    let total: u64 = paths
        .iter()
        .filter(|p| p.as_str() != "-")
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    if total < 16 << 20 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replay [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    Some(bar)
}
