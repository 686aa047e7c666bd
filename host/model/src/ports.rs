//! Published ports: `[HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|udp|sctp]`,
//! as Docker writes them. A mapping is validated once here; the planner
//! expands it into one DNAT map element per port.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::InvalidRequest;

/// Most ports one mapping may cover (each becomes a map element).
pub const MAX_RANGE: u32 = 4096;

/// A transport protocol with ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// The protocol's name as nftables and users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    /// Parse `tcp`, `udp` or `sctp`; empty means TCP.
    pub fn parse(field: &str, s: &str) -> Result<Proto, InvalidRequest> {
        match s.to_ascii_lowercase().as_str() {
            "" | "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            _ => Err(InvalidRequest::new(field, format!("protocol {s:?} must be tcp, udp or sctp"))),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port range of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Only this host address; None for every address of the host.
    pub host_ip: Option<IpAddr>,
    /// First host port.
    pub host_port: u16,
    /// Last host port (== host_port for one port).
    pub host_port_end: u16,
    /// First container port.
    pub container_port: u16,
    /// Protocol.
    pub proto: Proto,
}

impl PortMapping {
    /// Number of ports covered.
    pub fn len(&self) -> u16 {
        self.host_port_end - self.host_port + 1
    }

    /// Always false: a mapping covers at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// (host port, container port) for every port of the range.
    pub fn pairs(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        (0..self.len()).map(move |i| (self.host_port + i, self.container_port + i))
    }

    /// True if the two mappings would claim the same host ip:port/proto.
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port <= other.host_port_end
            && other.host_port <= self.host_port_end
            && match (self.host_ip, other.host_ip) {
                (None, _) | (_, None) => true,
                (Some(a), Some(b)) => a == b,
            }
    }

    /// Parse Docker's `-p` syntax.
    pub fn parse(field: &str, s: &str) -> Result<PortMapping, InvalidRequest> {
        let bad = |why: &str| InvalidRequest::new(field, format!("{s:?}: {why}"));
        let (spec, proto) = match s.rsplit_once('/') {
            Some((a, p)) => (a, Proto::parse(field, p)?),
            None => (s, Proto::Tcp),
        };
        // The host IP may be IPv6 in brackets: [::1]:8080:80.
        let (host_ip, rest) = if let Some(stripped) = spec.strip_prefix('[') {
            let (ip, rest) = stripped.split_once("]:").ok_or_else(|| bad("unclosed '[' around the host IP"))?;
            (Some(ip), rest)
        } else {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.len() {
                2 => (None, spec),
                3 => (Some(parts[0]), &spec[parts[0].len() + 1..]),
                _ => return Err(bad("expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]")),
            }
        };
        let host_ip = match host_ip {
            None | Some("") => None,
            Some(ip) => Some(ip.parse::<IpAddr>().map_err(|_| bad(&format!("{ip:?} is not an IP address")))?),
        };
        let host_ip = host_ip.filter(|ip| !ip.is_unspecified());
        // A port is published on an address of this host: never on a
        // broadcast or multicast address.
        if let Some(ip) = host_ip
            && (ip.is_multicast() || ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST))
        {
            return Err(bad(&format!("{ip} is a broadcast or multicast address, not one of this host's")));
        }
        let (h, c) = rest.split_once(':').ok_or_else(|| bad("expected HOST_PORT:CONTAINER_PORT"))?;
        let (h0, h1) = port_range(h).map_err(|w| bad(&w))?;
        let (c0, c1) = port_range(c).map_err(|w| bad(&w))?;
        if h1 - h0 != c1 - c0 {
            return Err(bad("host and container port ranges must be the same length"));
        }
        if u32::from(h1 - h0) + 1 > MAX_RANGE {
            return Err(bad(&format!("a range may cover at most {MAX_RANGE} ports")));
        }
        Ok(PortMapping { host_ip, host_port: h0, host_port_end: h1, container_port: c0, proto })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        let end = self.container_port + (self.host_port_end - self.host_port);
        if self.len() == 1 {
            write!(f, "{}:{}/{}", self.host_port, self.container_port, self.proto)
        } else {
            write!(f, "{}-{}:{}-{end}/{}", self.host_port, self.host_port_end, self.container_port, self.proto)
        }
    }
}

/// Most named ports one endpoint may declare.
pub const MAX_NAMED_PORTS: usize = 64;

/// A named container port, as a Kubernetes container declares one
/// (`ports: [{name: http, containerPort: 80}]`): `NAME=PORT[/PROTO]`. A
/// NetworkPolicy may allow `port: http`, which means this port on each
/// destination endpoint that declares the name, and nothing on one that
/// does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPort {
    /// The name: an IANA service name as Kubernetes checks it (1 to 15
    /// lower-case letters, digits and '-', at least one letter, no '-' at
    /// either end or twice in a row).
    pub name: String,
    /// The container port.
    pub port: u16,
    /// Its protocol.
    pub proto: Proto,
}

impl NamedPort {
    /// Parse `NAME=PORT[/tcp|udp|sctp]` (TCP when no protocol is given).
    pub fn parse(field: &str, s: &str) -> Result<NamedPort, InvalidRequest> {
        let bad = |why: String| InvalidRequest::new(field, format!("{}: {why}", crate::ids::shown(s)));
        let (name, rest) = s.split_once('=').ok_or_else(|| bad("expected NAME=PORT[/PROTO]".into()))?;
        let (p, proto) = match rest.rsplit_once('/') {
            Some((p, proto)) => (p, Proto::parse(field, proto)?),
            None => (rest, Proto::Tcp),
        };
        check_port_name(name).map_err(bad)?;
        Ok(NamedPort { name: name.to_owned(), port: port(p).map_err(bad)?, proto })
    }
}

impl fmt::Display for NamedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}/{}", self.name, self.port, self.proto)
    }
}

/// Kubernetes' rule for a port name (`IsValidPortName`).
pub fn check_port_name(name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > 15 {
        return Err(format!("port name {name:?} must be 1 to 15 characters"));
    }
    if !ok_chars {
        return Err(format!("port name {name:?} may hold only lower-case letters, digits and '-'"));
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!("port name {name:?} must contain a letter"));
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err(format!("port name {name:?} may not start or end with '-' or hold \"--\""));
    }
    Ok(())
}

fn port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {s:?} must be a number from 1 to 65535")),
        Ok(p) => Ok(p),
    }
}

fn port_range(s: &str) -> Result<(u16, u16), String> {
    match s.split_once('-') {
        None => port(s).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(format!("port range {s:?} ends before it starts"));
            }
            Ok((a, b))
        }
    }
}

#[cfg(test)]
#[path = "ports_tests.rs"]
mod tests;
