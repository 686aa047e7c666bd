//! Policy changes and explanations, decided. Applying or deleting
//! documents, or binding another policy component to a live network,
//! recompiles every network the change touches and re-classifies its
//! endpoints; the change re-renders the whole table (one nftables
//! transaction) and writes documents, networks and regrouped endpoints in
//! one store transaction. If any compile or classify fails nothing is
//! decided; if the kernel refuses the table, the commit changes nothing.
//! The caller holds the tenant's documents lock and the locks of the
//! tenant's networks, so no attach classifies against a policy being
//! replaced.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use weft_model::api::{
    ApplyDocuments, CheckPolicy, DeleteDocuments, DocAction, DocumentsChanged, PolicyVerdict, UpdateNetwork,
};
use weft_model::document::{self, DocKey, MAX_DOCUMENTS_PER_TENANT, StoredDocument};
use weft_model::endpoint::{Endpoint, EndpointMode};
use weft_model::event::{Event, EventKind};
use weft_model::ipam::DecisionError;
use weft_model::network::{Network, validate_module_name};
use weft_model::policy::Compiled;
use weft_model::policy::explain::{self, Flow, Side};
use weft_model::{ControlError, EndpointName, InvalidRequest, NetworkName, Tenant};

use super::network::network_event;
use super::{Decider, endpoint_info, network_info};
use crate::change::Change;
use crate::index::{Index, State, documents_for};

/// A compile or classify failure during a policy change, naming the network.
fn change_error(net: &Network, e: DecisionError) -> ControlError {
    let name = net.spec.name.as_str();
    match e {
        DecisionError::Invalid(m) => {
            InvalidRequest::new("documents", format!("network {name:?}: {m}; nothing was changed")).into()
        }
        other => ControlError::Plugin(format!("network {name:?}: {other}; nothing was changed")),
    }
}

fn document_event(kind: EventKind, d: &StoredDocument) -> Event {
    Event::new(kind, &d.tenant, &d.network, &d.doc.key.to_string())
}

impl Decider {
    /// Recompile every network whose documents or policy component differ
    /// under `after` (the whole document map once the change is made) and
    /// `modules` (network id -> new policy component), re-classify their
    /// endpoints, and build the change. Returns it with the names of the
    /// networks recompiled.
    fn change_policy(
        &self,
        index: &Index,
        what: String,
        after: &BTreeMap<String, StoredDocument>,
        modules: &HashMap<String, String>,
    ) -> Result<(Change, Vec<String>), ControlError> {
        // What each affected network becomes, and its endpoints.
        let affected: Vec<(Network, Vec<String>, Vec<Endpoint>)> = index.read(|st| {
            st.networks
                .values()
                .filter_map(|n| {
                    let mut next = n.clone();
                    if let Some(m) = modules.get(&n.id) {
                        next.spec.policy = m.clone();
                    }
                    let docs = documents_for(&next, after.values());
                    let changed = modules.contains_key(&n.id) || docs != documents_for(n, st.documents.values());
                    changed.then(|| {
                        let eps = st.endpoints_of(&n.id).filter(|e| e.spec.mode == EndpointMode::Network).cloned();
                        (next, docs, eps.collect())
                    })
                })
                .collect()
        });
        let mut change = Change::new(what);
        let mut names = Vec::new();
        for (net, docs, eps) in &affected {
            let info = network_info(net);
            let module = self.module_key(net, &net.spec.policy);
            let c: Compiled = self.deciders.compile(&module, &info, docs).map_err(|e| change_error(net, e))?;
            for ep in eps {
                let ei = endpoint_info(net, &ep.spec);
                let groups = self.deciders.classify(&module, &info, &c.state, &ei).map_err(|e| change_error(net, e))?;
                if groups != ep.groups {
                    let mut e = ep.clone();
                    e.groups = groups;
                    change.batch.put_endpoints.push(e);
                }
            }
            if modules.contains_key(&net.id) {
                change.batch.put_networks.push(net.clone());
                change.events.push(
                    network_event(EventKind::NetworkUpdated, net).with_message(format!("policy {}", net.spec.policy)),
                );
            }
            change.policies.push((net.id.clone(), Some(Arc::new(c))));
            names.push(net.spec.name.to_string());
        }
        change.render_nft = !affected.is_empty();
        names.sort();
        Ok((change, names))
    }

