//! What an endpoint (one container interface on one network) is, and the
//! rules an attach request must satisfy.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::InvalidRequest;
use crate::ids::{EndpointName, IfName, Mac, NetworkName, Tenant};
use crate::net::parse_ip;
use crate::network::validate_labels;
use crate::ports::{MAX_NAMED_PORTS, NamedPort, PortMapping};

/// The interface name inside the container when the request names none.
pub const DEFAULT_IFNAME: &str = "eth0";
/// The longest netns path (the kernel's PATH_MAX).
pub const MAX_NETNS_PATH: usize = 4096;
/// DNS aliases one endpoint may have.
pub const MAX_ALIASES: usize = 32;
/// The longest request key (CNI's container id is 64 hex digits; the key
/// adds the interface name and a prefix).
pub const MAX_REQUEST_KEY: usize = 256;
/// Port mappings one endpoint may publish (each may be a range): checking
/// them against each other is quadratic, and 100,000 once took 9 s.
pub const MAX_PUBLISH: usize = 256;

/// An attach request, as the client wrote it.
#[derive(Debug, Clone, Default)]
pub struct AttachEndpoint {
    /// Owner; empty for the default tenant.
    pub tenant: String,
    /// Network name.
    pub network: String,
    /// Endpoint name, unique per network.
    pub name: String,
    /// Path of the container's network namespace file.
    pub netns: String,
    /// Interface name inside the namespace; empty for `eth0`.
    pub ifname: String,
    /// Static addresses, at most one per family.
    pub ips: Vec<String>,
    /// MAC address; empty for the Docker-style default.
    pub mac: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Published ports in Docker's `-p` syntax.
    pub publish: Vec<String>,
    /// Named container ports, `NAME=PORT[/PROTO]`.
    pub port_names: Vec<String>,
    /// `""` (an interface on the network), `none`, `host` or `container:NAME`.
    pub mode: String,
    /// Extra DNS names of the endpoint on this network.
    pub aliases: Vec<String>,
    /// Decide and answer what would be done, change nothing.
    pub dry_run: bool,
    /// Attach even if another tenant's endpoints are in the namespace
    /// (operators only).
    pub allow_foreign_netns: bool,
    /// The attach's identity for retries (CNI: container id and ifname):
    /// repeated with the same request it answers the endpoint made the
    /// first time; with a different one it is refused. Empty: none.
    pub request_key: String,
}

/// A detach request, as the client wrote it.
#[derive(Debug, Clone, Default)]
pub struct DetachEndpoint {
    /// Owner; empty for the default tenant.
    pub tenant: String,
    /// Network name.
    pub network: String,
    /// Endpoint name; or empty, and `request_key` names it.
    pub name: String,
    /// The request key the endpoint was attached with.
    pub request_key: String,
    /// An endpoint (or network) that does not exist is success, not
    /// NOT_FOUND: a retried detach, or CNI's DEL, which runtimes repeat.
    pub allow_missing: bool,
    /// Decide and answer what would be done, change nothing.
    pub dry_run: bool,
}

impl DetachEndpoint {
    /// The endpoint the request names: by name or by request key (one of
    /// the two).
    pub fn target(&self) -> Result<DetachTarget, InvalidRequest> {
        match (self.name.is_empty(), self.request_key.is_empty()) {
            (false, true) => Ok(DetachTarget::Name(EndpointName::parse("name", &self.name)?)),
            (true, false) => Ok(DetachTarget::Key(check_request_key(&self.request_key)?)),
            (true, true) => Err(InvalidRequest::new("name", "name the endpoint, or give its request_key")),
            (false, false) => {
                Err(InvalidRequest::new("request_key", "give the endpoint's name or its request_key, not both"))
            }
        }
    }
}

/// Which endpoint a detach names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetachTarget {
    /// By name.
    Name(EndpointName),
    /// By the request key it was attached with.
    Key(String),
}

/// A request key: 1 to [`MAX_REQUEST_KEY`] printable ASCII bytes, no spaces.
pub fn check_request_key(s: &str) -> Result<String, InvalidRequest> {
    if s.len() > MAX_REQUEST_KEY {
        return Err(InvalidRequest::new(
            "request_key",
            format!("{} is longer than {MAX_REQUEST_KEY} bytes", crate::ids::shown(s)),
        ));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidRequest::new(
            "request_key",
            format!("{} must be printable ASCII without spaces", crate::ids::shown(s)),
        ));
    }
    Ok(s.to_owned())
}

/// How an endpoint joins its network, as Docker's network modes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointMode {
    /// An interface on the network (veth on a bridge, or a macvlan child).
    #[default]
    Network,
    /// No interface: only `lo` is brought up in the namespace.
    None,
    /// The host's own network stack: recorded, no interface.
    Host,
    /// Shares the namespace (and addresses) of another endpoint of the same
    /// network.
    Container(EndpointName),
}

