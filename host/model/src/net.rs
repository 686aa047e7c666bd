//! Address arithmetic and parsing with messages that name the value and the
//! rule (`subnet 10.0.0.0/33: prefix length must be <= 32`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::error::InvalidRequest;

/// An address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// The address of the same family as `like` with integer value `v`.
pub fn from_u128(like: IpAddr, v: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// Parse a CIDR prefix whose host bits are zero.
pub fn parse_cidr(field: &str, s: &str) -> Result<IpNet, InvalidRequest> {
    let s = s.trim();
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| InvalidRequest::new(field, format!("{s}: expected ADDRESS/PREFIX, e.g. 10.89.0.0/24")))?;
    let addr: IpAddr =
        addr.parse().map_err(|_| InvalidRequest::new(field, format!("{s}: {addr:?} is not an IP address")))?;
    let len: u8 =
        len.parse().map_err(|_| InvalidRequest::new(field, format!("{s}: prefix length {len:?} is not a number")))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(InvalidRequest::new(field, format!("{s}: prefix length must be <= {max}")));
    }
    let net = IpNet::new(addr, len).map_err(|e| InvalidRequest::new(field, format!("{s}: {e}")))?;
    if net.network() != addr {
        return Err(InvalidRequest::new(
            field,
            format!("{s}: host bits are set; did you mean {}/{len}?", net.network()),
        ));
    }
    Ok(net)
}

/// Ranges no container network may use, with what they are: the host's
/// own (loopback, "this network"), ones routers and the kernel treat
/// specially (link-local, multicast, reserved and broadcast), and IPv6's
/// embeddings of IPv4. A subnet sharing any address with one is refused.
pub const RESERVED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\""),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
    ("::/96", "unspecified, loopback and IPv4-compatible"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// The reserved range `net` shares addresses with, if any, as `range (what)`.
pub fn reserved_overlap(net: &IpNet) -> Option<String> {
    RESERVED.iter().find_map(|(range, what)| {
        let r: IpNet = range.parse().ok()?;
        overlaps(net, &r).then(|| format!("{range} ({what})"))
    })
}

/// Parse one IP address.
pub fn parse_ip(field: &str, s: &str) -> Result<IpAddr, InvalidRequest> {
    s.trim().parse().map_err(|_| InvalidRequest::new(field, format!("{s:?} is not an IP address")))
}

/// Whether two prefixes share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first and last address of `net` that may be given to a host: without
/// the network address and (IPv4) the broadcast address, except on /31, /32,
/// /127 and /128 where every address is usable.
pub fn usable_range(net: &IpNet) -> (IpAddr, IpAddr) {
    let host_bits = net.max_prefix_len() - net.prefix_len();
    if host_bits <= 1 {
        return (net.network(), net.broadcast());
    }
    let first = from_u128(net.network(), to_u128(net.network()) + 1);
    let last = match net {
        IpNet::V4(_) => from_u128(net.network(), to_u128(net.broadcast()) - 1),
        IpNet::V6(_) => net.broadcast(),
    };
    (first, last)
}

/// Whether `a` is an address of `net` a host may use (see [`usable_range`]).
pub fn is_usable(net: &IpNet, a: IpAddr) -> bool {
    let (first, last) = usable_range(net);
    a.is_ipv4() == net.network().is_ipv4() && to_u128(a) >= to_u128(first) && to_u128(a) <= to_u128(last)
}
