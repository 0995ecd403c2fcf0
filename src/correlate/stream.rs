//! Streaming rule suggestions: the rule stage rescoring the evidence table as traffic arrives.
//!
//! A rule is emitted when it first reaches the threshold, and emitted again with the same id
//! when its confidence moves by [`MATERIAL_CHANGE`] or more, or when half its TTL has passed
//! since it was last emitted and new evidence has arrived since (a refresh, so a rule engine
//! that expires rules after `ttl_s` keeps an app that still fails bypassed). A consumer keeps
//! the latest line per id.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Correlator, Order, Report, Rule};

/// A confidence change this large re-emits a rule.
pub const MATERIAL_CHANGE: f64 = 0.05;
/// Capture time between two scoring passes, at least.
pub const EVALUATE_EVERY: Duration = Duration::from_secs(5);

/// Why a rule is emitted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emission {
    New,
    Changed,
    Refreshed,
}

#[derive(Debug)]
struct Emitted {
    confidence: f64,
    at_ns: i64,
    last_seen: String,
}

/// The rule stage of a live run.
pub struct RuleStream {
    correlator: Correlator,
    min_confidence: f64,
    emitted: HashMap<String, Emitted>,
    next_ns: Option<i64>,
    /// Scoring cost grows with the evidence held; the pause between passes grows with it so
    /// scoring stays a small share of the time.
    interval_ns: i64,
}

impl RuleStream {
    pub fn new(correlator: Correlator, min_confidence: f64) -> Self {
        RuleStream {
            correlator,
            min_confidence,
            emitted: HashMap::new(),
            next_ns: None,
            interval_ns: EVALUATE_EVERY.as_nanos() as i64,
        }
    }

    pub fn correlator(&self) -> &Correlator {
        &self.correlator
    }

    /// Scores the evidence up to `upto` if a pass is due at capture time `now_ns`; returns the
    /// rules to emit.
    pub fn tick(&mut self, upto: Order, now_ns: i64) -> Vec<(Emission, Rule)> {
        match self.next_ns {
            None => {
                self.next_ns = Some(now_ns.saturating_add(self.interval_ns));
                Vec::new()
            }
            Some(next) if now_ns >= next => {
                let started = Instant::now();
                let report = self.evaluate(upto);
                let changes = self.changes(&report, now_ns);
                let cost = started.elapsed().as_nanos() as i64;
                let base = EVALUATE_EVERY.as_nanos() as i64;
                self.interval_ns = base.max(cost.saturating_mul(20));
                self.next_ns = Some(now_ns.saturating_add(self.interval_ns));
                changes
            }
            Some(_) => Vec::new(),
        }
    }

    /// The final pass at the end of a run: the report, and the rules to emit.
    /// Nothing adds evidence any more, so it is moved into the analysis rather than copied.
    pub fn finish(&mut self, now_ns: i64) -> (Report, Vec<(Emission, Rule)>) {
        self.correlator.table().prune();
        let report = self.correlator.conclude_final();
        let changes = self.changes(&report, now_ns);
        (report, changes)
    }

    fn evaluate(&self, upto: Order) -> Report {
        self.correlator.table().prune();
        self.correlator.conclude_upto(Some(upto))
    }

    fn changes(&mut self, report: &Report, now_ns: i64) -> Vec<(Emission, Rule)> {
        let mut out = Vec::new();
        for rule in report.rules(self.min_confidence) {
            let emission = match self.emitted.get(&rule.id) {
                None => Some(Emission::New),
                Some(e) if (e.confidence - rule.confidence).abs() >= MATERIAL_CHANGE => {
                    Some(Emission::Changed)
                }
                Some(e)
                    if now_ns.saturating_sub(e.at_ns)
                        >= (rule.ttl_s as i64).saturating_mul(500_000_000)
                        && e.last_seen != rule.evidence.last_seen =>
                {
                    Some(Emission::Refreshed)
                }
                Some(_) => None,
            };
            if let Some(emission) = emission {
                self.emitted.insert(
                    rule.id.clone(),
                    Emitted {
                        confidence: rule.confidence,
                        at_ns: now_ns,
                        last_seen: rule.evidence.last_seen.clone(),
                    },
                );
                out.push((emission, rule.clone()));
            }
        }
        out
    }
}
