//! The cluster store: what the nodes of a cluster share, in etcd (v3 API).
//! A node's own objects stay in its redb ([`crate::RedbStore`]) so that
//! bridge networks keep working when etcd is away; what a cluster shares —
//! nodes, overlay networks, their endpoints and address leases — lives here
//! under one prefix ([`keys`]), written only by compare-and-swap
//! transactions ([`Txn`]) and read back by one ordered watch.
//!
//! Every call is bounded by the client's timeout, and a failure names etcd,
//! so an overlay change with etcd away fails fast as unavailable instead of
//! hanging.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, TxnOp, TxnOpResponse, WatchOptions,
};
use thiserror::Error;

/// The key layout, all under [`keys::ROOT`] (documented in docs/cluster.md).
pub mod keys {
    /// Every key weft writes starts with this.
    pub const ROOT: &str = "/weft/v1/";
    /// Live nodes, one key each, attached to the node's etcd lease.
    pub const NODES: &str = "/weft/v1/nodes/";
    /// Known nodes (kept when a node's lease expires; `weft node rm`).
    pub const MEMBERS: &str = "/weft/v1/members/";
    /// Overlay networks by id.
    pub const NETWORKS: &str = "/weft/v1/networks/";
    /// Bumped by every overlay network create and delete: a create compares
    /// it, so two overlapping subnets cannot be created at once.
    pub const NETWORK_EPOCH: &str = "/weft/v1/network-epoch";
    /// Overlay endpoints by network id and endpoint id.
    pub const ENDPOINTS: &str = "/weft/v1/endpoints/";
    /// Address leases by network id and address (value: endpoint id).
    pub const LEASES: &str = "/weft/v1/leases/";

    /// A live node's key.
    pub fn node(name: &str) -> String {
        format!("{NODES}{name}")
    }
    /// A known node's key.
    pub fn member(name: &str) -> String {
        format!("{MEMBERS}{name}")
    }
    /// An overlay network's key.
    pub fn network(id: &str) -> String {
        format!("{NETWORKS}{id}")
    }
    /// A network name's key: which network a tenant's name is.
    pub fn network_name(tenant: &str, name: &str) -> String {
        format!("/weft/v1/network-names/{tenant}/{name}")
    }
    /// A VNI's key: which network holds it.
    pub fn vni(vni: u32) -> String {
        format!("/weft/v1/vnis/{vni}")
    }
    /// An overlay endpoint's key.
    pub fn endpoint(network_id: &str, id: &str) -> String {
        format!("{ENDPOINTS}{network_id}/{id}")
    }
    /// An endpoint name's key: which endpoint holds a name on a network.
    pub fn endpoint_name(network_id: &str, name: &str) -> String {
        format!("/weft/v1/endpoint-names/{network_id}/{name}")
    }
    /// Policy documents applied to overlay networks.
    pub const DOCUMENTS: &str = "/weft/v1/documents/";
    /// A shared document's key.
    pub fn document(tenant: &str, kind: &str, namespace: &str, name: &str) -> String {
        format!("{DOCUMENTS}{tenant}/{kind}/{namespace}/{name}")
    }
    /// An address lease's key.
    pub fn lease(network_id: &str, addr: std::net::IpAddr) -> String {
        format!("{LEASES}{network_id}/{addr}")
    }
}

/// A cluster store call failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// etcd could not be reached or did not answer in time.
    #[error("etcd is unavailable ({0})")]
    Unavailable(String),
    /// A transaction's comparisons failed: someone else wrote first. Every
    /// compared key as it is now (None: absent).
    #[error("a concurrent change in etcd won")]
    Conflict(Vec<(String, Option<Kv>)>),
    /// etcd refused the request.
    #[error("etcd refused the request: {0}")]
    Refused(String),
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmp {
    /// The key does not exist.
    Absent(String),
    /// The key was last written at this revision.
    ModRevision(String, i64),
}

impl Cmp {
    fn key(&self) -> &str {
        match self {
            Cmp::Absent(k) | Cmp::ModRevision(k, _) => k,
        }
    }
}

/// A compare-and-swap transaction: if every comparison holds, the puts and
/// deletes, atomically; else nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// What must hold.
    pub compares: Vec<Cmp>,
    /// Keys to write.
    pub puts: Vec<(String, Vec<u8>)>,
    /// Keys to delete.
    pub deletes: Vec<String>,
}

impl Txn {
    /// True if it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }

    /// One line per write, as a dry run shows them.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self.compares.iter().map(|c| format!("etcd: if {c:?}")).collect();
        out.extend(self.puts.iter().map(|(k, _)| format!("etcd: put {k}")));
        out.extend(self.deletes.iter().map(|k| format!("etcd: delete {k}")));
        out
    }
}

