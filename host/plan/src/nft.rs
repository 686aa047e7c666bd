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
//!
//! Policy rules become set elements too (`policy`): the chains hold a fixed
//! number of lookups per policy group, whatever the number of rules.

mod policy;

use std::fmt::Write;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use weft_model::endpoint::Endpoint;
use weft_model::network::Network;
use weft_model::policy::{Direction, RuleSet};
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
    /// `inet_proto` by number (ICMP and ICMPv6 in policy sets).
    L4(u8),
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
            Field::L4(n) => out.extend([n, 0, 0, 0]),
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
            Field::L4(n) => write!(f, "{n}"),
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
    /// In an interval set, the end of the key's range (field by field);
    /// empty for a single key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_end: Vec<Field>,
    /// A map element's value; empty in a set.
    pub data: Vec<Field>,
}

impl Element {
    /// A set element with a single key.
    pub fn point(set: &str, key: Vec<Field>) -> Element {
        Element { set: set.to_owned(), key, key_end: Vec::new(), data: Vec::new() }
    }
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |v: &[Field]| v.iter().map(Field::to_string).collect::<Vec<_>>().join(" . ");
        if self.key_end.is_empty() {
            f.write_str(&join(&self.key))?;
        } else {
            let fields: Vec<String> = self
                .key
                .iter()
                .zip(&self.key_end)
                .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
                .collect();
            f.write_str(&fields.join(" . "))?;
        }
        if !self.data.is_empty() {
            write!(f, " : {}", join(&self.data))?;
        }
        Ok(())
    }
}

/// The set and map elements of one endpoint:
/// DNAT entries of its published ports, its addresses in the sets of
/// the policy groups it was classified into (and the isolation sets of
/// isolated groups), and its flows in the member sets of rules that name
/// one of its groups as a peer. `policy` is its network's compiled rule
/// set.
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
                out.push(Element { set: map.to_owned(), key, key_end: Vec::new(), data });
            }
        }
    }
    let groups = policy.groups();
    for g in &ep.groups {
        let Some(idx) = groups.iter().position(|x| x == g) else { continue };
        for a in [v4, v6].into_iter().flatten() {
            let fam = if a.is_ipv4() { 4 } else { 6 };
            let el = |set: String| Element::point(&set, vec![Field::Addr(a)]);
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
    policy::member_elements(ep, [v4, v6], policy, &groups, &mut out);
    out
}

/// The elements an endpoint on another node (cluster mode) has on this
/// one: its addresses in its policy groups' sets and its flows in member
/// sets, so a rule naming a group matches it across hosts. Its published
/// ports and isolation are its own node's.
pub fn remote_elements(ep: &Endpoint, policy: &RuleSet) -> Vec<Element> {
    let groups: Vec<String> = (0..policy.groups().len())
        .flat_map(|i| [group_set(&ep.network_id, i, 4), group_set(&ep.network_id, i, 6)])
        .collect();
    endpoint_elements(ep, policy)
        .into_iter()
        .filter(|e| groups.contains(&e.set) || policy::is_member_set(&e.set))
        .collect()
}

/// The name of the set holding a network's group members of one family.
fn group_set(network_id: &str, idx: usize, fam: u8) -> String {
    format!("g{fam}_{}_{idx}", short_id(network_id))
}

/// A network's id as set names carry it (its first 12 characters).
fn short_id(network_id: &str) -> &str {
    &network_id[..network_id.len().min(12)]
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
    let decl = |kind, name: &str, ty| policy::Decl { kind, name: name.into(), ty, interval: false, elements: vec![] };
    let mut sets = vec![
        decl("map", "pub4_any", "inet_proto . inet_service : ipv4_addr . inet_service"),
        decl("map", "pub4_ip", "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service"),
        decl("map", "pub6_any", "inet_proto . inet_service : ipv6_addr . inet_service"),
        decl("map", "pub6_ip", "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service"),
        decl("set", "iso_in4", "ipv4_addr"),
        decl("set", "iso_in6", "ipv6_addr"),
        decl("set", "iso_out4", "ipv4_addr"),
        decl("set", "iso_out6", "ipv6_addr"),
    ];
    let mut rules_in = String::new();
    let mut rules_out = String::new();
    for (n, rs) in &networks {
        let c = policy::compile(n, rs);
        sets.extend(c.sets);
        rules_in.push_str(&c.ingress);
        rules_out.push_str(&c.egress);
    }
    let by_network: std::collections::HashMap<&str, &RuleSet> =
        networks.iter().map(|(n, rs)| (n.id.as_str(), *rs)).collect();
    let empty = RuleSet::default();
    let local = endpoints.into_iter().map(|e| (e, false));
    for (ep, is_remote) in local.chain(remote.into_iter().map(|e| (e, true))) {
        let rs = by_network.get(ep.network_id.as_str()).copied().unwrap_or(&empty);
        let elements = if is_remote { remote_elements(ep, rs) } else { endpoint_elements(ep, rs) };
        for e in elements {
            let el = e.to_string();
            if let Some(m) = sets.iter_mut().find(|m| m.name == e.set)
                && !m.elements.contains(&el)
            {
                m.elements.push(el);
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
    for d in &sets {
        set(&mut s, d.kind, &d.name, d.ty, d.interval, &d.elements);
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
