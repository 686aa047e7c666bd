//! Following the cluster: list everything under `/weft/v1/`, make this node
//! match it (`resync`), then watch from the next revision and apply each
//! change as it comes (`apply`); other nodes' endpoints are `remote.rs`'s. A watch that breaks (etcd away) or falls
//! behind a compaction starts over with a fresh list, so nothing missed is
//! lost. Every change to this node goes through `commit` like any other:
//! - an overlay network another node created is adopted (bridge, VXLAN
//!   device, policy, DNS), and dropped when it is deleted;
//! - an endpoint of another node is indexed (DNS names, lease view, policy
//!   groups) and, while its node is alive, programmed: an FDB entry for its
//!   MAC and a permanent neighbour per address on the VXLAN device;
//! - a node whose lease expired has its endpoints' entries removed (their
//!   addresses stay leased until an operator removes the node);
//! - this node's own endpoints that etcd has but this node does not (an
//!   attach that never finished) are removed from etcd, and ones this node
//!   has but etcd does not (a detach that did not finish here) are finished.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use weft_model::document::StoredDocument;
use weft_model::endpoint::Endpoint;
use weft_model::event::EventKind;
use weft_model::network::Network;
use weft_plan::{plan_network, plan_overlay};
use weft_store::etcd::{Kv, Seen, WatchItem, keys};

use super::remote::{node_entries, remote_gone, remote_put, sweep};
use super::{Cluster, NodeRecord, SharedNetwork, decode};
use crate::change::{Change, DnsChange};
use crate::controller::Ctl;
use crate::decide::network::network_event;
use crate::index::documents_for;

/// Follow the cluster for as long as weftd runs.
pub fn spawn(ctl: Arc<Ctl>, cluster: Arc<Cluster>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let listed = cluster.etcd.list(keys::ROOT).await;
            let (kvs, revision) = match listed {
                Ok(l) => l,
                Err(e) => {
                    if std::mem::replace(&mut cluster.view().connected, false) {
                        warn!(error = %e, "lost etcd; overlay changes fail until it is back, traffic goes on");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            resync(&ctl, &cluster, kvs, revision).await;
            let (tx, mut rx) = tokio::sync::mpsc::channel(256);
            let etcd = cluster.etcd.clone();
            let watch = tokio::spawn(async move { etcd.watch(keys::ROOT, revision + 1, &tx).await });
            while let Some(item) = rx.recv().await {
                match item {
                    WatchItem::Changes(seen, rev) => {
                        for s in seen {
                            apply(&ctl, &cluster, s).await;
                        }
                        cluster.view().revision = rev;
                    }
                    WatchItem::Compacted => {
                        warn!("the etcd watch fell behind a compaction; listing again");
                        break;
                    }
                }
            }
            watch.abort();
            if let Ok(Ok(Err(e))) =
                tokio::time::timeout(Duration::from_millis(10), watch).await.map(|r| r.map_err(|_| ()))
            {
                warn!(error = %e, "the etcd watch ended; listing again");
            }
        }
    })
}

/// Everything etcd holds, sorted by kind.
#[derive(Default)]
struct Listed {
    alive: BTreeMap<String, NodeRecord>,
    members: BTreeMap<String, NodeRecord>,
    networks: BTreeMap<String, (SharedNetwork, i64)>,
    endpoints: BTreeMap<String, Endpoint>,
    documents: BTreeMap<String, StoredDocument>,
}

fn sort(kvs: Vec<Kv>) -> Listed {
    let mut l = Listed::default();
    for kv in kvs {
        if let Some(name) = kv.key.strip_prefix(keys::NODES) {
            if let Some(n) = decode(&kv.key, &kv.value) {
                l.alive.insert(name.to_owned(), n);
            }
        } else if let Some(name) = kv.key.strip_prefix(keys::MEMBERS) {
            if let Some(n) = decode(&kv.key, &kv.value) {
                l.members.insert(name.to_owned(), n);
            }
        } else if let Some(id) = kv.key.strip_prefix(keys::NETWORKS) {
            if let Some(n) = decode::<SharedNetwork>(&kv.key, &kv.value) {
                l.networks.insert(id.to_owned(), (n, kv.mod_revision));
            }
        } else if kv.key.starts_with(keys::ENDPOINTS)
            && let Some(e) = decode::<Endpoint>(&kv.key, &kv.value)
        {
            l.endpoints.insert(e.id.clone(), e);
        } else if kv.key.starts_with(keys::DOCUMENTS)
            && let Some(d) = decode::<StoredDocument>(&kv.key, &kv.value)
        {
            l.documents.insert(kv.key.clone(), d);
        }
    }
    l
}

