//! `commit(Change)`: the only place weftd changes anything. In order:
//! 1. claim what the change creates (network names, subnets and bridges;
//!    endpoints' published ports and interface names) against the index,
//!    including other commits' claims — so of N concurrent identical
//!    requests exactly one gets past here;
//! 2. apply the kernel ops (netlink first, then nftables under the nft
//!    lock; teardown ops are retried), and re-render weft's whole table if
//!    the change asks; on failure undo the applied prefix;
//! 3. in commit order: take the next revision, write the store
//!    transaction (objects, cursors, revision, events; concurrent commits
//!    share one, `record.rs`), update the index, publish the events;
//! 4. update the caller's lease view and the DNS table, record timings.
//!
//! The caller holds the network lock(s) the change needs (a plain attach
//! lets go of its lock after step 2: `released.rs`); this holds the index
//! lock only for checks and updates, never across an await.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;
use weft_kernel::{ApplyError, KernelApi, KernelError};
use weft_model::ControlError;
use weft_model::endpoint::{Endpoint, EndpointMode};
use weft_model::network::{InvalidOrExists, conflicts_with};
use weft_plan::{Op, undo};
use weft_store::Store;
use weft_store::etcd::{ClusterError, ClusterStore};

use crate::change::{Change, DnsChange, Guard};
use crate::events::Events;
use crate::index::{Index, State};
use crate::locks::NetSlot;
use crate::record::{Recorder, apply_to_index};
use crate::retire::Retired;
use crate::timings::{Phase, Timings};

mod released;

/// How often a failing teardown op is tried before the change fails.
const TEARDOWN_TRIES: u32 = 3;

/// A failed commit: why, and the ops that could not be undone.
#[derive(Debug)]
pub enum CommitError {
    /// Another object holds what the change claims.
    Conflict(ControlError),
    /// The kernel refused an op; the applied prefix was undone.
    Kernel(KernelError),
    /// The store refused the transaction; the kernel work was undone.
    Store(weft_store::StoreError),
    /// etcd refused the change (a comparison failed) or could not be
    /// reached; nothing was done.
    Cluster(ClusterError),
}

impl CommitError {
    /// The client's error for a change described as `what`.
    pub fn into_control(self, what: &str) -> ControlError {
        match self {
            CommitError::Conflict(e) => e,
            CommitError::Kernel(e) => ControlError::Internal(format!("{what}: {e}; rolled back")),
            CommitError::Store(e) => ControlError::Internal(format!("{what}: {e}; rolled back")),
            CommitError::Cluster(ClusterError::Conflict(_)) => {
                ControlError::Aborted(format!("{what}: a concurrent change in the cluster won; nothing was done"))
            }
            CommitError::Cluster(e @ ClusterError::Unavailable(_)) => {
                ControlError::Unavailable(format!("{what}: {e}; nothing was done"))
            }
            CommitError::Cluster(e) => ControlError::Internal(format!("{what}: {e}; nothing was done")),
        }
    }
}

/// Everything a commit writes to.
pub struct Committer {
    /// The kernel.
    pub kernel: Arc<dyn KernelApi>,
    /// The in-memory index.
    pub index: Arc<Index>,
    /// The event log.
    pub events: Arc<Events>,
    /// The embedded DNS server.
    pub dns: weft_dns::Dns,
    /// Cluster mode: the cluster store (etcd).
    pub etcd: Option<Arc<dyn ClusterStore>>,
    /// Per-phase timings.
    pub timings: Arc<Timings>,
    /// Retired links awaiting their batched deletion.
    pub retired: Arc<Retired>,
    /// Serialises nftables transactions, so the newest render always wins
    /// and element changes never interleave with a render.
    nft_lock: tokio::sync::Mutex<()>,
    /// Step 3, group-committed.
    recorder: Arc<Recorder>,
    /// Commits between their kernel work and their record hold it shared;
    /// a whole-table render and a settle take it alone (`released.rs`).
    flight: Arc<tokio::sync::RwLock<()>>,
}

