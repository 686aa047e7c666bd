//! Other nodes' endpoints on this node: indexed (DNS names, the lease view,
//! policy group sets) and, while their node is alive, programmed on the
//! overlay's VXLAN device — one FDB entry per MAC, one permanent neighbour
//! per address — and removed again; and the sweep that removes entries no
//! endpoint accounts for.

use std::collections::HashSet;
use std::net::IpAddr;

use tracing::{info, warn};
use weft_model::endpoint::Endpoint;
use weft_model::network::Network;
use weft_plan::nft;
use weft_plan::{Op, plan_remote_endpoint, plan_remote_removal};

use super::Cluster;
use crate::change::{Change, DnsChange, LeaseChange};
use crate::controller::Ctl;

/// Remove every FDB and neighbour entry of this node's VXLAN devices that
/// no indexed endpoint of an alive node accounts for: entries of endpoints
/// that went while this weftd was not running, or of nodes that are gone.
pub(super) async fn sweep(ctl: &Ctl, c: &Cluster) {
    let nets: Vec<Network> =
        ctl.index.read(|st| st.networks.values().filter(|n| n.overlay.is_some()).cloned().collect());
    for net in nets {
        let Some(o) = &net.overlay else { continue };
        let found = match ctl.commit.kernel.vxlan_entries(&o.vxlan).await {
            Ok(f) => f,
            Err(e) => {
                warn!(network = %net.spec.name, error = %e, "reading the VXLAN device's entries");
                continue;
            }
        };
        let wanted = ctl.index.read(|st| {
            let mut w = weft_kernel::VxlanEntries::default();
            for e in st.remote.values().filter(|e| e.network_id == net.id) {
                if let Some(v) = e.node.as_deref().and_then(|n| c.vtep(n)) {
                    w.fdb.push((e.mac, v));
                    w.neighbours.extend(e.addresses.iter().map(|a| (a.addr(), e.mac)));
                }
            }
            w
        });
        let fdb: HashSet<_> = wanted.fdb.into_iter().collect();
        let neigh: HashSet<_> = wanted.neighbours.into_iter().collect();
        let mut change = Change::new(format!("removing stale remote entries of network {:?}", net.spec.name.as_str()));
        for (mac, dst) in found.fdb.iter().filter(|e| !fdb.contains(e)) {
            change.ops.push(Op::DeleteFdb { dev: o.vxlan.clone(), mac: *mac, dst: *dst });
        }
        for (addr, mac) in found.neighbours.iter().filter(|e| !neigh.contains(e)) {
            change.ops.push(Op::DeleteNeighbour { dev: o.vxlan.clone(), addr: *addr, mac: *mac });
        }
        if change.ops.is_empty() {
            continue;
        }
        info!(network = %net.spec.name, entries = change.ops.len(), "removing stale remote entries");
        change.teardown = true;
        if let Err(e) = ctl.commit.commit(change, None).await {
            warn!(network = %net.spec.name, error = ?e, "removing stale remote entries; the next sync retries");
        }
    }
}

/// Program (`on`) or remove the FDB and neighbour entries of every indexed
/// endpoint of `node`, which tunnels from `vtep`.
pub(super) async fn node_entries(ctl: &Ctl, node: &str, vtep: Option<IpAddr>, on: bool) {
    let Some(vtep) = vtep else { return };
    let eps: Vec<(Network, Endpoint)> = ctl.index.read(|st| {
        st.remote
            .values()
            .filter(|e| e.node.as_deref() == Some(node))
            .filter_map(|e| st.networks.get(&e.network_id).map(|n| (n.clone(), e.clone())))
            .collect()
    });
    if eps.is_empty() {
        return;
    }
    let mut change =
        Change::new(format!("{} the endpoints of node {node:?}", if on { "reaching" } else { "forgetting" }));
    for (n, e) in &eps {
        change.ops.extend(if on { plan_remote_endpoint(n, e, vtep) } else { plan_remote_removal(n, e, vtep) });
    }
    change.teardown = !on;
    if let Err(e) = ctl.commit.commit(change, None).await {
        warn!(node, error = ?e, "programming a node's endpoints; the next sync retries");
    }
}

