//! Newtypes that carry the kernel's and the API's rules, so a value that
//! exists is a valid value: parse once at the edge, never re-check.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::InvalidRequest;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Longest tenant, network or endpoint name.
pub const NAME_MAX: usize = 63;
/// The tenant used when a request names none.
pub const DEFAULT_TENANT: &str = "default";

/// Check a cluster node's name: 1 to 63 lowercase letters, digits, '-' or
/// '.', starting and ending with a letter or digit (a host name; it is part
/// of etcd keys).
pub fn check_node_name(s: &str) -> Result<(), String> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = !s.is_empty()
        && s.len() <= 63
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node name {} must be 1 to 63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit",
            shown(s)
        ))
    }
}

/// `s` as an error message may echo it: quoted, and cut after 64
/// characters (a 10^6-character name once made an error no client could
/// receive).
pub fn shown(s: &str) -> String {
    match s.char_indices().nth(64) {
        None => format!("{s:?}"),
        Some((at, _)) => format!("{:?}… ({} bytes)", &s[..at], s.len()),
    }
}

fn check_name(field: &str, what: &str, s: &str) -> Result<(), InvalidRequest> {
    if s.is_empty() {
        return Err(InvalidRequest::new(field, format!("{what} must not be empty")));
    }
    if s.len() > NAME_MAX {
        return Err(InvalidRequest::new(field, format!("{what} {} is longer than {NAME_MAX} bytes", shown(s))));
    }
    let first_ok = s.as_bytes()[0].is_ascii_alphanumeric();
    let rest_ok = s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !first_ok || !rest_ok {
        return Err(InvalidRequest::new(
            field,
            format!("{what} {} must start with a letter or digit and contain only [A-Za-z0-9_.-]", shown(s)),
        ));
    }
    Ok(())
}

/// A name that becomes part of DNS names (`<endpoint>.<network>`): a DNS
/// label as RFC 1123 and Kubernetes have it — 1 to 63 lowercase letters,
/// digits and '-', starting and ending with a letter or digit. Lowercase
/// only, so two names never differ by case alone (DNS compares without
/// case: `EP1` beside `ep1` would answer for both).
fn check_label(field: &str, what: &str, s: &str) -> Result<(), InvalidRequest> {
    check_name(field, what, s)?;
    let ok = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') && !s.ends_with('-');
    if !ok {
        return Err(InvalidRequest::new(
            field,
            format!(
                "{what} {} must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit",
                shown(s)
            ),
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Parse `s` from a request, reporting problems against `field`.
            pub fn parse(field: &str, s: &str) -> Result<Self, InvalidRequest> {
                check_label(field, $what, s)?;
                Ok(Self(s.to_owned()))
            }
            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<String> for $ty {
            type Error = InvalidRequest;
            /// A stored name: held to the rule names had when it was
            /// stored (before names had to be DNS labels), so a record an
            /// older weftd wrote still loads.
            fn try_from(s: String) -> Result<Self, InvalidRequest> {
                check_name($what, $what, &s)?;
                Ok(Self(s))
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }
    };
}

name_type!(
    /// A network's name, unique per tenant.
    NetworkName, "network name"
);
name_type!(
    /// An endpoint's name, unique per network.
    EndpointName, "endpoint name"
);

/// The tenant that owns a resource. Empty input means [`DEFAULT_TENANT`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tenant(String);

impl Tenant {
    /// Parse a tenant; the empty string is the default tenant.
    pub fn parse(field: &str, s: &str) -> Result<Self, InvalidRequest> {
        if s.is_empty() {
            return Ok(Self(DEFAULT_TENANT.to_owned()));
        }
        check_name(field, "tenant", s)?;
        Ok(Self(s.to_owned()))
    }
    /// The tenant name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Linux interface name: 1..=15 bytes, no `/`, no whitespace, not `.`/`..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl IfName {
    /// Parse an interface name, reporting problems against `field`.
    pub fn parse(field: &str, s: &str) -> Result<Self, InvalidRequest> {
        if s.is_empty() || s.len() > IFNAME_MAX {
            return Err(InvalidRequest::new(field, format!("interface name {s:?} must be 1 to {IFNAME_MAX} bytes")));
        }
        if s == "." || s == ".." || s.bytes().any(|b| b == b'/' || b == b':' || b == b'"' || !b.is_ascii_graphic()) {
            return Err(InvalidRequest::new(
                field,
                format!("interface name {s:?} may not be . or .. and may not contain '/', ':', quotes or whitespace"),
            ));
        }
        if s == "all" || s == "default" {
            return Err(InvalidRequest::new(
                field,
                format!("interface name {s:?} is reserved by the kernel (net.*.conf.{s} sysctls)"),
            ));
        }
        Ok(Self(s.to_owned()))
    }
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl TryFrom<String> for IfName {
    type Error = InvalidRequest;
    fn try_from(s: String) -> Result<Self, InvalidRequest> {
        Self::parse("ifname", &s)
    }
}
impl From<IfName> for String {
    fn from(v: IfName) -> String {
        v.0
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Docker's rule: locally administered `02:42` followed by the IPv4 address.
    pub fn from_ipv4(ip: Ipv4Addr) -> Mac {
        let o = ip.octets();
        Mac([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }

    /// Parse `aa:bb:cc:dd:ee:ff`; a multicast or all-zero address is refused.
    pub fn parse(field: &str, s: &str) -> Result<Mac, InvalidRequest> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad =
            || InvalidRequest::new(field, format!("MAC address {s:?} must be six hex octets like 02:42:0a:00:00:02"));
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if out[0] & 1 == 1 {
            return Err(InvalidRequest::new(
                field,
                format!("MAC address {s} is multicast; endpoints need a unicast address"),
            ));
        }
        if out == [0; 6] {
            return Err(InvalidRequest::new(field, "MAC address must not be all zeros"));
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}
impl FromStr for Mac {
    type Err = InvalidRequest;
    fn from_str(s: &str) -> Result<Self, InvalidRequest> {
        Mac::parse("mac", s)
    }
}
impl TryFrom<String> for Mac {
    type Error = InvalidRequest;
    fn try_from(s: String) -> Result<Self, InvalidRequest> {
        Mac::parse("mac", &s)
    }
}
impl From<Mac> for String {
    fn from(m: Mac) -> String {
        m.to_string()
    }
}

#[cfg(test)]
#[path = "ids_tests.rs"]
mod tests;
