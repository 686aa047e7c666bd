//! The controller's cluster-mode requests: an overlay network's create
//! (its VNI allocated by compare-and-swap, its subnet clear of every other
//! overlay network's) and delete (marked, checked empty cluster-wide,
//! removed), the attach retry when another node took an address meanwhile,
//! and the nodes (`weft node ls|rm`).

use std::sync::Arc;

use tracing::{info, warn};
use weft_model::api::NodeView;
use weft_model::endpoint::Endpoint;
use weft_model::network::{
    FIRST_AUTO_VNI, InvalidOrExists, MAX_VNI, Network, NetworkSpec, VXLAN_OVERHEAD, conflicts_with,
};
use weft_model::{ControlError, InvalidRequest};
use weft_store::etcd::{ClusterError, Cmp, Txn, keys};

use super::{Cluster, SharedNetwork, decode, unavailable};
use crate::change::{Change, DnsChange};
use crate::controller::Ctl;

/// How often a create or an attach is decided again after another node's
/// change won the compare-and-swap. Nodes that allocate at once all aim at
/// the lowest free address, so each round one wins: a node loses a round
/// with odds of about (n-1)/n, and 64 rounds lost in a row is never seen
/// (3 nodes: 1 in 10^11); the random back-off below makes it rarer still.
pub const CLUSTER_TRIES: usize = 64;

/// Wait a random 0 to 2·(attempt+1) ms (at most 20) after losing a round,
/// so nodes that collided do not collide again in step.
pub async fn back_off(attempt: usize) {
    let cap = u128::try_from((2 * (attempt + 1)).min(20)).unwrap_or(20) * 1000;
    let us = uuid::Uuid::new_v4().as_u128() % (cap + 1);
    tokio::time::sleep(std::time::Duration::from_micros(u64::try_from(us).unwrap_or(0))).await;
}

impl Ctl {
    /// This node's cluster, or why an overlay request cannot be served.
    pub(crate) fn cluster_for(&self, what: &str) -> Result<&Arc<Cluster>, ControlError> {
        self.cluster.as_ref().ok_or_else(|| {
            ControlError::FailedPrecondition(format!(
                "{what}: the overlay driver needs cluster mode (start weftd with --etcd, --node and --advertise-ip)"
            ))
        })
    }

    /// An overlay network's MTU when none is given: the advertise
    /// interface's, less the VXLAN overhead.
    pub(crate) async fn overlay_mtu(&self, c: &Cluster) -> Result<u32, ControlError> {
        let ip = c.settings.advertise_ip;
        let prefixes = self.commit.kernel.host_prefixes().await.map_err(|e| ControlError::Internal(e.to_string()))?;
        let link = prefixes.iter().find(|(p, l)| p.contains(&ip) && l.is_some()).and_then(|(_, l)| l.clone());
        let mtu = link
            .and_then(|l| std::fs::read_to_string(format!("/sys/class/net/{l}/mtu")).ok())
            .and_then(|m| m.trim().parse::<u32>().ok())
            .unwrap_or(1500);
        Ok(mtu.saturating_sub(VXLAN_OVERHEAD).max(weft_model::network::MIN_MTU_V6))
    }

