//! `pinwatch export`: turns candidate rules (`pinwatch.rule/2` or `/1` NDJSON, written by
//! `pinwatch replay`) into configuration for rule engines: a Squid `ssl_bump` snippet, a
//! mitmproxy `ignore_hosts` fragment, a plain domain list for cloud proxies, or the rules again.
//!
//! Every name in a rule came off the wire, so it is treated as hostile: only syntactically valid
//! DNS names (and IPv4 literals for host rules) reach the output; anything else is refused with a
//! note on standard error. Comment text (ids, reasons) is reduced to printable ASCII on one line.
//! A rule scoped to a client JA4 is never widened to a name-wide rule by an engine that cannot
//! match JA4: it is written commented out (or left out of a plain list) with a note. A rule
//! narrowed to client addresses becomes a Squid `src` ACL combined with its name (Squid scopes
//! by source, which is why pinwatch narrows that way); the other formats cannot express it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::{Map, Value};

use crate::output::counted;

pub mod lifecycle;

/// The record type and version written today; [`RULE_SCHEMAS`] are those read.
pub const RULE_SCHEMA: &str = crate::correlate::stream::RULE_LINE_SCHEMA;
/// Version 3 adds the lifecycle (`status`, `seq`, see [`lifecycle`]); version 1 has no
/// `client_ips`. Their rules read the same.
pub const RULE_SCHEMAS: [&str; 3] = ["pinwatch.rule/3", "pinwatch.rule/2", "pinwatch.rule/1"];
/// Most client addresses one rule may list (pinwatch writes at most 256).
const MAX_CLIENT_IPS: usize = 4096;

/// Exit codes shared with `pinwatch replay` (README, "Exit codes").
mod exit {
    pub const USAGE: u8 = 2;
    pub const INPUT: u8 = 3;
    pub const DAMAGED: u8 = 4;
    pub const OUTPUT: u8 = 5;
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Squid snippet for `include` in squid.conf: `acl pinwatch_bypass ssl::server_name ...` and
    /// `ssl_bump splice pinwatch_bypass`.
    Squid,
    /// mitmproxy YAML (config.yaml in the confdir): `ignore_hosts:` with one anchored regex per
    /// rule, matched against `host:port`. It is a whole mitmproxy configuration: for a
    /// mitmproxy that has its own config.yaml, use `mitmproxy-addon`.
    Mitmproxy,
    /// A mitmproxy addon script of its own (`mitmdump -s pinwatch_bypass.py`, or `scripts:` in
    /// config.yaml) that adds its patterns to the `ignore_hosts` the user's configuration sets,
    /// and takes them out again when unloaded or reloaded; the user's config stays untouched.
    MitmproxyAddon,
    /// One name per line (`.example.com` for a suffix), the form Zscaler, Netskope and Umbrella
    /// bypass lists import.
    Domains,
    /// The selected rules again as NDJSON, lines unchanged (JA4 scopes kept).
    Json,
}

/// `pinwatch export` command line.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "JA4-scoped rules: Squid, mitmproxy and plain domain lists cannot match a \
client's JA4 fingerprint, and turning such a rule into a name-wide bypass would stop inspection \
for every client of the name. So for `squid` and `mitmproxy` those rules are written commented \
out with an explanation, and for `domains` they are left out with a note on standard error. \
`json` keeps them.\n\n\
Rules narrowed to client addresses (`client_ips`: a pinned app sharing its fingerprint with \
software that works): `squid` writes them active as a `src` ACL combined with the name; \
`mitmproxy` writes them commented out and `domains` leaves them out, with a note.\n\n\
Names are checked before use: anything that is not a valid DNS name (letters, digits, hyphens, \
dots, at most 253 characters; IPv4 literals allowed for host rules) is refused with a note, and \
a suffix that is itself a public suffix is refused. A name already covered by a suffix rule is \
not repeated (Squid rejects such overlaps).\n\n\
Examples:\n  \
pinwatch replay day1.pcapng --rules rules.jsonl\n  \
pinwatch export --format squid -o /etc/squid/pinwatch-bypass.conf rules.jsonl\n  \
pinwatch export --format mitmproxy-addon -o ~/.mitmproxy/pinwatch_bypass.py rules.jsonl\n  \
mitmdump -s ~/.mitmproxy/pinwatch_bypass.py\n  \
pinwatch replay cap.pcap --rules - -q | pinwatch export --format domains -"
)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, value_name = "FMT")]
    pub format: Format,

    /// Keep rules at or above this confidence (0..1). Default 0: the file already holds what
    /// `replay --min-confidence` chose.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub min_confidence: f64,

    /// Write to PATH instead of standard output: a file of its own, replaced atomically (mode
    /// and owner kept, a symlink followed). An existing file that pinwatch did not write is
    /// left alone: include the export from your configuration instead of overwriting it.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<String>,

    /// Rules files (NDJSON, pinwatch.rule/3, /2 or /1); `-` reads standard input. Several
    /// files (a rules file and its rotated copies, in any order) are read as one stream: per
    /// rule id the latest line (highest `seq`) wins, and withdrawn rules are left out.
    #[arg(value_name = "RULES.jsonl|-", required = true, num_args = 1..)]
    pub rules: Vec<String>,
}

/// What a rule matches, after checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// Exactly this name.
    Host(String),
    /// This registrable domain and every name under it.
    Suffix(String),
}

impl Name {
    fn as_str(&self) -> &str {
        match self {
            Name::Host(n) | Name::Suffix(n) => n,
        }
    }