impl Committer {
    /// A committer over these parts.
    pub fn new(
        kernel: Arc<dyn KernelApi>,
        store: Arc<dyn Store>,
        index: Arc<Index>,
        events: Events,
        dns: weft_dns::Dns,
    ) -> Committer {
        let (events, timings) = (Arc::new(events), Arc::new(Timings::default()));
        Committer {
            retired: Arc::new(Retired::new(kernel.clone())),
            recorder: Arc::new(Recorder::new(store, index.clone(), events.clone(), timings.clone())),
            kernel,
            index,
            events,
            dns,
            etcd: None,
            timings,
            nft_lock: tokio::sync::Mutex::new(()),
            flight: Arc::new(tokio::sync::RwLock::new(())),
        }
    }

    /// Carry out `change`. `slot` is the caller's held network lock, whose
    /// lease view the change's lease changes go to. Returns the commit's
    /// revision (the current one if the change was empty).
    pub async fn commit(&self, change: Change, slot: Option<&mut NetSlot>) -> Result<u64, CommitError> {
        if change.is_empty() {
            return Ok(self.events.revision());
        }
        let change = Arc::new(change);
        self.claim(&change)?;
        if let Err(e) = self.share(&change).await {
            self.release_claims(&change);
            return Err(e);
        }
        self.settle_namespaces(&change).await;
        let retiring = self.retiring(&change);
        // A render reads the index whole: no commit may be between its
        // kernel work and its record meanwhile.
        let result = if change.render_nft {
            let _alone = self.flight.write().await;
            self.apply_and_record(&change).await
        } else {
            let _shared = self.flight.read().await;
            self.apply_and_record(&change).await
        };
        if result.is_err() {
            self.unshare(&change).await;
            self.release_claims(&change);
            return result;
        }
        if let Some(netns_ids) = retiring {
            self.retired.retired(netns_ids);
        }
        if let Some(slot) = slot {
            apply_leases(slot, &change, false);
        }
        self.dns_step(&change).await;
        result
    }

    /// Step 4's DNS table update, timed.
    async fn dns_step(&self, change: &Change) {
        let t = Instant::now();
        self.apply_dns(&change.dns).await;
        if let Some(p) = change.phases.dns
            && !change.dns.is_empty()
        {
            self.timings.record(p, t.elapsed());
        }
    }

    /// Force the pending deletion of retired links in the namespaces the
    /// change attaches to (their interface names are to be reused).
    async fn settle_namespaces(&self, change: &Change) {
        for ep in &change.new_endpoints {
            self.retired.settle(ep.netns_id).await;
        }
    }

    /// If the change retires links: the namespaces of the endpoints it
    /// deletes (read before the commit removes them from the index).
    fn retiring(&self, change: &Change) -> Option<Vec<u64>> {
        if !change.ops.iter().any(|o| matches!(o, Op::RetireLink { .. })) {
            return None;
        }
        let st = self.index.lock();
        Some(change.batch.delete_endpoints.iter().map(|id| st.endpoints.get(id).map_or(0, |e| e.netns_id)).collect())
    }

