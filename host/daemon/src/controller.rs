//! The controller wires the parts: for each request, validate (model) ->
//! take the locks the change needs (per network, per tenant scope) ->
//! decide (`decide/`) -> for a dry run answer the plan, else commit
//! (`commit.rs`) -> answer. Reads take the index lock only. Nothing here
//! touches the kernel or the store directly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{info, warn};
use weft_kernel::KernelApi;
use weft_model::access::{Caller, SharedAccess};
use weft_model::api::{
    ApplyDocuments, CheckPolicy, Controller, DeleteDocuments, DocumentsChanged, EndpointView, EventStream, ModuleView,
    NetworkView, Outcome, PolicyVerdict, Ref, Stats, TenantUsage, UpdateNetwork, UploadModule,
};
use weft_model::document::StoredDocument;
use weft_model::endpoint::{AttachEndpoint, DetachEndpoint, EndpointMode};
use weft_model::event::{EventKind, WatchFilter};
use weft_model::module::ModuleRecord;
use weft_model::network::CreateNetwork;
use weft_model::{ControlError, InvalidRequest, NetworkName, Tenant};
use weft_store::Store;

use crate::change::Change;
use crate::commit::Committer;
use crate::decide::endpoint::{
    Netns, attached_before, detach, endpoint_in, find_endpoint, in_flight, reelect_default_route,
};
use crate::decide::network::{bridge_rule, delete_network, find_network};
use crate::decide::policy::check_policy;
use crate::decide::{Decider, Deciders};
use crate::events::{Events, Subscription};
use crate::index::{Index, State, documents_for, view_of};
use crate::locks::{Locks, pool_key};
use crate::modules::{Modules, Upload};
use crate::reconcile::Trigger;
use crate::timings::{Phase, process_usage};

/// weftd's controller.
pub struct Ctl {
    /// The in-memory index.
    pub(crate) index: Arc<Index>,
    /// The commit path.
    pub(crate) commit: Committer,
    /// The decision components.
    pub(crate) decider: Decider,
    /// Tenant modules.
    pub(crate) modules: Modules,
    /// Per-network and per-scope locks.
    pub(crate) locks: Locks,
    /// One reconcile pass at a time.
    pub(crate) reconciling: tokio::sync::Mutex<()>,
    /// Repairs made, per kind of drift.
    repairs: Mutex<BTreeMap<String, u64>>,
    /// The access rules in force (callers, what tenants may use).
    pub(crate) access: Arc<SharedAccess>,
    /// Cluster mode: this node's membership.
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// The parts a controller is built from.
pub struct Parts {
    /// The kernel.
    pub kernel: Arc<dyn KernelApi>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The decision components.
    pub deciders: Arc<dyn Deciders>,
    /// The built-in components.
    pub builtins: Vec<ModuleRecord>,
    /// Tenant modules.
    pub modules: Modules,
    /// The DNS server.
    pub dns: weft_dns::Dns,
    /// The access rules in force.
    pub access: Arc<SharedAccess>,
    /// Cluster mode: this node's membership.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Ctl {
    /// Open the store, load the built-in components, rebuild the in-memory
    /// state and reconcile the kernel with it.
    pub async fn start(cfg: &crate::config::Config, access: Arc<SharedAccess>) -> anyhow::Result<Ctl> {
        let store = weft_store::RedbStore::open(&cfg.state_dir)?;
        let wasm = Arc::new(weft_wasm::WasmHost::with_tenant_concurrency(cfg.tenant_wasm_concurrency)?);
        let dir = cfg.modules_dir();
        let builtins = crate::modules::load_builtins(&wasm, &dir)?;
        let names: Vec<&str> = builtins.iter().map(|b| b.name.as_str()).collect();
        info!(dir = %dir.display(), modules = ?names, "built-in components loaded");
        let cluster = match cfg.cluster() {
            Some(s) => Some(crate::cluster::Cluster::join(s).await?),
            None => None,
        };
        let parts = Parts {
            kernel: Arc::new(weft_kernel::Kernel::new()?),
            store: Arc::new(store),
            deciders: wasm.clone(),
            builtins,
            modules: Modules { files: crate::modules::ModuleFiles::new(cfg)?, wasm: Some(wasm) },
            dns: weft_dns::Dns::new(cfg.dns()),
            access,
            cluster,
        };
        Ok(Ctl::open(parts).await?)
    }

