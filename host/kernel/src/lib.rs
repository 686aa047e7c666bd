//! The only weft code that touches the kernel. It executes the planner's
//! [`Op`]s: links, addresses and routes through rtnetlink (one netlink
//! socket per network namespace, opened inside it), sysctls through
//! /proc/sys, nftables transactions through `nft -f -` (one atomic
//! transaction per script) for whole tables, and an endpoint's set elements
//! as one nf_tables netlink batch. It also observes what exists, for reconcile.
//!
//! The controller sees the kernel through [`KernelApi`]; [`fake::FakeKernel`]
//! implements it in memory so decide/commit/rollback/reconcile are unit
//! tested without root. The netns tests of the real one live in `tests/`.

mod error;
pub mod fake;
mod netlink;
mod netns;
mod nft;
mod nftnl;
pub mod watch;

use std::path::PathBuf;

pub use error::KernelError;
pub use netns::check_netns;
use weft_plan::{Ns, ObservedLink, Op};

use crate::netlink::Netlink;

/// A failed [`Kernel::apply`]: how many ops of the plan were applied before
/// the failing one (so the caller can undo them) and why it failed.
#[derive(Debug)]
pub struct ApplyError {
    /// Number of ops applied successfully, from the start of the plan.
    pub applied: usize,
    /// The failure.
    pub error: KernelError,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// A VXLAN device's remote entries, as found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanEntries {
    /// FDB entries with a tunnel destination: (MAC, remote tunnel address).
    pub fdb: Vec<(weft_model::Mac, std::net::IpAddr)>,
    /// Permanent neighbours: (address, MAC).
    pub neighbours: Vec<(std::net::IpAddr, weft_model::Mac)>,
}

/// An endpoint's interface as seen inside its namespace.
pub use weft_plan::ObservedInside as Inside;

/// What the controller needs of a kernel: execute a plan (reporting how
/// much of it was applied when an op fails) and observe what exists.
#[async_trait::async_trait]
pub trait KernelApi: Send + Sync {
    /// Execute `ops` in order; stop at the first failure.
    async fn apply(&self, ops: &[Op]) -> Result<(), ApplyError>;
    /// The link `name` in weftd's namespace as it is now; None if missing.
    async fn observe_link(&self, name: &weft_model::IfName) -> Result<Option<ObservedLink>, KernelError>;
    /// The ports of bridge `master` in weftd's namespace, retired links
    /// (awaiting deletion) left out.
    async fn ports_of(&self, master: &weft_model::IfName) -> Result<Vec<weft_model::IfName>, KernelError>;
    /// Interface `ifname` and the default routes inside namespace `netns`.
    async fn observe_inside(&self, netns: &std::path::Path, ifname: &weft_model::IfName)
    -> Result<Inside, KernelError>;
    /// Check that `path` is a network namespace; its identity (nsfs inode).
    async fn netns_id(&self, path: &std::path::Path) -> Result<u64, KernelError>;
    /// Whether a link called `name` exists in weftd's namespace.
    async fn link_exists(&self, name: &weft_model::IfName) -> Result<bool, KernelError> {
        Ok(self.observe_link(name).await?.is_some())
    }
    /// The prefixes weftd's namespace uses itself — its addresses and its
    /// main-table routes other than default — each with its link's name.
    async fn host_prefixes(&self) -> Result<Vec<(ipnet::IpNet, Option<weft_model::IfName>)>, KernelError>;
    /// The remote entries programmed on VXLAN device `dev` (cluster mode).
    async fn vxlan_entries(&self, dev: &weft_model::IfName) -> Result<VxlanEntries, KernelError>;
}

/// The kernel of the namespace weftd runs in, plus access to container
/// namespaces by path.
pub struct Kernel {
    host: Netlink,
    nft: nftnl::NftSocket,
}

impl Kernel {
    /// Open a netlink connection in the current network namespace. Must be
    /// called inside a tokio runtime.
    pub fn new() -> Result<Kernel, KernelError> {
        Ok(Kernel { host: Netlink::open()?, nft: nftnl::NftSocket::open()? })
    }

    /// Execute `ops` in order. Consecutive ops in one container namespace
    /// run together on a thread that has entered it.
    async fn run(&self, ops: &[Op]) -> Result<(), ApplyError> {
        let mut i = 0;
        while i < ops.len() {
            match ops[i].ns() {
                Ns::Host => {
                    self.apply_host(&ops[i]).await.map_err(|error| ApplyError { applied: i, error })?;
                    i += 1;
                }
                Ns::Path(path) => {
                    let end =
                        ops[i..].iter().position(|o| o.ns() != Ns::Path(path.clone())).map_or(ops.len(), |p| i + p);
                    let group = ops[i..end].to_vec();
                    // Deleting from a namespace that is gone is done already:
                    // its links went with it.
                    if !path.exists() && group.iter().all(|o| matches!(o, Op::DeleteLink { .. })) {
                        i = end;
                        continue;
                    }
                    netns::run_in(path, group)
                        .await
                        .map_err(|(done, error)| ApplyError { applied: i + done, error })?;
                    i = end;
                }
            }
        }
        Ok(())
    }

    async fn apply_host(&self, op: &Op) -> Result<(), KernelError> {
        match op {
            Op::Sysctl { key, value, .. } => write_sysctl(key, value),
            Op::Nft { script } => nft::apply(script).await,
            // ~50 µs either way, on weftd's kept socket: runs inline.
            Op::NftElements { change, elements } => self.nft.apply(*change, elements),
            Op::MoveToNetns { link, netns } => self.host.move_to_netns(link, netns).await,
            other => self.host.apply(other).await,
        }
    }
}

#[async_trait::async_trait]
impl KernelApi for Kernel {
    async fn apply(&self, ops: &[Op]) -> Result<(), ApplyError> {
        self.run(ops).await
    }

    async fn observe_link(&self, name: &weft_model::IfName) -> Result<Option<ObservedLink>, KernelError> {
        self.host.observe(name).await
    }

    async fn ports_of(&self, master: &weft_model::IfName) -> Result<Vec<weft_model::IfName>, KernelError> {
        self.host.ports_of(master).await
    }

    async fn netns_id(&self, path: &std::path::Path) -> Result<u64, KernelError> {
        check_netns(path).await
    }

    async fn observe_inside(
        &self,
        netns: &std::path::Path,
        ifname: &weft_model::IfName,
    ) -> Result<Inside, KernelError> {
        netns::observe_inside(netns, ifname).await
    }

    async fn link_exists(&self, name: &weft_model::IfName) -> Result<bool, KernelError> {
        Ok(self.host.index_of(name).await?.is_some())
    }

    async fn host_prefixes(&self) -> Result<Vec<(ipnet::IpNet, Option<weft_model::IfName>)>, KernelError> {
        self.host.prefixes().await
    }

    async fn vxlan_entries(&self, dev: &weft_model::IfName) -> Result<VxlanEntries, KernelError> {
        self.host.vxlan_entries(dev).await
    }
}

/// Write a sysctl. Network sysctls resolve against the namespace of the
/// calling thread, so inside a netns thread this configures that namespace.
pub(crate) fn write_sysctl(key: &str, value: &str) -> Result<(), KernelError> {
    let path = PathBuf::from("/proc/sys").join(key);
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|e| KernelError::new("sysctl", key, e))
}
