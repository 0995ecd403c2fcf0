//! The fleet as deployed: on a 3-node JetStream cluster, and on a server whose users have only
//! the subject permissions the README gives each role. Real `nats-server` processes on
//! loopback, as in tests/fleet.rs; `#[ignore]`d for the same reason, run by `.ci/run`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod fleet_support;

use fleet_support::*;

/// One node of a cluster: client port, monitoring port, route port, storage.
struct Node {
    name: String,
    port: u16,
    monitor: u16,
    child: Option<Child>,
}

/// Three `nats-server -js` processes routed to each other, stopped when dropped.
struct Cluster {
    nodes: Vec<Node>,
    routes: String,
    routes_ports: Vec<u16>,
    dir: std::path::PathBuf,
}

impl Cluster {
    fn start(dir: &Scratch) -> Cluster {
        let routes_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes = routes_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..3)
            .map(|i| Node {
                name: format!("n{i}"),
                port: free_port(),
                monitor: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            routes,
            routes_ports,
            dir: dir.0.clone(),
        };
        for i in 0..3 {
            cluster.start_node(i);
        }
        // JetStream answers only once the nodes have elected a meta leader.
        cluster.wait_for(Duration::from_secs(30), "a JetStream meta leader", |c| {
            c.jsz(0, "")
                .and_then(|v| v["meta_cluster"]["leader"].as_str().map(str::to_string))
                .is_some_and(|l| !l.is_empty())
        });
        cluster
    }

