//! Streaming rule suggestions and their lifecycle: the rule stage rescoring the evidence table
//! as traffic arrives, and saying what changed in the set of rules in force.
//!
//! Contract (`pinwatch.rule/3`, schema/rule.schema.json): every line carries `seq`, increasing
//! by one per line of one emitter (continued across restarts with `--state`), and `status`:
//! - `new`: the rule reaches the threshold (first time, or again after a withdrawal);
//! - `updated`: its confidence moved by [`MATERIAL_CHANGE`] or more;
//! - `refreshed`: half its TTL has passed since it was last sent and new evidence arrived (so a
//!   rule engine that expires rules after `ttl_s` keeps an app that still fails bypassed);
//! - `withdrawn`: it is no longer in force (`withdrawn_reason` says why: below the threshold,
//!   replaced by a narrower or wider rule or reattributed, or expired: no new evidence for
//!   `ttl_s` of capture time).
//!
//! A consumer keeps the latest line per id (by `seq`) and drops the ids whose latest line is
//! `withdrawn`; what is left is the set of rules in force.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Correlator, Order, Report, Rule};

/// The schema of an emitted rule line.
pub const RULE_LINE_SCHEMA: &str = "pinwatch.rule/3";
/// A confidence change this large re-emits a rule.
pub const MATERIAL_CHANGE: f64 = 0.05;
/// Capture time between two scoring passes, at least.
pub const EVALUATE_EVERY: Duration = Duration::from_secs(5);

/// Why a rule line is emitted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    Updated,
    Refreshed,
    Withdrawn,
}

/// Why a rule stopped being in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Withdrawal {
    /// Still a candidate, but its confidence fell below the threshold.
    BelowThreshold,
    /// No longer a candidate: superseded by a narrower or wider rule for the same traffic, or
    /// its failures are now attributed elsewhere (a client missing the proxy CA, a proxy leg).
    Replaced,
    /// No new evidence for `ttl_s` of capture time.
    Expired,
    /// Another partition of the aggregators owns it now (`aggregate --partition`), and
    /// announces it: it is still in force, from there.
    Moved,
}

/// One emitted rule line: the rule as scored, plus its place in the lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleLine {
    pub seq: u64,
    pub status: Status,
    pub withdrawn_reason: Option<Withdrawal>,
    pub id: String,
    /// The rule's own fields (`pinwatch.rule/2` content), as last scored.
    pub rule: Value,
}

impl RuleLine {
    /// The line as written to every output (file, webhook).
    pub fn to_json(&self) -> Value {
        let mut v = self.rule.clone();
        if let Value::Object(m) = &mut v {
            m.insert("schema".into(), RULE_LINE_SCHEMA.into());
            m.insert("seq".into(), self.seq.into());
            m.insert(
                "status".into(),
                serde_json::to_value(self.status).unwrap_or(Value::Null),
            );
            if let Some(why) = self.withdrawn_reason {
                m.insert(
                    "withdrawn_reason".into(),
                    serde_json::to_value(why).unwrap_or(Value::Null),
                );
            }
        }
        v
    }
}

/// What the stream remembers of a rule it sent and that is in force (or expired: then it is
/// not announced again until new evidence arrives). Saved in the `--state` directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Emitted {
    pub confidence: f64,
    /// Capture time it was last sent.
    pub at_ns: i64,
    pub last_seen: String,
    /// Capture time its evidence last moved (`last_seen` changed).
    pub evidence_at_ns: i64,
    pub ttl_s: u64,
    pub in_force: bool,
    /// Loaded from a saved state: kept in force while this run has not scored it yet, until
    /// its TTL passes (the run's evidence alone may not reach it yet).
    #[serde(default)]
    pub restored: bool,
    pub rule: Value,
}

