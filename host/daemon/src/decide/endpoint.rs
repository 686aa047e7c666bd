//! Attach and detach, decided: the endpoint's addresses (one IPAM call per
//! pool against the network's lease view), its policy groups (one
//! classify), its DNS records (one naming call), the kernel ops of the
//! plan, the store writes and the event.

use std::net::IpAddr;

use weft_model::endpoint::{DetachTarget, Endpoint, EndpointMode, EndpointSpec, EndpointState};
use weft_model::event::{Event, EventKind};
use weft_model::ipam::{DecisionError, IpamRequest, Pool, check_answer};
use weft_model::naming::{NameRecord, NamingEndpoint, NamingNetwork};
use weft_model::network::{Network, pairs};
use weft_model::{ControlError, EndpointName, InvalidRequest, Mac, NetworkName, Tenant};
use weft_plan::{Op, nft, plan_default_routes, plan_endpoint, plan_endpoint_removal};

use super::{Decider, endpoint_info, network_info, new_id, policy_error};
use crate::change::{Change, DnsChange, LeaseChange, Phases};
use crate::index::{Index, State};
use crate::locks::{NetSlot, pool_key};
use crate::timings::{Phase, Timings};

/// An endpoint event with its addresses, MAC and published ports.
pub fn endpoint_event(kind: EventKind, ep: &Endpoint) -> Event {
    let mut e = Event::new(kind, ep.spec.tenant.as_str(), ep.spec.network.as_str(), ep.spec.name.as_str());
    e.addresses = ep.addresses.iter().map(ToString::to_string).collect();
    e.mac = if ep.spec.mode == EndpointMode::Network { ep.mac.to_string() } else { String::new() };
    e.ports = ep.spec.publish.iter().map(ToString::to_string).collect();
    e
}

/// The network and endpoint a reference names, for `tenant`.
pub fn find_endpoint(st: &State, r: &weft_model::api::Ref) -> Result<(Network, Endpoint), ControlError> {
    let tenant = Tenant::parse("tenant", &r.tenant)?;
    let network = NetworkName::parse("network", &r.network)?;
    let name = EndpointName::parse("name", &r.name)?;
    let net = st.network_by_name(&tenant, &network)?;
    Ok((net.clone(), endpoint_in(st, net, &DetachTarget::Name(name))?))
}

/// The endpoint of `net` that `target` names (this node's only: a request
/// key is one node's runtime's).
pub fn endpoint_in(st: &State, net: &Network, target: &DetachTarget) -> Result<Endpoint, ControlError> {
    let found = match target {
        DetachTarget::Name(name) => st.endpoints_of(&net.id).find(|e| &e.spec.name == name),
        DetachTarget::Key(key) => st.endpoints_of(&net.id).find(|e| e.spec.request_key.as_ref() == Some(key)),
    };
    found.cloned().ok_or_else(|| match target {
        DetachTarget::Name(name) => ControlError::NotFound(format!(
            "endpoint {:?} not found on network {:?}",
            name.as_str(),
            net.spec.name.as_str()
        )),
        DetachTarget::Key(key) => ControlError::NotFound(format!(
            "no endpoint with request key {} on network {:?}",
            weft_model::ids::shown(key),
            net.spec.name.as_str()
        )),
    })
}

/// The endpoint a retried attach (same request key) made the first time,
/// if there is one; ALREADY_EXISTS when the retry asks for something else.
pub fn attached_before(st: &State, net_id: &str, spec: &EndpointSpec) -> Result<Option<Endpoint>, ControlError> {
    let Some(key) = &spec.request_key else { return Ok(None) };
    let Some(made) = st.endpoints_of(net_id).find(|e| e.spec.request_key.as_ref() == Some(key)) else {
        return Ok(None);
    };
    match spec.differs_from(&made.spec) {
        None => Ok(Some(made.clone())),
        Some(field) => Err(ControlError::AlreadyExists(format!(
            "endpoint {:?} on network {:?} was attached with request key {} and a different {field}; detach it first",
            made.spec.name.as_str(),
            spec.network.as_str(),
            weft_model::ids::shown(key)
        ))),
    }
}

/// Whether an attach of the same name or request key as `spec` to network
/// `net_id` is between its kernel work and its record.
pub fn in_flight(st: &State, net_id: &str, spec: &EndpointSpec) -> bool {
    st.pending_endpoints.values().any(|e| {
        e.network_id == net_id
            && (e.spec.name == spec.name || (spec.request_key.is_some() && e.spec.request_key == spec.request_key))
    })
}

