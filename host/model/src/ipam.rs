//! The IPAM decision contract as the host sees it. The decision itself is
//! made by a Wasm component (`weft:ipam`); the host owns the lease table,
//! answers the component's questions from it, and checks every answer
//! before committing it ([`check_answer`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::net::{from_u128, is_usable, to_u128};

/// One pool of a network as offered to the IPAM component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The subnet.
    pub subnet: IpNet,
    /// A narrower range to allocate from.
    pub range: Option<IpNet>,
    /// The gateway, never handed out.
    pub gateway: Option<IpAddr>,
}

/// What is being asked of the IPAM component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamRequest {
    /// Network name.
    pub network: String,
    /// Endpoint name.
    pub endpoint: String,
    /// A specific address asked for.
    pub static_address: Option<IpAddr>,
}

/// The leases of one pool: which address belongs to which endpoint, plus the
/// last address handed out (so allocation can go on from there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolLeases {
    /// Address -> endpoint id.
    pub leases: BTreeMap<IpAddr, String>,
    /// The most recent allocation.
    pub last: Option<IpAddr>,
}

impl PoolLeases {
    /// True if nobody holds `a`.
    pub fn is_free(&self, a: IpAddr) -> bool {
        !self.leases.contains_key(&a)
    }

    /// The first free address in [first, last]: walks only the run of leased
    /// addresses that starts at `first`, so it is cheap on sparse pools.
    pub fn next_free(&self, first: IpAddr, last: IpAddr) -> Option<IpAddr> {
        if first.is_ipv4() != last.is_ipv4() || to_u128(first) > to_u128(last) {
            return None;
        }
        let mut candidate = to_u128(first);
        for used in self.leases.range(first..=last).map(|(a, _)| to_u128(*a)) {
            if used != candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        (candidate <= to_u128(last)).then(|| from_u128(first, candidate))
    }

    /// Record that `endpoint` holds `a`.
    pub fn reserve(&mut self, a: IpAddr, endpoint: &str) {
        self.leases.insert(a, endpoint.to_owned());
        self.last = Some(a);
    }

    /// Release `a` if `endpoint` holds it.
    pub fn release(&mut self, a: IpAddr, endpoint: &str) {
        if self.leases.get(&a).is_some_and(|holder| holder == endpoint) {
            self.leases.remove(&a);
        }
    }
}

/// Why an IPAM decision produced no address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecisionError {
    /// The pool is full.
    #[error("{0}")]
    Exhausted(String),
    /// The requested address is taken.
    #[error("{0}")]
    Conflict(String),
    /// The request cannot be met as asked.
    #[error("{0}")]
    Invalid(String),
    /// The component failed: trap, deadline, missing, or a wrong answer.
    #[error("module {module}: {reason}")]
    Failed {
        /// The component's name.
        module: String,
        /// What went wrong.
        reason: String,
    },
}

/// Something that decides addresses. Implemented by the Wasm host; fakes
/// implement it in unit tests of the controller.
pub trait Ipam: Send + Sync {
    /// Choose an address for `request` from `pool`, asking `leases` as needed.
    fn allocate(
        &self,
        module: &str,
        pool: &Pool,
        request: &IpamRequest,
        config: &[(String, String)],
        leases: &mut PoolLeases,
    ) -> Result<IpAddr, DecisionError>;
}

/// The host's check of an IPAM answer: inside the subnet and range, usable,
/// not the gateway, free, and the static address if one was asked for.
pub fn check_answer(pool: &Pool, request: &IpamRequest, leases: &PoolLeases, a: IpAddr) -> Result<(), String> {
    if !is_usable(&pool.subnet, a) {
        return Err(format!("answered {a}, which is not a usable address of {}", pool.subnet));
    }
    if let Some(r) = &pool.range
        && !r.contains(&a)
        && request.static_address.is_none()
    {
        return Err(format!("answered {a}, which is outside the ip-range {r}"));
    }
    if Some(a) == pool.gateway {
        return Err(format!("answered {a}, which is the gateway"));
    }
    if !leases.is_free(a) {
        return Err(format!("answered {a}, which is already leased"));
    }
    if let Some(s) = request.static_address
        && s != a
    {
        return Err(format!("answered {a} but {s} was requested"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "ipam_tests.rs"]
mod tests;
