//! The in-memory index of the desired state: networks, endpoints, compiled
//! policies, documents, modules and the current revision. The store is the
//! durable copy; this is rebuilt from it at start-up and changed only by
//! `commit`. Its lock is held for lookups and index updates — never across
//! a Wasm call or a kernel operation — so reads never wait behind either.
//!
//! Objects a commit is still applying are *pending*: conflict checks see
//! them (so two concurrent commits cannot both claim one name, subnet, port
//! or interface), readers do not.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use weft_model::api::{EndpointView, NetworkView};
use weft_model::document::StoredDocument;
use weft_model::endpoint::Endpoint;
use weft_model::module::ModuleRecord;
use weft_model::network::Network;
use weft_model::policy::{Compiled, DEFAULT_POLICY, RuleSet};
use weft_model::{ControlError, NetworkName, Tenant};
use weft_plan::nft;

/// Networks, endpoints, policies, documents and modules.
#[derive(Default, Clone)]
pub struct State {
    /// Networks by id.
    pub networks: BTreeMap<String, Network>,
    /// Endpoints by id.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Cluster mode: the endpoints of overlay networks on other nodes, by
    /// id (from etcd's watch; never in this node's store).
    pub remote: BTreeMap<String, Endpoint>,
    /// Each network's compiled policy, by network id.
    pub policies: HashMap<String, Arc<Compiled>>,
    /// Every tenant's policy documents, by store key.
    pub documents: BTreeMap<String, StoredDocument>,
    /// Every tenant's uploaded modules (that loaded), by store key.
    pub modules: BTreeMap<String, ModuleRecord>,
    /// The revision of the last commit.
    pub revision: u64,
    /// Networks a commit is creating (by id).
    pub pending_networks: BTreeMap<String, Network>,
    /// Endpoints a commit is attaching (by id).
    pub pending_endpoints: BTreeMap<String, Endpoint>,
}

/// The index: [`State`] behind a short-held lock.
#[derive(Default)]
pub struct Index {
    state: Mutex<State>,
}

impl Index {
    /// The state, locked. Never hold it across an await, a Wasm call or a
    /// kernel operation.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the locked state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }
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

impl State {
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
        nft::render_cluster_ruleset(&nets, self.endpoints.values(), self.remote.values())
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

    /// Every endpoint, committed or being committed.
    pub fn all_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values().chain(self.pending_endpoints.values())
    }

    /// Every network, committed or being committed.
    pub fn all_networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values().chain(self.pending_networks.values())
    }

    /// An endpoint with its gateways.
    pub fn endpoint_view(&self, ep: &Endpoint) -> EndpointView {
        view_of(self.networks.get(&ep.network_id), ep)
    }

    /// A network with its endpoints.
    pub fn network_view(&self, n: &Network) -> NetworkView {
        let remote = self.remote.values().filter(|e| e.network_id == n.id);
        NetworkView {
            network: n.clone(),
            endpoints: self.endpoints_of(&n.id).chain(remote).map(|e| self.endpoint_view(e)).collect(),
        }
    }
}

/// An endpoint with the gateways and DNS settings of its network.
pub fn view_of(net: Option<&Network>, ep: &Endpoint) -> EndpointView {
    let gateways = net
        .map(|n| {
            n.spec
                .subnets
                .iter()
                .filter(|s| ep.addresses.iter().any(|a| s.subnet.contains(&a.addr())))
                .map(|s| s.gateway)
                .collect()
        })
        .unwrap_or_default();
    let (dns_servers, dns_search) = match net {
        Some(n) if n.spec.dns => (n.spec.subnets.iter().map(|s| s.gateway).collect(), vec![n.spec.name.to_string()]),
        _ => (Vec::new(), Vec::new()),
    };
    let bridge = net
        .filter(|n| n.is_bridge() && ep.spec.mode == weft_model::endpoint::EndpointMode::Network)
        .map(|n| n.bridge.clone());
    EndpointView { endpoint: ep.clone(), gateways, dns_servers, dns_search, bridge }
}