/// The namespace an attach goes into.
#[derive(Debug, Clone, Copy)]
pub struct Netns {
    /// Its identity (the nsfs inode; 0: no namespace, host mode).
    pub id: u64,
    /// It may be one another tenant's endpoints are in (an operator's override).
    pub foreign: bool,
}

/// What attach reads from the index, copied out under its lock.
struct AttachView {
    net: Network,
    policy: std::sync::Arc<weft_model::policy::Compiled>,
    /// Interface names in the namespace, of other endpoints.
    taken_ifnames: Vec<(weft_model::IfName, String)>,
    /// The endpoint a `container:` endpoint shares.
    target: Option<Endpoint>,
}

impl Decider {
    /// Decide an attach of `spec` (namespace identity `netns_id`) to its
    /// network, whose lock the caller holds (`slot`). Returns the network
    /// as read, the endpoint and the change that makes it.
    pub fn attach(
        &self,
        index: &Index,
        slot: &mut NetSlot,
        spec: &EndpointSpec,
        netns: Netns,
        timings: &Timings,
    ) -> Result<(Network, Endpoint, Change), ControlError> {
        let netns_id = netns.id;
        let view = index.read(|st| -> Result<AttachView, ControlError> {
            let net = st.network_by_name(&spec.tenant, &spec.network)?.clone();
            // One pass over the namespace's endpoints: whose they are (a
            // fast refusal; the commit checks again) and the names taken.
            let mut taken_ifnames = Vec::new();
            for e in crate::commit::in_netns(st, netns_id, "") {
                if e.spec.tenant != spec.tenant && !netns.foreign {
                    return Err(crate::commit::foreign_netns_refused(&spec.netns));
                }
                if e.spec.mode == EndpointMode::Network {
                    taken_ifnames.push((e.spec.ifname.clone(), e.spec.name.to_string()));
                }
            }
            let remote = st.remote.values().filter(|e| e.network_id == net.id);
            if st.endpoints_of(&net.id).chain(remote).any(|e| e.spec.name == spec.name) {
                return Err(ControlError::AlreadyExists(format!(
                    "endpoint {:?} already exists on network {:?}",
                    spec.name.as_str(),
                    spec.network.as_str()
                )));
            }
            let target = match &spec.mode {
                EndpointMode::Container(t) => {
                    Some(st.endpoints_of(&net.id).find(|e| &e.spec.name == t).cloned().ok_or_else(|| {
                        ControlError::NotFound(format!(
                            "endpoint {:?} (mode container:) not found on network {:?}",
                            t.as_str(),
                            net.spec.name.as_str()
                        ))
                    })?)
                }
                _ => None,
            };
            Ok(AttachView { policy: st.policy_of(&net.id), net, taken_ifnames, target })
        })?;
        let net = &view.net;
        let mut req = spec.clone();
        let id = new_id();
        let (addresses, mac, groups, netns_id) = if req.mode == EndpointMode::Network {
            self.check_publish(net, &req)?;
            if req.auto_ifname {
                // eth0 for the first network, eth1 for the second, ... as Docker does.
                let free =
                    (0..).map(|i| format!("eth{i}")).find(|n| !view.taken_ifnames.iter().any(|(t, _)| t.as_str() == n));
                req.ifname = weft_model::IfName::parse("ifname", &free.unwrap_or_default())?;
            }
            if let Some((_, other)) = view.taken_ifnames.iter().find(|(t, _)| t == &req.ifname) {
                return Err(crate::commit::ifname_taken(&req.ifname, &req.netns, other));
            }
            // One classify call per attach; the rule set was compiled with the network.
            let info = endpoint_info(net, &req);
            let module = self.module_key(net, &net.spec.policy);
            let groups = timings
                .time(Phase::AttachClassify, || {
                    self.deciders.classify(&module, &network_info(net), &view.policy.state, &info)
                })
                .map_err(policy_error)?;
            let addresses = self.allocate(slot, net, &req, timings)?;
            let mac = req.mac.unwrap_or_else(|| default_mac(&addresses, &id));
            (addresses, mac, groups, netns_id)
        } else {
            match &view.target {
                Some(t) => {
                    if t.spec.mode != EndpointMode::Network || t.state != EndpointState::Ready {
                        return Err(ControlError::FailedPrecondition(format!(
                            "endpoint {:?} has no interface of its own to share",
                            t.spec.name.as_str()
                        )));
                    }
                    req.netns = t.spec.netns.clone();
                    req.ifname = t.spec.ifname.clone();
                    (t.addresses.clone(), t.mac, Vec::new(), t.netns_id)
                }
                None => (Vec::new(), default_mac(&[], &id), Vec::new(), netns_id),
            }
        };
        let ep = Endpoint {
            host_ifname: Endpoint::host_ifname_for(&id)?,
            netns_id,
            network_id: net.id.clone(),
            id,
            spec: req,
            mac,
            addresses,
            state: EndpointState::Ready,
            groups,
            node: None,
        };
        let records = timings.time(Phase::AttachNaming, || self.names(net, &ep))?;
        let tmp = Endpoint::peer_tmp_ifname_for(&ep.id)?;
        let mut change = Change::new(format!(
            "attaching endpoint {:?} to network {:?}",
            ep.spec.name.as_str(),
            net.spec.name.as_str()
        ));
        change.ops = plan_endpoint(net, &view.policy.rules, &ep, &tmp);
        change.new_endpoints.push(ep.clone());
        change.foreign_netns = netns.foreign;
        if ep.spec.mode == EndpointMode::Network {
            change.batch.cursors.extend(ep.addresses.iter().map(|a| (pool_key(&net.id, a.addr()), a.addr())));
            change.leases.extend(LeaseChange::of(&ep, true));
        }
        change.batch.put_endpoints.push(ep.clone());
        if !records.is_empty() {
            change.dns.push(DnsChange::Set(net.id.clone(), ep.clone(), records));
        }
        change.events.push(endpoint_event(EventKind::EndpointAttached, &ep));
        change.phases = Phases {
            netlink: Some(Phase::AttachNetlink),
            nft: Some(Phase::AttachNft),
            store: Some(Phase::AttachStore),
            dns: Some(Phase::AttachDns),
        };
        Ok((view.net, ep, change))
    }

