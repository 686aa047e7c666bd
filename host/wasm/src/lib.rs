//! The Wasm host: where weft runs the components that make its decisions.
//!
//! Threat model: a component is untrusted code from a tenant. It gets no WASI
//! capability at all (no files, sockets, clocks, environment): the linker
//! defines only the imports its world grants, so a component that imports
//! anything else fails to link and is refused at load. Every call runs in a
//! fresh store from a pre-instantiated template, with an epoch deadline, a
//! memory cap and instance limits (see [`limits`]); a trap, a timeout or a
//! wrong answer becomes an error for that one request, never a crash.

mod convert;
mod cpu;
mod engine;
mod ipam;
mod kind;
pub mod limits;
mod naming;
mod policy;
mod share;

pub use share::default_limit as default_tenant_concurrency;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use thiserror::Error;
use wasmtime::Engine;
use wasmtime::component::Component;

pub use kind::{ComponentInfo, Kind, check_header};

/// Why a component could not be loaded or a call did not produce an answer.
#[derive(Debug, Clone, Error)]
pub enum PluginError {
    /// The bytes are not a loadable component for the world asked for.
    #[error("module {module}: cannot load: {reason}")]
    Load {
        /// Module name.
        module: String,
        /// Why.
        reason: String,
    },
    /// The guest trapped (panic, out of bounds, memory cap, ...).
    #[error("module {module}: trapped: {reason}")]
    Trap {
        /// Module name.
        module: String,
        /// The trap.
        reason: String,
    },
    /// The guest ran past its deadline and was stopped.
    #[error("module {module}: ran past its {ms} ms deadline and was stopped")]
    Deadline {
        /// Module name.
        module: String,
        /// The deadline.
        ms: u64,
    },
    /// No module of that name is loaded.
    #[error("module {0:?} is not loaded")]
    Missing(String),
    /// The tenant's call slots stayed full (see [`share`]).
    #[error("module {module}: {reason}")]
    Busy {
        /// Module name.
        module: String,
        /// Whose slots, how many, how long the call waited.
        reason: String,
    },
}

impl PluginError {
    /// The error as a failed decision of `module`, without naming the
    /// module twice.
    pub fn into_decision(self, module: &str) -> weft_model::ipam::DecisionError {
        let reason = match self {
            PluginError::Load { reason, .. } => format!("cannot load: {reason}"),
            PluginError::Trap { reason, .. } => format!("trapped: {reason}"),
            PluginError::Deadline { ms, .. } => format!("ran past its {ms} ms deadline and was stopped"),
            PluginError::Missing(n) => format!("module {n:?} is not loaded"),
            PluginError::Busy { reason, .. } => reason,
        };
        weft_model::ipam::DecisionError::Failed { module: module.to_owned(), reason }
    }
}

/// A linked component, and for a tenant's upload the tenant's call slots.
struct Loaded<T> {
    pre: T,
    slots: Option<Arc<share::Slots>>,
}

impl<T> Loaded<T> {
    /// Run `f` (instantiate and call) in `store` with this component's
    /// deadline, and, for a tenant's component, in one of the tenant's call
    /// slots (see [`share`]) on a lowered thread (see [`cpu`]) that is
    /// restored before `store` is released.
    fn call<S: 'static, R>(
        &self,
        store: &mut wasmtime::Store<S>,
        f: impl FnOnce(&T, &mut wasmtime::Store<S>) -> wasmtime::Result<R>,
    ) -> wasmtime::Result<R> {
        let tenant = self.slots.is_some();
        let _slot = match &self.slots {
            Some(s) => Some(s.take(limits::TENANT_WALL_CAP).map_err(wasmtime::Error::new)?),
            None => None,
        };
        cpu::arm(store, tenant);
        let _lowered = cpu::Lowered::tenant(tenant);
        f(&self.pre, store)
    }
}

/// Loaded components of one world, by name.
struct Modules<T>(RwLock<HashMap<String, Arc<Loaded<T>>>>);

impl<T> Modules<T> {
    fn new() -> Self {
        Modules(RwLock::new(HashMap::new()))
    }
    fn insert(&self, name: &str, pre: T, slots: Option<Arc<share::Slots>>) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), Arc::new(Loaded { pre, slots }));
    }
    fn has(&self, name: &str) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).contains_key(name)
    }
    fn remove(&self, name: &str) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).remove(name);
    }
    fn get(&self, name: &str) -> Result<Arc<Loaded<T>>, PluginError> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| PluginError::Missing(name.to_owned()))
    }
}

/// How a call into a component ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guest answered (an answer that is a refusal, such as an
    /// exhausted pool, included).
    Ok,
    /// The guest trapped.
    Trap,
    /// The guest ran past its deadline.
    Deadline,
    /// The call was not run: the tenant's call slots stayed full.
    Rejected,
}

impl Outcome {
    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Trap => "trap",
            Outcome::Deadline => "deadline",
            Outcome::Rejected => "rejected",
        }
    }
}