    /// `weft policy apply`.
    pub fn apply_documents(
        &self,
        index: &Index,
        req: &ApplyDocuments,
    ) -> Result<(DocumentsChanged, Change), ControlError> {
        let tenant = Tenant::parse("tenant", &req.tenant)?;
        let docs = document::parse("documents", &req.text)?;
        let (mut after, network) = index.read(|st| -> Result<_, ControlError> {
            let network = if req.network.is_empty() {
                String::new()
            } else {
                let name = NetworkName::parse("network", &req.network)?;
                st.network_by_name(&tenant, &name)?;
                name.to_string()
            };
            Ok((st.documents.clone(), network))
        })?;
        let mut out = DocumentsChanged::default();
        let mut put = Vec::new();
        for doc in docs {
            let sd = StoredDocument { tenant: tenant.to_string(), network: network.clone(), doc };
            let key = sd.store_key();
            let action = match after.get(&key) {
                None => DocAction::Created,
                Some(old) if old == &sd => DocAction::Unchanged,
                Some(_) => DocAction::Configured,
            };
            if action != DocAction::Unchanged {
                put.push(sd.clone());
            }
            after.insert(key, sd.clone());
            out.documents.push((sd, action));
        }
        let held = after.values().filter(|d| d.tenant == tenant.as_str()).count();
        if held > MAX_DOCUMENTS_PER_TENANT {
            return Err(ControlError::Exhausted(format!(
                "tenant {:?} would hold {held} policy documents (at most {MAX_DOCUMENTS_PER_TENANT}); nothing was changed",
                tenant.as_str()
            )));
        }
        let what = format!("applying {} policy document(s)", out.documents.len());
        let (mut change, networks) = self.change_policy(index, what, &after, &HashMap::new())?;
        change.events.extend(put.iter().map(|d| document_event(EventKind::PolicyApplied, d)));
        change.batch.put_documents = put;
        out.networks = networks;
        Ok((out, change))
    }

