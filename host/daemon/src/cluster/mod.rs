//! Cluster mode (`--etcd`): several weftds share overlay networks through
//! etcd. This node registers under a lease and keeps it alive (`join`);
//! every change to an overlay network or its endpoints is shared by one
//! compare-and-swap transaction built here and committed by `commit.rs`
//! before any kernel work; `sync.rs` watches etcd and turns what other
//! nodes did into changes of this node (adopt a network, program a remote
//! endpoint's FDB and neighbour entries, forget a dead node's entries).
//!
//! What is where: bridge and macvlan networks, documents, modules and the
//! events stay in the node's redb (they keep working with etcd away); an
//! overlay network and its endpoints are in etcd (the cluster's truth) and
//! in the redb of each node that hosts one of them. The key layout is
//! `weft_store::etcd::keys`, documented in docs/cluster.md.

pub mod control;
pub mod policy;
mod remote;
pub mod sync;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use weft_model::ControlError;
use weft_model::endpoint::Endpoint;
use weft_model::network::Network;
use weft_store::etcd::{ClusterError, ClusterStore, Cmp, Etcd, Kv, Txn, keys};

use crate::change::{Change, ClusterWrite};
use crate::events::now_ms;

/// How to join a cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    /// etcd endpoints.
    pub endpoints: Vec<String>,
    /// This node's name.
    pub node: String,
    /// The address other nodes tunnel to.
    pub advertise_ip: IpAddr,
    /// The node lease's time to live.
    pub ttl: Duration,
    /// The bound on one etcd call.
    pub timeout: Duration,
}

/// A node, as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its name.
    pub name: String,
    /// Its tunnel address.
    pub advertise_ip: IpAddr,
    /// When it (last) registered, ms since the epoch.
    pub joined_ms: u64,
}

/// An overlay network as shared: the network, and whether a delete is
/// under way (attaches compare the key, so marking it stops them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedNetwork {
    /// The network.
    pub network: Network,
    /// A node is deleting it.
    #[serde(default)]
    pub deleting: bool,
}

/// What this node knows of the cluster (kept by `sync.rs`).
#[derive(Debug, Default)]
pub struct View {
    /// Nodes whose lease is alive.
    pub alive: BTreeMap<String, NodeRecord>,
    /// Every registered node (until `weft node rm`).
    pub members: BTreeMap<String, NodeRecord>,
    /// Overlay networks' keys: id -> the revision they were last written at.
    pub networks: BTreeMap<String, i64>,
    /// The last etcd revision applied.
    pub revision: i64,
    /// Whether the watch is running (false: etcd away, or not synced yet).
    pub connected: bool,
}

/// This node's membership of a cluster.
pub struct Cluster {
    /// How it joined.
    pub settings: Settings,
    /// The cluster store (etcd; in unit tests, in memory).
    pub etcd: Arc<dyn ClusterStore>,
    view: Mutex<View>,
}

/// A shared value as stored in etcd (JSON).
pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// The value of a shared key, decoded; None (and a warning) if it does not
/// decode — a key another version wrote, say.
pub fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(key, error = %e, "an etcd value does not decode; ignored");
            None
        }
    }
}

impl Cluster {
    /// Connect to etcd and keep this node registered (a background task).
    /// etcd may be down: the node registers once it is back.
    pub async fn join(settings: Settings) -> anyhow::Result<Arc<Cluster>> {
        let etcd = Etcd::connect(&settings.endpoints, settings.timeout)
            .await
            .map_err(|e| anyhow::anyhow!("etcd {}: {e}", settings.endpoints.join(",")))?;
        Ok(Cluster::on(settings, Arc::new(etcd)))
    }

    /// Join the cluster `store` holds (and keep this node registered).
    pub fn on(settings: Settings, store: Arc<dyn ClusterStore>) -> Arc<Cluster> {
        let c = Arc::new(Cluster { settings, etcd: store, view: Mutex::new(View::default()) });
        tokio::spawn(keep_registered(c.clone()));
        c
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.settings.node
    }