    /// Whether `self` (a suffix) matches everything `other` matches.
    fn covers(&self, other: &Name) -> bool {
        let Name::Suffix(s) = self else {
            return self == other;
        };
        let o = other.as_str();
        o == s
            || (o.len() > s.len()
                && o.ends_with(s.as_str())
                && o[..o.len() - s.len()].ends_with('.'))
    }

    /// dstdomain-style: `api.example.com` or `.example.com`.
    fn dotted(&self) -> String {
        match self {
            Name::Host(n) => n.clone(),
            Name::Suffix(s) => format!(".{s}"),
        }
    }
}

/// One rule as far as export needs it; the rest of the record is not interpreted.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    /// The name as written in the file (checked later, see [`check_name`]).
    pub host: Option<String>,
    pub suffix: Option<String>,
    /// Present when the rule is scoped to one client fingerprint.
    pub client_ja4: Option<String>,
    /// Present when the rule is narrowed to client addresses: checked addresses and prefixes.
    pub client_ips: Option<Vec<String>>,
    pub confidence: f64,
    pub reason: String,
    /// 1-based line in the input.
    pub line: usize,
    /// The line as read, for `json`.
    pub raw: String,
}

/// Parses one NDJSON line. `Err` says why the line is not a usable rule.
pub fn parse_rule(raw: &str, line: usize) -> Result<Rule, &'static str> {
    let v: Value = serde_json::from_str(raw).map_err(|_| "not JSON")?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    if !obj
        .get("schema")
        .and_then(Value::as_str)
        .is_some_and(|v| RULE_SCHEMAS.contains(&v))
    {
        return Err("not pinwatch.rule/3, /2 or /1");
    }
    if obj.get("action").and_then(Value::as_str) != Some("bypass_inspection") {
        return Err("action is not bypass_inspection");
    }
    let id = obj
        .get("id")
        .and_then(Value::as_str)
        .ok_or("no id")?
        .to_string();
    let confidence = obj
        .get("confidence")
        .and_then(Value::as_f64)
        .filter(|c| (0.0..=1.0).contains(c))
        .ok_or("confidence missing or outside 0..1")?;
    let reason = obj
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let m: &Map<String, Value> = obj
        .get("match")
        .and_then(Value::as_object)
        .ok_or("no match object")?;
    // A scope this version does not know could only be dropped, which would widen the rule.
    if m.keys()
        .any(|k| !matches!(k.as_str(), "host" | "suffix" | "client_ja4" | "client_ips"))
    {
        return Err("match has a scope this version does not understand");
    }
    let text = |key: &str| -> Result<Option<String>, &'static str> {
        match m.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err("match field is not a string"),
        }
    };
    let (host, suffix, client_ja4) = (text("host")?, text("suffix")?, text("client_ja4")?);
    if host.is_some() == suffix.is_some() {
        return Err("match needs exactly one of host and suffix");
    }
    let client_ips = match m.get("client_ips") {
        None => None,
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_CLIENT_IPS => Some(
            items
                .iter()
                .map(|i| i.as_str().and_then(check_address))
                .collect::<Option<Vec<String>>>()
                .ok_or("client_ips holds something that is not an IP address or prefix")?,
        ),
        Some(_) => return Err("client_ips is not a list of 1 to 4096 addresses"),
    };
    Ok(Rule {
        id,
        host,
        suffix,
        client_ja4,
        client_ips,
        confidence,
        reason,
        line,
        raw: raw.to_string(),
    })
}

/// An IP address or a CIDR prefix (`10.1.2.0/24`, `2001:db8::/48`), written back in its
/// canonical form; `None` for anything else.
pub fn check_address(text: &str) -> Option<String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: std::net::IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match len {
        None => Some(ip.to_string()),
        Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            let l: u8 = l.parse().ok()?;
            (l <= max).then(|| format!("{ip}/{l}"))
        }
        Some(_) => None,
    }
}

/// Whether `addr` is one of `prefixes` (addresses or CIDR prefixes as [`check_address`]
/// writes them; anything else matches nothing).
pub fn address_in(prefixes: &[String], addr: std::net::IpAddr) -> bool {
    prefixes.iter().any(|p| {
        let (net, len) = match p.split_once('/') {
            Some((n, l)) => (n, l.parse::<u32>().ok()),
            None => (p.as_str(), None),
        };
        match (addr, net.parse::<std::net::IpAddr>()) {
            (std::net::IpAddr::V4(a), Ok(std::net::IpAddr::V4(n))) => {
                let mask = u32::MAX
                    .checked_shl(32 - len.unwrap_or(32).min(32))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (std::net::IpAddr::V6(a), Ok(std::net::IpAddr::V6(n))) => {
                let mask = u128::MAX
                    .checked_shl(128 - len.unwrap_or(128).min(128))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    })
}

/// Checks a name from the wire: a DNS name of letters, digits and hyphens in dot-separated
/// labels of 1..=63 characters (no leading or trailing hyphen), at most 253 characters, one
/// trailing dot tolerated; or, for a host, an IPv4 literal. A suffix must have two labels or
/// more, must not be numeric, and must not itself be a public suffix. Returned lowercased.
pub fn check_name(name: &str, suffix: bool) -> Result<String, &'static str> {
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() {
        return Err("empty name");
    }
    if n.len() > 253 {
        return Err("longer than 253 characters");
    }
    if !n
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err("characters other than letters, digits, hyphens and dots");
    }
    let n = n.to_ascii_lowercase();
    let labels: Vec<&str> = n.split('.').collect();
    for l in &labels {
        if l.is_empty() {
            return Err("empty label");
        }
        if l.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err("label starts or ends with a hyphen");
        }
    }
    let numeric_tld = labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if numeric_tld {
        if suffix {
            return Err("numeric suffix");
        }
        if n.parse::<std::net::Ipv4Addr>().is_err() {
            return Err("numeric last label but not an IPv4 address");
        }
    }
    if suffix {
        if labels.len() < 2 {
            return Err("suffix of a single label");
        }
        if psl::domain(n.as_bytes()).is_none() {
            return Err("suffix is a public suffix");
        }
    }
    Ok(n)
}

