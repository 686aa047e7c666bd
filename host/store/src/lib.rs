//! weft's state store: the desired state that reconcile makes the kernel
//! match. One [`Store`] trait with one write, [`Store::commit`]: every
//! change lands as ONE transaction of a [`Batch`] that also carries the
//! commit's revision and its events, so "what changed" and "which events
//! say so" cannot disagree and the revision survives restarts. The embedded
//! backend is a redb file (ACID). In cluster mode what the nodes share
//! (nodes, overlay networks, their endpoints and leases) is also written to
//! etcd ([`etcd`]) by one compare-and-swap transaction per change.
//!
//! Leases are not stored apart: an endpoint record carries its addresses, so
//! "endpoint deleted" and "lease released" are one write and cannot disagree.
//! Only the IPAM cursor (the last address handed out per pool) is kept
//! beside, so sequential allocation survives a restart.

pub mod etcd;
pub mod mem;

use std::net::IpAddr;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use weft_model::document::StoredDocument;
use weft_model::endpoint::Endpoint;
use weft_model::event::Event;
use weft_model::module::ModuleRecord;
use weft_model::network::Network;

const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");
const CURSORS: TableDefinition<&str, &str> = TableDefinition::new("ipam_cursors");
const DOCUMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");
const MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("modules");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The key of the last committed revision in `META`.
const REVISION: &str = "revision";

/// The file name of the embedded database inside `--state-dir`.
pub const DB_FILE: &str = "weft.redb";

/// A store operation failed.
#[derive(Debug, Clone, Error)]
#[error("state store: {op}: {reason}")]
pub struct StoreError {
    /// What was being done.
    pub op: String,
    /// Why it failed.
    pub reason: String,
}

fn err(op: &str) -> impl Fn(&dyn std::fmt::Display) -> StoreError + '_ {
    move |e| StoreError { op: op.to_owned(), reason: e.to_string() }
}

/// Everything stored, as loaded at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// All networks.
    pub networks: Vec<Network>,
    /// All endpoints (pending and ready).
    pub endpoints: Vec<Endpoint>,
    /// IPAM cursors: (`network-id/pool`, last address).
    pub cursors: Vec<(String, IpAddr)>,
    /// Every tenant's policy documents.
    pub documents: Vec<StoredDocument>,
    /// Every tenant's uploaded modules.
    pub modules: Vec<ModuleRecord>,
    /// The last committed revision (0: nothing committed yet).
    pub revision: u64,
    /// The retained events, oldest first.
    pub events: Vec<Event>,
}

/// Everything one change writes, in one transaction.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Networks to insert or replace.
    pub put_networks: Vec<Network>,
    /// Ids of networks to delete (with their cursors).
    pub delete_networks: Vec<String>,
    /// Endpoints to insert or replace.
    pub put_endpoints: Vec<Endpoint>,
    /// Ids of endpoints to delete (and so their leases).
    pub delete_endpoints: Vec<String>,
    /// IPAM cursors to set.
    pub cursors: Vec<(String, IpAddr)>,
    /// Documents to insert or replace.
    pub put_documents: Vec<StoredDocument>,
    /// Store keys of documents to delete.
    pub delete_documents: Vec<String>,
    /// Module records to insert or replace.
    pub put_modules: Vec<ModuleRecord>,
    /// Store keys of module records to delete.
    pub delete_modules: Vec<String>,
    /// The commit's revision (recorded if set).
    pub revision: Option<u64>,
    /// The commit's events (numbered already).
    pub events: Vec<Event>,
    /// Drop retained events with a revision below this.
    pub trim_events_below: Option<u64>,
}

impl Batch {
    /// True if it writes no object (events and revision aside).
    pub fn writes_nothing(&self) -> bool {
        self.put_networks.is_empty()
            && self.delete_networks.is_empty()
            && self.put_endpoints.is_empty()
            && self.delete_endpoints.is_empty()
            && self.cursors.is_empty()
            && self.put_documents.is_empty()
            && self.delete_documents.is_empty()
            && self.put_modules.is_empty()
            && self.delete_modules.is_empty()
    }

    /// One line per write, as a dry run shows them.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.put_networks.iter().map(|n| format!("put network {}/{}", n.spec.tenant, n.spec.name)));
        out.extend(self.delete_networks.iter().map(|id| format!("delete network {id}")));
        out.extend(
            self.put_endpoints
                .iter()
                .map(|e| format!("put endpoint {}/{}/{} ({:?})", e.spec.tenant, e.spec.network, e.spec.name, e.state)),
        );
        out.extend(self.delete_endpoints.iter().map(|id| format!("delete endpoint {id}")));
        out.extend(self.cursors.iter().map(|(k, a)| format!("put ipam cursor {k} = {a}")));
        out.extend(self.put_documents.iter().map(|d| format!("put document {}", d.store_key())));
        out.extend(self.delete_documents.iter().map(|k| format!("delete document {k}")));
        out.extend(self.put_modules.iter().map(|m| format!("put module {}", m.store_key())));
        out.extend(self.delete_modules.iter().map(|k| format!("delete module {k}")));
        if !self.events.is_empty() || !out.is_empty() {
            out.push("put revision (next) and its events".to_owned());
        }
        out
    }
}

