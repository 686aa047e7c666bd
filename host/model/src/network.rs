//! What a network is, and the rules a request to create one must satisfy.
//! Rules that need other networks (name unique per tenant, no overlap) are
//! checked by the controller with [`conflicts_with`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::InvalidRequest;
use crate::ids::{IfName, NetworkName, Tenant};
use crate::net::{is_usable, overlaps, parse_cidr, parse_ip, reserved_overlap, usable_range};

/// The default IPAM component, a built-in addressed by its folder name.
pub const DEFAULT_IPAM: &str = "ipam-default";
/// Driver names weft implements.
pub const DRIVERS: &[&str] = &["bridge", "macvlan", "overlay"];
/// Network options (`--opt KEY=VALUE`) weft understands.
pub const KNOWN_OPTIONS: &[&str] =
    &["mtu", "bridge_name", "parent", "macvlan_mode", "icc", "dns", "dns_upstream", "vni"];
/// The VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Where VNIs weft picks itself start: the ones below are left to
/// operators who give `--opt vni=N` (Docker's overlay also starts at 4096).
pub const FIRST_AUTO_VNI: u32 = 4096;
/// What VXLAN adds to a frame over an IPv4 underlay (outer IPv4 20 + UDP 8
/// + VXLAN 8 + inner Ethernet 14): an overlay's MTU is the underlay's less this.
pub const VXLAN_OVERHEAD: u32 = 50;
/// macvlan modes (`--opt macvlan_mode=`), as the kernel names them.
pub const MACVLAN_MODES: &[&str] = &["bridge", "vepa", "private", "passthru"];
/// Smallest MTU Linux accepts for IPv4 (RFC 791); IPv6 needs 1280 (RFC 8200).
pub const MIN_MTU_V4: u32 = 68;
/// Smallest MTU for a network with an IPv6 subnet.
pub const MIN_MTU_V6: u32 = 1280;
/// Largest MTU a bridge accepts.
pub const MAX_MTU: u32 = 65535;

/// One subnet of a create request, as the client wrote it.
#[derive(Debug, Clone, Default)]
pub struct SubnetRequest {
    /// CIDR, e.g. `10.89.0.0/24`.
    pub subnet: String,
    /// Gateway address; empty for the first usable address.
    pub gateway: String,
    /// A narrower CIDR to allocate endpoints from; empty for the whole subnet.
    pub ip_range: String,
}

/// A create-network request, as the client wrote it.
#[derive(Debug, Clone, Default)]
pub struct CreateNetwork {
    /// Owner; empty for the default tenant.
    pub tenant: String,
    /// Network name.
    pub name: String,
    /// Driver; empty for `bridge`.
    pub driver: String,
    /// One IPv4 and/or one IPv6 subnet.
    pub subnets: Vec<SubnetRequest>,
    /// No masquerade and no route out.
    pub internal: bool,
    /// Driver options (`mtu`, `bridge_name`; macvlan: `parent`, `macvlan_mode`).
    pub options: BTreeMap<String, String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// IPAM component name; empty for [`DEFAULT_IPAM`].
    pub ipam: String,
    /// Policy component name; empty for [`crate::policy::DEFAULT_POLICY`].
    pub policy: String,
    /// Naming component name; empty for [`crate::naming::DEFAULT_NAMING`].
    pub naming: String,
    /// Configuration handed to the network's components (`--module-config`).
    pub module_config: BTreeMap<String, String>,
    /// Decide and answer what would be done, change nothing.
    pub dry_run: bool,
}

/// One validated subnet of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// The prefix.
    pub subnet: IpNet,
    /// Gateway address, held by the bridge.
    pub gateway: IpAddr,
    /// Where endpoint addresses come from, if narrower than the subnet.
    pub ip_range: Option<IpNet>,
}

impl Subnet {
    /// The gateway with the subnet's prefix length (as put on the bridge).
    pub fn gateway_cidr(&self) -> IpNet {
        IpNet::new(self.gateway, self.subnet.prefix_len()).unwrap_or(self.subnet)
    }
}

/// A macvlan network's parent interface and mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Macvlan {
    /// The host interface the endpoints' macvlan links hang off.
    pub parent: IfName,
    /// One of [`MACVLAN_MODES`].
    pub mode: String,
}