/// The lifecycle part of the rule stage: what is in force and the next `seq`. This is what
/// `--state` saves, and what an aggregator merging many sensors would hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InForce {
    pub next_seq: u64,
    pub rules: BTreeMap<String, Emitted>,
    /// Findings in force (learned proxy CAs, clients missing the proxy CA), by finding id,
    /// as last sent.
    #[serde(default)]
    pub findings: BTreeMap<String, Value>,
}

/// What one scoring pass changed: rule lines and finding lines, to emit in this order.
#[derive(Debug, Default)]
pub struct Pass {
    pub rules: Vec<RuleLine>,
    pub findings: Vec<Value>,
}

/// The rule stage of a live run.
pub struct RuleStream {
    correlator: Correlator,
    min_confidence: f64,
    state: InForce,
    next_ns: Option<i64>,
    /// Scoring cost grows with the evidence held; the pause between passes grows with it so
    /// scoring stays a small share of the time.
    interval_ns: i64,
    passes: u64,
}

impl RuleStream {
    pub fn new(correlator: Correlator, min_confidence: f64) -> Self {
        Self::resume(correlator, min_confidence, InForce::default())
    }

    /// A stream that carries on from a saved lifecycle state: rules that score as before are
    /// not announced again, and `seq` continues.
    pub fn resume(correlator: Correlator, min_confidence: f64, mut state: InForce) -> Self {
        for e in state.rules.values_mut() {
            e.restored = e.in_force;
        }
        RuleStream {
            correlator,
            min_confidence,
            state,
            next_ns: None,
            interval_ns: EVALUATE_EVERY.as_nanos() as i64,
            passes: 0,
        }
    }

    /// Withdraws (as [`Withdrawal::Moved`]) the rules in force whose registrable domain
    /// `owned` says are no longer this emitter's: an aggregator restarted with another
    /// partition hands them over instead of keeping, or expiring, what another one announces.
    pub fn release(&mut self, owned: impl Fn(&str) -> bool) -> Vec<RuleLine> {
        let moved: Vec<String> = self
            .state
            .rules
            .iter()
            .filter(|(_, e)| !owned(e.rule["registrable_domain"].as_str().unwrap_or_default()))
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in moved {
            if let Some(e) = self.state.rules.remove(&id)
                && e.in_force
            {
                out.push(self.line(Status::Withdrawn, Some(Withdrawal::Moved), &id, e.rule));
            }
        }
        out
    }

    /// Scoring passes made so far.
    pub fn passes(&self) -> u64 {
        self.passes
    }

    pub fn correlator(&self) -> &Correlator {
        &self.correlator
    }

    /// The lifecycle state, for saving.
    pub fn in_force(&self) -> &InForce {
        &self.state
    }

    /// Scores the evidence up to `upto` if a pass is due at capture time `now_ns`; returns the
    /// lines to emit.
    pub fn tick(&mut self, upto: Order, now_ns: i64) -> Pass {
        match self.next_ns {
            None => {
                self.next_ns = Some(now_ns.saturating_add(self.interval_ns));
                Pass::default()
            }
            Some(next) if now_ns >= next => {
                let started = Instant::now();
                let report = self.evaluate(upto);
                self.passes += 1;
                let changes = Pass {
                    rules: self.changes(&report, now_ns),
                    findings: self.finding_changes(&report),
                };
                let cost = started.elapsed().as_nanos() as i64;
                let base = EVALUATE_EVERY.as_nanos() as i64;
                self.interval_ns = base.max(cost.saturating_mul(20));
                self.next_ns = Some(now_ns.saturating_add(self.interval_ns));
                changes
            }
            Some(_) => Pass::default(),
        }
    }

    /// The final pass at the end of a run: the report, and the lines to emit.
    /// Nothing adds evidence any more, so it is moved into the analysis rather than copied.
    pub fn finish(&mut self, now_ns: i64) -> (Report, Pass) {
        self.correlator.table().prune();
        let report = self.correlator.conclude_final();
        self.passes += 1;
        let changes = Pass {
            rules: self.changes(&report, now_ns),
            findings: self.finding_changes(&report),
        };
        (report, changes)
    }