/// Told of every call: the component's kind, how it ended, how long it took.
pub type CallObserver = Arc<dyn Fn(Kind, Outcome, std::time::Duration) + Send + Sync>;

/// The engine plus every loaded component, by name.
pub struct WasmHost {
    observer: std::sync::OnceLock<CallObserver>,
    engine: Engine,
    ipam: Modules<ipam::bindings::IpamPre<ipam::IpamState>>,
    policy: Modules<policy::Pre>,
    naming: Modules<naming::bindings::NamingPre<CallState>>,
    share: share::Share,
}

/// Store data of a call into a world that imports nothing callable.
pub struct CallState {
    limits: wasmtime::StoreLimits,
}

impl WasmHost {
    /// Tell `observer` of every call from now on (once; later calls of
    /// this are ignored).
    pub fn observe_calls(&self, observer: CallObserver) {
        let _ = self.observer.set(observer);
    }

    /// Run `f` in `m` ([`Loaded::call`]), telling the observer.
    fn run<T, S: 'static, R>(
        &self,
        kind: Kind,
        m: &Loaded<T>,
        store: &mut wasmtime::Store<S>,
        f: impl FnOnce(&T, &mut wasmtime::Store<S>) -> wasmtime::Result<R>,
    ) -> wasmtime::Result<R> {
        let t = std::time::Instant::now();
        let r = m.call(store, f);
        if let Some(o) = self.observer.get() {
            let outcome = match &r {
                Ok(_) => Outcome::Ok,
                Err(e) if e.downcast_ref::<share::Busy>().is_some() => Outcome::Rejected,
                Err(e) if matches!(e.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)) => {
                    Outcome::Deadline
                }
                Err(_) => Outcome::Trap,
            };
            o(kind, outcome, t.elapsed());
        }
        r
    }

    /// A fresh store with the sandbox limits (the deadline comes with the
    /// call: [`Loaded::call`]).
    fn limited_store(&self) -> wasmtime::Store<CallState> {
        let mut store = wasmtime::Store::new(&self.engine, CallState { limits: limits::store_limits() });
        store.limiter(|s| &mut s.limits);
        store
    }
}

/// Pre-instantiate `component` against `linker`, which defines only what
/// `world` grants: a component importing anything else (any WASI
/// interface, say) is refused here, naming the import.
fn link<T: 'static>(
    name: &str,
    world: &str,
    component: &Component,
    linker: &wasmtime::component::Linker<T>,
) -> Result<wasmtime::component::InstancePre<T>, PluginError> {
    linker.instantiate_pre(component).map_err(|e| PluginError::Load {
        module: name.to_owned(),
        reason: format!("imports something the {world} world does not grant: {e:#}"),
    })
}

/// The error for a component that links but does not export its world.
fn wrong_world(name: &str, world: &str, e: wasmtime::Error) -> PluginError {
    PluginError::Load { module: name.to_owned(), reason: format!("does not export the {world} world: {e:#}") }
}

/// A trap or an epoch interruption, as a plugin error.
fn classify(module: &str, e: wasmtime::Error) -> PluginError {
    if let Some(b) = e.downcast_ref::<share::Busy>() {
        return PluginError::Busy { module: module.to_owned(), reason: b.to_string() };
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            PluginError::Deadline { module: module.to_owned(), ms: limits::deadline_ms() }
        }
        _ => PluginError::Trap { module: module.to_owned(), reason: format!("{e:#}") },
    }
}

impl WasmHost {
    /// Build the engine (pooling allocator, epoch interruption) and start its
    /// epoch ticker.
    pub fn new() -> Result<WasmHost, PluginError> {
        WasmHost::with_tenant_concurrency(share::default_limit())
    }

    /// As [`WasmHost::new`], each tenant's uploaded components running at
    /// most `limit` calls at a time.
    pub fn with_tenant_concurrency(limit: usize) -> Result<WasmHost, PluginError> {
        let engine =
            engine::build().map_err(|e| PluginError::Load { module: "(engine)".into(), reason: e.to_string() })?;
        engine::start_ticker(&engine);
        Ok(WasmHost {
            observer: std::sync::OnceLock::new(),
            engine,
            ipam: Modules::new(),
            policy: Modules::new(),
            naming: Modules::new(),
            share: share::Share::new(limit),
        })
    }

