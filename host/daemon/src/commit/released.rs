//! An attach that lets go of its network's lock before its store step, so
//! that attaches to one network overlap: the next one decides and does its
//! kernel work while this one's record is made durable, and concurrent
//! attaches share store transactions (`record.rs`).
//!
//! What the lock guarded until the record is kept by other means:
//! - the addresses: the attach's leases go into the network's lease view
//!   before the lock is let go (and are taken back under it if the record
//!   fails);
//! - its name and request key: the endpoint is a pending claim in the
//!   index, and an attach that finds a pending endpoint of the same name
//!   or key on its network waits for it to settle first
//!   (`controller.rs`);
//! - everything else that reads the index whole: from its kernel work to
//!   its record the attach holds `flight` shared; a whole-table render
//!   and every lock of a network but an attach's (`locks.rs`) wait until
//!   no commit holds it, so none of them sees the kernel ahead of the
//!   index.
//!
//! A crash in the window is the crash between kernel work and record that
//! reconcile already undoes (an orphan veth, deleted at start). Only plain
//! attaches qualify: no whole-table render, no cluster transaction, no
//! retired link.

use std::sync::Arc;

use weft_plan::Op;

use super::{CommitError, Committer, apply_leases};
use crate::change::Change;
use crate::locks::NetGuard;

impl Committer {
    /// Whether `change` may be committed by [`Committer::commit_released`].
    pub fn releasable(change: &Change) -> bool {
        !change.render_nft && change.cluster.is_none() && !change.ops.iter().any(|o| matches!(o, Op::RetireLink { .. }))
    }

    /// Commit `change` (see [`Committer::releasable`]) holding `guard`,
    /// its network's lock, only until its kernel work is done.
    pub async fn commit_released(&self, change: Change, mut guard: NetGuard) -> Result<u64, CommitError> {
        if change.is_empty() {
            return Ok(self.events.revision());
        }
        let change = Arc::new(change);
        self.claim(&change)?;
        self.settle_namespaces(&change).await;
        let shared = self.flight.clone().read_owned().await;
        if let Err(e) = self.apply_ops(&change).await {
            drop(shared);
            self.release_claims(&change);
            return Err(CommitError::Kernel(e));
        }
        apply_leases(&mut guard, &change, false);
        let lock = tokio::sync::OwnedMutexGuard::mutex(&guard).clone();
        drop(guard);
        match self.record(&change).await {
            Ok(revision) => {
                // Before letting go: a detach of this endpoint waits for
                // it, so its names cannot outlive it.
                self.dns_step(&change).await;
                drop(shared);
                Ok(revision)
            }
            Err(e) => {
                self.undo(&change.ops).await;
                // Let go first: a settle waiting under this network's lock
                // would otherwise wait for this commit forever.
                drop(shared);
                apply_leases(&mut *lock.lock_owned().await, &change, true);
                self.release_claims(&change);
                Err(CommitError::Store(e))
            }
        }
    }

    /// Wait until no commit is between its kernel work and its record.
    pub async fn settle(&self) {
        crate::locks::settle(&self.flight).await;
    }

    /// The lock [`Committer::settle`] takes, for the network locks.
    pub fn flight(&self) -> Arc<tokio::sync::RwLock<()>> {
        self.flight.clone()
    }
}