/// A validated network definition: everything but the identity the
/// controller assigns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Owner.
    pub tenant: Tenant,
    /// Name, unique per tenant.
    pub name: NetworkName,
    /// Driver (`bridge`).
    pub driver: String,
    /// Subnets, at most one per family.
    pub subnets: Vec<Subnet>,
    /// Internal network: no egress.
    pub internal: bool,
    /// MTU of the bridge and its veths, if set.
    pub mtu: Option<u32>,
    /// Bridge name asked for; derived from the id when absent.
    pub bridge_name: Option<IfName>,
    /// macvlan networks: the parent interface and the mode.
    #[serde(default)]
    pub macvlan: Option<Macvlan>,
    /// Options as given (validated).
    pub options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// IPAM component bound to the network.
    pub ipam: String,
    /// Policy component bound to the network.
    #[serde(default = "default_policy")]
    pub policy: String,
    /// Naming component bound to the network.
    #[serde(default = "default_naming")]
    pub naming: String,
    /// The embedded DNS server answers on the gateways (`--opt dns=false`
    /// turns it off; never on macvlan networks, whose gateway is not the host).
    #[serde(default = "default_true")]
    pub dns: bool,
    /// Upstream resolvers of this network (`--opt dns_upstream=IP[:PORT],...`).
    #[serde(default)]
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// Configuration handed to the network's IPAM, policy and naming
    /// components with every call.
    #[serde(default)]
    pub module_config: BTreeMap<String, String>,
    /// An overlay network's VNI, if the request named one (`--opt vni=N`).
    #[serde(default)]
    pub vni: Option<u32>,
}

impl NetworkSpec {
    /// True for the overlay driver (a bridge on every node joined by VXLAN).
    pub fn is_overlay(&self) -> bool {
        self.driver == "overlay"
    }

    /// The module configuration as the WIT `config` list.
    pub fn config_list(&self) -> Vec<(String, String)> {
        pairs(&self.module_config)
    }

    /// The options as the WIT `config` list.
    pub fn options_list(&self) -> Vec<(String, String)> {
        pairs(&self.options)
    }
}

/// A string map as the key/value list WIT records carry.
pub fn pairs(m: &BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Most keys of a network's module configuration.
pub const MAX_MODULE_CONFIG_KEYS: usize = 256;
/// Largest module configuration (keys and values together).
pub const MAX_MODULE_CONFIG_BYTES: usize = 1 << 20;

/// Check a module name: 1 to 63 lowercase letters, digits and '-', starting
/// with a letter.
pub fn validate_module_name(field: &str, s: &str) -> Result<(), InvalidRequest> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(InvalidRequest::new(
            field,
            format!(
                "module name {} must be 1 to 63 lowercase letters, digits or '-', starting with a letter and not ending with '-'",
                crate::ids::shown(s)
            ),
        ))
    }
}

/// Check a module configuration: bounded keys, sizes; values may hold any
/// text but NUL (a file's contents, say).
pub fn validate_module_config(m: &BTreeMap<String, String>) -> Result<(), InvalidRequest> {
    if m.len() > MAX_MODULE_CONFIG_KEYS {
        return Err(InvalidRequest::new(
            "module_config",
            format!("{} keys (at most {MAX_MODULE_CONFIG_KEYS})", m.len()),
        ));
    }
    let total: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_MODULE_CONFIG_BYTES {
        return Err(InvalidRequest::new(
            "module_config",
            format!("{total} bytes in all (at most {MAX_MODULE_CONFIG_BYTES})"),
        ));
    }
    for (k, v) in m {
        if k.is_empty() || k.len() > 253 || !k.bytes().all(|b| b.is_ascii_graphic() && b != b'=') {
            return Err(InvalidRequest::new(
                format!("module_config[{k}]"),
                format!("key {k:?} must be 1 to 253 printable characters without '='"),
            ));
        }
        if v.contains('\0') {
            return Err(InvalidRequest::new(format!("module_config[{k}]"), "value must not contain NUL"));
        }
    }
    Ok(())
}

fn default_naming() -> String {
    crate::naming::DEFAULT_NAMING.to_owned()
}

fn default_true() -> bool {
    true
}

fn default_policy() -> String {
    crate::policy::DEFAULT_POLICY.to_owned()
}

/// A network as stored: the spec plus its identity and derived names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Unique id (32 hex digits).
    pub id: String,
    /// The validated definition.
    pub spec: NetworkSpec,
    /// The network's host link: the Linux bridge's name, or a macvlan
    /// network's parent interface.
    pub bridge: IfName,
    /// An overlay network's tunnel (set once its VNI is allocated).
    #[serde(default)]
    pub overlay: Option<Overlay>,
}