    fn evaluate(&self, upto: Order) -> Report {
        self.correlator.table().prune();
        self.correlator.conclude_upto(Some(upto))
    }

    fn line(&mut self, status: Status, why: Option<Withdrawal>, id: &str, rule: Value) -> RuleLine {
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        RuleLine {
            seq,
            status,
            withdrawn_reason: why,
            id: id.to_string(),
            rule,
        }
    }

    /// The lines that take the set in force from what was sent to what `report` says.
    fn changes(&mut self, report: &Report, now_ns: i64) -> Vec<RuleLine> {
        let mut out = Vec::new();
        let mut scored = std::collections::HashSet::new();
        for rule in report.rules(self.min_confidence) {
            scored.insert(rule.id.as_str());
            if let Some(line) = self.judge(rule, now_ns) {
                out.push(line);
            }
        }
        let candidates: std::collections::HashSet<&str> =
            report.candidates.iter().map(|r| r.id.as_str()).collect();
        let gone: Vec<(String, Withdrawal)> = self
            .state
            .rules
            .iter()
            .filter(|(id, e)| e.in_force && !scored.contains(id.as_str()))
            .filter_map(|(id, e)| {
                let expired = now_ns.saturating_sub(e.evidence_at_ns) >= ttl_ns(e.ttl_s);
                let why = if candidates.contains(id.as_str()) {
                    Withdrawal::BelowThreshold
                } else if e.restored {
                    // Saved by an earlier run; this run's evidence may not have reached it yet.
                    expired.then_some(Withdrawal::Expired)?
                } else {
                    Withdrawal::Replaced
                };
                Some((id.clone(), why))
            })
            .collect();
        for (id, why) in gone {
            if let Some(e) = self.state.rules.remove(&id) {
                out.push(self.line(Status::Withdrawn, Some(why), &id, e.rule));
            }
        }
        out
    }

    /// The line for one rule in force now, if anything about it is news.
    fn judge(&mut self, rule: &Rule, now_ns: i64) -> Option<RuleLine> {
        let value = serde_json::to_value(rule).ok()?;
        let prev = self.state.rules.get(&rule.id).cloned();
        let moved = prev
            .as_ref()
            .is_none_or(|e| e.last_seen != rule.evidence.last_seen);
        let evidence_at_ns = match &prev {
            Some(e) if !moved => e.evidence_at_ns,
            _ => now_ns,
        };
        if prev.as_ref().is_some_and(|e| !e.in_force && !moved) {
            return None; // expired, and still nothing new
        }
        let status = match &prev {
            None => Some(Status::New),
            Some(e) if !e.in_force => Some(Status::New),
            Some(_) if now_ns.saturating_sub(evidence_at_ns) >= ttl_ns(rule.ttl_s) => {
                // Scored, but on evidence older than its TTL: it expires.
                let e = self.state.rules.get_mut(&rule.id)?;
                e.in_force = false;
                e.restored = false;
                let rule_value = e.rule.clone();
                return Some(self.line(
                    Status::Withdrawn,
                    Some(Withdrawal::Expired),
                    &rule.id,
                    rule_value,
                ));
            }
            Some(e) if (e.confidence - rule.confidence).abs() >= MATERIAL_CHANGE => {
                Some(Status::Updated)
            }
            Some(e) if now_ns.saturating_sub(e.at_ns) >= ttl_ns(rule.ttl_s) / 2 && moved => {
                Some(Status::Refreshed)
            }
            Some(_) => None,
        };
        let at_ns = match (&prev, status) {
            (Some(e), None) => e.at_ns,
            _ => now_ns,
        };
        let sent_confidence = match (&prev, status) {
            (Some(e), None) => e.confidence,
            _ => rule.confidence,
        };
        self.state.rules.insert(
            rule.id.clone(),
            Emitted {
                confidence: sent_confidence,
                at_ns,
                last_seen: rule.evidence.last_seen.clone(),
                evidence_at_ns,
                ttl_s: rule.ttl_s,
                in_force: true,
                restored: false,
                rule: value.clone(),
            },
        );
        status.map(|s| self.line(s, None, &rule.id, value))
    }
}