    /// Decide and commit an overlay network's create: list the cluster's
    /// overlay networks, check the subnets against them, pick the VNI, and
    /// commit with a transaction that fails if any of that changed.
    pub(crate) async fn create_overlay(
        &self,
        mut spec: NetworkSpec,
        dry_run: bool,
    ) -> Result<(Network, weft_model::api::Outcome), ControlError> {
        let what = format!("creating network {:?}", spec.name.as_str());
        let c = self.cluster_for(&what)?.clone();
        if spec.mtu.is_none() {
            spec.mtu = Some(self.overlay_mtu(&c).await?);
        }
        let tenant = spec.tenant.clone();
        for _ in 0..CLUSTER_TRIES {
            let (shared, epoch) = c.networks_now().await.map_err(|e| unavailable(&what, &e))?;
            let (net, change) = tokio::task::block_in_place(|| self.decider.create_network(&self.index, spec.clone()))?;
            for other in shared.iter().map(|s| &s.network).filter(|o| o.id != net.id) {
                match conflicts_with(&net.spec, &net.bridge, other) {
                    Some(InvalidOrExists::Invalid(e)) => return Err(e.into()),
                    Some(InvalidOrExists::Exists(m)) => return Err(ControlError::AlreadyExists(m)),
                    None => {}
                }
            }
            let used: Vec<u32> = shared.iter().filter_map(|s| s.network.overlay.as_ref().map(|o| o.vni)).collect();
            let vni = match spec.vni {
                Some(v) if used.contains(&v) => {
                    return Err(ControlError::AlreadyExists(format!("vni {v} is in use by another overlay network")));
                }
                Some(v) => v,
                None => (FIRST_AUTO_VNI..=MAX_VNI)
                    .find(|v| !used.contains(v))
                    .ok_or_else(|| ControlError::Exhausted("every VNI is in use".into()))?,
            };
            let net = net.with_vni(vni)?;
            let mut change = with_overlay(change, &net, c.settings.advertise_ip);
            change.cluster = Some(c.create_network(&net, epoch));
            let change = self.limited(change, &tenant);
            if dry_run {
                return Ok((net, self.carry_out(change, true, None).await?));
            }
            let _slot = self.locks.network(&net.id).await;
            match self.commit.commit(change, None).await {
                Ok(revision) => {
                    info!(network = %net.spec.name, tenant = %net.spec.tenant, vni, "overlay network created");
                    return Ok((net, weft_model::api::Outcome { revision, plan: None }));
                }
                Err(crate::commit::CommitError::Cluster(ClusterError::Conflict(current))) => {
                    let taken = |k: &str| current.iter().any(|(key, kv)| key == k && kv.is_some());
                    if taken(&keys::network_name(net.spec.tenant.as_str(), net.spec.name.as_str())) {
                        return Err(ControlError::AlreadyExists(format!(
                            "network {:?} already exists for tenant {:?} (on another node)",
                            net.spec.name.as_str(),
                            net.spec.tenant.as_str()
                        )));
                    }
                    if spec.vni.is_some() && taken(&keys::vni(vni)) {
                        return Err(ControlError::AlreadyExists(format!(
                            "vni {vni} is in use by another overlay network"
                        )));
                    }
                }
                Err(e) => return Err(e.into_control(&what)),
            }
        }
        Err(ControlError::Aborted(format!("{what}: other nodes kept changing the overlay networks; try again")))
    }

    /// Before an overlay network is removed here: mark it deleting in etcd
    /// (attaches anywhere then fail), check that no node has an endpoint
    /// on it, and remove it (every node then stops serving it).
    pub(crate) async fn unshare_network(&self, net: &Network) -> Result<(), ControlError> {
        let what = format!("deleting network {:?}", net.spec.name.as_str());
        let c = self.cluster_for(&what)?;
        let key = keys::network(&net.id);
        let (kvs, _) = c.etcd.list(&key).await.map_err(|e| unavailable(&what, &e))?;
        let Some(kv) = kvs.into_iter().find(|kv| kv.key == key) else { return Ok(()) };
        let marked = SharedNetwork { network: net.clone(), deleting: true };
        let mark = Txn {
            compares: vec![Cmp::ModRevision(key.clone(), kv.mod_revision)],
            puts: vec![(key.clone(), super::encode(&marked))],
            deletes: Vec::new(),
        };
        let changed = |e: ClusterError| match e {
            ClusterError::Conflict(_) => {
                ControlError::Aborted(format!("{what}: the network changed in the cluster meanwhile; try again"))
            }
            e => unavailable(&what, &e),
        };
        let rev = c.etcd.txn(&mark).await.map_err(changed)?;
        let (eps, _) =
            c.etcd.list(&format!("{}{}/", keys::ENDPOINTS, net.id)).await.map_err(|e| unavailable(&what, &e))?;
        if !eps.is_empty() {
            let mut nodes: Vec<String> =
                eps.iter().filter_map(|kv| decode::<Endpoint>(&kv.key, &kv.value)).filter_map(|e| e.node).collect();
            nodes.sort();
            nodes.dedup();
            let back = Txn {
                compares: vec![Cmp::ModRevision(key.clone(), rev)],
                puts: vec![(key.clone(), kv.value.clone())],
                deletes: Vec::new(),
            };
            if let Err(e) = c.etcd.txn(&back).await {
                warn!(network = %net.spec.name, error = %e, "unmarking a network still in use");
            }
            return Err(ControlError::FailedPrecondition(format!(
                "network {:?} has {} endpoint(s) attached on node(s) {}; detach them first",
                net.spec.name.as_str(),
                eps.len(),
                nodes.join(", ")
            )));
        }
        let vni = net.overlay.as_ref().map_or(0, |o| o.vni);
        let remove = Txn {
            compares: vec![Cmp::ModRevision(key.clone(), rev)],
            puts: vec![(keys::NETWORK_EPOCH.into(), net.id.clone().into_bytes())],
            deletes: vec![key, keys::vni(vni), keys::network_name(net.spec.tenant.as_str(), net.spec.name.as_str())],
        };
        c.etcd.txn(&remove).await.map(|_| ()).map_err(changed)
    }

