//! Where the time of attach and detach goes, phase by phase (validation,
//! store, each Wasm decision, netlink, nftables, DNS): lock-free counters
//! every request adds to, read by `SystemService.GetStats` (`weft stats`)
//! and by the benchmark's breakdown. Also the process's own memory and CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
}

const PHASES: [(Phase, &str); 13] = [
    (Phase::Attach, "attach"),
    (Phase::AttachValidate, "attach.validate"),
    (Phase::AttachClassify, "attach.wasm.classify"),
    (Phase::AttachIpam, "attach.wasm.ipam"),
    (Phase::AttachNaming, "attach.wasm.naming"),
    (Phase::AttachStore, "attach.store"),
    (Phase::AttachNetlink, "attach.netlink"),
    (Phase::AttachNft, "attach.nft"),
    (Phase::AttachDns, "attach.dns"),
    (Phase::Detach, "detach"),
    (Phase::DetachNft, "detach.nft"),
    (Phase::DetachNetlink, "detach.netlink"),
    (Phase::DetachStore, "detach.store"),
];

#[derive(Default)]
struct Counter {
    count: AtomicU64,
    total_ns: AtomicU64,
    max_ns: AtomicU64,
}

/// Per-phase counters since start.
#[derive(Default)]
pub struct Timings {
    counters: [Counter; PHASES.len()],
}

fn index(p: Phase) -> usize {
    PHASES.iter().position(|(q, _)| *q == p).unwrap_or(0)
}

impl Timings {
    /// Add one run of `p` that took `d`.
    pub fn record(&self, p: Phase, d: Duration) {
        let c = &self.counters[index(p)];
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        c.count.fetch_add(1, Ordering::Relaxed);
        c.total_ns.fetch_add(ns, Ordering::Relaxed);
        c.max_ns.fetch_max(ns, Ordering::Relaxed);
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
        PHASES
            .iter()
            .zip(&self.counters)
            .map(|((_, name), c)| PhaseStat {
                name: (*name).to_owned(),
                count: c.count.load(Ordering::Relaxed),
                total_us: c.total_ns.load(Ordering::Relaxed) / 1000,
                max_us: c.max_ns.load(Ordering::Relaxed) / 1000,
            })
            .collect()
    }
}

/// This process's resident set size (bytes) and user/system CPU time (ms),
/// from /proc/self.
pub fn process_usage() -> (u64, u64, u64) {
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0u64);
    // After the command name: utime and stime are the 12th and 13th fields,
    // in clock ticks of USER_HZ (100 on Linux).
    let (user, system) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
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
        assert_eq!(s.len(), PHASES.len());
        assert!(s.iter().filter(|p| p.name != "attach.wasm.ipam").all(|p| p.count == 0));
    }

    #[test]
    fn usage_is_read_from_proc() {
        let (rss, user, system) = process_usage();
        assert!(rss > 0);
        // A test process has run a little already; the counters parse.
        let _ = (user, system);
    }
}
