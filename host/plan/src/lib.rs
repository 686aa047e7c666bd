//! The planner: a pure function from (desired, observed) state to the ordered
//! list of kernel operations that makes the kernel match. It does no I/O, so
//! every plan is golden-tested, and the same code serves attach, detach and
//! the reconcile loop (which only differ in what was observed).

pub mod nft;
pub mod ops;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use weft_model::endpoint::{Endpoint, EndpointMode};
use weft_model::network::Network;
use weft_model::policy::RuleSet;
use weft_model::{IfName, Mac};

pub use ops::{Ns, Op, RETIRED_GROUP};

/// Sysctl that turns on IPv4 forwarding (needed for routed egress).
pub const SYSCTL_IPV4_FORWARD: &str = "net/ipv4/ip_forward";
/// Sysctl that turns on IPv6 forwarding.
pub const SYSCTL_IPV6_FORWARD: &str = "net/ipv6/conf/all/forwarding";

/// What the kernel currently has of one link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedLink {
    /// Addresses on the link.
    pub addresses: Vec<IpNet>,
    /// Administratively up.
    pub up: bool,
    /// The bridge it is a port of, if any.
    #[serde(default)]
    pub master: Option<IfName>,
}

/// Ops that make a network's bridge exist, hold its gateways and be up.
/// `observed` is the bridge as found (None: missing). A macvlan network has
/// no host objects of its own.
pub fn plan_network(net: &Network, observed: Option<&ObservedLink>) -> Vec<Op> {
    let mut ops = Vec::new();
    if !net.is_bridge() {
        // macvlan: the parent is the operator's; endpoints hang off it directly.
        return ops;
    }
    ops.push(Op::Sysctl { ns: Ns::Host, key: SYSCTL_IPV4_FORWARD.into(), value: "1".into() });
    if has_v6(net) {
        ops.push(Op::Sysctl { ns: Ns::Host, key: SYSCTL_IPV6_FORWARD.into(), value: "1".into() });
    }
    let empty = ObservedLink::default();
    let have = match observed {
        Some(o) => o,
        None => {
            ops.push(Op::CreateBridge { name: net.bridge.clone(), mtu: net.spec.mtu, mac: bridge_mac(&net.id) });
            &empty
        }
    };
    if has_v6(net) {
        ops.push(no_dad(Ns::Host, &net.bridge));
    }
    for s in &net.spec.subnets {
        let want = s.gateway_cidr();
        if !have.addresses.contains(&want) {
            ops.push(Op::AddAddress { ns: Ns::Host, link: net.bridge.clone(), addr: want });
        }
    }
    if !have.up {
        ops.push(Op::LinkUp { ns: Ns::Host, link: net.bridge.clone() });
    }
    // Published ports answer on 127.0.0.1 too: the DNATed packet keeps its
    // loopback source until masqueraded, which the kernel only routes out of
    // a link with route_localnet (IPv6 has no equivalent: ::1 cannot be DNATed).
    ops.push(Op::Sysctl {
        ns: Ns::Host,
        key: format!("net/ipv4/conf/{}/route_localnet", net.bridge),
        value: "1".into(),
    });
    ops
}

/// What the kernel has of an endpoint inside its namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedInside {
    /// The endpoint's interface (None: missing).
    pub link: Option<ObservedLink>,
    /// An IPv4 default route exists in the namespace.
    pub default_v4: bool,
    /// An IPv6 default route exists in the namespace.
    pub default_v6: bool,
}

/// Ops that make an endpoint's existing host veth a port of its bridge and
/// up again; none if it is both. `observed`: the veth as found.
pub fn plan_veth_repair(net: &Network, ep: &Endpoint, observed: &ObservedLink) -> Vec<Op> {
    if observed.master.as_ref() == Some(&net.bridge) && observed.up {
        return Vec::new();
    }
    vec![
        Op::SetMaster { link: ep.host_ifname.clone(), master: net.bridge.clone() },
        Op::LinkUp { ns: Ns::Host, link: ep.host_ifname.clone() },
    ]
}

