//! weft's nftables ruleset. weft owns one table (`inet weft`) and never
//! touches any other. The rules are fixed: networks and endpoints only add
//! elements to named sets and maps (bridges, subnets to masquerade,
//! published-port DNAT maps keyed by protocol and port), so the rule count
//! does not grow with networks, endpoints or published ports.
//!
//! Two kinds of script come out of here:
//! - [`render_ruleset`]: the whole table, replacing the old one in one atomic
//!   transaction (`table ...; delete table ...; table ... { ... }` in one
//!   `nft -f`). Used on network changes and by reconcile, which is how a
//!   flushed or deleted table is repaired.
//! - [`render_endpoint`]: add or delete one endpoint's map elements, for
//!   attach and detach.

use std::fmt::Write;
use std::net::IpAddr;

use weft_model::endpoint::Endpoint;
use weft_model::network::Network;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `add element`.
    Add,
    /// `delete element`.
    Delete,
}

/// The DNAT map elements of one endpoint's published ports, as
/// (map name, element) pairs.
pub fn endpoint_elements(ep: &Endpoint) -> Vec<(&'static str, String)> {
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
                let p = m.proto;
                let (map, el) = match (target.is_ipv4(), host) {
                    (true, None) => ("pub4_any", format!("{p} . {hp} : {target} . {cp}")),
                    (true, Some(h)) => ("pub4_ip", format!("{h} . {p} . {hp} : {target} . {cp}")),
                    (false, None) => ("pub6_any", format!("{p} . {hp} : {target} . {cp}")),
                    (false, Some(h)) => ("pub6_ip", format!("{h} . {p} . {hp} : {target} . {cp}")),
                };
                out.push((map, el));
            }
        }
    }
    out
}

/// The script that adds or deletes one endpoint's elements; None if it has
/// none. One script is one transaction.
pub fn render_endpoint(ep: &Endpoint, change: Change) -> Option<String> {
    let elements = endpoint_elements(ep);
    if elements.is_empty() {
        return None;
    }
    let verb = match change {
        Change::Add => "add",
        Change::Delete => "delete",
    };
    let mut s = String::new();
    for map in ["pub4_any", "pub4_ip", "pub6_any", "pub6_ip"] {
        let els: Vec<&str> = elements.iter().filter(|(m, _)| *m == map).map(|(_, e)| e.as_str()).collect();
        if !els.is_empty() {
            let _ = writeln!(s, "{verb} element {NFT_FAMILY} {NFT_TABLE} {map} {{ {} }}", els.join(", "));
        }
    }
    Some(s)
}

/// The whole `inet weft` table for `networks` and `endpoints`, as one
/// atomic script.
pub fn render_ruleset<'a>(
    networks: impl IntoIterator<Item = &'a Network>,
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
) -> String {
    let mut bridges = Vec::new();
    let mut internal = Vec::new();
    let mut nat4 = Vec::new();
    let mut nat6 = Vec::new();
    for n in networks.into_iter().filter(|n| n.is_bridge()) {
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
    let mut maps: [(&str, &str, Vec<String>); 4] = [
        ("pub4_any", "inet_proto . inet_service : ipv4_addr . inet_service", vec![]),
        ("pub4_ip", "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service", vec![]),
        ("pub6_any", "inet_proto . inet_service : ipv6_addr . inet_service", vec![]),
        ("pub6_ip", "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service", vec![]),
    ];
    for ep in endpoints {
        // Only endpoints with their own interface publish (validated at attach).
        for (map, el) in endpoint_elements(ep) {
            if let Some(m) = maps.iter_mut().find(|m| m.0 == map) {
                m.2.push(el);
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
    for (name, ty, els) in &maps {
        set(&mut s, "map", name, ty, false, els);
    }
    s.push_str("\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n");
    s.push_str(DNAT_RULES);
    s.push_str("\t}\n\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n");
    s.push_str(DNAT_RULES);
    s.push_str(
        "\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tiifname . oifname @intra accept
\t\tiifname @internal_bridges drop
\t\toifname @internal_bridges drop
\t\toifname @bridges ct state established,related accept
\t\toifname @bridges ct status dnat accept
\t\tiifname @bridges oifname != @bridges accept
\t\toifname @bridges drop
\t}
\tchain postrouting {
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
