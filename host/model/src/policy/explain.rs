//! Explain a verdict: would a new flow from one endpoint to another pass the
//! network's compiled policy, and which rule or isolation decides it?
//!
//! This evaluates a [`RuleSet`] with exactly the semantics the planner
//! gives it in nftables (`pol_intra` = the source's egress check, then the
//! destination's ingress check; an endpoint in no isolated group passes a
//! direction at once; otherwise the first rule whose group holds it, whose
//! peer matches the other side and whose protocol and ports match lets the
//! flow through; else it is dropped). The end-to-end tests hold the two
//! together by checking explanations against real probes.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Direction, Peer, Rule, RuleProto, RuleSet};
use crate::ports::{NamedPort, Proto};

/// One side of a flow: an endpoint's address and policy groups.
#[derive(Debug, Clone)]
pub struct Side<'a> {
    /// The endpoint's address of the flow's family.
    pub addr: IpAddr,
    /// The groups it was classified into.
    pub groups: &'a [String],
    /// The container ports it declares by name (rules with named ports
    /// resolve them on the flow's destination).
    pub port_names: &'a [NamedPort],
}

/// What is being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// A TCP/UDP/SCTP connection to a port.
    Port(Proto, u16),
    /// ICMP / ICMPv6 (ping).
    Icmp,
}

impl Flow {
    /// Parse `80`, `80/tcp`, `53/udp`, `icmp`.
    pub fn parse(s: &str) -> Result<Flow, String> {
        if s.eq_ignore_ascii_case("icmp") {
            return Ok(Flow::Icmp);
        }
        let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        let proto = Proto::parse("port", proto).map_err(|e| e.to_string())?;
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Flow::Port(proto, p)),
            _ => Err(format!("port {s:?}: want PORT[/tcp|udp|sctp] with PORT 1-65535, or icmp")),
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flow::Port(p, n) => write!(f, "{n}/{p}"),
            Flow::Icmp => f.write_str("icmp"),
        }
    }
}

/// The outcome of one direction's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Check {
    /// The endpoint is in no group isolated in this direction.
    NotIsolated,
    /// Isolated, and this rule allows the flow.
    Allowed {
        /// The rule's name.
        rule: String,
        /// The document it came from.
        source: String,
    },
    /// Isolated, and no rule allows the flow.
    Denied {
        /// The isolated groups the endpoint is in, with their documents.
        isolated_by: Vec<(String, String)>,
    },
}

impl Check {
    /// Whether the flow passes this direction.
    pub fn passes(&self) -> bool {
        !matches!(self, Check::Denied { .. })
    }
}

/// A verdict with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Whether a new flow is let through.
    pub allowed: bool,
    /// The source endpoint's egress check.
    pub egress: Check,
    /// The destination endpoint's ingress check.
    pub ingress: Check,
}

/// Explain `flow` from `from` to `to`, both endpoints of a network whose
/// subnets are `subnets`, under its compiled `rules`.
pub fn explain(rules: &RuleSet, subnets: &[IpNet], from: &Side, to: &Side, flow: Flow) -> Explanation {
    let egress = check(rules, subnets, Direction::Egress, from, to, to, flow);
    let ingress = check(rules, subnets, Direction::Ingress, to, from, to, flow);
    Explanation { allowed: egress.passes() && ingress.passes(), egress, ingress }
}

/// The check of `me` in `dir` against a flow with `other` on the far side
/// and `dest` (one of the two) receiving it.
fn check(
    rules: &RuleSet,
    subnets: &[IpNet],
    dir: Direction,
    me: &Side,
    other: &Side,
    dest: &Side,
    flow: Flow,
) -> Check {
    let isolated_by: Vec<(String, String)> = rules
        .isolated
        .iter()
        .filter(|i| i.direction == dir && me.groups.contains(&i.group))
        .map(|i| (i.group.clone(), i.source.clone()))
        .collect();
    if isolated_by.is_empty() {
        return Check::NotIsolated;
    }
    let known = rules.groups();
    match rules.rules.iter().find(|r| {
        r.direction == dir
            && me.groups.contains(&r.group)
            && proto_matches(r, flow, dest)
            && peer_matches(r, &known, subnets, other)
    }) {
        Some(r) => Check::Allowed { rule: r.name.clone(), source: r.source.clone() },
        None => Check::Denied { isolated_by },
    }
}

/// Whether `flow` to `dest` is of `r`'s protocol and ports; a named port
/// is the port `dest` declares under that name and protocol, if any.
fn proto_matches(r: &Rule, flow: Flow, dest: &Side) -> bool {
    match (r.proto, flow) {
        (RuleProto::Any, _) => true,
        (RuleProto::Icmp, Flow::Icmp) => true,
        (RuleProto::Ports(p), Flow::Port(q, port)) => {
            p == q
                && (r.every_port()
                    || r.ports.iter().any(|(a, b)| (*a..=*b).contains(&port))
                    || dest
                        .port_names
                        .iter()
                        .any(|n| n.proto == p && n.port == port && r.named_ports.contains(&n.name)))
        }
        _ => false,
    }
}

/// Whether any peer of `r` matches `other`. No peers means anything, as in
/// the rendered rule.
fn peer_matches(r: &Rule, known: &[String], subnets: &[IpNet], other: &Side) -> bool {
    if r.peers.is_empty() {
        return true;
    }
    r.peers.iter().any(|p| match p {
        Peer::Any => true,
        Peer::Group(g) => known.contains(g) && other.groups.contains(g),
        Peer::Network => subnets.iter().any(|s| s.contains(&other.addr)),
        Peer::Cidr { prefix, except } => {
            prefix.contains(&other.addr) && !except.iter().any(|e| e.contains(&other.addr))
        }
    })
}

#[cfg(test)]
#[path = "explain_tests.rs"]
mod tests;