    /// The request's published ports and static addresses fit the network.
    fn check_publish(&self, net: &Network, req: &EndpointSpec) -> Result<(), ControlError> {
        if !req.publish.is_empty() && !net.is_bridge() {
            return Err(InvalidRequest::new(
                "publish",
                format!(
                    "network {:?} is a macvlan network; published ports need a bridge network",
                    net.spec.name.as_str()
                ),
            )
            .into());
        }
        for (i, m) in req.publish.iter().enumerate() {
            if let Some(h) = m.host_ip
                && !net.spec.subnets.iter().any(|s| s.subnet.network().is_ipv4() == h.is_ipv4())
            {
                return Err(InvalidRequest::new(
                    format!("publish[{i}]"),
                    format!("{m}: network {:?} has no subnet of the host IP's family", net.spec.name.as_str()),
                )
                .into());
            }
        }
        for (i, ip) in req.ips.iter().enumerate() {
            if !net.spec.subnets.iter().any(|s| s.subnet.contains(ip)) {
                return Err(InvalidRequest::new(
                    format!("ips[{i}]"),
                    format!("{ip} is not inside any subnet of network {:?}", net.spec.name.as_str()),
                )
                .into());
            }
        }
        Ok(())
    }

    /// One IPAM call per pool, each checked; nothing is reserved (the
    /// commit reserves). A dual-stack request sees the first answer as
    /// taken only within this decision.
    fn allocate(
        &self,
        slot: &mut NetSlot,
        net: &Network,
        req: &EndpointSpec,
        timings: &Timings,
    ) -> Result<Vec<ipnet::IpNet>, ControlError> {
        let ipam = self.module_key(net, &net.spec.ipam);
        let mut addresses = Vec::new();
        for s in &net.spec.subnets {
            let pool = Pool { subnet: s.subnet, range: s.ip_range, gateway: Some(s.gateway) };
            let want = req.ips.iter().copied().find(|ip| ip.is_ipv4() == s.subnet.network().is_ipv4());
            let ireq = IpamRequest {
                network: net.spec.name.to_string(),
                endpoint: req.name.to_string(),
                static_address: want,
            };
            let leases = slot.pool(&pool_key(&net.id, s.gateway));
            let addr = timings
                .time(Phase::AttachIpam, || {
                    self.deciders.allocate(&ipam, &pool, &ireq, &net.spec.config_list(), leases)
                })
                .map_err(|e| ipam_error(e, net))?;
            check_answer(&pool, &ireq, leases, addr).map_err(|why| {
                ControlError::Plugin(format!("module {}: {why}; nothing was assigned", net.spec.ipam))
            })?;
            addresses.push(
                ipnet::IpNet::new(addr, s.subnet.prefix_len())
                    .map_err(|e| ControlError::Internal(format!("address {addr}/{}: {e}", s.subnet.prefix_len())))?,
            );
        }
        Ok(addresses)
    }

