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
mod engine;
mod ipam;
pub mod limits;
mod naming;
mod policy;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::Engine;

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
}

/// Loaded components of one world, by name.
struct Modules<T>(RwLock<HashMap<String, Arc<T>>>);

impl<T> Modules<T> {
    fn new() -> Self {
        Modules(RwLock::new(HashMap::new()))
    }
    fn insert(&self, name: &str, m: T) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), Arc::new(m));
    }
    fn has(&self, name: &str) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).contains_key(name)
    }
    fn get(&self, name: &str) -> Result<Arc<T>, PluginError> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| PluginError::Missing(name.to_owned()))
    }
}

/// The engine plus every loaded component, by name.
pub struct WasmHost {
    engine: Engine,
    ipam: Modules<ipam::bindings::IpamPre<ipam::IpamState>>,
    policy: Modules<policy::bindings::PolicyPre<CallState>>,
    naming: Modules<naming::bindings::NamingPre<CallState>>,
}

/// Store data of a call into a world that imports nothing callable.
pub struct CallState {
    limits: wasmtime::StoreLimits,
}

impl WasmHost {
    /// A fresh store with the sandbox limits and the call deadline.
    fn limited_store(&self) -> wasmtime::Store<CallState> {
        let mut store = wasmtime::Store::new(&self.engine, CallState { limits: limits::store_limits() });
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(limits::CALL_DEADLINE_TICKS);
        store.epoch_deadline_trap();
        store
    }
}

/// Compile `bytes` as a component and pre-instantiate it against `linker`,
/// which defines only what `world` grants: a component importing anything
/// else (any WASI interface, say) is refused here, naming the import.
fn link<T: 'static>(
    engine: &wasmtime::Engine,
    name: &str,
    world: &str,
    bytes: &[u8],
    linker: &wasmtime::component::Linker<T>,
) -> Result<wasmtime::component::InstancePre<T>, PluginError> {
    let load = |reason: String| PluginError::Load { module: name.to_owned(), reason };
    let component = wasmtime::component::Component::new(engine, bytes)
        .map_err(|e| load(format!("not a valid component: {e:#}")))?;
    linker
        .instantiate_pre(&component)
        .map_err(|e| load(format!("imports something the {world} world does not grant: {e:#}")))
}

/// The error for a component that links but does not export its world.
fn wrong_world(name: &str, world: &str, e: wasmtime::Error) -> PluginError {
    PluginError::Load { module: name.to_owned(), reason: format!("does not export the {world} world: {e:#}") }
}

/// A trap or an epoch interruption, as a plugin error.
fn classify(module: &str, e: wasmtime::Error) -> PluginError {
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
        let engine =
            engine::build().map_err(|e| PluginError::Load { module: "(engine)".into(), reason: e.to_string() })?;
        engine::start_ticker(&engine);
        Ok(WasmHost { engine, ipam: Modules::new(), policy: Modules::new(), naming: Modules::new() })
    }

    /// Load every `*.wasm` in `dir` as a built-in, named by file stem. The
    /// world is taken from the name's prefix (`ipam-*`). Returns the names.
    pub fn load_builtin_dir(&self, dir: &Path) -> Result<Vec<String>, PluginError> {
        let entries = std::fs::read_dir(dir).map_err(|e| PluginError::Load {
            module: dir.display().to_string(),
            reason: format!("cannot read the built-in module directory ({e}); run `cargo xtask build-policies`"),
        })?;
        let mut names = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "wasm") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            let bytes =
                std::fs::read(&path).map_err(|e| PluginError::Load { module: name.clone(), reason: e.to_string() })?;
            if name.starts_with("ipam-") {
                self.load_ipam(&name, &bytes)?;
                names.push(name);
            } else if name.starts_with("policy-") {
                self.load_policy(&name, &bytes)?;
                names.push(name);
            } else if name.starts_with("naming-") {
                self.naming.insert(&name, naming::prepare(&self.engine, &name, &bytes)?);
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Compile and link an IPAM component under `name`; returns its sha256.
    pub fn load_ipam(&self, name: &str, bytes: &[u8]) -> Result<String, PluginError> {
        let digest = hex(&Sha256::digest(bytes));
        let pre = ipam::prepare(&self.engine, name, bytes)?;
        self.ipam.insert(name, pre);
        Ok(digest)
    }

    /// Compile and link a policy component under `name`; returns its sha256.
    pub fn load_policy(&self, name: &str, bytes: &[u8]) -> Result<String, PluginError> {
        let digest = hex(&Sha256::digest(bytes));
        let pre = policy::prepare(&self.engine, name, bytes)?;
        self.policy.insert(name, pre);
        Ok(digest)
    }

    /// Whether a policy module called `name` is loaded.
    pub fn has_policy(&self, name: &str) -> bool {
        self.policy.has(name)
    }

    fn policy_module(&self, name: &str) -> Result<Arc<policy::bindings::PolicyPre<CallState>>, PluginError> {
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

    fn ipam_module(&self, name: &str) -> Result<Arc<ipam::bindings::IpamPre<ipam::IpamState>>, PluginError> {
        self.ipam.get(name)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
