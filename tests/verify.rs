//! `pinwatch verify`, run as a user runs it (the release binary): the shipped cases of
//! `captures/verify/` hold; bless then verify passes; the same case fails with exit 1 and names
//! the missing rule once the pinned app's failures are cut out of its capture, and when a rule's
//! client addresses change; results stand
//! with shifted timestamps, another thread count and another file order; hostile names in a
//! case file or a capture reach the diff and the JUnit XML escaped, and the XML validates
//! against a JUnit schema (`tests/verify/junit.xsd`, with xmllint: ignored test).

mod common;
mod hostile;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use common::{path_string, read_pcap, repo_file, temp_dir};
use hostile::PcapWriter;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pinwatch");

fn verify(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("verify")
        .args(args)
        .output()
        .expect("run pinwatch")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 output")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

fn shipped_cases() -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(repo_file("captures/verify"))
        .unwrap()
        .map(|e| path_string(&e.unwrap().path()))
        .collect();
    dirs.sort();
    dirs
}

/// The shipped pinning case, rewritten to run on `capture` from `dir`.
fn pinning_case_on(dir: &Path, capture: &str) {
    let text =
        std::fs::read_to_string(repo_file("captures/verify/mitm-explicit-pinning/case.toml"))
            .unwrap()
            .replace("../../mitm-explicit-pinning.pcap", capture)
            .replace("../../certs/", &repo_file("captures/certs/"));
    std::fs::write(dir.join("case.toml"), text).unwrap();
}

/// `captures/mitm-explicit-pinning.pcap` with every packet's time moved by `shift_ns`, and
/// without the connections `drop` picks (by client port).
fn rewrite_pinning_capture(out: &Path, shift_ns: i64, drop: &BTreeSet<u16>) {
    let mut w = PcapWriter::create(out);
    for p in read_pcap(&repo_file("captures/mitm-explicit-pinning.pcap")) {
        if let Some(t) = common::parse_tcp(&p)
            && (drop.contains(&t.src_port()) || drop.contains(&t.dst_port()))
        {
            continue;
        }
        w.packet(p.ts_ns + shift_ns, &p.data);
    }
    w.finish();
}

/// Client ports of the pinned app's failures: client alerts to api.pinnedbank.test.
fn pinned_failures() -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    pinwatch::replay::replay::<std::convert::Infallible>(
        &[repo_file("captures/mitm-explicit-pinning.pcap")],
        pinwatch::replay::ReplayConfig::default(),
        &mut |rec, _| {
            if rec.sni.as_deref() == Some("api.pinnedbank.test")
                && rec.outcome.as_str() != "established"
            {
                ports.insert(rec.client_port);
            }
            Ok(())
        },
    )
    .unwrap();
    assert!(
        ports.len() >= 4,
        "the capture has the pinned app's failures"
    );
    ports
}

fn json(o: &Output) -> Value {
    let v: Value = serde_json::from_slice(&o.stdout).expect("--json prints one document");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("schema/verify-result.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "result breaks its schema: {errors:?}");
    v
}

#[test]
fn shipped_cases_hold_with_any_thread_count() {
    let cases = shipped_cases();
    // Every bundled capture is in some case: a capture added without one would go unchecked.
    let covered: String = cases
        .iter()
        .map(|c| std::fs::read_to_string(Path::new(c).join("case.toml")).unwrap())
        .collect();
    for e in std::fs::read_dir(repo_file("captures")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".pcap") || name.ends_with(".pcapng") {
            assert!(
                covered.contains(&format!("\"../../{name}\"")),
                "captures/{name} is in no case of captures/verify/: add one with \
                 `pinwatch verify --bless captures/verify/NAME/` and review it"
            );
        }
    }
    for threads in ["1", "3"] {
        let mut args = vec!["--threads", threads];
        args.extend(cases.iter().map(String::as_str));
        let o = verify(&args);
        let out = stdout(&o);
        assert_eq!(code(&o), 0, "{out}");
        assert!(
            out.contains(&format!("{} passed, 0 failed", cases.len())),
            "{out}"
        );
    }
}