/// One key as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
    /// The revision it was last written at.
    pub mod_revision: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A key was written.
    Put(Kv),
    /// A key was deleted; its last value (if etcd still had it).
    Delete(String, Option<Vec<u8>>),
}

/// What a watch delivers.
#[derive(Debug)]
pub enum WatchItem {
    /// Changes, in revision order, and the revision they bring the view to.
    Changes(Vec<Seen>, i64),
    /// The watch fell behind a compaction: re-list.
    Compacted,
}

/// The cluster store: what the nodes of a cluster share. Two
/// implementations: [`Etcd`], and [`crate::mem::MemCluster`] in memory (the
/// controller's unit tests run a cluster of fake-kernel nodes on it).
#[async_trait::async_trait]
pub trait ClusterStore: Send + Sync {
    /// Run `t`. Its revision if it committed; on a failed comparison
    /// [`ClusterError::Conflict`] with the compared keys as they are now.
    async fn txn(&self, t: &Txn) -> Result<i64, ClusterError>;
    /// Every key under `prefix`, and the revision of the read.
    async fn list(&self, prefix: &str) -> Result<(Vec<Kv>, i64), ClusterError>;
    /// Grant a lease of `ttl` and put `key` under it; the lease's id.
    async fn put_leased(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<i64, ClusterError>;
    /// Put `key` (no lease).
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), ClusterError>;
    /// Refresh lease `id` once; false if it has expired.
    async fn keep_alive(&self, id: i64) -> Result<bool, ClusterError>;
    /// Revoke lease `id` (its keys go).
    async fn revoke(&self, id: i64) -> Result<(), ClusterError>;
    /// Send everything under `prefix` from revision `from` (inclusive) to
    /// `tx` until the watch breaks or `tx` is closed.
    async fn watch(
        &self,
        prefix: &str,
        from: i64,
        tx: &tokio::sync::mpsc::Sender<WatchItem>,
    ) -> Result<(), ClusterError>;
}

/// A connection to an etcd cluster (cheap to clone): one client per
/// member, so a member that is down is passed over for the next instead of
/// failing a share of the calls.
#[derive(Clone)]
pub struct Etcd {
    clients: Arc<Vec<(String, Client)>>,
    /// The member the last call succeeded on, tried first.
    at: Arc<AtomicUsize>,
    timeout: Duration,
}

fn kv_of(kv: &etcd_client::KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    }
}

fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

