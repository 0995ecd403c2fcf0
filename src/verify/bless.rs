//! `--bless`: expectations written from a run. Hand-written expectations the run still meets
//! are kept as they are; ones it no longer meets are brought up to date where the thing they
//! name still exists (a count, an outcome, a confidence range) and dropped otherwise, each
//! change named in a note so the user can review it, as with goldens.

use std::collections::{BTreeMap, BTreeSet};

use super::case::{Case, ConnectionExpect, Findings, NoRule, RuleExpect};
use super::compare::{compare, selector, selects};
use super::run::{Observed, RuleSeen};

/// Half-width of a blessed confidence range: scores move a little when evidence is added to a
/// capture, and a range this wide still tells a rule dropping to the threshold from a sure one.
pub const CONFIDENCE_MARGIN: f64 = 0.05;

fn range(c: f64) -> [f64; 2] {
    let lo = ((c - CONFIDENCE_MARGIN) * 100.0).floor() / 100.0;
    let hi = ((c + CONFIDENCE_MARGIN) * 100.0).ceil() / 100.0;
    [lo.max(0.0), hi.min(1.0)]
}

/// Server names given an expectation of their own by a bless; beyond it, the counts by outcome
/// still cover every connection.
pub const MAX_BLESSED_NAMES: usize = 200;

/// Whether one expectation alone holds.
fn holds(one: Case, got: &Observed) -> bool {
    compare(&one, got).is_empty()
}

fn only<T>(set: impl FnOnce(&mut Case, T), item: T) -> Case {
    let mut c = Case::new();
    set(&mut c, item);
    c
}

/// The blessed case, and one note per hand-written expectation changed or dropped.
pub fn bless(existing: Case, got: &Observed) -> (Case, Vec<String>) {
    let mut notes = Vec::new();
    let mut case = Case {
        outcomes: Some(got.outcomes.clone()),
        findings: Some(Findings {
            interception_ca: Some(got.interception_ca.clone()),
            missing_ca_clients: Some(got.missing_ca_clients.clone()),
        }),
        connections: Vec::new(),
        rules: Vec::new(),
        no_rules: Vec::new(),
        ..existing.clone()
    };

    for mut e in existing.connections {
        if holds(only(|c, e| c.connections = vec![e], e.clone()), got) {
            case.connections.push(e);
            continue;
        }
        let picked: Vec<_> = got.connections.iter().filter(|c| selects(&e, c)).collect();
        if picked.is_empty() {
            notes.push(format!("dropped {}: selects no connection", selector(&e)));
            continue;
        }
        if e.count.is_some() {
            e.count = Some(picked.len() as u64);
        }
        let outcomes: BTreeSet<&str> = picked.iter().map(|c| c.outcome.as_str()).collect();
        if e.outcome.is_some() {
            e.outcome = match outcomes.iter().collect::<Vec<_>>()[..] {
                [one] => Some(one.to_string()),
                _ => None,
            };
        }
        notes.push(format!("updated {}", selector(&e)));
        case.connections.push(e);
    }

    // One expectation per server name: how many connections, and their outcome when they agree.
    let mut by_name: BTreeMap<&str, (u64, BTreeSet<&str>)> = BTreeMap::new();
    for c in &got.connections {
        if let Some(sni) = c.sni.as_deref() {
            let entry = by_name.entry(sni).or_default();
            entry.0 += 1;
            entry.1.insert(&c.outcome);
        }
    }
    for (sni, (count, outcomes)) in by_name.into_iter().take(MAX_BLESSED_NAMES) {
        let written = case
            .connections
            .iter()
            .any(|e| e.sni.as_deref() == Some(sni) && e.client.is_none() && e.server.is_none());
        if !written {
            case.connections.push(ConnectionExpect {
                sni: Some(sni.to_string()),
                outcome: match outcomes.into_iter().collect::<Vec<_>>()[..] {
                    [one] => Some(one.to_string()),
                    _ => None,
                },
                count: Some(count),
                ..ConnectionExpect::default()
            });
        }
    }

    for mut e in existing.rules {
        if holds(only(|c, e| c.rules = vec![e], e.clone()), got) {
            case.rules.push(e);
            continue;
        }
        let now = got
            .rules
            .iter()
            .find(|r| r.emitted && r.is(&e.name, &e.scope, &e.ja4));
        match now {
            Some(r) => {
                e.confidence = e.confidence.map(|_| range(r.confidence));
                e.client_ips = e.client_ips.as_ref().map(|_| r.client_ips.clone());
                notes.push(format!(
                    "updated rule {:?}: confidence now {:.2}",
                    e.name, r.confidence
                ));
                case.rules.push(e);
            }
            None => notes.push(format!("dropped rule {:?}: no longer emitted", e.name)),
        }
    }
    let covered =
        |case: &Case, r: &RuleSeen| case.rules.iter().any(|e| r.is(&e.name, &e.scope, &e.ja4));
    for r in got.rules.iter().filter(|r| r.emitted) {
        if !covered(&case, r) {
            case.rules.push(RuleExpect {
                name: r.name.clone(),
                scope: Some(r.scope.to_string()),
                ja4: r.ja4.clone(),
                confidence: Some(range(r.confidence)),
                // A fingerprint rule says whom it bypasses: a later run that widens it to every
                // client of the fingerprint (or narrows it) fails.
                client_ips: r.ja4.as_ref().map(|_| r.client_ips.clone()),
            });
        }
    }

    for e in existing.no_rules {
        if holds(only(|c, e| c.no_rules = vec![e], e.clone()), got) {
            case.no_rules.push(e);
        } else {
            notes.push(format!("dropped no_rule {:?}: it is emitted now", e.name));
        }
    }
    // Candidates below the threshold: a later run that emits one of them fails.
    for r in got.rules.iter().filter(|r| !r.emitted) {
        let listed = case
            .no_rules
            .iter()
            .any(|e| r.is(&e.name, &e.scope, &e.ja4));
        if !listed {
            case.no_rules.push(NoRule {
                name: r.name.clone(),
                scope: Some(r.scope.to_string()),
                ja4: r.ja4.clone(),
            });
        }
    }

    let mut allowed: BTreeSet<String> = existing
        .anomalies_allowed
        .unwrap_or_default()
        .into_iter()
        .collect();
    allowed.extend(got.anomalies.keys().cloned());
    case.anomalies_allowed = Some(allowed.into_iter().collect());
    (case, notes)
}
