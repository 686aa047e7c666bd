//! Network create and remove, decided: the bindings, the compiled policy
//! (a policy that does not compile refuses the network before anything is
//! made), the bridge plan, the table re-render, the store writes, DNS and
//! the event. Conflicts with other networks (name, subnet, bridge) are
//! checked again by the commit, against networks other commits are making.

use std::sync::Arc;

use weft_model::endpoint::Endpoint;
use weft_model::event::{Event, EventKind};
use weft_model::module::store_key;
use weft_model::network::{Network, NetworkSpec};
use weft_model::{ControlError, InvalidRequest, NetworkName, Tenant};
use weft_plan::{plan_endpoint_removal, plan_network, plan_network_removal};
use weft_wasm::Kind;

use super::endpoint::endpoint_event;
use super::{Decider, network_info, new_id, policy_error};
use crate::change::{Change, DnsChange, Guard};
use crate::index::{Index, State, documents_for};

/// A network event.
pub fn network_event(kind: EventKind, net: &Network) -> Event {
    Event::new(kind, net.spec.tenant.as_str(), net.spec.name.as_str(), net.spec.name.as_str())
}

impl Decider {
    /// Decide a network create (the host link rule is [`bridge_rule`]).
    pub fn create_network(&self, index: &Index, spec: NetworkSpec) -> Result<(Network, Change), ControlError> {
        let (docs, existing) = index.read(|st| -> Result<_, ControlError> {
            self.check_binding(st, &spec.tenant, Kind::Ipam, "ipam", &spec.ipam)?;
            self.check_binding(st, &spec.tenant, Kind::Naming, "naming", &spec.naming)?;
            self.check_binding(st, &spec.tenant, Kind::Policy, "policy", &spec.policy)?;
            let existing = st.network_by_name(&spec.tenant, &spec.name).is_ok();
            Ok((st.documents.values().cloned().collect::<Vec<_>>(), existing))
        })?;
        if existing {
            return Err(ControlError::AlreadyExists(format!(
                "network {:?} already exists for tenant {:?}",
                spec.name.as_str(),
                spec.tenant.as_str()
            )));
        }
        let net = Network::new(new_id(), spec)?;
        let docs = documents_for(&net, docs.iter());
        let module = self.module_key(&net, &net.spec.policy);
        let policy = Arc::new(self.deciders.compile(&module, &network_info(&net), &docs).map_err(policy_error)?);
        let mut change = Change::new(format!("creating network {:?}", net.spec.name.as_str()));
        change.new_networks.push(net.clone());
        change.ops = plan_network(&net, None);
        change.render_nft = true;
        change.batch.put_networks.push(net.clone());
        change.policies.push((net.id.clone(), Some(policy)));
        if net.spec.dns {
            change.dns.push(DnsChange::Serve(net.clone()));
        }
        change.events.push(network_event(EventKind::NetworkCreated, &net));
        for m in [&net.spec.ipam, &net.spec.policy, &net.spec.naming] {
            if !self.is_builtin(m) {
                change.guards.push(Guard::ModuleExists(store_key(net.spec.tenant.as_str(), m), m.clone()));
            }
        }
        Ok((net, change))
    }
}

/// A bridge network makes its bridge, so no link of that name may exist; a
/// macvlan network hangs off its parent, which must. `exists`: whether a
/// link called `net.bridge` exists on the host.
pub fn bridge_rule(net: &Network, exists: bool) -> Result<(), ControlError> {
    if !net.is_bridge() && !exists {
        return Err(InvalidRequest::new(
            "options[parent]",
            format!("parent interface {} does not exist on the host", net.bridge),
        )
        .into());
    }
    if net.is_bridge() && exists {
        return Err(ControlError::AlreadyExists(format!(
            "a link named {} already exists on the host and is not weft's",
            net.bridge
        )));
    }
    Ok(())
}

/// The network a reference names.
pub fn find_network(st: &State, r: &weft_model::api::Ref) -> Result<Network, ControlError> {
    let tenant = Tenant::parse("tenant", &r.tenant)?;
    let name = NetworkName::parse("name", &r.network)?;
    Ok(st.network_by_name(&tenant, &name)?.clone())
}

/// Decide a network remove: refused while endpoints are attached, unless
/// `force`, which detaches them in the same change (their links retired,
/// records, DNS names and events with the network's; the table render
/// drops their elements). The caller holds the network's lock, so no
/// attach is in flight. An overlay network's endpoints are shared with the
/// cluster one by one: `force` does not cover them.
pub fn delete_network(
    st: &State,
    r: &weft_model::api::Ref,
    force: bool,
) -> Result<(Network, Change, Vec<Endpoint>), ControlError> {
    let net = find_network(st, r)?;
    let attached: Vec<Endpoint> = st.endpoints_of(&net.id).cloned().collect();
    if !attached.is_empty() && (!force || net.is_overlay()) {
        let names: Vec<&str> = attached.iter().map(|e| e.spec.name.as_str()).collect();
        let hint = match (force, net.is_overlay()) {
            (true, _) => "an overlay network's endpoints are detached one by one: detach them first",
            _ => "detach them first, or remove it with --force",
        };
        return Err(ControlError::FailedPrecondition(format!(
            "network {:?} has {} endpoint(s) attached ({}); {hint}",
            net.spec.name.as_str(),
            attached.len(),
            names.join(", ")
        )));
    }
    let mut change = Change::new(format!("deleting network {:?}", net.spec.name.as_str()));
    for ep in &attached {
        change.ops.extend(plan_endpoint_removal(&net, ep));
        change.batch.delete_endpoints.push(ep.id.clone());
        change.dns.push(DnsChange::Remove(net.id.clone(), ep.id.clone()));
        change.events.push(endpoint_event(EventKind::EndpointDetached, ep));
    }
    change.ops.extend(plan_network_removal(&net));
    change.teardown = true;
    change.render_nft = true;
    change.batch.delete_networks.push(net.id.clone());
    change.policies.push((net.id.clone(), None));
    change.dns.push(DnsChange::Stop(net.id.clone()));
    change.events.push(network_event(EventKind::NetworkRemoved, &net));
    Ok((net, change, attached))
}
