//! Step 3 of a commit — revision, store, index, events — with group
//! commit: concurrent commits share one fsynced store transaction.
//!
//! A commit that writes puts its change in the queue and starts a writer
//! task; the first writer to get the lock takes everything queued, numbers
//! it (one revision per change, in queue order), writes it as ONE redb
//! transaction on a blocking thread, then — in revision order — updates the
//! index, publishes the events and answers each waiting commit. Durability
//! is not weakened: a commit is answered only once the transaction holding
//! it is on disk, and if that transaction fails, every commit in it fails
//! (and each undoes its kernel work). The write runs in a task of its own,
//! so a caller that goes away (its client cancelled the RPC) stops neither
//! its own record nor the others' in the same transaction.
//!
//! Sequential commits each get a transaction of their own, as before.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;
use weft_store::{Store, StoreError};

use crate::change::Change;
use crate::events::{Events, now_ms};
use crate::index::{Index, State};
use crate::timings::{Phase, Timings};

/// A change waiting to be written, and who waits for its revision.
struct Entry {
    change: Arc<Change>,
    done: oneshot::Sender<Result<u64, StoreError>>,
}

/// The store side of the committer.
pub struct Recorder {
    store: Arc<dyn Store>,
    index: Arc<Index>,
    events: Arc<Events>,
    timings: Arc<Timings>,
    queue: Mutex<Vec<Entry>>,
    /// Held while one group is written and applied: groups are in order.
    writer: tokio::sync::Mutex<()>,
}

impl Recorder {
    /// A recorder over these parts.
    pub fn new(store: Arc<dyn Store>, index: Arc<Index>, events: Arc<Events>, timings: Arc<Timings>) -> Recorder {
        Recorder { store, index, events, timings, queue: Mutex::new(Vec::new()), writer: tokio::sync::Mutex::new(()) }
    }

    /// Record `change`: its revision once it is durable, in the index and
    /// published (the current revision if it writes nothing).
    pub async fn record(self: &Arc<Self>, change: Arc<Change>) -> Result<u64, StoreError> {
        if change.batch.writes_nothing() && change.events.is_empty() {
            // Kernel work only (a follow-up route): no record, no revision.
            apply_to_index(&mut self.index.lock(), &change, 0);
            return Ok(self.events.revision());
        }
        let (done, answer) = oneshot::channel();
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push(Entry { change, done });
        let me = self.clone();
        tokio::spawn(async move { me.write_group().await });
        answer.await.unwrap_or_else(|_| Err(StoreError { op: "commit".into(), reason: "the writer task ended".into() }))
    }

    /// Write everything queued as one transaction, then apply it in order.
    async fn write_group(&self) {
        let _one = self.writer.lock().await;
        let group = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        if group.is_empty() {
            // An earlier writer took this task's change with its own.
            return;
        }
        let first = self.events.revision() + 1;
        let time_ms = now_ms();
        let adding = group.iter().map(|e| e.change.events.len()).sum();
        // Trimming drops only retained events (all below `first`): once,
        // with the group's last change.
        let trim = self.events.trim_point(adding, first);
        let last = group.len() - 1;
        let mut batches = Vec::with_capacity(group.len());
        let mut numbered = Vec::with_capacity(group.len());
        for (k, e) in group.iter().enumerate() {
            let revision = first + k as u64;
            let events: Vec<_> = e
                .change
                .events
                .iter()
                .cloned()
                .map(|mut ev| {
                    ev.revision = revision;
                    ev.time_ms = time_ms;
                    ev
                })
                .collect();
            let mut batch = e.change.batch.clone();
            batch.revision = Some(revision);
            batch.events = events.clone();
            batch.trim_events_below = if k == last { trim } else { None };
            batches.push(batch);
            numbered.push(events);
        }
        let store = self.store.clone();
        let t = Instant::now();
        let written = tokio::task::spawn_blocking(move || store.commit_all(&batches))
            .await
            .unwrap_or_else(|e| Err(StoreError { op: "commit".into(), reason: format!("store thread: {e}") }));
        self.timings.commit.observe(t.elapsed().as_secs_f64());
        self.timings.record(Phase::StoreTxn, t.elapsed());
        if let Err(e) = written {
            for entry in group {
                let _ = entry.done.send(Err(e.clone()));
            }
            return;
        }
        for (k, (entry, events)) in group.into_iter().zip(numbered).enumerate() {
            let revision = first + k as u64;
            apply_to_index(&mut self.index.lock(), &entry.change, revision);
            self.events.publish(revision, events, if k == last { trim } else { None });
            let _ = entry.done.send(Ok(revision));
        }
    }
}

