//! weft's state store: the desired state that reconcile makes the kernel
//! match. One [`Store`] trait; the embedded backend is a redb file (ACID,
//! one write transaction per change), and a cluster backend (etcd) can
//! implement the same trait later.
//!
//! Leases are not stored apart: an endpoint record carries its addresses, so
//! "endpoint deleted" and "lease released" are one write and cannot disagree.
//! Only the IPAM cursor (the last address handed out per pool) is kept
//! beside, so sequential allocation survives a restart.

use std::net::IpAddr;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use weft_model::document::StoredDocument;
use weft_model::endpoint::Endpoint;
use weft_model::module::ModuleRecord;
use weft_model::network::Network;

const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");
const CURSORS: TableDefinition<&str, &str> = TableDefinition::new("ipam_cursors");
const DOCUMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");
const MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("modules");

/// The file name of the embedded database inside `--state-dir`.
pub const DB_FILE: &str = "weft.redb";

/// A store operation failed.
#[derive(Debug, Error)]
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
}

/// Several changes that land in one transaction (a policy change: the
/// documents, the networks whose policy changed and the endpoints whose
/// groups changed).
#[derive(Debug, Default)]
pub struct Batch<'a> {
    /// Networks to insert or replace.
    pub networks: Vec<&'a Network>,
    /// Endpoints to insert or replace.
    pub endpoints: Vec<&'a Endpoint>,
    /// Documents to insert or replace.
    pub put_documents: Vec<&'a StoredDocument>,
    /// Store keys of documents to delete.
    pub delete_documents: Vec<String>,
}

/// Durable desired state.
pub trait Store: Send + Sync {
    /// Everything stored.
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// Insert or replace a network.
    fn put_network(&self, n: &Network) -> Result<(), StoreError>;
    /// Delete a network and its cursors.
    fn delete_network(&self, id: &str) -> Result<(), StoreError>;
    /// Insert or replace an endpoint and update cursors, in one transaction.
    fn put_endpoint(&self, e: &Endpoint, cursors: &[(String, IpAddr)]) -> Result<(), StoreError>;
    /// Delete an endpoint (and so its leases).
    fn delete_endpoint(&self, id: &str) -> Result<(), StoreError>;
    /// Insert or replace a module record.
    fn put_module(&self, m: &ModuleRecord) -> Result<(), StoreError>;
    /// Delete a module record.
    fn delete_module(&self, key: &str) -> Result<(), StoreError>;
    /// Apply every change of `batch` in one transaction.
    fn commit(&self, batch: &Batch<'_>) -> Result<(), StoreError>;
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
            txn.open_table(NETWORKS).map_err(|e| err("init")(&e))?;
            txn.open_table(ENDPOINTS).map_err(|e| err("init")(&e))?;
            txn.open_table(CURSORS).map_err(|e| err("init")(&e))?;
            txn.open_table(DOCUMENTS).map_err(|e| err("init")(&e))?;
            txn.open_table(MODULES).map_err(|e| err("init")(&e))?;
        }
        txn.commit().map_err(|e| err("init")(&e))?;
        Ok(RedbStore { db })
    }

    fn write(
        &self,
        op: &str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| err(op)(&e))?;
        f(&txn).map_err(|e| err(op)(&e))?;
        txn.commit().map_err(|e| err(op)(&e))
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
        Ok(Snapshot { networks, endpoints, cursors, documents, modules })
    }

    fn put_network(&self, n: &Network) -> Result<(), StoreError> {
        self.write("put network", |txn| {
            txn.open_table(NETWORKS)?.insert(n.id.as_str(), encode(n)?.as_slice())?;
            Ok(())
        })
    }

    fn delete_network(&self, id: &str) -> Result<(), StoreError> {
        self.write("delete network", |txn| {
            txn.open_table(NETWORKS)?.remove(id)?;
            let mut cursors = txn.open_table(CURSORS)?;
            let prefix = format!("{id}/");
            cursors.retain(|k, _| !k.starts_with(&prefix))?;
            Ok(())
        })
    }

    fn put_endpoint(&self, e: &Endpoint, cursors: &[(String, IpAddr)]) -> Result<(), StoreError> {
        self.write("put endpoint", |txn| {
            txn.open_table(ENDPOINTS)?.insert(e.id.as_str(), encode(e)?.as_slice())?;
            let mut t = txn.open_table(CURSORS)?;
            for (k, a) in cursors {
                t.insert(k.as_str(), a.to_string().as_str())?;
            }
            Ok(())
        })
    }

    fn delete_endpoint(&self, id: &str) -> Result<(), StoreError> {
        self.write("delete endpoint", |txn| {
            txn.open_table(ENDPOINTS)?.remove(id)?;
            Ok(())
        })
    }

    fn put_module(&self, m: &ModuleRecord) -> Result<(), StoreError> {
        self.write("put module", |txn| {
            txn.open_table(MODULES)?.insert(m.store_key().as_str(), encode(m)?.as_slice())?;
            Ok(())
        })
    }

    fn delete_module(&self, key: &str) -> Result<(), StoreError> {
        self.write("delete module", |txn| {
            txn.open_table(MODULES)?.remove(key)?;
            Ok(())
        })
    }

    fn commit(&self, batch: &Batch<'_>) -> Result<(), StoreError> {
        self.write("commit", |txn| {
            let mut t = txn.open_table(NETWORKS)?;
            for n in &batch.networks {
                t.insert(n.id.as_str(), encode(n)?.as_slice())?;
            }
            let mut t = txn.open_table(ENDPOINTS)?;
            for e in &batch.endpoints {
                t.insert(e.id.as_str(), encode(e)?.as_slice())?;
            }
            let mut t = txn.open_table(DOCUMENTS)?;
            for k in &batch.delete_documents {
                t.remove(k.as_str())?;
            }
            for d in &batch.put_documents {
                t.insert(d.store_key().as_str(), encode(d)?.as_slice())?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
