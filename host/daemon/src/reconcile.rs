//! Reconcile: observe the kernel, let the planner compute what differs from
//! the index, and commit the repair — the same commit path as an API call,
//! with a `repair` event naming what had drifted and what was done. It
//! runs at start-up, when the drift watcher sees weft's objects change, and
//! periodically as a backstop. Per network it holds that network's lock
//! only, so it never stalls another network's requests.
//!
//! What it repairs: a missing, downed or unaddressed bridge (re-created
//! with its gateways); a host veth missing (the endpoint is re-plumbed if
//! its namespace still exists), detached from its bridge or down; a veth
//! port of a weft bridge that no endpoint owns (left by a crash between
//! the kernel work and the store commit: deleted); weft's nftables table
//! (re-rendered whole, one transaction); a network's DNS service; records
//! left `Pending` by an older weftd (undone). It never touches links that
//! are not weft's bridges or their ports, nor any other nft table.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use weft_kernel::watch::KernelEvent;
use weft_model::endpoint::{Endpoint, EndpointMode, EndpointState};
use weft_model::event::{Event, EventKind};
use weft_model::network::Network;
use weft_plan::{
    Ns, ObservedLink, Op, plan_endpoint, plan_endpoint_removal, plan_inside_repair, plan_network, plan_orphan_removal,
    plan_veth_repair,
};

use crate::change::{Change, DnsChange, LeaseChange};
use crate::controller::Ctl;

/// What set a reconcile pass off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Start-up.
    Start,
    /// The periodic backstop.
    Periodic,
    /// The drift watcher saw a weft link change.
    Links,
    /// The drift watcher saw weft's nftables table change.
    Nft,
}

/// What part of a network a repair looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Bridge, every endpoint, orphan ports, DNS.
    All,
    /// The bridge only (its ports too if it had to be re-created).
    Bridge,
    /// These endpoints' host veths (by endpoint id).
    Endpoints(Vec<String>),
}

/// Add `s` to what is repaired of network `net`.
fn widen(scopes: &mut BTreeMap<String, Scope>, net: &str, s: Scope) {
    let next = match (scopes.remove(net), s) {
        (Some(Scope::All), _) | (_, Scope::All) => Scope::All,
        (Some(Scope::Endpoints(mut a)), Scope::Endpoints(b)) => {
            a.extend(b);
            Scope::Endpoints(a)
        }
        (Some(Scope::Endpoints(_)), Scope::Bridge) | (Some(Scope::Bridge), Scope::Endpoints(_)) => Scope::All,
        (_, s) => s,
    };
    scopes.insert(net.to_owned(), next);
}

/// A repair event for `net`.
fn repair(net: &Network, name: &str, what: String) -> Event {
    Event::new(EventKind::Repaired, net.spec.tenant.as_str(), net.spec.name.as_str(), name).with_message(what)
}

/// What differs between a bridge as observed and as planned.
fn bridge_drift(net: &Network, observed: Option<&ObservedLink>, ops: &[Op]) -> Option<String> {
    let fixes: Vec<&Op> = ops.iter().filter(|o| !matches!(o, Op::Sysctl { .. })).collect();
    if fixes.is_empty() {
        return None;
    }
    Some(match observed {
        None => format!("bridge {} was missing: re-created with its gateways", net.bridge),
        Some(o) if !o.up => format!("bridge {} was down: brought up", net.bridge),
        Some(_) => format!("bridge {} lacked a gateway address: re-added", net.bridge),
    })
}

impl Ctl {
    /// One reconcile pass.
    pub async fn reconcile(&self, trigger: Trigger) {
        let _pass = self.reconciling.lock().await;
        // Links retired by detaches (and left by a crash before their
        // deletion) go first, so the pass sees only links in service.
        self.commit.retired.reap_all().await;
        let networks: Vec<Network> = self.index.read(|st| st.networks.values().cloned().collect());
        self.undo_pending().await;
        for net in &networks {
            self.reconcile_network(net, &Scope::All).await;
        }
        self.repair_nft(trigger == Trigger::Nft).await;
        if trigger != Trigger::Links && trigger != Trigger::Nft {
            info!(networks = networks.len(), trigger = ?trigger, "reconciled");
        }
    }

