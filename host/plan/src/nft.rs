//! weft's nftables ruleset, rendered from the set of networks. weft owns one
//! table (`inet weft`) and never touches any other. The rules are fixed;
//! networks only add elements to named sets, so the rule count does not grow
//! with networks. The script replaces the table in one atomic transaction
//! (`table ...; delete table ...; table ... { ... }` in one `nft -f`), which
//! is also how reconcile repairs a flushed or deleted table.

use std::fmt::Write;

use weft_model::network::Network;

/// The nftables family of weft's table.
pub const NFT_FAMILY: &str = "inet";
/// The nftables table weft owns.
pub const NFT_TABLE: &str = "weft";

/// The whole `inet weft` table for `networks`, as one atomic script.
pub fn render_ruleset<'a>(networks: impl IntoIterator<Item = &'a Network>) -> String {
    let mut bridges = Vec::new();
    let mut internal = Vec::new();
    let mut nat4 = Vec::new();
    let mut nat6 = Vec::new();
    for n in networks {
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
    let intra: Vec<String> = bridges.iter().map(|b| format!("{b} . {b}")).collect();
    let mut s = String::new();
    let t = format!("{NFT_FAMILY} {NFT_TABLE}");
    let _ = writeln!(s, "table {t} {{}}");
    let _ = writeln!(s, "delete table {t}");
    let _ = writeln!(s, "table {t} {{");
    set(&mut s, "bridges", "ifname", false, &bridges);
    set(&mut s, "internal_bridges", "ifname", false, &internal);
    set(&mut s, "intra", "ifname . ifname", false, &intra);
    set(&mut s, "nat4", "ipv4_addr", true, &nat4);
    set(&mut s, "nat6", "ipv6_addr", true, &nat6);
    s.push_str(
        "\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tiifname . oifname @intra accept
\t\tiifname @internal_bridges drop
\t\toifname @internal_bridges drop
\t\toifname @bridges ct state established,related accept
\t\tiifname @bridges accept
\t\toifname @bridges drop
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
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

fn set(s: &mut String, name: &str, ty: &str, interval: bool, elements: &[String]) {
    let _ = writeln!(s, "\tset {name} {{");
    let _ = writeln!(s, "\t\ttype {ty}");
    if interval {
        let _ = writeln!(s, "\t\tflags interval");
    }
    if !elements.is_empty() {
        let _ = writeln!(s, "\t\telements = {{ {} }}", elements.join(", "));
    }
    let _ = writeln!(s, "\t}}");
}
