//! Runs one of the end-to-end scripts (`scripts/e2e-*`) with the binary under test. They need
//! root, network namespaces and real programs (tcpdump, mitmproxy), so the tests that call this
//! are `#[ignore]`d: `cargo test` counts them as ignored, `.ci/run` runs them with `--ignored`,
//! and there a missing capability is a failure naming it. Namespaces carry a per-run prefix
//! and are removed afterwards whatever happened.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The script normally takes about 25 s; anything near this is a hang. `PW_E2E_TIMEOUT_SECS`
/// overrides it (to exercise the timeout path).
fn timeout() -> Duration {
    let secs = std::env::var("PW_E2E_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    Duration::from_secs(secs)
}

/// Output of a short command, `None` when it cannot be run at all.
fn output(cmd: &str, args: &[&str]) -> Option<std::process::Output> {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

/// Why the loop cannot run here, if it cannot.
fn missing_capability(prefix: &str) -> Option<String> {
    let uid = match output("id", &["-u"]) {
        Some(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => return Some("`id -u` failed".into()),
    };
    if uid != "0" {
        return Some(format!(
            "not root (uid {uid}): network namespaces and tcpdump need root"
        ));
    }
    let probe = format!("{prefix}-probe");
    match output("ip", &["netns", "add", &probe]) {
        None => Some("no `ip` command (iproute2)".into()),
        Some(o) if !o.status.success() => Some(format!(
            "cannot create a network namespace: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Some(_) => {
            let _ = output("ip", &["netns", "del", &probe]);
            None
        }
    }
}

/// Removes every namespace named `PREFIX-*` (killing what still runs in it: only the script's
/// own processes can) and its /etc/netns directory, on every exit path including panics.
struct NamespaceGuard {
    prefix: String,
}

impl NamespaceGuard {
    fn leftovers(&self) -> Vec<String> {
        let Some(o) = output("ip", &["netns", "list"]) else {
            return Vec::new();
        };
        let start = format!("{}-", self.prefix);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&start))
            .map(str::to_string)
            .collect()
    }

    fn clean(&self) -> Vec<String> {
        let left = self.leftovers();
        for ns in &left {
            if let Some(o) = output("ip", &["netns", "pids", ns]) {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = output("kill", &["-KILL", pid]);
                }
            }
            let _ = output("ip", &["netns", "del", ns]);
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        left
    }
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let left = self.clean();
        if !left.is_empty() {
            eprintln!("e2e: removed namespaces left behind: {left:?}");
        }
    }
}

/// Runs the script in its own process group; on timeout, TERM (the script's trap cleans up),
/// then KILL. Returns the exit status, or `None` after a timeout.
fn run_script(script: &Path, bin: &str, prefix: &str, log: &Path) -> Option<ExitStatus> {
    use std::os::unix::process::CommandExt;
    let out = File::create(log).expect("create log file");
    let err = out.try_clone().expect("clone log file handle");
    let mut child = Command::new(script)
        .arg(bin)
        .env("PW_E2E_NS_PREFIX", prefix)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .expect("start the e2e script");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the e2e script") {
            return Some(status);
        }
        if started.elapsed() > timeout() {
            let group = format!("-{}", child.id());
            let _ = output("kill", &["-TERM", "--", &group]);
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(15) {
                if child.try_wait().ok().flatten().is_some() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = output("kill", &["-KILL", "--", &group]);
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `scripts/NAME` with namespaces named `TAG<pid>-*`; panics unless it prints PASS.
pub fn run(name: &str, tag: &str, bin: &str) {
    let prefix = format!("{tag}{}", std::process::id());
    if let Some(why) = missing_capability(&prefix) {
        panic!("{name} cannot run here: {why}");
    }
    let guard = NamespaceGuard {
        prefix: prefix.clone(),
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts").join(name);
    let log = std::env::temp_dir().join(format!("{prefix}-{name}.log"));
    let started = Instant::now();
    let status = run_script(&script, bin, &prefix, &log);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    println!("{text}");
    let _ = std::fs::remove_file(&log);
    let left = guard.clean();
    if !left.is_empty() {
        println!("{name}: removed namespaces the script left behind: {left:?}");
    }
    match status {
        None => panic!(
            "scripts/{name} did not finish within {} s",
            timeout().as_secs()
        ),
        Some(s) => assert!(
            s.success(),
            "scripts/{name} failed ({s}) after {:.0} s; its output is above",
            started.elapsed().as_secs_f64()
        ),
    }
    assert!(
        text.lines().any(|l| l.starts_with("PASS")),
        "scripts/{name} exited 0 without its PASS line"
    );
    assert!(
        left.is_empty(),
        "scripts/{name} left namespaces behind: {left:?}"
    );
}
