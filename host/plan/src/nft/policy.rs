//! A network's compiled policy as nftables sets, so that what a new
//! connection pays does not grow with the number of rules or peers.
//!
//! Every allow rule of a group and direction becomes elements of a few
//! concatenated interval sets — `peer address . protocol . port` — and the
//! chain holds one lookup per set:
//!
//! ```text
//! meta nfproto ipv4 ip daddr @g4_N_0 ip saddr . meta l4proto . th dport @p4_N_0_ipp0 return
//! ```
//!
//! Three key shapes, because a rule either allows every protocol (key:
//! address), a protocol without ports or ICMP (address . protocol), or
//! ports of a protocol (address . protocol . port). Peers that are
//! addresses (ipBlocks with their exceptions, the network's subnets,
//! anything) are fixed when the policy is compiled and rendered with the
//! table; peers that are groups become *member* sets whose elements each
//! endpoint brings with it (its address with the protocols and ports of
//! every rule naming one of its groups as a peer), added and removed with
//! its other elements at attach and detach.
//!
//! nf_tables refuses overlapping elements in one interval set, so the
//! fixed elements are normalised first (equal port ranges merge their
//! addresses, equal address ranges their ports) and what still overlaps
//! is spread over layers, one set and one rule each. The number of rules is
//! therefore the number of groups with rules times the overlap depth of
//! their peers and ports (1 for every policy the benchmark and the
//! conformance suites use), never the number of rules or peers. A member
//! set needs no layers: two endpoints never share an address, and one
//! endpoint's port ranges are merged before they are added.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weft_model::endpoint::Endpoint;
use weft_model::network::Network;
use weft_model::policy::{Direction, Peer, Rule, RuleProto, RuleSet};

use super::{Element, Field, group_set, proto_number, short_id};

/// What a rule's flows are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    /// Every protocol: the peer's address.
    Any,
    /// One protocol without ports (or ICMP): address . protocol.
    Proto,
    /// Ports of one protocol: address . protocol . port.
    Ports,
}

impl Shape {
    fn suffix(self) -> &'static str {
        match self {
            Shape::Any => "a",
            Shape::Proto => "p",
            Shape::Ports => "pp",
        }
    }

    fn key_type(self, fam: u8) -> &'static str {
        match (self, fam) {
            (Shape::Any, 4) => "ipv4_addr",
            (Shape::Any, _) => "ipv6_addr",
            (Shape::Proto, 4) => "ipv4_addr . inet_proto",
            (Shape::Proto, _) => "ipv6_addr . inet_proto",
            (Shape::Ports, 4) => "ipv4_addr . inet_proto . inet_service",
            (Shape::Ports, _) => "ipv6_addr . inet_proto . inet_service",
        }
    }

    /// The packet's key for this shape, `them` being `saddr` or `daddr`.
    fn selector(self, ip: &str, them: &str) -> String {
        match self {
            Shape::Any => format!("{ip} {them}"),
            Shape::Proto => format!("{ip} {them} . meta l4proto"),
            Shape::Ports => format!("{ip} {them} . meta l4proto . th dport"),
        }
    }
}

/// A rule's key shape, protocol number and port ranges.
type Flows = (Shape, u8, Vec<(u16, u16)>);

/// A rule's shape, protocol number and port ranges in family `fam`;
/// `None` for a rule with only named ports ([`named`] renders those).
fn shape_of(r: &Rule, fam: u8) -> Option<Flows> {
    Some(match r.proto {
        RuleProto::Any => (Shape::Any, 0, vec![(0, 0)]),
        RuleProto::Icmp => (Shape::Proto, if fam == 4 { 1 } else { 58 }, vec![(0, 0)]),
        RuleProto::Ports(p) if r.every_port() => (Shape::Proto, proto_number(p), vec![(0, 0)]),
        RuleProto::Ports(_) if r.ports.is_empty() => return None,
        RuleProto::Ports(p) => (Shape::Ports, proto_number(p), r.ports.clone()),
    })
}

/// A box of flows: peer addresses `lo..=hi`, a protocol, ports
/// `plo..=phi` (protocol and ports are 0 where the shape has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cell {
    proto: u8,
    lo: u128,
    hi: u128,
    plo: u16,
    phi: u16,
}

fn addr(fam: u8, v: u128) -> IpAddr {
    if fam == 4 { IpAddr::V4(Ipv4Addr::from(v as u32)) } else { IpAddr::V6(Ipv6Addr::from(v)) }
}

fn num(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => a.into(),
    }
}

fn range(p: &ipnet::IpNet) -> (u128, u128) {
    (num(p.network()), num(p.broadcast()))
}