    /// Build a controller from its parts: load the store into the index and
    /// reconcile.
    pub async fn open(p: Parts) -> Result<Ctl, weft_store::StoreError> {
        let snap = p.store.load()?;
        let events = Events::new(snap.events.clone(), snap.revision);
        let index = Arc::new(Index::default());
        let mut commit = Committer::new(p.kernel, p.store, index.clone(), events, p.dns);
        commit.etcd = p.cluster.as_ref().map(|c| c.etcd.clone());
        let locks = Locks::new(commit.flight());
        let ctl = Ctl {
            commit,
            index,
            decider: Decider { deciders: p.deciders, builtins: p.builtins },
            modules: p.modules,
            locks,
            reconciling: tokio::sync::Mutex::new(()),
            repairs: Mutex::new(BTreeMap::new()),
            access: p.access,
            cluster: p.cluster,
        };
        let modules = ctl.modules.load(snap.modules.clone()).await;
        ctl.load(snap, modules).await;
        ctl.reconcile(Trigger::Start).await;
        ctl.commit.retired.clone().spawn();
        Ok(ctl)
    }

    async fn load(&self, snap: weft_store::Snapshot, modules: Vec<ModuleRecord>) {
        let mut st = State { revision: snap.revision, ..State::default() };
        for m in modules {
            st.modules.insert(m.store_key(), m);
        }
        for d in snap.documents {
            st.documents.insert(d.store_key(), d);
        }
        for n in snap.networks {
            // The same component compiles the same rule set again; if it no
            // longer can, the network runs with no isolation and says so.
            let docs = documents_for(&n, st.documents.values());
            let module = self.decider.module_key(&n, &n.spec.policy);
            match self.decider.deciders.compile(&module, &crate::decide::network_info(&n), &docs) {
                Ok(c) => {
                    st.policies.insert(n.id.clone(), Arc::new(c));
                }
                Err(e) => warn!(network = %n.spec.name, error = %e, "policy did not compile at start-up"),
            }
            st.networks.insert(n.id.clone(), n);
        }
        for e in snap.endpoints {
            st.endpoints.insert(e.id.clone(), e);
        }
        info!(networks = st.networks.len(), endpoints = st.endpoints.len(), revision = st.revision, "state loaded");
        let endpoints: Vec<_> = st.endpoints.values().cloned().collect();
        *self.index.lock() = st;
        for ep in endpoints.iter().filter(|e| e.spec.mode == EndpointMode::Network) {
            let mut slot = self.locks.network(&ep.network_id).await;
            for a in &ep.addresses {
                slot.pool(&pool_key(&ep.network_id, a.addr())).reserve(a.addr(), &ep.id);
            }
        }
        for (key, last) in snap.cursors {
            if let Some((net, _)) = key.split_once('/') {
                let mut slot = self.locks.network(net).await;
                slot.pool(&key).last = Some(last);
            }
        }
    }

    /// Make the configured default network unless the default tenant has a
    /// network of that name. A failure (its subnet is taken on this host,
    /// say) is logged and weftd serves on without it.
    pub(crate) async fn ensure_default_network(&self, req: CreateNetwork) {
        let name = req.name.clone();
        let exists = Tenant::parse("tenant", "")
            .and_then(|t| Ok((t, NetworkName::parse("name", &name)?)))
            .is_ok_and(|(t, n)| self.index.read(|st| st.network_by_name(&t, &n).is_ok()));
        if exists {
            info!(network = %name, "default network exists");
            return;
        }
        match self.create_network(&Caller::operator("weftd"), req).await {
            Ok((v, _)) => info!(network = %name, bridge = %v.network.bridge, "default network created"),
            Err(e) => warn!(network = %name, error = %e, "default network not created; serving without it"),
        }
    }