/// Comment text: printable ASCII on one line, backslashes replaced (a trailing one could
/// continue a line in some parsers), at most `max` characters.
pub fn comment_text(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| match c {
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push_str("...");
    }
    out
}

/// A JA4 for display in a comment, or `(malformed)`.
fn ja4_text(j: &str) -> String {
    if !j.is_empty() && j.len() <= 64 && j.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        j.to_string()
    } else {
        "(malformed)".to_string()
    }
}

/// Python-`re` (and POSIX ERE) escaping: every character but letters, digits and `-` is
/// preceded by a backslash. Names are checked before, so in practice only dots are escaped.
pub fn regex_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 2);
    for c in name.chars() {
        if !(c.is_ascii_alphanumeric() || c == '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The mitmproxy `ignore_hosts` regex for a name (matched with `re.search` against `host:port`).
pub fn mitmproxy_regex(name: &Name) -> String {
    match name {
        Name::Host(h) => format!("^{}:", regex_escape(h)),
        Name::Suffix(s) => format!("^(.+\\.)?{}:", regex_escape(s)),
    }
}

/// What becomes of a selected rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Written as an active rule.
    Active,
    /// Scoped to this client JA4: not expressible, never widened.
    Ja4Scoped(String),
    /// Narrowed to client addresses (and maybe a JA4): Squid matches the addresses; the other
    /// formats cannot.
    AddressScoped {
        ips: Vec<String>,
        ja4: Option<String>,
    },
    /// Already matched by an earlier active rule (its id and name).
    Covered { by: String, name: String },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub rule: Rule,
    pub name: Name,
    pub disposition: Disposition,
}

/// The rules to write, in input order, and the notes for standard error.
#[derive(Debug, Default)]
pub struct Plan {
    pub entries: Vec<Entry>,
    /// Rules below `--min-confidence`.
    pub below_threshold: usize,
    pub notes: Vec<String>,
}

/// Selects rules at or above `min_confidence`, refuses bad names and works out coverage.
pub fn plan(rules: Vec<Rule>, min_confidence: f64, source: &str) -> Plan {
    let mut p = Plan::default();
    for rule in rules {
        if rule.confidence < min_confidence {
            p.below_threshold += 1;
            continue;
        }
        let (raw, is_suffix) = match (&rule.host, &rule.suffix) {
            (Some(h), _) => (h.as_str(), false),
            (None, Some(s)) => (s.as_str(), true),
            (None, None) => continue,
        };
        let checked = match check_name(raw, is_suffix) {
            Ok(n) => n,
            Err(why) => {
                let shown: String = raw.chars().take(80).collect();
                p.notes.push(format!(
                    "{source}:{}: rule {} refused: {} {:?} is not usable: {why}",
                    rule.line,
                    comment_text(&rule.id, 40),
                    if is_suffix { "suffix" } else { "host" },
                    shown
                ));
                continue;
            }
        };
        let name = if is_suffix {
            Name::Suffix(checked)
        } else {
            Name::Host(checked)
        };
        let disposition = match (&rule.client_ips, &rule.client_ja4) {
            (Some(ips), ja4) => Disposition::AddressScoped {
                ips: ips.clone(),
                ja4: ja4.clone(),
            },
            (None, Some(j)) => Disposition::Ja4Scoped(j.clone()),
            (None, None) => Disposition::Active,
        };
        p.entries.push(Entry {
            rule,
            name,
            disposition,
        });
    }
    // Coverage among active rules: a suffix covers its names; of equal names the first wins.
    // The widest coverer is named, so the one named is always itself written.
    let active: Vec<usize> = (0..p.entries.len())
        .filter(|&i| p.entries[i].disposition == Disposition::Active)
        .collect();
    let covered: Vec<(usize, usize)> = active
        .iter()
        .filter_map(|&i| {
            let me = &p.entries[i].name;
            active
                .iter()
                .copied()
                .filter(|&j| {
                    let other = &p.entries[j].name;
                    j != i && other.covers(me) && (other != me || j < i)
                })
                .min_by_key(|&j| {
                    let n = &p.entries[j].name;
                    (n.as_str().split('.').count(), matches!(n, Name::Host(_)), j)
                })
                .map(|j| (i, j))
        })
        .collect();
    for (i, j) in covered {
        p.entries[i].disposition = Disposition::Covered {
            by: comment_text(&p.entries[j].rule.id, 40),
            name: p.entries[j].name.dotted(),
        };
    }
    p
}

impl Plan {
    fn count(&self, f: impl Fn(&Disposition) -> bool) -> usize {
        self.entries.iter().filter(|e| f(&e.disposition)).count()
    }

    fn active(&self) -> usize {
        self.count(|d| *d == Disposition::Active)
    }

    fn ja4_scoped(&self) -> usize {
        self.count(|d| matches!(d, Disposition::Ja4Scoped(_)))
    }

    fn covered(&self) -> usize {
        self.count(|d| matches!(d, Disposition::Covered { .. }))
    }

    fn address_scoped(&self) -> usize {
        self.count(|d| matches!(d, Disposition::AddressScoped { .. }))
    }
}

fn rule_comment(e: &Entry) -> String {
    format!(
        "# {} confidence {}: {}\n",
        comment_text(&e.rule.id, 40),
        e.rule.confidence,
        comment_text(&e.rule.reason, 400)
    )
}

fn header(out: &mut String, p: &Plan, engine: &str) {
    let _ = writeln!(
        out,
        "# pinwatch export for {engine}: bypass TLS inspection for apps whose certificate pinning fails behind the proxy."
    );
    let _ = writeln!(
        out,
        "# {} active, {} scoped to a client JA4 (not active: {engine} cannot match JA4), {} narrowed to client addresses, {} covered by a suffix rule. Generated; edit the rules, not this file.",
        p.active(),
        p.ja4_scoped(),
        p.address_scoped(),
        p.covered()
    );
}

/// The Squid snippet.
pub fn render_squid(p: &Plan) -> String {
    let mut out = String::new();
    header(&mut out, p, "Squid");
    out.push_str(
        "# Include it after `ssl_bump peek step1` (so the TLS server name is known) and before the\n\
         # ssl_bump rule that bumps, e.g.:\n\
         #   acl step1 at_step SslBump1\n\
         #   ssl_bump peek step1\n\
         #   include /etc/squid/pinwatch-bypass.conf\n\
         #   ssl_bump bump all\n",
    );
    let mut scoped = 0;
    for e in &p.entries {
        out.push('\n');
        out.push_str(&rule_comment(e));
        let line = format!("acl pinwatch_bypass ssl::server_name {}", e.name.dotted());
        match &e.disposition {
            Disposition::Active => {
                out.push_str(&line);
                out.push('\n');
            }
            Disposition::Ja4Scoped(j) => {
                let _ = writeln!(
                    out,
                    "# NOT ACTIVE: scoped to client JA4 {}; Squid cannot match JA4, and enabling this\n\
                     # line would stop inspection for every client of the name, not just that app.\n\
                     # {line}",
                    ja4_text(j)
                );
            }
            Disposition::Covered { by, name } => {
                let _ = writeln!(
                    out,
                    "# already covered by {by} ({name}); Squid rejects a name listed under its own suffix\n# {line}"
                );
            }
            Disposition::AddressScoped { ips, ja4 } => {
                scoped += 1;
                if let Some(j) = ja4 {
                    let _ = writeln!(
                        out,
                        "# Narrowed to the client addresses that fail; Squid cannot also match the client\n\
                         # JA4 {}, so other software on these addresses is spliced too.",
                        ja4_text(j)
                    );
                }
                let _ = writeln!(
                    out,
                    "acl pinwatch_src_{scoped} src {}\n\
                     acl pinwatch_name_{scoped} ssl::server_name {}\n\
                     ssl_bump splice pinwatch_src_{scoped} pinwatch_name_{scoped}",
                    ips.join(" "),
                    e.name.dotted()
                );
            }
        }
    }
    out.push('\n');
    if p.active() > 0 {
        out.push_str("ssl_bump splice pinwatch_bypass\n");
    } else {
        out.push_str("# no active rules: nothing to splice\n");
    }
    out
}

/// The mitmproxy YAML fragment.
pub fn render_mitmproxy(p: &Plan) -> String {
    let mut out = String::new();
    header(&mut out, p, "mitmproxy");
    out.push_str(
        "# Use as config.yaml in mitmproxy's confdir (~/.mitmproxy), or merge the list into an\n\
         # existing ignore_hosts. Each regex is searched in `host:port`.\n",
    );
    if p.active() == 0 {
        out.push_str("ignore_hosts: []\n");
    } else {
        out.push_str("ignore_hosts:\n");
    }
    for e in &p.entries {
        // Checked names hold no quote, so single-quoted YAML keeps backslashes as they are.
        let item = format!("- '{}'", mitmproxy_regex(&e.name));
        out.push_str("  ");
        out.push_str(&rule_comment(e));
        match &e.disposition {
            Disposition::Active => {
                let _ = writeln!(out, "  {item}");
            }
            Disposition::Ja4Scoped(j) => {
                let _ = writeln!(
                    out,
                    "  # NOT ACTIVE: scoped to client JA4 {}; ignore_hosts cannot match JA4, and enabling\n  \
                     # this line would stop inspection for every client of the name, not just that app.\n  \
                     # {item}",
                    ja4_text(j)
                );
            }
            Disposition::Covered { by, name } => {
                let _ = writeln!(out, "  # already covered by {by} ({name})\n  # {item}");
            }
            Disposition::AddressScoped { ips, .. } => {
                let _ = writeln!(
                    out,
                    "  # NOT ACTIVE: narrowed to {}; ignore_hosts cannot match client addresses, and\n  \
                     # enabling this line would stop inspection for every client of the name.\n  \
                     # {item}",
                    counted(ips.len() as u64, "client address", "client addresses")
                );
            }
        }
    }
    out
}

/// The mitmproxy addon: the active patterns as a Python list, merged into `ignore_hosts` at
/// run time. Checked names hold only DNS characters, so each regex is a valid JSON string and
/// so a valid Python string literal; comments carry the rule ids and reasons.
pub fn render_mitmproxy_addon(p: &Plan) -> String {
    let mut out = String::new();
    header(&mut out, p, "mitmproxy");
    out.push_str(
        "# A mitmproxy addon: load it with `mitmdump -s THIS_FILE` (or list it under `scripts:`\n\
         # in config.yaml). It adds the patterns below to the ignore_hosts your own configuration\n\
         # sets (each regex is searched in `host:port`) and removes them when it is unloaded, so\n\
         # re-exporting over this file updates a running mitmproxy (it reloads changed scripts).\n\
         # Not usable together with allow_hosts (mitmproxy refuses both).\n\n\
         from mitmproxy import ctx\n\n\
         PATTERNS = [\n",
    );
    for e in &p.entries {
        let regex = serde_json::to_string(&mitmproxy_regex(&e.name)).unwrap_or_default();
        out.push_str("    ");
        out.push_str(&rule_comment(e).trim_end().replace('\n', "\n    "));
        out.push('\n');
        match &e.disposition {
            Disposition::Active => {
                let _ = writeln!(out, "    {regex},");
            }
            Disposition::Ja4Scoped(j) => {
                let _ = writeln!(
                    out,
                    "    # NOT ACTIVE: scoped to client JA4 {}; ignore_hosts cannot match JA4.\n    # {regex},",
                    ja4_text(j)
                );
            }
            Disposition::Covered { by, name } => {
                let _ = writeln!(
                    out,
                    "    # already covered by {by} ({name})\n    # {regex},"
                );
            }
            Disposition::AddressScoped { ips, .. } => {
                let _ = writeln!(
                    out,
                    "    # NOT ACTIVE: narrowed to {}; ignore_hosts cannot match client addresses.\n    # {regex},",
                    counted(ips.len() as u64, "client address", "client addresses")
                );
            }
        }
    }
    out.push_str(
        "]\n\n\n\
         class PinwatchBypass:\n\
         \x20   def _apply(self):\n\
         \x20       current = list(ctx.options.ignore_hosts)\n\
         \x20       missing = [p for p in PATTERNS if p not in current]\n\
         \x20       if missing:\n\
         \x20           ctx.options.update(ignore_hosts=current + missing)\n\n\
         \x20   def running(self):\n\
         \x20       self._apply()\n\n\
         \x20   def configure(self, updated):\n\
         \x20       if \"ignore_hosts\" in updated:\n\
         \x20           self._apply()\n\n\
         \x20   def done(self):\n\
         \x20       kept = [p for p in ctx.options.ignore_hosts if p not in PATTERNS]\n\
         \x20       ctx.options.update(ignore_hosts=kept)\n\n\n\
         addons = [PinwatchBypass()]\n",
    );
    out
}

/// The plain list; JA4-scoped rules get a note instead.
pub fn render_domains(p: &mut Plan) -> String {
    let mut out = String::new();
    for e in &p.entries {
        match &e.disposition {
            Disposition::Active => {
                out.push_str(&e.name.dotted());
                out.push('\n');
            }
            Disposition::Ja4Scoped(j) => p.notes.push(format!(
                "rule {} for {} left out: scoped to client JA4 {}, which a domain list cannot express",
                comment_text(&e.rule.id, 40),
                e.name.dotted(),
                ja4_text(j)
            )),
            Disposition::AddressScoped { ips, .. } => p.notes.push(format!(
                "rule {} for {} left out: narrowed to {}, which a domain list cannot express",
                comment_text(&e.rule.id, 40),
                e.name.dotted(),
                counted(ips.len() as u64, "client address", "client addresses")
            )),
            Disposition::Covered { .. } => {}
        }
    }
    out
}

/// The selected rules as NDJSON, lines as read.
pub fn render_json(p: &Plan) -> String {
    let mut out = String::new();
    for e in &p.entries {
        out.push_str(&e.rule.raw);
        out.push('\n');
    }
    out
}

/// Rules read from an input, and lines that were not rules.
#[derive(Debug, Default)]
pub struct Parsed {
    pub rules: Vec<Rule>,
    /// Why lines were skipped, with counts.
    pub skipped: BTreeMap<&'static str, usize>,
}

impl Parsed {
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }
}

