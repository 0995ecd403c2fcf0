//! `pinwatch export` against the real engines: the Squid snippet is included in a complete
//! ssl_bump squid.conf and checked with `squid -k parse`; the mitmproxy fragment is used as
//! config.yaml by a real `mitmdump`, which must start and accept a connection. Each engine check
//! is also shown to fail on a deliberately broken input, so a pass means something.
//!
//! The tests that run an engine are `#[ignore]`d (`cargo test` counts them as ignored);
//! `.ci/run` installs the engines and runs them with `--ignored`, where a missing engine is a
//! failure that names it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PINWATCH: &str = env!("CARGO_BIN_EXE_pinwatch");
const JA4: &str = "t13d1516h2_8daaf6152771_e5627efa2ab1";

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "pinwatch-export-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The path of an engine binary; panics naming it when it is not installed, because only the
/// `#[ignore]`d engine tests call this and whoever runs them asked for the engine.
fn engine(what: &str, candidates: &[&str]) -> PathBuf {
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() {
            if p.is_file() {
                return p.to_path_buf();
            }
        } else if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(c))
                .find(|f| f.is_file())
        }) {
            return found;
        }
    }
    panic!("{what} is not installed (looked for {candidates:?}); .ci/run installs it")
}

/// `pinwatch export --format squid -o DIR/pinwatch-bypass.conf RULES`; the snippet's path and
/// export's stderr.
fn squid_snippet(dir: &TempDir, rules: &Path) -> (PathBuf, String) {
    let snippet = dir.path("pinwatch-bypass.conf");
    let out = export(&[
        "--format",
        "squid",
        "-o",
        snippet.to_str().unwrap(),
        rules.to_str().unwrap(),
    ]);
    assert!(out.stdout.is_empty());
    (snippet, text(&out.stderr))
}

