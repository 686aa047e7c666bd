//! The policy decision contract as the host sees it. A policy component
//! (`weft:policy`) compiles documents into a [`RuleSet`] over groups and
//! classifies endpoints into groups; the host checks the rule set
//! ([`RuleSet::validate`]) and turns it into nftables sets and chains.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ipam::DecisionError;
use crate::ports::{MAX_NAMED_PORTS, Proto, check_port_name};

/// The default policy component, a built-in addressed by its folder name.
pub const DEFAULT_POLICY: &str = "policy-isolation";
/// Most groups one rule set may use (each becomes two nftables sets).
pub const MAX_GROUPS: usize = 1024;
/// Most rules one rule set may hold.
pub const MAX_RULES: usize = 4096;
/// Longest group or rule name.
pub const MAX_NAME: usize = 253;
/// Longest source (document) reference of a rule or isolation.
pub const MAX_SOURCE: usize = 512;

/// Direction of a flow relative to a group's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic to members.
    Ingress,
    /// Traffic from members.
    Egress,
}

/// Protocol of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleProto {
    /// Every protocol (ports must be empty).
    Any,
    /// A protocol with ports.
    Ports(Proto),
    /// ICMP / ICMPv6.
    Icmp,
}

/// The other side of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    /// Members of a group of this network.
    Group(String),
    /// Any endpoint of this network.
    Network,
    /// Addresses in a prefix, minus exceptions.
    Cidr {
        /// The prefix.
        prefix: IpNet,
        /// Sub-prefixes excluded.
        except: Vec<IpNet>,
    },
    /// Anything.
    Any,
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The rule's name (for explanations).
    pub name: String,
    /// The document it came from.
    pub source: String,
    /// The group whose members it applies to.
    pub group: String,
    /// Direction relative to the group.
    pub direction: Direction,
    /// Peers (any of them).
    pub peers: Vec<Peer>,
    /// Protocol.
    pub proto: RuleProto,
    /// Inclusive port ranges; empty (and no `named_ports`) means every
    /// port.
    pub ports: Vec<(u16, u16)>,
    /// Named container ports of `proto` ([`crate::ports::NamedPort`]),
    /// resolved per destination endpoint: the group's member on ingress,
    /// the peer on egress. A name the destination does not declare matches
    /// nothing on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<String>,
}

impl Rule {
    /// Whether the rule allows every port of its protocol (no numeric and
    /// no named ports).
    pub fn every_port(&self) -> bool {
        self.ports.is_empty() && self.named_ports.is_empty()
    }
}

/// Members of `group` are isolated in `direction`: only flows a rule allows
/// pass (replies of allowed connections always do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// The isolated group.
    pub group: String,
    /// The isolated direction.
    pub direction: Direction,
    /// The document that isolates it (for explanations).
    pub source: String,
}

impl Isolation {
    /// `group` isolated in `direction` by `source`.
    pub fn new(group: &str, direction: Direction, source: &str) -> Isolation {
        Isolation { group: group.to_owned(), direction, source: source.to_owned() }
    }
}

/// A compiled policy: isolated groups and allow rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet {
    /// Isolated groups.
    pub isolated: Vec<Isolation>,
    /// Allow rules.
    pub rules: Vec<Rule>,
}

/// What compiling a network's documents produced: the rule set the host
/// programs and the component's opaque state, handed back to `classify`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    /// The rule set.
    pub rules: RuleSet,
    /// The component's state (selectors, namespace labels, ...).
    pub state: String,
}

/// Longest classify state a component may return (it is kept per network
/// and passed to every classify call).
pub const MAX_STATE: usize = 4 << 20;

impl RuleSet {
    /// The host's check of a component's rule set: bounded sizes, sane
    /// names, ports and prefixes. A bad rule set is refused, never applied.
    pub fn validate(&self) -> Result<(), String> {
        if self.rules.len() > MAX_RULES {
            return Err(format!("{} rules (at most {MAX_RULES})", self.rules.len()));
        }
        let groups = self.groups();
        if groups.len() > MAX_GROUPS {
            return Err(format!("{} groups (at most {MAX_GROUPS})", groups.len()));
        }
        for g in &groups {
            if g.is_empty() || g.len() > MAX_NAME {
                return Err(format!("group name {g:?} must be 1 to {MAX_NAME} bytes"));
            }
        }
        if let Some(i) = self.isolated.iter().find(|i| i.source.len() > MAX_SOURCE) {
            return Err(format!("isolation of group {:?}: source longer than {MAX_SOURCE} bytes", i.group));
        }
        for r in &self.rules {
            if r.name.len() > MAX_NAME || r.source.len() > MAX_SOURCE {
                return Err(format!("rule {:?}: name or source too long", r.name));
            }
            for (a, b) in &r.ports {
                if a > b || *a == 0 {
                    return Err(format!("rule {:?}: port range {a}-{b} is not valid", r.name));
                }
            }
            if !r.every_port() && !matches!(r.proto, RuleProto::Ports(_)) {
                return Err(format!("rule {:?}: ports need protocol tcp, udp or sctp", r.name));
            }
            if r.named_ports.len() > MAX_NAMED_PORTS {
                return Err(format!(
                    "rule {:?}: {} named ports (at most {MAX_NAMED_PORTS})",
                    r.name,
                    r.named_ports.len()
                ));
            }
            if let Some(why) = r.named_ports.iter().find_map(|n| check_port_name(n).err()) {
                return Err(format!("rule {:?}: {why}", r.name));
            }
            for p in &r.peers {
                if let Peer::Cidr { prefix, except } = p
                    && let Some(e) = except.iter().find(|e| !prefix.contains(*e))
                {
                    return Err(format!("rule {:?}: except {e} is not inside {prefix}", r.name));
                }
            }
        }
        Ok(())
    }

    /// Every group the rule set names, in first-use order.
    pub fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |g: &str| {
            if !out.iter().any(|o| o == g) {
                out.push(g.to_owned());
            }
        };
        for i in &self.isolated {
            add(&i.group);
        }
        for r in &self.rules {
            add(&r.group);
            for p in &r.peers {
                if let Peer::Group(g) = p {
                    add(g);
                }
            }
        }
        out
    }
}

/// What a policy component is told about a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Name.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// Internal network.
    pub internal: bool,
    /// Options.
    pub options: Vec<(String, String)>,
    /// Module configuration bound with the component.
    pub config: Vec<(String, String)>,
}

/// What a policy component is told about an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Name.
    pub name: String,
    /// Network name.
    pub network: String,
    /// Labels.
    pub labels: Vec<(String, String)>,
}

/// Something that makes policy decisions. Implemented by the Wasm host.
pub trait Policy: Send + Sync {
    /// Compile `documents` (JSON objects) for a network.
    fn compile(&self, module: &str, network: &NetworkInfo, documents: &[String]) -> Result<Compiled, DecisionError>;
    /// The groups an endpoint belongs to, given the compiled `state`.
    fn classify(
        &self,
        module: &str,
        network: &NetworkInfo,
        state: &str,
        endpoint: &EndpointInfo,
    ) -> Result<Vec<String>, DecisionError>;
}

pub mod explain;

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