/// Durable desired state.
pub trait Store: Send + Sync {
    /// Everything stored.
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// Apply every write of `batch` in one transaction.
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.commit_all(std::slice::from_ref(batch))
    }
    /// Apply `batches` in order, all in one transaction (group commit).
    fn commit_all(&self, batches: &[Batch]) -> Result<(), StoreError>;
}

/// The embedded redb store.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| err("create state dir")(&format!("{}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| err("open")(&format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(|e| err("init")(&e))?;
        {
            for t in [NETWORKS, ENDPOINTS, DOCUMENTS, MODULES] {
                txn.open_table(t).map_err(|e| err("init")(&e))?;
            }
            txn.open_table(CURSORS).map_err(|e| err("init")(&e))?;
            txn.open_table(EVENTS).map_err(|e| err("init")(&e))?;
            txn.open_table(META).map_err(|e| err("init")(&e))?;
        }
        txn.commit().map_err(|e| err("init")(&e))?;
        Ok(RedbStore { db })
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, redb::Error> {
    serde_json::to_vec(v).map_err(|e| redb::Error::Corrupted(e.to_string()))
}

fn decode_all<T: DeserializeOwned>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<&str, &[u8]>,
) -> Result<Vec<T>, StoreError> {
    let table = txn.open_table(def).map_err(|e| err("load")(&e))?;
    let mut out = Vec::new();
    for row in table.iter().map_err(|e| err("load")(&e))? {
        let (k, v) = row.map_err(|e| err("load")(&e))?;
        let item = serde_json::from_slice(v.value()).map_err(|e| err("decode")(&format!("{}: {e}", k.value())))?;
        out.push(item);
    }
    Ok(out)
}

fn write_batch(txn: &redb::WriteTransaction, batch: &Batch) -> Result<(), redb::Error> {
    let mut t = txn.open_table(NETWORKS)?;
    for n in &batch.put_networks {
        t.insert(n.id.as_str(), encode(n)?.as_slice())?;
    }
    for id in &batch.delete_networks {
        t.remove(id.as_str())?;
    }
    let mut cursors = txn.open_table(CURSORS)?;
    for id in &batch.delete_networks {
        let prefix = format!("{id}/");
        cursors.retain(|k, _| !k.starts_with(&prefix))?;
    }
    for (k, a) in &batch.cursors {
        cursors.insert(k.as_str(), a.to_string().as_str())?;
    }
    let mut t = txn.open_table(ENDPOINTS)?;
    for e in &batch.put_endpoints {
        t.insert(e.id.as_str(), encode(e)?.as_slice())?;
    }
    for id in &batch.delete_endpoints {
        t.remove(id.as_str())?;
    }
    let mut t = txn.open_table(DOCUMENTS)?;
    for k in &batch.delete_documents {
        t.remove(k.as_str())?;
    }
    for d in &batch.put_documents {
        t.insert(d.store_key().as_str(), encode(d)?.as_slice())?;
    }
    let mut t = txn.open_table(MODULES)?;
    for k in &batch.delete_modules {
        t.remove(k.as_str())?;
    }
    for m in &batch.put_modules {
        t.insert(m.store_key().as_str(), encode(m)?.as_slice())?;
    }
    let mut t = txn.open_table(EVENTS)?;
    for e in &batch.events {
        t.insert(e.revision, encode(e)?.as_slice())?;
    }
    if let Some(below) = batch.trim_events_below {
        // Only the range dropped is visited, not every retained event.
        t.retain_in(..below, |_, _| false)?;
    }
    if let Some(rev) = batch.revision {
        txn.open_table(META)?.insert(REVISION, rev)?;
    }
    Ok(())
}

impl Store for RedbStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(|e| err("load")(&e))?;
        let networks = decode_all(&txn, NETWORKS)?;
        let endpoints = decode_all(&txn, ENDPOINTS)?;
        let documents = decode_all(&txn, DOCUMENTS)?;
        let modules = decode_all(&txn, MODULES)?;
        let table = txn.open_table(CURSORS).map_err(|e| err("load")(&e))?;
        let mut cursors = Vec::new();
        for row in table.iter().map_err(|e| err("load")(&e))? {
            let (k, v) = row.map_err(|e| err("load")(&e))?;
            if let Ok(a) = v.value().parse() {
                cursors.push((k.value().to_owned(), a));
            }
        }
        let table = txn.open_table(EVENTS).map_err(|e| err("load")(&e))?;
        let mut events = Vec::new();
        for row in table.iter().map_err(|e| err("load")(&e))? {
            let (k, v) = row.map_err(|e| err("load")(&e))?;
            let e: Event =
                serde_json::from_slice(v.value()).map_err(|e| err("decode")(&format!("event {}: {e}", k.value())))?;
            events.push(e);
        }
        let meta = txn.open_table(META).map_err(|e| err("load")(&e))?;
        let revision = meta.get(REVISION).map_err(|e| err("load")(&e))?.map(|v| v.value()).unwrap_or(0);
        Ok(Snapshot { networks, endpoints, cursors, documents, modules, revision, events })
    }

    fn commit_all(&self, batches: &[Batch]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| err("commit")(&e))?;
        for batch in batches {
            write_batch(&txn, batch).map_err(|e| err("commit")(&e))?;
        }
        txn.commit().map_err(|e| err("commit")(&e))
    }
}

#[cfg(test)]
mod tests;