    /// Step 1: check and hold what the change creates.
    fn claim(&self, change: &Change) -> Result<(), CommitError> {
        let mut st = self.index.lock();
        for net in &change.new_networks {
            for other in st.all_networks() {
                match conflicts_with(&net.spec, &net.bridge, other) {
                    Some(InvalidOrExists::Invalid(e)) => return Err(CommitError::Conflict(e.into())),
                    Some(InvalidOrExists::Exists(m)) => {
                        return Err(CommitError::Conflict(ControlError::AlreadyExists(m)));
                    }
                    None => {}
                }
            }
        }
        for ep in &change.new_endpoints {
            check_endpoint(&st, ep, change.foreign_netns).map_err(CommitError::Conflict)?;
        }
        if let Some((tenant, limits)) = &change.quota {
            crate::quota::check(&st, change, tenant, limits).map_err(CommitError::Conflict)?;
        }
        for g in &change.guards {
            match g {
                Guard::ModuleExists(key, name) if !st.modules.contains_key(key) => {
                    return Err(CommitError::Conflict(ControlError::NotFound(format!("module {name:?} not found"))));
                }
                Guard::ModuleUnbound(tenant, name) => {
                    let bound = crate::modules::bound_to(&st, name, tenant);
                    if !bound.is_empty() {
                        return Err(CommitError::Conflict(ControlError::FailedPrecondition(format!(
                            "module {name:?} is bound to network(s) {}; remove or update them first",
                            bound.join(", ")
                        ))));
                    }
                }
                Guard::ModuleExists(..) => {}
            }
        }
        for net in &change.new_networks {
            st.pending_networks.insert(net.id.clone(), net.clone());
        }
        for ep in &change.new_endpoints {
            st.pending_endpoints.insert(ep.id.clone(), ep.clone());
        }
        Ok(())
    }

    /// Cluster mode: commit the change's etcd transaction, before any
    /// kernel work — a conflict or etcd being away then costs nothing.
    async fn share(&self, change: &Change) -> Result<(), CommitError> {
        let (Some(w), Some(etcd)) = (&change.cluster, &self.etcd) else {
            return match &change.cluster {
                Some(w) if !w.txn.is_empty() => {
                    Err(CommitError::Cluster(ClusterError::Unavailable("weftd is not in a cluster".into())))
                }
                _ => Ok(()),
            };
        };
        if w.txn.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let r = etcd.txn(&w.txn).await.map(|_| ()).map_err(CommitError::Cluster);
        self.timings.record(Phase::ClusterTxn, t.elapsed());
        r
    }

    /// Take back a shared change whose commit failed afterwards. If etcd is
    /// away now, the node's next sync with etcd finds and removes it.
    async fn unshare(&self, change: &Change) {
        if let (Some(w), Some(etcd)) = (&change.cluster, &self.etcd)
            && !w.undo.is_empty()
            && let Err(e) = etcd.txn(&w.undo).await
        {
            warn!(change = %change.what, error = %e, "taking back a shared change; the next sync with etcd will");
        }
    }

    fn release_claims(&self, change: &Change) {
        let mut st = self.index.lock();
        for net in &change.new_networks {
            st.pending_networks.remove(&net.id);
        }
        for ep in &change.new_endpoints {
            st.pending_endpoints.remove(&ep.id);
        }
    }

    /// Steps 2 and 3.
    async fn apply_and_record(&self, change: &Arc<Change>) -> Result<u64, CommitError> {
        self.apply_ops(change).await.map_err(CommitError::Kernel)?;
        if change.render_nft
            && let Err(e) = self.render(change).await
        {
            self.undo(&change.ops).await;
            return Err(CommitError::Kernel(e));
        }
        match self.record(change).await {
            Ok(rev) => Ok(rev),
            Err(e) => {
                self.undo(&change.ops).await;
                if change.render_nft
                    && let Err(e) = self.render_index().await
                {
                    warn!(error = %e, "restoring nftables after a failed store commit");
                }
                Err(CommitError::Store(e))
            }
        }
    }

    /// Step 3, timed.
    async fn record(&self, change: &Arc<Change>) -> Result<u64, weft_store::StoreError> {
        let t = Instant::now();
        let recorded = self.recorder.record(change.clone()).await;
        if let Some(p) = change.phases.store {
            self.timings.record(p, t.elapsed());
        }
        recorded
    }

    /// Apply the change's ops; on failure undo the applied prefix.
    async fn apply_ops(&self, change: &Change) -> Result<(), KernelError> {
        let ops = &change.ops;
        let mut done = 0;
        while done < ops.len() {
            let nft = is_nft(&ops[done]);
            let end = ops[done..].iter().position(|o| is_nft(o) != nft).map_or(ops.len(), |p| done + p);
            let t = Instant::now();
            let _g = if nft { Some(self.nft_lock.lock().await) } else { None };
            let r = self.apply_retrying(&ops[done..end], change.teardown).await;
            drop(_g);
            let phase = if nft { change.phases.nft } else { change.phases.netlink };
            if let Some(p) = phase {
                self.timings.record(p, t.elapsed());
            }
            if let Err(ApplyError { applied, error }) = r {
                self.undo(&ops[..done + applied]).await;
                return Err(error);
            }
            done = end;
        }
        Ok(())
    }

