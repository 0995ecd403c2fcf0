//! Snapshot tests: every capture in `captures/` and in the public corpus (`tests/corpus/public`,
//! sources and licences in its MANIFEST.md) is replayed and
//! its NDJSON connection records compared with the reviewed golden file beside it
//! (`captures/NAME.connections.jsonl`, `tests/corpus/NAME.connections.jsonl`). Every record is
//! also validated against `schema/connection.schema.json`.
//!
//! Each capture is also replayed with 2 and 3 worker threads, which must give the same
//! records in the same order (files: every worker reads the mapped file itself), and read
//! from standard input with 2 threads (the streaming reader, and a source thread handing
//! frames to the workers, as in live capture), which must give the same records too.
//!
//! After a deliberate change, `PINWATCH_BLESS=1 cargo test --test golden` rewrites the goldens;
//! read the diff before committing it.

use std::io::Read;
use std::path::{Path, PathBuf};

use pinwatch::replay::{ReplayConfig, replay};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn corpus() -> PathBuf {
    repo().join("tests/corpus/public")
}

fn schema_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo().join("schema/connection.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).expect("schema compiles")
}

/// Replays one file; returns the NDJSON text, the capture errors (one line each) and the
/// summary's packet counts.
fn replay_ndjson(path: &Path, threads: usize) -> (String, Vec<String>, String) {
    let mut out = String::new();
    let summary = replay::<std::convert::Infallible>(
        &[path.to_string_lossy().into_owned()],
        ReplayConfig {
            threads,
            ..ReplayConfig::default()
        },
        &mut |rec, _| {
            out.push_str(&serde_json::to_string(rec).unwrap());
            out.push('\n');
            Ok(())
        },
    )
    .unwrap();
    let counts = format!(
        "{} packets, {} TCP segments, skipped {:?}",
        summary.packets, summary.tcp_segments, summary.skipped
    );
    (
        out,
        summary.errors.iter().map(|e| e.to_string()).collect(),
        counts,
    )
}

/// Replays one file fed to the binary's standard input with 2 worker threads; returns the
/// NDJSON records.
fn replay_stdin(path: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinwatch"))
        .args([
            "replay",
            "-",
            "--connections",
            "-",
            "--quiet",
            "--threads",
            "2",
            "--sensor",
            "golden",
        ])
        .stdin(std::fs::File::open(path).unwrap())
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    // The binary stamps where records come from; the library's records (the goldens) do not.
    String::from_utf8(out.stdout).unwrap().replace(
        r#""sensor":"golden","file":"standard input","#,
        r#""sensor":null,"#,
    )
}

fn check(capture: &Path, golden: &Path, validator: &jsonschema::Validator) -> Result<(), String> {
    let one = replay_ndjson(capture, 1);
    for threads in [2, 3] {
        let several = replay_ndjson(capture, threads);
        if several != one {
            return Err(format!(
                "{}: {threads} worker threads give other records, errors or counts than one \
                 ({} against {})",
                capture.display(),
                several.2,
                one.2
            ));
        }
    }
    let (actual, _, _) = one;
    if replay_stdin(capture) != actual {
        return Err(format!(
            "{}: read from standard input, it gives other records than from the file",
            capture.display()
        ));
    }
    for (i, line) in actual.lines().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(err) = validator.iter_errors(&value).next() {
            return Err(format!(
                "{}: record {} violates the schema: {err}",
                capture.display(),
                i + 1
            ));
        }
    }
    if std::env::var_os("PINWATCH_BLESS").is_some() {
        std::fs::write(golden, &actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(golden).map_err(|e| {
        format!(
            "{}: no golden file {} ({e}); run with PINWATCH_BLESS=1 and review it",
            capture.display(),
            golden.display()
        )
    })?;
    if expected == actual {
        return Ok(());
    }
    let first_diff = expected
        .lines()
        .zip(actual.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(expected.lines().count().min(actual.lines().count()));
    Err(format!(
        "{}: output differs from {} at record {}\n  expected: {}\n  actual:   {}",
        capture.display(),
        golden.display(),
        first_diff + 1,
        expected.lines().nth(first_diff).unwrap_or("<none>"),
        actual.lines().nth(first_diff).unwrap_or("<none>"),
    ))
}

fn pcaps_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            pcaps_under(&p, out);
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str())
            && (name.ends_with(".pcap") || name.ends_with(".pcapng") || name.ends_with(".pcap.gz"))
        {
            out.push(p);
        }
    }
    out.sort();
}

#[test]
fn own_captures_match_their_goldens() {
    let validator = schema_validator();
    let mut captures = Vec::new();
    pcaps_under(&repo().join("captures"), &mut captures);
    assert!(
        captures.len() >= 5,
        "captures/ should hold the bundled captures"
    );
    let failures: Vec<String> = captures
        .iter()
        .filter_map(|c| check(c, &c.with_extension("connections.jsonl"), &validator).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn public_corpus_matches_its_goldens() {
    let root = corpus();
    assert!(
        root.is_dir(),
        "the public corpus should be in the repository at {}",
        root.display()
    );
    let validator = schema_validator();
    let mut captures = Vec::new();
    pcaps_under(&root, &mut captures);
    assert!(
        captures.len() >= 30,
        "expected the whole corpus, found {}",
        captures.len()
    );
    let tmp = std::env::temp_dir().join(format!("pinwatch-golden-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut failures = Vec::new();
    for c in &captures {
        let rel = c
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('/', "__");
        let mut input = c.clone();
        if rel.ends_with(".gz") {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(std::fs::File::open(c).unwrap())
                .read_to_end(&mut raw)
                .unwrap();
            input = tmp.join(rel.trim_end_matches(".gz"));
            std::fs::write(&input, raw).unwrap();
        }
        let golden = repo()
            .join("tests/corpus")
            .join(format!("{}.connections.jsonl", rel.trim_end_matches(".gz")));
        if let Err(e) = check(&input, &golden, &validator) {
            failures.push(e);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn damaged_corpus_file_reports_offset_and_keeps_earlier_records() {
    let damaged = corpus().join("suricata-verify/tests/bug-1450-04/tls_DER-incomplete-header.pcap");
    let (records, errors, _) = replay_ndjson(&damaged, 2);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("tls_DER-incomplete-header.pcap") && errors[0].contains("offset 5035"),
        "{}",
        errors[0]
    );
    assert_eq!(
        records.lines().count(),
        1,
        "the connection before the damage is still reported"
    );
}
