//! Retired links: the deferred half of a detach.
//!
//! Deleting a network device waits out RCU grace periods in the kernel
//! (~16 ms for one veth pair here), and a detach used to pay it alone. Now a
//! detach *retires* the endpoint's host veth (`Op::RetireLink`: down — no
//! traffic in or out from that moment — and moved into weft's link group)
//! and returns; this deletes every retired link of weftd's namespace in
//! one call (`Op::DeleteRetired`) shortly after, so the kernel waits once
//! for all of them (100 veth pairs: ~60 ms in one call against ~1.6 s one
//! by one).
//!
//! Two rules keep this invisible:
//! - an attach into a namespace that has a retired, not yet deleted veth
//!   (whose container end still holds its interface name there) deletes the
//!   retired links first ([`Retired::settle`]), and so does a detach that
//!   moves its namespace's default route to another endpoint there;
//! - a crash leaves retired links in the kernel, where the group marks
//!   them: every reconcile pass — the one at start first — deletes the
//!   group ([`Retired::reap_all`]), and reconcile never counts a retired
//!   link as an orphan of its bridge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;
use weft_kernel::KernelApi;
use weft_plan::Op;

/// The deletion waits until no link was retired for this long: a burst of
/// detaches (a node drain, a churn of pods) shares one deletion, and the
/// deletion — which holds the kernel's RTNL lock throughout, ~0.3 ms per
/// link — does not stall the detaches of the burst.
const QUIET: Duration = Duration::from_millis(25);
/// ... but no longer than this after the first retirement, so a retired
/// link is gone within a second even in an endless stream of detaches.
const MAX_WAIT: Duration = Duration::from_millis(500);

/// The retired links waiting for deletion, by the namespace their
/// container end is in.
pub struct Retired {
    kernel: Arc<dyn KernelApi>,
    /// Retirements not yet known deleted, per namespace identity (nsfs
    /// inode; 0 when unknown), and when the last one was noted.
    pending: Mutex<(HashMap<u64, u64>, Option<Instant>)>,
    wake: tokio::sync::Notify,
    /// One deletion at a time.
    reaping: tokio::sync::Mutex<()>,
}

impl Retired {
    /// Nothing retired yet.
    pub fn new(kernel: Arc<dyn KernelApi>) -> Retired {
        Retired {
            kernel,
            pending: Mutex::new((HashMap::new(), None)),
            wake: tokio::sync::Notify::new(),
            reaping: tokio::sync::Mutex::new(()),
        }
    }

    /// Links were retired, their container ends in `netns_ids`: delete
    /// them soon. Called after the retirement's kernel op.
    pub fn retired(&self, netns_ids: impl IntoIterator<Item = u64>) {
        {
            let mut p = self.lock();
            for id in netns_ids {
                *p.0.entry(id).or_default() += 1;
            }
            p.1 = Some(Instant::now());
        }
        self.wake.notify_one();
    }

    /// Before more work in namespace `netns_id` (an attach, moving the
    /// default route): if a retired link's container end may still be
    /// there — holding its name, its addresses and its routes — delete the
    /// retired links now.
    pub async fn settle(&self, netns_id: u64) {
        if netns_id != 0 && self.lock().0.contains_key(&netns_id) {
            self.reap(false).await;
        }
    }

    /// Delete every retired link, whether or not this weftd retired it
    /// (a crash leaves them in the group).
    pub async fn reap_all(&self) {
        self.reap(true).await;
    }

    /// One deletion of the group. `always`: even with nothing noted.
    async fn reap(&self, always: bool) {
        let _one = self.reaping.lock().await;
        // What is noted now was retired before this deletion starts, so
        // the deletion takes it; later retirements wait for the next.
        let taken = self.lock().0.clone();
        if taken.is_empty() && !always {
            return;
        }
        if let Err(e) = self.kernel.apply(&[Op::DeleteRetired]).await {
            warn!(error = %e, "deleting retired links; the next reconcile pass retries");
            return;
        }
        let mut p = self.lock();
        for (id, n) in taken {
            if let Some(left) = p.0.get_mut(&id) {
                *left = left.saturating_sub(n);
                if *left == 0 {
                    p.0.remove(&id);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<u64, u64>, Option<Instant>)> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delete what is retired once retirements pause (or 500 ms after the
    /// first of them), until weftd stops.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.wake.notified().await;
                let first = Instant::now();
                loop {
                    let last = self.lock().1.unwrap_or(first);
                    let wait = QUIET.saturating_sub(last.elapsed()).min(MAX_WAIT.saturating_sub(first.elapsed()));
                    if wait.is_zero() {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                }
                self.reap(false).await;
            }
        })
    }
}