    /// The view, locked (never across an await).
    pub fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tunnel address of `node` if it is alive.
    pub fn vtep(&self, node: &str) -> Option<IpAddr> {
        self.view().alive.get(node).map(|n| n.advertise_ip)
    }

    /// This node's record.
    fn record(&self) -> NodeRecord {
        NodeRecord { name: self.settings.node.clone(), advertise_ip: self.settings.advertise_ip, joined_ms: now_ms() }
    }

    /// The shared overlay networks as etcd has them now, the revision of
    /// the network epoch key (0: none yet) and the VNIs in use.
    pub async fn networks_now(&self) -> Result<(Vec<SharedNetwork>, i64), ClusterError> {
        let (kvs, _) = self.etcd.list("/weft/v1/network").await?;
        let mut nets = Vec::new();
        let mut epoch = 0;
        for kv in kvs {
            if kv.key == keys::NETWORK_EPOCH {
                epoch = kv.mod_revision;
            } else if kv.key.starts_with(keys::NETWORKS)
                && let Some(n) = decode::<SharedNetwork>(&kv.key, &kv.value)
            {
                nets.push(n);
            }
        }
        Ok((nets, epoch))
    }

    /// The transaction that creates `net`: only if no overlay network was
    /// created or deleted since `epoch` was read, its VNI and its name are
    /// free.
    pub fn create_network(&self, net: &Network, epoch: i64) -> ClusterWrite {
        let vni = net.overlay.as_ref().map_or(0, |o| o.vni);
        let name = keys::network_name(net.spec.tenant.as_str(), net.spec.name.as_str());
        let shared = SharedNetwork { network: net.clone(), deleting: false };
        let txn = Txn {
            compares: vec![
                Cmp::ModRevision(keys::NETWORK_EPOCH.into(), epoch),
                Cmp::Absent(keys::vni(vni)),
                Cmp::Absent(name.clone()),
            ],
            puts: vec![
                (keys::network(&net.id), encode(&shared)),
                (keys::vni(vni), net.id.clone().into_bytes()),
                (name.clone(), net.id.clone().into_bytes()),
                (keys::NETWORK_EPOCH.into(), net.id.clone().into_bytes()),
            ],
            deletes: Vec::new(),
        };
        let undo =
            Txn { compares: Vec::new(), puts: Vec::new(), deletes: vec![keys::network(&net.id), keys::vni(vni), name] };
        ClusterWrite { txn, undo }
    }

    /// Share an attach: the endpoint is this node's; its addresses and its
    /// name must be free and the network unchanged since `net_rev`.
    pub fn attach(&self, change: &mut Change, net_rev: i64) {
        let me = self.me().to_owned();
        let stamp = |e: &mut Endpoint| e.node = Some(me.clone());
        change.new_endpoints.iter_mut().for_each(stamp);
        change.batch.put_endpoints.iter_mut().for_each(stamp);
        for d in &mut change.dns {
            if let crate::change::DnsChange::Set(_, e, _) = d {
                stamp(e);
            }
        }
        let Some(ep) = change.new_endpoints.first() else { return };
        let mut txn =
            Txn { compares: vec![Cmp::ModRevision(keys::network(&ep.network_id), net_rev)], ..Txn::default() };
        let mut undo = Txn::default();
        let name = keys::endpoint_name(&ep.network_id, ep.spec.name.as_str());
        txn.compares.push(Cmp::Absent(name.clone()));
        txn.puts.push((name.clone(), ep.id.clone().into_bytes()));
        undo.deletes.push(name);
        for a in &ep.addresses {
            let k = keys::lease(&ep.network_id, a.addr());
            txn.compares.push(Cmp::Absent(k.clone()));
            txn.puts.push((k.clone(), ep.id.clone().into_bytes()));
            undo.deletes.push(k);
        }
        let k = keys::endpoint(&ep.network_id, &ep.id);
        txn.puts.push((k.clone(), encode(ep)));
        undo.deletes.push(k);
        change.cluster = Some(ClusterWrite { txn, undo });
    }

