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