/// An overlay network's tunnel: the same on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlay {
    /// The VXLAN network identifier, unique in the cluster.
    pub vni: u32,
    /// The VXLAN device, a port of the network's bridge: `vx-` and the
    /// first 12 hex digits of the network's id.
    pub vxlan: IfName,
}

impl Network {
    /// True for a bridge network (weft owns the bridge and its firewall).
    pub fn is_bridge(&self) -> bool {
        self.spec.macvlan.is_none()
    }

    /// Give a validated spec its identity; the bridge is named `br-` and the
    /// first 12 hex digits of the id unless the spec names one (as Docker does).
    pub fn new(id: String, spec: NetworkSpec) -> Result<Network, InvalidRequest> {
        let bridge = match (&spec.macvlan, &spec.bridge_name) {
            (Some(m), _) => m.parent.clone(),
            (None, Some(b)) => b.clone(),
            (None, None) => IfName::parse("options.bridge_name", &format!("br-{}", &id[..id.len().min(12)]))?,
        };
        Ok(Network { id, spec, bridge, overlay: None })
    }

    /// True for an overlay network.
    pub fn is_overlay(&self) -> bool {
        self.spec.is_overlay()
    }

    /// Give an overlay network its VNI (and so its VXLAN device's name).
    pub fn with_vni(mut self, vni: u32) -> Result<Network, InvalidRequest> {
        let vxlan = IfName::parse("options.vni", &format!("vx-{}", &self.id[..self.id.len().min(12)]))?;
        self.overlay = Some(Overlay { vni, vxlan });
        Ok(self)
    }
}

/// DNS upstreams one network may name (`--opt dns_upstream=`).
pub const MAX_DNS_UPSTREAMS: usize = 8;
/// The longest value of a driver option.
pub const MAX_OPTION_BYTES: usize = 1024;

/// Labels one object may carry: a listing carries every label of every
/// object, and 10,000 labels of 300 bytes once made a tenant's `network ls`
/// larger than a gRPC message may be.
pub const MAX_LABELS: usize = 64;

/// Bytes of labels (keys and values) one object may carry, so that a
/// listing of a tenant's objects at its quotas stays a message a client can
/// take.
pub const MAX_LABEL_BYTES: usize = 4096;

fn validate_label_map(field: &str, m: &BTreeMap<String, String>) -> Result<(), InvalidRequest> {
    if m.len() > MAX_LABELS {
        return Err(InvalidRequest::new(field, format!("{} labels; at most {MAX_LABELS}", m.len())));
    }
    let bytes: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_LABEL_BYTES {
        return Err(InvalidRequest::new(field, format!("{bytes} bytes of labels; at most {MAX_LABEL_BYTES}")));
    }
    for (k, v) in m {
        if k.is_empty() || k.len() > 253 || !k.bytes().all(|b| b.is_ascii_graphic() && b != b'=') {
            return Err(InvalidRequest::new(
                format!("{field}[{k}]"),
                format!("key {k:?} must be 1 to 253 printable characters without '='"),
            ));
        }
        if v.len() > 4096 || v.chars().any(char::is_control) {
            return Err(InvalidRequest::new(
                format!("{field}[{k}]"),
                "value must be at most 4096 characters without control characters",
            ));
        }
    }
    Ok(())
}

/// Validate a label map (shared by networks and endpoints).
pub fn validate_labels(m: &BTreeMap<String, String>) -> Result<(), InvalidRequest> {
    validate_label_map("labels", m)
}

