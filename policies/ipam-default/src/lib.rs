//! weft's default IPAM decision component.
//!
//! Docker-compatible behaviour: addresses are handed out sequentially after
//! the last one allocated, wrapping around to the start of the pool; a static
//! request is honoured if it is usable and free. The network address, the
//! IPv4 broadcast address and the gateway are never handed out. The guest
//! sees only what the `leases` view answers; the host re-checks every answer.

mod pool;

wit_bindgen::generate!({
    path: ["../../wit/types", "../../wit/ipam"],
    world: "weft:ipam/ipam",
    generate_all,
});

use exports::weft::ipam::allocator::{Guest, IpamError, Pool, Request};
use weft::ipam::leases;
use weft::types::types::{Config, IpAddress};

use pool::{Family, Span};

struct Component;

impl Guest for Component {
    fn allocate(pool: Pool, request: Request, _config: Config) -> Result<IpAddress, IpamError> {
        let family = Family::of(&pool.subnet.address);
        let subnet = Span::usable(family, to_u128(&pool.subnet.address), pool.subnet.prefix)
            .ok_or_else(|| IpamError::Invalid(format!("subnet /{} has no usable address", pool.subnet.prefix)))?;
        let range = match &pool.range {
            Some(r) => Span::usable(family, to_u128(&r.address), r.prefix)
                .and_then(|s| s.intersect(&subnet))
                .ok_or_else(|| IpamError::Invalid("ip-range has no usable address inside the subnet".into()))?,
            None => subnet,
        };
        let gateway = pool.gateway.as_ref().map(to_u128);

        if let Some(want) = &request.static_address {
            let addr = to_u128(want);
            if Family::of(want) != family || !subnet.contains(addr) {
                return Err(IpamError::Invalid(format!(
                    "address {} is not a usable address of the subnet",
                    show(family, addr)
                )));
            }
            if Some(addr) == gateway {
                return Err(IpamError::Invalid(format!("address {} is the gateway", show(family, addr))));
            }
            if !leases::is_free(*want) {
                return Err(IpamError::Conflict(format!("address {} is already in use", show(family, addr))));
            }
            return Ok(*want);
        }

        // Start after the last allocation (wrap-around), as Docker does.
        let start = leases::last_allocated()
            .map(|a| to_u128(&a))
            .filter(|a| range.contains(*a) && *a < range.last)
            .map(|a| a + 1)
            .unwrap_or(range.first);
        for (first, last) in [(start, range.last), (range.first, start.saturating_sub(1))] {
            if first > last || first < range.first {
                continue;
            }
            let mut from = first;
            while from <= last {
                match leases::next_free(from_u128(family, from), from_u128(family, last)) {
                    Some(found) => {
                        let f = to_u128(&found);
                        if f < from || f > last {
                            return Err(IpamError::Invalid("lease view answered outside the asked range".into()));
                        }
                        if Some(f) == gateway {
                            if f == u128::MAX {
                                break;
                            }
                            from = f + 1;
                            continue;
                        }
                        return Ok(found);
                    }
                    None => break,
                }
            }
        }
        Err(IpamError::Exhausted(format!(
            "no free address left in {}/{}",
            show(family, subnet.network),
            pool.subnet.prefix
        )))
    }
}

fn to_u128(a: &IpAddress) -> u128 {
    match a {
        IpAddress::V4(v) => u128::from(*v),
        IpAddress::V6((hi, lo)) => (u128::from(*hi) << 64) | u128::from(*lo),
    }
}

fn from_u128(family: Family, v: u128) -> IpAddress {
    match family {
        Family::V4 => IpAddress::V4(v as u32),
        Family::V6 => IpAddress::V6(((v >> 64) as u64, v as u64)),
    }
}

fn show(family: Family, v: u128) -> String {
    match family {
        Family::V4 => {
            let b = (v as u32).to_be_bytes();
            format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
        }
        Family::V6 => {
            let parts: Vec<String> = (0..8).rev().map(|i| format!("{:x}", (v >> (i * 16)) as u16)).collect();
            parts.join(":")
        }
    }
}

impl Family {
    fn of(a: &IpAddress) -> Family {
        match a {
            IpAddress::V4(_) => Family::V4,
            IpAddress::V6(_) => Family::V6,
        }
    }
}

export!(Component);