#[test]
fn bless_then_verify_passes_and_keeps_hand_written_expectations() {
    let dir = temp_dir("verify-bless");
    std::fs::copy(
        repo_file("captures/mitm-explicit-pinning.pcap"),
        dir.join("app.pcap"),
    )
    .unwrap();
    // No case.toml yet: bless creates it from the capture beside it.
    let o = verify(&["--bless", &path_string(&dir)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let text = std::fs::read_to_string(dir.join("case.toml")).unwrap();
    assert!(text.contains("format = \"pinwatch.verify/1\""), "{text}");
    assert!(text.contains("name = \"api.pinnedbank.test\""), "{text}");
    assert!(text.contains("[outcomes]"), "{text}");
    let o = verify(&[&path_string(&dir)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));

    // A hand-written expectation that still holds is kept as written; one that names a
    // connection the capture does not have is dropped, and the note says so.
    // The comments written by hand stay with what they are about.
    let hand = "\n# the help-desk ticket of 3 March\n[[connection]]\nsni = \"api.pinnedbank.test\"\n\
                client = \"10.77.1.11\"\n\n# gone since the move\n[[connection]]\nsni = \"nowhere.test\"\n";
    let text = format!("# Pinned banking app: keep the bypass.\n{text}{hand}");
    std::fs::write(dir.join("case.toml"), text).unwrap();
    assert_eq!(code(&verify(&[&path_string(&dir)])), 1);
    let o = verify(&["--bless", &path_string(&dir)]);
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "{out}");
    assert!(
        out.contains("dropped connection sni=\"nowhere.test\""),
        "{out}"
    );
    let text = std::fs::read_to_string(dir.join("case.toml")).unwrap();
    assert!(text.contains("client = \"10.77.1.11\""), "{text}");
    assert!(!text.contains("nowhere.test"), "{text}");
    assert!(
        text.starts_with("# Pinned banking app: keep the bypass.\n"),
        "{text}"
    );
    assert!(
        text.contains("# the help-desk ticket of 3 March\n[[connection]]\nsni = \"api.pinnedbank.test\"\nclient"),
        "{text}"
    );
    assert!(!text.contains("gone since the move"), "{text}");
}

#[test]
fn removing_the_pinned_apps_failures_fails_and_names_the_rule() {
    let dir = temp_dir("verify-removed");
    let capture = dir.join("no-pinning.pcap");
    rewrite_pinning_capture(&capture, 0, &pinned_failures());
    pinning_case_on(&dir, &path_string(&capture));
    let o = verify(&[&path_string(&dir)]);
    let out = stdout(&o);
    assert_eq!(code(&o), 1, "{out}");
    assert!(out.contains("FAIL  "), "{out}");
    assert!(out.contains("rule \"api.pinnedbank.test\""), "{out}");
    assert!(out.contains("missing"), "{out}");
    assert!(out.contains("outcomes.client_alert"), "{out}");

    let o = verify(&["--json", &path_string(&dir)]);
    assert_eq!(code(&o), 1);
    let v = json(&o);
    assert_eq!(v["failed"], 1);
    let case = &v["cases"][0];
    assert_eq!(case["status"], "failed");
    let diffs = case["differences"].as_array().unwrap();
    let rule = diffs
        .iter()
        .find(|d| d["expectation"] == "rule \"api.pinnedbank.test\"")
        .expect("the missing rule is a difference");
    assert!(rule["got"].as_str().unwrap().starts_with("missing"));
    // The diff lists the connections behind it: the name's remaining (successful) ones.
    assert!(rule["connections_total"].as_u64().unwrap() >= 1);
}

#[test]
fn shifted_timestamps_and_file_order_do_not_matter() {
    let dir = temp_dir("verify-stable");
    let shifted = dir.join("shifted.pcap");
    rewrite_pinning_capture(
        &shifted,
        86_400 * 1_000_000_000 + 123_456_000,
        &BTreeSet::new(),
    );
    pinning_case_on(&dir, &path_string(&shifted));
    let o = verify(&["--threads", "2", &path_string(&dir)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));

    // Two captures, blessed in one order, verified in the other.
    let two = temp_dir("verify-order");
    let a = repo_file("captures/mitm-explicit-pinning.pcap");
    let b = repo_file("captures/mitm-explicit-success.pcap");
    std::fs::write(
        two.join("case.toml"),
        format!("format = \"pinwatch.verify/1\"\ncaptures = [{a:?}, {b:?}]\n"),
    )
    .unwrap();
    assert_eq!(code(&verify(&["--bless", &path_string(&two)])), 0);
    let blessed = std::fs::read_to_string(two.join("case.toml")).unwrap();
    let swapped = blessed
        .replace(&a, "FIRST")
        .replace(&b, &a)
        .replace("FIRST", &b);
    assert_ne!(blessed, swapped);
    std::fs::write(two.join("case.toml"), swapped).unwrap();
    let o = verify(&[&path_string(&two)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}

#[test]
fn an_outcome_change_fails() {
    let dir = temp_dir("verify-outcome");
    pinning_case_on(&dir, &repo_file("captures/mitm-explicit-pinning.pcap"));
    let text = std::fs::read_to_string(dir.join("case.toml")).unwrap();
    std::fs::write(
        dir.join("case.toml"),
        text.replace("established = 2", "established = 3"),
    )
    .unwrap();
    let o = verify(&[&path_string(&dir)]);
    let out = stdout(&o);
    assert_eq!(code(&o), 1, "{out}");
    assert!(
        out.contains("outcomes.established\n    expected: 3\n    got:      2"),
        "{out}"
    );
}

/// The security regression verify exists for: a fingerprint rule that used to bypass only the
/// hosts that fail would, widened, bypass every client of that fingerprint. The shipped case
/// pins the addresses; the same case claiming "not narrowed" fails and names them.
#[test]
fn a_rule_whose_client_addresses_change_fails() {
    let dir = temp_dir("verify-ips");
    let text = std::fs::read_to_string(repo_file("captures/verify/gen-shared-ja4/case.toml"))
        .unwrap()
        .replace(
            "../../gen-shared-ja4.pcap",
            &repo_file("captures/gen-shared-ja4.pcap"),
        );
    assert!(text.contains("\"10.78.1.12\",\n]"), "{text}");
    std::fs::write(dir.join("case.toml"), &text).unwrap();
    let o = verify(&[&path_string(&dir)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));

    let widened = text.replacen(
        "client_ips = [\n    \"10.78.1.11\",\n    \"10.78.1.12\",\n]",
        "client_ips = []",
        1,
    );
    assert_ne!(widened, text);
    std::fs::write(dir.join("case.toml"), widened).unwrap();
    let o = verify(&[&path_string(&dir)]);
    let out = stdout(&o);
    assert_eq!(code(&o), 1, "{out}");
    assert!(out.contains("not narrowed to client addresses"), "{out}");
    assert!(
        out.contains("for client addresses 10.78.1.11, 10.78.1.12"),
        "{out}"
    );
}

#[test]
fn bad_case_files_say_what_to_fix() {
    let dir = temp_dir("verify-bad");
    for (text, needle) in [
        ("format = \"pinwatch.verify/9\"\n", "this pinwatch reads"),
        (
            "format = \"pinwatch.verify/1\"\nrulez = []\n",
            "unknown field",
        ),
        (
            "format = \"pinwatch.verify/1\"\n[[rule]]\nname = 3\n",
            "expected a string",
        ),
        ("format = [[[\n", "case.toml"),
        (
            "format = \"pinwatch.verify/1\"\ncaptures = [\"gone.pcap\"]\n",
            "gone.pcap",
        ),
    ] {
        std::fs::write(dir.join("case.toml"), text).unwrap();
        let o = verify(&[&path_string(&dir)]);
        let out = stdout(&o);
        assert_eq!(code(&o), 3, "{text}: {out}");
        let line = out.lines().next().unwrap();
        assert!(line.starts_with("ERROR "), "{line}");
        assert!(line.contains(needle), "{text}: {line}");
    }
    // Flags: clap's one line, exit 2.
    let o = verify(&[]);
    assert_eq!(code(&o), 2);
}

/// 18 bytes, like `expired.daily.test`, so it can replace that name in place in a real
/// capture: quotes, backslash and `#` for TOML; `]]>`, a closing tag, an entity for XML.
const HOSTILE_SNI: &str = "\"]]></f>&lt;'\\#{x}";

/// `captures/origin-cert-error.pcap` with its server name replaced by [`HOSTILE_SNI`].
fn hostile_capture(out: &Path) {
    let mut bytes = std::fs::read(repo_file("captures/origin-cert-error.pcap")).unwrap();
    let (from, to) = (b"expired.daily.test", HOSTILE_SNI.as_bytes());
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            n += 1;
        }
        i += 1;
    }
    assert!(n > 0);
    std::fs::write(out, bytes).unwrap();
}

/// Text and attribute values of a JUnit document, parsed back (it must be well-formed).
fn junit_texts(path: &Path) -> Vec<String> {
    use quick_xml::events::Event;
    let xml = std::fs::read_to_string(path).unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut out = Vec::new();
    let mut text = String::new();
    loop {
        let event = reader.read_event().expect("well-formed XML");
        match &event {
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().expect("valid reference") {
                    Some(c) => c,
                    None => match r.xml10_content().as_ref() {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "quot" => '"',
                        "apos" => '\'',
                        other => panic!("undefined entity &{other};"),
                    },
                };
                text.push(c);
            }
            _ => out.push(std::mem::take(&mut text)),
        }
        match event {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                for a in e.attributes() {
                    let a = a.expect("well-formed attribute");
                    out.push(
                        a.normalized_value(quick_xml::XmlVersion::Explicit1_0)
                            .unwrap()
                            .into_owned(),
                    );
                }
            }
            _ => {}
        }
    }
    out
}

