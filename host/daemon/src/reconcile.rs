//! Reconcile: make the kernel match the store. Runs at start-up and
//! periodically. Every step is idempotent: a missing bridge is re-created
//! with its gateways, veths are re-enslaved and brought up, endpoints whose
//! veth vanished are re-plumbed if their namespace still exists, weft's
//! nftables table is re-applied atomically, and endpoints left `Pending` by a
//! crash (never acknowledged) are undone.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use weft_model::endpoint::{Endpoint, EndpointMode, EndpointState};
use weft_plan::{Ns, Op, plan_endpoint, plan_endpoint_removal, plan_network};

use crate::controller::Ctl;

impl Ctl {
    /// One full reconcile pass.
    pub async fn reconcile(&self) {
        let _gate = self.gate.write().await;
        let (networks, endpoints) = {
            let st = self.lock();
            (st.networks.values().cloned().collect::<Vec<_>>(), st.endpoints.values().cloned().collect::<Vec<_>>())
        };
        for ep in endpoints.iter().filter(|e| e.state == EndpointState::Pending) {
            warn!(endpoint = %ep.spec.name, "undoing an attach that never completed");
            let Some(net) = networks.iter().find(|n| n.id == ep.network_id) else { continue };
            // A veth goes with its host end. A half-made macvlan child is
            // deleted under its temporary name only: a name inside the
            // namespace that the attach never got to claim is not weft's.
            let ops = match Endpoint::peer_tmp_ifname_for(&ep.id) {
                Ok(tmp) if !net.is_bridge() => vec![
                    Op::DeleteLink { ns: Ns::Host, link: tmp.clone() },
                    Op::DeleteLink { ns: Ns::Path(ep.spec.netns.clone()), link: tmp },
                ],
                _ => plan_endpoint_removal(net, ep),
            };
            if let Err(e) = self.kernel.apply(&ops).await {
                warn!(endpoint = %ep.spec.name, error = %e, "removing half-made endpoint");
            }
            if let Err(e) = self.store.delete_endpoint(&ep.id) {
                warn!(endpoint = %ep.spec.name, error = %e, "deleting pending record");
                continue;
            }
            self.lock().remove_endpoint(&ep.id);
        }
        for net in &networks {
            let observed = match self.kernel.observe_link(&net.bridge).await {
                Ok(o) => o,
                Err(e) => {
                    warn!(network = %net.spec.name, error = %e, "observing bridge");
                    continue;
                }
            };
            if observed.is_none() {
                warn!(network = %net.spec.name, bridge = %net.bridge, "bridge missing; re-creating");
            }
            if let Err(e) = self.apply_or_undo(&plan_network(net, observed.as_ref()), None).await {
                warn!(network = %net.spec.name, error = %e, "repairing bridge");
            }
        }
        if let Err(e) = self.sync_nft().await {
            warn!(error = %e, "applying nftables table");
        }
        for net in &networks {
            if let Err(e) = self.serve_dns(net).await {
                warn!(network = %net.spec.name, error = %e, "starting DNS");
            }
        }
        for ep in endpoints.iter().filter(|e| e.state == EndpointState::Ready && e.spec.mode == EndpointMode::Network) {
            let Some(net) = networks.iter().find(|n| n.id == ep.network_id && n.is_bridge()) else {
                continue;
            };
            match self.kernel.link_exists(&ep.host_ifname).await {
                Ok(true) => {
                    let ops = [
                        Op::SetMaster { link: ep.host_ifname.clone(), master: net.bridge.clone() },
                        Op::LinkUp { ns: Ns::Host, link: ep.host_ifname.clone() },
                    ];
                    if let Err(e) = self.kernel.apply(&ops).await {
                        warn!(endpoint = %ep.spec.name, error = %e, "re-attaching veth to bridge");
                    }
                }
                Ok(false) if ep.spec.netns.exists() => {
                    warn!(endpoint = %ep.spec.name, "veth missing; re-creating");
                    let tmp = match Endpoint::peer_tmp_ifname_for(&ep.id) {
                        Ok(t) => t,
                        Err(_) => continue,
                    };
                    let policy = self.lock().policy_of(&net.id);
                    if let Err(e) = self.apply_or_undo(&plan_endpoint(net, &policy.rules, ep, &tmp), None).await {
                        warn!(endpoint = %ep.spec.name, error = %e, "re-creating endpoint");
                    }
                }
                Ok(false) => {
                    warn!(endpoint = %ep.spec.name, netns = %ep.spec.netns.display(),
                        "namespace is gone; keeping the record until the endpoint is detached");
                }
                Err(e) => warn!(endpoint = %ep.spec.name, error = %e, "observing veth"),
            }
        }
        info!(networks = networks.len(), endpoints = endpoints.len(), "reconciled");
    }
}

/// Run [`Ctl::reconcile`] every `every`, if set.
pub fn spawn_periodic(ctl: Arc<Ctl>, every: Option<Duration>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(every) = every else { return };
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            ctl.reconcile().await;
        }
    })
}
