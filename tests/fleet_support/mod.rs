//! What the fleet tests share: scratch directories, a real `nats-server -js` of their own on
//! a free loopback port, running pinwatch, and reading rules as the consumer contract does.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pinwatch");

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pinwatch-fleet-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A JetStream server of our own, stopped when dropped.
pub struct Nats {
    pub child: Child,
    pub port: u16,
}

impl Nats {
    pub fn start(store: &Path) -> Nats {
        Nats::start_on(store, free_port())
    }
    /// A server on a given port (also a restart of one that was stopped, on its storage).
    pub fn start_on(store: &Path, port: u16) -> Nats {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (apt-get install nats-server) to run the fleet tests");
        wait_for_port(port);
        Nats { child, port }
    }
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to 10 s for a server to listen on loopback `port`.
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The rules in force after one replay of `name` (a non-empty set).
pub fn one_replay(name: &str, dir: &Scratch) -> BTreeMap<String, f64> {
    let one = dir.path("one.jsonl");
    pinwatch(&[
        "replay",
        &capture(name),
        "--rules",
        one.to_str().unwrap(),
        "-q",
    ]);
    let rules = in_force(&one);
    assert!(!rules.is_empty(), "{name} gives rules");
    rules
}

pub fn capture(name: &str) -> String {
    format!("{}/captures/{name}.pcap", env!("CARGO_MANIFEST_DIR"))
}

/// `aggregate --once` into `rules` with its lifecycle kept in `state`.
pub fn aggregate_once(url: &str, rules: &str, state: &str, extra: &[&str]) {
    let mut args = vec![
        "aggregate",
        "--nats",
        url,
        "--rules",
        rules,
        "--state",
        state,
        "--once",
        "-q",
    ];
    args.extend_from_slice(extra);
    pinwatch(&args);
}

pub fn pinwatch(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("pinwatch runs");
    assert!(
        out.status.success(),
        "pinwatch {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The rules in force in a rules file, as the consumer contract reads it: the latest line per
/// id (by `seq`), withdrawn ones dropped; id to confidence.
pub fn in_force(path: &Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut latest: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a rule line");
        let id = v["id"].as_str().expect("id").to_string();
        let newer = latest
            .get(&id)
            .is_none_or(|old| old["seq"].as_u64() <= v["seq"].as_u64());
        if newer {
            latest.insert(id, v);
        }
    }
    latest
        .into_iter()
        .filter(|(_, v)| v["status"] != "withdrawn")
        .map(|(id, v)| (id, v["confidence"].as_f64().expect("confidence")))
        .collect()
}

/// Splits a classic pcap (Ethernet or Linux cooked v2, IPv4) into three by client network:
/// clients of 10.x.1.0/24 with an odd last byte, those with an even one, and every other
/// network (there: the proxy's upstream side). The client of a packet is the end with the
/// higher port.
pub fn split_by_client_network(src: &str, dir: &Scratch) -> [PathBuf; 3] {
    let data = std::fs::read(src).expect("capture");
    assert_eq!(
        &data[..4],
        b"\xd4\xc3\xb2\xa1",
        "little-endian classic pcap"
    );
    let linktype = u32::from_le_bytes(data[20..24].try_into().unwrap());
    let mut parts: [Vec<u8>; 3] = std::array::from_fn(|_| data[..24].to_vec());
    let mut off = 24;
    while off + 16 <= data.len() {
        let caplen = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        let packet = &data[off..off + 16 + caplen];
        off += 16 + caplen;
        let frame = &packet[16..];
        let (ethertype, ip) = match linktype {
            1 => (u16::from_be_bytes([frame[12], frame[13]]), &frame[14..]),
            276 => (u16::from_be_bytes([frame[0], frame[1]]), &frame[20..]),
            other => panic!("linktype {other}"),
        };
        let part = if ethertype != 0x0800 {
            0
        } else {
            let ihl = usize::from(ip[0] & 15) * 4;
            let src_port = u16::from_be_bytes([ip[ihl], ip[ihl + 1]]);
            let dst_port = u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]);
            let client = if src_port > dst_port {
                &ip[12..16]
            } else {
                &ip[16..20]
            };
            match (client[2], client[3] % 2) {
                (1, 1) => 0,
                (1, _) => 1,
                _ => 2,
            }
        };
        parts[part].extend_from_slice(packet);
    }
    std::array::from_fn(|i| {
        let path = dir.path(&format!("part{i}.pcap"));
        std::fs::write(&path, &parts[i]).expect("part written");
        path
    })
}

/// Publishes raw messages (not observations) on a sensor subject, as a hostile or newer
/// sensor could.
pub fn publish_raw(url: &str, payloads: &[&[u8]]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        for p in payloads {
            js.publish("pinwatch.obs.intruder", p.to_vec().into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
    });
}

/// The rules in force in the aggregator's key-value bucket: id to confidence. Asked again
/// for up to 20 s when the server does not answer (a cluster electing a leader).
pub fn bucket(url: &str) -> BTreeMap<String, f64> {
    bucket_as(url, None)
}

/// [`bucket`], read as a user with a password.
pub fn bucket_as(url: &str, user: Option<(&str, &str)>) -> BTreeMap<String, f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let read = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(3), read_bucket(url, user)).await
        });
        match read {
            Ok(Ok(rules)) => return rules,
            Ok(Err(e)) if Instant::now() > deadline => panic!("bucket: {e}"),
            Err(_) if Instant::now() > deadline => panic!("bucket: timed out"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

async fn read_bucket(
    url: &str,
    user: Option<(&str, &str)>,
) -> Result<BTreeMap<String, f64>, async_nats::Error> {
    use futures_util::StreamExt;
    let mut options = async_nats::ConnectOptions::new();
    if let Some((user, pass)) = user {
        options = options.user_and_password(user.into(), pass.into());
    }
    let client = options.connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let store = js.get_key_value("pinwatch_rules").await?;
    let mut keys = store.keys().await?;
    let mut out = BTreeMap::new();
    while let Some(key) = keys.next().await {
        let key = key?;
        let value = store.get(&key).await?.expect("a value for a listed key");
        let v: serde_json::Value = serde_json::from_slice(&value).expect("a rule line");
        out.insert(key, v["confidence"].as_f64().expect("confidence"));
    }
    Ok(out)
}

pub fn publish_part(url: &str, part: &Path, sensor: &str) -> String {
    let part = part.to_str().unwrap();
    let out = pinwatch(&[
        "replay",
        part,
        "--publish",
        url,
        "--sensor",
        sensor,
        "--rules",
        "/dev/null",
    ]);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The number just before `words` in `text` ("published 12 observations to" gives 12).
pub fn number_before(text: &str, words: &str) -> u64 {
    let at = text
        .find(words)
        .unwrap_or_else(|| panic!("{words:?} in {text}"));
    let digits: String = text[..at]
        .trim_end()
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or_default()
        .to_string();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("a number before {words:?} in {text}"))
}