/// A failing case, a passing one and a broken one, with hostile names in a capture, in a case
/// file and in a case directory's name; returns the JUnit file and the human output.
fn hostile_run(dir: &Path) -> (std::path::PathBuf, String) {
    let from_capture = dir.join("sni");
    std::fs::create_dir(&from_capture).unwrap();
    hostile_capture(&from_capture.join("hostile.pcap"));
    assert_eq!(
        code(&verify(&["--bless", &path_string(&from_capture)])),
        0,
        "a hostile SNI blesses into a case file that reads back"
    );
    let blessed = std::fs::read_to_string(from_capture.join("case.toml")).unwrap();
    let parsed: toml::Value = toml::from_str(&blessed).expect("the blessed file reads back");
    let snis: Vec<&str> = parsed["connection"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.get("sni")?.as_str())
        .collect();
    assert!(snis.contains(&HOSTILE_SNI), "{blessed}");

    let from_case = dir.join("case-<x>&\"]]>\u{1}\nname");
    std::fs::create_dir(&from_case).unwrap();
    hostile_capture(&from_case.join("hostile.pcap"));
    let case = format!(
        "format = \"pinwatch.verify/1\"\n\
         [[connection]]\nsni = {:?}\noutcome = \"established\"\n\
         [[rule]]\nname = \"</failure>\\u0001\\u001b[31m\\nFAIL fake]]>&amp;\"\n",
        HOSTILE_SNI
    );
    std::fs::write(from_case.join("case.toml"), case).unwrap();

    let broken = dir.join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("case.toml"), "format = \"\\u0001<x>\"\n").unwrap();

    let junit = dir.join("out.xml");
    let o = verify(&[
        "--junit",
        &path_string(&junit),
        &path_string(&from_capture),
        &path_string(&from_case),
        &path_string(&broken),
    ]);
    let out = stdout(&o);
    assert_eq!(code(&o), 3, "an error outranks a failure: {out}");
    (junit, out)
}

