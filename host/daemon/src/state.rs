//! The controller's in-memory index of the desired state: networks,
//! endpoints and per-pool leases. The store is the durable copy; this is
//! rebuilt from it at start-up.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use weft_model::api::{EndpointView, NetworkView};
use weft_model::document::StoredDocument;
use weft_model::endpoint::{Endpoint, EndpointMode};
use weft_model::ipam::PoolLeases;
use weft_model::network::Network;
use weft_model::policy::{Compiled, DEFAULT_POLICY, RuleSet};
use weft_model::{ControlError, NetworkName, Tenant};
use weft_plan::nft;

/// Networks, endpoints and leases by id.
#[derive(Default)]
pub struct State {
    /// Networks by id.
    pub networks: BTreeMap<String, Network>,
    /// Endpoints by id.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Leases per pool, keyed by [`pool_key`].
    pub leases: HashMap<String, PoolLeases>,
    /// Each network's compiled policy, by network id.
    pub policies: HashMap<String, Arc<Compiled>>,
    /// Every tenant's policy documents, by store key.
    pub documents: BTreeMap<String, StoredDocument>,
    /// Every tenant's uploaded modules (that loaded), by store key.
    pub modules: BTreeMap<String, weft_model::module::ModuleRecord>,
}

/// The documents `net`'s policy component compiles, in a stable order: the
/// ones applied to it by name, and the tenant-wide ones unless it runs the
/// default component (which takes none).
pub fn documents_for<'a>(net: &Network, documents: impl IntoIterator<Item = &'a StoredDocument>) -> Vec<String> {
    documents
        .into_iter()
        .filter(|d| {
            d.tenant == net.spec.tenant.as_str()
                && (d.network == net.spec.name.as_str() || (d.network.is_empty() && net.spec.policy != DEFAULT_POLICY))
        })
        .map(|d| d.doc.body.clone())
        .collect()
}

/// The key of a network's pool of one family (also the IPAM cursor's key).
pub fn pool_key(network_id: &str, addr: IpAddr) -> String {
    format!("{network_id}/{}", if addr.is_ipv4() { "v4" } else { "v6" })
}

impl State {
    /// Record an endpoint and its leases.
    pub fn insert_endpoint(&mut self, ep: Endpoint) {
        for a in ep.addresses.iter().filter(|_| ep.spec.mode == EndpointMode::Network) {
            self.leases.entry(pool_key(&ep.network_id, a.addr())).or_default().reserve(a.addr(), &ep.id);
        }
        self.endpoints.insert(ep.id.clone(), ep);
    }

    /// Forget an endpoint and release its leases.
    pub fn remove_endpoint(&mut self, id: &str) -> Option<Endpoint> {
        let ep = self.endpoints.remove(id)?;
        for a in ep.addresses.iter().filter(|_| ep.spec.mode == EndpointMode::Network) {
            if let Some(l) = self.leases.get_mut(&pool_key(&ep.network_id, a.addr())) {
                l.release(a.addr(), id);
            }
        }
        Some(ep)
    }

    /// A network's compiled policy (empty if it has none yet).
    pub fn policy_of(&self, network_id: &str) -> Arc<Compiled> {
        self.policies.get(network_id).cloned().unwrap_or_default()
    }

    /// The whole nftables table for the current state.
    pub fn render_nft(&self) -> String {
        if self.networks.is_empty() {
            return nft::render_removal();
        }
        let empty = RuleSet::default();
        let nets: Vec<(&Network, &RuleSet)> =
            self.networks.values().map(|n| (n, self.policies.get(&n.id).map_or(&empty, |c| &c.rules))).collect();
        nft::render_ruleset(&nets, self.endpoints.values())
    }

    /// The tenant's network called `name`.
    pub fn network_by_name(&self, tenant: &Tenant, name: &NetworkName) -> Result<&Network, ControlError> {
        self.networks.values().find(|n| &n.spec.tenant == tenant && &n.spec.name == name).ok_or_else(|| {
            ControlError::NotFound(format!("network {:?} not found for tenant {:?}", name.as_str(), tenant.as_str()))
        })
    }

    /// Endpoints of a network.
    pub fn endpoints_of<'a>(&'a self, network_id: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints.values().filter(move |e| e.network_id == network_id)
    }

    /// An endpoint with its gateways.
    pub fn endpoint_view(&self, ep: &Endpoint) -> EndpointView {
        let gateways = self
            .networks
            .get(&ep.network_id)
            .map(|n| {
                n.spec
                    .subnets
                    .iter()
                    .filter(|s| ep.addresses.iter().any(|a| s.subnet.contains(&a.addr())))
                    .map(|s| s.gateway)
                    .collect()
            })
            .unwrap_or_default();
        let (dns_servers, dns_search) = match self.networks.get(&ep.network_id) {
            Some(n) if n.spec.dns => {
                (n.spec.subnets.iter().map(|s| s.gateway).collect(), vec![n.spec.name.to_string()])
            }
            _ => (Vec::new(), Vec::new()),
        };
        EndpointView { endpoint: ep.clone(), gateways, dns_servers, dns_search }
    }

    /// A network with its endpoints.
    pub fn network_view(&self, n: &Network) -> NetworkView {
        NetworkView { network: n.clone(), endpoints: self.endpoints_of(&n.id).map(|e| self.endpoint_view(e)).collect() }
    }
}