    /// Re-apply weft's whole table; `drifted`: someone else changed it, so
    /// the repair is reported.
    async fn repair_nft(&self, drifted: bool) {
        match self.commit.render_current().await {
            Ok(()) if drifted => {
                let mut c = Change::new("repairing nftables");
                c.events.push(
                    Event::new(EventKind::Repaired, "", "", weft_plan::nft::NFT_TABLE)
                        .with_message("weft's nftables table was changed outside weft: re-applied whole"),
                );
                self.count_repair("nft");
                if let Err(e) = self.commit.commit(c, None).await {
                    warn!(error = ?e, "recording the nftables repair");
                }
                warn!("nftables table changed outside weft: re-applied");
            }
            Ok(()) => {}
            Err(e) => warn!(error = %e, "applying nftables table"),
        }
    }

    /// Repair what kernel notifications say drifted: only weft's own
    /// bridges and host veths (and table), each under its network's lock.
    pub async fn repair_drift(&self, events: Vec<KernelEvent>) {
        // A burst holds every step of what happened (an attach creates its
        // veth down and masterless, then enslaves it and sets it up): only
        // each link's last state says whether anything is wrong.
        let mut links: HashMap<String, (bool, bool, Option<u32>)> = HashMap::new();
        let mut addr_gone: HashSet<u32> = HashSet::new();
        let mut nft = false;
        for e in events {
            match e {
                KernelEvent::Link { name, gone, up, master } => {
                    links.insert(name, (gone, up, master));
                }
                KernelEvent::AddrGone { index } => {
                    addr_gone.insert(index);
                }
                KernelEvent::Nft => nft = true,
                KernelEvent::Overflow => {
                    self.reconcile(Trigger::Links).await;
                    return;
                }
            }
        }
        // Links whose last state is wrong for a weft bridge (gone or down:
        // `true`) or host veth (also out of its bridge: `false`).
        let bad: HashMap<&str, bool> = links
            .iter()
            .map(|(name, (gone, up, master))| (name.as_str(), *gone || !up, master.is_none()))
            .filter(|(_, down, loose)| *down || *loose)
            .map(|(name, down, _)| (name, down))
            .collect();
        let mut scopes: BTreeMap<String, Scope> = BTreeMap::new();
        if !bad.is_empty() || !addr_gone.is_empty() {
            let (bridges, veths) = self.index.read(|st| {
                let bridges: Vec<(String, String)> = st
                    .networks
                    .values()
                    .filter(|n| n.is_bridge())
                    .map(|n| (n.bridge.to_string(), n.id.clone()))
                    .collect();
                let veths: Vec<(String, String)> = st
                    .endpoints
                    .values()
                    .filter(|e| e.spec.mode == EndpointMode::Network && bad.contains_key(e.host_ifname.as_str()))
                    .map(|e| (e.network_id.clone(), e.id.clone()))
                    .collect();
                (bridges, veths)
            });
            for (name, net) in &bridges {
                if bad.get(name.as_str()) == Some(&true) {
                    widen(&mut scopes, net, Scope::All);
                }
                // Only an address of a weft bridge matters (a veth going
                // takes its own link-local addresses with it).
                if !addr_gone.is_empty() && weft_kernel::watch::index_of(name).is_some_and(|i| addr_gone.contains(&i)) {
                    widen(&mut scopes, net, Scope::Bridge);
                }
            }
            for (net, ep) in veths {
                widen(&mut scopes, &net, Scope::Endpoints(vec![ep]));
            }
        }
        for (id, scope) in scopes {
            let Some(net) = self.index.read(|st| st.networks.get(&id).cloned()) else { continue };
            self.reconcile_network(&net, &scope).await;
        }
        if nft {
            self.repair_nft(true).await;
        }
    }

    /// Records left `Pending` by an older weftd were never acknowledged:
    /// undo them.
    async fn undo_pending(&self) {
        let pending: Vec<(Network, Endpoint)> = self.index.read(|st| {
            st.endpoints
                .values()
                .filter(|e| e.state == EndpointState::Pending)
                .filter_map(|e| st.networks.get(&e.network_id).map(|n| (n.clone(), e.clone())))
                .collect()
        });
        for (net, ep) in pending {
            let mut slot = self.locks.network(&net.id).await;
            warn!(endpoint = %ep.spec.name, "undoing an attach that never completed");
            let mut c = Change::new(format!("undoing the unfinished attach of {:?}", ep.spec.name.as_str()));
            // A half-made macvlan child is deleted under its temporary name
            // only: a name inside the namespace that the attach never got to
            // claim is not weft's.
            c.ops = match Endpoint::peer_tmp_ifname_for(&ep.id) {
                Ok(tmp) if !net.is_bridge() => vec![
                    Op::DeleteLink { ns: Ns::Host, link: tmp.clone() },
                    Op::DeleteLink { ns: Ns::Path(ep.spec.netns.clone()), link: tmp },
                ],
                _ => plan_endpoint_removal(&net, &ep),
            };
            c.teardown = true;
            c.batch.delete_endpoints.push(ep.id.clone());
            c.leases.extend(LeaseChange::of(&ep, false));
            c.events.push(repair(&net, ep.spec.name.as_str(), "an attach that never completed was undone".into()));
            self.count_repair("pending");
            if let Err(e) = self.commit.commit(c, Some(&mut slot)).await {
                warn!(endpoint = %ep.spec.name, error = ?e, "undoing a pending endpoint");
            }
        }
    }