/// Ops that restore an endpoint's interface inside its namespace as found
/// (`inside`): missing addresses, the link up, and — if the endpoint holds
/// the namespace's default route (`owns_route`) — a missing default route.
/// None if the interface itself is missing (that is a re-plumb).
pub fn plan_inside_repair(net: &Network, ep: &Endpoint, inside: &ObservedInside, owns_route: bool) -> Vec<Op> {
    let Some(link) = &inside.link else { return Vec::new() };
    let ns = Ns::Path(ep.spec.netns.clone());
    let mut ops: Vec<Op> = ep
        .addresses
        .iter()
        .filter(|a| !link.addresses.contains(a))
        .map(|a| Op::AddAddress { ns: ns.clone(), link: ep.spec.ifname.clone(), addr: *a })
        .collect();
    if !link.up {
        ops.push(Op::LinkUp { ns, link: ep.spec.ifname.clone() });
    }
    if owns_route {
        ops.extend(plan_default_routes(net, ep).into_iter().filter(|op| match op {
            Op::AddDefaultRoute { via, .. } => !(if via.is_ipv4() { inside.default_v4 } else { inside.default_v6 }),
            _ => true,
        }));
    }
    ops
}

/// Ops that remove a leftover host veth no endpoint owns (its peer goes
/// with it).
pub fn plan_orphan_removal(link: &IfName) -> Vec<Op> {
    vec![Op::DeleteLink { ns: Ns::Host, link: link.clone() }]
}

/// Ops that remove a network's bridge (its endpoints' ports must be gone
/// already) and an overlay network's VXLAN device.
pub fn plan_network_removal(net: &Network) -> Vec<Op> {
    if !net.is_bridge() {
        return Vec::new();
    }
    let mut ops = Vec::new();
    if let Some(o) = &net.overlay {
        ops.push(Op::DeleteLink { ns: Ns::Host, link: o.vxlan.clone() });
    }
    ops.push(Op::DeleteLink { ns: Ns::Host, link: net.bridge.clone() });
    ops
}

/// Ops that give an overlay network's bridge its VXLAN port, tunnelling
/// from `local` (this node's advertise address); `observed`: the device as
/// found (None: missing). Run after [`plan_network`].
pub fn plan_overlay(net: &Network, local: std::net::IpAddr, observed: Option<&ObservedLink>) -> Vec<Op> {
    let Some(o) = &net.overlay else { return Vec::new() };
    match observed {
        None => vec![Op::CreateVxlan {
            name: o.vxlan.clone(),
            vni: o.vni,
            local,
            port: weft_model::network::VXLAN_PORT,
            mtu: net.spec.mtu,
            master: net.bridge.clone(),
        }],
        Some(l) if l.master.as_ref() != Some(&net.bridge) || !l.up => vec![
            Op::SetMaster { link: o.vxlan.clone(), master: net.bridge.clone() },
            Op::LinkUp { ns: Ns::Host, link: o.vxlan.clone() },
        ],
        Some(_) => Vec::new(),
    }
}

/// Ops that make an endpoint on another node reachable from this one: its
/// MAC behind that node's tunnel address `vtep`, and each of its addresses
/// a permanent neighbour the VXLAN device answers ARP/ND for. Nothing is
/// learned or flooded.
pub fn plan_remote_endpoint(net: &Network, ep: &Endpoint, vtep: std::net::IpAddr) -> Vec<Op> {
    let Some(o) = &net.overlay else { return Vec::new() };
    let mut ops = vec![Op::SetFdb { dev: o.vxlan.clone(), mac: ep.mac, dst: vtep }];
    ops.extend(ep.addresses.iter().map(|a| Op::SetNeighbour { dev: o.vxlan.clone(), addr: a.addr(), mac: ep.mac }));
    ops
}