    /// Repairs made since start, by kind.
    pub(crate) fn repairs(&self) -> Vec<(String, u64)> {
        self.repairs.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Count a repair of `kind`.
    pub(crate) fn count_repair(&self, kind: &str) {
        *self.repairs.lock().unwrap_or_else(|p| p.into_inner()).entry(kind.to_owned()).or_default() += 1;
    }

    /// Commit `change` (or, on a dry run, answer its plan).
    pub(crate) async fn carry_out(
        &self,
        change: Change,
        dry_run: bool,
        slot: Option<&mut crate::locks::NetSlot>,
    ) -> Result<Outcome, ControlError> {
        if dry_run {
            // A dry run is refused as the commit would be.
            if let Some((tenant, limits)) = &change.quota {
                self.index.read(|st| crate::quota::check(st, &change, tenant, limits))?;
            }
            return Ok(Outcome { revision: 0, plan: Some(change.plan()) });
        }
        let what = change.what.clone();
        let revision = self.commit.commit(change, slot).await.map_err(|e| e.into_control(&what))?;
        Ok(Outcome { revision, plan: None })
    }

    /// The id of `tenant`'s network `name` (request strings).
    fn network_id(&self, tenant: &str, name: &str, field: &str) -> Result<String, ControlError> {
        let tenant = Tenant::parse("tenant", tenant)?;
        let name = NetworkName::parse(field, name)?;
        self.index.read(|st| Ok(st.network_by_name(&tenant, &name)?.id.clone()))
    }

    /// The ids of every network of `tenant`.
    fn tenant_networks(&self, tenant: &str) -> Result<Vec<String>, ControlError> {
        let tenant = Tenant::parse("tenant", tenant)?;
        Ok(self
            .index
            .read(|st| st.networks.values().filter(|n| n.spec.tenant == tenant).map(|n| n.id.clone()).collect()))
    }

    async fn attach_timed(&self, who: &Caller, req: AttachEndpoint) -> Result<(EndpointView, Outcome), ControlError> {
        let t = Instant::now();
        let spec = req.validate()?;
        crate::admit::attach(&self.access.get(), who, &spec, req.allow_foreign_netns)?;
        let netns_id = if spec.netns.as_os_str().is_empty() {
            0
        } else {
            self.commit.kernel.netns_id(&spec.netns).await.map_err(|e| {
                ControlError::Invalid(InvalidRequest::new("netns", format!("{}: {}", spec.netns.display(), e.reason)))
            })?
        };
        self.commit.time(Phase::AttachValidate, t.elapsed());
        let net_id = self.network_id(&req.tenant, &req.network, "network")?;
        let mut slot = loop {
            let slot = self.locks.for_attach(&net_id).await;
            if !self.index.read(|st| in_flight(st, &net_id, &spec)) {
                break slot;
            }
            // An attach of the same name or key is recording: its outcome
            // decides this one's (a retry's answer, or a name taken).
            drop(slot);
            self.commit.settle().await;
        };
        let before = self.index.read(|st| {
            let net = st.networks.get(&net_id).cloned();
            attached_before(st, &net_id, &spec).map(|ep| ep.map(|ep| (view_of(net.as_ref(), &ep), st.revision)))
        })?;
        if let Some((view, revision)) = before {
            // A retry: the same answer as the first time, nothing changes.
            let plan = req.dry_run.then(|| Change::new("nothing: attached before").plan());
            return Ok((view, Outcome { revision, plan }));
        }
        for attempt in 0..crate::cluster::control::CLUSTER_TRIES {
            // The decisions run guest code (up to its deadline): tell the runtime
            // this thread blocks, so other requests keep being served meanwhile.
            let (net, ep, mut change) = tokio::task::block_in_place(|| {
                let netns = Netns { id: netns_id, foreign: req.allow_foreign_netns };
                self.decider.attach(&self.index, &mut slot, &spec, netns, &self.commit.timings)
            })?;
            if net.id != net_id {
                return Err(ControlError::NotFound(format!("network {:?} was removed meanwhile", req.network)));
            }
            let shared = if net.is_overlay() { Some(self.share_attach(&net, &mut change)?) } else { None };
            let ep = change.new_endpoints.first().cloned().unwrap_or(ep);
            let change = self.limited(change, &spec.tenant);
            let outcome = match (shared, req.dry_run) {
                (Some(c), false) => {
                    match self.commit_shared_attach(&c, change, &mut slot, &net, &req.name, attempt).await? {
                        Some(o) => o,
                        None => continue,
                    }
                }
                (None, false) if Committer::releasable(&change) => {
                    let what = change.what.clone();
                    let revision =
                        self.commit.commit_released(change, slot).await.map_err(|e| e.into_control(&what))?;
                    info!(endpoint = %ep.spec.name, network = %req.network, addresses = ?ep.addresses, revision, "attached");
                    return Ok((view_of(Some(&net), &ep), Outcome { revision, plan: None }));
                }
                _ => self.carry_out(change, req.dry_run, Some(&mut slot)).await?,
            };
            if !req.dry_run {
                info!(endpoint = %ep.spec.name, network = %req.network, addresses = ?ep.addresses, revision = outcome.revision, "attached");
            }
            return Ok((view_of(Some(&net), &ep), outcome));
        }
        Err(ControlError::Aborted(format!(
            "attaching endpoint {:?}: other nodes kept taking the addresses it was given; try again",
            req.name
        )))
    }

    async fn detach_timed(&self, req: DetachEndpoint) -> Result<Outcome, ControlError> {
        let target = req.target()?;
        let missing = |e: ControlError| match e {
            ControlError::NotFound(_) if req.allow_missing => {
                let revision = self.index.read(|st| st.revision);
                let plan = req.dry_run.then(|| Change::new("nothing: no such endpoint").plan());
                Ok(Outcome { revision, plan })
            }
            e => Err(e),
        };
        let net_id = match self.network_id(&req.tenant, &req.network, "network") {
            Ok(id) => id,
            Err(e) => return missing(e),
        };
        let mut slot = self.locks.network(&net_id).await;
        let found = self.index.read(|st| {
            let net = st
                .networks
                .get(&net_id)
                .ok_or_else(|| ControlError::NotFound(format!("network {:?} was removed meanwhile", req.network)))?;
            detach(st, net, endpoint_in(st, net, &target)?)
        });
        let (ep, mut change) = match found {
            Ok(found) => found,
            Err(e) => return missing(e),
        };
        if self.index.read(|st| st.networks.get(&ep.network_id).is_some_and(|n| n.is_overlay())) {
            self.cluster_for(&change.what)?.detach(&mut change, &ep);
        }
        let outcome = self.carry_out(change, req.dry_run, Some(&mut slot)).await?;
        drop(slot);
        if !req.dry_run {
            // The detached endpoint may have held its namespace's default route.
            self.move_default_route(&ep).await;
            info!(endpoint = %ep.spec.name, revision = outcome.revision, "detached");
        }
        Ok(outcome)
    }

    /// After `gone` left its namespace: the default route there goes to
    /// the endpoint that should now hold it, if any.
    async fn move_default_route(&self, gone: &weft_model::endpoint::Endpoint) {
        let ops = self.index.read(|st| reelect_default_route(st, gone));
        if ops.is_empty() {
            return;
        }
        // The retired interface still holds the route until deleted.
        self.commit.retired.settle(gone.netns_id).await;
        let mut c = Change::new("moving the default route");
        c.ops = ops;
        if let Err(e) = self.commit.commit(c, None).await {
            warn!(endpoint = %gone.spec.name, error = ?e, "moving the default route");
        }
    }

    /// Lock the tenant's scope and networks, decide a policy change, commit.
    pub(crate) async fn policy_change<T>(
        &self,
        tenant: &str,
        dry_run: bool,
        decide: impl FnOnce(&Decider, &Index) -> Result<(T, Change), ControlError>,
    ) -> Result<(T, Outcome), ControlError> {
        let scope = Tenant::parse("tenant", tenant)?;
        let _scope = self.locks.scope(&format!("documents/{scope}")).await;
        let ids = self.tenant_networks(tenant)?;
        let _nets = self.locks.networks(&ids).await;
        let (out, change) = tokio::task::block_in_place(|| decide(&self.decider, &self.index))?;
        let outcome = self.carry_out(self.limited(change, &scope), dry_run, None).await?;
        Ok((out, outcome))
    }
}

impl Controller for Ctl {
    async fn create_network(&self, who: &Caller, req: CreateNetwork) -> Result<(NetworkView, Outcome), ControlError> {
        let spec = req.validate()?;
        crate::admit::network(&self.access.get(), who, &spec)?;
        if !who.is_operator() {
            self.clear_of_the_host(&spec).await?;
        }
        if spec.is_overlay() {
            let (net, outcome) = self.create_overlay(spec, req.dry_run).await?;
            return Ok((NetworkView { network: net, endpoints: Vec::new() }, outcome));
        }
        let tenant = spec.tenant.clone();
        let (net, change) = tokio::task::block_in_place(|| self.decider.create_network(&self.index, spec))?;
        let change = self.limited(change, &tenant);
        let exists = self
            .commit
            .kernel
            .link_exists(&net.bridge)
            .await
            .map_err(|e| ControlError::Internal(format!("creating network {:?}: {e}", net.spec.name.as_str())))?;
        bridge_rule(&net, exists)?;
        let _slot = self.locks.network(&net.id).await;
        let outcome = self.carry_out(change, req.dry_run, None).await?;
        if !req.dry_run {
            info!(network = %net.spec.name, tenant = %net.spec.tenant, bridge = %net.bridge, revision = outcome.revision, "network created");
        }
        Ok((NetworkView { network: net, endpoints: Vec::new() }, outcome))
    }