    /// Load every `*.wasm` in `dir` as a built-in, named by file stem. The
    /// world is taken from the name's prefix (`ipam-*`). Returns the names
    /// with their kinds and bytes (for digests).
    pub fn load_builtin_dir(&self, dir: &Path) -> Result<Vec<(String, Kind, Vec<u8>)>, PluginError> {
        let entries = std::fs::read_dir(dir).map_err(|e| PluginError::Load {
            module: dir.display().to_string(),
            reason: format!("cannot read the built-in module directory ({e}); run `cargo xtask build-policies`"),
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "wasm") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            let Some(kind) = Kind::of_builtin(&name) else { continue };
            let bytes =
                std::fs::read(&path).map_err(|e| PluginError::Load { module: name.clone(), reason: e.to_string() })?;
            self.load(kind, &name, &bytes)?;
            out.push((name, kind, bytes));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Compile `bytes` in this process and install it under `key`. For
    /// built-ins and tests: uploads are compiled by a bounded worker
    /// ([`compile_untrusted`]) and installed with [`WasmHost::load_precompiled`].
    pub fn load(&self, kind: Kind, key: &str, bytes: &[u8]) -> Result<ComponentInfo, PluginError> {
        let load = |reason: String| PluginError::Load { module: key.to_owned(), reason };
        check_header(bytes).map_err(load)?;
        let component =
            Component::new(&self.engine, bytes).map_err(|e| load(format!("not a valid component: {e:#}")))?;
        self.install(kind, key, &component, None)
    }

    /// Install a component precompiled by [`compile_untrusted`] from `path`:
    /// a tenant's upload, whose calls run idle-class (see [`cpu`]).
    pub fn load_precompiled(&self, kind: Kind, key: &str, path: &Path) -> Result<ComponentInfo, PluginError> {
        let component = engine::deserialize(&self.engine, path)
            .map_err(|e| PluginError::Load { module: key.to_owned(), reason: format!("{e:#}") })?;
        // A tenant's module is loaded as `tenant/name`.
        let tenant = key.split_once('/').map_or(key, |(t, _)| t);
        self.install(kind, key, &component, Some(self.share.of(tenant)))
    }

    /// Check `component` against `kind`'s world, link it and make it
    /// callable as `key` (replacing any module of that key).
    fn install(
        &self,
        kind: Kind,
        key: &str,
        component: &Component,
        tenant: Option<Arc<share::Slots>>,
    ) -> Result<ComponentInfo, PluginError> {
        let info = kind::check_world(&self.engine, component, kind)
            .map_err(|reason| PluginError::Load { module: key.to_owned(), reason })?;
        match kind {
            Kind::Ipam => self.ipam.insert(key, ipam::prepare(&self.engine, key, component)?, tenant),
            Kind::Policy => self.policy.insert(key, policy::prepare(&self.engine, key, component)?, tenant),
            Kind::Naming => self.naming.insert(key, naming::prepare(&self.engine, key, component)?, tenant),
        }
        Ok(info)
    }

    /// Forget the module `key` of `kind` (calls in flight finish).
    pub fn remove(&self, kind: Kind, key: &str) {
        match kind {
            Kind::Ipam => self.ipam.remove(key),
            Kind::Policy => self.policy.remove(key),
            Kind::Naming => self.naming.remove(key),
        }
    }

    /// Whether a module `key` of `kind` is loaded.
    pub fn has(&self, kind: Kind, key: &str) -> bool {
        match kind {
            Kind::Ipam => self.ipam.has(key),
            Kind::Policy => self.policy.has(key),
            Kind::Naming => self.naming.has(key),
        }
    }

    /// Compile and link an IPAM component under `name` (tests).
    pub fn load_ipam(&self, name: &str, bytes: &[u8]) -> Result<ComponentInfo, PluginError> {
        self.load(Kind::Ipam, name, bytes)
    }

    /// Whether a policy module called `name` is loaded.
    pub fn has_policy(&self, name: &str) -> bool {
        self.policy.has(name)
    }

    fn policy_module(&self, name: &str) -> Result<Arc<Loaded<policy::Pre>>, PluginError> {
        self.policy.get(name)
    }

    /// Whether a naming module called `name` is loaded.
    pub fn has_naming(&self, name: &str) -> bool {
        self.naming.has(name)
    }

    /// Whether an IPAM module called `name` is loaded.
    pub fn has_ipam(&self, name: &str) -> bool {
        self.ipam.has(name)
    }

    fn ipam_module(&self, name: &str) -> Result<Arc<Loaded<ipam::bindings::IpamPre<ipam::IpamState>>>, PluginError> {
        self.ipam.get(name)
    }
}

/// Compile an untrusted upload for `kind` and return the precompiled
/// artefact, after checking it is a component of that world. Meant to run in
/// a throwaway worker process with resource limits (weftd's
/// `compile-module`): wasmtime does not treat a compile-time denial of
/// service as its bug. The engine has the same settings as the host's, so
/// the host can load the result.
pub fn compile_untrusted(kind: Kind, bytes: &[u8]) -> Result<Vec<u8>, String> {
    check_header(bytes)?;
    let engine = engine::build_for_compile().map_err(|e| format!("engine: {e:#}"))?;
    let component = Component::new(&engine, bytes).map_err(|e| format!("not a valid component: {e:#}"))?;
    kind::check_world(&engine, &component, kind)?;
    component.serialize().map_err(|e| format!("serializing: {e:#}"))
}

#[cfg(test)]
mod tests;
