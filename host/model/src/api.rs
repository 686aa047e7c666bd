//! The controller contract the gRPC edge is written against. The daemon
//! implements it; the edge converts protobuf to these model types and back
//! and never sees the store, the kernel or the Wasm host.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use crate::access::Caller;
use crate::document::StoredDocument;
use crate::endpoint::{AttachEndpoint, DetachEndpoint, Endpoint};
use crate::error::ControlError;
use crate::event::{Event, WatchFilter, WatchItem};
use crate::module::ModuleRecord;
use crate::network::{CreateNetwork, Network};
use crate::policy::explain::Explanation;

/// A network with its endpoints, as returned to clients.
#[derive(Debug, Clone)]
pub struct NetworkView {
    /// The network.
    pub network: Network,
    /// Its endpoints.
    pub endpoints: Vec<EndpointView>,
}

/// An endpoint with what a client needs beside the record.
#[derive(Debug, Clone)]
pub struct EndpointView {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Gateways of the subnets it has addresses in.
    pub gateways: Vec<std::net::IpAddr>,
    /// DNS servers for its resolv.conf (empty: no DNS on the network).
    pub dns_servers: Vec<std::net::IpAddr>,
    /// DNS search domains for its resolv.conf.
    pub dns_search: Vec<String>,
    /// The bridge its host veth is a port of (None: a macvlan endpoint, or
    /// a mode without an interface of its own).
    pub bridge: Option<crate::IfName>,
}

/// Addresses an object by tenant and name(s), as raw request strings.
#[derive(Debug, Clone, Default)]
pub struct Ref {
    /// Tenant; empty for default.
    pub tenant: String,
    /// Network name.
    pub network: String,
    /// Endpoint name (endpoint calls only).
    pub name: String,
    /// Mutating calls: decide and answer what would be done, change nothing.
    pub dry_run: bool,
}

/// Change a live network (only what can change without re-plumbing).
#[derive(Debug, Clone, Default)]
pub struct UpdateNetwork {
    /// Tenant; empty for default.
    pub tenant: String,
    /// Network name.
    pub name: String,
    /// The policy component to bind; empty keeps the current one.
    pub policy: String,
    /// Decide and answer what would be done, change nothing.
    pub dry_run: bool,
}

/// Apply policy documents.
#[derive(Debug, Clone, Default)]
pub struct ApplyDocuments {
    /// Tenant; empty for default.
    pub tenant: String,
    /// The network they apply to; empty for every network of the tenant
    /// whose policy component takes documents.
    pub network: String,
    /// YAML or JSON: one document, several separated by `---`, or a List.
    pub text: String,
    /// Decide and answer what would be done, change nothing.
    pub dry_run: bool,
}

/// What happened to one applied document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocAction {
    /// It is new.
    Created,
    /// It replaced a different version.
    Configured,
    /// It was already there as given.
    Unchanged,
}

impl DocAction {
    /// As kubectl prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            DocAction::Created => "created",
            DocAction::Configured => "configured",
            DocAction::Unchanged => "unchanged",
        }
    }
}

/// The outcome of applying or deleting documents.
#[derive(Debug, Clone, Default)]
pub struct DocumentsChanged {
    /// The documents with what happened to each (deletes: `Configured`).
    pub documents: Vec<(StoredDocument, DocAction)>,
    /// The networks whose policy was recompiled and re-applied.
    pub networks: Vec<String>,
}

/// Delete documents: those named in `text`, or one by name.
#[derive(Debug, Clone, Default)]
pub struct DeleteDocuments {
    /// Tenant; empty for default.
    pub tenant: String,
    /// Documents (as for apply) whose identities to delete.
    pub text: String,
    /// Otherwise: the document's name ...
    pub name: String,
    /// ... its kind, if several match ...
    pub kind: String,
    /// ... and its namespace, if several match.
    pub namespace: String,
    /// Decide and answer what would be done, change nothing.
    pub dry_run: bool,
}

/// Ask whether a flow between two endpoints of a network is allowed.
#[derive(Debug, Clone, Default)]
pub struct CheckPolicy {
    /// Tenant; empty for default.
    pub tenant: String,
    /// The network.
    pub network: String,
    /// Source endpoint name.
    pub from: String,
    /// Destination endpoint name.
    pub to: String,
    /// `PORT[/tcp|udp|sctp]` or `icmp`.
    pub port: String,
}

