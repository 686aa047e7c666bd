//! weft's nftables ruleset. weft owns one table (`inet weft`) and never
//! touches any other. The rules are fixed: networks and endpoints only add
//! elements to named sets and maps (bridges, subnets to masquerade,
//! published-port DNAT maps keyed by protocol and port), so the rule count
//! does not grow with networks, endpoints or published ports.
//!
//! Two things come out of here:
//! - [`render_ruleset`]: the whole table, replacing the old one in one atomic
//!   transaction (`table ...; delete table ...; table ... { ... }` in one
//!   `nft -f`). Used on network changes and by reconcile, which is how a
//!   flushed or deleted table is repaired.
//! - [`endpoint_elements`]: one endpoint's set and map elements, which attach
//!   and detach add or delete in one nf_tables netlink batch (`weft-kernel`,
//!   no `nft` process on that path); `Element` also prints as nft syntax.

use std::fmt::Write;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use weft_model::endpoint::Endpoint;
use weft_model::network::Network;
use weft_model::policy::{Direction, Peer, Rule, RuleProto, RuleSet};
use weft_model::ports::Proto;

/// The nftables family of weft's table.
pub const NFT_FAMILY: &str = "inet";
/// The nftables table weft owns.
pub const NFT_TABLE: &str = "weft";

/// DNAT rules, shared by the prerouting chain (traffic arriving at the
/// host) and the output chain (the host's own traffic, including
/// 127.0.0.1). A host-IP-specific mapping is looked up first.
const DNAT_RULES: &str =
    "\t\tfib daddr type local meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @pub4_ip
\t\tfib daddr type local meta nfproto ipv4 dnat ip to meta l4proto . th dport map @pub4_any
\t\tfib daddr type local meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6_ip
\t\tfib daddr type local meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @pub6_any
";

/// Add or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// `add element`.
    Add,
    /// `delete element`.
    Delete,
}

/// One field of a set element's key or a map element's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// `inet_proto`.
    Proto(Proto),
    /// `inet_service`.
    Port(u16),
    /// `ipv4_addr` or `ipv6_addr`.
    Addr(IpAddr),
}

impl Field {
    /// The field in nf_tables' register layout: network byte order, padded
    /// to 4 bytes (each field of a concatenation starts on a register).
    pub fn to_bytes(self, out: &mut Vec<u8>) {
        match self {
            Field::Proto(p) => out.extend([proto_number(p), 0, 0, 0]),
            Field::Port(port) => {
                out.extend(port.to_be_bytes());
                out.extend([0, 0]);
            }
            Field::Addr(IpAddr::V4(a)) => out.extend(a.octets()),
            Field::Addr(IpAddr::V6(a)) => out.extend(a.octets()),
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Proto(p) => f.write_str(p.as_str()),
            Field::Port(p) => write!(f, "{p}"),
            Field::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// The IP protocol number of `p`.
pub fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
        Proto::Sctp => 132,
    }
}

/// One element of one of weft's named sets or maps: a key and, in a map,
/// the value it maps to. Written as nft syntax by `Display`, and as
/// nf_tables netlink attributes by `weft-kernel` (the attach path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Element {
    /// The set or map, in table `inet weft`.
    pub set: String,
    /// The key's fields (a concatenation when more than one).
    pub key: Vec<Field>,
    /// A map element's value; empty in a set.
    pub data: Vec<Field>,
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |v: &[Field]| v.iter().map(Field::to_string).collect::<Vec<_>>().join(" . ");
        f.write_str(&join(&self.key))?;
        if !self.data.is_empty() {
            write!(f, " : {}", join(&self.data))?;
        }
        Ok(())
    }
}

