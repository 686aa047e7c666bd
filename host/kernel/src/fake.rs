//! An in-memory kernel for unit tests of the controller: links (with
//! veth peers, masters, addresses, up flags), default routes, sysctls,
//! weft's nft table and its set elements. It follows the real kernel's
//! rules where the controller depends on them — a veth goes with either
//! end, an existing bridge or address is not an error, a missing link is,
//! deleting an absent element is — and can be told to fail chosen ops, so
//! tests can check that a failure at any point leaves everything as it was.
//! It parses no nft script: a whole-table render is kept as text, and
//! elements are tracked only through [`Op::NftElements`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Mutex;

use ipnet::IpNet;
use weft_model::IfName;
use weft_plan::nft::Change;
use weft_plan::{Ns, ObservedLink, Op};

use crate::{ApplyError, KernelApi, KernelError};

/// One fake link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeLink {
    /// `bridge`, `veth`, `macvlan` or `device` (pre-existing).
    pub kind: String,
    /// The bridge it is a port of.
    pub master: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// Its addresses.
    pub addresses: BTreeSet<IpNet>,
    /// A veth's other end: (namespace label, name).
    pub peer: Option<(String, String)>,
    /// In weft's retired link group (`RetireLink`), awaiting deletion.
    pub retired: bool,
}

/// Everything the fake kernel holds. Compared whole by tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeState {
    /// Links by (namespace label, name).
    pub links: BTreeMap<(String, String), FakeLink>,
    /// Default routes: (namespace label, family v4?) -> (gateway, device).
    pub routes: BTreeMap<(String, bool), (IpAddr, String)>,
    /// Sysctls by (namespace label, key).
    pub sysctls: BTreeMap<(String, String), String>,
    /// weft's table as last rendered (None: no table).
    pub table: Option<String>,
    /// Set and map elements, `set: element`.
    pub elements: BTreeSet<String>,
    /// VXLAN forwarding entries: (device, MAC) -> tunnel address.
    pub fdb: BTreeMap<(String, String), IpAddr>,
    /// Permanent neighbours: (device, address) -> MAC.
    pub neighbours: BTreeMap<(String, IpAddr), String>,
}

type Failer = Box<dyn Fn(&Op) -> bool + Send>;

/// The fake kernel.
#[derive(Default)]
pub struct FakeKernel {
    state: Mutex<FakeState>,
    ops: Mutex<Vec<Op>>,
    fail: Mutex<Option<Failer>>,
}

/// Delete `link` of namespace `ns` and what goes with it (a veth's peer,
/// its routes, forwarding entries, neighbours; ports lose their master).
fn delete_link(st: &mut FakeState, ns: &str, link: &IfName) {
    let Some(l) = st.links.remove(&(ns.to_owned(), link.to_string())) else { return };
    // A device's forwarding entries and neighbours go with it.
    st.fdb.retain(|(d, _), _| d != link.as_str());
    st.neighbours.retain(|(d, _), _| d != link.as_str());
    if let Some(p) = l.peer {
        st.links.remove(&p);
        st.routes.retain(|(n, _), (_, d)| !(n == &p.0 && d == &p.1));
    }
    st.routes.retain(|(n, _), (_, d)| !(n == ns && d == link.as_str()));
    for port in st.links.values_mut() {
        if port.master.as_deref() == Some(link.as_str()) {
            port.master = None;
        }
    }
}

fn einval(op: &str, target: impl std::fmt::Display, errno: i32, why: &str) -> KernelError {
    KernelError { errno: Some(errno), ..KernelError::new(op, target, why) }
}

