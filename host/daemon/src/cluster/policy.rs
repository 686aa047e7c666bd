//! Policy across nodes: documents applied to an overlay network by name are
//! shared in etcd and applied on every node, and an endpoint a policy change
//! re-classifies is written again with its groups, so every node's group
//! sets (which hold other nodes' endpoints too) follow.

use tracing::{info, warn};
use weft_model::document::StoredDocument;
use weft_model::network::Network;
use weft_store::etcd::keys;

use super::encode;
use crate::change::{Change, ClusterWrite};
use crate::controller::Ctl;

/// A shared document's key.
pub fn document_key(d: &StoredDocument) -> String {
    keys::document(&d.tenant, &d.doc.key.kind, &d.doc.key.namespace, &d.doc.key.name)
}

impl Ctl {
    /// Cluster mode: share a decided policy change. Documents applied to an
    /// overlay network by name, and an overlay network's new policy
    /// component, go to etcd (`origin`: this node is where the change was
    /// asked for), so every node compiles the same rules; and this node's
    /// overlay endpoints that the change re-classified are written again
    /// with their new groups, so the other nodes' group sets follow.
    pub(crate) fn share_policy(&self, change: &mut Change, origin: bool) {
        if self.cluster.is_none() {
            return;
        }
        let w = self.index.read(|st| {
            let overlay = |tenant: &str, network: &str| {
                !network.is_empty()
                    && st
                        .networks
                        .values()
                        .any(|n| n.is_overlay() && n.spec.tenant.as_str() == tenant && n.spec.name.as_str() == network)
            };
            let mut w = ClusterWrite::default();
            if origin {
                for n in change.batch.put_networks.iter().filter(|n| n.is_overlay()) {
                    let shared = |net: &Network| super::SharedNetwork { network: net.clone(), deleting: false };
                    w.txn.puts.push((keys::network(&n.id), encode(&shared(n))));
                    if let Some(old) = st.networks.get(&n.id) {
                        w.undo.puts.push((keys::network(&n.id), encode(&shared(old))));
                    }
                }
                for d in change.batch.put_documents.iter().filter(|d| overlay(&d.tenant, &d.network)) {
                    w.txn.puts.push((document_key(d), encode(d)));
                    match st.documents.get(&d.store_key()) {
                        Some(old) => w.undo.puts.push((document_key(old), encode(old))),
                        None => w.undo.deletes.push(document_key(d)),
                    }
                }
                for d in change.batch.delete_documents.iter().filter_map(|k| st.documents.get(k)) {
                    if overlay(&d.tenant, &d.network) {
                        w.txn.deletes.push(document_key(d));
                        w.undo.puts.push((document_key(d), encode(d)));
                    }
                }
            }
            for e in &change.batch.put_endpoints {
                if st.networks.get(&e.network_id).is_some_and(Network::is_overlay)
                    && let Some(old) = st.endpoints.get(&e.id)
                {
                    w.txn.puts.push((keys::endpoint(&e.network_id, &e.id), encode(e)));
                    w.undo.puts.push((keys::endpoint(&e.network_id, &e.id), encode(old)));
                }
            }
            w
        });
        if !w.txn.is_empty() {
            change.cluster = Some(w);
        }
    }

    /// A document another node applied to an overlay network: apply it here
    /// (its own endpoints' new groups are shared; the document is not sent
    /// back).
    pub(crate) async fn take_document(&self, d: StoredDocument) {
        let same = self.index.read(|st| st.documents.get(&d.store_key()) == Some(&d));
        if same {
            return;
        }
        let req = weft_model::api::ApplyDocuments {
            tenant: d.tenant.clone(),
            network: d.network.clone(),
            text: d.doc.body.clone(),
            dry_run: false,
        };
        let r = self
            .policy_change(&d.tenant, false, |dec, i| {
                let (out, mut c) = dec.apply_documents(i, &req)?;
                self.share_policy(&mut c, false);
                Ok((out, c))
            })
            .await;
        match r {
            Ok(_) => {
                info!(tenant = %d.tenant, document = %d.doc.key, network = %d.network, "policy document from the cluster applied")
            }
            Err(e) => {
                warn!(tenant = %d.tenant, document = %d.doc.key, error = %e, "a policy document from the cluster does not apply here")
            }
        }
    }

    /// An overlay network another node changed (its policy component):
    /// make the same change here.
    pub(crate) async fn take_network(&self, net: &Network) {
        let here = self.index.read(|st| st.networks.get(&net.id).cloned());
        let Some(here) = here.filter(|h| h.spec.policy != net.spec.policy) else { return };
        let req = weft_model::api::UpdateNetwork {
            tenant: net.spec.tenant.to_string(),
            name: net.spec.name.to_string(),
            policy: net.spec.policy.clone(),
            dry_run: false,
        };
        let r = self
            .policy_change(&req.tenant, false, |dec, i| {
                let (n, mut c) = dec.update_network(i, &req)?;
                self.share_policy(&mut c, false);
                Ok((n, c))
            })
            .await;
        match r {
            Ok(_) => {
                info!(network = %net.spec.name, policy = %net.spec.policy, was = %here.spec.policy, "overlay network's policy component swapped by the cluster")
            }
            Err(e) => {
                warn!(network = %net.spec.name, error = %e, "an overlay network's new policy component does not apply here")
            }
        }
    }

    /// A shared document deleted on another node: delete it here.
    pub(crate) async fn drop_document(&self, d: &StoredDocument) {
        let req = weft_model::api::DeleteDocuments {
            tenant: d.tenant.clone(),
            name: d.doc.key.name.clone(),
            kind: d.doc.key.kind.clone(),
            namespace: d.doc.key.namespace.clone(),
            ..Default::default()
        };
        let r = self
            .policy_change(&d.tenant, false, |dec, i| {
                let (out, mut c) = dec.delete_documents(i, &req)?;
                self.share_policy(&mut c, false);
                Ok((out, c))
            })
            .await;
        if let Err(e) = r {
            warn!(tenant = %d.tenant, document = %d.doc.key, error = %e, "deleting a policy document the cluster deleted");
        }
    }
}
