//! Per-tenant quotas. What a tenant holds is counted from the index —
//! committed objects and those being committed — so the check a commit
//! makes while it claims its objects under the index lock cannot be raced:
//! of 32 clients after the last slot, one gets it. A change is refused only
//! for the resources it adds to, so a tenant over a lowered quota can still
//! delete and change what it has.

use weft_model::access::Resources;
use weft_model::endpoint::Endpoint;
use weft_model::{ControlError, Tenant};

use crate::change::Change;
use crate::index::State;

/// The published host ports of `ep` (a range counts each port).
fn ports(ep: &Endpoint) -> u64 {
    ep.spec.publish.iter().map(|m| u64::from(m.len())).sum()
}

/// What `tenant` holds now: one pass over each kind of object.
pub fn usage(st: &State, tenant: &Tenant) -> Resources {
    let mine = |t: &str| t == tenant.as_str();
    let (endpoints, published_ports) =
        st.all_endpoints().filter(|e| mine(e.spec.tenant.as_str())).fold((0, 0), |(n, p), e| (n + 1, p + ports(e)));
    let (modules, module_bytes) =
        st.modules.values().filter(|m| mine(&m.tenant)).fold((0, 0), |(n, b), m| (n + 1, b + m.size));
    Resources {
        networks: st.all_networks().filter(|n| mine(n.spec.tenant.as_str())).count() as u64,
        endpoints,
        published_ports,
        modules,
        module_bytes,
        documents: st.documents.values().filter(|d| mine(&d.tenant)).count() as u64,
    }
}

/// What `change` adds to `tenant`'s holdings (never below zero per resource:
/// only growth is checked).
fn growth(st: &State, change: &Change, tenant: &Tenant) -> Resources {
    let mine = |t: &str| t == tenant.as_str();
    let new_eps = change.new_endpoints.iter().filter(|e| mine(e.spec.tenant.as_str()));
    let b = &change.batch;
    let new_modules = b.put_modules.iter().filter(|m| mine(&m.tenant));
    let replaced = |m: &weft_model::module::ModuleRecord| st.modules.get(&m.store_key()).map(|o| o.size);
    let added_docs = b.put_documents.iter().filter(|d| mine(&d.tenant) && !st.documents.contains_key(&d.store_key()));
    let bytes_after: u64 = new_modules.clone().map(|m| m.size).sum();
    let bytes_before: u64 = new_modules.clone().filter_map(replaced).sum();
    Resources {
        networks: change.new_networks.iter().filter(|n| mine(n.spec.tenant.as_str())).count() as u64,
        endpoints: new_eps.clone().count() as u64,
        published_ports: new_eps.map(ports).sum(),
        modules: new_modules.filter(|m| replaced(m).is_none()).count() as u64,
        module_bytes: bytes_after.saturating_sub(bytes_before),
        documents: added_docs.count() as u64,
    }
}

/// RESOURCE_EXHAUSTED if `change` would take `tenant` past one of `limits`.
pub fn check(st: &State, change: &Change, tenant: &Tenant, limits: &Resources) -> Result<(), ControlError> {
    let adds = growth(st, change, tenant);
    if adds == Resources::default() {
        return Ok(());
    }
    let have = usage(st, tenant);
    for (((key, limit), (_, used)), (_, more)) in limits.each().into_iter().zip(have.each()).zip(adds.each()) {
        if more > 0 && used + more > limit {
            return Err(exceeded(tenant, key, limit, used));
        }
    }
    Ok(())
}

/// The refusal of going past quota `key`.
pub fn exceeded(tenant: &Tenant, key: &str, limit: u64, used: u64) -> ControlError {
    ControlError::Exhausted(format!(
        "tenant {:?}: quota {key} is {limit} and {used} are in use (tenants.{tenant}.quotas.{key} in weftd's configuration)",
        tenant.as_str()
    ))
}

/// Before compiling an upload of `bytes` bytes as module `name`: refuse at
/// once what the commit would refuse (the commit checks again).
pub fn check_upload(
    st: &State,
    tenant: &Tenant,
    limits: &Resources,
    name: &str,
    bytes: u64,
) -> Result<(), ControlError> {
    let have = usage(st, tenant);
    let old = st.modules.get(&weft_model::module::store_key(tenant.as_str(), name)).map(|m| m.size);
    if old.is_none() && have.modules + 1 > limits.modules {
        return Err(exceeded(tenant, "modules", limits.modules, have.modules));
    }
    if have.module_bytes.saturating_sub(old.unwrap_or(0)) + bytes > limits.module_bytes {
        return Err(exceeded(tenant, "module_bytes", limits.module_bytes, have.module_bytes));
    }
    Ok(())
}