    /// Apply `ops`; a teardown retries a failing op before giving up.
    async fn apply_retrying(&self, ops: &[Op], teardown: bool) -> Result<(), ApplyError> {
        let mut from = 0;
        let mut tries = 0;
        loop {
            match self.kernel.apply(&ops[from..]).await {
                Ok(()) => return Ok(()),
                Err(ApplyError { applied, error }) => {
                    from += applied;
                    tries = if applied > 0 { 1 } else { tries + 1 };
                    if !teardown || tries >= TEARDOWN_TRIES {
                        return Err(ApplyError { applied: from, error });
                    }
                    warn!(op = %ops[from].command(), error = %error, try_ = tries, "teardown op failed; retrying");
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(tries))).await;
                }
            }
        }
    }

    /// Undo applied ops, reporting (not returning) what could not be undone.
    async fn undo(&self, applied: &[Op]) {
        let back = undo(applied);
        if back.is_empty() {
            return;
        }
        let nft = back.iter().any(is_nft);
        let _g = if nft { Some(self.nft_lock.lock().await) } else { None };
        if let Err(e) = self.kernel.apply(&back).await {
            warn!(error = %e, "undoing a failed change also failed; reconcile will repair it");
        }
    }

    /// Render weft's table as the index will be with `change` in it.
    async fn render(&self, change: &Change) -> Result<(), KernelError> {
        let _g = self.nft_lock.lock().await;
        let script = {
            let st = self.index.lock();
            let mut next = st.clone();
            apply_to_index(&mut next, change, 0);
            next.render_nft()
        };
        let t = Instant::now();
        let r = self.kernel.apply(&[Op::Nft { script }]).await.map_err(|e| e.error);
        if let Some(p) = change.phases.nft {
            self.timings.record(p, t.elapsed());
        }
        r
    }

    /// Render weft's table from the index as it is, once no commit is
    /// between its kernel work and its record.
    pub async fn render_current(&self) -> Result<(), KernelError> {
        let _alone = self.flight.write().await;
        self.render_index().await
    }

    /// The same, by a caller that holds `flight` alone already.
    async fn render_index(&self) -> Result<(), KernelError> {
        let _g = self.nft_lock.lock().await;
        let script = self.index.lock().render_nft();
        self.kernel.apply(&[Op::Nft { script }]).await.map_err(|e| e.error)
    }

    async fn apply_dns(&self, changes: &[DnsChange]) {
        for d in changes {
            match d {
                DnsChange::Serve(net) => {
                    if self.dns.serves(&net.id) {
                        continue;
                    }
                    let gateways: Vec<std::net::IpAddr> = net.spec.subnets.iter().map(|s| s.gateway).collect();
                    let subnets: Vec<ipnet::IpNet> = net.spec.subnets.iter().map(|s| s.subnet).collect();
                    let upstreams = (!net.spec.dns_upstream.is_empty()).then(|| net.spec.dns_upstream.clone());
                    if let Err(e) =
                        self.dns.serve_network(&net.id, net.spec.name.as_str(), &gateways, &subnets, upstreams).await
                    {
                        warn!(network = %net.spec.name, error = %e, "starting DNS; reconcile retries");
                    }
                }
                DnsChange::Stop(id) => self.dns.stop_network(id).await,
                DnsChange::Set(net, ep, records) => {
                    let addrs: Vec<std::net::IpAddr> = ep.addresses.iter().map(|a| a.addr()).collect();
                    self.dns.set_endpoint(net, &ep.id, ep.netns_id, &addrs, records.clone());
                }
                DnsChange::Remove(net, ep) => self.dns.remove_endpoint(net, ep),
            }
        }
    }

    /// Record `d` under `p`.
    pub fn time(&self, p: Phase, d: Duration) {
        self.timings.record(p, d);
    }
}

