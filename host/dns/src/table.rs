//! The in-memory record table: per network, the names and reverse entries
//! of its endpoints, and which networks each client namespace is on. Kept
//! indexed so a query is a few hash lookups, whatever the network's size.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use weft_model::naming::{NameRecord, RecordKind};

/// One network's zone.
#[derive(Default)]
pub struct Zone {
    /// The network's (lower-case) name: `x.<name>` names are its own.
    pub name: String,
    /// Its subnets: PTR queries inside them are answered here.
    pub subnets: Vec<IpNet>,
    /// Upstreams of this network, if overridden.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// Name -> addresses.
    forward: HashMap<String, Vec<IpAddr>>,
    /// Address -> names.
    reverse: HashMap<IpAddr, Vec<String>>,
    /// Endpoint id -> (namespace, addresses, records), to undo on removal.
    endpoints: HashMap<String, (u64, Vec<IpAddr>, Vec<NameRecord>)>,
}

/// All zones plus the client index.
#[derive(Default)]
pub struct Table {
    zones: HashMap<String, Zone>,
    /// Client address -> its namespace id.
    clients: HashMap<IpAddr, u64>,
    /// Namespace id -> the networks it is attached to.
    namespaces: HashMap<u64, HashSet<String>>,
}

/// What the table knows of a name.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name exists here; these are its addresses (possibly none of the
    /// asked family: NODATA).
    Addresses(Vec<IpAddr>),
    /// The address is in a subnet of ours; these are its names (none:
    /// NXDOMAIN).
    Names(Vec<String>),
    /// The name is ours and does not exist: NXDOMAIN.
    NxDomain,
    /// Not ours: forward.
    Forward(Option<Vec<SocketAddr>>),
}

impl Table {
    /// Add (or reset) a network's zone.
    pub fn add_network(&mut self, id: &str, name: &str, subnets: &[IpNet], upstreams: Option<Vec<SocketAddr>>) {
        let zone = self.zones.entry(id.to_owned()).or_default();
        zone.name = name.to_ascii_lowercase();
        zone.subnets = subnets.to_vec();
        zone.upstreams = upstreams;
    }

    /// Drop a network's zone and its endpoints.
    pub fn remove_network(&mut self, id: &str) {
        if let Some(zone) = self.zones.remove(id) {
            for (_, (ns, addrs, _)) in zone.endpoints {
                self.forget_client(id, ns, &addrs);
            }
        }
    }

    /// Set an endpoint's records (replacing earlier ones).
    pub fn set_endpoint(&mut self, network: &str, endpoint: &str, ns: u64, addrs: &[IpAddr], records: Vec<NameRecord>) {
        self.remove_endpoint(network, endpoint);
        let Some(zone) = self.zones.get_mut(network) else { return };
        for r in &records {
            match r.kind {
                RecordKind::Address => zone.forward.entry(r.name.clone()).or_default().push(r.address),
                RecordKind::Pointer => zone.reverse.entry(r.address).or_default().push(r.name.clone()),
            }
        }
        zone.endpoints.insert(endpoint.to_owned(), (ns, addrs.to_vec(), records));
        if ns == 0 {
            // An endpoint on another node (cluster mode): named here, but
            // it asks its own node's server, so it is no client of this one.
            return;
        }
        for a in addrs {
            self.clients.insert(*a, ns);
        }
        self.namespaces.entry(ns).or_default().insert(network.to_owned());
    }

    /// Remove an endpoint's records.
    pub fn remove_endpoint(&mut self, network: &str, endpoint: &str) {
        let Some(zone) = self.zones.get_mut(network) else { return };
        let Some((ns, addrs, records)) = zone.endpoints.remove(endpoint) else { return };
        for r in &records {
            match r.kind {
                RecordKind::Address => remove_one(&mut zone.forward, &r.name, &r.address),
                RecordKind::Pointer => remove_one(&mut zone.reverse, &r.address, &r.name),
            }
        }
        self.forget_client(network, ns, &addrs);
    }

    fn forget_client(&mut self, network: &str, ns: u64, addrs: &[IpAddr]) {
        for a in addrs {
            if self.clients.get(a) == Some(&ns) {
                self.clients.remove(a);
            }
        }
        let still_there =
            self.zones.get(network).is_some_and(|z| z.endpoints.values().any(|(other, _, _)| *other == ns));
        if !still_there && let Some(set) = self.namespaces.get_mut(&ns) {
            set.remove(network);
            if set.is_empty() {
                self.namespaces.remove(&ns);
            }
        }
    }

    /// The networks a query from `client` on `network` may see.
    fn scope(&self, network: &str, client: IpAddr) -> Vec<&Zone> {
        let mut ids: Vec<&str> = vec![network];
        if let Some(ns) = self.clients.get(&client).and_then(|ns| self.namespaces.get(ns)) {
            ids.extend(ns.iter().map(String::as_str).filter(|id| *id != network));
        }
        ids.into_iter().filter_map(|id| self.zones.get(id)).collect()
    }

    /// Resolve `name` (lower-case, no trailing dot) for `client` asking on
    /// `network`.
    pub fn lookup_name(&self, network: &str, client: IpAddr, name: &str) -> Answer {
        let scope = self.scope(network, client);
        let mut found: Option<Vec<IpAddr>> = None;
        for z in &scope {
            if let Some(addrs) = z.forward.get(name) {
                found.get_or_insert_with(Vec::new).extend(addrs.iter().copied());
            }
        }
        if let Some(mut addrs) = found {
            addrs.sort();
            addrs.dedup();
            return Answer::Addresses(addrs);
        }
        // Single-label names and names under a network the client shares are
        // ours to deny; anything else belongs to the rest of the DNS.
        let ours = !name.contains('.') || scope.iter().any(|z| name.ends_with(&format!(".{}", z.name)));
        if ours { Answer::NxDomain } else { Answer::Forward(self.upstreams(network)) }
    }

    /// Resolve a reverse lookup for `addr`.
    pub fn lookup_addr(&self, network: &str, client: IpAddr, addr: IpAddr) -> Answer {
        let scope = self.scope(network, client);
        if !scope.iter().any(|z| z.subnets.iter().any(|s| s.contains(&addr))) {
            return Answer::Forward(self.upstreams(network));
        }
        let mut names: Vec<String> = scope.iter().filter_map(|z| z.reverse.get(&addr)).flatten().cloned().collect();
        names.sort();
        names.dedup();
        Answer::Names(names)
    }

    /// The network's upstream override, if any.
    pub fn upstreams(&self, network: &str) -> Option<Vec<SocketAddr>> {
        self.zones.get(network).and_then(|z| z.upstreams.clone())
    }
}

fn remove_one<K: std::hash::Hash + Eq + Clone, V: PartialEq>(map: &mut HashMap<K, Vec<V>>, key: &K, value: &V) {
    if let Some(list) = map.get_mut(key) {
        if let Some(i) = list.iter().position(|v| v == value) {
            list.remove(i);
        }
        if list.is_empty() {
            map.remove(key);
        }
    }
}