    async fn get_network(&self, r: Ref) -> Result<NetworkView, ControlError> {
        self.index.read(|st| Ok(st.network_view(&find_network(st, &r)?)))
    }

    async fn list_networks(&self, tenant: String) -> Result<(Vec<NetworkView>, u64), ControlError> {
        let tenant = Tenant::parse("tenant", &tenant)?;
        Ok(self.index.read(|st| {
            let mut v: Vec<NetworkView> =
                st.networks.values().filter(|n| n.spec.tenant == tenant).map(|n| st.network_view(n)).collect();
            v.sort_by(|a, b| a.network.spec.name.cmp(&b.network.spec.name));
            (v, st.revision)
        }))
    }

    async fn delete_network(&self, r: Ref, force: bool) -> Result<Outcome, ControlError> {
        let net_id = self.network_id(&r.tenant, &r.network, "name")?;
        let slot = self.locks.network(&net_id).await;
        let (net, mut change, detached) = self.index.read(|st| delete_network(st, &r, force))?;
        if net.is_overlay() && !r.dry_run {
            self.unshare_network(&net).await?;
            change.remote_delete = self
                .index
                .read(|st| st.remote.values().filter(|e| e.network_id == net.id).map(|e| e.id.clone()).collect());
        }
        let outcome = self.carry_out(change, r.dry_run, None).await?;
        drop(slot);
        if !r.dry_run {
            self.locks.drop_network(&net.id);
            for ep in &detached {
                self.move_default_route(ep).await;
            }
            info!(network = %net.spec.name, tenant = %net.spec.tenant, endpoints = detached.len(),
                revision = outcome.revision, "network deleted");
        }
        Ok(outcome)
    }