impl CreateNetwork {
    /// Check every rule that needs no other state and build the spec.
    pub fn validate(&self) -> Result<NetworkSpec, InvalidRequest> {
        let tenant = Tenant::parse("tenant", &self.tenant)?;
        let name = NetworkName::parse("name", &self.name)?;
        let driver = if self.driver.is_empty() { "bridge".to_owned() } else { self.driver.clone() };
        if !DRIVERS.contains(&driver.as_str()) {
            return Err(InvalidRequest::new(
                "driver",
                format!("driver {driver:?} is not supported (supported: {})", DRIVERS.join(", ")),
            ));
        }
        if self.subnets.is_empty() {
            return Err(InvalidRequest::new("subnets", "at least one subnet is required"));
        }
        let mut subnets: Vec<Subnet> = Vec::new();
        for (i, s) in self.subnets.iter().enumerate() {
            let field = format!("subnets[{i}]");
            let subnet = parse_cidr(&format!("{field}.subnet"), &s.subnet)?;
            if let Some(range) = reserved_overlap(&subnet) {
                return Err(InvalidRequest::new(
                    format!("{field}.subnet"),
                    format!("{subnet}: overlaps {range}, which no container network may use"),
                ));
            }
            if let Some(prev) = subnets.iter().find(|p| p.subnet.network().is_ipv4() == subnet.network().is_ipv4()) {
                return Err(InvalidRequest::new(
                    format!("{field}.subnet"),
                    format!(
                        "{subnet}: only one subnet per address family is supported ({} already given)",
                        prev.subnet
                    ),
                ));
            }
            let (first, _) = usable_range(&subnet);
            if subnet.prefix_len() >= subnet.max_prefix_len() - 1 {
                return Err(InvalidRequest::new(
                    format!("{field}.subnet"),
                    format!(
                        "{subnet}: too small for a gateway and an endpoint (prefix must be < /{})",
                        subnet.max_prefix_len() - 1
                    ),
                ));
            }
            let gateway = if s.gateway.is_empty() {
                first
            } else {
                let g = parse_ip(&format!("{field}.gateway"), &s.gateway)?;
                if !is_usable(&subnet, g) {
                    return Err(InvalidRequest::new(
                        format!("{field}.gateway"),
                        format!("gateway {g} must be a usable address inside subnet {subnet}"),
                    ));
                }
                g
            };
            let ip_range = if s.ip_range.is_empty() {
                None
            } else {
                let r = parse_cidr(&format!("{field}.ip_range"), &s.ip_range)?;
                if !subnet.contains(&r) {
                    return Err(InvalidRequest::new(
                        format!("{field}.ip_range"),
                        format!("ip-range {r} must lie inside subnet {subnet}"),
                    ));
                }
                Some(r)
            };
            subnets.push(Subnet { subnet, gateway, ip_range });
        }
        let mut mtu = None;
        let mut bridge_name = None;
        let mut parent = None;
        let mut dns = true;
        let mut dns_upstream = Vec::new();
        let mut mode = "bridge".to_owned();
        let mut vni = None;
        for (k, v) in &self.options {
            if k.len() > 64 || v.len() > MAX_OPTION_BYTES {
                return Err(InvalidRequest::new(
                    format!("options[{}]", crate::ids::shown(k)),
                    format!("keys are at most 64 bytes and values at most {MAX_OPTION_BYTES}"),
                ));
            }
            let field = format!("options[{k}]");
            match k.as_str() {
                "mtu" => {
                    let n: u32 =
                        v.parse().map_err(|_| InvalidRequest::new(&field, format!("mtu {v:?} is not a number")))?;
                    let min =
                        if subnets.iter().any(|s| s.subnet.network().is_ipv6()) { MIN_MTU_V6 } else { MIN_MTU_V4 };
                    if !(min..=MAX_MTU).contains(&n) {
                        return Err(InvalidRequest::new(field, format!("mtu {n} must be between {min} and {MAX_MTU}")));
                    }
                    mtu = Some(n);
                }
                "bridge_name" if driver == "bridge" => bridge_name = Some(IfName::parse(&field, v)?),
                "vni" if driver == "overlay" => {
                    let n: u32 = v.parse().ok().filter(|n| (1..=MAX_VNI).contains(n)).ok_or_else(|| {
                        InvalidRequest::new(
                            &field,
                            format!("vni {} must be a number from 1 to {MAX_VNI}", crate::ids::shown(v)),
                        )
                    })?;
                    vni = Some(n);
                }
                "parent" if driver == "macvlan" => {
                    let p = IfName::parse(&field, v)?;
                    if p.as_str() == "lo" {
                        return Err(InvalidRequest::new(
                            field,
                            "parent \"lo\" is the loopback interface: macvlan needs an Ethernet parent",
                        ));
                    }
                    parent = Some(p);
                }
                "macvlan_mode" if driver == "macvlan" => {
                    if !MACVLAN_MODES.contains(&v.as_str()) {
                        return Err(InvalidRequest::new(
                            field,
                            format!("macvlan_mode {v:?} must be one of {}", MACVLAN_MODES.join(", ")),
                        ));
                    }
                    mode = v.clone();
                }
                // Interpreted by the network's policy component.
                "icc" => {}
                "dns" => {
                    dns = match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(InvalidRequest::new(field, format!("dns={v:?} must be true or false"))),
                    }
                }
                "dns_upstream" => {
                    let parts: Vec<&str> = v.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
                    if parts.len() > MAX_DNS_UPSTREAMS {
                        return Err(InvalidRequest::new(
                            field,
                            format!("{} upstreams; at most {MAX_DNS_UPSTREAMS}", parts.len()),
                        ));
                    }
                    for part in parts {
                        let up = part
                            .parse::<std::net::SocketAddr>()
                            .ok()
                            .or_else(|| part.parse::<IpAddr>().ok().map(|ip| std::net::SocketAddr::new(ip, 53)))
                            .ok_or_else(|| {
                                InvalidRequest::new(
                                    &field,
                                    format!("{} is not IP, IP:PORT or [IPv6]:PORT", crate::ids::shown(part)),
                                )
                            })?;
                        dns_upstream.push(up);
                    }
                }
                "bridge_name" | "parent" | "macvlan_mode" | "vni" => {
                    return Err(InvalidRequest::new(
                        field,
                        format!("option {k:?} does not apply to driver {driver:?}"),
                    ));
                }
                _ => {
                    return Err(InvalidRequest::new(
                        field,
                        format!("unknown option {k:?} (known: {})", KNOWN_OPTIONS.join(", ")),
                    ));
                }
            }
        }
        let macvlan = if driver == "macvlan" {
            let parent = parent.ok_or_else(|| {
                InvalidRequest::new("options[parent]", "a macvlan network needs --opt parent=INTERFACE")
            })?;
            if self.internal {
                return Err(InvalidRequest::new("internal", "a macvlan network cannot be internal"));
            }
            Some(Macvlan { parent, mode })
        } else {
            None
        };
        validate_label_map("labels", &self.labels)?;
        let is_bridge = macvlan.is_none();
        let ipam = if self.ipam.is_empty() { DEFAULT_IPAM.to_owned() } else { self.ipam.clone() };
        let policy = if self.policy.is_empty() { default_policy() } else { self.policy.clone() };
        let naming = if self.naming.is_empty() { default_naming() } else { self.naming.clone() };
        validate_module_name("ipam", &ipam)?;
        validate_module_name("policy", &policy)?;
        validate_module_name("naming", &naming)?;
        validate_module_config(&self.module_config)?;
        Ok(NetworkSpec {
            tenant,
            name,
            driver,
            subnets,
            internal: self.internal,
            mtu,
            bridge_name,
            macvlan,
            policy,
            naming,
            module_config: self.module_config.clone(),
            dns: dns && is_bridge,
            dns_upstream,
            options: self.options.clone(),
            labels: self.labels.clone(),
            ipam,
            vni,
        })
    }
}