impl EndpointMode {
    /// Parse `""`, `none`, `host` or `container:NAME`.
    pub fn parse(s: &str) -> Result<EndpointMode, InvalidRequest> {
        match s {
            "" => Ok(EndpointMode::Network),
            "none" => Ok(EndpointMode::None),
            "host" => Ok(EndpointMode::Host),
            other => match other.strip_prefix("container:") {
                Some(name) => Ok(EndpointMode::Container(EndpointName::parse("mode", name)?)),
                None => Err(InvalidRequest::new(
                    "mode",
                    format!("mode {other:?} must be empty, none, host or container:ENDPOINT"),
                )),
            },
        }
    }
}

impl std::fmt::Display for EndpointMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointMode::Network => f.write_str("network"),
            EndpointMode::None => f.write_str("none"),
            EndpointMode::Host => f.write_str("host"),
            EndpointMode::Container(n) => write!(f, "container:{n}"),
        }
    }
}

/// A validated attach request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    /// Owner.
    pub tenant: Tenant,
    /// Network name.
    pub network: NetworkName,
    /// Endpoint name.
    pub name: EndpointName,
    /// Network namespace file.
    pub netns: PathBuf,
    /// Interface name inside the namespace.
    pub ifname: IfName,
    /// True when the request named no interface: the controller picks the
    /// next free `ethN` in the namespace (eth0, then eth1, ...).
    #[serde(default)]
    pub auto_ifname: bool,
    /// Static addresses asked for.
    pub ips: Vec<IpAddr>,
    /// MAC asked for.
    pub mac: Option<Mac>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Published ports.
    #[serde(default)]
    pub publish: Vec<PortMapping>,
    /// Named container ports (what a policy's `port: NAME` means on it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_names: Vec<NamedPort>,
    /// How the endpoint joins the network.
    #[serde(default)]
    pub mode: EndpointMode,
    /// Extra DNS names (lower-case).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The attach's retry identity (see [`AttachEndpoint::request_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
}

impl EndpointSpec {
    /// The first field in which a retried attach (`self`, as asked) differs
    /// from the one that made `made`; None when it is the same request.
    /// An interface name the controller picked is not a difference.
    pub fn differs_from(&self, made: &EndpointSpec) -> Option<&'static str> {
        let fields = [
            ("name", self.name == made.name),
            ("network", self.network == made.network),
            ("netns", self.netns == made.netns),
            ("ifname", (self.auto_ifname && made.auto_ifname) || self.ifname == made.ifname),
            ("ips", self.ips == made.ips),
            ("mac", self.mac == made.mac),
            ("labels", self.labels == made.labels),
            ("publish", self.publish == made.publish),
            ("port_names", self.port_names == made.port_names),
            ("mode", self.mode == made.mode),
            ("aliases", self.aliases == made.aliases),
        ];
        fields.into_iter().find(|(_, same)| !same).map(|(f, _)| f)
    }
}