    /// Share a detach of this node's endpoint `ep`.
    pub fn detach(&self, change: &mut Change, ep: &Endpoint) {
        change.cluster = Some(release(ep));
    }
}

/// The write that removes endpoint `ep` from etcd (and puts it back).
pub fn release(ep: &Endpoint) -> ClusterWrite {
    let mut keys_of =
        vec![keys::endpoint(&ep.network_id, &ep.id), keys::endpoint_name(&ep.network_id, ep.spec.name.as_str())];
    keys_of.extend(ep.addresses.iter().map(|a| keys::lease(&ep.network_id, a.addr())));
    let txn = Txn { deletes: keys_of, ..Txn::default() };
    let mut undo = Txn::default();
    undo.puts.push((keys::endpoint(&ep.network_id, &ep.id), encode(ep)));
    undo.puts.push((keys::endpoint_name(&ep.network_id, ep.spec.name.as_str()), ep.id.clone().into_bytes()));
    undo.puts.extend(ep.addresses.iter().map(|a| (keys::lease(&ep.network_id, a.addr()), ep.id.clone().into_bytes())));
    ClusterWrite { txn, undo }
}

/// What a failed attach transaction says: an error for the client (the
/// network went or is going, the name is taken on another node), or Ok if
/// only addresses were taken meanwhile (decide again).
pub fn attach_conflict(current: &[(String, Option<Kv>)], network: &str, name: &str) -> Result<(), ControlError> {
    for (key, kv) in current {
        if key.starts_with(keys::NETWORKS) {
            let Some(kv) = kv else {
                return Err(ControlError::NotFound(format!("network {network:?} was removed meanwhile")));
            };
            if decode::<SharedNetwork>(key, &kv.value).is_some_and(|n| n.deleting) {
                return Err(ControlError::FailedPrecondition(format!("network {network:?} is being deleted")));
            }
        } else if key.starts_with("/weft/v1/endpoint-names/") && kv.is_some() {
            return Err(ControlError::AlreadyExists(format!(
                "endpoint {name:?} already exists on network {network:?} (on another node)"
            )));
        }
    }
    Ok(())
}

/// The client's error for an etcd failure while doing `what`.
pub fn unavailable(what: &str, e: &ClusterError) -> ControlError {
    match e {
        ClusterError::Unavailable(_) => ControlError::Unavailable(format!("{what}: {e}; nothing was changed")),
        _ => ControlError::Internal(format!("{what}: {e}; nothing was changed")),
    }
}

/// Keep this node's key alive under its lease: register, renew every third
/// of the TTL, register again when the lease was lost (etcd away longer
/// than the TTL). The member key stays until `weft node rm`.
async fn keep_registered(c: Arc<Cluster>) {
    let every = (c.settings.ttl / 3).max(Duration::from_millis(500));
    let mut lease: Option<i64> = None;
    loop {
        match lease {
            None => {
                let rec = c.record();
                let put = async {
                    c.etcd.put(&keys::member(c.me()), encode(&rec)).await?;
                    c.etcd.put_leased(&keys::node(c.me()), encode(&rec), c.settings.ttl).await
                };
                match put.await {
                    Ok(id) => {
                        info!(node = %c.me(), advertise_ip = %c.settings.advertise_ip, "registered in the cluster");
                        lease = Some(id);
                    }
                    Err(e) => warn!(node = %c.me(), error = %e, "registering in the cluster; retrying"),
                }
            }
            Some(id) => match c.etcd.keep_alive(id).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(node = %c.me(), "the node's lease expired; registering again");
                    lease = None;
                    continue;
                }
                Err(e) => warn!(node = %c.me(), error = %e, "renewing the node's lease"),
            },
        }
        tokio::time::sleep(if lease.is_some() { every } else { Duration::from_millis(500) }).await;
    }
}

#[cfg(test)]
mod txn_tests {
    use super::*;