/// The address ranges a fixed peer covers in family `fam` (`None`: a group,
/// whose members bring their own elements).
fn peer_ranges(net: &Network, peer: &Peer, fam: u8) -> Option<Vec<(u128, u128)>> {
    let of_fam = |p: &ipnet::IpNet| p.network().is_ipv4() == (fam == 4);
    Some(match peer {
        Peer::Group(_) => return None,
        Peer::Any => vec![(0, if fam == 4 { u32::MAX.into() } else { u128::MAX })],
        Peer::Network => net.spec.subnets.iter().map(|s| s.subnet).filter(of_fam).map(|s| range(&s)).collect(),
        Peer::Cidr { prefix, except } if of_fam(prefix) => {
            let mut out = vec![range(prefix)];
            for e in except {
                let (elo, ehi) = range(e);
                out = out
                    .into_iter()
                    .flat_map(|(lo, hi)| {
                        if ehi < lo || elo > hi {
                            return vec![(lo, hi)];
                        }
                        let mut keep = Vec::new();
                        if elo > lo {
                            keep.push((lo, elo - 1));
                        }
                        if ehi < hi {
                            keep.push((ehi + 1, hi));
                        }
                        keep
                    })
                    .collect();
            }
            out
        }
        Peer::Cidr { .. } => Vec::new(),
    })
}

