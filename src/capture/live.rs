//! Live capture from a network interface through libpcap (cargo feature `live`, Unix). Yields
//! the same [`Frame`]s as the file reader, so everything downstream of capture is shared.
//!
//! Latency and throughput: by default the kernel batches packets into blocks (Linux
//! TPACKET_V3) and hands a block over when it is full or when `timeout_ms` has passed, so a
//! packet waits at most `timeout_ms` before pinwatch sees it. Immediate mode hands over every
//! packet at once but uses one snap-length slot per packet, so the same buffer holds far fewer
//! packets and drops come sooner under load; pinwatch classifies whole connections, so a
//! bounded 100 ms delay costs nothing and batching is the default.
//!
//! Waiting: with TPACKET_V3 libpcap's blocking read never times out on an idle link (an empty
//! block is not handed over), so the handle is non-blocking and [`LiveCapture::next_frame`]
//! waits on the descriptor itself with `poll(2)`, which does return after `timeout_ms`.

use std::ffi::{c_int, c_void};
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};

use pcap::{Active, Capture, Device, Precision};

use super::Frame;
use crate::decode::linktype;

/// libpcap's own ceiling for a snap length (MAXIMUM_SNAPLEN).
pub const MAX_SNAPLEN: u32 = 262_144;
/// `pcap_set_buffer_size` takes the size in bytes as a C int.
pub const MAX_BUFFER_MB: u32 = 2047;
/// Longest read timeout accepted: longer ones would delay shutdown and ticks for no gain.
pub const MAX_TIMEOUT_MS: u32 = 60_000;

/// libpcap's PCAP_TSTAMP_PRECISION_NANO.
const PRECISION_NANO: c_int = 1;

unsafe extern "C" {
    // Not wrapped by the `pcap` crate; libpcap >= 1.5 (the crate already links the library).
    fn pcap_get_tstamp_precision(p: *mut c_void) -> c_int;
}

/// How to open a live capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveOptions {
    /// Interface name as libpcap knows it (`eth0`, `lo`, `any`).
    pub iface: String,
    /// BPF filter expression (`man pcap-filter`), compiled by libpcap and run in the kernel.
    pub bpf: Option<String>,
    /// Bytes kept per packet, 1..=262144.
    pub snaplen: u32,
    /// Kernel capture buffer in MiB, 1..=2047. Bursts larger than this are dropped (and counted
    /// in [`LiveStats::dropped_kernel`]).
    pub buffer_mb: u32,
    /// Put the interface in promiscuous mode (needed on a mirror/SPAN port).
    pub promisc: bool,
    /// Longest wait for a packet before [`LiveCapture::next_frame`] returns `Ok(None)`, and the
    /// longest a packet waits in the kernel; 1..=60000.
    pub timeout_ms: u32,
    /// Deliver each packet as soon as it arrives (see the module notes for the cost).
    pub immediate: bool,
}

impl LiveOptions {
    /// Defaults suited to a sensor: whole packets, 32 MiB buffer, promiscuous, 100 ms timeout.
    pub fn new(iface: impl Into<String>) -> Self {
        LiveOptions {
            iface: iface.into(),
            bpf: None,
            snaplen: MAX_SNAPLEN,
            buffer_mb: 32,
            promisc: true,
            timeout_ms: 100,
            immediate: false,
        }
    }

    fn validate(&self) -> Result<(), LiveError> {
        let check = |ok: bool, what: String| {
            if ok {
                Ok(())
            } else {
                Err(LiveError::BadOption(what))
            }
        };
        check(!self.iface.is_empty(), "the interface name is empty".into())?;
        check(
            (1..=MAX_SNAPLEN).contains(&self.snaplen),
            format!("snaplen {} is outside 1..={MAX_SNAPLEN}", self.snaplen),
        )?;
        check(
            (1..=MAX_BUFFER_MB).contains(&self.buffer_mb),
            format!(
                "buffer of {} MiB is outside 1..={MAX_BUFFER_MB}",
                self.buffer_mb
            ),
        )?;
        check(
            (1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms),
            format!(
                "timeout of {} ms is outside 1..={MAX_TIMEOUT_MS}",
                self.timeout_ms
            ),
        )
    }
}