/// The verdict with the addresses it was decided for.
#[derive(Debug, Clone)]
pub struct PolicyVerdict {
    /// The verdict and its reasons.
    pub explanation: Explanation,
    /// The source address used.
    pub from: std::net::IpAddr,
    /// The destination address used.
    pub to: std::net::IpAddr,
}

/// Upload a module.
#[derive(Debug, Clone, Default)]
pub struct UploadModule {
    /// Tenant; empty for default.
    pub tenant: String,
    /// Name to bind it by.
    pub name: String,
    /// `ipam`, `policy` or `naming`.
    pub kind: String,
    /// The component.
    pub bytes: Vec<u8>,
    /// Validate and compile it (the world checked), store and load nothing.
    pub dry_run: bool,
}

/// A module as shown to clients.
#[derive(Debug, Clone)]
pub struct ModuleView {
    /// The record (built-ins: tenant empty).
    pub record: ModuleRecord,
    /// A built-in everybody may bind.
    pub builtin: bool,
    /// The tenant's networks bound to it.
    pub bound_to: Vec<String>,
}

/// Time spent in one phase of weftd's request path, summed over calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseStat {
    /// The phase, e.g. `attach.ipam` or `attach.netlink`.
    pub name: String,
    /// How many times it ran.
    pub count: u64,
    /// Total time, microseconds.
    pub total_us: u64,
    /// The slowest single run, microseconds.
    pub max_us: u64,
}

/// weftd's operational counters.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Per-phase timings of attach and detach, in path order.
    pub phases: Vec<PhaseStat>,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// CPU time in user mode, milliseconds.
    pub cpu_user_ms: u64,
    /// CPU time in the kernel, milliseconds.
    pub cpu_system_ms: u64,
    /// Networks of all tenants.
    pub networks: u64,
    /// Endpoints of all tenants.
    pub endpoints: u64,
    /// The current revision.
    pub revision: u64,
    /// Repairs made by reconcile, per kind of drift (`bridge`, `veth`,
    /// `nft`, `address`, `route`, `orphan`, ...).
    pub repairs: Vec<(String, u64)>,
}

/// A node of the cluster, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Its tunnel address.
    pub advertise_ip: String,
    /// Its lease is alive.
    pub alive: bool,
    /// The node answering.
    pub this: bool,
    /// When it last registered, ms since the epoch.
    pub joined_ms: u64,
    /// Overlay endpoints it hosts.
    pub endpoints: u64,
}

/// What a tenant holds against its quotas.
#[derive(Debug, Clone)]
pub struct TenantUsage {
    /// The tenant.
    pub tenant: String,
    /// What it holds.
    pub used: crate::access::Resources,
    /// Its quotas.
    pub limits: crate::access::Resources,
}

/// One kernel operation of a decided change, as the command it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedOp {
    /// `host` or the container namespace's path.
    pub ns: String,
    /// The `ip` / `nft` / `sysctl` command line it corresponds to.
    pub command: String,
    /// The op as JSON (the planner's own form).
    pub json: String,
}

/// What a change does, as decided: answered by a dry run (and what a real
/// commit then applies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Kernel operations, in order.
    pub ops: Vec<PlannedOp>,
    /// Store writes, one line each (`put endpoint web/c1`, ...), one transaction.
    pub writes: Vec<String>,
    /// The events the commit would publish (revision 0: none is taken).
    pub events: Vec<Event>,
}

/// What a mutating call did: the revision its commit got (0 for a dry run
/// or a call that changed nothing), and for a dry run the decided plan.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The commit's revision.
    pub revision: u64,
    /// Set on a dry run: what would have been done.
    pub plan: Option<Plan>,
}

/// A stream of watch items; it ends with an error when the consumer fell
/// too far behind (naming the last revision it was sent).
pub type EventStream = Pin<Box<dyn futures_core::Stream<Item = Result<WatchItem, ControlError>> + Send>>;