    /// Share a decided attach to overlay network `net`: the transaction that
    /// claims its name and addresses while the network is as this node saw it.
    pub(crate) fn share_attach(&self, net: &Network, change: &mut Change) -> Result<Arc<Cluster>, ControlError> {
        let c = self.cluster_for(&change.what)?;
        let rev = c.view().networks.get(&net.id).copied().ok_or_else(|| {
            ControlError::Unavailable(format!(
                "{}: this node is not in sync with etcd yet; nothing was changed",
                change.what
            ))
        })?;
        c.attach(change, rev);
        Ok(c.clone())
    }

    /// Commit a shared attach. None if another node took an address (or
    /// changed the network) first: the lease view has been brought up to
    /// date and the caller decides again.
    pub(crate) async fn commit_shared_attach(
        &self,
        c: &Cluster,
        change: Change,
        slot: &mut crate::locks::NetSlot,
        net: &Network,
        name: &str,
        attempt: usize,
    ) -> Result<Option<weft_model::api::Outcome>, ControlError> {
        let what = change.what.clone();
        match self.commit.commit(change, Some(slot)).await {
            Ok(revision) => Ok(Some(weft_model::api::Outcome { revision, plan: None })),
            Err(crate::commit::CommitError::Cluster(ClusterError::Conflict(current))) => {
                super::attach_conflict(&current, net.spec.name.as_str(), name)?;
                back_off(attempt).await;
                self.refresh_leases(c, &net.id, slot).await?;
                if let Some((_, Some(kv))) = current.iter().find(|(k, _)| k.starts_with(keys::NETWORKS)) {
                    c.view().networks.insert(net.id.clone(), kv.mod_revision);
                }
                Ok(None)
            }
            Err(e) => Err(e.into_control(&what)),
        }
    }

    /// After an attach lost a compare-and-swap: mark every address leased
    /// in the cluster as taken in the network's lease view (one read), so
    /// the next decision starts past everything the other nodes took —
    /// learning only the one address that clashed would lose every race
    /// while other nodes allocate ahead.
    pub(crate) async fn refresh_leases(
        &self,
        c: &Cluster,
        network_id: &str,
        slot: &mut crate::locks::NetSlot,
    ) -> Result<(), ControlError> {
        let prefix = format!("{}{network_id}/", keys::LEASES);
        let (kvs, _) = c.etcd.list(&prefix).await.map_err(|e| unavailable("reading the leases", &e))?;
        for kv in kvs {
            if let Some(addr) = kv.key.strip_prefix(&prefix).and_then(|a| a.parse::<std::net::IpAddr>().ok()) {
                let holder = String::from_utf8_lossy(&kv.value).into_owned();
                slot.pool(&crate::locks::pool_key(network_id, addr)).reserve(addr, &holder);
            }
        }
        Ok(())
    }

    /// Finish on this node a detach whose etcd part is done (found by a
    /// sync): the kernel, the node's store, the lease view, DNS.
    pub(crate) async fn finish_detach(&self, ep: &Endpoint) {
        let mut slot = self.locks.network(&ep.network_id).await;
        let decided = self.index.read(|st| {
            let net = st.networks.get(&ep.network_id)?;
            let mine = st.endpoints.get(&ep.id)?.clone();
            Some(crate::decide::endpoint::detach(st, net, mine))
        });
        let Some(decided) = decided else { return };
        match decided {
            Ok((_, change)) => {
                if let Err(e) = self.commit.commit(change, Some(&mut slot)).await {
                    warn!(endpoint = %ep.spec.name, error = ?e, "finishing a detach; the next sync retries");
                }
            }
            Err(e) => warn!(endpoint = %ep.spec.name, error = %e, "finishing a detach"),
        }
    }