    /// The DNS records of `ep` on `net`, decided by the network's naming
    /// component and checked by the host; none if the network has no DNS.
    pub fn names(&self, net: &Network, ep: &Endpoint) -> Result<Vec<NameRecord>, ControlError> {
        if !net.spec.dns || ep.spec.mode != EndpointMode::Network {
            return Ok(Vec::new());
        }
        let endpoint = NamingEndpoint {
            name: ep.spec.name.to_string(),
            aliases: ep.spec.aliases.clone(),
            addresses: ep.addresses.iter().map(|a| a.addr()).collect(),
            labels: pairs(&ep.spec.labels),
        };
        let network = NamingNetwork {
            name: net.spec.name.to_string(),
            tenant: net.spec.tenant.to_string(),
            options: net.spec.options_list(),
            config: net.spec.config_list(),
        };
        self.deciders.names(&self.module_key(net, &net.spec.naming), &endpoint, &network).map_err(|e| match e {
            DecisionError::Invalid(m) => InvalidRequest::new("aliases", m).into(),
            other => ControlError::Plugin(format!("{other}; nothing was changed")),
        })
    }
}

/// Decide a detach: stop forwarding its published ports and drop its
/// policy elements, then delete its link (retried); store, lease, DNS and
/// event follow only once the link is gone. If the link cannot be
/// deleted, the elements are put back: the endpoint keeps working.
pub fn detach(st: &State, net: &Network, ep: Endpoint) -> Result<(Endpoint, Change), ControlError> {
    let dependents: Vec<String> = st
        .endpoints_of(&net.id)
        .filter(|e| e.spec.mode == EndpointMode::Container(ep.spec.name.clone()))
        .map(|e| e.spec.name.to_string())
        .collect();
    if !dependents.is_empty() {
        return Err(ControlError::FailedPrecondition(format!(
            "endpoint {:?} shares its namespace with {} (mode container:); detach them first",
            ep.spec.name.as_str(),
            dependents.join(", ")
        )));
    }
    let policy = st.policy_of(&net.id);
    let mut change = Change::new(format!("detaching endpoint {:?}", ep.spec.name.as_str()));
    let elements = nft::endpoint_elements(&ep, &policy.rules);
    if !elements.is_empty() {
        change.ops.push(Op::NftElements { change: nft::Change::Delete, elements });
    }
    change.ops.extend(plan_endpoint_removal(net, &ep));
    change.teardown = true;
    change.batch.delete_endpoints.push(ep.id.clone());
    if ep.spec.mode == EndpointMode::Network {
        change.leases.extend(LeaseChange::of(&ep, false));
    }
    change.dns.push(DnsChange::Remove(net.id.clone(), ep.id.clone()));
    change.events.push(endpoint_event(EventKind::EndpointDetached, &ep));
    change.phases = Phases {
        netlink: Some(Phase::DetachNetlink),
        nft: Some(Phase::DetachNft),
        store: Some(Phase::DetachStore),
        dns: None,
    };
    Ok((ep, change))
}

/// After `gone` left its namespace, the default route for the remaining
/// endpoint with the lowest interface name there (the detached one may
/// have held it).
pub fn reelect_default_route(st: &State, gone: &Endpoint) -> Vec<Op> {
    let mut rest: Vec<&Endpoint> = st
        .endpoints
        .values()
        .filter(|e| {
            gone.netns_id != 0
                && e.netns_id == gone.netns_id
                && e.state == EndpointState::Ready
                && e.spec.mode == EndpointMode::Network
        })
        .collect();
    rest.sort_by(|a, b| a.spec.ifname.cmp(&b.spec.ifname));
    rest.first().and_then(|e| st.networks.get(&e.network_id).map(|n| plan_default_routes(n, e))).unwrap_or_default()
}

fn ipam_error(e: DecisionError, net: &Network) -> ControlError {
    match e {
        DecisionError::Exhausted(m) => ControlError::Exhausted(format!("network {:?}: {m}", net.spec.name.as_str())),
        DecisionError::Conflict(m) => ControlError::AlreadyExists(format!("network {:?}: {m}", net.spec.name.as_str())),
        DecisionError::Invalid(m) => InvalidRequest::new("ips", m).into(),
        e @ DecisionError::Failed { .. } => ControlError::Plugin(format!("{e}; nothing was assigned")),
    }
}

/// Docker's default MAC (02:42 + IPv4); IPv6-only endpoints get 02:42 + id bytes.
pub fn default_mac(addrs: &[ipnet::IpNet], id: &str) -> Mac {
    if let Some(IpAddr::V4(v4)) = addrs.iter().map(|a| a.addr()).find(IpAddr::is_ipv4) {
        return Mac::from_ipv4(v4);
    }
    let b = id.as_bytes();
    let h = |i: usize| u8::from_str_radix(std::str::from_utf8(&b[i..i + 2]).unwrap_or("00"), 16).unwrap_or(0);
    Mac([0x02, 0x42, h(0), h(2), h(4), h(6)])
}