/// Put what `change` writes into `st` (the store batch, compiled policies,
/// the end of pending claims) at `revision` (0: a preview, revision kept).
pub fn apply_to_index(st: &mut State, change: &Change, revision: u64) {
    let b = &change.batch;
    for n in &change.new_networks {
        st.pending_networks.remove(&n.id);
    }
    for e in &change.new_endpoints {
        st.pending_endpoints.remove(&e.id);
    }
    for n in &b.put_networks {
        st.networks.insert(n.id.clone(), n.clone());
    }
    for id in &b.delete_networks {
        st.networks.remove(id);
        st.policies.remove(id);
    }
    for e in &b.put_endpoints {
        st.endpoints.insert(e.id.clone(), e.clone());
    }
    for id in &b.delete_endpoints {
        st.endpoints.remove(id);
    }
    for d in &b.put_documents {
        st.documents.insert(d.store_key(), d.clone());
    }
    for k in &b.delete_documents {
        st.documents.remove(k);
    }
    for m in &b.put_modules {
        st.modules.insert(m.store_key(), m.clone());
    }
    for k in &b.delete_modules {
        st.modules.remove(k);
    }
    for e in &change.remote_put {
        st.remote.insert(e.id.clone(), e.clone());
    }
    for id in &change.remote_delete {
        st.remote.remove(id);
    }
    for (id, p) in &change.policies {
        match p {
            Some(p) => st.policies.insert(id.clone(), p.clone()),
            None => st.policies.remove(id),
        };
    }
    if revision > 0 {
        st.revision = revision;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};

    use weft_model::event::{Event, EventKind, WatchItem};
    use weft_store::{Batch, Snapshot};

    use super::*;

    /// A store that holds its first transaction until released, and
    /// remembers how many changes each transaction carried.
    #[derive(Default)]
    struct Gate {
        sizes: Mutex<Vec<usize>>,
        open: Mutex<bool>,
        opened: Condvar,
    }

    impl Store for Gate {
        fn load(&self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        fn commit_all(&self, batches: &[Batch]) -> Result<(), StoreError> {
            self.sizes.lock().unwrap().push(batches.len());
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            Ok(())
        }
    }

    fn change(i: usize) -> Arc<Change> {
        let mut c = Change::new(format!("change {i}"));
        c.events.push(Event::new(EventKind::EndpointAttached, "", "n", &format!("e{i}")));
        Arc::new(c)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_waiting_on_a_transaction_share_the_next_and_keep_their_order() {
        let gate = Arc::new(Gate::default());
        let events = Arc::new(Events::new(Vec::new(), 0));
        let index = Arc::new(Index::default());
        let r = Arc::new(Recorder::new(gate.clone(), index.clone(), events.clone(), Arc::default()));
        let sub = crate::events::Subscription { tenant: "default".into(), from: 0, network: None, kinds: None };
        let mut feed = events.watch(sub).unwrap();
        let first = tokio::spawn({
            let r = r.clone();
            async move { r.record(change(0)).await }
        });
        // Wait until the first transaction is being written (and held).
        while gate.sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = (1..=10)
            .map(|i| {
                let r = r.clone();
                tokio::spawn(async move { r.record(change(i)).await })
            })
            .collect();
        while r.queue.lock().unwrap().len() < 10 {
            tokio::task::yield_now().await;
        }
        assert!(!first.is_finished(), "not answered before it is durable");
        *gate.open.lock().unwrap() = true;
        gate.opened.notify_all();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        let mut revisions = Vec::new();
        for t in rest {
            revisions.push(t.await.unwrap().unwrap());
        }
        revisions.sort_unstable();
        assert_eq!(revisions, (2..=11).collect::<Vec<u64>>(), "one revision each");
        assert_eq!(*gate.sizes.lock().unwrap(), vec![1, 10], "the ten waiting shared one transaction");
        assert_eq!(index.lock().revision, 11);
        let mut published = Vec::new();
        while published.len() < 11 {
            match futures::StreamExt::next(&mut feed).await {
                Some(Ok(WatchItem::Event(e))) => published.push(e.revision),
                Some(Ok(WatchItem::Heartbeat(_))) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(published, (1..=11).collect::<Vec<u64>>(), "published in revision order");
    }
}
