//! Counts what a live capture delivers: the smallest complete use of `capture::live` and
//! `privs` (open, drop privileges, read with timeouts, statistics), and a rough rate meter.
//!
//! cargo run --release --example live_count -- IFACE [BPF] [SECONDS] [USER]

use std::time::{Duration, Instant};

use pinwatch::capture::live::{LiveCapture, LiveOptions};
use pinwatch::privs::{self, ProcStatus};

fn main() {
    if let Err(e) = run() {
        eprintln!("live_count: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(iface) = args.first() else {
        return Err("usage: live_count IFACE [BPF] [SECONDS] [USER]".into());
    };
    let mut opts = LiveOptions::new(iface.as_str());
    opts.bpf = args.get(1).filter(|f| !f.is_empty()).cloned();
    let seconds: u64 = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let mut cap = LiveCapture::open(&opts)?;
    if let Some(user) = args.get(3) {
        privs::drop_privileges(user)?;
    }
    eprintln!(
        "capturing on {} (linktype {}), {}",
        cap.iface(),
        cap.linktype(),
        ProcStatus::current()?.summary()
    );

    let (mut frames, mut bytes, mut tcp) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let run_for = Duration::from_secs(seconds);
    while started.elapsed() < run_for {
        let Some(frame) = cap.next_frame()? else {
            continue;
        };
        frames += 1;
        bytes += u64::from(frame.orig_len);
        tcp += u64::from(pinwatch::decode::decode(frame.linktype, frame.data).is_ok());
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = cap.stats()?;
    println!(
        "{frames} frames ({tcp} TCP), {:.0} frames/s, {:.2} Gbit/s on the wire; \
         libpcap received {} dropped_kernel {} dropped_iface {}",
        frames as f64 / secs,
        bytes as f64 * 8.0 / secs / 1e9,
        stats.received,
        stats.dropped_kernel,
        stats.dropped_iface
    );
    Ok(())
}