/// The set and map elements of one endpoint:
/// DNAT entries of its published ports, and its addresses in the sets of
/// the policy groups it was classified into (and the isolation sets of
/// isolated groups). `policy` is its network's compiled rule set.
pub fn endpoint_elements(ep: &Endpoint, policy: &RuleSet) -> Vec<Element> {
    let v4 = ep.addresses.iter().map(|a| a.addr()).find(IpAddr::is_ipv4);
    let v6 = ep.addresses.iter().map(|a| a.addr()).find(IpAddr::is_ipv6);
    let mut out = Vec::new();
    for m in &ep.spec.publish {
        let targets: Vec<(IpAddr, Option<IpAddr>)> = match m.host_ip {
            None => [v4, v6].into_iter().flatten().map(|t| (t, None)).collect(),
            Some(h) => {
                [v4, v6].into_iter().flatten().filter(|t| t.is_ipv4() == h.is_ipv4()).map(|t| (t, Some(h))).collect()
            }
        };
        for (target, host) in targets {
            for (hp, cp) in m.pairs() {
                let (p, hp, cp) = (Field::Proto(m.proto), Field::Port(hp), Field::Port(cp));
                let data = vec![Field::Addr(target), cp];
                let (map, key) = match (target.is_ipv4(), host) {
                    (true, None) => ("pub4_any", vec![p, hp]),
                    (true, Some(h)) => ("pub4_ip", vec![Field::Addr(h), p, hp]),
                    (false, None) => ("pub6_any", vec![p, hp]),
                    (false, Some(h)) => ("pub6_ip", vec![Field::Addr(h), p, hp]),
                };
                out.push(Element { set: map.to_owned(), key, data });
            }
        }
    }
    let groups = policy.groups();
    for g in &ep.groups {
        let Some(idx) = groups.iter().position(|x| x == g) else { continue };
        for a in [v4, v6].into_iter().flatten() {
            let fam = if a.is_ipv4() { 4 } else { 6 };
            let el = |set: String| Element { set, key: vec![Field::Addr(a)], data: Vec::new() };
            out.push(el(group_set(&ep.network_id, idx, fam)));
            for iso in &policy.isolated {
                if &iso.group == g {
                    let set = match iso.direction {
                        Direction::Ingress => format!("iso_in{fam}"),
                        Direction::Egress => format!("iso_out{fam}"),
                    };
                    let e = el(set);
                    if !out.contains(&e) {
                        out.push(e);
                    }
                }
            }
        }
    }
    out
}

/// The elements an endpoint on another node (cluster mode) has on this
/// one: its addresses in its policy groups' sets, so a rule naming a group
/// matches it across hosts. Its published ports and isolation are its own
/// node's.
pub fn remote_elements(ep: &Endpoint, policy: &RuleSet) -> Vec<Element> {
    let groups: Vec<String> = (0..policy.groups().len())
        .flat_map(|i| [group_set(&ep.network_id, i, 4), group_set(&ep.network_id, i, 6)])
        .collect();
    endpoint_elements(ep, policy).into_iter().filter(|e| groups.contains(&e.set)).collect()
}

/// The name of the set holding a network's group members of one family.
fn group_set(network_id: &str, idx: usize, fam: u8) -> String {
    format!("g{fam}_{}_{idx}", &network_id[..network_id.len().min(12)])
}

/// `elements` grouped by set, sets in name order, elements in their order.
pub fn by_set(elements: &[Element]) -> Vec<(&str, Vec<&Element>)> {
    let mut sets: Vec<&str> = elements.iter().map(|e| e.set.as_str()).collect();
    sets.sort_unstable();
    sets.dedup();
    sets.into_iter().map(|set| (set, elements.iter().filter(|e| e.set == set).collect())).collect()
}

/// The whole `inet weft` table for `networks` (each with its compiled
/// policy) and `endpoints`, as one atomic script.
pub fn render_ruleset<'a>(
    networks: &[(&'a Network, &'a RuleSet)],
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
) -> String {
    render_cluster_ruleset(networks, endpoints, [])
}