/// Put the change's lease changes in `slot`'s view (`undo`: take them
/// back).
fn apply_leases(slot: &mut NetSlot, change: &Change, undo: bool) {
    for l in &change.leases {
        let pool = slot.pool(&l.pool);
        if l.reserve != undo {
            pool.reserve(l.addr, &l.endpoint);
        } else {
            pool.release(l.addr, &l.endpoint);
        }
    }
}

fn is_nft(op: &Op) -> bool {
    matches!(op, Op::Nft { .. } | Op::NftElements { .. })
}

/// The cross-network rules an endpoint must meet when it is committed:
/// its published ports are free on the host, and its interface name is
/// free in its namespace. Messages name only the caller's own objects.
pub fn check_endpoint(
    st: &State,
    ep: &weft_model::endpoint::Endpoint,
    foreign_netns: bool,
) -> Result<(), ControlError> {
    // One pass over the namespace's other endpoints: whose they are, and
    // whether one has the interface name.
    let (mut foreign, mut ifname_holder) = (false, None);
    for e in in_netns(st, ep.netns_id, &ep.id) {
        foreign |= e.spec.tenant != ep.spec.tenant;
        if e.spec.mode == EndpointMode::Network && e.spec.ifname == ep.spec.ifname {
            ifname_holder.get_or_insert(e);
        }
    }
    if foreign && !foreign_netns {
        return Err(foreign_netns_refused(&ep.spec.netns));
    }
    if ep.spec.mode != EndpointMode::Network {
        return Ok(());
    }
    for m in &ep.spec.publish {
        if let Some(holder) =
            st.all_endpoints().find(|e| e.id != ep.id && e.spec.publish.iter().any(|o| o.clashes_with(m)))
        {
            if holder.spec.tenant != ep.spec.tenant {
                // Another tenant's: say what is unavailable, not whose.
                let ports = if m.len() == 1 {
                    format!("{}", m.host_port)
                } else {
                    format!("{}-{}", m.host_port, m.host_port_end)
                };
                return Err(ControlError::AlreadyExists(format!("host port {ports}/{} is in use", m.proto)));
            }
            let network = st
                .all_networks()
                .find(|n| n.id == holder.network_id)
                .map(|n| n.spec.name.to_string())
                .unwrap_or_default();
            return Err(ControlError::AlreadyExists(format!(
                "port {m} is already published by endpoint {:?} on network {network:?}",
                holder.spec.name.as_str()
            )));
        }
    }
    if let Some(other) = ifname_holder {
        return Err(ifname_taken(&ep.spec.ifname, &ep.spec.netns, other.spec.name.as_str()));
    }
    Ok(())
}

/// The endpoints, committed or being committed, in namespace `netns_id`
/// (none for 0: no namespace), other than `except`.
pub fn in_netns<'a>(st: &'a State, netns_id: u64, except: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
    st.all_endpoints().filter(move |e| netns_id != 0 && e.netns_id == netns_id && e.id != except)
}

/// A namespace is one tenant's, the tenant whose endpoints are in it (the
/// first to attach it): the refusal of another tenant's attach, which says
/// nothing of whose it is.
pub fn foreign_netns_refused(netns: &std::path::Path) -> ControlError {
    ControlError::PermissionDenied(format!(
        "netns {}: the namespace is attached to another tenant's network, and a namespace is one tenant's \
         (only an operator may override: allow_foreign_netns)",
        netns.display()
    ))
}

/// The refusal of an interface name already used in a namespace.
pub fn ifname_taken(ifname: &weft_model::IfName, netns: &std::path::Path, by: &str) -> ControlError {
    ControlError::AlreadyExists(format!("interface {ifname} in {} is already used by endpoint {by:?}", netns.display()))
}
