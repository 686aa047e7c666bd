//! The locks a change takes: one per network (which also owns the
//! network's address pools, so IPAM decides against a lease view nobody
//! else changes meanwhile) and one per tenant scope (documents, modules).
//! No lock here is shared by two networks or two tenants, so one tenant's
//! slow Wasm decision never delays another tenant.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, RwLock};
use weft_model::ipam::PoolLeases;

/// What a network's lock guards: its address pools.
#[derive(Default, Debug)]
pub struct NetSlot {
    /// Leases per pool, keyed by [`pool_key`].
    pub leases: HashMap<String, PoolLeases>,
}

impl NetSlot {
    /// The leases of the pool `key`.
    pub fn pool(&mut self, key: &str) -> &mut PoolLeases {
        self.leases.entry(key.to_owned()).or_default()
    }
}

/// The key of a network's pool of one family (also the IPAM cursor's key).
pub fn pool_key(network_id: &str, addr: IpAddr) -> String {
    format!("{network_id}/{}", if addr.is_ipv4() { "v4" } else { "v6" })
}

/// A held network lock.
pub type NetGuard = OwnedMutexGuard<NetSlot>;

/// Per-network and per-scope locks.
pub struct Locks {
    nets: Mutex<HashMap<String, Arc<AsyncMutex<NetSlot>>>>,
    scopes: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
    /// The committer's `flight` (`commit/released.rs`).
    flight: Arc<RwLock<()>>,
}

impl Locks {
    fn slot(&self, network_id: &str) -> Arc<AsyncMutex<NetSlot>> {
        let mut m = self.nets.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(network_id.to_owned()).or_default().clone()
    }

    /// Locks over the committer's `flight`.
    pub fn new(flight: Arc<RwLock<()>>) -> Locks {
        Locks { nets: Mutex::default(), scopes: Mutex::default(), flight }
    }

    /// Lock network `network_id` (its slot is made on first use), once no
    /// attach that let go of it early is still recording: the holder sees
    /// every endpoint of the network in the index.
    pub async fn network(&self, network_id: &str) -> NetGuard {
        let guard = self.for_attach(network_id).await;
        settle(&self.flight).await;
        guard
    }

    /// Lock network `network_id` for an attach, which does not wait for
    /// earlier attaches' records (only for one of its own name or key).
    pub async fn for_attach(&self, network_id: &str) -> NetGuard {
        self.slot(network_id).lock_owned().await
    }

    /// Lock several networks, in id order (so two callers never deadlock).
    pub async fn networks(&self, ids: &[String]) -> Vec<NetGuard> {
        let mut ids = ids.to_vec();
        ids.sort();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            out.push(self.for_attach(id).await);
        }
        settle(&self.flight).await;
        out
    }

    /// Forget a removed network's slot.
    pub fn drop_network(&self, network_id: &str) {
        self.nets.lock().unwrap_or_else(|p| p.into_inner()).remove(network_id);
    }

    /// Lock a named scope (`documents/<tenant>`, `modules/<tenant>`).
    pub async fn scope(&self, name: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut m = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(name.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// Wait until no commit holds `flight` (is between its kernel work and its
/// record).
pub async fn settle(flight: &RwLock<()>) {
    drop(flight.write().await);
}