/// [`render_ruleset`] with the endpoints of other nodes too (cluster mode:
/// [`remote_elements`]).
pub fn render_cluster_ruleset<'a>(
    networks: &[(&'a Network, &'a RuleSet)],
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    remote: impl IntoIterator<Item = &'a Endpoint>,
) -> String {
    let networks: Vec<(&Network, &RuleSet)> = networks.iter().copied().filter(|(n, _)| n.is_bridge()).collect();
    let mut bridges = Vec::new();
    let mut internal = Vec::new();
    let mut nat4 = Vec::new();
    let mut nat6 = Vec::new();
    for (n, _) in &networks {
        let br = format!("\"{}\"", n.bridge);
        bridges.push(br.clone());
        if n.spec.internal {
            internal.push(br);
            continue;
        }
        for s in &n.spec.subnets {
            if s.subnet.network().is_ipv4() {
                nat4.push(s.subnet.to_string());
            } else {
                nat6.push(s.subnet.to_string());
            }
        }
    }
    // Every named set and map, with its type and elements.
    let mut sets: Vec<(String, &str, &str, Vec<String>)> = vec![
        ("pub4_any".into(), "map", "inet_proto . inet_service : ipv4_addr . inet_service", vec![]),
        ("pub4_ip".into(), "map", "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service", vec![]),
        ("pub6_any".into(), "map", "inet_proto . inet_service : ipv6_addr . inet_service", vec![]),
        ("pub6_ip".into(), "map", "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service", vec![]),
        ("iso_in4".into(), "set", "ipv4_addr", vec![]),
        ("iso_in6".into(), "set", "ipv6_addr", vec![]),
        ("iso_out4".into(), "set", "ipv4_addr", vec![]),
        ("iso_out6".into(), "set", "ipv6_addr", vec![]),
    ];
    let mut rules_in = String::new();
    let mut rules_out = String::new();
    for (n, rs) in &networks {
        let groups = rs.groups();
        for idx in 0..groups.len() {
            sets.push((group_set(&n.id, idx, 4), "set", "ipv4_addr", vec![]));
            sets.push((group_set(&n.id, idx, 6), "set", "ipv6_addr", vec![]));
        }
        for r in &rs.rules {
            let out = match r.direction {
                Direction::Ingress => &mut rules_in,
                Direction::Egress => &mut rules_out,
            };
            policy_rule(out, n, &groups, r);
        }
    }
    let by_network: std::collections::HashMap<&str, &RuleSet> =
        networks.iter().map(|(n, rs)| (n.id.as_str(), *rs)).collect();
    let empty = RuleSet::default();
    let local = endpoints.into_iter().map(|e| (e, false));
    for (ep, is_remote) in local.chain(remote.into_iter().map(|e| (e, true))) {
        let rs = by_network.get(ep.network_id.as_str()).copied().unwrap_or(&empty);
        let elements = if is_remote { remote_elements(ep, rs) } else { endpoint_elements(ep, rs) };
        for e in elements {
            let (set, el) = (e.set.clone(), e.to_string());
            if let Some(m) = sets.iter_mut().find(|m| m.0 == set)
                && !m.3.contains(&el)
            {
                m.3.push(el);
            }
        }
    }
    let intra: Vec<String> = bridges.iter().map(|b| format!("{b} . {b}")).collect();
    let mut s = String::new();
    let t = format!("{NFT_FAMILY} {NFT_TABLE}");
    let _ = writeln!(s, "table {t} {{}}");
    let _ = writeln!(s, "delete table {t}");
    let _ = writeln!(s, "table {t} {{");
    set(&mut s, "set", "bridges", "ifname", false, &bridges);
    set(&mut s, "set", "internal_bridges", "ifname", false, &internal);
    set(&mut s, "set", "intra", "ifname . ifname", false, &intra);
    set(&mut s, "set", "nat4", "ipv4_addr", true, &nat4);
    set(&mut s, "set", "nat6", "ipv6_addr", true, &nat6);
    for (name, kind, ty, els) in &sets {
        set(&mut s, kind, name, ty, false, els);
    }
    s.push_str("\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n");
    s.push_str(DNAT_RULES);
    s.push_str("\t}\n\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n");
    s.push_str(DNAT_RULES);
    s.push_str(
        "\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state established,related accept
\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept
\t\toifname @bridges oifname != @internal_bridges ct status dnat accept
\t\tiifname . oifname @intra jump pol_intra
\t\tiifname @internal_bridges drop
\t\toifname @internal_bridges drop
\t\tiifname @bridges oifname != @bridges jump pol_egress
\t\toifname @bridges drop
\t}
\tchain pol_intra {
\t\tjump pol_out
\t\tjump pol_in
\t\taccept
\t}
\tchain pol_egress {
\t\tjump pol_out
\t\taccept
\t}
",
    );
    isolation_chain(&mut s, "pol_in", "daddr", "iso_in", &rules_in);
    isolation_chain(&mut s, "pol_out", "saddr", "iso_out", &rules_out);
    s.push_str(
        "\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tct status dnat iifname . oifname @intra masquerade
\t\toifname @bridges ip saddr 127.0.0.0/8 masquerade
\t\toifname @bridges return
\t\tip saddr @nat4 masquerade
\t\tip6 saddr @nat6 masquerade
\t}
}
",
    );
    s
}