    /// Repair `scope` of one network — its bridge, its endpoints' host
    /// veths, orphan ports and DNS — under the network's lock.
    async fn reconcile_network(&self, net: &Network, scope: &Scope) {
        let mut slot = self.locks.network(&net.id).await;
        let (endpoints, policy, still) = self.index.read(|st| {
            let in_scope = |e: &&Endpoint| match scope {
                Scope::Endpoints(ids) => ids.contains(&e.id),
                _ => true,
            };
            (
                st.endpoints_of(&net.id).filter(in_scope).cloned().collect::<Vec<Endpoint>>(),
                st.policy_of(&net.id),
                st.networks.contains_key(&net.id),
            )
        });
        if !still {
            return;
        }
        let mut c = Change::new(format!("repairing network {:?}", net.spec.name.as_str()));
        let mut bridge_missing = false;
        if !matches!(scope, Scope::Endpoints(_)) {
            let observed = match self.commit.kernel.observe_link(&net.bridge).await {
                Ok(o) => o,
                Err(e) => {
                    warn!(network = %net.spec.name, error = %e, "observing bridge");
                    return;
                }
            };
            let ops = plan_network(net, observed.as_ref());
            if let Some(what) = bridge_drift(net, observed.as_ref(), &ops) {
                warn!(network = %net.spec.name, "{what}");
                c.events.push(repair(net, net.spec.name.as_str(), what));
                self.count_repair("bridge");
            }
            c.ops = ops;
            bridge_missing = observed.is_none();
        }
        if net.is_bridge() {
            // `endpoints` is already only an endpoint scope's endpoints.
            let wanted = !matches!(scope, Scope::Bridge) || bridge_missing;
            let ready = |e: &&Endpoint| e.state == EndpointState::Ready && e.spec.mode == EndpointMode::Network;
            if wanted {
                for ep in endpoints.iter().filter(ready) {
                    self.repair_veth(net, ep, &policy.rules, bridge_missing, &mut c).await;
                }
            }
            if *scope == Scope::All {
                self.remove_orphans(net, &endpoints, &mut c).await;
            }
        }
        if *scope == Scope::All && !bridge_missing {
            let owners = self.index.read(route_owners);
            for ep in
                endpoints.iter().filter(|e| e.state == EndpointState::Ready && e.spec.mode == EndpointMode::Network)
            {
                let owns_route = owners.get(&ep.netns_id) == Some(&ep.id);
                self.repair_inside(net, ep, owns_route, &mut c).await;
            }
        }
        if *scope == Scope::All && net.spec.dns && !self.commit.dns.serves(&net.id) {
            c.dns.push(DnsChange::Serve(net.clone()));
            for ep in endpoints.iter().filter(|e| e.state == EndpointState::Ready) {
                match tokio::task::block_in_place(|| self.decider.names(net, ep)) {
                    Ok(r) if !r.is_empty() => c.dns.push(DnsChange::Set(net.id.clone(), ep.clone(), r)),
                    Ok(_) => {}
                    Err(e) => warn!(endpoint = %ep.spec.name, error = %e, "naming"),
                }
            }
        }
        if let Err(e) = self.commit.commit(c, Some(&mut slot)).await {
            warn!(network = %net.spec.name, error = ?e, "repairing network");
        }
    }

