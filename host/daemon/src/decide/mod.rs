//! `decide`: from a snapshot of the index and the decision components, what
//! a request means to do — a [`Change`](crate::change::Change). Nothing
//! here changes anything: no lease is reserved, no record or kernel object
//! made, no revision taken, so a dry run stops here. The Wasm calls run
//! without the index lock; the caller holds the network lock whose lease
//! view IPAM reads.

pub mod endpoint;
pub mod network;
pub mod policy;

use std::sync::Arc;

use weft_model::ControlError;
use weft_model::InvalidRequest;
use weft_model::Tenant;
use weft_model::ipam::{DecisionError, Ipam};
use weft_model::module::{ModuleRecord, host_key, store_key};
use weft_model::naming::Naming;
use weft_model::network::{Network, pairs};
use weft_model::policy::{EndpointInfo, NetworkInfo, Policy};
use weft_wasm::Kind;

use crate::index::State;

/// The three decision contracts, as one object (the Wasm host; fakes in
/// unit tests).
pub trait Deciders: Ipam + Policy + Naming + Send + Sync {}
impl<T: Ipam + Policy + Naming + Send + Sync> Deciders for T {}

/// What decisions are made with.
pub struct Decider {
    /// The decision components.
    pub deciders: Arc<dyn Deciders>,
    /// The built-in components (tenant empty), shared by every tenant.
    pub builtins: Vec<ModuleRecord>,
}

impl Decider {
    /// The key the Wasm host knows a network's module `name` by: the
    /// built-in of that name, else the tenant's own module.
    pub fn module_key(&self, net: &Network, name: &str) -> String {
        if self.is_builtin(name) { name.to_owned() } else { host_key(net.spec.tenant.as_str(), name) }
    }

    /// True if `name` is a built-in component.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtins.iter().any(|b| b.name == name)
    }

    /// Check that `tenant` may bind `name` as a `kind` module.
    pub fn check_binding(
        &self,
        st: &State,
        tenant: &Tenant,
        kind: Kind,
        field: &str,
        name: &str,
    ) -> Result<(), ControlError> {
        let found = match self.builtins.iter().find(|b| b.name == name) {
            Some(b) => Some(b.kind.clone()),
            None => st.modules.get(&store_key(tenant.as_str(), name)).map(|r| r.kind.clone()),
        };
        match found {
            None => Err(ControlError::NotFound(format!("{kind} module {name:?} not found"))),
            Some(k) if k != kind.as_str() => Err(InvalidRequest::new(
                field,
                format!("module {name:?} is a {k} module; {field} needs a {kind} module"),
            )
            .into()),
            Some(_) => Ok(()),
        }
    }
}

/// What the policy component is told about a network.
pub fn network_info(net: &Network) -> NetworkInfo {
    NetworkInfo {
        name: net.spec.name.to_string(),
        tenant: net.spec.tenant.to_string(),
        internal: net.spec.internal,
        options: net.spec.options_list(),
        config: net.spec.config_list(),
    }
}

/// What the policy component is told about an endpoint it classifies.
pub fn endpoint_info(net: &Network, spec: &weft_model::endpoint::EndpointSpec) -> EndpointInfo {
    EndpointInfo { name: spec.name.to_string(), network: net.spec.name.to_string(), labels: pairs(&spec.labels) }
}

/// A policy compile or classify failure.
pub fn policy_error(e: DecisionError) -> ControlError {
    match e {
        DecisionError::Invalid(m) => InvalidRequest::new("policy", m).into(),
        other => ControlError::Plugin(format!("{other}; nothing was changed")),
    }
}

/// A new object id: 32 hex digits.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
