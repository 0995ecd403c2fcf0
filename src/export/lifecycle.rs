//! The rule lifecycle as export applies it: from the lines of one or several rules files
//! (rotated ones too, given in any order), the rules in force.
//!
//! Contract (schema/rule.schema.json, "Consumer contract"): per rule id the latest line wins;
//! "latest" is the highest `seq` (`pinwatch.rule/3`), and for lines without `seq` (versions 1
//! and 2) the later position (file order as given, then line order). An id whose latest line
//! is `withdrawn` is not in force. Every id is kept at most once.

use std::collections::HashMap;

use serde::Deserialize;

use super::Rule;

/// The lifecycle fields of a rule line; absent in versions 1 and 2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub seq: Option<u64>,
    pub withdrawn: bool,
}

impl Lifecycle {
    /// Reads `seq` and `status` from a line that already parsed as a rule. A `status` this
    /// version does not know is taken as in force: it can only be a new kind of announcement,
    /// while withdrawal has its own word.
    pub fn of(raw: &str) -> Lifecycle {
        #[derive(Deserialize)]
        struct Fields {
            seq: Option<u64>,
            status: Option<String>,
        }
        match serde_json::from_str::<Fields>(raw) {
            Ok(f) => Lifecycle {
                seq: f.seq,
                withdrawn: f.status.as_deref() == Some("withdrawn"),
            },
            Err(_) => Lifecycle::default(),
        }
    }
}

/// A rule line and where it stands: its lifecycle fields and its position across the inputs.
#[derive(Debug, Clone)]
pub struct Line {
    pub rule: Rule,
    pub lifecycle: Lifecycle,
    /// Index of the input file in the order given.
    pub file: usize,
}

impl Line {
    fn rank(&self) -> (bool, u64, usize, usize) {
        (
            self.lifecycle.seq.is_some(),
            self.lifecycle.seq.unwrap_or(0),
            self.file,
            self.rule.line,
        )
    }
}

/// What [`in_force`] kept and dropped.
#[derive(Debug, Default)]
pub struct InForce {
    /// The rules in force, in the order their latest line was read.
    pub rules: Vec<Rule>,
    /// Ids whose latest line withdraws them.
    pub withdrawn: usize,
    /// Older lines of an id that a later line replaced.
    pub superseded: usize,
}

/// The rules in force among `lines` (see the module contract).
pub fn in_force(lines: Vec<Line>) -> InForce {
    let total = lines.len();
    let mut latest: HashMap<String, Line> = HashMap::new();
    for line in lines {
        match latest.get(&line.rule.id) {
            Some(kept) if kept.rank() >= line.rank() => {}
            _ => {
                latest.insert(line.rule.id.clone(), line);
            }
        }
    }
    let ids = latest.len();
    let mut kept: Vec<Line> = latest.into_values().collect();
    kept.sort_by_key(|l| (l.file, l.rule.line));
    let withdrawn = kept.iter().filter(|l| l.lifecycle.withdrawn).count();
    InForce {
        rules: kept
            .into_iter()
            .filter(|l| !l.lifecycle.withdrawn)
            .map(|l| l.rule)
            .collect(),
        withdrawn,
        superseded: total - ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::parse_rule;

    fn line(id: &str, seq: Option<u64>, status: &str, file: usize, n: usize) -> Line {
        let seq = seq.map(|s| format!(r#","seq":{s}"#)).unwrap_or_default();
        let raw = format!(
            r#"{{"schema":"pinwatch.rule/3","id":"{id}","action":"bypass_inspection","match":{{"host":"a.test"}},"confidence":0.9,"reason":"r","status":"{status}"{seq}}}"#
        );
        Line {
            lifecycle: Lifecycle::of(&raw),
            rule: parse_rule(&raw, n).expect("parses"),
            file,
        }
    }

    #[test]
    fn latest_seq_wins_whatever_the_file_order_and_withdrawn_ids_go() {
        // The rotated file (older seqs) given after the current one.
        let lines = vec![
            line("pw-a", Some(5), "withdrawn", 0, 1),
            line("pw-b", Some(6), "updated", 0, 2),
            line("pw-a", Some(1), "new", 1, 1),
            line("pw-b", Some(2), "new", 1, 2),
            line("pw-c", Some(3), "new", 1, 3),
        ];
        let f = in_force(lines);
        let ids: Vec<&str> = f.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["pw-b", "pw-c"]);
        assert_eq!(f.withdrawn, 1);
        assert_eq!(f.superseded, 2);
    }

    #[test]
    fn lines_without_seq_go_by_position() {
        let lines = vec![
            line("pw-a", None, "new", 0, 1),
            line("pw-a", None, "withdrawn", 0, 2),
        ];
        assert!(in_force(lines).rules.is_empty());
    }
}
