//! The controller: the path of every request. Validate (model) -> record
//! intent (store) -> decide (Wasm) -> plan (pure) -> apply (kernel) ->
//! record the result -> answer. A failure anywhere undoes what was applied,
//! releases the lease and answers with a precise error.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::RwLock;
use tracing::{info, warn};
use weft_kernel::{ApplyError, Kernel, KernelError};
use weft_model::api::{
    ApplyDocuments, CheckPolicy, Controller, DeleteDocuments, DocumentsChanged, EndpointView, ModuleView, NetworkView,
    PolicyVerdict, Ref, Stats, UpdateNetwork, UploadModule,
};
use weft_model::document::StoredDocument;
use weft_model::endpoint::{AttachEndpoint, Endpoint, EndpointMode, EndpointState};
use weft_model::ipam::{DecisionError, Ipam, IpamRequest, Pool, check_answer};
use weft_model::naming::{NameRecord, Naming, NamingEndpoint, NamingNetwork};
use weft_model::network::{CreateNetwork, InvalidOrExists, Network, conflicts_with, pairs};
use weft_model::policy::{EndpointInfo, NetworkInfo, Policy};
use weft_model::{ControlError, EndpointName, InvalidRequest, Mac, NetworkName, Tenant};
use weft_plan::{
    Op, nft, plan_default_routes, plan_endpoint, plan_endpoint_removal, plan_network, plan_network_removal, undo,
};
use weft_store::{RedbStore, Store};
use weft_wasm::WasmHost;

use crate::config::Config;
use crate::modules::{ModuleFiles, sha256_hex};
use crate::state::{State, documents_for, pool_key};
use crate::timings::{Phase, Timings, process_usage};
use weft_model::module::ModuleRecord;
use weft_wasm::Kind;