/// Index (and, if its node is alive, program) endpoint `ep` of another
/// node. `again`: a resync, where what is already indexed is re-applied
/// only if it changed (the kernel entries are replaced anyway).
pub(super) async fn remote_put(ctl: &Ctl, c: &Cluster, ep: &Endpoint, again: bool) {
    let Some(net) = ctl.index.read(|st| st.networks.get(&ep.network_id).cloned()) else { return };
    let vtep = ep.node.as_deref().and_then(|n| c.vtep(n));
    let mut slot = ctl.locks.network(&net.id).await;
    let (known, policy) = ctl.index.read(|st| (st.remote.get(&ep.id).cloned(), st.policy_of(&net.id)));
    let mut change = Change::new(format!("indexing endpoint {:?} of node {:?}", ep.spec.name.as_str(), ep.node));
    if let Some(v) = vtep {
        if let Some(old) = &known
            && (old.mac != ep.mac || old.addresses != ep.addresses)
        {
            change.ops.extend(plan_remote_removal(&net, old, v));
        }
        change.ops.extend(plan_remote_endpoint(&net, ep, v));
    }
    if known.as_ref() == Some(ep) {
        if !again || change.ops.is_empty() {
            return;
        }
    } else {
        if let Some(old) = &known {
            let elements = nft::remote_elements(old, &policy.rules);
            if !elements.is_empty() {
                change.ops.push(Op::NftElements { change: nft::Change::Delete, elements });
            }
        }
        let elements = nft::remote_elements(ep, &policy.rules);
        if !elements.is_empty() {
            change.ops.push(Op::NftElements { change: nft::Change::Add, elements });
        }
        change.remote_put.push(ep.clone());
        change.leases.extend(LeaseChange::of(ep, true));
        match tokio::task::block_in_place(|| ctl.decider.names(&net, ep)) {
            Ok(r) if !r.is_empty() => {
                let mut named = ep.clone();
                named.netns_id = 0;
                change.dns.push(DnsChange::Set(net.id.clone(), named, r));
            }
            Ok(_) => {}
            Err(e) => warn!(endpoint = %ep.spec.name, error = %e, "naming a remote endpoint"),
        }
    }
    if let Err(e) = ctl.commit.commit(change, Some(&mut slot)).await {
        warn!(endpoint = %ep.spec.name, error = ?e, "indexing a remote endpoint; the next sync retries");
    }
}

/// Forget endpoint `ep` of another node: its entries, names, lease.
pub(super) async fn remote_gone(ctl: &Ctl, c: &Cluster, ep: &Endpoint) {
    let Some(net) = ctl.index.read(|st| st.networks.get(&ep.network_id).cloned()) else {
        ctl.index.lock().remote.remove(&ep.id);
        return;
    };
    let mut slot = ctl.locks.network(&net.id).await;
    let policy = ctl.index.read(|st| st.policy_of(&net.id));
    let mut change = Change::new(format!("forgetting endpoint {:?} of node {:?}", ep.spec.name.as_str(), ep.node));
    let elements = nft::remote_elements(ep, &policy.rules);
    if !elements.is_empty() {
        change.ops.push(Op::NftElements { change: nft::Change::Delete, elements });
    }
    if let Some(v) = ep.node.as_deref().and_then(|n| c.vtep(n)) {
        change.ops.extend(plan_remote_removal(&net, ep, v));
    }
    change.teardown = true;
    change.remote_delete.push(ep.id.clone());
    change.leases.extend(LeaseChange::of(ep, false));
    change.dns.push(DnsChange::Remove(net.id.clone(), ep.id.clone()));
    if let Err(e) = ctl.commit.commit(change, Some(&mut slot)).await {
        warn!(endpoint = %ep.spec.name, error = ?e, "forgetting a remote endpoint; the next sync retries");
    }
}