    /// `weft policy delete`.
    pub fn delete_documents(
        &self,
        index: &Index,
        req: &DeleteDocuments,
    ) -> Result<(DocumentsChanged, Change), ControlError> {
        let tenant = Tenant::parse("tenant", &req.tenant)?;
        let keys: Option<Vec<DocKey>> = if req.text.is_empty() {
            if req.name.is_empty() {
                return Err(InvalidRequest::new("name", "give documents or a document name to delete").into());
            }
            None
        } else {
            Some(document::parse("documents", &req.text)?.into_iter().map(|d| d.key).collect())
        };
        let mut after = index.read(|st| st.documents.clone());
        let gone: Vec<StoredDocument> = match keys {
            Some(keys) => {
                let mut gone = Vec::new();
                for k in keys {
                    let sk = document::store_key(tenant.as_str(), &k);
                    gone.push(after.remove(&sk).ok_or_else(|| {
                        ControlError::NotFound(format!(
                            "{k} not found for tenant {:?}; nothing was deleted",
                            tenant.as_str()
                        ))
                    })?);
                }
                gone
            }
            None => {
                let hits: Vec<String> = after
                    .iter()
                    .filter(|(_, d)| {
                        d.tenant == tenant.as_str()
                            && d.doc.key.name == req.name
                            && (req.kind.is_empty() || d.doc.key.kind.eq_ignore_ascii_case(&req.kind))
                            && (req.namespace.is_empty() || d.doc.key.namespace == req.namespace)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                match hits.len() {
                    0 => {
                        return Err(ControlError::NotFound(format!(
                            "no policy document named {:?} for tenant {:?}",
                            req.name,
                            tenant.as_str()
                        )));
                    }
                    1 => hits.iter().filter_map(|k| after.remove(k)).collect(),
                    _ => {
                        let which: Vec<String> =
                            hits.iter().filter_map(|k| after.get(k)).map(|d| d.doc.key.to_string()).collect();
                        return Err(InvalidRequest::new(
                            "name",
                            format!(
                                "{:?} names {} documents ({}); give --kind or --namespace",
                                req.name,
                                hits.len(),
                                which.join(", ")
                            ),
                        )
                        .into());
                    }
                }
            }
        };
        let what = format!("deleting {} policy document(s)", gone.len());
        let (mut change, networks) = self.change_policy(index, what, &after, &HashMap::new())?;
        change.batch.delete_documents = gone.iter().map(StoredDocument::store_key).collect();
        change.events.extend(gone.iter().map(|d| document_event(EventKind::PolicyDeleted, d)));
        Ok((
            DocumentsChanged { documents: gone.into_iter().map(|d| (d, DocAction::Configured)).collect(), networks },
            change,
        ))
    }

    /// `weft network update --policy`. Returns the network's name and the
    /// change (empty when nothing changes).
    pub fn update_network(&self, index: &Index, req: &UpdateNetwork) -> Result<(Network, Change), ControlError> {
        let tenant = Tenant::parse("tenant", &req.tenant)?;
        let name = NetworkName::parse("name", &req.name)?;
        let (net, docs) = index.read(|st| -> Result<_, ControlError> {
            if !req.policy.is_empty() {
                validate_module_name("policy", &req.policy)?;
                self.check_binding(st, &tenant, weft_wasm::Kind::Policy, "policy", &req.policy)?;
            }
            Ok((st.network_by_name(&tenant, &name)?.clone(), st.documents.clone()))
        })?;
        if req.policy.is_empty() || req.policy == net.spec.policy {
            return Ok((net, Change::new("updating network (no change)")));
        }
        let modules = HashMap::from([(net.id.clone(), req.policy.clone())]);
        let what = format!("swapping the policy of network {:?} to {}", name.as_str(), req.policy);
        let (change, _) = self.change_policy(index, what, &docs, &modules)?;
        let mut next = net;
        next.spec.policy = req.policy.clone();
        Ok((next, change))
    }
}

/// `weft policy check`: the verdict of the compiled policy for a new flow
/// between two endpoints of a network, with the deciding rule.
pub fn check_policy(st: &State, req: &CheckPolicy) -> Result<PolicyVerdict, ControlError> {
    let tenant = Tenant::parse("tenant", &req.tenant)?;
    let network = NetworkName::parse("network", &req.network)?;
    let from = EndpointName::parse("from", &req.from)?;
    let to = EndpointName::parse("to", &req.to)?;
    let flow = Flow::parse(&req.port).map_err(|e| InvalidRequest::new("port", e))?;
    let net = st.network_by_name(&tenant, &network)?;
    let find = |n: &EndpointName| {
        st.endpoints_of(&net.id).find(|e| &e.spec.name == n).ok_or_else(|| {
            ControlError::NotFound(format!("endpoint {:?} not found on network {:?}", n.as_str(), network.as_str()))
        })
    };
    let (a, b) = (find(&from)?, find(&to)?);
    let pick = |e: &Endpoint, v4: bool| e.addresses.iter().map(|x| x.addr()).find(|x| x.is_ipv4() == v4);
    let (fa, ta): (IpAddr, IpAddr) = match (pick(a, true), pick(b, true), pick(a, false), pick(b, false)) {
        (Some(x), Some(y), _, _) | (_, _, Some(x), Some(y)) => (x, y),
        _ => {
            return Err(ControlError::FailedPrecondition(format!(
                "endpoints {:?} and {:?} have no address family in common",
                from.as_str(),
                to.as_str()
            )));
        }
    };
    let policy = st.policy_of(&net.id);
    let subnets: Vec<ipnet::IpNet> = net.spec.subnets.iter().map(|s| s.subnet).collect();
    let explanation = explain::explain(
        &policy.rules,
        &subnets,
        &Side { addr: fa, groups: &a.groups, port_names: &a.spec.port_names },
        &Side { addr: ta, groups: &b.groups, port_names: &b.spec.port_names },
        flow,
    );
    Ok(PolicyVerdict { explanation, from: fa, to: ta })
}