/// Make this node match what etcd holds at `revision`.
async fn resync(ctl: &Ctl, c: &Cluster, kvs: Vec<Kv>, revision: i64) {
    let l = sort(kvs);
    {
        let mut v = c.view();
        v.alive = l.alive.clone();
        v.members = l.members.clone();
        v.networks = l.networks.iter().map(|(id, (_, rev))| (id.clone(), *rev)).collect();
        v.revision = revision;
        if !v.connected {
            info!(revision, nodes = l.alive.len(), networks = l.networks.len(), "in sync with etcd");
        }
        v.connected = true;
    }
    for (n, _) in l.networks.values() {
        adopt(ctl, c, &n.network).await;
        ctl.take_network(&n.network).await;
    }
    let gone: Vec<Network> = ctl.index.read(|st| {
        st.networks.values().filter(|n| n.is_overlay() && !l.networks.contains_key(&n.id)).cloned().collect()
    });
    for n in gone {
        drop_network(ctl, &n).await;
    }
    // Documents shared on overlay networks: the same everywhere.
    for d in l.documents.values() {
        ctl.take_document(d.clone()).await;
    }
    let stale: Vec<StoredDocument> = ctl.index.read(|st| {
        st.documents
            .values()
            .filter(|d| {
                st.networks
                    .values()
                    .any(|n| n.is_overlay() && n.spec.tenant.as_str() == d.tenant && n.spec.name.as_str() == d.network)
            })
            .filter(|d| !l.documents.contains_key(&super::policy::document_key(d)))
            .cloned()
            .collect()
    });
    for d in &stale {
        ctl.drop_document(d).await;
    }
    // This node's own endpoints: etcd and the node's store must agree.
    let (unfinished, undone): (Vec<Endpoint>, Vec<Endpoint>) = ctl.index.read(|st| {
        let unfinished = l
            .endpoints
            .values()
            .filter(|e| e.node.as_deref() == Some(c.me()))
            .filter(|e| !st.endpoints.contains_key(&e.id) && !st.pending_endpoints.contains_key(&e.id))
            .cloned()
            .collect();
        let undone = st
            .endpoints
            .values()
            .filter(|e| st.networks.get(&e.network_id).is_some_and(Network::is_overlay))
            .filter(|e| !l.endpoints.contains_key(&e.id))
            .cloned()
            .collect();
        (unfinished, undone)
    });
    for e in unfinished {
        warn!(endpoint = %e.spec.name, "an attach that never finished on this node is in etcd; removing it");
        if let Err(err) = c.etcd.txn(&super::release(&e).txn).await {
            warn!(endpoint = %e.spec.name, error = %err, "removing an unfinished attach from etcd");
        }
    }
    for e in undone {
        warn!(endpoint = %e.spec.name, "a detach that did not finish on this node; finishing it");
        ctl.finish_detach(&e).await;
    }
    // Other nodes' endpoints.
    let known: Vec<String> = ctl.index.read(|st| st.remote.keys().cloned().collect());
    for id in known.iter().filter(|id| !l.endpoints.contains_key(*id)) {
        let ep = ctl.index.read(|st| st.remote.get(id).cloned());
        if let Some(ep) = ep {
            remote_gone(ctl, c, &ep).await;
        }
    }
    for e in l.endpoints.values().filter(|e| e.node.as_deref() != Some(c.me())) {
        remote_put(ctl, c, e, true).await;
    }
    sweep(ctl, c).await;
}

