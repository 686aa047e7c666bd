//! Rules over named container ports (Kubernetes `ports: [{port: http}]`).
//!
//! A named port is the port the flow's *destination* declares under that
//! name (`--port-name http=80/tcp`), so it differs per endpoint and cannot
//! sit in the fixed `peer . protocol . port` sets of numeric rules. Each
//! rule with named ports gets, per family, a hash set of destinations
//! `address . protocol . port` that the destination endpoints bring with
//! them (the ports they declare under the rule's names), and the chain
//! matches the packet's destination against it:
//!
//! ```text
//! ingress: meta nfproto ipv4 ip daddr . meta l4proto . th dport @n4_N_R ip saddr @q4_N_R return
//! egress:  meta nfproto ipv4 ip saddr @g4_N_G ip daddr . meta l4proto . th dport @n4_N_R return
//! ```
//!
//! On ingress the destinations are the group's members and the peer is
//! checked as well: fixed peers (ipBlocks, the network, anything) in an
//! interval set `q`, peer groups in a set `s` whose members bring their
//! address. On egress the destinations are the peers themselves (an
//! endpoint matching a peer that declares the name), so one lookup checks
//! both the peer and the port. A name that no endpoint declares leaves
//! the set empty and the rule matches nothing, as Kubernetes says.
//!
//! Such rules cost up to three nft rules each per family (the number of
//! rules with named ports, not the number of names or endpoints).

use std::fmt::Write;
use std::net::IpAddr;

use weft_model::endpoint::Endpoint;
use weft_model::network::Network;
use weft_model::policy::{Direction, Peer, Rule, RuleProto, RuleSet};

use super::{Compiled, Decl, addr, merge, peer_ranges};
use crate::nft::{Element, Field, group_set, proto_number, short_id};

fn set_name(kind: char, net: &str, rule: usize, fam: u8) -> String {
    format!("{kind}{fam}_{}_{rule}", short_id(net))
}

/// Whether `set` is one a destination endpoint fills (on every node that
/// has the network, in cluster mode).
pub(super) fn is_named_set(set: &str) -> bool {
    ["n4_", "n6_", "s4_", "s6_"].iter().any(|p| set.starts_with(p))
}

/// The rules with named ports, with their index in the rule set and
/// protocol number.
fn named_rules(rs: &RuleSet) -> impl Iterator<Item = (usize, &Rule, u8)> {
    rs.rules.iter().enumerate().filter_map(|(i, r)| match r.proto {
        RuleProto::Ports(p) if !r.named_ports.is_empty() => Some((i, r, proto_number(p))),
        _ => None,
    })
}

/// Add the sets and chain rules of `rs`'s named-port rules to `out`.
pub(super) fn compile(net: &Network, rs: &RuleSet, groups: &[String], out: &mut Compiled) {
    for (ri, r, _) in named_rules(rs) {
        let Some(gidx) = groups.iter().position(|g| g == &r.group) else { continue };
        let comment = super::comment(&[format!("{} ({})", r.name, r.source)]);
        for fam in [4u8, 6] {
            let (ip, nfproto, ty) = if fam == 4 {
                ("ip", "ipv4", "ipv4_addr . inet_proto . inet_service")
            } else {
                ("ip6", "ipv6", "ipv6_addr . inet_proto . inet_service")
            };
            let dests = set_name('n', &net.id, ri, fam);
            out.sets.push(Decl { kind: "set", name: dests.clone(), ty, interval: false, elements: vec![] });
            let head = format!("\t\tmeta nfproto {nfproto}");
            if r.direction == Direction::Egress {
                let _ = writeln!(
                    out.egress,
                    "{head} {ip} saddr @{} {ip} daddr . meta l4proto . th dport @{dests} return comment \"{comment}\"",
                    group_set(&net.id, gidx, fam),
                );
                continue;
            }
            let to = format!("{head} {ip} daddr . meta l4proto . th dport @{dests}");
            let mut fixed = Vec::new();
            let mut by_group = false;
            for peer in anyone(r) {
                match peer_ranges(net, peer, fam) {
                    Some(ranges) => fixed.extend(ranges),
                    None => by_group = true,
                }
            }
            let full = if fam == 4 { u32::MAX.into() } else { u128::MAX };
            let fixed = merge(fixed, u128::MAX);
            if fixed == [(0, full)] {
                let _ = writeln!(out.ingress, "{to} return comment \"{comment}\"");
            } else if !fixed.is_empty() {
                let name = set_name('q', &net.id, ri, fam);
                let _ = writeln!(out.ingress, "{to} {ip} saddr @{name} return comment \"{comment}\"");
                let elements = fixed
                    .iter()
                    .map(|&(lo, hi)| {
                        if lo == hi {
                            addr(fam, lo).to_string()
                        } else {
                            format!("{}-{}", addr(fam, lo), addr(fam, hi))
                        }
                    })
                    .collect();
                let ty = super::ty_addr(fam);
                out.sets.push(Decl { kind: "set", name, ty, interval: true, elements });
            }
            if by_group {
                let name = set_name('s', &net.id, ri, fam);
                let _ = writeln!(out.ingress, "{to} {ip} saddr @{name} return comment \"{comment}\"");
                out.sets.push(Decl { kind: "set", name, ty: super::ty_addr(fam), interval: false, elements: vec![] });
            }
        }
    }
}

/// A rule's peers; none means anything.
fn anyone(r: &Rule) -> &[Peer] {
    const ANY: &[Peer] = &[Peer::Any];
    if r.peers.is_empty() { ANY } else { &r.peers }
}

/// Whether an endpoint of the network at `a` in `groups` is one of `r`'s
/// peers.
fn is_peer(r: &Rule, a: IpAddr, groups: &[String]) -> bool {
    anyone(r).iter().any(|p| match p {
        Peer::Group(g) => groups.contains(g),
        Peer::Network | Peer::Any => true,
        Peer::Cidr { prefix, except } => prefix.contains(&a) && !except.iter().any(|e| e.contains(&a)),
    })
}

/// The elements endpoint `ep` brings to named-port sets: as a
/// destination, `address . protocol . port` for each port it declares
/// under a rule's name (ingress rules of its groups; egress rules it is a
/// peer of); as a source, its address in the peer-group set of ingress
/// rules naming one of its groups.
pub(super) fn elements(ep: &Endpoint, addrs: [Option<IpAddr>; 2], rs: &RuleSet, out: &mut Vec<Element>) {
    for (ri, r, proto) in named_rules(rs) {
        let declared: Vec<u16> = ep
            .spec
            .port_names
            .iter()
            .filter(|n| proto_number(n.proto) == proto && r.named_ports.contains(&n.name))
            .map(|n| n.port)
            .collect();
        for a in addrs.into_iter().flatten() {
            let fam = if a.is_ipv4() { 4 } else { 6 };
            let dest = match r.direction {
                Direction::Ingress => ep.groups.contains(&r.group),
                Direction::Egress => is_peer(r, a, &ep.groups),
            };
            if dest {
                let set = set_name('n', &ep.network_id, ri, fam);
                for &port in &declared {
                    let e = Element::point(&set, vec![Field::Addr(a), Field::L4(proto), Field::Port(port)]);
                    if !out.contains(&e) {
                        out.push(e);
                    }
                }
            }
            let source = r.direction == Direction::Ingress
                && r.peers.iter().any(|p| matches!(p, Peer::Group(g) if ep.groups.contains(g)));
            if source {
                out.push(Element::point(&set_name('s', &ep.network_id, ri, fam), vec![Field::Addr(a)]));
            }
        }
    }
}