/// The reverse of [`plan_remote_endpoint`].
pub fn plan_remote_removal(net: &Network, ep: &Endpoint, vtep: std::net::IpAddr) -> Vec<Op> {
    let Some(o) = &net.overlay else { return Vec::new() };
    let mut ops: Vec<Op> = ep
        .addresses
        .iter()
        .map(|a| Op::DeleteNeighbour { dev: o.vxlan.clone(), addr: a.addr(), mac: ep.mac })
        .collect();
    ops.push(Op::DeleteFdb { dev: o.vxlan.clone(), mac: ep.mac, dst: vtep });
    ops
}

/// Ops that attach `ep` to `net`. On a bridge network: a veth pair created
/// in one request (host end a port of the bridge and up, container end born
/// in the container's namespace with its final name and MAC), then inside:
/// addresses, up, a default route via the gateway (not on internal
/// networks); then the published ports' DNAT elements — an [`Op::NftElements`] is
/// always last. On a macvlan network: a macvlan child of the parent, moved
/// into the namespace and renamed, instead of the veth pair. Mode `none`
/// only brings `lo` up; modes `host` and `container:` touch nothing.
pub fn plan_endpoint(net: &Network, policy: &RuleSet, ep: &Endpoint, peer_tmp: &IfName) -> Vec<Op> {
    let inside = Ns::Path(ep.spec.netns.clone());
    match ep.spec.mode {
        EndpointMode::Network => {}
        EndpointMode::None => return vec![Op::LinkUp { ns: inside, link: loopback() }],
        EndpointMode::Host | EndpointMode::Container(_) => return Vec::new(),
    }
    let ifname = ep.spec.ifname.clone();
    let mut ops = match &net.spec.macvlan {
        None => vec![Op::CreateVeth {
            name: ep.host_ifname.clone(),
            master: net.bridge.clone(),
            peer: ifname.clone(),
            netns: ep.spec.netns.clone(),
            mac: ep.mac,
            mtu: net.spec.mtu,
        }],
        Some(m) => vec![
            Op::CreateMacvlan {
                name: peer_tmp.clone(),
                parent: m.parent.clone(),
                mode: m.mode.clone(),
                mtu: net.spec.mtu,
            },
            Op::MoveToNetns { link: peer_tmp.clone(), netns: ep.spec.netns.clone() },
            Op::Rename { ns: inside.clone(), link: peer_tmp.clone(), to: ifname.clone() },
            Op::SetMac { ns: inside.clone(), link: ifname.clone(), mac: ep.mac },
        ],
    };
    if ep.addresses.iter().any(|a| a.addr().is_ipv6()) {
        ops.push(no_dad(inside.clone(), &ifname));
    }
    for a in &ep.addresses {
        ops.push(Op::AddAddress { ns: inside.clone(), link: ifname.clone(), addr: *a });
    }
    ops.push(Op::LinkUp { ns: inside.clone(), link: loopback() });
    ops.push(Op::LinkUp { ns: inside.clone(), link: ifname.clone() });
    ops.extend(plan_default_routes(net, ep));
    // nftables changes come last, as one transaction, once the interface
    // they point at exists.
    let elements = nft::endpoint_elements(ep, policy);
    if !elements.is_empty() {
        ops.push(Op::NftElements { change: nft::Change::Add, elements });
    }
    ops
}

/// Default routes of `ep` via its network's gateways, one per family it has
/// an address in; none on internal networks. Adding one where a default
/// route exists keeps the existing one: the first network attached owns it.
pub fn plan_default_routes(net: &Network, ep: &Endpoint) -> Vec<Op> {
    if net.spec.internal {
        return Vec::new();
    }
    let inside = Ns::Path(ep.spec.netns.clone());
    net.spec
        .subnets
        .iter()
        .filter(|s| ep.addresses.iter().any(|a| a.network().is_ipv4() == s.subnet.network().is_ipv4()))
        .map(|s| Op::AddDefaultRoute { ns: inside.clone(), via: s.gateway, dev: ep.spec.ifname.clone() })
        .collect()
}

