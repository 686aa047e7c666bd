//! Tenant modules: upload, list, inspect, remove, and which component a
//! network's module name means.
//!
//! An upload is checked at the edge (name, kind, size cap, a component and
//! not a core module), then compiled once by a resource-limited worker
//! process ([`crate::worker`]) into `<state-dir>/modules/<sha256>.cwasm`,
//! beside the source `<sha256>.wasm`. The artefact is loaded (the host
//! re-checks the world and links only what it grants) and the record stored.
//! The same bytes uploaded again, by anyone, reuse the artefact; after a
//! restart artefacts are loaded without compiling, and recompiled from the
//! source only if this wasmtime refuses them. Compiles run one at a time and
//! never under a lock an API call needs.
//!
//! Tenancy: a tenant sees and binds its own modules and the built-ins; any
//! other tenant's module name is simply not found.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tracing::{info, warn};
use weft_model::api::{ModuleView, Ref, UploadModule};
use weft_model::event::{Event, EventKind};
use weft_model::module::{MAX_MODULES_PER_TENANT, ModuleRecord, host_key, store_key};
use weft_model::network::validate_module_name;
use weft_model::{ControlError, InvalidRequest, Tenant};
use weft_wasm::{Kind, WasmHost, check_header};

use crate::change::Change;
use crate::config::Config;
use crate::decide::Decider;
use crate::index::{Index, State};

/// The tenant modules: files, compilation and the Wasm host they load into.
pub struct Modules {
    /// Files and compile bounds.
    pub files: ModuleFiles,
    /// The Wasm host (None in unit tests: no uploads).
    pub wasm: Option<Arc<WasmHost>>,
}

/// What an upload decided.
pub enum Upload {
    /// The same bytes are already there under that name: nothing to do.
    Existing(ModuleRecord),
    /// A new module, loaded into the Wasm host; the change records it.
    New(ModuleRecord, Box<Change>),
}

/// Where uploads are kept and how they are compiled.
pub struct ModuleFiles {
    /// `<state-dir>/modules`.
    pub dir: PathBuf,
    /// Upload cap in bytes.
    pub max_bytes: usize,
    timeout: Duration,
    memory_mib: u64,
    /// One compile at a time: a burst of uploads queues instead of taking
    /// every core from the API.
    slots: tokio::sync::Semaphore,
}

impl ModuleFiles {
    /// From weftd's flags.
    pub fn new(cfg: &Config) -> std::io::Result<ModuleFiles> {
        let dir = cfg.state_dir.join("modules");
        std::fs::create_dir_all(&dir)?;
        Ok(ModuleFiles {
            dir,
            max_bytes: cfg.module_max_bytes,
            timeout: Duration::from_secs(cfg.compile_timeout_secs),
            memory_mib: cfg.compile_memory_mib,
            slots: tokio::sync::Semaphore::new(1),
        })
    }

    /// Files under `dir` with the default bounds (unit tests).
    #[cfg(test)]
    pub fn at(dir: PathBuf) -> ModuleFiles {
        ModuleFiles {
            dir,
            max_bytes: weft_model::module::DEFAULT_MAX_MODULE_BYTES,
            timeout: Duration::from_secs(5),
            memory_mib: 512,
            slots: tokio::sync::Semaphore::new(1),
        }
    }

    fn source(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.wasm"))
    }