    fn ep() -> Endpoint {
        let spec = weft_model::endpoint::AttachEndpoint {
            network: "ov".into(),
            name: "c1".into(),
            netns: "/var/run/netns/c1".into(),
            ..Default::default()
        }
        .validate()
        .unwrap();
        Endpoint {
            id: "cd".repeat(16),
            network_id: "ab".repeat(16),
            host_ifname: Endpoint::host_ifname_for(&"cd".repeat(16)).unwrap(),
            netns_id: 7,
            spec,
            mac: weft_model::Mac([2, 0x42, 10, 95, 0, 2]),
            addresses: vec!["10.95.0.2/24".parse().unwrap(), "fd00:95::2/64".parse().unwrap()],
            state: weft_model::endpoint::EndpointState::Ready,
            groups: vec![],
            node: None,
        }
    }

    #[tokio::test]
    async fn an_attach_claims_its_name_and_addresses_and_its_undo_releases_them() {
        let (net, id) = ("ab".repeat(16), "cd".repeat(16));
        let settings = Settings {
            endpoints: vec!["http://127.0.0.1:9".into()],
            node: "n0".into(),
            advertise_ip: "10.200.0.1".parse().unwrap(),
            ttl: Duration::from_secs(15),
            timeout: Duration::from_millis(10),
        };
        let c = Cluster { settings, etcd: weft_store::mem::MemCluster::new(), view: Mutex::new(View::default()) };
        let mut change = Change::new("attach");
        change.new_endpoints.push(ep());
        change.batch.put_endpoints.push(ep());
        c.attach(&mut change, 42);
        let w = change.cluster.clone().unwrap();
        assert_eq!(w.txn.compares[0], Cmp::ModRevision(keys::network(&net), 42));
        assert!(w.txn.compares.contains(&Cmp::Absent(keys::endpoint_name(&net, "c1"))));
        assert!(w.txn.compares.contains(&Cmp::Absent(keys::lease(&net, "10.95.0.2".parse().unwrap()))));
        assert!(w.txn.compares.contains(&Cmp::Absent(keys::lease(&net, "fd00:95::2".parse().unwrap()))));
        let put: Vec<&str> = w.txn.puts.iter().map(|(k, _)| k.as_str()).collect();
        assert!(put.contains(&keys::endpoint(&net, &id).as_str()));
        let mut undone = w.undo.deletes.clone();
        undone.sort();
        let mut written: Vec<String> = w.txn.puts.iter().map(|(k, _)| k.clone()).collect();
        written.sort();
        assert_eq!(undone, written, "the undo deletes exactly what the attach wrote");
        assert_eq!(change.new_endpoints[0].node.as_deref(), Some("n0"), "the endpoint is this node's");
        // A detach deletes what the attach wrote; its undo puts it back.
        let r = release(&change.new_endpoints[0]);
        let mut deleted = r.txn.deletes.clone();
        deleted.sort();
        assert_eq!(deleted, written);
        assert_eq!(r.undo.puts.len(), written.len());
    }

    #[test]
    fn a_lost_attach_says_why() {
        let net = keys::network(&"ab".repeat(16));
        let kv = |v: &[u8]| Some(Kv { key: String::new(), value: v.to_vec(), mod_revision: 9 });
        // Only an address was taken: decide again.
        let lease = keys::lease(&"ab".repeat(16), "10.95.0.2".parse().unwrap());
        assert!(attach_conflict(&[(net.clone(), kv(b"{}")), (lease, kv(b"other"))], "ov", "c1").is_ok());
        // The network is gone: NOT_FOUND.
        let e = attach_conflict(&[(net.clone(), None)], "ov", "c1").unwrap_err();
        assert!(matches!(e, ControlError::NotFound(_)), "{e}");
        // The name is taken on another node.
        let name = keys::endpoint_name(&"ab".repeat(16), "c1");
        let e = attach_conflict(&[(name, kv(b"x"))], "ov", "c1").unwrap_err();
        assert!(matches!(e, ControlError::AlreadyExists(_)), "{e}");
    }
}