    /// Observe one endpoint's host veth and plan its repair into `c`.
    async fn repair_veth(
        &self,
        net: &Network,
        ep: &Endpoint,
        rules: &weft_model::policy::RuleSet,
        bridge_missing: bool,
        c: &mut Change,
    ) {
        let observed = match self.commit.kernel.observe_link(&ep.host_ifname).await {
            Ok(o) => o,
            Err(e) => {
                warn!(endpoint = %ep.spec.name, error = %e, "observing veth");
                return;
            }
        };
        let name = ep.spec.name.as_str();
        let netns_alive = observed.is_none() && self.commit.kernel.netns_id(&ep.spec.netns).await.is_ok();
        match observed {
            Some(o) => {
                let ops = plan_veth_repair(net, ep, &o);
                if ops.is_empty() {
                    return;
                }
                c.ops.extend(ops);
                // A re-created bridge's ports are reported with the bridge.
                if !bridge_missing {
                    let what = if o.up { "was not a port of its bridge" } else { "was down" };
                    c.events.push(repair(net, name, format!("veth {} {what}: re-attached", ep.host_ifname)));
                    self.count_repair("veth");
                }
            }
            None if netns_alive => {
                let Ok(tmp) = Endpoint::peer_tmp_ifname_for(&ep.id) else { return };
                warn!(endpoint = %name, "veth missing; re-creating");
                // The container end went with the host end; the namespace
                // may still hold a stale route: the plan re-adds what is missing.
                c.ops.extend(plan_endpoint(net, rules, ep, &tmp));
                c.events.push(repair(net, name, format!("veth {} was missing: endpoint re-plumbed", ep.host_ifname)));
                self.count_repair("veth");
            }
            None => {
                warn!(endpoint = %name, netns = %ep.spec.netns.display(),
                    "namespace is gone; keeping the record until the endpoint is detached");
            }
        }
    }

    /// Inside the endpoint's namespace: its interface up with its
    /// addresses, and (if it holds the namespace's default route) the route.
    /// Skipped when the interface itself is missing (the veth repair
    /// re-plumbs it) or the namespace is gone.
    async fn repair_inside(&self, net: &Network, ep: &Endpoint, owns_route: bool, c: &mut Change) {
        if c.ops.iter().any(|o| matches!(o, Op::CreateVeth { name, .. } if *name == ep.host_ifname)) {
            return;
        }
        let Ok(inside) = self.commit.kernel.observe_inside(&ep.spec.netns, &ep.spec.ifname).await else { return };
        let ops = plan_inside_repair(net, ep, &inside, owns_route);
        let name = ep.spec.name.as_str();
        let fixed: Vec<String> = ops.iter().map(Op::command).collect();
        c.ops.extend(ops);
        if !fixed.is_empty() {
            warn!(endpoint = %name, "inside the namespace: restored with {}", fixed.join("; "));
            c.events.push(repair(
                net,
                name,
                format!("inside {}: drifted; restored with {}", ep.spec.netns.display(), fixed.join("; ")),
            ));
            self.count_repair("inside");
        }
    }

    /// Ports of the bridge named like weft's veths that no endpoint owns.
    async fn remove_orphans(&self, net: &Network, endpoints: &[Endpoint], c: &mut Change) {
        let Ok(ports) = self.commit.kernel.ports_of(&net.bridge).await else { return };
        let known: BTreeSet<&str> = endpoints.iter().map(|e| e.host_ifname.as_str()).collect();
        let pending: BTreeSet<String> =
            self.index.read(|st| st.pending_endpoints.values().map(|e| e.host_ifname.to_string()).collect());
        for p in ports {
            let weft_named = p
                .as_str()
                .strip_prefix("veth")
                .is_some_and(|h| h.len() == 11 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if weft_named && !known.contains(p.as_str()) && !pending.contains(p.as_str()) {
                warn!(network = %net.spec.name, link = %p, "orphan veth (no endpoint owns it); deleting");
                c.ops.extend(plan_orphan_removal(&p));
                c.events.push(repair(net, p.as_str(), format!("orphan veth {p} (no endpoint) was deleted")));
                self.count_repair("orphan");
            }
        }
    }
}

/// For each namespace, the endpoint that holds its default route: the
/// ready one with the lowest interface name (as after a detach).
fn route_owners(st: &crate::index::State) -> HashMap<u64, String> {
    let mut best: HashMap<u64, &Endpoint> = HashMap::new();
    for e in st.endpoints.values() {
        if e.netns_id == 0 || e.state != EndpointState::Ready || e.spec.mode != EndpointMode::Network {
            continue;
        }
        let slot = best.entry(e.netns_id).or_insert(e);
        if e.spec.ifname < slot.spec.ifname {
            *slot = e;
        }
    }
    best.into_iter().map(|(ns, e)| (ns, e.id.clone())).collect()
}

/// Run [`Ctl::reconcile`] every `every`, if set.
pub fn spawn_periodic(ctl: Arc<Ctl>, every: Option<Duration>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(every) = every else { return };
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            ctl.reconcile(Trigger::Periodic).await;
        }
    })
}
