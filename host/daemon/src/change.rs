//! A [`Change`]: everything one decision means to do, as a value. `decide`
//! builds it from a snapshot without changing anything; a dry run answers
//! with it ([`Change::plan`]); `commit` is the only code that carries it out.

use std::net::IpAddr;
use std::sync::Arc;

use weft_model::api::{Plan, PlannedOp};
use weft_model::endpoint::Endpoint;
use weft_model::event::Event;
use weft_model::naming::NameRecord;
use weft_model::network::Network;
use weft_model::policy::Compiled;
use weft_plan::Op;
use weft_store::Batch;

use crate::timings::Phase;

/// A change to the embedded DNS server, applied after the store commit.
#[derive(Debug, Clone)]
pub enum DnsChange {
    /// Serve a network (start its listeners, load its endpoints' records).
    Serve(Network),
    /// Stop serving a network.
    Stop(String),
    /// Set an endpoint's records: (network id, endpoint, records).
    Set(String, Endpoint, Vec<NameRecord>),
    /// Remove an endpoint's records: (network id, endpoint id).
    Remove(String, String),
}

/// A lease taken or released in a network's pools (under its lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseChange {
    /// The pool ([`crate::locks::pool_key`]).
    pub pool: String,
    /// The address.
    pub addr: IpAddr,
    /// The endpoint that holds it.
    pub endpoint: String,
    /// Reserve (true) or release.
    pub reserve: bool,
}

impl LeaseChange {
    /// Take (`reserve`) or release every address of `ep` in its network's pools.
    pub fn of(ep: &Endpoint, reserve: bool) -> impl Iterator<Item = LeaseChange> + '_ {
        ep.addresses.iter().map(move |a| LeaseChange {
            pool: crate::locks::pool_key(&ep.network_id, a.addr()),
            addr: a.addr(),
            endpoint: ep.id.clone(),
            reserve,
        })
    }
}

/// A fact about other objects that must hold when the change commits
/// (checked under the index lock with the commit's claims).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// A tenant module the change binds still exists: (store key, name).
    ModuleExists(String, String),
    /// No network of `tenant` binds module `name`: (tenant, name).
    ModuleUnbound(String, String),
}

/// Cluster mode: how a change is shared — one etcd transaction, committed
/// before any kernel work, and the transaction that takes it back if the
/// rest of the commit fails.
#[derive(Debug, Clone, Default)]
pub struct ClusterWrite {
    /// The compare-and-swap transaction.
    pub txn: weft_store::etcd::Txn,
    /// What undoes it (no comparisons: only this node writes these keys).
    pub undo: weft_store::etcd::Txn,
}

/// Which timing phases a commit's steps are counted under.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    /// Link, address and route ops.
    pub netlink: Option<Phase>,
    /// nftables ops.
    pub nft: Option<Phase>,
    /// The store transaction.
    pub store: Option<Phase>,
    /// DNS table updates.
    pub dns: Option<Phase>,
}

/// One decided change.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// What it is, for logs and errors: `attach endpoint "c1" to network "web"`.
    pub what: String,
    /// Networks it creates: checked for conflicts and held as pending
    /// while the commit runs.
    pub new_networks: Vec<Network>,
    /// Endpoints it attaches: checked (ports, interfaces) and held as
    /// pending while the commit runs.
    pub new_endpoints: Vec<Endpoint>,
    /// Facts about other objects checked at commit.
    pub guards: Vec<Guard>,
    /// Its endpoints may join a namespace another tenant's endpoints are in
    /// (an operator's explicit override).
    pub foreign_netns: bool,
    /// The tenant whose quotas it must stay within, and those quotas
    /// (checked when the commit claims its objects).
    pub quota: Option<(weft_model::Tenant, weft_model::access::Resources)>,
    /// Kernel ops, in order; on failure the applied prefix is undone.
    pub ops: Vec<Op>,
    /// Teardown: an op that fails is retried, and the change fails only
    /// after the retries (undoing what was applied).
    pub teardown: bool,
    /// Re-render and apply weft's whole nftables table, as the index will
    /// be once this change is in it.
    pub render_nft: bool,
    /// Store writes: one transaction.
    pub batch: Batch,
    /// Cluster mode: the etcd transaction that shares the change.
    pub cluster: Option<ClusterWrite>,
    /// Endpoints of other nodes to index (cluster mode, from the watch).
    pub remote_put: Vec<Endpoint>,
    /// Ids of other nodes' endpoints to drop from the index.
    pub remote_delete: Vec<String>,
    /// Compiled policies to install (`None`: drop), by network id.
    pub policies: Vec<(String, Option<Arc<Compiled>>)>,
    /// Lease changes in the network's pools.
    pub leases: Vec<LeaseChange>,
    /// DNS changes.
    pub dns: Vec<DnsChange>,
    /// Events to publish (numbered by the commit).
    pub events: Vec<Event>,
    /// Timing phases.
    pub phases: Phases,
}

impl Change {
    /// A change described as `what`.
    pub fn new(what: impl Into<String>) -> Change {
        Change { what: what.into(), ..Default::default() }
    }

    /// True if carrying it out would change nothing at all.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
            && !self.render_nft
            && self.batch.writes_nothing()
            && self.cluster.as_ref().is_none_or(|c| c.txn.is_empty())
            && self.remote_put.is_empty()
            && self.remote_delete.is_empty()
            && self.policies.is_empty()
            && self.dns.is_empty()
            && self.events.is_empty()
    }

    /// What a dry run answers: the ops as commands, the store writes, the
    /// events (unnumbered: a dry run takes no revision).
    pub fn plan(&self) -> Plan {
        let mut ops: Vec<PlannedOp> = self
            .ops
            .iter()
            .map(|o| PlannedOp {
                ns: o.ns().label(),
                command: o.command(),
                json: serde_json::to_string(o).unwrap_or_default(),
            })
            .collect();
        if self.render_nft {
            ops.push(PlannedOp {
                ns: "host".into(),
                command: format!(
                    "nft -f - # re-render table {} {} with this change, one transaction",
                    weft_plan::nft::NFT_FAMILY,
                    weft_plan::nft::NFT_TABLE
                ),
                json: String::new(),
            });
        }
        let mut writes = self.batch.describe();
        if let Some(c) = &self.cluster {
            writes.extend(c.txn.describe());
        }
        for d in &self.dns {
            writes.push(match d {
                DnsChange::Serve(n) => format!("dns: serve network {} on its gateways", n.spec.name),
                DnsChange::Stop(id) => format!("dns: stop serving network {id}"),
                DnsChange::Set(_, ep, r) => format!("dns: {} record(s) for endpoint {}", r.len(), ep.spec.name),
                DnsChange::Remove(_, id) => format!("dns: remove the records of endpoint {id}"),
            });
        }
        Plan { ops, writes, events: self.events.clone() }
    }
}