impl AttachEndpoint {
    /// Check every rule that needs no other state and build the spec.
    pub fn validate(&self) -> Result<EndpointSpec, InvalidRequest> {
        let tenant = Tenant::parse("tenant", &self.tenant)?;
        let network = NetworkName::parse("network", &self.network)?;
        let name = EndpointName::parse("name", &self.name)?;
        let mode = EndpointMode::parse(&self.mode)?;
        let needs_ns = !matches!(mode, EndpointMode::Host | EndpointMode::Container(_));
        if self.netns.is_empty() && needs_ns {
            return Err(InvalidRequest::new("netns", "a network namespace path is required"));
        }
        if !self.netns.is_empty() && !needs_ns {
            return Err(InvalidRequest::new("netns", format!("mode {mode} takes no netns")));
        }
        if mode != EndpointMode::Network {
            for (field, given) in [
                ("ips", !self.ips.is_empty()),
                ("mac", !self.mac.is_empty()),
                ("publish", !self.publish.is_empty()),
                ("port_names", !self.port_names.is_empty()),
                ("ifname", !self.ifname.is_empty()),
            ] {
                if given {
                    return Err(InvalidRequest::new(field, format!("does not apply to mode {mode}")));
                }
            }
        }
        if self.netns.len() > MAX_NETNS_PATH {
            return Err(InvalidRequest::new(
                "netns",
                format!("{} is longer than {MAX_NETNS_PATH} bytes (PATH_MAX)", crate::ids::shown(&self.netns)),
            ));
        }
        let netns = PathBuf::from(&self.netns);
        if needs_ns && !netns.is_absolute() {
            return Err(InvalidRequest::new(
                "netns",
                format!("{} must be an absolute path", crate::ids::shown(&self.netns)),
            ));
        }
        let ifname = if self.ifname.is_empty() { DEFAULT_IFNAME } else { &self.ifname };
        let ifname = IfName::parse("ifname", ifname)?;
        if ifname.as_str() == "lo" {
            return Err(InvalidRequest::new("ifname", "\"lo\" is the namespace's loopback interface"));
        }
        let mut ips: Vec<IpAddr> = Vec::new();
        for (i, s) in self.ips.iter().enumerate() {
            let ip = parse_ip(&format!("ips[{i}]"), s)?;
            if ips.iter().any(|p| p.is_ipv4() == ip.is_ipv4()) {
                return Err(InvalidRequest::new(format!("ips[{i}]"), format!("{ip}: at most one address per family")));
            }
            ips.push(ip);
        }
        let mac = if self.mac.is_empty() { None } else { Some(Mac::parse("mac", &self.mac)?) };
        validate_labels(&self.labels)?;
        for (field, n, max) in [
            ("aliases", self.aliases.len(), MAX_ALIASES),
            ("publish", self.publish.len(), MAX_PUBLISH),
            ("port_names", self.port_names.len(), MAX_NAMED_PORTS),
        ] {
            if n > max {
                return Err(InvalidRequest::new(field, format!("{n} entries; at most {max} per endpoint")));
            }
        }
        let mut aliases: Vec<String> = Vec::new();
        for (i, a) in self.aliases.iter().enumerate() {
            let a = a.to_ascii_lowercase();
            if !crate::naming::is_dns_name(&a) {
                return Err(InvalidRequest::new(
                    format!("aliases[{i}]"),
                    format!("{} is not a valid DNS name", crate::ids::shown(&a)),
                ));
            }
            if !aliases.contains(&a) {
                aliases.push(a);
            }
        }
        let mut publish: Vec<PortMapping> = Vec::new();
        for (i, p) in self.publish.iter().enumerate() {
            let field = format!("publish[{i}]");
            let m = PortMapping::parse(&field, p)?;
            if let Some(other) = publish.iter().find(|o| o.clashes_with(&m)) {
                return Err(InvalidRequest::new(field, format!("{m} overlaps {other} of the same request")));
            }
            publish.push(m);
        }
        let mut port_names: Vec<NamedPort> = Vec::new();
        for (i, p) in self.port_names.iter().enumerate() {
            let field = format!("port_names[{i}]");
            let n = NamedPort::parse(&field, p)?;
            if let Some(other) = port_names.iter().find(|o| o.name == n.name) {
                let why = format!("{n}: the name {:?} is already {}/{}", n.name, other.port, other.proto);
                return Err(InvalidRequest::new(field, why));
            }
            port_names.push(n);
        }
        Ok(EndpointSpec {
            tenant,
            network,
            name,
            netns,
            ifname,
            auto_ifname: self.ifname.is_empty(),
            ips,
            mac,
            labels: self.labels.clone(),
            publish,
            port_names,
            mode,
            aliases,
            request_key: if self.request_key.is_empty() { None } else { Some(check_request_key(&self.request_key)?) },
        })
    }
}

/// Where an endpoint is in its life. An endpoint is recorded `Pending`
/// before its kernel objects are made, and `Ready` once they exist; a
/// `Pending` record found at start-up was never acknowledged and is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointState {
    /// Intent recorded, kernel objects not (fully) made.
    Pending,
    /// Attached and acknowledged.
    Ready,
}

/// An endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Unique id (32 hex digits).
    pub id: String,
    /// Id of the network it is attached to.
    pub network_id: String,
    /// The validated request.
    pub spec: EndpointSpec,
    /// The host end of the veth pair (a port of the bridge).
    pub host_ifname: IfName,
    /// Identity of the network namespace (its nsfs inode), so two paths to
    /// one namespace (`/run/netns/x`, `/proc/PID/ns/net`) are recognised.
    #[serde(default)]
    pub netns_id: u64,
    /// MAC of the container end.
    pub mac: Mac,
    /// Addresses with the subnet's prefix length.
    pub addresses: Vec<IpNet>,
    /// Lifecycle state.
    pub state: EndpointState,
    /// Policy groups the network's policy component classified it into.
    #[serde(default)]
    pub groups: Vec<String>,
    /// In cluster mode, the node it is on (None: this node, or no cluster).
    #[serde(default)]
    pub node: Option<String>,
}

impl Endpoint {
    /// The host-side veth name: `veth` and 11 hex digits of the id.
    pub fn host_ifname_for(id: &str) -> Result<IfName, InvalidRequest> {
        IfName::parse("ifname", &format!("veth{}", &id[..id.len().min(11)]))
    }
    /// A temporary name for the container end while it is still in the host
    /// namespace, before it is moved and renamed.
    pub fn peer_tmp_ifname_for(id: &str) -> Result<IfName, InvalidRequest> {
        IfName::parse("ifname", &format!("vtmp{}", &id[..id.len().min(11)]))
    }
}

#[cfg(test)]
#[path = "endpoint_tests.rs"]
mod tests;