/// Reads NDJSON rules; blank lines are ignored, bad lines counted.
pub fn read_rules(input: &mut dyn BufRead) -> std::io::Result<Parsed> {
    let mut parsed = Parsed::default();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line += 1;
        let Ok(text) = std::str::from_utf8(&buf) else {
            *parsed.skipped.entry("not UTF-8").or_default() += 1;
            continue;
        };
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        match parse_rule(text, line) {
            Ok(r) => parsed.rules.push(r),
            Err(why) => *parsed.skipped.entry(why).or_default() += 1,
        }
    }
    Ok(parsed)
}

/// Renders a plan in a format.
pub fn render(format: Format, p: &mut Plan) -> String {
    match format {
        Format::Squid => render_squid(p),
        Format::Mitmproxy => render_mitmproxy(p),
        Format::MitmproxyAddon => render_mitmproxy_addon(p),
        Format::Domains => render_domains(p),
        Format::Json => render_json(p),
    }
}

/// The first line of every Squid and mitmproxy export (see [`header`]): a file that does not
/// start with it is the user's own, never replaced.
const HEADER_START: &str = "# pinwatch export for ";

/// Why `path` must not be replaced, if it must not: an existing non-empty file that pinwatch did
/// not write (the user's squid.conf or mitmproxy config.yaml, say).
fn foreign_file(path: &str, format: Format) -> Option<String> {
    use std::io::Read as _;
    if matches!(format, Format::Domains | Format::Json) {
        return None; // no header to recognise them by
    }
    let mut head = [0u8; HEADER_START.len()];
    let mut f = std::fs::File::open(path).ok()?;
    if f.metadata().is_ok_and(|m| m.len() == 0 || !m.is_file()) {
        return None;
    }
    let n = f.read(&mut head).ok()?;
    (&head[..n] != HEADER_START.as_bytes()).then(|| {
        format!(
            "{path} exists and was not written by pinwatch export; it is left as it is. Write the \
             export to a file of its own and include it (Squid: `include FILE`; mitmproxy: \
             `--format mitmproxy-addon` and `mitmdump -s FILE`), or remove {path} first"
        )
    })
}

