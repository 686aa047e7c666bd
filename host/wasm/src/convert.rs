//! Conversions between model addresses and the WIT `ip-address` variant.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::ipam::bindings::weft::types::types::{Cidr, IpAddress};

/// Model address to WIT.
pub fn to_wit(a: IpAddr) -> IpAddress {
    match a {
        IpAddr::V4(v) => IpAddress::V4(u32::from(v)),
        IpAddr::V6(v) => {
            let n = u128::from(v);
            IpAddress::V6(((n >> 64) as u64, n as u64))
        }
    }
}

/// WIT address to model.
pub fn from_wit(a: IpAddress) -> IpAddr {
    match a {
        IpAddress::V4(v) => IpAddr::V4(Ipv4Addr::from(v)),
        IpAddress::V6((hi, lo)) => IpAddr::V6(Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo))),
    }
}

/// WIT prefix to model (a prefix length past the family's width is clamped).
pub fn cidr_from_wit(c: &Cidr) -> IpNet {
    let a = from_wit(c.address);
    let max = if a.is_ipv4() { 32 } else { 128 };
    IpNet::new(a, c.prefix.min(max)).map(|n| n.trunc()).unwrap_or_else(|_| IpNet::from(a))
}

/// Model prefix to WIT.
pub fn cidr(n: &IpNet) -> Cidr {
    Cidr { address: to_wit(n.network()), prefix: n.prefix_len() }
}