    async fn attach(&self, who: &Caller, req: AttachEndpoint) -> Result<(EndpointView, Outcome), ControlError> {
        let t = Instant::now();
        let r = self.attach_timed(who, req).await;
        self.commit.time(Phase::Attach, t.elapsed());
        r
    }

    async fn detach(&self, req: DetachEndpoint) -> Result<Outcome, ControlError> {
        let t = Instant::now();
        let r = self.detach_timed(req).await;
        self.commit.time(Phase::Detach, t.elapsed());
        r
    }

    async fn stats(&self) -> Result<Stats, ControlError> {
        let (rss_bytes, cpu_user_ms, cpu_system_ms) = process_usage();
        let repairs = self.repairs();
        Ok(self.index.read(|st| Stats {
            phases: self.commit.timings.snapshot(),
            rss_bytes,
            cpu_user_ms,
            cpu_system_ms,
            networks: st.networks.len() as u64,
            endpoints: st.endpoints.len() as u64,
            revision: st.revision,
            repairs,
        }))
    }

    async fn get_endpoint(&self, r: Ref) -> Result<EndpointView, ControlError> {
        self.index.read(|st| {
            let (_, ep) = find_endpoint(st, &r)?;
            Ok(st.endpoint_view(&ep))
        })
    }

    async fn list_endpoints(&self, r: Ref) -> Result<(Vec<EndpointView>, u64), ControlError> {
        let tenant = Tenant::parse("tenant", &r.tenant)?;
        self.index.read(|st| {
            let filter = if r.network.is_empty() {
                None
            } else {
                Some(st.network_by_name(&tenant, &NetworkName::parse("network", &r.network)?)?.id.clone())
            };
            let mut v: Vec<EndpointView> = st
                .endpoints
                .values()
                .filter(|e| e.spec.tenant == tenant && filter.as_ref().is_none_or(|id| &e.network_id == id))
                .map(|e| st.endpoint_view(e))
                .collect();
            v.sort_by(|a, b| {
                (&a.endpoint.spec.network, &a.endpoint.spec.name)
                    .cmp(&(&b.endpoint.spec.network, &b.endpoint.spec.name))
            });
            Ok((v, st.revision))
        })
    }