/// Why `spec` cannot coexist with `existing`: same name for the tenant,
/// overlapping subnets (across all tenants: they share the host's routing
/// table), or the same bridge name. Another tenant's network is never named,
/// nor its subnet: the message says what is unavailable.
pub fn conflicts_with(spec: &NetworkSpec, bridge: &IfName, existing: &Network) -> Option<InvalidOrExists> {
    let own = existing.spec.tenant == spec.tenant;
    if own && existing.spec.name == spec.name {
        return Some(InvalidOrExists::Exists(format!(
            "network {:?} already exists for tenant {:?}",
            spec.name.as_str(),
            spec.tenant.as_str()
        )));
    }
    for (i, s) in spec.subnets.iter().enumerate() {
        for e in &existing.spec.subnets {
            if overlaps(&s.subnet, &e.subnet) {
                let reason = if own {
                    format!("{} overlaps {} of network {:?}", s.subnet, e.subnet, existing.spec.name.as_str())
                } else {
                    format!("{} overlaps a subnet in use", s.subnet)
                };
                return Some(InvalidOrExists::Invalid(InvalidRequest::new(format!("subnets[{i}].subnet"), reason)));
            }
        }
    }
    if &existing.bridge == bridge {
        return Some(InvalidOrExists::Exists(if own {
            format!("interface {bridge} is already used by network {:?}", existing.spec.name.as_str())
        } else {
            format!("interface {bridge} is in use")
        }));
    }
    None
}

/// The two ways a new network can clash with an existing one.
#[derive(Debug, Clone)]
pub enum InvalidOrExists {
    /// A rule about the request (overlap).
    Invalid(InvalidRequest),
    /// An identity already taken (name, bridge).
    Exists(String),
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