#[test]
fn hostile_names_cannot_break_the_diff_or_the_xml() {
    let dir = temp_dir("verify-hostile");
    let (junit, out) = hostile_run(&dir);
    // No raw control character reaches the terminal; every line is one the report writes.
    assert!(!out.contains('\u{1}') && !out.contains('\u{1b}'), "{out:?}");
    for line in out.lines() {
        assert!(
            ["PASS  ", "FAIL  ", "ERROR ", "  ", "verify: "]
                .iter()
                .any(|p| line.starts_with(p)),
            "a name started a line of its own: {line:?}"
        );
    }
    assert_eq!(out.lines().filter(|l| l.starts_with("FAIL")).count(), 1);
    assert!(out.contains("\\u{1}"), "{out}");
    // The SNI arrives in the XML as the diff quotes it, escaped on the way in and unescaped on
    // the way out.
    let texts = junit_texts(&junit);
    let quoted = format!("sni={HOSTILE_SNI:?}");
    assert!(out.contains(&quoted), "{out}");
    assert!(texts.iter().any(|t| t.contains(&quoted)), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("</failure>")), "{texts:?}");
}

#[test]
#[ignore = "needs xmllint (libxml2-utils); .ci/run runs it"]
fn junit_output_validates_against_the_junit_schema() {
    let dir = temp_dir("verify-xsd");
    let (junit, _) = hostile_run(&dir);
    // And the shipped cases, all passing.
    let passing = dir.join("passing.xml");
    let mut args = vec!["--junit".to_string(), path_string(&passing)];
    args.extend(shipped_cases());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(code(&verify(&refs)), 0);
    for xml in [&junit, &passing] {
        let o = Command::new("xmllint")
            .args(["--noout", "--schema", &repo_file("tests/verify/junit.xsd")])
            .arg(xml)
            .output()
            .expect("xmllint is installed (libxml2-utils)");
        assert!(
            o.status.success(),
            "{}: {}",
            xml.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
