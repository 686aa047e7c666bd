//! Where the time of attach and detach goes, phase by phase (validation,
//! store, each Wasm decision, netlink, nftables, DNS): lock-free counters
//! every request adds to, read by `SystemService.GetStats` (`weft stats`)
//! and by the benchmark's breakdown; the whole attach and detach, and every
//! store commit, also as latency histograms (the metrics). Also the
//! process's own memory and CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use weft_model::api::PhaseStat;

/// A timed phase of the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The whole attach, as the client waits for it (minus transport).
    Attach,
    /// Request validation and the namespace check.
    AttachValidate,
    /// The policy component's `classify`.
    AttachClassify,
    /// The IPAM component's `allocate` (one per subnet).
    AttachIpam,
    /// The naming component's `names`.
    AttachNaming,
    /// Store writes (intent, then the result).
    AttachStore,
    /// Links, addresses and routes (netlink).
    AttachNetlink,
    /// The endpoint's nftables elements.
    AttachNft,
    /// DNS table update.
    AttachDns,
    /// The whole detach.
    Detach,
    /// Removing the endpoint's nftables elements.
    DetachNft,
    /// Deleting its links.
    DetachNetlink,
    /// Removing its record.
    DetachStore,
    /// Cluster mode: one etcd transaction of a change.
    ClusterTxn,
    /// One store transaction (holding one commit, or a group of them).
    StoreTxn,
}

/// Each phase's name, in `Phase` order (the counters are indexed by
/// `Phase as usize`).
const NAMES: [&str; 15] = [
    "attach",
    "attach.validate",
    "attach.wasm.classify",
    "attach.wasm.ipam",
    "attach.wasm.naming",
    "attach.store",
    "attach.netlink",
    "attach.nft",
    "attach.dns",
    "detach",
    "detach.nft",
    "detach.netlink",
    "detach.store",
    "cluster.etcd_txn",
    "store.txn",
];

#[derive(Default)]
struct Counter {
    count: AtomicU64,
    total_ns: AtomicU64,
    max_ns: AtomicU64,
}

/// Per-phase counters since start.
pub struct Timings {
    counters: [Counter; NAMES.len()],
    /// Whole attaches, in seconds.
    pub attach: Histogram,
    /// Whole detaches, in seconds.
    pub detach: Histogram,
    /// Store commits (one redb write transaction each), in seconds.
    pub commit: Histogram,
}

/// Latency buckets: 100 µs doubling to 3.3 s.
pub fn latency_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1e-4, 2.0, 16))
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            counters: Default::default(),
            attach: latency_buckets(),
            detach: latency_buckets(),
            commit: latency_buckets(),
        }
    }
}

impl Timings {
    /// Add one run of `p` that took `d`.
    pub fn record(&self, p: Phase, d: Duration) {
        let c = &self.counters[p as usize];
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        c.count.fetch_add(1, Ordering::Relaxed);
        c.total_ns.fetch_add(ns, Ordering::Relaxed);
        c.max_ns.fetch_max(ns, Ordering::Relaxed);
        match p {
            Phase::Attach => self.attach.observe(d.as_secs_f64()),
            Phase::Detach => self.detach.observe(d.as_secs_f64()),
            _ => {}
        }
    }

    /// Run `f`, recording its time under `p`.
    pub fn time<T>(&self, p: Phase, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.record(p, t.elapsed());
        out
    }

    /// Every phase, in path order.
    pub fn snapshot(&self) -> Vec<PhaseStat> {
        NAMES
            .iter()
            .zip(&self.counters)
            .map(|(name, c)| PhaseStat {
                name: (*name).to_owned(),
                count: c.count.load(Ordering::Relaxed),
                total_us: c.total_ns.load(Ordering::Relaxed) / 1000,
                max_us: c.max_ns.load(Ordering::Relaxed) / 1000,
            })
            .collect()
    }
}

/// This process's resident set size (bytes) and user/system CPU time (ms),
/// from /proc/self; zeros for what cannot be read.
pub fn process_usage() -> (u64, u64, u64) {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/self/{f}")).unwrap_or_default();
    usage_from(&read("status"), &read("stat"))
}

/// RSS (bytes), user and system CPU (ms) from the text of /proc/PID/status
/// and /proc/PID/stat.
fn usage_from(status: &str, stat: &str) -> (u64, u64, u64) {
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0u64);
    // After the command name (which may hold spaces and parentheses): utime
    // and stime are the 12th and 13th fields, in ticks of USER_HZ (100).
    let (user, system) = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| {
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<u64>().ok()?, f.get(12)?.parse::<u64>().ok()?))
        })
        .unwrap_or((0, 0));
    (rss_kib * 1024, user * 10, system * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_and_keep_their_maximum() {
        let t = Timings::default();
        t.record(Phase::AttachIpam, Duration::from_micros(30));
        t.record(Phase::AttachIpam, Duration::from_micros(70));
        let s = t.snapshot();
        let ipam = s.iter().find(|p| p.name == "attach.wasm.ipam").expect("phase listed");
        assert_eq!((ipam.count, ipam.total_us, ipam.max_us), (2, 100, 70));
        assert_eq!(s.len(), NAMES.len());
        assert_eq!(NAMES[Phase::DetachStore as usize], "detach.store");
        assert!(s.iter().filter(|p| p.name != "attach.wasm.ipam").all(|p| p.count == 0));
    }

    #[test]
    fn usage_is_read_from_proc() {
        assert!(process_usage().0 > 0);
        let stat = "42 (weft d) S 1 42 42 0 -1 4194560 900 0 0 0 37 12 0 0 20 0 9 0 100 0 0";
        assert_eq!(usage_from("Name:\tweftd\nVmRSS:\t   34000 kB\n", stat), (34000 * 1024, 370, 120));
        assert_eq!(usage_from("", ""), (0, 0, 0));
    }
}
