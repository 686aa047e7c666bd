//! Kubernetes NetworkPolicy (networking.k8s.io/v1) compiled into weft's
//! rule-set shape, with no WIT types so it can be unit-tested natively.
//!
//! The translation, policy by policy (namespace `ns`, name `n`):
//! - the pods it selects form the group `ns/n` (pods of `ns` whose labels
//!   match `spec.podSelector`); for each of its `policyTypes` that group is
//!   isolated in that direction — a selected pod is default-deny;
//! - each ingress (egress) rule becomes one allow rule per protocol named
//!   in its ports (one rule for every protocol when it has no ports; a
//!   named port stays a name, which the host resolves per destination
//!   endpoint from the ports it declares), with
//!   one peer per `from` (`to`) entry: an `ipBlock` is a CIDR peer with its
//!   excepts, a selector peer is a group of its own (pods matching the pod
//!   selector in the policy's namespace, or in every namespace matching the
//!   namespace selector, or both ANDed); no peers means any peer.
//!
//! Rules are additive: a flow passes a direction if the pod is in no group
//! isolated that way, or if any rule of any policy selecting it allows it.
//! Group membership is decided per endpoint by [`classify`], from the
//! endpoint's labels and its namespace's labels (`kind: Namespace`
//! documents, plus the automatic `kubernetes.io/metadata.name`), using the
//! selectors kept in the compiled state.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::selector::{Labels, Selector};

/// The endpoint label that names a pod's namespace (set by CRI runtimes on
/// pod sandboxes).
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// The label every namespace carries automatically.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The namespace of a pod or policy that names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Longest group name the host accepts.
const MAX_GROUP: usize = 253;

/// Direction relative to a group's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Ingress,
    Egress,
}

/// A rule's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Any,
    Tcp,
    Udp,
    Sctp,
}

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// The other side of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Group(String),
    Cidr { prefix: Cidr, except: Vec<Cidr> },
    Any,
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub source: String,
    pub group: String,
    pub dir: Dir,
    pub peers: Vec<Peer>,
    pub proto: Proto,
    pub ports: Vec<(u16, u16)>,
    /// Named container ports, resolved per destination endpoint.
    pub named_ports: Vec<String>,
}

/// A group isolated in one direction by one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    pub group: String,
    pub dir: Dir,
    pub source: String,
}

/// What compiling produced.
#[derive(Debug, Default)]
pub struct Output {
    pub isolated: Vec<Isolation>,
    pub rules: Vec<Rule>,
    /// [`State`] as JSON, for [`classify`].
    pub state: String,
}

/// What `classify` needs: every group's membership test and every
/// namespace's labels.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub namespaces: BTreeMap<String, Labels>,
    pub groups: Vec<Group>,
}

/// A group's membership test: all the present parts must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    /// The pod is in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's namespace's labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Selector>,
    /// The pod's labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<Selector>,
}

