//! Tenant modules as the controller records them: a Wasm component a tenant
//! uploaded under a name, for one kind of decision, identified by the sha256
//! of its bytes (which also names its cached, precompiled artefact).

use serde::{Deserialize, Serialize};

/// Most modules one tenant may hold.
pub const MAX_MODULES_PER_TENANT: usize = 64;
/// Default cap on an upload's size: large enough for Python
/// (componentize-py, ~18 MiB seen) and JavaScript (~12 MiB) components.
pub const DEFAULT_MAX_MODULE_BYTES: usize = 32 << 20;

/// One uploaded module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRecord {
    /// Owner.
    pub tenant: String,
    /// Name, unique per tenant.
    pub name: String,
    /// `ipam`, `policy` or `naming`.
    pub kind: String,
    /// sha256 of the component's bytes, hex.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Upload time, seconds since the epoch.
    pub created: u64,
    /// What it imports.
    pub imports: Vec<String>,
    /// What it exports.
    pub exports: Vec<String>,
}

impl ModuleRecord {
    /// The store key: tenant and name.
    pub fn store_key(&self) -> String {
        store_key(&self.tenant, &self.name)
    }
}

/// The store key of a tenant's module.
pub fn store_key(tenant: &str, name: &str) -> String {
    format!("{tenant}\u{0}{name}")
}

/// The key a tenant module is loaded under in the Wasm host. Module names
/// hold no '/', so these never collide with built-in names.
pub fn host_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}
