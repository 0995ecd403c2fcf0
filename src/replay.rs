//! Offline replay: capture files through the [`crate::pipeline`], records handed to a closure.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::classify::Verdict;
use crate::correlate::path::RecordPaths;
use crate::correlate::{Config as CorrelateConfig, Correlator, EvidenceTable, Report};
use crate::flow::FlowConfig;
use crate::output::record::ConnectionRecord;
pub use crate::pipeline::Summary;
use crate::pipeline::{self, FileSource, Output};
use crate::stats::Stats;

#[derive(Debug, Clone, Copy)]
pub struct ReplayConfig {
    pub flow: FlowConfig,
    /// Draw a progress bar on standard error when it is a terminal.
    pub progress: bool,
    /// Worker threads (1: everything on the calling thread).
    pub threads: usize,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            flow: FlowConfig::default(),
            progress: false,
            threads: 1,
        }
    }
}

struct Closure<'a, E>(
    &'a mut dyn FnMut(&ConnectionRecord, &Verdict) -> Result<(), E>,
    RecordPaths,
);

impl<E> Output for Closure<'_, E> {
    type Error = E;
    fn record_paths(&mut self) -> Option<&mut RecordPaths> {
        Some(&mut self.1)
    }
    fn record(&mut self, rec: &ConnectionRecord, verdict: &Verdict) -> Result<(), E> {
        (self.0)(rec, verdict)
    }
}

/// Replays the files in order. `on_record` receives each finished connection in run order; an
/// error from it stops the replay and is returned.
pub fn replay<E>(
    paths: &[String],
    config: ReplayConfig,
    on_record: &mut dyn FnMut(&ConnectionRecord, &Verdict) -> Result<(), E>,
) -> Result<Summary, E> {
    run(
        paths,
        config,
        &CorrelateConfig::default(),
        &Arc::new(EvidenceTable::default()),
        on_record,
    )
}

/// Replays the files in order into `evidence` (a table with a tap sees every observation).
pub fn replay_into<E>(
    paths: &[String],
    config: ReplayConfig,
    evidence: &Arc<EvidenceTable>,
    on_record: &mut dyn FnMut(&ConnectionRecord, &Verdict) -> Result<(), E>,
) -> Result<Summary, E> {
    run(
        paths,
        config,
        &CorrelateConfig::default(),
        evidence,
        on_record,
    )
}

/// A replay and what correlation concluded from it (the candidates, above and below any
/// threshold, and the findings), for callers that judge results in-process (`verify`).
pub fn replay_correlated<E>(
    paths: &[String],
    config: ReplayConfig,
    correlate: CorrelateConfig,
    on_record: &mut dyn FnMut(&ConnectionRecord, &Verdict) -> Result<(), E>,
) -> Result<(Summary, Report), E> {
    let evidence = Arc::new(EvidenceTable::default());
    let record_config = correlate.clone();
    let correlator = Correlator::with_table(correlate, Arc::clone(&evidence));
    let summary = run(paths, config, &record_config, &evidence, on_record)?;
    Ok((summary, correlator.conclude_final()))
}

/// `correlate` configures the records' `path` (the proxy CAs and addresses it knows).
fn run<E>(
    paths: &[String],
    config: ReplayConfig,
    correlate: &CorrelateConfig,
    evidence: &Arc<EvidenceTable>,
    on_record: &mut dyn FnMut(&ConnectionRecord, &Verdict) -> Result<(), E>,
) -> Result<Summary, E> {
    let mut source = FileSource::new(paths, config.progress);
    let pipeline_config = pipeline::Config {
        flow: config.flow,
        threads: config.threads,
        ..pipeline::Config::default()
    };
    let stats = Arc::new(Stats::new(config.threads));
    pipeline::run(
        &mut source,
        pipeline_config,
        evidence,
        &stats,
        &AtomicBool::new(false),
        &mut Closure(on_record, RecordPaths::new(correlate)),
    )
}
