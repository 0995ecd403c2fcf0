//! The case file, `CASE/case.toml`: what one regression case replays and what it expects.
//!
//! Contract: the file is TOML, at most [`MAX_CASE_FILE`] bytes, and names its format version in
//! `format` ([`CASE_FORMAT`]). Unknown keys are errors (a misspelt expectation must not pass
//! silently). Every field is documented in the README ("Regression cases: pinwatch verify").
//! Names and addresses in it are compared as written, never interpreted as patterns, so a
//! hostile string can only fail to match.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The format this version reads and writes.
pub const CASE_FORMAT: &str = "pinwatch.verify/1";
/// The expectations file inside a case directory.
pub const CASE_FILE: &str = "case.toml";
/// A case file is written by hand or by `--bless`; anything larger is not one.
pub const MAX_CASE_FILE: u64 = 4 << 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub format: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Capture files, relative to the case directory. Empty: every `*.pcap` and `*.pcapng` in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub captures: Vec<String>,
    #[serde(default, skip_serializing_if = "Options::is_default")]
    pub options: Options,
    /// Connections by outcome, exactly; an outcome not listed must not occur.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<BTreeMap<String, u64>>,
    #[serde(default, rename = "connection", skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionExpect>,
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleExpect>,
    #[serde(default, rename = "no_rule", skip_serializing_if = "Vec::is_empty")]
    pub no_rules: Vec<NoRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<Findings>,
    /// Anomalies (by name) the run may report; any other is a failure. Absent: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomalies_allowed: Option<Vec<String>>,
}

/// How the case is run: the same meaning as `pinwatch replay`'s flags of those names.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// PEM files, relative to the case directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_ca: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_addr: Vec<IpAddr>,
    /// Default: `pinwatch replay`'s default threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f64>,
}

/// Connections picked by every selector given (none given: all), and what they must show.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionExpect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// `IP` or `IP:PORT` (`[IPv6]:PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Every selected connection has this outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Exactly this many connections are selected. Absent: at least one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// A rule that must be emitted (at or above the threshold).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleExpect {
    /// The host, or `*.SUFFIX` for a suffix rule.
    pub name: String,
    /// `host`, `suffix` or `ja4`. Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The client JA4 fingerprint of a `ja4`-scoped rule. Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ja4: Option<String>,
    /// `[min, max]`, inclusive. Absent: any emitted confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<[f64; 2]>,
    /// Exactly the client addresses the rule is narrowed to, in any order; `[]` says it is not
    /// narrowed (it bypasses every client of its fingerprint). Absent: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ips: Option<Vec<IpAddr>>,
}

/// A rule that must not be emitted (a candidate below the threshold is fine).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NoRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ja4: Option<String>,
}

/// Findings that are not rules, compared as sets: exactly these, no more.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Findings {
    /// Issuers of the interception CAs learned from the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interception_ca: Option<Vec<String>>,
    /// Client addresses reported as missing the proxy CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_ca_clients: Option<Vec<String>>,
}

/// A case directory, loaded: its display name, where it is, what it says.
#[derive(Debug, Clone)]
pub struct LoadedCase {
    pub name: String,
    pub dir: PathBuf,
    pub case: Case,
}

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is larger than {MAX_CASE_FILE} bytes; a case file states expectations, not data"
    )]
    TooLarge { path: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Where a case's expectations live: `PATH/case.toml`, or `PATH` itself when it names a file.
pub fn case_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(CASE_FILE)
    } else {
        path.to_path_buf()
    }
}

/// Reads and checks a case. A missing file is an error here; `--bless` starts from
/// [`Case::new`] instead.
pub fn load(path: &Path) -> Result<LoadedCase, CaseError> {
    let file = case_file(path);
    let shown = file.display().to_string();
    let io = |source| CaseError::Io {
        path: shown.clone(),
        source,
    };
    let meta = std::fs::metadata(&file).map_err(io)?;
    if meta.len() > MAX_CASE_FILE {
        return Err(CaseError::TooLarge { path: shown });
    }
    let text = std::fs::read_to_string(&file).map_err(io)?;
    let case = parse(&text).map_err(|message| CaseError::Invalid {
        path: shown.clone(),
        message,
    })?;
    Ok(loaded(&file, case))
}

pub fn loaded(file: &Path, case: Case) -> LoadedCase {
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    LoadedCase { name, dir, case }
}

/// Parses case-file text; the error is one line naming what to fix.
pub fn parse(text: &str) -> Result<Case, String> {
    let case: Case = toml::from_str(text).map_err(|e| {
        // toml's message spans several lines (a source excerpt); the first and last say it.
        let full = e.to_string();
        let lines: Vec<&str> = full.lines().filter(|l| !l.trim().is_empty()).collect();
        match (lines.first(), lines.last()) {
            (Some(a), Some(b)) if a != b => format!("{} {}", a.trim(), b.trim()),
            (Some(a), _) => a.trim().to_string(),
            _ => "not a case file".to_string(),
        }
    })?;
    if case.format != CASE_FORMAT {
        return Err(format!(
            "format is {:?}; this pinwatch reads {CASE_FORMAT:?} (write `format = \"{CASE_FORMAT}\"`)",
            case.format
        ));
    }
    if let Some(m) = case.options.min_confidence
        && !(0.0..=1.0).contains(&m)
    {
        return Err(format!(
            "options.min_confidence must be between 0 and 1, got {m}"
        ));
    }
    for r in &case.rules {
        if let Some([lo, hi]) = r.confidence
            && !(0.0 <= lo && lo <= hi && hi <= 1.0)
        {
            return Err(format!(
                "rule {:?}: confidence must be [min, max] within 0..1, got [{lo}, {hi}]",
                r.name
            ));
        }
    }
    Ok(case)
}

impl Options {
    fn is_default(&self) -> bool {
        *self == Options::default()
    }
}

impl Case {
    pub fn new() -> Case {
        Case {
            format: CASE_FORMAT.to_string(),
            ..Case::default()
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a case serialises: plain strings and numbers")
    }
}
