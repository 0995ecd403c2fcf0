//! Join keys (issue 24): every connection record carries `community_id`, `flow_id`, `sensor`
//! and `file` (replay), rules name sample Community IDs of the failures behind them, the
//! Community IDs are the ones tshark computes for the same packets, and contrib/ecs.jq turns a
//! record into Elastic Common Schema field names.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output, Stdio};

use common::repo_file;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pinwatch");

fn run(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pinwatch");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn records(files: &[&str], extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["replay"];
    args.extend_from_slice(files);
    args.extend_from_slice(&["--connections", "-", "-q"]);
    args.extend_from_slice(extra);
    lines(&run(&args).stdout)
}

#[test]
fn every_record_says_where_it_came_from() {
    let a = repo_file("captures/mitm-multihost.pcap");
    let b = repo_file("captures/mitm-explicit-pinning.pcap");
    let alone: BTreeMap<String, String> = [&a, &b]
        .iter()
        .flat_map(|f| {
            records(&[f.as_str()], &[])
                .into_iter()
                .map(move |r| (r["flow_id"].as_str().unwrap().to_string(), f.to_string()))
        })
        .collect();
    for threads in ["1", "3"] {
        let both = records(&[&a, &b], &["--sensor", "span-7", "--threads", threads]);
        assert_eq!(
            both.len(),
            alone.len(),
            "flow_id must tell every connection apart"
        );
        for r in &both {
            assert_eq!(r["sensor"], "span-7");
            assert!(r.get("iface").is_none(), "replay has no interface: {r}");
            let cid = r["community_id"].as_str().unwrap();
            assert!(cid.starts_with("1:") && cid.len() == 30, "{cid}");
            let flow = r["flow_id"].as_str().unwrap();
            assert_eq!(
                r["file"].as_str(),
                Some(alone[flow].as_str()),
                "threads {threads}: {r}"
            );
        }
    }
    // The default sensor name is the host's.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let r = &records(&[&b], &[])[0];
    assert_eq!(r["sensor"].as_str(), Some(host.trim()));
}

#[test]
fn rules_name_the_failures_behind_them() {
    let capture = repo_file("captures/mitm-multihost.pcap");
    let recs = records(&[&capture], &[]);
    let failing: BTreeSet<&str> = recs
        .iter()
        .filter(|r| r["outcome"] != "established" && r["outcome"] != "not_tls")
        .map(|r| r["community_id"].as_str().unwrap())
        .collect();
    let rules = lines(&run(&["replay", &capture, "-q"]).stdout);
    assert!(!rules.is_empty());
    for rule in &rules {
        let samples = rule["evidence"]["sample_community_ids"].as_array().unwrap();
        let failures = rule["evidence"]["failures"].as_u64().unwrap() as usize;
        assert_eq!(samples.len(), failures.min(5), "{rule}");
        for s in samples {
            assert!(
                failing.contains(s.as_str().unwrap()),
                "{s} is not a failing connection"
            );
        }
    }
}

/// Each record's Community ID is the one Wireshark's Community ID dissector gives its packets
/// (connections outside tunnels).
#[test]
#[ignore = "needs tshark; .ci/run runs it"]
fn community_ids_match_tshark() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_file("captures")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "pcap") {
            continue;
        }
        let p = path.to_str().unwrap();
        let out = Command::new("tshark")
            .args(["--enable-protocol", "communityid", "-r", p, "-Y", "tcp"])
            .args(["-T", "fields", "-e", "communityid"])
            .output()
            .expect("tshark must be installed for this test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        assert!(!theirs.is_empty(), "{p}: tshark computed no Community ID");
        // Wireshark hashes a tunnelled packet's outer header; pinwatch, the connection inside.
        let ours: BTreeSet<String> = records(&[p], &[])
            .iter()
            .filter(|r| r.get("tunnel").is_none())
            .map(|r| r["community_id"].as_str().unwrap().to_string())
            .collect();
        assert!(
            ours.is_subset(&theirs),
            "{p}: {:?}",
            ours.difference(&theirs).collect::<Vec<_>>()
        );
        checked += ours.len();
    }
    assert!(checked > 50, "only {checked} connections checked");
}

/// contrib/ecs.jq gives ECS field names with the record's values.
#[test]
#[ignore = "needs jq; .ci/run runs it"]
fn ecs_filter_maps_the_record() {
    let capture = repo_file("captures/mitm-explicit-pinning.pcap");
    let recs = records(&[&capture], &["--sensor", "edge-1"]);
    let input: String = recs.iter().map(|r| format!("{r}\n")).collect();
    let mut child = Command::new("jq")
        .args(["-c", "-f", &repo_file("contrib/ecs.jq")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("jq must be installed for this test");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let docs = lines(&out.stdout);
    assert_eq!(docs.len(), recs.len());
    for (r, d) in recs.iter().zip(&docs) {
        assert_eq!(d["@timestamp"], r["ts_start"]);
        assert_eq!(d["network"]["community_id"], r["community_id"]);
        assert_eq!(d["source"]["ip"], r["client_ip"]);
        assert_eq!(d["source"]["port"], r["client_port"]);
        assert_eq!(d["destination"]["ip"], r["server_ip"]);
        assert_eq!(d["observer"]["name"], "edge-1");
        assert_eq!(d["log"]["file"]["path"], r["file"]);
        assert_eq!(d["event"]["action"], r["outcome"]);
        let want = if r["outcome"] == "established" {
            "success"
        } else {
            "failure"
        };
        assert_eq!(d["event"]["outcome"], want, "{d}");
        if !r["sni"].is_null() {
            assert_eq!(d["tls"]["client"]["server_name"], r["sni"]);
        }
        if let Some(v) = r["tls_version"].as_str() {
            assert_eq!(d["tls"]["version"].as_str(), v.strip_prefix("TLS "));
        }
        assert_eq!(&d["pinwatch"], r, "the record is kept whole");
        let mut ecs = d.clone();
        ecs.as_object_mut().unwrap().remove("pinwatch");
        assert!(
            !ecs.to_string().contains(":null"),
            "ECS fields without a value are left out: {ecs}"
        );
    }
}
