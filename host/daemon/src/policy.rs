//! Policy changes and explanations. Applying or deleting documents, or
//! binding another policy component to a live network, recompiles every
//! network the change touches and re-classifies its endpoints; the result
//! lands as one nftables transaction (the whole table) and one store
//! transaction. If any compile or classify fails, or the kernel refuses the
//! table, nothing changes: the old rules stay and the call fails.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use tracing::info;
use weft_model::api::{
    ApplyDocuments, CheckPolicy, DeleteDocuments, DocAction, DocumentsChanged, NetworkView, PolicyVerdict, Ref,
    UpdateNetwork,
};
use weft_model::document::{self, DocKey, MAX_DOCUMENTS_PER_TENANT, StoredDocument};
use weft_model::endpoint::{Endpoint, EndpointMode};
use weft_model::ipam::DecisionError;
use weft_model::network::{Network, validate_module_name};
use weft_model::policy::explain::{self, Flow, Side};
use weft_model::policy::{Compiled, Policy, RuleSet};
use weft_model::{ControlError, EndpointName, InvalidRequest, NetworkName, Tenant};
use weft_plan::{Op, nft};
use weft_store::Batch;

use crate::controller::{Ctl, endpoint_info, internal, network_info};
use crate::state::documents_for;

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

impl Ctl {
    /// Recompile every network whose documents or policy component differ
    /// under `after` (the whole document map once the change is made) and
    /// `modules` (network id -> new policy component), re-classify their
    /// endpoints, and apply it all at once. The caller holds the gate
    /// exclusively. Returns the names of the networks recompiled.
    async fn change_policy(
        &self,
        after: BTreeMap<String, StoredDocument>,
        modules: HashMap<String, String>,
        put: Vec<StoredDocument>,
        delete: Vec<String>,
    ) -> Result<Vec<String>, ControlError> {
        // What each affected network becomes, and its endpoints.
        let affected: Vec<(Network, Vec<String>, Vec<Endpoint>)> = {
            let st = self.lock();
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
        };
        let mut compiled: HashMap<String, (Network, Arc<Compiled>)> = HashMap::new();
        let mut regrouped: HashMap<String, Endpoint> = HashMap::new();
        for (net, docs, eps) in &affected {
            let info = network_info(net);
            let module = self.module_key(net, &net.spec.policy);
            let c = self.wasm.compile(&module, &info, docs).map_err(|e| change_error(net, e))?;
            for ep in eps {
                let ei = endpoint_info(net, &ep.spec);
                let groups = self.wasm.classify(&module, &info, &c.state, &ei).map_err(|e| change_error(net, e))?;
                if groups != ep.groups {
                    let mut e = ep.clone();
                    e.groups = groups;
                    regrouped.insert(e.id.clone(), e);
                }
            }
            compiled.insert(net.id.clone(), (net.clone(), Arc::new(c)));
        }
        if !compiled.is_empty() {
            let script = {
                let st = self.lock();
                let nets: Vec<(Network, Arc<Compiled>)> = st
                    .networks
                    .values()
                    .map(|n| compiled.get(&n.id).cloned().unwrap_or_else(|| (n.clone(), st.policy_of(&n.id))))
                    .collect();
                let eps: Vec<Endpoint> =
                    st.endpoints.values().map(|e| regrouped.get(&e.id).unwrap_or(e).clone()).collect();
                let refs: Vec<(&Network, &RuleSet)> = nets.iter().map(|(n, c)| (n, &c.rules)).collect();
                nft::render_ruleset(&refs, eps.iter())
            };
            let _g = self.nft_lock.lock().await;
            self.kernel
                .apply(&[Op::Nft { script }])
                .await
                .map_err(|e| internal(format!("applying the new policy: {}; the old rules stay", e.error)))?;
        }
        let changed_nets: Vec<&Network> =
            compiled.values().map(|(n, _)| n).filter(|n| modules.contains_key(&n.id)).collect();
        let batch = Batch {
            networks: changed_nets,
            endpoints: regrouped.values().collect(),
            put_documents: put.iter().collect(),
            delete_documents: delete,
        };
        if let Err(e) = self.store.commit(&batch) {
            // The kernel already has the new rules: put the old ones back.
            let _ = self.sync_nft().await;
            return Err(internal(format!("{e}; the old rules stay")));
        }
        let mut names: Vec<String> = compiled.values().map(|(n, _)| n.spec.name.to_string()).collect();
        names.sort();
        let mut st = self.lock();
        for (id, (net, c)) in compiled {
            st.networks.insert(id.clone(), net);
            st.policies.insert(id, c);
        }
        for (id, e) in regrouped {
            if let Some(have) = st.endpoints.get_mut(&id) {
                have.groups = e.groups;
            }
        }
        st.documents = after;
        Ok(names)
    }