    async fn update_network(&self, req: UpdateNetwork) -> Result<(NetworkView, Outcome), ControlError> {
        let (net, outcome) = self
            .policy_change(&req.tenant, req.dry_run, |d, i| {
                let (net, mut c) = d.update_network(i, &req)?;
                self.share_policy(&mut c, true);
                Ok((net, c))
            })
            .await?;
        if outcome.revision > 0 {
            info!(network = %net.spec.name, policy = %net.spec.policy, "policy component swapped");
        }
        let view = self.index.read(|st| match st.networks.get(&net.id) {
            Some(n) if !req.dry_run => st.network_view(n),
            _ => NetworkView { network: net.clone(), endpoints: Vec::new() },
        });
        Ok((view, outcome))
    }

    async fn apply_documents(&self, req: ApplyDocuments) -> Result<(DocumentsChanged, Outcome), ControlError> {
        weft_model::document::precheck("documents", &req.text)?;
        let (out, outcome) = self
            .policy_change(&req.tenant, req.dry_run, |d, i| {
                let (out, mut c) = d.apply_documents(i, &req)?;
                self.share_policy(&mut c, true);
                Ok((out, c))
            })
            .await?;
        info!(tenant = %req.tenant, documents = out.documents.len(), networks = ?out.networks, dry_run = req.dry_run, "policy documents applied");
        Ok((out, outcome))
    }

    async fn list_documents(&self, r: Ref) -> Result<Vec<StoredDocument>, ControlError> {
        let tenant = Tenant::parse("tenant", &r.tenant)?;
        Ok(self.index.read(|st| {
            st.documents
                .values()
                .filter(|d| d.tenant == tenant.as_str() && (r.network.is_empty() || d.network == r.network))
                .cloned()
                .collect()
        }))
    }

    async fn delete_documents(&self, req: DeleteDocuments) -> Result<(DocumentsChanged, Outcome), ControlError> {
        weft_model::document::precheck("documents", &req.text)?;
        let (out, outcome) = self
            .policy_change(&req.tenant, req.dry_run, |d, i| {
                let (out, mut c) = d.delete_documents(i, &req)?;
                self.share_policy(&mut c, true);
                Ok((out, c))
            })
            .await?;
        info!(tenant = %req.tenant, documents = out.documents.len(), networks = ?out.networks, dry_run = req.dry_run, "policy documents deleted");
        Ok((out, outcome))
    }

    async fn check_policy(&self, req: CheckPolicy) -> Result<PolicyVerdict, ControlError> {
        self.index.read(|st| check_policy(st, &req))
    }