/// Merge overlapping or adjacent ranges.
fn merge<T: Copy + Ord + From<u8> + std::ops::Add<Output = T>>(mut v: Vec<(T, T)>, max: T) -> Vec<(T, T)> {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if last.1 == max || lo <= last.1 + T::from(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The fixed cells of one set family, normalised and spread over layers in
/// which no two cells overlap.
fn layers(shape: Shape, cells: Vec<Cell>) -> Vec<Vec<Cell>> {
    // Equal protocol and ports: merge the addresses.
    let mut by_ports: BTreeMap<(u8, u16, u16), Vec<(u128, u128)>> = BTreeMap::new();
    for c in cells {
        by_ports.entry((c.proto, c.plo, c.phi)).or_default().push((c.lo, c.hi));
    }
    // Equal protocol and addresses: merge the ports.
    let mut by_addr: BTreeMap<(u8, u128, u128), Vec<(u16, u16)>> = BTreeMap::new();
    for ((proto, plo, phi), addrs) in by_ports {
        for (lo, hi) in merge(addrs, u128::MAX) {
            by_addr.entry((proto, lo, hi)).or_default().push((plo, phi));
        }
    }
    let mut cells: Vec<Cell> = by_addr
        .into_iter()
        .flat_map(|((proto, lo, hi), ports)| {
            let ports = if shape == Shape::Ports { merge(ports, u16::MAX) } else { vec![(0, 0)] };
            ports.into_iter().map(move |(plo, phi)| Cell { proto, lo, hi, plo, phi })
        })
        .collect();
    cells.sort_unstable();
    // Greedy layering in address order: a cell goes to the first layer with
    // no cell it overlaps. `active[i]` holds layer i's cells that may still
    // overlap a later one (same protocol, not ending before it starts).
    let mut out: Vec<Vec<Cell>> = Vec::new();
    let mut active: Vec<Vec<Cell>> = Vec::new();
    let mut proto = None;
    for c in cells {
        if proto != Some(c.proto) {
            active.iter_mut().for_each(Vec::clear);
            proto = Some(c.proto);
        }
        let free = active.iter_mut().position(|act| {
            act.retain(|x| x.hi >= c.lo);
            act.iter().all(|x| x.phi < c.plo || x.plo > c.phi)
        });
        match free {
            Some(i) => {
                active[i].push(c);
                out[i].push(c);
            }
            None => {
                active.push(vec![c]);
                out.push(vec![c]);
            }
        }
    }
    out
}

/// A cell as an element of a set of `shape` (nft syntax).
fn cell_text(shape: Shape, fam: u8, c: &Cell) -> String {
    let mut s =
        if c.lo == c.hi { addr(fam, c.lo).to_string() } else { format!("{}-{}", addr(fam, c.lo), addr(fam, c.hi)) };
    if shape != Shape::Any {
        let _ = write!(s, " . {}", c.proto);
    }
    if shape == Shape::Ports {
        if c.plo == c.phi {
            let _ = write!(s, " . {}", c.plo);
        } else {
            let _ = write!(s, " . {}-{}", c.plo, c.phi);
        }
    }
    s
}

/// A named set of the table: name, type, interval flag, elements.
pub(super) struct Decl {
    /// `set` or `map`.
    pub kind: &'static str,
    pub name: String,
    pub ty: &'static str,
    pub interval: bool,
    pub elements: Vec<String>,
}

/// One network's policy in the table: its sets and the rules of its
/// ingress (`pol_in`) and egress (`pol_out`) checks.
#[derive(Default)]
pub(super) struct Compiled {
    pub sets: Vec<Decl>,
    pub ingress: String,
    pub egress: String,
}

/// Which set family a rule's flows go to.
type Family = (usize, u8, u8, Shape);

fn dir_tag(d: Direction) -> u8 {
    match d {
        Direction::Ingress => b'i',
        Direction::Egress => b'e',
    }
}

fn set_name(kind: char, net: &str, (gidx, dir, fam, shape): Family, layer: Option<usize>) -> String {
    let layer = layer.map(|l| l.to_string()).unwrap_or_default();
    format!("{kind}{fam}_{}_{gidx}_{}{}{layer}", short_id(net), dir as char, shape.suffix())
}

/// What the rules of one set family hold.
#[derive(Default)]
struct Acc {
    cells: Vec<Cell>,
    /// Some rule has a group as a peer: the family needs a member set.
    members: bool,
    /// The rules, for the nft rule's comment.
    names: Vec<String>,
}

/// Compile `rs`, the policy of `net`, into sets and rules.
pub(super) fn compile(net: &Network, rs: &RuleSet) -> Compiled {
    let groups = rs.groups();
    let mut fams: BTreeMap<Family, Acc> = BTreeMap::new();
    for r in &rs.rules {
        let Some(gidx) = groups.iter().position(|g| g == &r.group) else { continue };
        let any = [Peer::Any];
        let peers: &[Peer] = if r.peers.is_empty() { &any } else { &r.peers };
        for fam in [4u8, 6] {
            let Some((shape, proto, ports)) = shape_of(r, fam) else { continue };
            let acc = fams.entry((gidx, dir_tag(r.direction), fam, shape)).or_default();
            let before = (acc.cells.len(), acc.members);
            for peer in peers {
                match peer_ranges(net, peer, fam) {
                    None => acc.members = true,
                    Some(addrs) => {
                        for (lo, hi) in addrs {
                            for &(plo, phi) in &ports {
                                acc.cells.push(Cell { proto, lo, hi, plo, phi });
                            }
                        }
                    }
                }
            }
            let label = format!("{} ({})", r.name, r.source);
            if (acc.cells.len(), acc.members) != before && !acc.names.contains(&label) {
                acc.names.push(label);
            }
        }
    }
    let mut out = Compiled::default();
    for (idx, _) in groups.iter().enumerate() {
        for fam in [4u8, 6] {
            out.sets.push(Decl {
                kind: "set",
                name: group_set(&net.id, idx, fam),
                ty: ty_addr(fam),
                interval: false,
                elements: vec![],
            });
        }
    }
    for (f @ (gidx, dir, fam, shape), acc) in fams {
        let (ip, nfproto) = if fam == 4 { ("ip", "ipv4") } else { ("ip6", "ipv6") };
        let (me, them) = if dir == b'i' { ("daddr", "saddr") } else { ("saddr", "daddr") };
        let rules = if dir == b'i' { &mut out.ingress } else { &mut out.egress };
        let comment = comment(&acc.names);
        let mut rule = |selector: &str, set: &str| {
            let _ = writeln!(
                rules,
                "\t\tmeta nfproto {nfproto} {ip} {me} @{} {selector} @{set} return comment \"{comment}\"",
                group_set(&net.id, gidx, fam),
            );
        };
        let selector = shape.selector(ip, them);
        // Flows from or to anywhere need no address in their key: a hash
        // lookup of protocol (and port) whatever their number.
        let full = if fam == 4 { u32::MAX.into() } else { u128::MAX };
        let (anywhere, cells): (Vec<Cell>, Vec<Cell>) =
            acc.cells.into_iter().partition(|c| shape != Shape::Any && c.lo == 0 && c.hi == full);
        for (kind, ty, interval, elements) in anywhere_sets(shape, &anywhere) {
            let name = format!("{}{kind}", set_name('w', &net.id, f, None));
            rule(if shape == Shape::Proto { "meta l4proto" } else { "meta l4proto . th dport" }, &name);
            out.sets.push(Decl { kind: "set", name, ty, interval, elements });
        }
        for (l, cells) in layers(shape, cells).into_iter().enumerate() {
            let name = set_name('p', &net.id, f, Some(l));
            rule(&selector, &name);
            let elements = cells.iter().map(|c| cell_text(shape, fam, c)).collect();
            out.sets.push(Decl { kind: "set", name, ty: shape.key_type(fam), interval: true, elements });
        }
        if acc.members {
            let name = set_name('m', &net.id, f, None);
            rule(&selector, &name);
            out.sets.push(Decl {
                kind: "set",
                name,
                ty: shape.key_type(fam),
                interval: shape == Shape::Ports,
                elements: vec![],
            });
        }
    }
    named::compile(net, rs, &groups, &mut out);
    out
}

/// The sets of flows from or to anywhere: protocols (a hash set), single
/// ports (a hash set) and port ranges (an interval set), each with the
/// suffix of its name, type, interval flag and elements.
fn anywhere_sets(shape: Shape, cells: &[Cell]) -> Vec<(&'static str, &'static str, bool, Vec<String>)> {
    if cells.is_empty() {
        return Vec::new();
    }
    if shape == Shape::Proto {
        let mut protos: Vec<u8> = cells.iter().map(|c| c.proto).collect();
        protos.sort_unstable();
        protos.dedup();
        return vec![("", "inet_proto", false, protos.iter().map(u8::to_string).collect())];
    }
    let mut by_proto: BTreeMap<u8, Vec<(u16, u16)>> = BTreeMap::new();
    for c in cells {
        by_proto.entry(c.proto).or_default().push((c.plo, c.phi));
    }
    let (mut points, mut ranges) = (Vec::new(), Vec::new());
    for (proto, ports) in by_proto {
        for (lo, hi) in merge(ports, u16::MAX) {
            if lo == hi {
                points.push(format!("{proto} . {lo}"));
            } else {
                ranges.push(format!("{proto} . {lo}-{hi}"));
            }
        }
    }
    let ty = "inet_proto . inet_service";
    [("", ty, false, points), ("r", ty, true, ranges)].into_iter().filter(|s| !s.3.is_empty()).collect()
}

fn ty_addr(fam: u8) -> &'static str {
    if fam == 4 { "ipv4_addr" } else { "ipv6_addr" }
}

/// The rules behind one nft rule as its comment (quotes removed, bounded).
fn comment(names: &[String]) -> String {
    let c = names.join(", ");
    c.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).take(120).collect()
}