    /// `weft node ls`.
    pub(crate) async fn nodes(&self) -> Result<Vec<NodeView>, ControlError> {
        let c = self.cluster_for("listing nodes")?;
        let (kvs, _) = c.etcd.list(keys::ENDPOINTS).await.map_err(|e| unavailable("listing nodes", &e))?;
        let mut count: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for e in kvs.iter().filter_map(|kv| decode::<Endpoint>(&kv.key, &kv.value)) {
            *count.entry(e.node.unwrap_or_default()).or_default() += 1;
        }
        let v = c.view();
        let mut names: Vec<&String> = v.members.keys().chain(v.alive.keys()).collect();
        names.sort();
        names.dedup();
        Ok(names
            .into_iter()
            .filter_map(|n| {
                let rec = v.alive.get(n).or_else(|| v.members.get(n))?;
                Some(NodeView {
                    name: n.clone(),
                    advertise_ip: rec.advertise_ip.to_string(),
                    alive: v.alive.contains_key(n),
                    this: n == c.me(),
                    joined_ms: rec.joined_ms,
                    endpoints: count.get(n).copied().unwrap_or(0),
                })
            })
            .collect())
    }

    /// `weft node rm NAME`: refused while the node is alive; its
    /// endpoints' records, names and leases go with it.
    pub(crate) async fn forget_node(&self, name: String) -> Result<u64, ControlError> {
        let what = format!("removing node {}", weft_model::ids::shown(&name));
        let c = self.cluster_for(&what)?;
        weft_model::ids::check_node_name(&name).map_err(|e| InvalidRequest::new("name", e))?;
        let (alive, _) = c.etcd.list(&keys::node(&name)).await.map_err(|e| unavailable(&what, &e))?;
        if alive.iter().any(|kv| kv.key == keys::node(&name)) {
            return Err(ControlError::FailedPrecondition(format!(
                "node {name:?} is alive (its lease is renewed); stop its weftd first"
            )));
        }
        let (members, _) = c.etcd.list(&keys::member(&name)).await.map_err(|e| unavailable(&what, &e))?;
        if !members.iter().any(|kv| kv.key == keys::member(&name)) {
            return Err(ControlError::NotFound(format!("node {name:?} not found")));
        }
        let (kvs, _) = c.etcd.list(keys::ENDPOINTS).await.map_err(|e| unavailable(&what, &e))?;
        let mine: Vec<Endpoint> = kvs
            .iter()
            .filter_map(|kv| decode::<Endpoint>(&kv.key, &kv.value))
            .filter(|e| e.node.as_deref() == Some(name.as_str()))
            .collect();
        let mut txn = Txn {
            compares: vec![Cmp::Absent(keys::node(&name))],
            deletes: vec![keys::member(&name)],
            ..Txn::default()
        };
        for e in &mine {
            txn.deletes.extend(super::release(e).txn.deletes);
        }
        c.etcd.txn(&txn).await.map_err(|e| match e {
            ClusterError::Conflict(_) => {
                ControlError::FailedPrecondition(format!("node {name:?} came back meanwhile; it was kept"))
            }
            e => unavailable(&what, &e),
        })?;
        info!(node = %name, endpoints = mine.len(), "node removed from the cluster");
        Ok(mine.len() as u64)
    }
}

/// `change` (a decided create of `net` before it had its VNI) made for the
/// overlay network `net`: the network with its tunnel everywhere it is
/// named, and the VXLAN port after the bridge.
fn with_overlay(mut change: Change, net: &Network, local: std::net::IpAddr) -> Change {
    for n in change.new_networks.iter_mut().chain(change.batch.put_networks.iter_mut()) {
        *n = net.clone();
    }
    for d in &mut change.dns {
        if let DnsChange::Serve(n) = d {
            *n = net.clone();
        }
    }
    change.ops.extend(weft_plan::plan_overlay(net, local, None));
    change
}
