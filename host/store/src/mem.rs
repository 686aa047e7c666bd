//! An in-memory [`ClusterStore`] with etcd's semantics where weft relies on
//! them: one revision per transaction, compare on absence and on the
//! revision a key was last written at, keys under leases, an ordered watch
//! from any revision. It can be taken down ([`MemCluster::set_down`]: every
//! call fails as unavailable) and a lease expired by hand
//! ([`MemCluster::expire`]), so the controller's cluster logic is unit
//! tested on fake-kernel nodes without root or etcd. The real store is
//! [`crate::etcd::Etcd`]; the end-to-end tests run that one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::etcd::{ClusterError, ClusterStore, Cmp, Kv, Seen, Txn, WatchItem};

#[derive(Default)]
struct State {
    revision: i64,
    /// key -> (value, mod revision, lease).
    keys: BTreeMap<String, (Vec<u8>, i64, Option<i64>)>,
    /// Every change, in revision order.
    history: Vec<(i64, Seen)>,
    /// Leases granted and not expired.
    leases: BTreeMap<i64, Duration>,
    next_lease: i64,
    down: bool,
}

/// The in-memory cluster store (shared by the nodes of a unit test).
pub struct MemCluster {
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<i64>,
}

impl MemCluster {
    /// An empty store.
    pub fn new() -> Arc<MemCluster> {
        Arc::new(MemCluster { state: Mutex::default(), changed: tokio::sync::watch::channel(0).0 })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, ClusterError> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.down { Err(ClusterError::Unavailable("etcd (in memory) is down".into())) } else { Ok(st) }
    }

    /// Take the store down (every call fails, watches end) or back up.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).down = down;
        self.changed.send_modify(|_| {});
    }

    /// Expire lease `id` now: its keys are deleted, as etcd does.
    pub fn expire(&self, id: i64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.leases.remove(&id);
        let gone: Vec<String> = st.keys.iter().filter(|(_, v)| v.2 == Some(id)).map(|(k, _)| k.clone()).collect();
        if gone.is_empty() {
            return;
        }
        st.revision += 1;
        let rev = st.revision;
        for k in gone {
            let prev = st.keys.remove(&k).map(|v| v.0);
            st.history.push((rev, Seen::Delete(k, prev)));
        }
        drop(st);
        self.changed.send_replace(rev);
    }

    /// The lease `key` is under, if any.
    pub fn lease_of(&self, key: &str) -> Option<i64> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).keys.get(key).and_then(|v| v.2)
    }

    /// Apply writes at the next revision.
    fn write(
        &self,
        mut st: MutexGuard<'_, State>,
        puts: Vec<(String, Vec<u8>, Option<i64>)>,
        deletes: &[String],
    ) -> i64 {
        st.revision += 1;
        let rev = st.revision;
        for (k, v, lease) in puts {
            st.keys.insert(k.clone(), (v.clone(), rev, lease));
            st.history.push((rev, Seen::Put(Kv { key: k, value: v, mod_revision: rev })));
        }
        for k in deletes {
            if let Some((v, _, _)) = st.keys.remove(k) {
                st.history.push((rev, Seen::Delete(k.clone(), Some(v))));
            }
        }
        drop(st);
        self.changed.send_replace(rev);
        rev
    }

    fn kv(st: &State, key: &str) -> Option<Kv> {
        st.keys.get(key).map(|(v, rev, _)| Kv { key: key.to_owned(), value: v.clone(), mod_revision: *rev })
    }
}

#[async_trait::async_trait]
impl ClusterStore for MemCluster {
    async fn txn(&self, t: &Txn) -> Result<i64, ClusterError> {
        let st = self.lock()?;
        let holds = t.compares.iter().all(|c| match c {
            Cmp::Absent(k) => !st.keys.contains_key(k),
            Cmp::ModRevision(k, r) => st.keys.get(k).map_or(0, |v| v.1) == *r,
        });
        if !holds {
            let cmp_key = |c: &Cmp| match c {
                Cmp::Absent(k) | Cmp::ModRevision(k, _) => k.clone(),
            };
            return Err(ClusterError::Conflict(
                t.compares.iter().map(|c| (cmp_key(c), MemCluster::kv(&st, &cmp_key(c)))).collect(),
            ));
        }
        let puts = t.puts.iter().map(|(k, v)| (k.clone(), v.clone(), None)).collect();
        Ok(self.write(st, puts, &t.deletes))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<Kv>, i64), ClusterError> {
        let st = self.lock()?;
        let kvs = st.keys.keys().filter(|k| k.starts_with(prefix)).filter_map(|k| MemCluster::kv(&st, k)).collect();
        Ok((kvs, st.revision))
    }

    async fn put_leased(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<i64, ClusterError> {
        let mut st = self.lock()?;
        st.next_lease += 1;
        let id = st.next_lease;
        st.leases.insert(id, ttl);
        self.write(st, vec![(key.to_owned(), value, Some(id))], &[]);
        Ok(id)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), ClusterError> {
        let st = self.lock()?;
        self.write(st, vec![(key.to_owned(), value, None)], &[]);
        Ok(())
    }

    async fn keep_alive(&self, id: i64) -> Result<bool, ClusterError> {
        Ok(self.lock()?.leases.contains_key(&id))
    }

    async fn revoke(&self, id: i64) -> Result<(), ClusterError> {
        drop(self.lock()?);
        self.expire(id);
        Ok(())
    }

    async fn watch(
        &self,
        prefix: &str,
        from: i64,
        tx: &tokio::sync::mpsc::Sender<WatchItem>,
    ) -> Result<(), ClusterError> {
        let mut rx = self.changed.subscribe();
        let mut next = from;
        loop {
            let (seen, rev) = {
                let st = self.lock()?;
                let seen: Vec<Seen> = st
                    .history
                    .iter()
                    .filter(|(r, s)| {
                        *r >= next
                            && match s {
                                Seen::Put(kv) => kv.key.starts_with(prefix),
                                Seen::Delete(k, _) => k.starts_with(prefix),
                            }
                    })
                    .map(|(_, s)| s.clone())
                    .collect();
                (seen, st.revision)
            };
            if !seen.is_empty() && tx.send(WatchItem::Changes(seen, rev)).await.is_err() {
                return Ok(());
            }
            next = rev + 1;
            if rx.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}