    fn max_module_bytes(&self) -> usize {
        self.modules.files.max_bytes
    }

    async fn upload_module(&self, req: UploadModule) -> Result<(ModuleView, Outcome), ControlError> {
        let tenant = Tenant::parse("tenant", &req.tenant)?;
        let _scope = self.locks.scope(&format!("modules/{tenant}")).await;
        let limits = self.access.get().quotas(&tenant);
        self.index.read(|st| crate::quota::check_upload(st, &tenant, &limits, &req.name, req.bytes.len() as u64))?;
        let (record, outcome) = match self.modules.upload(&self.index, &self.decider, &req).await? {
            Upload::Existing(r) => (r, Outcome { revision: self.commit.events.revision(), plan: None }),
            Upload::New(record, change) if req.dry_run => {
                (record, self.carry_out(self.limited(*change, &tenant), true, None).await?)
            }
            Upload::New(record, change) => match self.carry_out(self.limited(*change, &tenant), false, None).await {
                Ok(o) => {
                    info!(tenant = %tenant, module = %record.name, kind = %record.kind, digest = %record.digest, bytes = record.size, "module uploaded");
                    (record, o)
                }
                Err(e) => {
                    self.modules.abort_upload(&self.index, &record);
                    return Err(e);
                }
            },
        };
        Ok((self.index.read(|st| crate::modules::view(st, record, false, tenant.as_str())), outcome))
    }

    async fn list_modules(&self, tenant: String) -> Result<Vec<ModuleView>, ControlError> {
        self.index.read(|st| crate::modules::list(st, &self.decider.builtins, &tenant))
    }

    async fn get_module(&self, r: Ref) -> Result<ModuleView, ControlError> {
        self.index.read(|st| crate::modules::get(st, &self.decider.builtins, &r))
    }

    async fn delete_module(&self, r: Ref) -> Result<Outcome, ControlError> {
        let tenant = Tenant::parse("tenant", &r.tenant)?;
        let _scope = self.locks.scope(&format!("modules/{tenant}")).await;
        let (record, change) = self.modules.remove(&self.index, &self.decider, &r)?;
        let outcome = self.carry_out(change, r.dry_run, None).await?;
        if !r.dry_run {
            self.modules.finish_remove(&self.index, &record);
        }
        Ok(outcome)
    }

    async fn usage(&self, tenant: String) -> Result<TenantUsage, ControlError> {
        let tenant = Tenant::parse("tenant", &tenant)?;
        let used = self.index.read(|st| crate::quota::usage(st, &tenant));
        Ok(TenantUsage { limits: self.access.get().quotas(&tenant), used, tenant: tenant.to_string() })
    }

    async fn list_nodes(&self) -> Result<Vec<weft_model::api::NodeView>, ControlError> {
        self.nodes().await
    }

    async fn remove_node(&self, name: String) -> Result<u64, ControlError> {
        self.forget_node(name).await
    }

    async fn watch(&self, filter: WatchFilter) -> Result<EventStream, ControlError> {
        let tenant = Tenant::parse("tenant", &filter.tenant)?;
        let network = if filter.network.is_empty() {
            None
        } else {
            Some(NetworkName::parse("network", &filter.network)?.to_string())
        };
        if filter.kinds.len() > 32 {
            return Err(InvalidRequest::new("kinds", format!("{} kinds; at most 32", filter.kinds.len())).into());
        }
        let kinds = if filter.kinds.is_empty() {
            None
        } else {
            let mut all: Vec<EventKind> = Vec::new();
            for (i, k) in filter.kinds.iter().enumerate() {
                all.extend(EventKind::parse_filter(k).ok_or_else(|| {
                    InvalidRequest::new(
                        format!("kinds[{i}]"),
                        format!("{} is not an event kind (network, endpoint, policy, module, repair, or e.g. endpoint.attached)", weft_model::ids::shown(k)),
                    )
                })?);
            }
            Some(all)
        };
        self.commit.events.watch(Subscription {
            tenant: tenant.to_string(),
            from: filter.from_revision,
            network,
            kinds,
        })
    }
}