/// Reads one input (`-`: standard input); `Err` is the exit code, the reason already printed.
fn read_input(name: &str, source: &str) -> Result<Parsed, u8> {
    let read = if name == "-" {
        read_rules(&mut std::io::stdin().lock())
    } else {
        match std::fs::File::open(name) {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_dir()) => {
                eprintln!("pinwatch: {source}: is a directory");
                return Err(exit::INPUT);
            }
            Ok(f) => read_rules(&mut std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("pinwatch: {source}: {e}");
                return Err(exit::INPUT);
            }
        }
    };
    read.map_err(|e| {
        eprintln!("pinwatch: {source}: read failed: {e}");
        exit::DAMAGED
    })
}

/// `pinwatch export`.
pub fn run_export(args: ExportArgs) -> ExitCode {
    if !(0.0..=1.0).contains(&args.min_confidence) {
        eprintln!(
            "pinwatch: --min-confidence must be between 0 and 1, got {}",
            args.min_confidence
        );
        return ExitCode::from(exit::USAGE);
    }
    let mut lines = Vec::new();
    for (file, name) in args.rules.iter().enumerate() {
        let source = if name == "-" {
            "<stdin>".to_string()
        } else {
            name.clone()
        };
        let parsed = match read_input(name, &source) {
            Ok(p) => p,
            Err(code) => return ExitCode::from(code),
        };
        let skipped = parsed.skipped_total();
        if skipped > 0 {
            let why: Vec<String> = parsed
                .skipped
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            eprintln!(
                "pinwatch: {source}: {} skipped ({})",
                counted(skipped as u64, "line", "lines"),
                why.join(", ")
            );
        }
        if parsed.rules.is_empty() && skipped > 0 {
            // Lines, but none a rule: the wrong file was given. An empty file is different: it
            // is what a replay that found no candidates writes, and exporting it must empty the
            // proxy's include file, or bypasses that no longer hold would stay in force.
            eprintln!(
                "pinwatch: {source}: no {RULE_SCHEMA} rules in it; write them with \
                 `pinwatch replay CAPTURE --rules FILE`"
            );
            return ExitCode::from(exit::INPUT);
        }
        lines.extend(parsed.rules.into_iter().map(|rule| lifecycle::Line {
            lifecycle: lifecycle::Lifecycle::of(&rule.raw),
            rule,
            file,
        }));
    }
    let source = args.rules.join(", ");
    let current = lifecycle::in_force(lines);
    if current.withdrawn > 0 {
        eprintln!(
            "pinwatch: {source}: {} withdrawn since, left out",
            counted(current.withdrawn as u64, "rule", "rules")
        );
    }
    if current.rules.is_empty() {
        eprintln!("pinwatch: {source}: no rules in force; the output bypasses nothing");
    }
    if let Some(why) = args
        .output
        .as_deref()
        .and_then(|o| foreign_file(o, args.format))
    {
        eprintln!("pinwatch: {why}");
        return ExitCode::from(exit::OUTPUT);
    }
    let mut p = plan(current.rules, args.min_confidence, &source);
    let text = render(args.format, &mut p);
    if p.below_threshold > 0 {
        p.notes.push(format!(
            "{source}: {} below --min-confidence {} left out",
            counted(p.below_threshold as u64, "rule", "rules"),
            args.min_confidence
        ));
    }
    for n in &p.notes {
        eprintln!("pinwatch: {n}");
    }
    let written = match args.output.as_deref() {
        None | Some("-") => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(text.as_bytes())
                .and_then(|_| stdout.flush())
            {
                // `| head` has read what it wanted.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r.map_err(|e| format!("standard output: {e}")),
            }
        }
        Some(path) => crate::sinks::replace::replace_file(Path::new(path), text.as_bytes())
            .map_err(|e| format!("{path}: {e}")),
    };
    if let Err(e) = written {
        eprintln!("pinwatch: {e}");
        return ExitCode::from(exit::OUTPUT);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_line(m: &str, conf: f64) -> String {
        format!(
            r#"{{"schema":"pinwatch.rule/1","id":"pw-0000000000000001","action":"bypass_inspection","match":{m},"confidence":{conf},"reason":"r","evidence":{{}},"app":null,"registrable_domain":"x.test","ttl_s":86400,"capped_by":[]}}"#
        )
    }

    fn plan_of(lines: &[String]) -> Plan {
        let rules = lines
            .iter()
            .enumerate()
            .map(|(i, l)| parse_rule(l, i + 1).expect("parses"))
            .collect();
        plan(rules, 0.0, "t")
    }

    #[test]
    fn regex_escapes_dots_and_anchors() {
        assert_eq!(
            mitmproxy_regex(&Name::Host("api.pinnedbank.test".into())),
            r"^api\.pinnedbank\.test:"
        );
        assert_eq!(
            mitmproxy_regex(&Name::Suffix("pinnedbank.test".into())),
            r"^(.+\.)?pinnedbank\.test:"
        );
        assert_eq!(regex_escape("a-b.c"), r"a-b\.c");
        // Defensive: even unchecked metacharacters come out literal.
        assert_eq!(regex_escape("a*b(c)|d$"), r"a\*b\(c\)\|d\$");
    }

    #[test]
    fn accepts_dns_names_and_ipv4_hosts() {
        assert_eq!(
            check_name("API.PinnedBank.test", false).unwrap(),
            "api.pinnedbank.test"
        );
        assert_eq!(
            check_name("pinnedbank.test.", true).unwrap(),
            "pinnedbank.test"
        );
        assert_eq!(
            check_name("xn--bcher-kva.example", false).unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(check_name("10.1.2.3", false).unwrap(), "10.1.2.3");
        let label = "a".repeat(63);
        let longest = format!("{}.{}", [label.as_str(); 3].join("."), "b".repeat(61));
        assert_eq!(longest.len(), 253);
        assert!(check_name(&longest, false).is_ok());
        assert!(check_name(&format!("{longest}b"), false).is_err());
    }

    #[test]
    fn refuses_injection_and_malformed_names() {
        for bad in [
            "api.pinnedbank.test\nssl_bump splice all",
            "api.pinnedbank.test all",
            "x.test'\n- '.*",
            "x.test\"",
            ".*",
            "(.+)",
            "a|b.test",
            "a.test$",
            "a.test:443",
            "a\\.test",
            "a..test",
            ".a.test",
            "-a.test",
            "a-.test",
            "a_b.test",
            "",
            ".",
            "1.2.3.4.5",
            "::1",
            "b\u{fc}cher.example",
            "a.test\u{0}",
            "#comment.test",
        ] {
            assert!(check_name(bad, false).is_err(), "host {bad:?} accepted");
            assert!(check_name(bad, true).is_err(), "suffix {bad:?} accepted");
        }
        assert!(check_name(&format!("{}.test", "a".repeat(64)), false).is_err());
        let too_long = format!("{}.test", vec!["a".repeat(60); 5].join("."));
        assert!(too_long.len() > 253);
        assert!(check_name(&too_long, false).is_err());
    }

    #[test]
    fn refuses_suffixes_that_would_bypass_too_much() {
        for bad in ["com", "co.uk", "github.io", "10.0.0.1", "0.1"] {
            assert!(check_name(bad, true).is_err(), "suffix {bad:?} accepted");
        }
        assert!(check_name("example.co.uk", true).is_ok());
    }

    #[test]
    fn hostile_name_never_reaches_any_output() {
        let hostile = rule_line(
            r#"{"host":"evil.test\nssl_bump splice all\nacl x src all"}"#,
            0.9,
        );
        let mut p = plan_of(&[hostile, rule_line(r#"{"host":"ok.test"}"#, 0.9)]);
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.notes.len(), 1);
        assert!(p.notes[0].contains("refused"), "{}", p.notes[0]);
        assert!(!p.notes[0].contains('\n'));
        for f in [
            Format::Squid,
            Format::Mitmproxy,
            Format::Domains,
            Format::Json,
        ] {
            let out = render(f, &mut p);
            assert!(!out.contains("evil"), "{f:?}: {out}");
            assert!(!out.contains("splice all"), "{f:?}: {out}");
        }
    }

    #[test]
    fn comments_stay_on_one_line() {
        let c = comment_text("a\nssl_bump splice all\r\u{2028}x\\", 400);
        assert!(!c.contains(['\n', '\r', '\\', '\u{2028}']), "{c}");
        let line = rule_line(r#"{"host":"ok.test"}"#, 0.5)
            .replace(r#""reason":"r""#, r#""reason":"x\nssl_bump splice all""#)
            .replace("pw-0000000000000001", "pw-1\\nacl all");
        let p = plan_of(&[line]);
        let squid = render_squid(&p);
        assert!(
            squid
                .lines()
                .filter(|l| l.starts_with("ssl_bump") || l.starts_with("acl"))
                .all(|l| l == "ssl_bump splice pinwatch_bypass"
                    || l == "acl pinwatch_bypass ssl::server_name ok.test"),
            "{squid}"
        );
    }

    #[test]
    fn ja4_scoped_rules_are_never_widened() {
        let p = plan_of(&[rule_line(
            r#"{"host":"api.pinnedbank.test","client_ja4":"t13d1516h2_8daaf6152771_e5627efa2ab1"}"#,
            0.9,
        )]);
        let squid = render_squid(&p);
        assert!(squid.contains("NOT ACTIVE"));
        assert!(squid.contains("# acl pinwatch_bypass ssl::server_name api.pinnedbank.test"));
        assert!(
            !squid
                .lines()
                .any(|l| l.starts_with("acl") || l.starts_with("ssl_bump"))
        );
        let mitm = render_mitmproxy(&p);
        assert!(mitm.contains("ignore_hosts: []"));
        assert!(!mitm.lines().any(|l| l.trim_start().starts_with("- ")));
        let mut p = p;
        assert_eq!(render_domains(&mut p), "");
        assert!(p.notes.iter().any(|n| n.contains("JA4")));
        // Present but not a string: the line is refused, not read as unscoped.
        let bad = rule_line(r#"{"host":"a.test","client_ja4":null}"#, 0.9);
        assert!(parse_rule(&bad, 1).is_err());
        let unknown = rule_line(r#"{"host":"a.test","client_ip":"10.0.0.1"}"#, 0.9);
        assert!(parse_rule(&unknown, 1).is_err());
    }

    #[test]
    fn suffix_covers_hosts_and_duplicates() {
        let p = plan_of(&[
            rule_line(r#"{"host":"api.pinnedbank.test"}"#, 0.9),
            rule_line(r#"{"suffix":"pinnedbank.test"}"#, 0.9),
            rule_line(r#"{"host":"notpinnedbank.test"}"#, 0.9),
            rule_line(r#"{"host":"pinnedbank.test"}"#, 0.9),
            rule_line(r#"{"host":"notpinnedbank.test"}"#, 0.9),
        ]);
        let d: Vec<bool> = p
            .entries
            .iter()
            .map(|e| e.disposition == Disposition::Active)
            .collect();
        assert_eq!(d, [false, true, true, false, false]);
        let squid = render_squid(&p);
        let acls: Vec<&str> = squid.lines().filter(|l| l.starts_with("acl")).collect();
        assert_eq!(
            acls,
            [
                "acl pinwatch_bypass ssl::server_name .pinnedbank.test",
                "acl pinwatch_bypass ssl::server_name notpinnedbank.test"
            ]
        );
    }

    #[test]
    fn the_widest_suffix_is_named_and_written() {
        let p = plan_of(&[
            rule_line(r#"{"host":"a.b.pinnedbank.test"}"#, 0.9),
            rule_line(r#"{"suffix":"b.pinnedbank.test"}"#, 0.9),
            rule_line(r#"{"host":"a.b.pinnedbank.test"}"#, 0.9),
            rule_line(r#"{"suffix":"pinnedbank.test"}"#, 0.9),
        ]);
        let d: Vec<&Disposition> = p.entries.iter().map(|e| &e.disposition).collect();
        for i in [0, 1, 2] {
            assert!(
                matches!(d[i], Disposition::Covered { name, .. } if name == ".pinnedbank.test"),
                "{i}: {:?}",
                d[i]
            );
        }
        assert_eq!(d[3], &Disposition::Active);
    }

    #[test]
    fn address_scoped_rules_are_a_squid_src_acl_and_nothing_elsewhere() {
        let narrowed = rule_line(
            r#"{"host":"api.bank.test","client_ja4":"t13d1516h2_8daaf6152771_e5627efa2ab1","client_ips":["10.0.1.1","2001:db8::/64"]}"#,
            0.9,
        );
        let mut p = plan_of(&[narrowed]);
        let squid = render_squid(&p);
        assert!(
            squid.contains(
                "acl pinwatch_src_1 src 10.0.1.1 2001:db8::/64\n\
                 acl pinwatch_name_1 ssl::server_name api.bank.test\n\
                 ssl_bump splice pinwatch_src_1 pinwatch_name_1\n"
            ),
            "{squid}"
        );
        assert!(squid.contains("other software on these addresses is spliced too"));
        let mitm = render_mitmproxy(&p);
        assert!(mitm.contains("ignore_hosts: []"), "{mitm}");
        assert!(
            mitm.contains("# NOT ACTIVE: narrowed to 2 client addresses"),
            "{mitm}"
        );
        assert_eq!(render_domains(&mut p), "");
        assert!(
            p.notes[0].contains("narrowed to 2 client addresses"),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn client_ips_must_be_addresses() {
        for bad in [
            r#"["10.0.0.1 all"]"#,
            r#"["10.0.0.1\nhttp_access allow all"]"#,
            r#"["10.0.0.0/33"]"#,
            r#"["10.0.0.0/"]"#,
            r#"[]"#,
            r#""10.0.0.1""#,
            r#"[1]"#,
        ] {
            let line = rule_line(&format!(r#"{{"host":"a.test","client_ips":{bad}}}"#), 0.9);
            assert!(parse_rule(&line, 1).is_err(), "{bad}");
        }
        assert_eq!(check_address("10.1.2.0/24").as_deref(), Some("10.1.2.0/24"));
        let prefixes = ["10.1.2.0/24".to_string(), "2001:db8::7".to_string()];
        assert!(address_in(&prefixes, [10, 1, 2, 200].into()));
        assert!(!address_in(&prefixes, [10, 1, 3, 1].into()));
        assert!(address_in(&prefixes, "2001:db8::7".parse().unwrap()));
        assert!(!address_in(&prefixes, "2001:db8::8".parse().unwrap()));
        assert!(address_in(
            &["0.0.0.0/0".to_string()],
            [192, 0, 2, 1].into()
        ));
        assert_eq!(check_address("2001:DB8::1").as_deref(), Some("2001:db8::1"));
    }

    #[test]
    fn parse_rejects_non_rules() {
        assert!(parse_rule("{", 1).is_err());
        assert!(parse_rule(r#"{"schema":"pinwatch.connection/1"}"#, 1).is_err());
        assert!(parse_rule(&rule_line(r#"{"host":"a.test","suffix":"a.test"}"#, 0.9), 1).is_err());
        assert!(parse_rule(&rule_line(r#"{}"#, 0.9), 1).is_err());
        assert!(parse_rule(&rule_line(r#"{"host":"a.test"}"#, 1.5), 1).is_err());
        let mut input = std::io::Cursor::new(format!(
            "{}\n\nnot json\n{}\n",
            rule_line(r#"{"host":"a.test"}"#, 0.9),
            rule_line(r#"{"host":"b.test"}"#, 0.2)
        ));
        let parsed = read_rules(&mut input).unwrap();
        assert_eq!(parsed.rules.len(), 2);
        assert_eq!(parsed.skipped_total(), 1);
        let p = plan(parsed.rules, 0.5, "t");
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.below_threshold, 1);
    }
}