    /// The precompiled artefact of `digest`.
    pub fn artefact(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// Compile `digest`'s source into its artefact in the worker, bounded
    /// in wall-clock time, CPU time and address space.
    async fn compile(&self, kind: Kind, digest: &str) -> Result<(), String> {
        self.compile_file(kind, &self.source(digest), &self.artefact(digest)).await
    }

    /// Compile the component at `source` into `out` in the worker.
    async fn compile_file(&self, kind: Kind, source: &Path, out: &Path) -> Result<(), String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let tmp = out.with_extension(format!("cwasm.{}", std::process::id()));
        let exe = std::env::current_exe().map_err(|e| format!("finding weftd's binary: {e}"))?;
        let child = tokio::process::Command::new(exe)
            .arg(crate::worker::ARG)
            .arg(kind.as_str())
            .arg(source)
            .arg(&tmp)
            .arg(self.memory_mib.to_string())
            // CPU seconds over all compile threads: twice the wall clock.
            .arg((self.timeout.as_secs() * 2).max(1).to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting the compile worker: {e}"))?;
        let result = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => Err(format!(
                "compiling took longer than {} s (weftd --compile-timeout-secs) and was stopped",
                self.timeout.as_secs()
            )),
            Ok(Err(e)) => Err(format!("waiting for the compile worker: {e}")),
            Ok(Ok(o)) if o.status.success() => Ok(()),
            Ok(Ok(o)) => {
                use std::os::unix::process::ExitStatusExt;
                let said = String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").trim().to_owned();
                Err(match o.status.signal() {
                    Some(24) => "compiling ran out of CPU time and was stopped".to_owned(),
                    Some(sig) => format!(
                        "the compile worker died (signal {sig}) — most likely past its {} MiB memory limit \
                         (weftd --compile-memory-mib){}",
                        self.memory_mib,
                        if said.is_empty() { String::new() } else { format!(": {said}") }
                    ),
                    None if said.contains("memory allocation") || said.contains("out of memory") => {
                        format!("compiling needs more than {} MiB (weftd --compile-memory-mib)", self.memory_mib)
                    }
                    None => said,
                })
            }
        };
        match result {
            Ok(()) => std::fs::rename(&tmp, out).map_err(|e| format!("storing the artefact: {e}")),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// The sha256 of `bytes`, hex: a module's identity and artefact name.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn kind_of(r: &ModuleRecord) -> Kind {
    Kind::parse(&r.kind).unwrap_or(Kind::Ipam)
}

/// Write `bytes` to `path` via a temporary file, so a crash leaves either
/// nothing or the whole file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

impl Modules {
    fn wasm(&self) -> Result<&WasmHost, ControlError> {
        self.wasm.as_deref().ok_or_else(|| ControlError::FailedPrecondition("modules are not available".into()))
    }

    /// Load every stored module's artefact (recompiling any this wasmtime
    /// refuses); returns the ones that loaded. A module that cannot be
    /// loaded is reported and skipped.
    pub async fn load(&self, records: Vec<ModuleRecord>) -> Vec<ModuleRecord> {
        let Ok(wasm) = self.wasm() else { return Vec::new() };
        let mut out = Vec::new();
        for r in records {
            let kind = kind_of(&r);
            let key = host_key(&r.tenant, &r.name);
            let art = self.files.artefact(&r.digest);
            let loaded = match wasm.load_precompiled(kind, &key, &art) {
                Ok(_) => {
                    info!(tenant = %r.tenant, module = %r.name, digest = %r.digest, "module loaded from its artefact");
                    Ok(())
                }
                Err(e) => {
                    warn!(module = %r.name, error = %e, "artefact not loadable; compiling the source again");
                    match self.files.compile(kind, &r.digest).await {
                        Ok(()) => wasm.load_precompiled(kind, &key, &art).map(|_| ()).map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    }
                }
            };
            match loaded {
                Ok(()) => out.push(r),
                Err(e) => warn!(tenant = %r.tenant, module = %r.name, error = %e, "module could not be loaded"),
            }
        }
        out
    }

    /// Validate, compile and load an upload (the caller holds the tenant's
    /// modules lock); the change records it.
    pub async fn upload(&self, index: &Index, decider: &Decider, req: &UploadModule) -> Result<Upload, ControlError> {
        let tenant = Tenant::parse("tenant", &req.tenant)?;
        validate_module_name("name", &req.name)?;
        let kind = Kind::parse(&req.kind).ok_or_else(|| {
            InvalidRequest::new("kind", format!("kind {:?} must be ipam, policy or naming", req.kind))
        })?;
        if decider.is_builtin(&req.name) {
            return Err(ControlError::AlreadyExists(format!(
                "{:?} is a built-in module; choose another name",
                req.name
            )));
        }
        if req.bytes.len() > self.files.max_bytes {
            return Err(InvalidRequest::new(
                "module",
                format!(
                    "{} bytes is over the {}-byte limit (weftd --module-max-bytes)",
                    req.bytes.len(),
                    self.files.max_bytes
                ),
            )
            .into());
        }
        let refuse = |why: String| ControlError::from(InvalidRequest::new("module", format!("{:?}: {why}", req.name)));
        check_header(&req.bytes).map_err(refuse)?;
        let digest = sha256_hex(&req.bytes);
        let skey = store_key(tenant.as_str(), &req.name);
        let existing = index.read(|st| -> Result<Option<ModuleRecord>, ControlError> {
            if let Some(have) = st.modules.get(&skey) {
                if have.digest == digest && have.kind == kind.as_str() {
                    return Ok(Some(have.clone()));
                }
                return Err(ControlError::AlreadyExists(format!(
                    "module {:?} already exists ({} module, sha256 {}); remove it first",
                    req.name, have.kind, have.digest
                )));
            }
            let held = st.modules.values().filter(|m| m.tenant == tenant.as_str()).count();
            if held >= MAX_MODULES_PER_TENANT {
                return Err(ControlError::Exhausted(format!(
                    "tenant {:?} already holds {held} modules (at most {MAX_MODULES_PER_TENANT})",
                    tenant.as_str()
                )));
            }
            Ok(None)
        })?;
        if let Some(have) = existing {
            return Ok(Upload::Existing(have));
        }
        if req.dry_run {
            return self.dry_upload(tenant.as_str(), kind, &digest, req).await.map_err(refuse);
        }
        let wasm = self.wasm()?;
        let source = self.files.source(&digest);
        if !source.exists() {
            write_atomic(&source, &req.bytes)
                .map_err(|e| ControlError::Internal(format!("storing module {:?}: {e}", req.name)))?;
        }
        let art = self.files.artefact(&digest);
        if !art.exists()
            && let Err(e) = self.files.compile(kind, &digest).await
        {
            self.forget_files_if_unused(index, &digest);
            return Err(refuse(e));
        }
        let key = host_key(tenant.as_str(), &req.name);
        let info = match wasm.load_precompiled(kind, &key, &art) {
            Ok(info) => info,
            Err(e) => {
                self.forget_files_if_unused(index, &digest);
                return Err(refuse(match e {
                    weft_wasm::PluginError::Load { reason, .. } => reason,
                    other => other.to_string(),
                }));
            }
        };
        let record = ModuleRecord {
            tenant: tenant.to_string(),
            name: req.name.clone(),
            kind: kind.as_str().to_owned(),
            digest,
            size: req.bytes.len() as u64,
            created: now(),
            imports: info.imports,
            exports: info.exports,
        };
        let change = upload_change(&record);
        Ok(Upload::New(record, Box::new(change)))
    }

    /// A dry-run upload: compiled (the world checked) by the worker into a
    /// scratch file that is removed again; nothing is stored or loaded.
    async fn dry_upload(&self, tenant: &str, kind: Kind, digest: &str, req: &UploadModule) -> Result<Upload, String> {
        let scratch = self.files.dir.join(format!("dry-run.{}.{digest}", std::process::id()));
        let (src, out) = (scratch.with_extension("wasm"), scratch.with_extension("cwasm"));
        write_atomic(&src, &req.bytes).map_err(|e| format!("staging the module: {e}"))?;
        let compiled = self.files.compile_file(kind, &src, &out).await;
        let _ = std::fs::remove_file(&src);
        let _ = std::fs::remove_file(&out);
        compiled?;
        let record = ModuleRecord {
            tenant: tenant.to_owned(),
            name: req.name.clone(),
            kind: kind.as_str().to_owned(),
            digest: digest.to_owned(),
            size: req.bytes.len() as u64,
            created: now(),
            imports: Vec::new(),
            exports: vec![kind.world()],
        };
        Ok(Upload::New(record.clone(), Box::new(upload_change(&record))))
    }

    /// An upload whose commit failed: unload it and drop its files.
    pub fn abort_upload(&self, index: &Index, record: &ModuleRecord) {
        if let Some(w) = &self.wasm {
            w.remove(kind_of(record), &host_key(&record.tenant, &record.name));
        }
        self.forget_files_if_unused(index, &record.digest);
    }

    /// Decide `weft module rm`: refused while a network is bound to it.
    pub fn remove(&self, index: &Index, decider: &Decider, r: &Ref) -> Result<(ModuleRecord, Change), ControlError> {
        let tenant = Tenant::parse("tenant", &r.tenant)?;
        if decider.is_builtin(&r.name) {
            return Err(ControlError::FailedPrecondition(format!(
                "{:?} is a built-in module and cannot be removed",
                r.name
            )));
        }
        let skey = store_key(tenant.as_str(), &r.name);
        let record = index.read(|st| st.modules.get(&skey).cloned()).ok_or_else(|| {
            ControlError::NotFound(format!("module {:?} not found for tenant {:?}", r.name, tenant.as_str()))
        })?;
        let bound = index.read(|st| bound_to(st, &record.name, tenant.as_str()));
        if !bound.is_empty() {
            return Err(ControlError::FailedPrecondition(format!(
                "module {:?} is bound to network(s) {}; remove or update them first",
                r.name,
                bound.join(", ")
            )));
        }
        let mut change = Change::new(format!("removing module {:?}", r.name));
        change.batch.delete_modules.push(skey);
        change.events.push(Event::new(EventKind::ModuleRemoved, tenant.as_str(), "", &r.name));
        change.guards.push(crate::change::Guard::ModuleUnbound(tenant.to_string(), r.name.clone()));
        Ok((record, change))
    }

    /// After a removal committed: unload it and drop unused files.
    pub fn finish_remove(&self, index: &Index, record: &ModuleRecord) {
        self.abort_upload(index, record);
        info!(tenant = %record.tenant, module = %record.name, "module removed");
    }

    /// Remove `digest`'s files unless another record uses them.
    fn forget_files_if_unused(&self, index: &Index, digest: &str) {
        if !index.read(|st| st.modules.values().any(|m| m.digest == digest)) {
            let _ = std::fs::remove_file(self.files.source(digest));
            let _ = std::fs::remove_file(self.files.artefact(digest));
        }
    }
}

/// The change that records an uploaded module.
fn upload_change(record: &ModuleRecord) -> Change {
    let mut change = Change::new(format!("uploading module {:?}", record.name));
    change.batch.put_modules.push(record.clone());
    change.events.push(
        Event::new(EventKind::ModuleUploaded, &record.tenant, "", &record.name)
            .with_message(format!("{} module sha256:{}", record.kind, record.digest)),
    );
    change
}

/// The networks of `tenant` bound to module `name` (committed or being made).
pub fn bound_to(st: &State, name: &str, tenant: &str) -> Vec<String> {
    let mut v: Vec<String> = st
        .all_networks()
        .filter(|n| {
            n.spec.tenant.as_str() == tenant
                && [&n.spec.ipam, &n.spec.policy, &n.spec.naming].iter().any(|m| **m == name)
        })
        .map(|n| n.spec.name.to_string())
        .collect();
    v.sort();
    v
}

/// A module with the networks of `tenant` bound to it.
pub fn view(st: &State, r: ModuleRecord, builtin: bool, tenant: &str) -> ModuleView {
    let bound_to = bound_to(st, &r.name, tenant);
    ModuleView { record: r, builtin, bound_to }
}

/// `weft module ls`: the tenant's modules, then the built-ins.
pub fn list(st: &State, builtins: &[ModuleRecord], tenant: &str) -> Result<Vec<ModuleView>, ControlError> {
    let tenant = Tenant::parse("tenant", tenant)?;
    let mine: Vec<ModuleRecord> = st.modules.values().filter(|m| m.tenant == tenant.as_str()).cloned().collect();
    let mut out: Vec<ModuleView> = mine.into_iter().map(|r| view(st, r, false, tenant.as_str())).collect();
    out.extend(builtins.iter().cloned().map(|r| view(st, r, true, tenant.as_str())));
    Ok(out)
}

/// `weft module inspect`.
pub fn get(st: &State, builtins: &[ModuleRecord], r: &Ref) -> Result<ModuleView, ControlError> {
    let tenant = Tenant::parse("tenant", &r.tenant)?;
    list(st, builtins, tenant.as_str())?.into_iter().find(|v| v.record.name == r.name).ok_or_else(|| {
        ControlError::NotFound(format!("module {:?} not found for tenant {:?}", r.name, tenant.as_str()))
    })
}

/// The built-in components in `dir`, loaded into `wasm`, as records.
pub fn load_builtins(wasm: &WasmHost, dir: &Path) -> Result<Vec<ModuleRecord>, weft_wasm::PluginError> {
    Ok(wasm
        .load_builtin_dir(dir)?
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
        .collect())
}