/// The member-set elements endpoint `ep` brings: its `addrs` (the first of
/// each family) with the protocols and ports of every rule of `rs` that
/// names one of its groups as a peer, merged per set, and what it brings
/// to the sets of rules over named ports ([`named::elements`]). `groups`
/// is `rs.groups()`, which the caller has already worked out.
pub(super) fn member_elements(
    ep: &Endpoint,
    addrs: [Option<IpAddr>; 2],
    rs: &RuleSet,
    groups: &[String],
    out: &mut Vec<Element>,
) {
    let mut acc: BTreeMap<(Family, u8), Vec<(u16, u16)>> = BTreeMap::new();
    for r in &rs.rules {
        let is_peer = r.peers.iter().any(|p| matches!(p, Peer::Group(h) if ep.groups.contains(h)));
        let Some(gidx) = groups.iter().position(|g| g == &r.group) else { continue };
        if !is_peer {
            continue;
        }
        for fam in [4u8, 6] {
            let Some((shape, proto, ports)) = shape_of(r, fam) else { continue };
            acc.entry(((gidx, dir_tag(r.direction), fam, shape), proto)).or_default().extend(ports);
        }
    }
    for a in addrs.into_iter().flatten() {
        let fam = if a.is_ipv4() { 4 } else { 6 };
        for (&(f @ (_, _, ffam, shape), proto), ports) in &acc {
            if ffam != fam {
                continue;
            }
            let set = set_name('m', &ep.network_id, f, None);
            let p = Field::L4(proto);
            match shape {
                Shape::Any => out.push(Element::point(&set, vec![Field::Addr(a)])),
                Shape::Proto => out.push(Element::point(&set, vec![Field::Addr(a), p])),
                Shape::Ports => {
                    for (lo, hi) in merge(ports.clone(), u16::MAX) {
                        out.push(Element {
                            set: set.clone(),
                            key: vec![Field::Addr(a), p, Field::Port(lo)],
                            key_end: vec![Field::Addr(a), p, Field::Port(hi)],
                            data: Vec::new(),
                        });
                    }
                }
            }
        }
    }
    named::elements(ep, addrs, rs, out);
}

/// Whether `set` is one of a network's member sets (elements that an
/// endpoint on another node brings too).
pub(super) fn is_member_set(set: &str) -> bool {
    set.starts_with("m4_") || set.starts_with("m6_") || named::is_named_set(set)
}

mod named;

#[cfg(test)]
mod tests;