/// One direction's check: an address not in the isolated set returns at
/// once; otherwise the allow rules, then drop.
fn isolation_chain(s: &mut String, chain: &str, dir: &str, iso: &str, rules: &str) {
    let _ = writeln!(s, "\tchain {chain} {{");
    let _ = writeln!(s, "\t\tmeta nfproto ipv4 ip {dir} != @{iso}4 return");
    let _ = writeln!(s, "\t\tmeta nfproto ipv6 ip6 {dir} != @{iso}6 return");
    s.push_str(rules);
    s.push_str("\t\tdrop\n\t}\n");
}

/// One allow rule as nftables rules (one per peer and family), each ending
/// in `return`: the flow passes this direction's check.
fn policy_rule(out: &mut String, net: &Network, groups: &[String], r: &Rule) {
    let Some(gidx) = groups.iter().position(|g| g == &r.group) else { return };
    let any = [Peer::Any];
    let peers: &[Peer] = if r.peers.is_empty() { &any } else { &r.peers };
    let (me, them) = match r.direction {
        Direction::Ingress => ("daddr", "saddr"),
        Direction::Egress => ("saddr", "daddr"),
    };
    for fam in [4u8, 6] {
        let (ip, nfproto) = if fam == 4 { ("ip", "ipv4") } else { ("ip6", "ipv6") };
        let proto = match r.proto {
            RuleProto::Any => String::new(),
            RuleProto::Icmp => format!(" meta l4proto {}", if fam == 4 { "icmp" } else { "ipv6-icmp" }),
            RuleProto::Ports(p) if r.ports.is_empty() => format!(" meta l4proto {p}"),
            RuleProto::Ports(p) => {
                let ports: Vec<String> =
                    r.ports.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
                format!(" meta l4proto {p} th dport {{ {} }}", ports.join(", "))
            }
        };
        for peer in peers {
            let peer_match = match peer {
                Peer::Any => String::new(),
                Peer::Group(h) => match groups.iter().position(|g| g == h) {
                    Some(i) => format!(" {ip} {them} @{}", group_set(&net.id, i, fam)),
                    None => continue,
                },
                Peer::Network => {
                    let subnets: Vec<String> = net
                        .spec
                        .subnets
                        .iter()
                        .filter(|s| s.subnet.network().is_ipv4() == (fam == 4))
                        .map(|s| s.subnet.to_string())
                        .collect();
                    if subnets.is_empty() {
                        continue;
                    }
                    format!(" {ip} {them} {{ {} }}", subnets.join(", "))
                }
                Peer::Cidr { prefix, except } => {
                    if prefix.network().is_ipv4() != (fam == 4) {
                        continue;
                    }
                    let mut m = format!(" {ip} {them} {prefix}");
                    if !except.is_empty() {
                        let ex: Vec<String> = except.iter().map(ToString::to_string).collect();
                        let _ = write!(m, " {ip} {them} != {{ {} }}", ex.join(", "));
                    }
                    m
                }
            };
            let set = group_set(&net.id, gidx, fam);
            let _ = writeln!(
                out,
                "\t\tmeta nfproto {nfproto} {ip} {me} @{set}{peer_match}{proto} return comment \"{}\"",
                comment(r)
            );
        }
    }
}

/// A rule's origin as an nftables comment (quotes removed, bounded).
fn comment(r: &Rule) -> String {
    let c = format!("{} ({})", r.name, r.source);
    c.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).take(120).collect()
}

/// The script that removes weft's table (used when the last network goes).
pub fn render_removal() -> String {
    format!("table {NFT_FAMILY} {NFT_TABLE} {{}}\ndelete table {NFT_FAMILY} {NFT_TABLE}\n")
}

fn set(s: &mut String, kind: &str, name: &str, ty: &str, interval: bool, elements: &[String]) {
    let _ = writeln!(s, "\t{kind} {name} {{");
    let _ = writeln!(s, "\t\ttype {ty}");
    if interval {
        let _ = writeln!(s, "\t\tflags interval");
    }
    if !elements.is_empty() {
        let _ = writeln!(s, "\t\telements = {{ {} }}", elements.join(", "));
    }
    let _ = writeln!(s, "\t}}");
}
