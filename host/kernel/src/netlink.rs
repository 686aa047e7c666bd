//! rtnetlink operations in one network namespace: the translation of each
//! link/address/route [`Op`] into one netlink request.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use netlink_sys::AsyncSocket;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::MacVlanMode;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::{Handle, LinkBridge, LinkMacVlan, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};
use weft_model::IfName;
use weft_plan::{ObservedLink, Op};

use crate::error::KernelError;

/// A netlink handle bound to the namespace it was opened in.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// A second socket with strict checking, opened on first use: the
    /// kernel filters an address dump by link only on such a socket, and
    /// without the filter every observation dumps every address of the
    /// namespace (thousands with as many veths). Not the main socket:
    /// strict checking refuses other dumps rtnetlink sends (routes).
    strict: Arc<OnceLock<Handle>>,
}

impl Netlink {
    /// Open a socket in the calling thread's namespace and drive it on the
    /// current tokio runtime.
    pub fn open() -> Result<Netlink, KernelError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| KernelError::new("netlink open", "route socket", e))?;
        tokio::spawn(conn);
        Ok(Netlink { handle, strict: Arc::default() })
    }

    /// The strict-checking handle (made on first use, on this runtime).
    fn strict(&self) -> Result<Handle, KernelError> {
        if let Some(h) = self.strict.get() {
            return Ok(h.clone());
        }
        let (mut conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| KernelError::new("netlink open", "strict route socket", e))?;
        conn.socket_mut()
            .socket_ref()
            .set_netlink_get_strict_chk(true)
            .map_err(|e| KernelError::new("netlink open", "NETLINK_GET_STRICT_CHK", e))?;
        tokio::spawn(conn);
        Ok(self.strict.get_or_init(|| handle).clone())
    }

    /// The link called `name`, if it exists.
    async fn get_link(&self, name: &IfName) -> Result<Option<LinkMessage>, KernelError> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(found) => Ok(found),
            Err(e) => {
                let e = KernelError::netlink("link show", name, e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// Index of the link called `name`, if it exists.
    pub async fn index_of(&self, name: &IfName) -> Result<Option<u32>, KernelError> {
        Ok(self.get_link(name).await?.map(|m| m.header.index))
    }

    async fn index(&self, name: &IfName) -> Result<u32, KernelError> {
        self.index_of(name).await?.ok_or_else(|| KernelError {
            errno: Some(libc::ENODEV),
            ..KernelError::new("link show", name, "no such interface")
        })
    }

    /// The link `name` with its addresses and up flag, if it exists.
    pub async fn observe(&self, name: &IfName) -> Result<Option<ObservedLink>, KernelError> {
        let Some(msg) = self.get_link(name).await? else {
            return Ok(None);
        };
        let up = msg.header.flags.contains(LinkFlags::Up);
        let master_idx = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Controller(i) => Some(*i),
            _ => None,
        });
        let master = match master_idx {
            Some(i) => self.name_of(i).await?,
            None => None,
        };
        let mut get = self.strict()?.address().get().set_link_index_filter(msg.header.index);
        get.message_mut().header.index = msg.header.index;
        let mut addrs = get.execute();
        let mut addresses = Vec::new();
        while let Some(a) = addrs.try_next().await.map_err(|e| KernelError::netlink("addr show", name, e))? {
            for attr in &a.attributes {
                if let AddressAttribute::Address(ip) = attr
                    && let Ok(net) = IpNet::new(*ip, a.header.prefix_len)
                {
                    addresses.push(net);
                }
            }
        }
        addresses.dedup();
        Ok(Some(ObservedLink { addresses, up, master }))
    }

    /// The name of the link with index `index`, if it exists.
    async fn name_of(&self, index: u32) -> Result<Option<IfName>, KernelError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(m)) => Ok(link_name(&m)),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = KernelError::netlink("link show", index, e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// The links in service that are ports of bridge `master` (retired
    /// ones, awaiting deletion, are not).
    pub async fn ports_of(&self, master: &IfName) -> Result<Vec<IfName>, KernelError> {
        let Some(midx) = self.index_of(master).await? else {
            return Ok(Vec::new());
        };
        let mut links = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(m) = links.try_next().await.map_err(|e| KernelError::netlink("link show", "all", e))? {
            let port = m.attributes.iter().any(|a| matches!(a, LinkAttribute::Controller(i) if *i == midx));
            // A retired link is out of service, waiting for its deletion.
            let retired = m.attributes.iter().any(|a| matches!(a, LinkAttribute::Group(weft_plan::RETIRED_GROUP)));
            if port
                && !retired
                && let Some(n) = link_name(&m)
            {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Every address of the namespace and every main-table route with a
    /// destination (not a default route), each as a prefix with the name of
    /// its link: what the host itself uses, which a tenant's subnet must not
    /// shadow.
    pub async fn prefixes(&self) -> Result<Vec<(IpNet, Option<IfName>)>, KernelError> {
        use netlink_packet_route::route::{RouteAddress, RouteAttribute};
        let mut names = std::collections::HashMap::new();
        let mut links = self.handle.link().get().execute();
        while let Some(m) = links.try_next().await.map_err(|e| KernelError::netlink("link show", "all", e))? {
            if let Some(n) = link_name(&m) {
                names.insert(m.header.index, n);
            }
        }
        let mut out = Vec::new();
        let mut addrs = self.handle.address().get().execute();
        while let Some(a) = addrs.try_next().await.map_err(|e| KernelError::netlink("addr show", "all", e))? {
            for attr in &a.attributes {
                if let AddressAttribute::Address(ip) = attr
                    && let Ok(net) = IpNet::new(*ip, a.header.prefix_len)
                {
                    out.push((net.trunc(), names.get(&a.header.index).cloned()));
                }
            }
        }
        for msg in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let mut routes = self.handle.route().get(msg).execute();
            while let Some(r) = routes.try_next().await.map_err(|e| KernelError::netlink("route show", "all", e))? {
                if r.header.table != 254 || r.header.destination_prefix_length == 0 {
                    continue;
                }
                let (mut dst, mut oif) = (None, None);
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
                        RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                if let Some(dst) = dst
                    && let Ok(net) = IpNet::new(dst, r.header.destination_prefix_length)
                {
                    out.push((net.trunc(), oif.and_then(|i| names.get(&i).cloned())));
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// A VXLAN device's programmed remote entries: its FDB entries with a
    /// tunnel destination (MAC, destination) and its permanent neighbours
    /// (address, MAC). Empty if the device is missing.
    pub async fn vxlan_entries(&self, dev: &IfName) -> Result<crate::VxlanEntries, KernelError> {
        let Some(idx) = self.index_of(dev).await? else { return Ok(crate::VxlanEntries::default()) };
        let mut out = crate::VxlanEntries::default();
        for family in [AddressFamily::Bridge, AddressFamily::Inet, AddressFamily::Inet6] {
            let mut dump = self.handle.neighbours().get().set_address_family(family).execute();
            while let Some(m) = dump.try_next().await.map_err(|e| KernelError::netlink("neigh show", dev, e))? {
                if m.header.ifindex != idx {
                    continue;
                }
                let mut mac = None;
                let mut dst = None;
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                            let mut b = [0u8; 6];
                            b.copy_from_slice(l);
                            mac = Some(weft_model::Mac(b));
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => dst = Some(IpAddr::V4(*v)),
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => dst = Some(IpAddr::V6(*v)),
                        // An FDB entry's destination comes undecoded (the
                        // message's family is AF_BRIDGE): 4 or 16 bytes.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                            dst = match b.len() {
                                4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                                16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                                _ => None,
                            }
                        }
                        _ => {}
                    }
                }
                let (Some(mac), Some(dst)) = (mac, dst) else { continue };
                if family == AddressFamily::Bridge {
                    out.fdb.push((mac, dst));
                } else if m.header.state == NeighbourState::Permanent {
                    out.neighbours.push((dst, mac));
                }
            }
        }
        Ok(out)
    }

    /// Whether the main table has a default route of the family.
    pub async fn has_default_route(&self, v4: bool) -> Result<bool, KernelError> {
        let msg = if v4 {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        };
        let mut routes = self.handle.route().get(msg).execute();
        while let Some(r) = routes.try_next().await.map_err(|e| KernelError::netlink("route show", "default", e))? {
            if r.header.destination_prefix_length == 0 && r.header.table == 254 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Move `link` into the namespace whose file is `netns`.
    pub async fn move_to_netns(&self, link: &IfName, netns: &Path) -> Result<(), KernelError> {
        let file = std::fs::File::open(netns).map_err(|e| KernelError::new("open netns", netns.display(), e))?;
        let index = self.index(link).await?;
        let msg = LinkUnspec::new_with_index(index).setns_by_fd(file.as_raw_fd()).build();
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(|e| KernelError::netlink("link set netns", format!("{link} -> {}", netns.display()), e))
    }

    /// Execute one link/address/route op in this namespace.
    pub async fn apply(&self, op: &Op) -> Result<(), KernelError> {
        let link = self.handle.link();
        match op {
            Op::CreateBridge { name, mtu, mac } => {
                // Bridged IP traffic passes the inet hooks of this bridge only
                // (br_netfilter per bridge), so policy sees traffic between
                // endpoints of one network.
                let mut b = LinkBridge::new(name.as_str())
                    .nf_call_iptables(true)
                    .nf_call_ip6tables(true)
                    .address(mac.0.to_vec());
                if let Some(m) = mtu {
                    b = b.mtu(*m);
                }
                match link.add(b.build()).execute().await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let e = KernelError::netlink("link add type bridge", name, e);
                        if e.is_exists() { Ok(()) } else { Err(e) }
                    }
                }
            }
            Op::CreateVeth { name, master, peer, netns, mac, mtu } => {
                let what = || format!("{name} master {master} peer {peer} netns {}", netns.display());
                let midx = self.index(master).await?;
                let file =
                    std::fs::File::open(netns).map_err(|e| KernelError::new("open netns", netns.display(), e))?;
                let mut inside =
                    LinkUnspec::new_with_name(peer.as_str()).address(mac.0.to_vec()).setns_by_fd(file.as_raw_fd());
                let mut v = LinkVeth::new(name.as_str(), peer.as_str()).controller(midx).up();
                if let Some(m) = mtu {
                    inside = inside.mtu(*m);
                    v = v.mtu(*m);
                }
                let msg = v.set_info_data(InfoData::Veth(InfoVeth::Peer(inside.build()))).build();
                link.add(msg).execute().await.map_err(|e| {
                    let e = KernelError::netlink("link add type veth", what(), e);
                    if e.is_exists() {
                        KernelError { reason: format!("{} (in the host or the container namespace)", e.reason), ..e }
                    } else {
                        e
                    }
                })
            }
            Op::CreateVxlan { name, vni, local, port, mtu, master } => {
                let midx = self.index(master).await?;
                let mut v = LinkVxlan::new(name.as_str(), *vni).port(*port).learning(false).proxy(true);
                v = match local {
                    IpAddr::V4(a) => v.local(*a),
                    IpAddr::V6(a) => v.local6(*a),
                };
                if let Some(m) = mtu {
                    v = v.mtu(*m);
                }
                let what = || format!("{name} id {vni} local {local} dstport {port}");
                match link.add(v.controller(midx).up().build()).execute().await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let e = KernelError::netlink("link add type vxlan", what(), e);
                        if e.is_exists() { Ok(()) } else { Err(e) }
                    }
                }
            }
            Op::SetFdb { dev, mac, dst } => {
                let idx = self.index(dev).await?;
                let mut req = self.handle.neighbours().add_bridge(idx, &mac.0).destination(*dst).replace();
                req.message_mut().header.flags = NeighbourFlags::Own;
                req.execute()
                    .await
                    .map_err(|e| KernelError::netlink("bridge fdb replace", format!("{mac} dev {dev} dst {dst}"), e))
            }
            Op::DeleteFdb { dev, mac, dst } => {
                let Some(idx) = self.index_of(dev).await? else { return Ok(()) };
                let mut msg = NeighbourMessage::default();
                msg.header.family = AddressFamily::Bridge;
                msg.header.ifindex = idx;
                msg.header.flags = NeighbourFlags::Own;
                msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
                msg.attributes.push(NeighbourAttribute::Destination(neighbour_address(*dst)));
                absent_ok(
                    self.handle.neighbours().del(msg).execute().await,
                    "bridge fdb del",
                    format!("{mac} dev {dev} dst {dst}"),
                )
            }
            Op::SetNeighbour { dev, addr, mac } => {
                let idx = self.index(dev).await?;
                self.handle
                    .neighbours()
                    .add(idx, *addr)
                    .link_layer_address(&mac.0)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(|e| KernelError::netlink("ip neigh replace", format!("{addr} lladdr {mac} dev {dev}"), e))
            }
            Op::DeleteNeighbour { dev, addr, .. } => {
                let Some(idx) = self.index_of(dev).await? else { return Ok(()) };
                let mut msg = NeighbourMessage::default();
                msg.header.family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
                msg.header.ifindex = idx;
                msg.attributes.push(NeighbourAttribute::Destination(neighbour_address(*addr)));
                absent_ok(
                    self.handle.neighbours().del(msg).execute().await,
                    "ip neigh del",
                    format!("{addr} dev {dev}"),
                )
            }
            Op::CreateMacvlan { name, parent, mode, mtu } => {
                let pidx = self.index(parent).await?;
                let mode = match mode.as_str() {
                    "vepa" => MacVlanMode::Vepa,
                    "private" => MacVlanMode::Private,
                    "passthru" => MacVlanMode::Passthrough,
                    _ => MacVlanMode::Bridge,
                };
                let mut m = LinkMacVlan::new(name.as_str(), pidx, mode);
                if let Some(mtu) = mtu {
                    m = m.mtu(*mtu);
                }
                link.add(m.build())
                    .execute()
                    .await
                    .map_err(|e| KernelError::netlink("link add type macvlan", format!("{name} link {parent}"), e))
            }
            Op::AddAddress { link: l, addr, .. } => {
                let idx = self.index(l).await?;
                let mut req = self.handle.address().add(idx, addr.addr(), addr.prefix_len());
                // No duplicate address detection: weft owns these addresses, and
                // a tentative gateway would stall IPv6 for a second or more.
                req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
                match req.execute().await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let e = KernelError::netlink("addr add", format!("{addr} dev {l}"), e);
                        if e.is_exists() { Ok(()) } else { Err(e) }
                    }
                }
            }
            Op::SetMaster { link: l, master } => {
                let idx = self.index(l).await?;
                let midx = self.index(master).await?;
                link.change(LinkUnspec::new_with_index(idx).controller(midx).build())
                    .execute()
                    .await
                    .map_err(|e| KernelError::netlink("link set master", format!("{l} master {master}"), e))
            }
            Op::Rename { link: l, to, .. } => {
                let idx = self.index(l).await?;
                link.change(LinkUnspec::new_with_index(idx).name(to.to_string()).build())
                    .execute()
                    .await
                    .map_err(|e| KernelError::netlink("link set name", format!("{l} -> {to}"), e))
            }
            Op::SetMac { link: l, mac, .. } => {
                let idx = self.index(l).await?;
                link.change(LinkUnspec::new_with_index(idx).address(mac.0.to_vec()).build())
                    .execute()
                    .await
                    .map_err(|e| KernelError::netlink("link set address", format!("{l} {mac}"), e))
            }
            Op::LinkUp { link: l, .. } => {
                let idx = self.index(l).await?;
                link.change(LinkUnspec::new_with_index(idx).up().build())
                    .execute()
                    .await
                    .map_err(|e| KernelError::netlink("link set up", l, e))
            }
            Op::AddDefaultRoute { via, dev, .. } => {
                let idx = self.index(dev).await?;
                let msg = match via {
                    IpAddr::V4(v) => {
                        RouteMessageBuilder::<std::net::Ipv4Addr>::new().gateway(*v).output_interface(idx).build()
                    }
                    IpAddr::V6(v) => {
                        RouteMessageBuilder::<std::net::Ipv6Addr>::new().gateway(*v).output_interface(idx).build()
                    }
                };
                match self.handle.route().add(msg).execute().await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        // A default route already present (another network
                        // attached first) is kept: the first network owns it.
                        let e = KernelError::netlink("route add default", format!("via {via} dev {dev}"), e);
                        if e.is_exists() { Ok(()) } else { Err(e) }
                    }
                }
            }
            Op::DeleteLink { link: l, .. } => {
                let Some(idx) = self.index_of(l).await? else {
                    return Ok(());
                };
                match link.del(idx).execute().await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let e = KernelError::netlink("link del", l, e);
                        if e.is_not_found() { Ok(()) } else { Err(e) }
                    }
                }
            }
            // By name, in one request: no lookup of the index first.
            Op::RetireLink { link: l, .. } => {
                let msg = LinkUnspec::new_with_name(l.as_str())
                    .down()
                    .nocontroller()
                    .link_group(weft_plan::RETIRED_GROUP)
                    .build();
                absent_ok(link.set(msg).execute().await, "link set down nomaster group", l.to_string())
            }
            Op::ReviveLink { link: l, master } => {
                let midx = self.index(master).await?;
                link.set(LinkUnspec::new_with_name(l.as_str()).controller(midx).link_group(0).up().build())
                    .execute()
                    .await
                    .map_err(|e| {
                        KernelError::netlink("link set master group default up", format!("{l} master {master}"), e)
                    })
            }
            Op::DeleteRetired => {
                let mut msg = LinkUnspec::new_with_index(0).build();
                msg.attributes.push(LinkAttribute::Group(weft_plan::RETIRED_GROUP));
                absent_ok(
                    link.del_with_message(msg).execute().await,
                    "link del group",
                    weft_plan::RETIRED_GROUP.to_string(),
                )
            }
            Op::Sysctl { .. } | Op::Nft { .. } | Op::NftElements { .. } | Op::MoveToNetns { .. } => Err(
                KernelError::new("apply", format!("{op:?}"), "not a netlink operation (executed by the kernel facade)"),
            ),
        }
    }
}

fn neighbour_address(a: IpAddr) -> NeighbourAddress {
    match a {
        IpAddr::V4(v) => NeighbourAddress::Inet(v),
        IpAddr::V6(v) => NeighbourAddress::Inet6(v),
    }
}

/// A deletion whose object is already gone has done its work.
fn absent_ok(r: Result<(), rtnetlink::Error>, op: &str, target: String) -> Result<(), KernelError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = KernelError::netlink(op, target, e);
            if e.is_not_found() { Ok(()) } else { Err(e) }
        }
    }
}

/// A link message's name, if it is a valid interface name.
fn link_name(m: &LinkMessage) -> Option<IfName> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => IfName::parse("ifname", n).ok(),
        _ => None,
    })
}