/// Apply one change seen by the watch.
async fn apply(ctl: &Ctl, c: &Cluster, seen: Seen) {
    match seen {
        Seen::Put(kv) => {
            if let Some(name) = kv.key.strip_prefix(keys::NODES) {
                let Some(n) = decode::<NodeRecord>(&kv.key, &kv.value) else { return };
                let before = c.view().alive.insert(name.to_owned(), n.clone());
                if before.as_ref().map(|b| b.advertise_ip) != Some(n.advertise_ip) {
                    info!(node = %name, advertise_ip = %n.advertise_ip, "node alive");
                    if let Some(old) = before {
                        node_entries(ctl, name, Some(old.advertise_ip), false).await;
                    }
                    node_entries(ctl, name, Some(n.advertise_ip), true).await;
                }
            } else if let Some(name) = kv.key.strip_prefix(keys::MEMBERS) {
                if let Some(n) = decode(&kv.key, &kv.value) {
                    c.view().members.insert(name.to_owned(), n);
                }
            } else if let Some(id) = kv.key.strip_prefix(keys::NETWORKS) {
                c.view().networks.insert(id.to_owned(), kv.mod_revision);
                if let Some(n) = decode::<SharedNetwork>(&kv.key, &kv.value) {
                    adopt(ctl, c, &n.network).await;
                    ctl.take_network(&n.network).await;
                }
            } else if kv.key.starts_with(keys::ENDPOINTS)
                && let Some(e) = decode::<Endpoint>(&kv.key, &kv.value)
                && e.node.as_deref() != Some(c.me())
            {
                remote_put(ctl, c, &e, false).await;
            } else if kv.key.starts_with(keys::DOCUMENTS)
                && let Some(d) = decode::<StoredDocument>(&kv.key, &kv.value)
            {
                ctl.take_document(d).await;
            }
        }
        Seen::Delete(key, prev) => {
            if let Some(name) = key.strip_prefix(keys::NODES) {
                let before = c.view().alive.remove(name);
                if let Some(old) = before {
                    warn!(node = %name, "node's lease expired: its endpoints are unreachable until it is back");
                    node_entries(ctl, name, Some(old.advertise_ip), false).await;
                }
            } else if let Some(name) = key.strip_prefix(keys::MEMBERS) {
                c.view().members.remove(name);
            } else if let Some(id) = key.strip_prefix(keys::NETWORKS) {
                c.view().networks.remove(id);
                let net = ctl.index.read(|st| st.networks.get(id).cloned());
                if let Some(n) = net {
                    drop_network(ctl, &n).await;
                }
            } else if key.starts_with(keys::DOCUMENTS) {
                let d = prev.and_then(|v| decode::<StoredDocument>(&key, &v));
                let here = d.and_then(|d| ctl.index.read(|st| st.documents.get(&d.store_key()).cloned()));
                if let Some(d) = here {
                    ctl.drop_document(&d).await;
                }
            } else if let Some(rest) = key.strip_prefix(keys::ENDPOINTS) {
                let id = rest.rsplit('/').next().unwrap_or_default();
                let ep = ctl.index.read(|st| st.remote.get(id).cloned());
                if let Some(ep) = ep {
                    remote_gone(ctl, c, &ep).await;
                }
            }
        }
    }
}

/// Serve overlay network `net` (created on another node, or before this
/// node restarted) on this node, if it does not already.
async fn adopt(ctl: &Ctl, c: &Cluster, net: &Network) {
    let known = ctl.index.read(|st| st.networks.contains_key(&net.id) || st.pending_networks.contains_key(&net.id));
    if known || !net.is_overlay() {
        return;
    }
    let _slot = ctl.locks.network(&net.id).await;
    let docs = ctl.index.read(|st| documents_for(net, st.documents.values()));
    let module = ctl.decider.module_key(net, &net.spec.policy);
    let compiled =
        tokio::task::block_in_place(|| ctl.decider.deciders.compile(&module, &crate::decide::network_info(net), &docs));
    let policy = match compiled {
        Ok(p) => Arc::new(p),
        Err(e) => {
            warn!(network = %net.spec.name, error = %e, "an overlay network's policy does not compile here; not served");
            return;
        }
    };
    let mut change = Change::new(format!("serving overlay network {:?}", net.spec.name.as_str()));
    change.new_networks.push(net.clone());
    change.ops = plan_network(net, None);
    change.ops.extend(plan_overlay(net, c.settings.advertise_ip, None));
    change.render_nft = true;
    change.batch.put_networks.push(net.clone());
    change.policies.push((net.id.clone(), Some(policy)));
    if net.spec.dns {
        change.dns.push(DnsChange::Serve(net.clone()));
    }
    change.events.push(network_event(EventKind::NetworkCreated, net));
    match ctl.commit.commit(change, None).await {
        Ok(_) => info!(network = %net.spec.name, tenant = %net.spec.tenant, "serving an overlay network"),
        Err(e) => warn!(network = %net.spec.name, error = ?e, "cannot serve an overlay network on this node"),
    }
}

/// Stop serving overlay network `net` (deleted in etcd).
async fn drop_network(ctl: &Ctl, net: &Network) {
    let slot = ctl.locks.network(&net.id).await;
    let r = weft_model::api::Ref {
        tenant: net.spec.tenant.to_string(),
        network: net.spec.name.to_string(),
        ..Default::default()
    };
    let decided = ctl.index.read(|st| {
        crate::decide::network::delete_network(st, &r, false).map(|(_, mut c, _)| {
            c.remote_delete = st.remote.values().filter(|e| e.network_id == net.id).map(|e| e.id.clone()).collect();
            c
        })
    });
    let change = match decided {
        Ok(c) => c,
        Err(e) => {
            warn!(network = %net.spec.name, error = %e, "an overlay network deleted in etcd is still in use here");
            return;
        }
    };
    let dropped: BTreeSet<String> = change.remote_delete.iter().cloned().collect();
    match ctl.commit.commit(change, None).await {
        Ok(_) => {
            drop(slot);
            ctl.locks.drop_network(&net.id);
            info!(network = %net.spec.name, remote = dropped.len(), "overlay network deleted in the cluster; no longer served");
        }
        Err(e) => warn!(network = %net.spec.name, error = ?e, "dropping an overlay network; the next sync retries"),
    }
}