/// A failure in a few words: the innermost cause (`Connection refused`),
/// not the whole chain of wrappers.
fn short(e: &etcd_client::Error) -> String {
    let Some(mut cause) = std::error::Error::source(e) else {
        return match e {
            etcd_client::Error::GRpcStatus(s) => s.message().to_owned(),
            _ => e.to_string(),
        };
    };
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Whether a failed call never took effect and may go to another member:
/// the member could not be reached, or it could not serve (no leader).
fn passes_over(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

impl Etcd {
    /// Connect to `endpoints` (`http://IP:PORT`). Lazy: etcd may be down
    /// now; every call is bounded by `timeout`, whatever the members do.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Etcd, ClusterError> {
        let mut clients = Vec::new();
        for e in endpoints {
            let opts = ConnectOptions::new()
                .with_connect_timeout(timeout)
                .with_timeout(timeout)
                .with_keep_alive(Duration::from_secs(2), timeout);
            let client =
                Client::connect([e.as_str()], Some(opts)).await.map_err(|err| unavailable(format!("{e}: {err}")))?;
            clients.push((e.clone(), client));
        }
        if clients.is_empty() {
            return Err(ClusterError::Refused("no etcd endpoint given".into()));
        }
        Ok(Etcd { clients: Arc::new(clients), at: Arc::default(), timeout })
    }

    /// Run `f` on a member, starting with the last good one and passing
    /// over members that cannot serve, all within the timeout.
    async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, ClusterError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        let n = self.clients.len();
        let start = self.at.load(Ordering::Relaxed);
        let mut why = Vec::new();
        for k in 0..n {
            let i = (start + k) % n;
            let (endpoint, client) = &self.clients[i];
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // A member that hangs gets its share of the time, not all of it.
            let share = left / u32::try_from(n - k).unwrap_or(1);
            match tokio::time::timeout(share, f(client.clone())).await {
                Ok(Ok(v)) => {
                    self.at.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.code() == tonic::Code::InvalidArgument => {
                    return Err(ClusterError::Refused(format!("{what}: {}", s.message())));
                }
                Ok(Err(e)) if passes_over(&e) => why.push(format!("{endpoint}: {}", short(&e))),
                Ok(Err(e)) => return Err(unavailable(format!("{what}: {endpoint}: {}", short(&e)))),
                Err(_) => why.push(format!("{endpoint}: no answer in {} ms", share.as_millis())),
            }
        }
        Err(unavailable(format!("{what}: {}", why.join("; "))))
    }
}

#[async_trait::async_trait]
impl ClusterStore for Etcd {
    /// Run `t`. Its revision if it committed; on a failed comparison the
    /// current values of the compared keys.
    async fn txn(&self, t: &Txn) -> Result<i64, ClusterError> {
        let compares: Vec<Compare> = t
            .compares
            .iter()
            .map(|c| match c {
                Cmp::Absent(k) => Compare::create_revision(k.as_bytes(), CompareOp::Equal, 0),
                Cmp::ModRevision(k, r) => Compare::mod_revision(k.as_bytes(), CompareOp::Equal, *r),
            })
            .collect();
        let mut then: Vec<TxnOp> = t.puts.iter().map(|(k, v)| TxnOp::put(k.as_bytes(), v.clone(), None)).collect();
        then.extend(t.deletes.iter().map(|k| TxnOp::delete(k.as_bytes(), None)));
        let otherwise: Vec<TxnOp> = t.compares.iter().map(|c| TxnOp::get(c.key().as_bytes(), None)).collect();
        let txn = etcd_client::Txn::new().when(compares).and_then(then).or_else(otherwise);
        let resp = self
            .call("txn", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            return Ok(revision);
        }
        let mut current = Vec::new();
        for (c, r) in t.compares.iter().zip(resp.op_responses()) {
            let kv = match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(kv_of),
                _ => None,
            };
            current.push((c.key().to_owned(), kv));
        }
        Err(ClusterError::Conflict(current))
    }

    /// Every key under `prefix`, and the revision of the read.
    async fn list(&self, prefix: &str) -> Result<(Vec<Kv>, i64), ClusterError> {
        let resp = self
            .call("range", |mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp.kvs().iter().map(kv_of).collect();
        Ok((kvs, revision))
    }

    /// Grant a lease of `ttl` and put `key` under it (a node's liveness).
    async fn put_leased(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<i64, ClusterError> {
        let ttl = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = self.call("lease grant", |mut c| async move { c.lease_grant(ttl, None).await }).await?.id();
        self.call("put", |mut c| {
            let value = value.clone();
            async move { c.put(key, value, Some(PutOptions::new().with_lease(lease))).await }
        })
        .await?;
        Ok(lease)
    }

    /// Put `key` (no lease).
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), ClusterError> {
        self.call("put", |mut c| {
            let value = value.clone();
            async move { c.put(key, value, None).await }
        })
        .await
        .map(|_| ())
    }

    /// Refresh lease `id` once; false if it has expired (re-register).
    async fn keep_alive(&self, id: i64) -> Result<bool, ClusterError> {
        self.call("lease keep-alive", |mut c| async move {
            let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            Ok(stream.message().await?.map(|r| r.ttl() > 0))
        })
        .await?
        .ok_or_else(|| unavailable("lease keep-alive: stream ended"))
    }

    /// Revoke lease `id` (a node leaving cleanly).
    async fn revoke(&self, id: i64) -> Result<(), ClusterError> {
        self.call("lease revoke", |mut c| async move { c.lease_revoke(id).await }).await.map(|_| ())
    }

    /// Watch everything under `prefix` from revision `from` (inclusive),
    /// sending what is seen to `tx` until the watch breaks (etcd away: the
    /// caller re-lists and watches again) or `tx` is closed.
    async fn watch(
        &self,
        prefix: &str,
        from: i64,
        tx: &tokio::sync::mpsc::Sender<WatchItem>,
    ) -> Result<(), ClusterError> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(from).with_prev_key().with_progress_notify();
        let mut stream = self
            .call("watch", |mut c| {
                let opts = opts.clone();
                async move { c.watch(prefix, Some(opts)).await }
            })
            .await?;
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(unavailable("watch: stream ended")),
                Err(e) => return Err(unavailable(format!("watch: {e}"))),
            };
            if msg.compact_revision() > 0 {
                let _ = tx.send(WatchItem::Compacted).await;
                return Ok(());
            }
            if msg.canceled() {
                return Err(unavailable(format!("watch cancelled: {}", msg.cancel_reason())));
            }
            let revision = msg.header().map_or(0, |h| h.revision());
            let seen: Vec<Seen> = msg
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    Some(match e.event_type() {
                        EventType::Put => Seen::Put(kv_of(kv)),
                        EventType::Delete => Seen::Delete(
                            String::from_utf8_lossy(kv.key()).into_owned(),
                            e.prev_kv().map(|p| p.value().to_vec()),
                        ),
                    })
                })
                .collect();
            if tx.send(WatchItem::Changes(seen, revision)).await.is_err() {
                return Ok(());
            }
        }
    }
}
