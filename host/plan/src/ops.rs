//! The kernel operations a plan is made of. Each maps to one `ip` verb (or
//! one nft transaction); `weft-kernel` is the only code that executes them.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use weft_model::{IfName, Mac};

/// The network namespace an op runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ns {
    /// The namespace weftd runs in.
    Host,
    /// A container's namespace, by file path.
    Path(PathBuf),
}

/// One kernel operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `sysctl -w key=value` (key with `/` separators under /proc/sys).
    Sysctl {
        /// Namespace (network sysctls are per namespace).
        ns: Ns,
        /// Path below /proc/sys.
        key: String,
        /// Value to write.
        value: String,
    },
    /// `ip link add NAME type bridge [mtu N]` in the host namespace.
    CreateBridge {
        /// Bridge name.
        name: IfName,
        /// MTU.
        mtu: Option<u32>,
        /// A fixed MAC, so the bridge's address does not follow its ports.
        mac: Mac,
    },
    /// `ip link add NAME master MASTER up [mtu N] type veth peer name PEER
    /// address MAC netns NETNS [mtu N]` in the host namespace: one request.
    /// The container end is born inside the container's namespace with its
    /// final name and MAC (moving a link between namespaces later would
    /// cost an RCU grace period, most of an attach); the host end is born a
    /// port of the bridge, up.
    CreateVeth {
        /// Host end.
        name: IfName,
        /// The bridge the host end is a port of.
        master: IfName,
        /// Container end, its final name.
        peer: IfName,
        /// The container's namespace.
        netns: PathBuf,
        /// The container end's MAC.
        mac: Mac,
        /// MTU of both ends.
        mtu: Option<u32>,
    },
    /// `ip link add NAME link PARENT type macvlan mode MODE [mtu N]` in the
    /// host namespace.
    CreateMacvlan {
        /// The new link's (temporary) name.
        name: IfName,
        /// Parent interface.
        parent: IfName,
        /// bridge, vepa, private or passthru.
        mode: String,
        /// MTU.
        mtu: Option<u32>,
    },
    /// `ip addr add ADDR dev LINK` (no duplicate address detection).
    AddAddress {
        /// Namespace.
        ns: Ns,
        /// Link.
        link: IfName,
        /// Address with prefix length.
        addr: IpNet,
    },
    /// `ip link set LINK master MASTER` in the host namespace.
    SetMaster {
        /// Port.
        link: IfName,
        /// Bridge.
        master: IfName,
    },
    /// `ip link set LINK netns NETNS` from the host namespace.
    MoveToNetns {
        /// Link to move.
        link: IfName,
        /// Target namespace file.
        netns: PathBuf,
    },
    /// `ip link set LINK name TO`.
    Rename {
        /// Namespace.
        ns: Ns,
        /// Current name.
        link: IfName,
        /// New name.
        to: IfName,
    },
    /// `ip link set LINK address MAC`.
    SetMac {
        /// Namespace.
        ns: Ns,
        /// Link.
        link: IfName,
        /// Address.
        mac: Mac,
    },
    /// `ip link set LINK up`.
    LinkUp {
        /// Namespace.
        ns: Ns,
        /// Link.
        link: IfName,
    },
    /// `ip route add default via VIA dev DEV` (kept if a default exists).
    AddDefaultRoute {
        /// Namespace.
        ns: Ns,
        /// Gateway.
        via: IpAddr,
        /// Outgoing link.
        dev: IfName,
    },
    /// `ip link del LINK` (absent is not an error).
    DeleteLink {
        /// Namespace.
        ns: Ns,
        /// Link.
        link: IfName,
    },
    /// One atomic nftables transaction (`nft -f -`).
    Nft {
        /// The script.
        script: String,
    },
    /// Add or delete elements of weft's sets and maps in one atomic
    /// nf_tables transaction, spoken over netlink (no process: this is the
    /// attach and detach path).
    NftElements {
        /// Add or delete.
        change: crate::nft::Change,
        /// The elements, of any of weft's sets.
        elements: Vec<crate::nft::Element>,
    },
}

impl Op {
    /// The namespace the op runs in.
    pub fn ns(&self) -> Ns {
        match self {
            Op::Sysctl { ns, .. }
            | Op::AddAddress { ns, .. }
            | Op::Rename { ns, .. }
            | Op::SetMac { ns, .. }
            | Op::LinkUp { ns, .. }
            | Op::AddDefaultRoute { ns, .. }
            | Op::DeleteLink { ns, .. } => ns.clone(),
            _ => Ns::Host,
        }
    }
}