// ---- the documents, as the API defines them -------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    #[serde(default)]
    api_version: String,
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    spec: Option<Value>,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicySpec {
    pod_selector: Option<Selector>,
    #[serde(default)]
    ingress: Option<Vec<IngressRule>>,
    #[serde(default)]
    egress: Option<Vec<EgressRule>>,
    #[serde(default)]
    policy_types: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngressRule {
    #[serde(default)]
    from: Option<Vec<PolicyPeer>>,
    #[serde(default)]
    ports: Option<Vec<PolicyPort>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressRule {
    #[serde(default)]
    to: Option<Vec<PolicyPeer>>,
    #[serde(default)]
    ports: Option<Vec<PolicyPort>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyPeer {
    #[serde(default)]
    pod_selector: Option<Selector>,
    #[serde(default)]
    namespace_selector: Option<Selector>,
    #[serde(default)]
    ip_block: Option<IpBlock>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IpBlock {
    cidr: String,
    #[serde(default)]
    except: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Str(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyPort {
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    port: Option<IntOrString>,
    #[serde(default)]
    end_port: Option<i64>,
}

// ---- compile ---------------------------------------------------------------

/// Compile the documents (JSON objects) of one network.
pub fn compile(documents: &[String]) -> Result<Output, String> {
    let mut namespaces: BTreeMap<String, Labels> = BTreeMap::new();
    let mut policies = Vec::new();
    for (i, text) in documents.iter().enumerate() {
        let obj: Object = serde_json::from_str(text).map_err(|e| format!("document {}: {e}", i + 1))?;
        match obj.kind.as_str() {
            "Namespace" => {
                if obj.api_version != "v1" {
                    return Err(format!(
                        "Namespace {}: apiVersion {:?} must be \"v1\"",
                        obj.metadata.name, obj.api_version
                    ));
                }
                namespaces.insert(obj.metadata.name.clone(), obj.metadata.labels);
            }
            "NetworkPolicy" => {
                let ns = obj.metadata.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
                let what = format!("NetworkPolicy {ns}/{}", obj.metadata.name);
                if obj.api_version != "networking.k8s.io/v1" {
                    return Err(format!("{what}: apiVersion {:?} must be \"networking.k8s.io/v1\"", obj.api_version));
                }
                let spec = obj.spec.ok_or_else(|| format!("{what}: spec is required"))?;
                let spec: PolicySpec = serde_json::from_value(spec).map_err(|e| format!("{what}: spec: {e}"))?;
                policies.push((ns, obj.metadata.name, what, spec));
            }
            other => {
                return Err(format!(
                    "{other} {}: policy-k8s understands NetworkPolicy (networking.k8s.io/v1) and Namespace (v1) documents",
                    obj.metadata.name
                ));
            }
        }
    }
    let mut b = Builder::default();
    for (ns, name, what, spec) in &policies {
        b.policy(ns, name, what, spec).map_err(|e| format!("{what}: {e}"))?;
    }
    let state = State { namespaces, groups: b.groups };
    Ok(Output {
        isolated: b.isolated,
        rules: b.rules,
        state: serde_json::to_string(&state).map_err(|e| e.to_string())?,
    })
}

#[derive(Default)]
struct Builder {
    groups: Vec<Group>,
    isolated: Vec<Isolation>,
    rules: Vec<Rule>,
}

impl Builder {
    /// The name of the group with this membership test, reusing an
    /// identical one (so equal selectors cost one nftables set).
    fn group(&mut self, wanted: &str, mut g: Group) -> String {
        if let Some(have) = self.groups.iter().find(|h| {
            h.namespace == g.namespace
                && h.namespace_selector == g.namespace_selector
                && h.pod_selector == g.pod_selector
        }) {
            return have.name.clone();
        }
        g.name = bounded(wanted);
        let name = g.name.clone();
        self.groups.push(g);
        name
    }

    fn policy(&mut self, ns: &str, name: &str, what: &str, spec: &PolicySpec) -> Result<(), String> {
        let pod_selector = spec.pod_selector.clone().ok_or("spec.podSelector is required (use {} for every pod)")?;
        pod_selector.validate("spec.podSelector")?;
        // The API server's defaulting: Ingress always; Egress when the
        // policy has egress rules.
        let types: Vec<Dir> = match &spec.policy_types {
            None => {
                let mut t = vec![Dir::Ingress];
                if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                    t.push(Dir::Egress);
                }
                t
            }
            Some(list) => {
                if list.is_empty() || list.len() > 2 {
                    return Err("spec.policyTypes: give Ingress, Egress or both".into());
                }
                let mut t = Vec::new();
                for (i, p) in list.iter().enumerate() {
                    let d = match p.as_str() {
                        "Ingress" => Dir::Ingress,
                        "Egress" => Dir::Egress,
                        other => return Err(format!("spec.policyTypes[{i}]: {other:?} must be Ingress or Egress")),
                    };
                    if t.contains(&d) {
                        return Err(format!("spec.policyTypes[{i}]: {p} appears twice"));
                    }
                    t.push(d);
                }
                t
            }
        };
        let target = self.group(
            &format!("{ns}/{name}"),
            Group {
                name: String::new(),
                namespace: Some(ns.to_owned()),
                namespace_selector: None,
                pod_selector: Some(pod_selector),
            },
        );
        for dir in &types {
            self.isolated.push(Isolation { group: target.clone(), dir: *dir, source: what.to_owned() });
        }
        // Rules of a direction the policy does not isolate are ignored, as
        // the API says.
        if types.contains(&Dir::Ingress) {
            for (i, r) in spec.ingress.iter().flatten().enumerate() {
                self.rule(ns, name, what, &target, Dir::Ingress, i, r.from.as_deref(), r.ports.as_deref())?;
            }
        }
        if types.contains(&Dir::Egress) {
            for (i, r) in spec.egress.iter().flatten().enumerate() {
                self.rule(ns, name, what, &target, Dir::Egress, i, r.to.as_deref(), r.ports.as_deref())?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn rule(
        &mut self,
        ns: &str,
        name: &str,
        what: &str,
        target: &str,
        dir: Dir,
        i: usize,
        peers: Option<&[PolicyPeer]>,
        ports: Option<&[PolicyPort]>,
    ) -> Result<(), String> {
        let (section, peer_field, tag) = match dir {
            Dir::Ingress => ("ingress", "from", "in"),
            Dir::Egress => ("egress", "to", "out"),
        };
        let field = format!("spec.{section}[{i}]");
        let mut out_peers = Vec::new();
        for (j, p) in peers.unwrap_or_default().iter().enumerate() {
            let f = format!("{field}.{peer_field}[{j}]");
            out_peers.push(self.peer(ns, &format!("{ns}/{name}/{tag}{i}.{j}"), &f, p)?);
        }
        if out_peers.is_empty() {
            out_peers.push(Peer::Any);
        }
        let by_proto = port_ranges(&field, ports.unwrap_or_default())?;
        for (proto, ranges, named) in by_proto {
            let suffix = match proto {
                Proto::Any => String::new(),
                Proto::Tcp => " tcp".into(),
                Proto::Udp => " udp".into(),
                Proto::Sctp => " sctp".into(),
            };
            self.rules.push(Rule {
                name: format!("{ns}/{name} {section}[{i}]{suffix}"),
                source: what.to_owned(),
                group: target.to_owned(),
                dir,
                peers: out_peers.clone(),
                proto,
                ports: ranges,
                named_ports: named,
            });
        }
        Ok(())
    }

    fn peer(&mut self, ns: &str, group_name: &str, field: &str, p: &PolicyPeer) -> Result<Peer, String> {
        if let Some(block) = &p.ip_block {
            if p.pod_selector.is_some() || p.namespace_selector.is_some() {
                return Err(format!("{field}: ipBlock cannot be combined with podSelector or namespaceSelector"));
            }
            let prefix = parse_cidr(&format!("{field}.ipBlock.cidr"), &block.cidr)?;
            let mut except = Vec::new();
            for (k, e) in block.except.iter().enumerate() {
                let f = format!("{field}.ipBlock.except[{k}]");
                let c = parse_cidr(&f, e)?;
                if !strictly_inside(&c, &prefix) {
                    return Err(format!("{f}: {e} must be strictly within {}", block.cidr));
                }
                except.push(c);
            }
            return Ok(Peer::Cidr { prefix, except });
        }
        if p.pod_selector.is_none() && p.namespace_selector.is_none() {
            return Err(format!("{field}: give podSelector, namespaceSelector or ipBlock"));
        }
        if let Some(s) = &p.pod_selector {
            s.validate(&format!("{field}.podSelector"))?;
        }
        if let Some(s) = &p.namespace_selector {
            s.validate(&format!("{field}.namespaceSelector"))?;
        }
        // podSelector alone: pods of the policy's namespace; with a
        // namespaceSelector: pods of the matching namespaces.
        let namespace = p.namespace_selector.is_none().then(|| ns.to_owned());
        Ok(Peer::Group(self.group(
            group_name,
            Group {
                name: String::new(),
                namespace,
                namespace_selector: p.namespace_selector.clone(),
                pod_selector: p.pod_selector.clone(),
            },
        )))
    }
}

/// A rule's ports, grouped by protocol: numeric ranges and names (a named
/// port is resolved per destination endpoint by the host). No ports means
/// every protocol and port; a port entry without `port` opens that whole
/// protocol; empty ranges and names mean every port.
type PortsByProto = Vec<(Proto, Vec<(u16, u16)>, Vec<String>)>;

/// One port entry: a range, a name, or (`None`) the whole protocol.
enum PortSpec {
    Range(u16, u16),
    Named(String),
}

fn port_ranges(field: &str, ports: &[PolicyPort]) -> Result<PortsByProto, String> {
    if ports.is_empty() {
        return Ok(vec![(Proto::Any, Vec::new(), Vec::new())]);
    }
    // None: the whole protocol.
    type Slot = Option<(Vec<(u16, u16)>, Vec<String>)>;
    let mut by: BTreeMap<Proto, Slot> = BTreeMap::new();
    for (k, p) in ports.iter().enumerate() {
        let f = format!("{field}.ports[{k}]");
        let proto = match p.protocol.as_deref() {
            None | Some("TCP") => Proto::Tcp,
            Some("UDP") => Proto::Udp,
            Some("SCTP") => Proto::Sctp,
            Some(other) => return Err(format!("{f}.protocol: {other:?} must be TCP, UDP or SCTP")),
        };
        let spec = match &p.port {
            None => {
                if p.end_port.is_some() {
                    return Err(format!("{f}.endPort: may not be set without a numeric port"));
                }
                None
            }
            Some(IntOrString::Str(s)) => {
                if let Ok(n) = s.parse::<i64>() {
                    return Err(format!("{f}.port: {n} must be a number, not the string {s:?}"));
                }
                if p.end_port.is_some() {
                    return Err(format!("{f}.endPort: may not be set when port is the name {s:?}"));
                }
                check_port_name(s).map_err(|why| format!("{f}.port: {why}"))?;
                Some(PortSpec::Named(s.clone()))
            }
            Some(IntOrString::Int(n)) => {
                let first = port_number(&format!("{f}.port"), *n)?;
                let last = match p.end_port {
                    None => first,
                    Some(e) => {
                        let e = port_number(&format!("{f}.endPort"), e)?;
                        if e < first {
                            return Err(format!("{f}.endPort: {e} must be greater than or equal to port {first}"));
                        }
                        e
                    }
                };
                Some(PortSpec::Range(first, last))
            }
        };
        let slot = by.entry(proto).or_insert_with(|| Some((Vec::new(), Vec::new())));
        match (slot.as_mut(), spec) {
            (Some((ranges, _)), Some(PortSpec::Range(a, b))) => ranges.push((a, b)),
            (Some((_, names)), Some(PortSpec::Named(n))) => {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            (_, None) => *slot = None,
            (None, Some(_)) => {}
        }
    }
    Ok(by
        .into_iter()
        .map(|(p, s)| {
            let (r, n) = s.unwrap_or_default();
            (p, r, n)
        })
        .collect())
}

/// Kubernetes' rule for a port name (`IsValidPortName`, an IANA service
/// name).
fn check_port_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("named port {name:?} {why}"));
    if name.is_empty() || name.len() > 15 {
        return bad("must be 1 to 15 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return bad("may hold only lower-case letters, digits and '-'");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return bad("must contain a letter");
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return bad("may not start or end with '-' or hold \"--\"");
    }
    Ok(())
}

fn port_number(field: &str, n: i64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{field}: {n} must be between 1 and 65535")),
    }
}

/// Parse `a.b.c.d/n` or `v6/n`; host bits are cleared.
fn parse_cidr(field: &str, s: &str) -> Result<Cidr, String> {
    let bad = || format!("{field}: {s:?} is not a valid CIDR");
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(Cidr { addr: mask(addr, prefix), prefix })
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v) => {
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            IpAddr::V4((u32::from(v) & m).into())
        }
        IpAddr::V6(v) => {
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            IpAddr::V6((u128::from(v) & m).into())
        }
    }
}

fn strictly_inside(inner: &Cidr, outer: &Cidr) -> bool {
    inner.addr.is_ipv4() == outer.addr.is_ipv4()
        && inner.prefix > outer.prefix
        && mask(inner.addr, outer.prefix) == outer.addr
}

/// A group name the host accepts: long ones are cut and made unique by a
/// hash of the whole.
fn bounded(name: &str) -> String {
    if name.len() <= MAX_GROUP {
        return name.to_owned();
    }
    // FNV-1a, 64 bits.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut cut = MAX_GROUP - 17;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{h:016x}", &name[..cut])
}

// ---- classify --------------------------------------------------------------

/// The groups of an endpoint with `labels`, under compiled `state`.
pub fn classify(state: &str, labels: &Labels) -> Result<Vec<String>, String> {
    let state: State = serde_json::from_str(state).map_err(|e| format!("compiled state is not readable: {e}"))?;
    let ns = labels.get(NAMESPACE_LABEL).map_or(DEFAULT_NAMESPACE, String::as_str);
    let mut ns_labels = state.namespaces.get(ns).cloned().unwrap_or_default();
    ns_labels.insert(NAME_LABEL.to_owned(), ns.to_owned());
    Ok(state
        .groups
        .iter()
        .filter(|g| {
            g.namespace.as_deref().is_none_or(|want| want == ns)
                && g.namespace_selector.as_ref().is_none_or(|s| s.matches(&ns_labels))
                && g.pod_selector.as_ref().is_none_or(|s| s.matches(labels))
        })
        .map(|g| g.name.clone())
        .collect())
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