/// What weftd does for its clients.
pub trait Controller: Send + Sync + 'static {
    /// Create a network.
    fn create_network(
        &self,
        who: &Caller,
        req: CreateNetwork,
    ) -> impl Future<Output = Result<(NetworkView, Outcome), ControlError>> + Send;
    /// One network by name.
    fn get_network(&self, r: Ref) -> impl Future<Output = Result<NetworkView, ControlError>> + Send;
    /// All of a tenant's networks.
    /// The list carries the current revision (to watch from).
    fn list_networks(
        &self,
        tenant: String,
    ) -> impl Future<Output = Result<(Vec<NetworkView>, u64), ControlError>> + Send;
    /// Delete a network with no endpoints, or (`force`) with its endpoints.
    fn delete_network(&self, r: Ref, force: bool) -> impl Future<Output = Result<Outcome, ControlError>> + Send;
    /// Attach a container namespace to a network.
    fn attach(
        &self,
        who: &Caller,
        req: AttachEndpoint,
    ) -> impl Future<Output = Result<(EndpointView, Outcome), ControlError>> + Send;
    /// Detach an endpoint.
    fn detach(&self, req: DetachEndpoint) -> impl Future<Output = Result<Outcome, ControlError>> + Send;
    /// One endpoint.
    fn get_endpoint(&self, r: Ref) -> impl Future<Output = Result<EndpointView, ControlError>> + Send;
    /// A tenant's endpoints, optionally of one network (`r.network`).
    /// The list carries the current revision.
    fn list_endpoints(&self, r: Ref) -> impl Future<Output = Result<(Vec<EndpointView>, u64), ControlError>> + Send;
    /// Change a live network's policy component.
    fn update_network(
        &self,
        req: UpdateNetwork,
    ) -> impl Future<Output = Result<(NetworkView, Outcome), ControlError>> + Send;
    /// Apply policy documents (all or nothing).
    fn apply_documents(
        &self,
        req: ApplyDocuments,
    ) -> impl Future<Output = Result<(DocumentsChanged, Outcome), ControlError>> + Send;
    /// A tenant's documents, optionally only those applied to one network.
    fn list_documents(&self, r: Ref) -> impl Future<Output = Result<Vec<StoredDocument>, ControlError>> + Send;
    /// Delete policy documents (all or nothing).
    fn delete_documents(
        &self,
        req: DeleteDocuments,
    ) -> impl Future<Output = Result<(DocumentsChanged, Outcome), ControlError>> + Send;
    /// The largest module upload accepted, in bytes.
    fn max_module_bytes(&self) -> usize;
    /// Validate, compile and record a module.
    fn upload_module(
        &self,
        req: UploadModule,
    ) -> impl Future<Output = Result<(ModuleView, Outcome), ControlError>> + Send;
    /// The tenant's modules and the built-ins.
    fn list_modules(&self, tenant: String) -> impl Future<Output = Result<Vec<ModuleView>, ControlError>> + Send;
    /// One module (`r.name`) the tenant may see.
    fn get_module(&self, r: Ref) -> impl Future<Output = Result<ModuleView, ControlError>> + Send;
    /// Remove a module no network is bound to.
    fn delete_module(&self, r: Ref) -> impl Future<Output = Result<Outcome, ControlError>> + Send;
    /// Explain whether a flow is allowed.
    fn check_policy(&self, req: CheckPolicy) -> impl Future<Output = Result<PolicyVerdict, ControlError>> + Send;
    /// Operational counters (an operator's view: not scoped to a tenant).
    fn stats(&self) -> impl Future<Output = Result<Stats, ControlError>> + Send;
    /// What `tenant` holds, and its quotas.
    fn usage(&self, tenant: String) -> impl Future<Output = Result<TenantUsage, ControlError>> + Send;
    /// The cluster's nodes (FAILED_PRECONDITION outside cluster mode).
    fn list_nodes(&self) -> impl Future<Output = Result<Vec<NodeView>, ControlError>> + Send;
    /// Forget a node that is gone for good: its registration, and its
    /// endpoints' records and address leases in etcd.
    fn remove_node(&self, name: String) -> impl Future<Output = Result<u64, ControlError>> + Send;
    /// Events of the caller's tenant after `filter.from_revision`, then live.
    fn watch(&self, filter: WatchFilter) -> impl Future<Output = Result<EventStream, ControlError>> + Send;
}