/// weftd's controller.
pub struct Ctl {
    pub(crate) state: Mutex<State>,
    pub(crate) store: Box<dyn Store>,
    pub(crate) kernel: Kernel,
    pub(crate) wasm: Arc<WasmHost>,
    /// API operations hold it shared; a reconcile pass holds it exclusively,
    /// so reconcile never races an attach or detach.
    pub(crate) gate: RwLock<()>,
    /// Serialises nftables transactions so the newest render always wins.
    pub(crate) nft_lock: tokio::sync::Mutex<()>,
    /// The embedded DNS server.
    pub(crate) dns: weft_dns::Dns,
    /// The built-in components (tenant empty), shared by every tenant.
    pub(crate) builtins: Vec<ModuleRecord>,
    /// Where uploaded modules live and how they are compiled.
    pub(crate) files: ModuleFiles,
    /// Per-phase time of attach and detach.
    pub(crate) timings: Timings,
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ControlError {
    ControlError::Internal(e.to_string())
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Ctl {
    /// Open the store, load the built-in components, rebuild the in-memory
    /// state and reconcile the kernel with it.
    pub async fn start(cfg: &Config) -> anyhow::Result<Ctl> {
        let store = RedbStore::open(&cfg.state_dir)?;
        let wasm = Arc::new(WasmHost::new()?);
        let dir = cfg.modules_dir();
        let builtins: Vec<ModuleRecord> = wasm
            .load_builtin_dir(&dir)?
            .into_iter()
            .map(|(name, kind, bytes)| ModuleRecord {
                tenant: String::new(),
                name,
                kind: kind.as_str().to_owned(),
                digest: sha256_hex(&bytes),
                size: bytes.len() as u64,
                created: 0,
                imports: Vec::new(),
                exports: vec![kind.world()],
            })
            .collect();
        let names: Vec<&str> = builtins.iter().map(|b| b.name.as_str()).collect();
        info!(dir = %dir.display(), modules = ?names, "built-in components loaded");
        let snap = store.load()?;
        let ctl = Ctl {
            builtins,
            files: ModuleFiles::new(cfg)?,
            state: Mutex::new(State::default()),
            store: Box::new(store),
            kernel: Kernel::new()?,
            wasm,
            gate: RwLock::new(()),
            nft_lock: tokio::sync::Mutex::new(()),
            dns: weft_dns::Dns::new(cfg.dns()),
            timings: Timings::default(),
        };
        ctl.load_modules(snap.modules.clone()).await;
        ctl.load_state(snap);
        ctl.reconcile().await;
        Ok(ctl)
    }

    fn load_state(&self, snap: weft_store::Snapshot) {
        let mut st = self.lock();
        for d in snap.documents {
            st.documents.insert(d.store_key(), d);
        }
        for n in snap.networks {
            // The same component compiles the same rule set again; if it no
            // longer can, the network runs with no isolation and says so.
            let docs = documents_for(&n, st.documents.values());
            match self.wasm.compile(&self.module_key(&n, &n.spec.policy), &network_info(&n), &docs) {
                Ok(c) => {
                    st.policies.insert(n.id.clone(), Arc::new(c));
                }
                Err(e) => warn!(network = %n.spec.name, error = %e, "policy did not compile at start-up"),
            }
            st.networks.insert(n.id.clone(), n);
        }
        for e in snap.endpoints {
            st.insert_endpoint(e);
        }
        for (key, last) in snap.cursors {
            st.leases.entry(key).or_default().last = Some(last);
        }
        info!(networks = st.networks.len(), endpoints = st.endpoints.len(), "state loaded");
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply the whole nftables table for the current networks, atomically.
    pub(crate) async fn sync_nft(&self) -> Result<(), KernelError> {
        let _g = self.nft_lock.lock().await;
        let script = self.lock().render_nft();
        self.kernel.apply(&[Op::Nft { script }]).await.map_err(|e| e.error)
    }

    /// Apply `ops`; on failure undo the applied prefix and return the error.
    /// nftables ops (a plan's last) run under the nft lock, so an endpoint's
    /// element change never interleaves with a whole-table render. With
    /// `phases`, the link and nft parts are timed under them.
    pub(crate) async fn apply_or_undo(&self, ops: &[Op], phases: Option<(Phase, Phase)>) -> Result<(), KernelError> {
        let split = ops.iter().position(|o| matches!(o, Op::Nft { .. } | Op::NftElements { .. })).unwrap_or(ops.len());
        let (links, firewall) = ops.split_at(split);
        let t = Instant::now();
        let linked = self.kernel.apply(links).await;
        if let Some((p, _)) = phases {
            self.timings.record(p, t.elapsed());
        }
        let result = match linked {
            Err(ApplyError { applied, error }) => Err((applied, error)),
            Ok(()) if firewall.is_empty() => Ok(()),
            Ok(()) => {
                let _g = self.nft_lock.lock().await;
                let t = Instant::now();
                let r = self.kernel.apply(firewall).await.map_err(|e| (links.len(), e.error));
                if let Some((_, p)) = phases {
                    self.timings.record(p, t.elapsed());
                }
                r
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err((applied, error)) => {
                let back = undo(&ops[..applied]);
                if let Err(e) = self.kernel.apply(&back).await {
                    warn!(error = %e, "undo after a failed apply also failed");
                }
                Err(error)
            }
        }
    }

    fn find_endpoint(st: &State, r: &Ref) -> Result<Endpoint, ControlError> {
        let tenant = Tenant::parse("tenant", &r.tenant)?;
        let network = NetworkName::parse("network", &r.network)?;
        let name = EndpointName::parse("name", &r.name)?;
        let net = st.network_by_name(&tenant, &network)?;
        st.endpoints_of(&net.id).find(|e| e.spec.name == name).cloned().ok_or_else(|| {
            ControlError::NotFound(format!("endpoint {:?} not found on network {:?}", name.as_str(), network.as_str()))
        })
    }

    /// Decide the endpoint's addresses (one IPAM call per pool) and record it
    /// as pending in memory. Runs under the state lock, so concurrent
    /// attaches never get the same address.
    fn decide(
        &self,
        st: &mut State,
        req: &weft_model::endpoint::EndpointSpec,
        netns_id: u64,
    ) -> Result<Endpoint, ControlError> {
        let net = st.network_by_name(&req.tenant, &req.network)?.clone();
        let mut req = req.clone();
        if st.endpoints_of(&net.id).any(|e| e.spec.name == req.name) {
            return Err(ControlError::AlreadyExists(format!(
                "endpoint {:?} already exists on network {:?}",
                req.name.as_str(),
                req.network.as_str()
            )));
        }
        if req.mode != EndpointMode::Network {
            return Self::decide_without_interface(st, &net, req, netns_id);
        }
        if !req.publish.is_empty() && !net.is_bridge() {
            return Err(InvalidRequest::new(
                "publish",
                format!(
                    "network {:?} is a macvlan network; published ports need a bridge network",
                    net.spec.name.as_str()
                ),
            )
            .into());
        }
        let same_ns: Vec<&Endpoint> =
            st.endpoints.values().filter(|e| e.netns_id == netns_id && e.spec.mode == EndpointMode::Network).collect();
        if req.auto_ifname {
            // eth0 for the first network, eth1 for the second, ... as Docker does.
            let free = (0..).map(|i| format!("eth{i}")).find(|n| !same_ns.iter().any(|e| e.spec.ifname.as_str() == n));
            req.ifname = weft_model::IfName::parse("ifname", &free.unwrap_or_default())?;
        }
        if let Some(other) = same_ns.iter().find(|e| e.spec.ifname == req.ifname) {
            return Err(ControlError::AlreadyExists(format!(
                "interface {} in {} is already used by endpoint {:?}",
                req.ifname,
                req.netns.display(),
                other.spec.name.as_str()
            )));
        }
        for (i, m) in req.publish.iter().enumerate() {
            if let Some(h) = m.host_ip
                && !net.spec.subnets.iter().any(|s| s.subnet.network().is_ipv4() == h.is_ipv4())
            {
                return Err(InvalidRequest::new(
                    format!("publish[{i}]"),
                    format!("{m}: network {:?} has no subnet of the host IP's family", net.spec.name.as_str()),
                )
                .into());
            }
            if let Some(holder) = st.endpoints.values().find(|e| e.spec.publish.iter().any(|o| o.clashes_with(m))) {
                let network = st.networks.get(&holder.network_id).map(|n| n.spec.name.to_string()).unwrap_or_default();
                return Err(ControlError::AlreadyExists(format!(
                    "port {m} is already published by endpoint {:?} on network {network:?}",
                    holder.spec.name.as_str()
                )));
            }
        }
        for (i, ip) in req.ips.iter().enumerate() {
            if !net.spec.subnets.iter().any(|s| s.subnet.contains(ip)) {
                return Err(InvalidRequest::new(
                    format!("ips[{i}]"),
                    format!("{ip} is not inside any subnet of network {:?}", net.spec.name.as_str()),
                )
                .into());
            }
        }
        // One classify call per attach; the rule set was compiled with the network.
        let info = endpoint_info(&net, &req);
        let state = st.policy_of(&net.id);
        let groups = self
            .timings
            .time(Phase::AttachClassify, || {
                self.wasm.classify(&self.module_key(&net, &net.spec.policy), &network_info(&net), &state.state, &info)
            })
            .map_err(policy_error)?;
        let ipam = self.module_key(&net, &net.spec.ipam);
        let id = new_id();
        let mut addresses = Vec::new();
        for s in &net.spec.subnets {
            let pool = Pool { subnet: s.subnet, range: s.ip_range, gateway: Some(s.gateway) };
            let want = req.ips.iter().copied().find(|ip| ip.is_ipv4() == s.subnet.network().is_ipv4());
            let ireq = IpamRequest {
                network: net.spec.name.to_string(),
                endpoint: req.name.to_string(),
                static_address: want,
            };
            let key = pool_key(&net.id, s.gateway);
            let leases = st.leases.entry(key).or_default();
            let decided = self
                .timings
                .time(Phase::AttachIpam, || self.wasm.allocate(&ipam, &pool, &ireq, &net.spec.config_list(), leases));
            let addr = match decided {
                Ok(a) => a,
                Err(e) => {
                    Self::release(st, &net.id, &addresses, &id);
                    return Err(ipam_error(e, &net));
                }
            };
            if let Err(why) = check_answer(&pool, &ireq, leases, addr) {
                Self::release(st, &net.id, &addresses, &id);
                return Err(ControlError::Plugin(format!("module {}: {why}; nothing was assigned", net.spec.ipam)));
            }
            leases.reserve(addr, &id);
            addresses.push(ipnet::IpNet::new(addr, s.subnet.prefix_len()).map_err(internal)?);
        }
        let mac = req.mac.unwrap_or_else(|| default_mac(&addresses, &id));
        let ep = pending(id, &net, req, netns_id, mac, addresses, groups)?;
        st.endpoints.insert(ep.id.clone(), ep.clone());
        Ok(ep)
    }

    /// Start the network's DNS server (if it has DNS) and load the records of
    /// its endpoints. A no-op for a network already served.
    pub(crate) async fn serve_dns(&self, net: &Network) -> Result<(), KernelError> {
        if !net.spec.dns || self.dns.serves(&net.id) {
            return Ok(());
        }
        let gateways: Vec<IpAddr> = net.spec.subnets.iter().map(|s| s.gateway).collect();
        let subnets: Vec<ipnet::IpNet> = net.spec.subnets.iter().map(|s| s.subnet).collect();
        let upstreams = (!net.spec.dns_upstream.is_empty()).then(|| net.spec.dns_upstream.clone());
        self.dns
            .serve_network(&net.id, net.spec.name.as_str(), &gateways, &subnets, upstreams)
            .await
            .map_err(|e| KernelError::new("dns listen", &net.spec.name, e))?;
        let endpoints: Vec<Endpoint> = self
            .lock()
            .endpoints_of(&net.id)
            .filter(|e| e.state == EndpointState::Ready && e.spec.mode == EndpointMode::Network)
            .cloned()
            .collect();
        for ep in endpoints {
            match self.decide_names(net, &ep) {
                Ok(records) => {
                    let addrs: Vec<IpAddr> = ep.addresses.iter().map(|a| a.addr()).collect();
                    self.dns.set_endpoint(&net.id, &ep.id, ep.netns_id, &addrs, records);
                }
                Err(e) => warn!(endpoint = %ep.spec.name, error = %e, "naming"),
            }
        }
        Ok(())
    }

    /// The DNS records of `ep` on `net`, decided by the network's naming
    /// component and checked by the host; none if the network has no DNS.
    fn decide_names(&self, net: &Network, ep: &Endpoint) -> Result<Vec<NameRecord>, ControlError> {
        if !net.spec.dns || ep.spec.mode != EndpointMode::Network {
            return Ok(Vec::new());
        }
        let endpoint = NamingEndpoint {
            name: ep.spec.name.to_string(),
            aliases: ep.spec.aliases.clone(),
            addresses: ep.addresses.iter().map(|a| a.addr()).collect(),
            labels: pairs(&ep.spec.labels),
        };
        let network = NamingNetwork {
            name: net.spec.name.to_string(),
            tenant: net.spec.tenant.to_string(),
            options: net.spec.options_list(),
            config: net.spec.config_list(),
        };
        self.wasm.names(&self.module_key(net, &net.spec.naming), &endpoint, &network).map_err(|e| match e {
            DecisionError::Invalid(m) => InvalidRequest::new("aliases", m).into(),
            other => ControlError::Plugin(format!("{other}; nothing was changed")),
        })
    }

    /// After `gone` left its namespace, give the namespace's remaining
    /// endpoint with the lowest interface name the default route (the
    /// detached one may have held it).
    async fn reelect_default_route(&self, gone: &Endpoint) {
        let next = {
            let st = self.lock();
            let mut rest: Vec<&Endpoint> = st
                .endpoints
                .values()
                .filter(|e| {
                    gone.netns_id != 0
                        && e.netns_id == gone.netns_id
                        && e.state == EndpointState::Ready
                        && e.spec.mode == EndpointMode::Network
                })
                .collect();
            rest.sort_by(|a, b| a.spec.ifname.cmp(&b.spec.ifname));
            rest.first().and_then(|e| st.networks.get(&e.network_id).map(|n| (n.clone(), (*e).clone())))
        };
        if let Some((net, ep)) = next {
            let ops = plan_default_routes(&net, &ep);
            if let Err(e) = self.kernel.apply(&ops).await {
                warn!(endpoint = %ep.spec.name, error = %e, "moving the default route");
            }
        }
    }

    /// Modes `none`, `host` and `container:`: no address is allocated. A
    /// `container:` endpoint reports the addresses of the endpoint whose
    /// namespace it shares.
    fn decide_without_interface(
        st: &mut State,
        net: &Network,
        mut req: weft_model::endpoint::EndpointSpec,
        netns_id: u64,
    ) -> Result<Endpoint, ControlError> {
        let id = new_id();
        let (addresses, mac, netns_id) = match &req.mode {
            EndpointMode::Container(target) => {
                let t = st
                    .endpoints_of(&net.id)
                    .find(|e| &e.spec.name == target)
                    .ok_or_else(|| {
                        ControlError::NotFound(format!(
                            "endpoint {:?} (mode container:) not found on network {:?}",
                            target.as_str(),
                            net.spec.name.as_str()
                        ))
                    })?
                    .clone();
                if t.spec.mode != EndpointMode::Network || t.state != EndpointState::Ready {
                    return Err(ControlError::FailedPrecondition(format!(
                        "endpoint {:?} has no interface of its own to share",
                        target.as_str()
                    )));
                }
                req.netns = t.spec.netns.clone();
                req.ifname = t.spec.ifname.clone();
                (t.addresses.clone(), t.mac, t.netns_id)
            }
            _ => (Vec::new(), default_mac(&[], &id), netns_id),
        };
        let ep = pending(id, net, req, netns_id, mac, addresses, Vec::new())?;
        st.endpoints.insert(ep.id.clone(), ep.clone());
        Ok(ep)
    }

    fn release(st: &mut State, network_id: &str, addrs: &[ipnet::IpNet], id: &str) {
        for a in addrs {
            if let Some(l) = st.leases.get_mut(&pool_key(network_id, a.addr())) {
                l.release(a.addr(), id);
            }
        }
    }

    /// Forget a pending endpoint everywhere (memory, leases, store).
    fn forget(&self, id: &str) {
        self.lock().remove_endpoint(id);
        if let Err(e) = self.store.delete_endpoint(id) {
            warn!(endpoint = id, error = %e, "could not delete endpoint record during rollback");
        }
    }
}

/// A new endpoint record in state `Pending`.
fn pending(
    id: String,
    net: &Network,
    spec: weft_model::endpoint::EndpointSpec,
    netns_id: u64,
    mac: Mac,
    addresses: Vec<ipnet::IpNet>,
    groups: Vec<String>,
) -> Result<Endpoint, ControlError> {
    Ok(Endpoint {
        host_ifname: Endpoint::host_ifname_for(&id)?,
        netns_id,
        network_id: net.id.clone(),
        id,
        spec,
        mac,
        addresses,
        state: EndpointState::Pending,
        groups,
    })
}

/// What the policy component is told about a network.
pub(crate) fn network_info(net: &Network) -> NetworkInfo {
    NetworkInfo {
        name: net.spec.name.to_string(),
        tenant: net.spec.tenant.to_string(),
        internal: net.spec.internal,
        options: net.spec.options_list(),
        config: net.spec.config_list(),
    }
}

/// What the policy component is told about an endpoint it classifies.
pub(crate) fn endpoint_info(net: &Network, spec: &weft_model::endpoint::EndpointSpec) -> EndpointInfo {
    EndpointInfo { name: spec.name.to_string(), network: net.spec.name.to_string(), labels: pairs(&spec.labels) }
}

fn policy_error(e: DecisionError) -> ControlError {
    match e {
        DecisionError::Invalid(m) => InvalidRequest::new("policy", m).into(),
        other => ControlError::Plugin(format!("{other}; nothing was changed")),
    }
}

fn ipam_error(e: DecisionError, net: &Network) -> ControlError {
    match e {
        DecisionError::Exhausted(m) => ControlError::Exhausted(format!("network {:?}: {m}", net.spec.name.as_str())),
        DecisionError::Conflict(m) => ControlError::AlreadyExists(format!("network {:?}: {m}", net.spec.name.as_str())),
        DecisionError::Invalid(m) => InvalidRequest::new("ips", m).into(),
        e @ DecisionError::Failed { .. } => ControlError::Plugin(format!("{e}; nothing was assigned")),
    }
}

/// Docker's default MAC (02:42 + IPv4); IPv6-only endpoints get 02:42 + id bytes.
fn default_mac(addrs: &[ipnet::IpNet], id: &str) -> Mac {
    if let Some(IpAddr::V4(v4)) = addrs.iter().map(|a| a.addr()).find(IpAddr::is_ipv4) {
        return Mac::from_ipv4(v4);
    }
    let b = id.as_bytes();
    let h = |i: usize| u8::from_str_radix(std::str::from_utf8(&b[i..i + 2]).unwrap_or("00"), 16).unwrap_or(0);
    Mac([0x02, 0x42, h(0), h(2), h(4), h(6)])
}

impl Controller for Ctl {
    async fn create_network(&self, req: CreateNetwork) -> Result<NetworkView, ControlError> {
        let spec = req.validate()?;
        let _gate = self.gate.read().await;
        self.check_binding(&spec.tenant, Kind::Ipam, "ipam", &spec.ipam)?;
        self.check_binding(&spec.tenant, Kind::Naming, "naming", &spec.naming)?;
        self.check_binding(&spec.tenant, Kind::Policy, "policy", &spec.policy)?;
        let net = Network::new(new_id(), spec)?;
        // Compile once per policy change: a policy that does not compile
        // refuses the network before anything is made.
        let docs = documents_for(&net, self.lock().documents.values());
        let module = self.module_key(&net, &net.spec.policy);
        let policy = Arc::new(self.wasm.compile(&module, &network_info(&net), &docs).map_err(policy_error)?);
        let exists = self.kernel.link_exists(&net.bridge).await.map_err(internal)?;
        if !net.is_bridge() && !exists {
            return Err(InvalidRequest::new(
                "options[parent]",
                format!("parent interface {} does not exist on the host", net.bridge),
            )
            .into());
        }
        if net.is_bridge() && exists {
            return Err(ControlError::AlreadyExists(format!(
                "a link named {} already exists on the host and is not weft's",
                net.bridge
            )));
        }
        {
            let mut st = self.lock();
            for other in st.networks.values() {
                match conflicts_with(&net.spec, &net.bridge, other) {
                    Some(InvalidOrExists::Invalid(e)) => return Err(e.into()),
                    Some(InvalidOrExists::Exists(m)) => return Err(ControlError::AlreadyExists(m)),
                    None => {}
                }
            }
            st.networks.insert(net.id.clone(), net.clone());
            st.policies.insert(net.id.clone(), policy);
        }
        let rollback = |this: &Self| {
            {
                let mut st = this.lock();
                st.networks.remove(&net.id);
                st.policies.remove(&net.id);
            }
            let _ = this.store.delete_network(&net.id);
        };
        if let Err(e) = self.store.put_network(&net) {
            rollback(self);
            return Err(internal(e));
        }
        let ops = plan_network(&net, None);
        let applied = match self.apply_or_undo(&ops, None).await {
            Ok(()) => match self.sync_nft().await {
                Ok(()) => self.serve_dns(&net).await.map_err(|e| (e, true)),
                Err(e) => Err((e, true)),
            },
            Err(e) => Err((e, false)),
        };
        if let Err((e, bridge_made)) = applied {
            rollback(self);
            if bridge_made {
                let _ = self.kernel.apply(&undo(&ops)).await;
            }
            if let Err(e2) = self.sync_nft().await {
                warn!(error = %e2, "restoring nftables after a failed create");
            }
            return Err(internal(format!("creating network {:?}: {e}; rolled back", net.spec.name.as_str())));
        }
        info!(network = %net.spec.name, tenant = %net.spec.tenant, bridge = %net.bridge, "network created");
        Ok(self.lock().network_view(&net))
    }

    async fn get_network(&self, r: Ref) -> Result<NetworkView, ControlError> {
        let tenant = Tenant::parse("tenant", &r.tenant)?;
        let name = NetworkName::parse("name", &r.network)?;
        let st = self.lock();
        let n = st.network_by_name(&tenant, &name)?;
        Ok(st.network_view(n))
    }

    async fn list_networks(&self, tenant: String) -> Result<Vec<NetworkView>, ControlError> {
        let tenant = Tenant::parse("tenant", &tenant)?;
        let st = self.lock();
        let mut v: Vec<NetworkView> =
            st.networks.values().filter(|n| n.spec.tenant == tenant).map(|n| st.network_view(n)).collect();
        v.sort_by(|a, b| a.network.spec.name.cmp(&b.network.spec.name));
        Ok(v)
    }

    async fn delete_network(&self, r: Ref) -> Result<(), ControlError> {
        let tenant = Tenant::parse("tenant", &r.tenant)?;
        let name = NetworkName::parse("name", &r.network)?;
        let _gate = self.gate.read().await;
        let (net, policy) = {
            let mut st = self.lock();
            let net = st.network_by_name(&tenant, &name)?.clone();
            let attached: Vec<String> = st.endpoints_of(&net.id).map(|e| e.spec.name.to_string()).collect();
            if !attached.is_empty() {
                return Err(ControlError::FailedPrecondition(format!(
                    "network {:?} has {} endpoint(s) attached ({}); detach them first",
                    name.as_str(),
                    attached.len(),
                    attached.join(", ")
                )));
            }
            st.networks.remove(&net.id);
            let policy = st.policies.remove(&net.id).unwrap_or_default();
            st.leases.retain(|k, _| !k.starts_with(&format!("{}/", net.id)));
            (net, policy)
        };
        let result = async {
            self.sync_nft().await?;
            self.kernel.apply(&plan_network_removal(&net)).await.map_err(|e| e.error)
        }
        .await;
        if let Err(e) = result {
            {
                let mut st = self.lock();
                st.networks.insert(net.id.clone(), net.clone());
                st.policies.insert(net.id.clone(), policy);
            }
            let _ = self.sync_nft().await;
            return Err(internal(format!("deleting network {:?}: {e}", name.as_str())));
        }
        self.dns.stop_network(&net.id).await;
        self.store.delete_network(&net.id).map_err(internal)?;
        info!(network = %name, tenant = %tenant, "network deleted");
        Ok(())
    }

    async fn attach(&self, req: AttachEndpoint) -> Result<EndpointView, ControlError> {
        let t = Instant::now();
        let r = self.attach_timed(req).await;
        self.timings.record(Phase::Attach, t.elapsed());
        r
    }

    async fn detach(&self, r: Ref) -> Result<(), ControlError> {
        let t = Instant::now();
        let r = self.detach_timed(r).await;
        self.timings.record(Phase::Detach, t.elapsed());
        r
    }

    async fn stats(&self) -> Result<Stats, ControlError> {
        let (rss_bytes, cpu_user_ms, cpu_system_ms) = process_usage();
        let st = self.lock();
        Ok(Stats {
            phases: self.timings.snapshot(),
            rss_bytes,
            cpu_user_ms,
            cpu_system_ms,
            networks: st.networks.len() as u64,
            endpoints: st.endpoints.len() as u64,
        })
    }

    async fn get_endpoint(&self, r: Ref) -> Result<EndpointView, ControlError> {
        let st = self.lock();
        let ep = Self::find_endpoint(&st, &r)?;
        Ok(st.endpoint_view(&ep))
    }

    async fn list_endpoints(&self, r: Ref) -> Result<Vec<EndpointView>, ControlError> {
        let tenant = Tenant::parse("tenant", &r.tenant)?;
        let st = self.lock();
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
            (&a.endpoint.spec.network, &a.endpoint.spec.name).cmp(&(&b.endpoint.spec.network, &b.endpoint.spec.name))
        });
        Ok(v)
    }

    async fn update_network(&self, req: UpdateNetwork) -> Result<NetworkView, ControlError> {
        Ctl::update_network(self, req).await
    }

    async fn apply_documents(&self, req: ApplyDocuments) -> Result<DocumentsChanged, ControlError> {
        Ctl::apply_documents(self, req).await
    }

    async fn list_documents(&self, r: Ref) -> Result<Vec<StoredDocument>, ControlError> {
        Ctl::list_documents(self, r)
    }

    async fn delete_documents(&self, req: DeleteDocuments) -> Result<DocumentsChanged, ControlError> {
        Ctl::delete_documents(self, req).await
    }

    async fn check_policy(&self, req: CheckPolicy) -> Result<PolicyVerdict, ControlError> {
        Ctl::check_policy(self, req)
    }

    fn max_module_bytes(&self) -> usize {
        self.files.max_bytes
    }

    async fn upload_module(&self, req: UploadModule) -> Result<ModuleView, ControlError> {
        Ctl::upload_module(self, req).await
    }

    async fn list_modules(&self, tenant: String) -> Result<Vec<ModuleView>, ControlError> {
        Ctl::list_modules(self, &tenant)
    }

    async fn get_module(&self, r: Ref) -> Result<ModuleView, ControlError> {
        Ctl::get_module(self, &r)
    }

    async fn delete_module(&self, r: Ref) -> Result<(), ControlError> {
        Ctl::delete_module(self, &r).await
    }
}

/// The request path of attach and detach, timed by their trait methods.
impl Ctl {
    async fn attach_timed(&self, req: AttachEndpoint) -> Result<EndpointView, ControlError> {
        let t = Instant::now();
        let spec = req.validate()?;
        let netns_id = if spec.netns.as_os_str().is_empty() {
            0
        } else {
            weft_kernel::check_netns(&spec.netns).await.map_err(|e| {
                ControlError::Invalid(InvalidRequest::new("netns", format!("{}: {}", spec.netns.display(), e.reason)))
            })?
        };
        self.timings.record(Phase::AttachValidate, t.elapsed());
        let _gate = self.gate.read().await;
        // The decisions run guest code (up to its deadline): tell the runtime
        // this thread blocks, so other requests keep being served meanwhile.
        let (mut ep, net, policy, cursors) = tokio::task::block_in_place(|| {
            let mut st = self.lock();
            let ep = self.decide(&mut st, &spec, netns_id)?;
            let net = st.networks.get(&ep.network_id).cloned().ok_or_else(|| internal("network vanished"))?;
            let cursors: Vec<(String, IpAddr)> =
                ep.addresses.iter().map(|a| (pool_key(&net.id, a.addr()), a.addr())).collect();
            let policy = st.policy_of(&ep.network_id);
            Ok::<_, ControlError>((ep, net, policy, cursors))
        })?;
        let records = match tokio::task::block_in_place(|| {
            self.timings.time(Phase::AttachNaming, || self.decide_names(&net, &ep))
        }) {
            Ok(r) => r,
            Err(e) => {
                self.lock().remove_endpoint(&ep.id);
                return Err(e);
            }
        };
        if let Err(e) = self.timings.time(Phase::AttachStore, || self.store.put_endpoint(&ep, &cursors)) {
            self.lock().remove_endpoint(&ep.id);
            return Err(internal(e));
        }
        let tmp = Endpoint::peer_tmp_ifname_for(&ep.id)?;
        let ops = plan_endpoint(&net, &policy.rules, &ep, &tmp);
        if let Err(e) = self.apply_or_undo(&ops, Some((Phase::AttachNetlink, Phase::AttachNft))).await {
            self.forget(&ep.id);
            return Err(internal(format!("attaching endpoint {:?}: {e}; rolled back", ep.spec.name.as_str())));
        }
        ep.state = EndpointState::Ready;
        if let Err(e) = self.timings.time(Phase::AttachStore, || self.store.put_endpoint(&ep, &[])) {
            let _ = self.kernel.apply(&plan_endpoint_removal(&net, &ep)).await;
            self.forget(&ep.id);
            return Err(internal(e));
        }
        if !records.is_empty() {
            let addrs: Vec<IpAddr> = ep.addresses.iter().map(|a| a.addr()).collect();
            self.timings
                .time(Phase::AttachDns, || self.dns.set_endpoint(&net.id, &ep.id, ep.netns_id, &addrs, records));
        }
        let mut st = self.lock();
        st.endpoints.insert(ep.id.clone(), ep.clone());
        info!(endpoint = %ep.spec.name, network = %net.spec.name, addresses = ?ep.addresses, "attached");
        Ok(st.endpoint_view(&ep))
    }

    async fn detach_timed(&self, r: Ref) -> Result<(), ControlError> {
        let _gate = self.gate.read().await;
        let (ep, net, dependents) = {
            let st = self.lock();
            let ep = Self::find_endpoint(&st, &r)?;
            let net = st.networks.get(&ep.network_id).cloned().ok_or_else(|| internal("network vanished"))?;
            let dependents: Vec<String> = st
                .endpoints_of(&net.id)
                .filter(|e| e.spec.mode == EndpointMode::Container(ep.spec.name.clone()))
                .map(|e| e.spec.name.to_string())
                .collect();
            (ep, net, dependents)
        };
        if !dependents.is_empty() {
            return Err(ControlError::FailedPrecondition(format!(
                "endpoint {:?} shares its namespace with {} (mode container:); detach them first",
                ep.spec.name.as_str(),
                dependents.join(", ")
            )));
        }
        if ep.state == EndpointState::Pending {
            return Err(ControlError::FailedPrecondition(format!(
                "endpoint {:?} is still being attached",
                ep.spec.name.as_str()
            )));
        }
        self.dns.remove_endpoint(&ep.network_id, &ep.id);
        // Stop forwarding its published ports first. If the elements are not
        // there (table flushed by hand), the whole table is re-rendered below.
        let mut resync = false;
        let policy = self.lock().policy_of(&ep.network_id);
        let elements = nft::endpoint_elements(&ep, &policy.rules);
        if !elements.is_empty() {
            let _g = self.nft_lock.lock().await;
            let t = Instant::now();
            resync = self.kernel.apply(&[Op::NftElements { change: nft::Change::Delete, elements }]).await.is_err();
            self.timings.record(Phase::DetachNft, t.elapsed());
        }
        let t = Instant::now();
        self.kernel
            .apply(&plan_endpoint_removal(&net, &ep))
            .await
            .map_err(|e| internal(format!("detaching endpoint {:?}: {e}", ep.spec.name.as_str())))?;
        self.timings.record(Phase::DetachNetlink, t.elapsed());
        self.timings.time(Phase::DetachStore, || self.store.delete_endpoint(&ep.id)).map_err(internal)?;
        self.lock().remove_endpoint(&ep.id);
        if resync && let Err(e) = self.sync_nft().await {
            warn!(error = %e, "re-rendering nftables after a detach");
        }
        self.reelect_default_route(&ep).await;
        info!(endpoint = %ep.spec.name, "detached");
        Ok(())
    }
}