/// Why a live capture could not be opened or read. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("no network interface `{iface}` to capture on; {}", choices(.available))]
    UnknownInterface {
        iface: String,
        available: Vec<String>,
    },
    #[error(
        "not allowed to capture on `{iface}` ({message}): run as root, or grant the capability \
         once with `setcap cap_net_raw,cap_net_admin=eip {binary}`"
    )]
    PermissionDenied {
        iface: String,
        binary: String,
        message: String,
    },
    #[error("invalid BPF filter `{filter}`: {message} (syntax: `man pcap-filter`)")]
    BadFilter { filter: String, message: String },
    #[error("invalid capture option: {0}")]
    BadOption(String),
    #[error("cannot capture on `{iface}`: {message}")]
    Open { iface: String, message: String },
    #[error("capture on `{iface}` failed: {message}")]
    Read { iface: String, message: String },
    #[error("cannot read capture statistics of `{iface}`: {message}")]
    Stats { iface: String, message: String },
}

fn choices(available: &[String]) -> String {
    if available.is_empty() {
        "libpcap lists none: check `ip link` and the permissions above".to_string()
    } else {
        format!("choose one of: {}", available.join(", "))
    }
}

/// libpcap's own text, without the `pcap` crate's "libpcap error: " prefix.
fn libpcap_message(err: &pcap::Error) -> String {
    match err {
        pcap::Error::PcapError(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Packet counters since the capture was opened (`pcap_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Packets that passed the filter and reached the capture buffer (Linux semantics). On `lo`
    /// the kernel counts each packet twice (sent and received) while pinwatch gets it once.
    pub received: u64,
    /// Packets the kernel dropped because the buffer was full: pinwatch did not keep up.
    pub dropped_kernel: u64,
    /// Packets the interface or its driver dropped before capture saw them.
    pub dropped_iface: u64,
}

/// libpcap keeps 32-bit counters that wrap on a busy link; this widens one to 64 bits by adding
/// the difference between successive readings.
#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    last: u32,
    total: u64,
}

impl Counter {
    fn update(&mut self, now: u32) -> u64 {
        let delta = now.wrapping_sub(self.last);
        // A huge "increase" is a counter that went backwards (the driver reset it), not a wrap
        // between two readings: take the new value as the base instead of adding ~4 billion.
        if delta <= u32::MAX / 2 {
            self.total += u64::from(delta);
        }
        self.last = now;
        self.total
    }
}

/// An open live capture. `Send`, so it can live on a capture thread.
pub struct LiveCapture {
    cap: Capture<Active>,
    iface: String,
    linktype: i32,
    /// Nanoseconds per unit of the packet header's sub-second field.
    ns_per_unit: i64,
    timeout_ms: u16,
    /// The last read found libpcap's buffer empty: wait on the descriptor before reading again.
    drained: bool,
    counters: [Counter; 3],
}

impl std::fmt::Debug for LiveCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCapture")
            .field("iface", &self.iface)
            .field("linktype", &self.linktype)
            .field("nanosecond_timestamps", &self.nanosecond_timestamps())
            .finish()
    }
}

impl LiveCapture {
    /// Opens and activates the interface, then installs the filter. Needs CAP_NET_RAW (root or
    /// `setcap`); privileges can be dropped right after (see `crate::privs`): the open handle
    /// keeps working.
    pub fn open(opts: &LiveOptions) -> Result<Self, LiveError> {
        opts.validate()?;
        let open_error = |e: pcap::Error| classify_open_error(&opts.iface, &e);
        let mut cap = Capture::from_device(opts.iface.as_str())
            .map_err(open_error)?
            .snaplen(opts.snaplen as i32)
            .buffer_size((opts.buffer_mb << 20) as i32)
            .promisc(opts.promisc)
            .timeout(opts.timeout_ms as i32)
            .immediate_mode(opts.immediate)
            // Falls back to microseconds where the platform cannot do better; checked below.
            .precision(Precision::Nano)
            .open()
            .and_then(Capture::setnonblock)
            .map_err(open_error)?;
        if let Some(filter) = &opts.bpf {
            cap.filter(filter, true).map_err(|e| LiveError::BadFilter {
                filter: filter.clone(),
                message: libpcap_message(&e),
            })?;
        }
        // SAFETY: the handle is valid and activated for as long as `cap` lives.
        let precision = unsafe { pcap_get_tstamp_precision(cap.as_ptr().cast()) };
        let linktype = dlt_to_linktype(cap.get_datalink().0);
        Ok(LiveCapture {
            cap,
            iface: opts.iface.clone(),
            linktype,
            ns_per_unit: if precision == PRECISION_NANO { 1 } else { 1000 },
            // validate() bounds it to MAX_TIMEOUT_MS, which fits.
            timeout_ms: opts.timeout_ms.min(MAX_TIMEOUT_MS) as u16,
            drained: true,
            counters: [Counter::default(); 3],
        })
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// LINKTYPE_* of every frame this capture yields.
    pub fn linktype(&self) -> i32 {
        self.linktype
    }

    /// Whether timestamps carry nanoseconds (else microseconds, scaled to nanoseconds).
    pub fn nanosecond_timestamps(&self) -> bool {
        self.ns_per_unit == 1
    }

    /// The next frame; `Ok(None)` when none arrived within the read timeout (or a signal
    /// interrupted the wait), so the caller can check for signals and run its timers before
    /// calling again.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, LiveError> {
        // Only an empty libpcap buffer makes waiting on the descriptor meaningful: a block
        // libpcap is still working through does not show up as readable.
        if self.drained && !self.wait_readable()? {
            return Ok(None);
        }
        match self.cap.next_packet() {
            Ok(packet) => {
                self.drained = false;
                let ts_ns = timeval_ns(&packet.header.ts, self.ns_per_unit);
                Ok(Some(Frame {
                    ts_ns,
                    linktype: self.linktype,
                    data: packet.data,
                    orig_len: packet.header.len,
                    flow_hash: None,
                }))
            }
            // A non-blocking handle says "nothing buffered" this way.
            Err(pcap::Error::TimeoutExpired) => {
                self.drained = true;
                Ok(None)
            }
            Err(e) => Err(read_error(&self.iface, libpcap_message(&e))),
        }
    }

    /// Waits up to the timeout for the kernel to hand over packets; false on timeout or signal.
    fn wait_readable(&self) -> Result<bool, LiveError> {
        let mut fds = [PollFd::new(self.cap.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, self.timeout_ms) {
            Ok(ready) => Ok(ready > 0),
            Err(Errno::EINTR) => Ok(false),
            Err(e) => Err(read_error(&self.iface, format!("poll: {e}"))),
        }
    }

    /// Counters since the capture was opened. Call it now and then (each reading also keeps
    /// the 64-bit totals correct across libpcap's 32-bit wrap).
    pub fn stats(&mut self) -> Result<LiveStats, LiveError> {
        let raw = self.cap.stats().map_err(|e| LiveError::Stats {
            iface: self.iface.clone(),
            message: libpcap_message(&e),
        })?;
        let [received, dropped, if_dropped] = &mut self.counters;
        Ok(LiveStats {
            received: received.update(raw.received),
            dropped_kernel: dropped.update(raw.dropped),
            dropped_iface: if_dropped.update(raw.if_dropped),
        })
    }
}

/// Nanoseconds since the epoch from a packet header's time. The fields are 32 bits on some
/// targets, so the widening that clippy calls useless on 64-bit Linux is kept.
#[allow(clippy::useless_conversion)]
fn timeval_ns(ts: &nix::libc::timeval, ns_per_unit: i64) -> i64 {
    i64::from(ts.tv_sec)
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(ts.tv_usec).saturating_mul(ns_per_unit))
}

fn read_error(iface: &str, message: String) -> LiveError {
    LiveError::Read {
        iface: iface.to_string(),
        message,
    }
}

/// Names of the interfaces libpcap can capture on, for `--list` style output and error hints.
pub fn interfaces() -> Result<Vec<String>, LiveError> {
    Device::list()
        .map(|devices| devices.into_iter().map(|d| d.name).collect())
        .map_err(|e| LiveError::Open {
            iface: "(listing interfaces)".into(),
            message: libpcap_message(&e),
        })
}

/// libpcap reports open failures as text only (the `pcap` crate drops the status code), so
/// the kind is recovered from the interface list and the standard wording of the messages.
fn classify_open_error(iface: &str, err: &pcap::Error) -> LiveError {
    let message = libpcap_message(err);
    let available = interfaces().unwrap_or_default();
    let listed = available.iter().any(|name| name == iface);
    if (!available.is_empty() && !listed) || message.contains("No such device") {
        return LiveError::UnknownInterface {
            iface: iface.to_string(),
            available,
        };
    }
    let lower = message.to_ascii_lowercase();
    if ["permission", "not permitted", "cap_net_raw"]
        .iter()
        .any(|hint| lower.contains(hint))
    {
        let binary = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "<path to pinwatch>".into());
        return LiveError::PermissionDenied {
            iface: iface.to_string(),
            binary,
            message,
        };
    }
    LiveError::Open {
        iface: iface.to_string(),
        message,
    }
}

/// `pcap_datalink` returns a DLT_* value; frames carry LINKTYPE_* values as in files. They are
/// equal except for a few historical codes, of which only raw IP matters here.
fn dlt_to_linktype(dlt: i32) -> i32 {
    const DLT_RAW: i32 = if cfg!(target_os = "openbsd") { 14 } else { 12 };
    if dlt == DLT_RAW { linktype::RAW } else { dlt }
}

// The pipeline moves the capture onto its own thread.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<LiveCapture>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_widens_across_the_32_bit_wrap() {
        let mut c = Counter::default();
        assert_eq!(c.update(10), 10);
        assert_eq!(c.update(1 << 31), 1 << 31);
        assert_eq!(c.update(u32::MAX - 5), u64::from(u32::MAX) - 5);
        // libpcap's counter wrapped: 6 to reach zero, then 20 more.
        assert_eq!(c.update(20), u64::from(u32::MAX) + 21);
    }

    #[test]
    fn counter_that_goes_backwards_is_rebased_not_added() {
        let mut c = Counter::default();
        c.update(1000);
        assert_eq!(c.update(400), 1000);
        assert_eq!(c.update(450), 1050);
    }

    #[test]
    fn options_out_of_range_are_refused_before_touching_libpcap() {
        let mut o = LiveOptions::new("lo");
        o.snaplen = 0;
        assert!(
            matches!(LiveCapture::open(&o), Err(LiveError::BadOption(m)) if m.contains("snaplen"))
        );
        let mut o = LiveOptions::new("lo");
        o.buffer_mb = 4096;
        assert!(
            matches!(LiveCapture::open(&o), Err(LiveError::BadOption(m)) if m.contains("buffer"))
        );
        let mut o = LiveOptions::new("lo");
        o.timeout_ms = 0;
        assert!(
            matches!(LiveCapture::open(&o), Err(LiveError::BadOption(m)) if m.contains("timeout"))
        );
    }

    #[test]
    fn raw_ip_dlt_becomes_linktype_raw() {
        assert_eq!(dlt_to_linktype(12), linktype::RAW);
        assert_eq!(dlt_to_linktype(1), linktype::ETHERNET);
        assert_eq!(dlt_to_linktype(276), linktype::LINUX_SLL2);
    }
}
