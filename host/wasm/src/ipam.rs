//! The `weft:ipam` world on the host side: the lease view the guest imports,
//! and one `allocate` call in a fresh, limited store.

use std::net::IpAddr;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, StoreLimits};
use weft_model::ipam::{DecisionError, Ipam, IpamRequest, Pool, PoolLeases};

use crate::convert::{cidr, from_wit, to_wit};
use crate::{PluginError, WasmHost, limits};

/// Generated bindings for the `weft:ipam/ipam` world.
pub mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: ["../../wit/types", "../../wit/ipam"],
        world: "weft:ipam/ipam",
    });
}

use bindings::exports::weft::ipam::allocator;
use bindings::weft::types::types::IpAddress;

/// Store data for one IPAM call: the pool's leases (moved in for the call
/// and handed back after) and the store's limits.
pub struct IpamState {
    leases: PoolLeases,
    limits: StoreLimits,
}

impl bindings::weft::types::types::Host for IpamState {}

impl bindings::weft::ipam::leases::Host for IpamState {
    fn is_free(&mut self, address: IpAddress) -> bool {
        self.leases.is_free(from_wit(address))
    }
    fn next_free(&mut self, first: IpAddress, last: IpAddress) -> Option<IpAddress> {
        self.leases.next_free(from_wit(first), from_wit(last)).map(to_wit)
    }
    fn last_allocated(&mut self) -> Option<IpAddress> {
        self.leases.last.map(to_wit)
    }
}

/// Link `component` against the ipam world's imports only.
pub fn prepare(
    engine: &Engine,
    name: &str,
    component: &Component,
) -> Result<bindings::IpamPre<IpamState>, PluginError> {
    let mut linker: Linker<IpamState> = Linker::new(engine);
    bindings::Ipam::add_to_linker::<IpamState, HasSelf<IpamState>>(&mut linker, |s| s)
        .map_err(|e| PluginError::Load { module: name.to_owned(), reason: e.to_string() })?;
    let pre = crate::link(name, "weft:ipam", component, &linker)?;
    bindings::IpamPre::new(pre).map_err(|e| crate::wrong_world(name, "weft:ipam", e))
}

impl Ipam for WasmHost {
    fn allocate(
        &self,
        module: &str,
        pool: &Pool,
        request: &IpamRequest,
        config: &[(String, String)],
        leases: &mut PoolLeases,
    ) -> Result<IpAddr, DecisionError> {
        let failed = |e: PluginError| e.into_decision(module);
        let m = self.ipam_module(module).map_err(failed)?;
        let state = IpamState { leases: std::mem::take(leases), limits: limits::store_limits() };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);

        let wit_pool = allocator::Pool {
            subnet: cidr(&pool.subnet),
            range: pool.range.as_ref().map(cidr),
            gateway: pool.gateway.map(to_wit),
        };
        let wit_req = allocator::Request {
            network: request.network.clone(),
            endpoint: request.endpoint.clone(),
            static_address: request.static_address.map(to_wit),
        };
        let result = self.run(crate::Kind::Ipam, &m, &mut store, |pre, store| {
            pre.instantiate(&mut *store)?.weft_ipam_allocator().call_allocate(
                store,
                wit_pool,
                &wit_req,
                &config.to_vec(),
            )
        });
        *leases = store.into_data().leases;
        match result {
            Ok(Ok(a)) => Ok(from_wit(a)),
            Ok(Err(allocator::IpamError::Exhausted(m))) => Err(DecisionError::Exhausted(m)),
            Ok(Err(allocator::IpamError::Conflict(m))) => Err(DecisionError::Conflict(m)),
            Ok(Err(allocator::IpamError::Invalid(m))) => Err(DecisionError::Invalid(m)),
            Err(e) => Err(failed(crate::classify(module, e))),
        }
    }
}