/// The schema of an emitted finding line.
pub const FINDING_LINE_SCHEMA: &str = "pinwatch.finding/2";

/// The findings of a report, each with its stable id (`ca:ISSUER`, `client:IP`) and its line
/// without the lifecycle fields.
fn findings_of(report: &Report) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for ca in &report.proxy_cas {
        out.insert(
            format!("ca:{}", ca.issuer),
            serde_json::json!({"kind": "proxy_ca", "ca": ca}),
        );
    }
    for m in &report.missing_proxy_ca {
        out.insert(
            format!("client:{}", m.client_ip),
            serde_json::json!({"kind": "missing_proxy_ca", "client": m}),
        );
    }
    out
}

impl RuleStream {
    /// The finding lines that take the findings sent so far to those of `report`: `new`,
    /// `updated` (any field moved) or `withdrawn`, numbered in the same `seq` as the rules.
    pub fn finding_changes(&mut self, report: &Report) -> Vec<Value> {
        let now = findings_of(report);
        let mut out = Vec::new();
        let mut emit = |state: &mut InForce, id: &str, status: Status, body: &Value| {
            let mut v = body.clone();
            if let Value::Object(m) = &mut v {
                m.insert("schema".into(), FINDING_LINE_SCHEMA.into());
                m.insert("id".into(), id.into());
                m.insert("seq".into(), state.next_seq.into());
                m.insert(
                    "status".into(),
                    serde_json::to_value(status).unwrap_or(Value::Null),
                );
            }
            state.next_seq += 1;
            out.push(v);
        };
        for (id, body) in &now {
            match self.state.findings.get(id) {
                Some(old) if old == body => {}
                Some(_) => emit(&mut self.state, id, Status::Updated, body),
                None => emit(&mut self.state, id, Status::New, body),
            }
        }
        let gone: Vec<String> = self
            .state
            .findings
            .keys()
            .filter(|id| !now.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(body) = self.state.findings.get(&id).cloned() {
                emit(&mut self.state, &id, Status::Withdrawn, &body);
            }
        }
        self.state.findings = now;
        out
    }
}

fn ttl_ns(ttl_s: u64) -> i64 {
    (ttl_s as i64).saturating_mul(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitted(domain: &str, in_force: bool) -> Emitted {
        Emitted {
            confidence: 0.9,
            at_ns: 0,
            last_seen: String::new(),
            evidence_at_ns: 0,
            ttl_s: 3600,
            in_force,
            restored: in_force,
            rule: serde_json::json!({"registrable_domain": domain}),
        }
    }

    /// A restarted aggregator hands over the rules of domains it no longer owns: one `moved`
    /// line per rule that was in force (none for an expired one), each numbered, and only its
    /// own rules stay in its state.
    #[test]
    fn released_rules_are_withdrawn_as_moved_and_leave_the_state() {
        let mut state = InForce {
            next_seq: 7,
            ..InForce::default()
        };
        state
            .rules
            .insert("pw-a".into(), emitted("mine.test", true));
        state
            .rules
            .insert("pw-b".into(), emitted("theirs.test", true));
        state
            .rules
            .insert("pw-c".into(), emitted("theirs.test", false));
        let mut stream = RuleStream::resume(Correlator::default(), 0.5, state);
        let lines = stream.release(|d| d == "mine.test");
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (lines[0].id.as_str(), lines[0].seq, lines[0].status),
            ("pw-b", 7, Status::Withdrawn)
        );
        assert_eq!(lines[0].withdrawn_reason, Some(Withdrawal::Moved));
        let left: Vec<&String> = stream.in_force().rules.keys().collect();
        assert_eq!(left, ["pw-a"]);
        assert!(stream.release(|d| d == "mine.test").is_empty());
    }
}