    /// Starts node `i` (again, on its storage, after it was killed).
    fn start_node(&mut self, i: usize) {
        let node = &self.nodes[i];
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "--cluster_name", "pinwatch-test"])
            .args(["-n", &node.name, "-p", &node.port.to_string()])
            .args(["-m", &node.monitor.to_string()])
            .arg("--cluster")
            .arg(format!("nats://127.0.0.1:{}", self.routes_ports[i]))
            .args(["--routes", &self.routes, "-sd"])
            .arg(self.dir.join(&node.name))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (apt-get install nats-server)");
        let port = node.port;
        self.nodes[i].child = Some(child);
        wait_for_port(port);
    }

    /// SIGKILLs node `i`.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every node's client URL, dead ones included: what a sensor is configured with.
    fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn url_of(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Node `i`'s `/jsz` monitoring report.
    fn jsz(&self, i: usize, query: &str) -> Option<serde_json::Value> {
        let mut s = TcpStream::connect(("127.0.0.1", self.nodes[i].monitor)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET /jsz{query} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let body = text.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body).ok()
    }

    /// The stream `name` as node `i` reports it.
    fn stream(&self, i: usize, name: &str) -> Option<serde_json::Value> {
        let v = self.jsz(i, "?accounts=true&streams=true&config=true")?;
        v["account_details"]
            .as_array()?
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == name)
    }

    fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("a node of this cluster")
    }

    fn wait_for(&self, limit: Duration, what: &str, ok: impl Fn(&Cluster) -> bool) {
        let deadline = Instant::now() + limit;
        while !ok(self) {
            assert!(Instant::now() < deadline, "no {what} within {limit:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A replay of `part` publishing to `urls` as `sensor`, with extra arguments; its stderr.
fn publish(urls: &str, part: &Path, sensor: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "replay",
        part.to_str().unwrap(),
        "--publish",
        urls,
        "--sensor",
        sensor,
        "--rules",
        "/dev/null",
    ];
    args.extend_from_slice(extra);
    String::from_utf8_lossy(&pinwatch(&args).stderr).into_owned()
}

/// Issue 23: a 3-node cluster survives losing one node. Sensors configured with every node's
/// URL publish one part each of gen-span-wan with `--nats-replicas 3`; the node leading the
/// stream is SIGKILLed between the first part and the others, so the second and third sensors
/// find their first URL dead and the stream on a new leader. `aggregate --once` then gives
/// exactly the rules of one replay, counting every observation once, in its file and in the
/// rules bucket (also made with 3 replicas). Then the dead node comes back on its storage and
/// the node leading the bucket is killed: an aggregator restarted on its `--state` reads the
/// same stream, ends with the same rules and announces none of them again.
#[test]
#[ignore = "needs nats-server (Debian package); .ci/run runs it"]
fn a_three_node_cluster_loses_a_node_and_the_fleet_loses_nothing() {
    let dir = Scratch::new("cluster");
    let mut cluster = Cluster::start(&dir);
    let urls = cluster.urls();
    let parts = split_by_client_network(&capture("gen-span-wan"), &dir);
    let expected = one_replay("gen-span-wan", &dir);

    let said = publish(&urls, &parts[0], "sensor-0", &["--nats-replicas", "3"]);
    assert!(said.contains(", 0 dropped, 0 unsent"), "{said}");
    let mut published = number_before(&said, "observations to");
    let stream = cluster.stream(0, "PINWATCH_OBS").expect("the stream");
    assert_eq!(stream["config"]["num_replicas"], 3, "{stream}");
    let leader = stream["cluster"]["leader"].as_str().expect("a leader");
    let first = cluster.index_of(leader);
    cluster.kill(first);

    // The sensors still name the dead node first.
    let mut order: Vec<String> = vec![cluster.url_of(first)];
    order.extend((0..3).filter(|&i| i != first).map(|i| cluster.url_of(i)));
    let urls_dead_first = order.join(",");
    for (i, part) in parts.iter().enumerate().skip(1) {
        let said = publish(&urls_dead_first, part, &format!("sensor-{i}"), &[]);
        assert!(said.contains(", 0 dropped, 0 unsent"), "{said}");
        published += number_before(&said, "observations to");
    }

    let rules = dir.path("agg.jsonl");
    let state = dir.path("agg-state");
    let out = pinwatch(&[
        "aggregate",
        "--nats",
        &urls_dead_first,
        "--nats-replicas",
        "3",
        "--rules",
        rules.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--once",
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("aggregated {published} observations"))
            && said.contains("(0 resent, 0 unreadable, 0 of a newer version)"),
        "expected {published} observations, each once: {said}"
    );
    assert_eq!(in_force(&rules), expected, "aggregate vs one replay");
    let live = (0..3).find(|&i| i != first).unwrap();
    assert_eq!(bucket(&cluster.url_of(live)), expected, "the bucket");

    // The dead node rejoins; the node leading the bucket goes.
    cluster.start_node(first);
    let messages = |c: &Cluster, i: usize| {
        c.stream(i, "PINWATCH_OBS")
            .and_then(|s| s["state"]["messages"].as_u64())
    };
    let held = messages(&cluster, live).expect("the stream on a live node");
    cluster.wait_for(Duration::from_secs(30), "caught-up replica", |c| {
        messages(c, first) == Some(held)
    });
    let kv = cluster
        .stream(live, "KV_pinwatch_rules")
        .expect("the bucket");
    assert_eq!(kv["config"]["num_replicas"], 3, "{kv}");
    let second = cluster.index_of(kv["cluster"]["leader"].as_str().expect("a leader"));
    cluster.kill(second);
    let before = std::fs::read_to_string(&rules).unwrap();
    aggregate_once(
        &cluster.urls(),
        rules.to_str().unwrap(),
        state.to_str().unwrap(),
        &[],
    );
    assert_eq!(
        std::fs::read_to_string(&rules).unwrap(),
        before,
        "the same rules, none announced again"
    );
    let live = (0..3).find(|&i| i != second).unwrap();
    assert_eq!(bucket(&cluster.url_of(live)), expected, "the bucket, again");
}

/// The subject permissions of README's "Security" table, one user per role, in a
/// nats-server configuration (allow lists: everything else is denied).
fn restricted_config(port: u16, store: &Path) -> String {
    let sensor_pub = [
        "pinwatch.obs.site-a",
        "$JS.API.STREAM.INFO.PINWATCH_OBS",
        "$JS.API.STREAM.CREATE.PINWATCH_OBS",
    ];
    let aggregator_pub = [
        "$JS.API.STREAM.INFO.PINWATCH_OBS",
        "$JS.API.STREAM.CREATE.PINWATCH_OBS",
        "$JS.API.CONSUMER.CREATE.PINWATCH_OBS",
        "$JS.API.CONSUMER.MSG.NEXT.PINWATCH_OBS.>",
        "$JS.API.CONSUMER.DELETE.PINWATCH_OBS.>",
        "$JS.API.STREAM.INFO.KV_pinwatch_rules",
        "$JS.API.STREAM.CREATE.KV_pinwatch_rules",
        "$KV.pinwatch_rules.>",
        "$JS.API.CONSUMER.CREATE.KV_pinwatch_rules",
        "$JS.API.CONSUMER.CREATE.KV_pinwatch_rules.>",
        "$JS.API.DIRECT.GET.KV_pinwatch_rules.>",
        "pinwatch.rules.>",
    ];
    let consumer_pub = [
        "$JS.API.STREAM.INFO.KV_pinwatch_rules",
        "$JS.API.CONSUMER.CREATE.KV_pinwatch_rules",
        "$JS.API.CONSUMER.CREATE.KV_pinwatch_rules.>",
        "$JS.API.DIRECT.GET.KV_pinwatch_rules.>",
    ];
    let list = |subjects: &[&str]| {
        subjects
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let user = |name: &str, publish: &[&str], subscribe: &[&str]| {
        format!(
            "      {{ user: {name}, password: {name}-pw, permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }} }} }}\n",
            list(publish),
            list(subscribe)
        )
    };
    format!(
        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\naccounts {{\n  PINWATCH {{\n    jetstream: enabled\n    users: [\n{}{}{}    ]\n  }}\n}}\n",
        store.display(),
        user("sensor", &sensor_pub, &["_INBOX.>"]),
        user("aggregator", &aggregator_pub, &["_INBOX.>"]),
        user("consumer", &consumer_pub, &["pinwatch.rules.>", "_INBOX.>"]),
    )
}

/// pinwatch run as `user` (password from the environment, as a deployment would).
fn pinwatch_as(user: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("PINWATCH_NATS_USER", user)
        .env("PINWATCH_NATS_PASSWORD", format!("{user}-pw"))
        .output()
        .expect("pinwatch runs")
}

/// Issue 23: the README's subject permissions are enough, and they are what keeps each role
/// to its part. On a server whose users may use only the subjects README's table gives their
/// role: the sensor publishes gen-stacks as `site-a`; the aggregator turns it into the rules of
/// one replay and keeps them in the bucket; the rule consumer reads the bucket. And the
/// sensor user can publish under no other sensor's name (nothing of it is stored) and cannot
/// aggregate; the consumer cannot write rules.
#[test]
#[ignore = "needs nats-server (Debian package); .ci/run runs it"]
fn each_role_works_with_the_subject_permissions_the_readme_gives_it_and_no_more() {
    let dir = Scratch::new("perms");
    let port = free_port();
    let config = dir.path("server.conf");
    std::fs::write(&config, restricted_config(port, &dir.path("js"))).unwrap();
    let server = Command::new("nats-server")
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server must be installed (apt-get install nats-server)");
    wait_for_port(port);
    // Stopped when dropped, also when an assertion fails.
    let server = Nats {
        child: server,
        port,
    };
    let url = server.url();
    let expected = one_replay("gen-stacks", &dir);
    let gen_stacks = capture("gen-stacks");
    let replay_as = |sensor: &str, wait: &str| {
        pinwatch_as(
            "sensor",
            &[
                "replay",
                &gen_stacks,
                "--publish",
                &url,
                "--sensor",
                sensor,
                "--rules",
                "/dev/null",
                "--publish-wait",
                wait,
            ],
        )
    };

    let out = replay_as("site-a", "30");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(", 0 dropped, 0 unsent"), "{said}");
    let published = number_before(&said, "observations to");

    // Another sensor's subject: the server refuses every message, the replay says so.
    let out = replay_as("site-b", "3");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{said}");
    assert!(!said.contains(" 0 unsent"), "{said}");

    let rules = dir.path("agg.jsonl");
    let agg = |user: &str| {
        pinwatch_as(
            user,
            &[
                "aggregate",
                "--nats",
                &url,
                "--rules",
                rules.to_str().unwrap(),
                "--once",
            ],
        )
    };
    let out = agg("sensor");
    assert!(
        !out.status.success(),
        "the sensor user aggregated: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agg("aggregator");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("aggregated {published} observations")),
        "only site-a's observations are in the stream: {said}"
    );
    assert_eq!(in_force(&rules), expected, "aggregate vs one replay");
    assert_eq!(
        bucket_as(&url, Some(("consumer", "consumer-pw"))),
        expected,
        "the rule consumer reads the bucket"
    );

    // The consumer may not write a rule.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let wrote = rt.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .user_and_password("consumer".into(), "consumer-pw".into())
            .connect(url.as_str())
            .await
            .expect("the consumer connects");
        let js = async_nats::jetstream::new(client);
        let store = js.get_key_value("pinwatch_rules").await.expect("bucket");
        tokio::time::timeout(Duration::from_secs(3), store.put("pw-forged", "{}".into()))
            .await
            .is_ok_and(|r| r.is_ok())
    });
    assert!(!wrote, "the rule consumer could write a rule");
}
