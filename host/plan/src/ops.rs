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
    /// `ip link add NAME [mtu N] type vxlan id VNI local LOCAL dstport PORT
    /// nolearning proxy`, then `ip link set NAME master MASTER up`: an
    /// overlay network's tunnel end, a port of its bridge. No learning and
    /// no flooding: every remote MAC is programmed ([`Op::SetFdb`]) and
    /// ARP/ND is answered from the programmed neighbours (`proxy`).
    CreateVxlan {
        /// The device's name.
        name: IfName,
        /// The VXLAN network identifier.
        vni: u32,
        /// This node's tunnel address (its advertise IP).
        local: IpAddr,
        /// UDP port (4789).
        port: u16,
        /// MTU.
        mtu: Option<u32>,
        /// The bridge it is a port of.
        master: IfName,
    },
    /// `bridge fdb replace MAC dev DEV dst DST self permanent`: a remote
    /// endpoint's MAC is behind the node whose tunnel address is `dst`.
    SetFdb {
        /// The VXLAN device.
        dev: IfName,
        /// The remote endpoint's MAC.
        mac: Mac,
        /// The remote node's tunnel address.
        dst: IpAddr,
    },
    /// `bridge fdb del MAC dev DEV dst DST self` (absent is not an error).
    DeleteFdb {
        /// The VXLAN device.
        dev: IfName,
        /// The MAC.
        mac: Mac,
        /// The tunnel address it pointed to (for the undo).
        dst: IpAddr,
    },
    /// `ip neigh replace ADDR lladdr MAC dev DEV nud permanent`: a remote
    /// endpoint's address, answered by the VXLAN device's ARP/ND proxy.
    SetNeighbour {
        /// The VXLAN device.
        dev: IfName,
        /// The remote endpoint's address.
        addr: IpAddr,
        /// Its MAC.
        mac: Mac,
    },
    /// `ip neigh del ADDR dev DEV` (absent is not an error).
    DeleteNeighbour {
        /// The VXLAN device.
        dev: IfName,
        /// The address.
        addr: IpAddr,
        /// The MAC it had (for the undo).
        mac: Mac,
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
    /// `ip link set LINK down nomaster group RETIRED_GROUP`: a detached
    /// endpoint's host veth stops carrying traffic at once and waits, with
    /// every other retired link, for [`Op::DeleteRetired`] (absent is not
    /// an error). Out of its bridge now, so the deletion, which holds RTNL
    /// throughout, does half the work there (measured: 200 links, 154 vs 57 ms).
    RetireLink {
        /// The host end of the veth.
        link: IfName,
        /// Its bridge (for the undo).
        master: IfName,
    },
    /// `ip link set LINK master MASTER group default up`: a retired link
    /// back in service (the undo of [`Op::RetireLink`]).
    ReviveLink {
        /// The host end of the veth.
        link: IfName,
        /// Its bridge.
        master: IfName,
    },
    /// `ip link del group RETIRED_GROUP`: every retired link of weftd's
    /// namespace in one call, so the kernel waits out its RCU grace periods
    /// once for all of them (none retired is not an error).
    DeleteRetired,
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

/// The link group of retired links (`RetireLink`): a number no other
/// software is likely to use ("weft" in ASCII), since deleting the group
/// deletes every link of weftd's namespace in it.
pub const RETIRED_GROUP: u32 = 0x7765_6674;

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

impl Ns {
    /// `host`, or the namespace file's path.
    pub fn label(&self) -> String {
        match self {
            Ns::Host => "host".to_owned(),
            Ns::Path(p) => p.display().to_string(),
        }
    }
}

impl Op {
    /// The command line this op corresponds to, as an operator would type
    /// it (`ip -n` style prefixes are left to [`Op::ns`]). Dry runs answer
    /// with these.
    pub fn command(&self) -> String {
        let mtu = |m: &Option<u32>| m.map(|m| format!(" mtu {m}")).unwrap_or_default();
        match self {
            Op::Sysctl { key, value, .. } => format!("sysctl -w {}={value}", key.replace('/', ".")),
            Op::CreateBridge { name, mtu: m, mac } => {
                format!("ip link add {name} address {mac}{} type bridge nf_call_iptables 1", mtu(m))
            }
            Op::CreateVeth { name, master, peer, netns, mac, mtu: m } => format!(
                "ip link add {name} master {master} up{} type veth peer name {peer} address {mac} netns {}",
                mtu(m),
                netns.display()
            ),
            Op::CreateMacvlan { name, parent, mode, mtu: m } => {
                format!("ip link add {name} link {parent}{} type macvlan mode {mode}", mtu(m))
            }
            Op::CreateVxlan { name, vni, local, port, mtu: m, master } => format!(
                "ip link add {name}{} type vxlan id {vni} local {local} dstport {port} nolearning proxy && ip link set {name} master {master} up",
                mtu(m)
            ),
            Op::SetFdb { dev, mac, dst } => format!("bridge fdb replace {mac} dev {dev} dst {dst} self permanent"),
            Op::DeleteFdb { dev, mac, dst } => format!("bridge fdb del {mac} dev {dev} dst {dst} self"),
            Op::SetNeighbour { dev, addr, mac } => {
                format!("ip neigh replace {addr} lladdr {mac} dev {dev} nud permanent")
            }
            Op::DeleteNeighbour { dev, addr, .. } => format!("ip neigh del {addr} dev {dev}"),
            Op::AddAddress { link, addr, .. } => format!("ip addr add {addr} dev {link} nodad"),
            Op::SetMaster { link, master } => format!("ip link set {link} master {master}"),
            Op::MoveToNetns { link, netns } => format!("ip link set {link} netns {}", netns.display()),
            Op::Rename { link, to, .. } => format!("ip link set {link} name {to}"),
            Op::SetMac { link, mac, .. } => format!("ip link set {link} address {mac}"),
            Op::LinkUp { link, .. } => format!("ip link set {link} up"),
            Op::AddDefaultRoute { via, dev, .. } => format!("ip route add default via {via} dev {dev}"),
            Op::DeleteLink { link, .. } => format!("ip link del {link}"),
            Op::RetireLink { link, .. } => format!("ip link set {link} down nomaster group {RETIRED_GROUP}"),
            Op::ReviveLink { link, master } => format!("ip link set {link} master {master} group default up"),
            Op::DeleteRetired => format!("ip link del group {RETIRED_GROUP}"),
            Op::Nft { script } => {
                format!(
                    "nft -f - # table {} {}: {} lines",
                    crate::nft::NFT_FAMILY,
                    crate::nft::NFT_TABLE,
                    script.lines().count()
                )
            }
            Op::NftElements { change, elements } => {
                let verb = match change {
                    crate::nft::Change::Add => "add",
                    crate::nft::Change::Delete => "delete",
                };
                crate::nft::by_set(elements)
                    .into_iter()
                    .map(|(set, els)| {
                        let els: Vec<String> = els.iter().map(|e| e.to_string()).collect();
                        format!(
                            "nft {verb} element {} {} {set} {{ {} }}",
                            crate::nft::NFT_FAMILY,
                            crate::nft::NFT_TABLE,
                            els.join(", ")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        }
    }
}