impl FakeKernel {
    /// An empty kernel with a pre-existing `eth0` in the host namespace.
    pub fn new() -> FakeKernel {
        let k = FakeKernel::default();
        k.lock()
            .links
            .insert(("host".into(), "eth0".into()), FakeLink { kind: "device".into(), up: true, ..Default::default() });
        k
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of everything the kernel holds.
    pub fn state(&self) -> FakeState {
        self.lock().clone()
    }

    /// Change the state directly (drift made "by hand").
    pub fn edit(&self, f: impl FnOnce(&mut FakeState)) {
        f(&mut self.lock())
    }

    /// Every op applied successfully so far, in order.
    pub fn applied(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Make every op for which `f` is true fail (until [`FakeKernel::heal`]).
    pub fn fail_when(&self, f: impl Fn(&Op) -> bool + Send + 'static) {
        *self.fail.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
    }

    /// Fail the `n`th op (0-based) applied from now on, once.
    pub fn fail_nth(&self, n: usize) {
        let seen = std::sync::atomic::AtomicUsize::new(0);
        self.fail_when(move |_| seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == n);
    }

    /// Stop failing ops.
    pub fn heal(&self) {
        *self.fail.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn apply_one(st: &mut FakeState, op: &Op) -> Result<(), KernelError> {
        let ns = op.ns().label();
        let key = |n: &IfName| (ns.clone(), n.to_string());
        let need = |st: &FakeState, k: &(String, String), verb: &str| {
            if st.links.contains_key(k) { Ok(()) } else { Err(einval(verb, &k.1, libc::ENODEV, "No such device")) }
        };
        match op {
            Op::Sysctl { key: k, value, .. } => {
                st.sysctls.insert((ns, k.clone()), value.clone());
            }
            Op::CreateBridge { name, .. } => {
                st.links.entry(key(name)).or_insert(FakeLink { kind: "bridge".into(), ..Default::default() });
            }
            Op::CreateVeth { name, master, peer, netns, .. } => {
                need(st, &key(master), "link add type veth")?;
                let inside = (Ns::Path(netns.clone()).label(), peer.to_string());
                if st.links.contains_key(&key(name)) || st.links.contains_key(&inside) {
                    return Err(einval("link add type veth", name, libc::EEXIST, "File exists"));
                }
                st.links.insert(
                    key(name),
                    FakeLink {
                        kind: "veth".into(),
                        master: Some(master.to_string()),
                        up: true,
                        peer: Some(inside.clone()),
                        ..Default::default()
                    },
                );
                st.links.insert(inside, FakeLink { kind: "veth".into(), peer: Some(key(name)), ..Default::default() });
            }
            Op::CreateVxlan { name, master, .. } => {
                need(st, &key(master), "link add type vxlan")?;
                if st.links.contains_key(&key(name)) {
                    return Err(einval("link add type vxlan", name, libc::EEXIST, "File exists"));
                }
                st.links.insert(
                    key(name),
                    FakeLink { kind: "vxlan".into(), master: Some(master.to_string()), up: true, ..Default::default() },
                );
            }
            Op::SetFdb { dev, mac, dst } => {
                need(st, &key(dev), "bridge fdb replace")?;
                st.fdb.insert((dev.to_string(), mac.to_string()), *dst);
            }
            Op::DeleteFdb { dev, mac, .. } => {
                st.fdb.remove(&(dev.to_string(), mac.to_string()));
            }
            Op::SetNeighbour { dev, addr, mac } => {
                need(st, &key(dev), "ip neigh replace")?;
                st.neighbours.insert((dev.to_string(), *addr), mac.to_string());
            }
            Op::DeleteNeighbour { dev, addr, .. } => {
                st.neighbours.remove(&(dev.to_string(), *addr));
            }
            Op::CreateMacvlan { name, parent, .. } => {
                need(st, &key(parent), "link add type macvlan")?;
                if st.links.contains_key(&key(name)) {
                    return Err(einval("link add type macvlan", name, libc::EEXIST, "File exists"));
                }
                st.links.insert(key(name), FakeLink { kind: "macvlan".into(), ..Default::default() });
            }
            Op::AddAddress { link, addr, .. } => {
                need(st, &key(link), "addr add")?;
                if let Some(l) = st.links.get_mut(&key(link)) {
                    l.addresses.insert(*addr);
                }
            }
            Op::SetMaster { link, master } => {
                need(st, &key(master), "link set master")?;
                need(st, &key(link), "link set master")?;
                if let Some(l) = st.links.get_mut(&key(link)) {
                    l.master = Some(master.to_string());
                }
            }
            Op::MoveToNetns { link, netns } => {
                need(st, &key(link), "link set netns")?;
                let to = (Ns::Path(netns.clone()).label(), link.to_string());
                if let Some(l) = st.links.remove(&key(link)) {
                    st.links.insert(to, l);
                }
            }
            Op::Rename { link, to, .. } => {
                need(st, &key(link), "link set name")?;
                if st.links.contains_key(&key(to)) {
                    return Err(einval("link set name", to, libc::EEXIST, "File exists"));
                }
                if let Some(l) = st.links.remove(&key(link)) {
                    st.links.insert(key(to), l);
                }
            }
            Op::SetMac { link, .. } => need(st, &key(link), "link set address")?,
            Op::LinkUp { link, .. } => {
                if link.as_str() == "lo" {
                    return Ok(());
                }
                need(st, &key(link), "link set up")?;
                if let Some(l) = st.links.get_mut(&key(link)) {
                    l.up = true;
                }
            }
            Op::AddDefaultRoute { via, dev, .. } => {
                need(st, &key(dev), "route add default")?;
                st.routes.entry((ns, via.is_ipv4())).or_insert((*via, dev.to_string()));
            }
            Op::RetireLink { link, .. } => {
                if let Some(l) = st.links.get_mut(&key(link)) {
                    l.up = false;
                    l.master = None;
                    l.retired = true;
                }
            }
            Op::ReviveLink { link, master } => {
                need(st, &key(link), "link set group default up")?;
                need(st, &key(master), "link set master")?;
                if let Some(l) = st.links.get_mut(&key(link)) {
                    l.up = true;
                    l.master = Some(master.to_string());
                    l.retired = false;
                }
            }
            Op::DeleteRetired => {
                let retired: Vec<IfName> = st
                    .links
                    .iter()
                    .filter(|((n, _), l)| *n == ns && l.retired)
                    .filter_map(|((_, name), _)| IfName::parse("link", name).ok())
                    .collect();
                for link in retired {
                    delete_link(st, &ns, &link);
                }
            }
            Op::DeleteLink { link, .. } => delete_link(st, &ns, link),
            Op::Nft { script } => {
                if *script == weft_plan::nft::render_removal() {
                    st.table = None;
                    st.elements.clear();
                } else {
                    st.table = Some(script.clone());
                }
            }
            Op::NftElements { change, elements } => {
                if st.table.is_none() {
                    return Err(einval("nft element", "inet weft", libc::ENOENT, "No such file or directory"));
                }
                let names: Vec<String> = elements.iter().map(|e| format!("{}: {e}", e.set)).collect();
                match change {
                    Change::Add => st.elements.extend(names),
                    Change::Delete => {
                        if let Some(missing) = names.iter().find(|n| !st.elements.contains(*n)) {
                            return Err(einval(
                                "nft delete element",
                                missing,
                                libc::ENOENT,
                                "No such file or directory",
                            ));
                        }
                        for n in &names {
                            st.elements.remove(n);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl KernelApi for FakeKernel {
    async fn apply(&self, ops: &[Op]) -> Result<(), ApplyError> {
        for (i, op) in ops.iter().enumerate() {
            let fails = self.fail.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|f| f(op));
            if fails {
                return Err(ApplyError {
                    applied: i,
                    error: einval("fake", op.command(), libc::EIO, "injected failure"),
                });
            }
            Self::apply_one(&mut self.lock(), op).map_err(|error| ApplyError { applied: i, error })?;
            self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op.clone());
        }
        Ok(())
    }

    async fn observe_link(&self, name: &IfName) -> Result<Option<ObservedLink>, KernelError> {
        let st = self.lock();
        Ok(st.links.get(&("host".to_owned(), name.to_string())).map(|l| ObservedLink {
            addresses: l.addresses.iter().copied().collect(),
            up: l.up,
            master: l.master.as_deref().and_then(|m| IfName::parse("master", m).ok()),
        }))
    }

    async fn ports_of(&self, master: &IfName) -> Result<Vec<IfName>, KernelError> {
        let st = self.lock();
        Ok(st
            .links
            .iter()
            .filter(|((ns, _), l)| ns == "host" && !l.retired && l.master.as_deref() == Some(master.as_str()))
            .filter_map(|((_, n), _)| IfName::parse("ifname", n).ok())
            .collect())
    }

    async fn observe_inside(&self, netns: &std::path::Path, ifname: &IfName) -> Result<crate::Inside, KernelError> {
        let st = self.lock();
        let ns = Ns::Path(netns.to_path_buf()).label();
        Ok(crate::Inside {
            link: st.links.get(&(ns.clone(), ifname.to_string())).map(|l| ObservedLink {
                addresses: l.addresses.iter().copied().collect(),
                up: l.up,
                master: None,
            }),
            default_v4: st.routes.contains_key(&(ns.clone(), true)),
            default_v6: st.routes.contains_key(&(ns, false)),
        })
    }

    async fn host_prefixes(&self) -> Result<Vec<(ipnet::IpNet, Option<IfName>)>, KernelError> {
        // The fake host's own addresses: those of links weft did not make.
        let st = self.lock();
        Ok(st
            .links
            .iter()
            .filter(|((ns, _), _)| ns == "host")
            .flat_map(|((_, name), l)| l.addresses.iter().map(move |a| (a.trunc(), IfName::parse("link", name).ok())))
            .collect())
    }

    async fn vxlan_entries(&self, dev: &IfName) -> Result<crate::VxlanEntries, KernelError> {
        let st = self.lock();
        let mac = |m: &str| weft_model::Mac::parse("mac", m).ok();
        Ok(crate::VxlanEntries {
            fdb: st
                .fdb
                .iter()
                .filter(|((d, _), _)| d == dev.as_str())
                .filter_map(|((_, m), a)| Some((mac(m)?, *a)))
                .collect(),
            neighbours: st
                .neighbours
                .iter()
                .filter(|((d, _), _)| d == dev.as_str())
                .filter_map(|((_, a), m)| Some((*a, mac(m)?)))
                .collect(),
        })
    }

    async fn netns_id(&self, path: &std::path::Path) -> Result<u64, KernelError> {
        // A stable identity per path, as an nsfs inode would be.
        Ok(path.as_os_str().len() as u64 * 1_000_003 + path.to_string_lossy().bytes().map(u64::from).sum::<u64>())
    }
}