/// A rules file holding one rule scoped to a client JA4 (which no engine can express).
fn write_ja4_only_rules(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path("ja4.jsonl");
    let line = rule(
        "pw-0000000000000003",
        &format!(r#"{{"host":"login.bank.test","client_ja4":"{JA4}"}}"#),
        0.92,
    );
    std::fs::write(&path, line + "\n").unwrap();
    path
}

fn rule(id: &str, m: &str, conf: f64) -> String {
    format!(
        r#"{{"schema":"pinwatch.rule/1","id":"{id}","action":"bypass_inspection","match":{m},"confidence":{conf},"reason":"12 fast unknown_ca aborts from 3 hosts after proxy-minted certificates; never succeeded through the proxy","evidence":{{"connections":14,"failures":12,"failure_kinds":{{"client_alert":12}},"alerts":{{"unknown_ca":12}},"successes_same_fingerprint":0,"successes_other_fingerprints":2,"successes_outside_proxy":1,"idle_closes":0,"client_hosts":3,"client_fingerprints":1,"abort_delay_ms":{{"count":12,"p50":0.6,"p90":1.2,"max":2.0,"buckets_ms":[10,2,0,0,0,0]}},"proxy_issuers":["CN=mitmproxy, O=mitmproxy"],"first_seen":"2026-11-24T07:10:04.945645Z","last_seen":"2026-11-24T07:10:09.100000Z","origin_seen_upstream":false}},"app":null,"registrable_domain":"pinnedbank.test","ttl_s":86400,"capped_by":[]}}"#
    )
}

/// A host rule, a suffix rule, a JA4-scoped rule, two hostile names, a host under the suffix
/// (overlap), a low-confidence rule and a line that is not a rule.
fn rules_file(dir: &TempDir) -> PathBuf {
    let lines = [
        rule(
            "pw-0000000000000001",
            r#"{"host":"api.pinnedbank.test"}"#,
            0.93,
        ),
        rule(
            "pw-0000000000000002",
            r#"{"suffix":"pinnedpay.test"}"#,
            0.91,
        ),
        rule(
            "pw-0000000000000003",
            &format!(r#"{{"host":"login.bank.test","client_ja4":"{JA4}"}}"#),
            0.92,
        ),
        rule(
            "pw-0000000000000004",
            r#"{"host":"evil.test\nssl_bump splice all\nacl x"}"#,
            0.95,
        ),
        rule("pw-0000000000000005", r#"{"host":".*"}"#, 0.95),
        rule("pw-0000000000000006", r#"{"host":"m.pinnedpay.test"}"#, 0.9),
        rule(
            "pw-0000000000000007",
            r#"{"host":"weak.example.test"}"#,
            0.3,
        ),
        "this is not a rule".to_string(),
    ];
    let path = dir.path("rules.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn export(args: &[&str]) -> Output {
    let out = Command::new(PINWATCH)
        .arg("export")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pinwatch export {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn assert_no_hostile(out: &str) {
    assert!(!out.contains("evil"), "{out}");
    assert!(!out.contains("splice all"), "{out}");
    assert!(!out.contains(".*:"), "{out}");
}

#[test]
fn squid_snippet_splices_the_rules_and_comments_out_ja4_scoped_ones() {
    let dir = TempDir::new("squid-text");
    let rules = rules_file(&dir);
    let (snippet, stderr) = squid_snippet(&dir, &rules);
    assert!(stderr.contains("1 line skipped"), "{stderr}");
    assert_eq!(stderr.matches("refused").count(), 2, "{stderr}");
    let conf = std::fs::read_to_string(&snippet).unwrap();
    assert_no_hostile(&conf);
    let active: Vec<&str> = conf
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(
        active,
        [
            "acl pinwatch_bypass ssl::server_name api.pinnedbank.test",
            "acl pinwatch_bypass ssl::server_name .pinnedpay.test",
            "acl pinwatch_bypass ssl::server_name weak.example.test",
            "ssl_bump splice pinwatch_bypass",
        ],
        "{conf}"
    );
    // The JA4-scoped rule is there, commented out and explained, never active.
    assert!(conf.contains("# acl pinwatch_bypass ssl::server_name login.bank.test"));
    assert!(conf.contains(&format!("NOT ACTIVE: scoped to client JA4 {JA4}")));
    assert!(conf.contains("# acl pinwatch_bypass ssl::server_name m.pinnedpay.test"));
    assert!(conf.contains("# pw-0000000000000001 confidence 0.93: 12 fast unknown_ca"));

    // --min-confidence drops the weak rule.
    let strict = text(
        &export(&[
            "--format",
            "squid",
            "--min-confidence",
            "0.5",
            rules.to_str().unwrap(),
        ])
        .stdout,
    );
    assert!(!strict.contains("weak.example.test"));
}

#[test]
#[ignore = "needs squid (squid-openssl) and openssl; .ci/run runs it"]
fn squid_snippet_parses_in_a_real_ssl_bump_config() {
    let squid = engine(
        "squid (Debian squid-openssl)",
        &["/usr/sbin/squid", "squid"],
    );
    let openssl = engine("openssl", &["openssl"]);
    let dir = TempDir::new("squid");
    let rules = rules_file(&dir);
    let (snippet, _) = squid_snippet(&dir, &rules);
    // A self-made CA for ssl-bump: key and certificate in one PEM.
    let ca = dir.path("ca.pem");
    let made = Command::new(&openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "2", "-subj", "/CN=pinwatch export test CA"])
        .arg("-keyout")
        .arg(&ca)
        .arg("-out")
        .arg(&ca)
        .output()
        .unwrap();
    assert!(made.status.success(), "openssl: {}", text(&made.stderr));

    let parse = |snippet: &Path| -> (bool, String) {
        let conf = dir.path("squid.conf");
        let certgen = Path::new("/usr/lib/squid/security_file_certgen");
        let crtd = if certgen.is_file() {
            format!(
                "sslcrtd_program {} -s {} -M 4MB\n",
                certgen.display(),
                dir.path("ssl_db").display()
            )
        } else {
            String::new()
        };
        std::fs::write(
            &conf,
            format!(
                "http_port 127.0.0.1:{port} ssl-bump tls-cert={ca} generate-host-certificates=on dynamic_cert_mem_cache_size=4MB\n\
                 {crtd}\
                 acl step1 at_step SslBump1\n\
                 ssl_bump peek step1\n\
                 include {snippet}\n\
                 ssl_bump bump all\n\
                 http_access allow localhost\n\
                 http_access deny all\n\
                 pid_filename none\n\
                 cache_log {log}\n\
                 access_log none\n",
                port = free_port(),
                ca = ca.display(),
                snippet = snippet.display(),
                log = dir.path("cache.log").display(),
            ),
        )
        .unwrap();
        let out = Command::new(&squid)
            .args(["-k", "parse", "-f"])
            .arg(&conf)
            .output()
            .unwrap();
        (out.status.success(), text(&out.stdout) + &text(&out.stderr))
    };

    let (ok, log) = parse(&snippet);
    assert!(ok, "squid -k parse rejected our snippet:\n{log}");
    assert!(
        log.contains("Processing: acl pinwatch_bypass ssl::server_name .pinnedpay.test"),
        "snippet not included?\n{log}"
    );
    assert!(
        log.contains("Processing: ssl_bump splice pinwatch_bypass"),
        "{log}"
    );
    assert!(!log.contains("ERROR"), "squid complained:\n{log}");

    // Only JA4-scoped rules: nothing active, and the snippet must still parse.
    let empty = dir.path("empty.conf");
    let only_ja4 = write_ja4_only_rules(&dir);
    export(&[
        "--format",
        "squid",
        "-o",
        empty.to_str().unwrap(),
        only_ja4.to_str().unwrap(),
    ]);
    let (ok, log) = parse(&empty);
    assert!(ok, "squid -k parse rejected the empty snippet:\n{log}");

    // A rule narrowed to client addresses: a src ACL combined with the name, active.
    let narrowed = dir.path("narrowed.jsonl");
    std::fs::write(
        &narrowed,
        rule(
            "pw-0000000000000008",
            &format!(
                r#"{{"host":"api.pinnedbank.test","client_ja4":"{JA4}","client_ips":["10.77.1.11","10.77.2.0/24","2001:db8::/64"]}}"#
            ),
            0.9,
        ) + "\n",
    )
    .unwrap();
    let (scoped, _) = squid_snippet(&dir, &narrowed);
    let (ok, log) = parse(&scoped);
    assert!(
        ok,
        "squid -k parse rejected the address-scoped snippet:\n{log}"
    );
    assert!(
        log.contains("Processing: ssl_bump splice pinwatch_src_1 pinwatch_name_1"),
        "{log}"
    );

    // The check can fail: a host listed under its own suffix (what export avoids), an
    // undefined acl, and a misspelt acl type are all rejected.
    for broken in [
        "acl pinwatch_bypass ssl::server_name api.pinnedbank.test\nacl pinwatch_bypass ssl::server_name .pinnedbank.test\nssl_bump splice pinwatch_bypass\n",
        "ssl_bump splice pinwatch_bypass\n",
        "acl pinwatch_bypass ssl::server_nam api.pinnedbank.test\nssl_bump splice pinwatch_bypass\n",
    ] {
        let bad = dir.path("broken.conf");
        std::fs::write(&bad, broken).unwrap();
        let (ok, log) = parse(&bad);
        assert!(
            !ok,
            "squid -k parse accepted a broken snippet:\n{broken}\n{log}"
        );
    }
}

/// Runs mitmdump with `confdir`; Ok when it accepts a TCP connection, Err(output) when it exits.
fn mitmdump_serves(mitmdump: &Path, confdir: &Path) -> Result<(), String> {
    let port = free_port();
    let log = confdir.join("mitmdump.log");
    let mut child = Command::new(mitmdump)
        .args([
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
        ])
        .arg("--set")
        .arg(format!("confdir={}", confdir.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(confdir.join("mitmdump.err")).unwrap())
        .spawn()
        .unwrap();
    let read_logs = || {
        std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(confdir.join("mitmdump.err")).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!("mitmdump exited ({status}):\n{}", read_logs()));
        }
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_ok()
        {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(format!(
                "mitmdump did not listen within 60 s:\n{}",
                read_logs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// `pinwatch export --format mitmproxy RULES`: the YAML and its active `ignore_hosts` items.
fn mitmproxy_fragment(rules: &Path) -> (String, Vec<String>) {
    let out = export(&["--format", "mitmproxy", rules.to_str().unwrap()]);
    let yaml = text(&out.stdout);
    let items = yaml
        .lines()
        .filter(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim().to_string())
        .collect();
    (yaml, items)
}

#[test]
fn mitmproxy_fragment_ignores_the_rules_and_comments_out_ja4_scoped_ones() {
    let dir = TempDir::new("mitmproxy-text");
    let (yaml, items) = mitmproxy_fragment(&rules_file(&dir));
    assert_no_hostile(&yaml);
    assert_eq!(
        items,
        [
            r"- '^api\.pinnedbank\.test:'",
            r"- '^(.+\.)?pinnedpay\.test:'",
            r"- '^weak\.example\.test:'",
        ],
        "{yaml}"
    );
    assert!(yaml.contains("\nignore_hosts:\n"));
    assert!(yaml.contains(r"  # - '^login\.bank\.test:'"), "{yaml}");
    assert!(yaml.contains(&format!("NOT ACTIVE: scoped to client JA4 {JA4}")));
}

#[test]
#[ignore = "needs mitmdump (PyPI mitmproxy) and python3; .ci/run runs it"]
fn mitmproxy_config_loads_in_a_real_mitmdump() {
    let mitmdump = engine("mitmdump (PyPI mitmproxy)", &["mitmdump"]);
    let python = engine("python3", &["python3"]);
    let dir = TempDir::new("mitmproxy");
    let (yaml, items) = mitmproxy_fragment(&rules_file(&dir));
    // The regexes mean what they should under Python's `re` (the engine mitmproxy uses, with
    // re.IGNORECASE and re.search against "host:port").
    {
        let regexes: Vec<String> = items
            .iter()
            .map(|i| {
                i.trim_start_matches("- '")
                    .trim_end_matches('\'')
                    .to_string()
            })
            .collect();
        let cases = [
            ("api.pinnedbank.test:443", true),
            ("API.PinnedBank.test:443", true),
            ("pinnedpay.test:443", true),
            ("m.pinnedpay.test:8443", true),
            ("a.b.pinnedpay.test:443", true),
            ("weak.example.test:443", true),
            ("xapi.pinnedbank.test:443", false),
            ("api.pinnedbank.test.evil.test:443", false),
            ("apixpinnedbank.test:443", false),
            ("notpinnedpay.test:443", false),
            ("pinnedpay.test.evil.test:443", false),
            ("login.bank.test:443", false),
            ("example.test:443", false),
        ];
        let script = "import re, sys\n\
            rx = sys.argv[1].split('\\n')\n\
            for case in sys.argv[2:]:\n    \
                host, want = case.rsplit(' ', 1)\n    \
                got = any(re.search(r, host, re.IGNORECASE) for r in rx)\n    \
                print(host, 'matched' if got else 'not matched', 'OK' if got == (want == '1') else 'WRONG')\n";
        let out = Command::new(python)
            .args(["-c", script, &regexes.join("\n")])
            .args(cases.iter().map(|(h, m)| format!("{h} {}", u8::from(*m))))
            .output()
            .unwrap();
        let report = text(&out.stdout);
        assert!(out.status.success(), "python: {}", text(&out.stderr));
        assert_eq!(report.lines().count(), cases.len(), "{report}");
        assert!(!report.contains("WRONG"), "{report}");
    }

    let confdir = TempDir::new("mitmproxy-conf");
    std::fs::write(confdir.path("config.yaml"), &yaml).unwrap();
    if let Err(e) = mitmdump_serves(&mitmdump, &confdir.0) {
        panic!("mitmdump did not start with our config.yaml:\n{yaml}\n{e}");
    }

    // Nothing active (only a JA4-scoped rule): `ignore_hosts: []` must load too.
    let only_ja4 = write_ja4_only_rules(&dir);
    let empty = text(&export(&["--format", "mitmproxy", only_ja4.to_str().unwrap()]).stdout);
    assert!(empty.contains("ignore_hosts: []"), "{empty}");
    let confdir = TempDir::new("mitmproxy-empty");
    std::fs::write(confdir.path("config.yaml"), &empty).unwrap();
    if let Err(e) = mitmdump_serves(&mitmdump, &confdir.0) {
        panic!("mitmdump did not start with an empty ignore_hosts:\n{empty}\n{e}");
    }

    // The check can fail: the same file with one invalid regex makes mitmdump refuse to start.
    let confdir = TempDir::new("mitmproxy-broken");
    let broken = yaml.replacen(
        r"- '^api\.pinnedbank\.test:'",
        r"- '^(api\.pinnedbank\.test:'",
        1,
    );
    assert_ne!(broken, yaml);
    std::fs::write(confdir.path("config.yaml"), &broken).unwrap();
    match mitmdump_serves(&mitmdump, &confdir.0) {
        Ok(()) => panic!("mitmdump started with an invalid ignore_hosts regex"),
        Err(e) => assert!(e.contains("exited"), "{e}"),
    }
}

#[test]
fn domains_list_and_json_passthrough() {
    let dir = TempDir::new("domains");
    let rules = rules_file(&dir);
    let out = export(&["--format", "domains", rules.to_str().unwrap()]);
    assert_eq!(
        text(&out.stdout),
        "api.pinnedbank.test\n.pinnedpay.test\nweak.example.test\n"
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("1 line skipped"), "{stderr}");
    assert!(
        stderr.contains("pw-0000000000000003 for login.bank.test left out: scoped to client JA4"),
        "{stderr}"
    );
    assert!(stderr.lines().count() >= 4, "{stderr}");
    // Hostile names are shown escaped on one line each, never raw.
    assert!(
        stderr.contains(r#""evil.test\nssl_bump splice all\nacl x""#),
        "{stderr}"
    );

    let out = export(&[
        "--format",
        "json",
        "--min-confidence",
        "0.9",
        rules.to_str().unwrap(),
    ]);
    let ids: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        ids,
        [
            "pw-0000000000000001",
            "pw-0000000000000002",
            "pw-0000000000000003",
            "pw-0000000000000006"
        ]
    );
}

#[test]
fn exit_codes() {
    let dir = TempDir::new("exit");
    let missing = Command::new(PINWATCH)
        .args(["export", "--format", "squid"])
        .arg(dir.path("no-such-rules.jsonl"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(3));
    let err = text(&missing.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no-such-rules.jsonl"), "{err}");

    let rules = rules_file(&dir);
    let unwritable = Command::new(PINWATCH)
        .args(["export", "--format", "squid", "-o"])
        .arg(dir.path("no-such-dir/out.conf"))
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(
        unwritable.status.code(),
        Some(5),
        "{}",
        text(&unwritable.stderr)
    );

    let bad_conf = Command::new(PINWATCH)
        .args(["export", "--format", "squid", "--min-confidence", "1.5"])
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(bad_conf.status.code(), Some(2));

    // Not a rules file at all (a connections file): refused, not turned into an empty config.
    let conns = Command::new(PINWATCH)
        .args(["export", "--format", "domains"])
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("captures/mitm-explicit-pinning.connections.jsonl"),
        )
        .output()
        .unwrap();
    assert_eq!(conns.status.code(), Some(3), "{}", text(&conns.stderr));

    // Standard input, and an empty input is a valid (empty) rule set.
    let mut child = Command::new(PINWATCH)
        .args(["export", "--format", "domains", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

/// The rules `pinwatch replay` writes for the bundled captures follow schema/rule.schema.json,
/// and `export` reads every one of them.
#[test]
fn replay_rules_follow_the_schema_and_export_reads_them() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("schema/rule.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let dir = TempDir::new("schema");
    let mut all = String::new();
    for entry in std::fs::read_dir(repo.join("captures")).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_none_or(|e| e != "pcap" && e != "pcapng")
        {
            continue;
        }
        let out = Command::new(PINWATCH)
            .args(["replay", "-q", "--min-confidence", "0"])
            .arg(&path)
            .output()
            .unwrap();
        all.push_str(&text(&out.stdout));
    }
    let mut n = 0;
    for line in all.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(e) = validator.iter_errors(&v).next() {
            panic!("rule violates schema/rule.schema.json: {e}\n{line}");
        }
        n += 1;
    }
    assert!(n > 0, "the bundled captures gave no rules");
    // Both shapes of match the schema must reject.
    for bad in [
        r#"{"host":"a.test","suffix":"a.test"}"#,
        r#"{"client_ja4":"x"}"#,
    ] {
        let v: serde_json::Value =
            serde_json::from_str(&rule("pw-0000000000000001", bad, 0.9)).unwrap();
        assert!(!validator.is_valid(&v), "schema accepted match {bad}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&rule("pw-0000000000000001", r#"{"host":"a.test"}"#, 1.5)).unwrap();
    assert!(!validator.is_valid(&v), "schema accepted confidence 1.5");

    let rules = dir.path("replayed.jsonl");
    std::fs::write(&rules, &all).unwrap();
    let out = export(&["--format", "json", rules.to_str().unwrap()]);
    // Export keeps one line per rule id (the latest): captures that find the same rule give it once.
    let ids: std::collections::BTreeSet<String> = all
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
        .collect();
    assert_eq!(
        text(&out.stdout).lines().count(),
        ids.len(),
        "{}",
        text(&out.stderr)
    );
}