    /// `weft policy apply`.
    pub(crate) async fn apply_documents(&self, req: ApplyDocuments) -> Result<DocumentsChanged, ControlError> {
        let tenant = Tenant::parse("tenant", &req.tenant)?;
        let docs = document::parse("documents", &req.text)?;
        let _gate = self.gate.write().await;
        let (mut after, network) = {
            let st = self.lock();
            let network = if req.network.is_empty() {
                String::new()
            } else {
                let name = NetworkName::parse("network", &req.network)?;
                st.network_by_name(&tenant, &name)?;
                name.to_string()
            };
            (st.documents.clone(), network)
        };
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
        out.networks = self.change_policy(after, HashMap::new(), put, Vec::new()).await?;
        info!(tenant = %tenant, documents = out.documents.len(), networks = ?out.networks, "policy documents applied");
        Ok(out)
    }

    /// `weft policy ls`.
    pub(crate) fn list_documents(&self, r: Ref) -> Result<Vec<StoredDocument>, ControlError> {
        let tenant = Tenant::parse("tenant", &r.tenant)?;
        let st = self.lock();
        Ok(st
            .documents
            .values()
            .filter(|d| d.tenant == tenant.as_str() && (r.network.is_empty() || d.network == r.network))
            .cloned()
            .collect())
    }

    /// `weft policy delete`.
    pub(crate) async fn delete_documents(&self, req: DeleteDocuments) -> Result<DocumentsChanged, ControlError> {
        let tenant = Tenant::parse("tenant", &req.tenant)?;
        let keys: Option<Vec<DocKey>> = if req.text.is_empty() {
            if req.name.is_empty() {
                return Err(InvalidRequest::new("name", "give documents or a document name to delete").into());
            }
            None
        } else {
            Some(document::parse("documents", &req.text)?.into_iter().map(|d| d.key).collect())
        };
        let _gate = self.gate.write().await;
        let mut after = self.lock().documents.clone();
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
        let delete = gone.iter().map(StoredDocument::store_key).collect();
        let networks = self.change_policy(after, HashMap::new(), Vec::new(), delete).await?;
        info!(tenant = %tenant, documents = gone.len(), networks = ?networks, "policy documents deleted");
        Ok(DocumentsChanged { documents: gone.into_iter().map(|d| (d, DocAction::Configured)).collect(), networks })
    }

    /// `weft network update --policy`.
    pub(crate) async fn update_network(&self, req: UpdateNetwork) -> Result<NetworkView, ControlError> {
        let tenant = Tenant::parse("tenant", &req.tenant)?;
        let name = NetworkName::parse("name", &req.name)?;
        let _gate = self.gate.write().await;
        if !req.policy.is_empty() {
            validate_module_name("policy", &req.policy)?;
            self.check_binding(&tenant, weft_wasm::Kind::Policy, "policy", &req.policy)?;
        }
        let (net, docs) = {
            let st = self.lock();
            (st.network_by_name(&tenant, &name)?.clone(), st.documents.clone())
        };
        if !req.policy.is_empty() && req.policy != net.spec.policy {
            let modules = HashMap::from([(net.id.clone(), req.policy.clone())]);
            self.change_policy(docs, modules, Vec::new(), Vec::new()).await?;
            info!(network = %name, policy = %req.policy, "policy component swapped");
        }
        let st = self.lock();
        Ok(st.network_view(st.network_by_name(&tenant, &name)?))
    }

    /// `weft policy check`: the verdict of the compiled policy for a new
    /// flow between two endpoints of a network, with the deciding rule.
    pub(crate) fn check_policy(&self, req: CheckPolicy) -> Result<PolicyVerdict, ControlError> {
        let tenant = Tenant::parse("tenant", &req.tenant)?;
        let network = NetworkName::parse("network", &req.network)?;
        let from = EndpointName::parse("from", &req.from)?;
        let to = EndpointName::parse("to", &req.to)?;
        let flow = Flow::parse(&req.port).map_err(|e| InvalidRequest::new("port", e))?;
        let st = self.lock();
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
            &Side { addr: fa, groups: &a.groups },
            &Side { addr: ta, groups: &b.groups },
            flow,
        );
        Ok(PolicyVerdict { explanation, from: fa, to: ta })
    }
}