/// Ops that detach an endpoint: the host end of a veth is retired (down at
/// once, deleted with the pair later, with other retired links, by
/// [`Op::DeleteRetired`]); a macvlan child is deleted inside the namespace
/// (if the namespace is gone, so is the child).
pub fn plan_endpoint_removal(net: &Network, ep: &Endpoint) -> Vec<Op> {
    match (&ep.spec.mode, net.is_bridge()) {
        (EndpointMode::Network, true) => {
            vec![Op::RetireLink { link: ep.host_ifname.clone(), master: net.bridge.clone() }]
        }
        (EndpointMode::Network, false) => {
            vec![Op::DeleteLink { ns: Ns::Path(ep.spec.netns.clone()), link: ep.spec.ifname.clone() }]
        }
        _ => Vec::new(),
    }
}

/// The ops that undo the applied prefix of a plan, in reverse order. Only
/// creations need undoing: everything else lives on objects they created.
pub fn undo(applied: &[Op]) -> Vec<Op> {
    applied
        .iter()
        .rev()
        .filter_map(|op| match op {
            // Elements added are deleted and deleted ones re-added; a whole
            // table render is undone by rendering the old state (the caller).
            Op::NftElements { change, elements } => Some(Op::NftElements {
                change: match change {
                    nft::Change::Add => nft::Change::Delete,
                    nft::Change::Delete => nft::Change::Add,
                },
                elements: elements.clone(),
            }),
            // Deleting the interface is enough for the endpoint's own ops.
            Op::RetireLink { link, master } => Some(Op::ReviveLink { link: link.clone(), master: master.clone() }),
            Op::SetFdb { dev, mac, dst } => Some(Op::DeleteFdb { dev: dev.clone(), mac: *mac, dst: *dst }),
            Op::DeleteFdb { dev, mac, dst } => Some(Op::SetFdb { dev: dev.clone(), mac: *mac, dst: *dst }),
            Op::SetNeighbour { dev, addr, mac } => {
                Some(Op::DeleteNeighbour { dev: dev.clone(), addr: *addr, mac: *mac })
            }
            Op::DeleteNeighbour { dev, addr, mac } => {
                Some(Op::SetNeighbour { dev: dev.clone(), addr: *addr, mac: *mac })
            }
            Op::CreateBridge { name, .. }
            | Op::CreateVeth { name, .. }
            | Op::CreateMacvlan { name, .. }
            | Op::CreateVxlan { name, .. } => Some(Op::DeleteLink { ns: Ns::Host, link: name.clone() }),
            // Once moved or renamed, the link lives on in the namespace.
            Op::MoveToNetns { link, netns } => Some(Op::DeleteLink { ns: Ns::Path(netns.clone()), link: link.clone() }),
            Op::Rename { ns, to, .. } => Some(Op::DeleteLink { ns: ns.clone(), link: to.clone() }),
            _ => None,
        })
        .collect()
}

/// A fixed MAC for a network's bridge, from its id. Without one, a Linux
/// bridge takes the lowest MAC of its ports, so it changes as endpoints come
/// and go and every container's cached gateway MAC goes stale.
pub fn bridge_mac(network_id: &str) -> Mac {
    let hex = |i: usize| network_id.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0);
    Mac([0x02, hex(0), hex(2), hex(4), hex(6), hex(8)])
}

fn has_v6(net: &Network) -> bool {
    net.spec.subnets.iter().any(|s| s.subnet.network().is_ipv6())
}

/// No duplicate address detection on a link weft addresses itself: a
/// tentative link-local address stalls neighbour discovery, and so the
/// first IPv6 packets, for a second or more after the link comes up.
fn no_dad(ns: Ns, link: &IfName) -> Op {
    Op::Sysctl { ns, key: format!("net/ipv6/conf/{link}/accept_dad"), value: "0".into() }
}

fn loopback() -> IfName {
    IfName::parse("ifname", "lo").unwrap_or_else(|_| unreachable!("\"lo\" is a valid interface name"))
}

#[cfg(test)]
mod tests;
