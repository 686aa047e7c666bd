//! The naming decision contract as the host sees it. A naming component
//! (`weft:naming`) returns DNS records for an endpoint; the host checks every
//! record ([`check_records`]) before serving it, and a bad record fails the
//! call instead of being served.

use std::net::IpAddr;

use crate::ipam::DecisionError;

/// The default naming component, a built-in addressed by its folder name.
pub const DEFAULT_NAMING: &str = "naming-default";
/// Most records one endpoint may have.
pub const MAX_RECORDS: usize = 512;

/// A record's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Name -> address (A or AAAA by family).
    Address,
    /// Address -> name (PTR).
    Pointer,
}

/// One DNS record of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameRecord {
    /// Kind.
    pub kind: RecordKind,
    /// Lower-case DNS name without the trailing dot.
    pub name: String,
    /// The endpoint's address.
    pub address: IpAddr,
}

/// What a naming component is told about an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamingEndpoint {
    /// Name.
    pub name: String,
    /// Aliases.
    pub aliases: Vec<String>,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// Labels.
    pub labels: Vec<(String, String)>,
}

/// What a naming component is told about a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamingNetwork {
    /// Name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// Options.
    pub options: Vec<(String, String)>,
    /// Module configuration bound with the component.
    pub config: Vec<(String, String)>,
}

/// Something that decides names. Implemented by the Wasm host.
pub trait Naming: Send + Sync {
    /// The records of `endpoint` on `network`.
    fn names(
        &self,
        module: &str,
        endpoint: &NamingEndpoint,
        network: &NamingNetwork,
    ) -> Result<Vec<NameRecord>, DecisionError>;
}

/// Whether `name` is a valid DNS name: dot-separated labels of 1 to 63
/// letters, digits, `-` or `_`, not starting or ending with `-`, at most
/// 253 bytes in all.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The host's check of a naming component's answer: bounded, valid names,
/// and only the endpoint's own addresses.
pub fn check_records(endpoint: &NamingEndpoint, records: &[NameRecord]) -> Result<(), String> {
    if records.len() > MAX_RECORDS {
        return Err(format!("{} records (at most {MAX_RECORDS})", records.len()));
    }
    for r in records {
        if !is_dns_name(&r.name) {
            return Err(format!("record name {:?} is not a valid DNS name", r.name));
        }
        if !endpoint.addresses.contains(&r.address) {
            return Err(format!(
                "record {} -> {} points at an address that is not endpoint {:?}'s",
                r.name, r.address, endpoint.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_records_are_checked() {
        assert!(is_dns_name("web") && is_dns_name("web.frontend") && is_dns_name("a_b-1"));
        for bad in ["", "-x", "x-", "a..b", "a b", &"a".repeat(64), "x.", "é"] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
        let ep = NamingEndpoint {
            name: "web".into(),
            aliases: vec![],
            addresses: vec!["10.0.0.2".parse().unwrap()],
            labels: vec![],
        };
        let ok = NameRecord { kind: RecordKind::Address, name: "web".into(), address: "10.0.0.2".parse().unwrap() };
        assert!(check_records(&ep, std::slice::from_ref(&ok)).is_ok());
        let other = NameRecord { address: "10.0.0.3".parse().unwrap(), ..ok.clone() };
        assert!(check_records(&ep, &[other]).unwrap_err().contains("not endpoint"));
        let bad = NameRecord { name: "bad name".into(), ..ok };
        assert!(check_records(&ep, &[bad]).is_err());
    }
}
