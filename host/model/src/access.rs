//! Who is calling and what they may do. A connection's peer (a Unix uid/gid
//! or, later, a certificate's SPIFFE id) is resolved once, at the edge, to a
//! [`Caller`] with a [`Role`]; the role decides which RPCs it may call
//! ([`Rpc::allowed`]) and the caller decides which tenant a request acts for
//! ([`Caller::tenant_for`]). The rules an operator configures — who maps to
//! which caller, what each tenant may use — are [`Access`], reloadable as a
//! whole. Pure data and rules: the daemon loads it, the gRPC edge and the
//! controller consult it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ControlError;
use crate::ids::Tenant;

/// What a caller is to weft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the host: every RPC, every tenant, host-level options.
    Operator,
    /// Places containers: attach, detach and reads, for the tenants it may name.
    Orchestrator,
    /// Owns networks, endpoints, modules and documents of one tenant.
    Tenant,
}

impl Role {
    /// Every role, in the order of the documentation's table.
    pub const ALL: [Role; 3] = [Role::Operator, Role::Orchestrator, Role::Tenant];

    /// The role's name as configuration and certificates spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Orchestrator => "orchestrator",
            Role::Tenant => "tenant",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// How it was identified, for logs and the audit line: `uid 1000`,
    /// `spiffe://weft.example/tenant/acme`.
    pub principal: String,
    /// Its role.
    pub role: Role,
    /// A tenant caller's tenant; the tenants an orchestrator may act for
    /// (empty: any). Unused for an operator.
    pub tenants: Vec<Tenant>,
}

impl Caller {
    /// An operator identified as `principal` (weftd's own tests and tools).
    pub fn operator(principal: impl Into<String>) -> Caller {
        Caller { principal: principal.into(), role: Role::Operator, tenants: Vec::new() }
    }

    /// A tenant caller of `tenant`.
    pub fn tenant(principal: impl Into<String>, tenant: Tenant) -> Caller {
        Caller { principal: principal.into(), role: Role::Tenant, tenants: vec![tenant] }
    }

    /// Whether it runs the host.
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// The tenant a request that names `requested` (empty: none) acts for.
    /// A tenant caller always acts for itself: naming no tenant or its own is
    /// the same, naming another is PERMISSION_DENIED (whether that tenant
    /// exists is not said). An orchestrator acts for the tenant it names, if
    /// configuration lets it; an operator for any.
    pub fn tenant_for(&self, requested: &str) -> Result<String, ControlError> {
        match self.role {
            Role::Operator => Ok(requested.to_owned()),
            Role::Tenant => {
                let own = self.tenants.first().map(Tenant::as_str).unwrap_or_default();
                if requested.is_empty() || requested == own {
                    Ok(own.to_owned())
                } else {
                    Err(ControlError::PermissionDenied(format!(
                        "{}: a tenant caller acts only for its own tenant {own:?}",
                        self.principal
                    )))
                }
            }
            Role::Orchestrator => {
                let t = Tenant::parse("tenant", requested)?;
                if self.tenants.is_empty() || self.tenants.contains(&t) {
                    Ok(requested.to_owned())
                } else {
                    Err(ControlError::PermissionDenied(format!(
                        "{}: this orchestrator may not act for the tenant it named (its `tenants` in weftd's configuration)",
                        self.principal
                    )))
                }
            }
        }
    }
}

/// Every RPC of `weft.v1`, as the access rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    /// NetworkService.CreateNetwork
    CreateNetwork,
    /// NetworkService.GetNetwork
    GetNetwork,
    /// NetworkService.ListNetworks
    ListNetworks,
    /// NetworkService.DeleteNetwork
    DeleteNetwork,
    /// NetworkService.UpdateNetwork
    UpdateNetwork,
    /// EndpointService.AttachEndpoint
    AttachEndpoint,
    /// EndpointService.DetachEndpoint
    DetachEndpoint,
    /// EndpointService.GetEndpoint
    GetEndpoint,
    /// EndpointService.ListEndpoints
    ListEndpoints,
    /// PolicyService.ApplyPolicies
    ApplyPolicies,
    /// PolicyService.ListPolicies
    ListPolicies,
    /// PolicyService.DeletePolicies
    DeletePolicies,
    /// PolicyService.CheckPolicy
    CheckPolicy,
    /// ModuleService.UploadModule
    UploadModule,
    /// ModuleService.ListModules
    ListModules,
    /// ModuleService.GetModule
    GetModule,
    /// ModuleService.DeleteModule
    DeleteModule,
    /// EventService.Watch
    Watch,
    /// SystemService.GetStats
    GetStats,
    /// TenantService.GetUsage
    GetUsage,
}

/// What a role may do with an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Changes a tenant's objects: operator and tenant.
    Own,
    /// Attach or detach: every role.
    Place,
    /// Reads a tenant's objects: every role.
    Read,
    /// The host's own counters: operator only.
    Host,
}

impl Rpc {
    /// Every RPC, in the order of the documentation's table.
    pub const ALL: [Rpc; 20] = [
        Rpc::CreateNetwork,
        Rpc::GetNetwork,
        Rpc::ListNetworks,
        Rpc::DeleteNetwork,
        Rpc::UpdateNetwork,
        Rpc::AttachEndpoint,
        Rpc::DetachEndpoint,
        Rpc::GetEndpoint,
        Rpc::ListEndpoints,
        Rpc::ApplyPolicies,
        Rpc::ListPolicies,
        Rpc::DeletePolicies,
        Rpc::CheckPolicy,
        Rpc::UploadModule,
        Rpc::ListModules,
        Rpc::GetModule,
        Rpc::DeleteModule,
        Rpc::Watch,
        Rpc::GetStats,
        Rpc::GetUsage,
    ];

    /// `Service/Method`, as in the gRPC path `/weft.v1.Service/Method`.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::CreateNetwork => "NetworkService/CreateNetwork",
            Rpc::GetNetwork => "NetworkService/GetNetwork",
            Rpc::ListNetworks => "NetworkService/ListNetworks",
            Rpc::DeleteNetwork => "NetworkService/DeleteNetwork",
            Rpc::UpdateNetwork => "NetworkService/UpdateNetwork",
            Rpc::AttachEndpoint => "EndpointService/AttachEndpoint",
            Rpc::DetachEndpoint => "EndpointService/DetachEndpoint",
            Rpc::GetEndpoint => "EndpointService/GetEndpoint",
            Rpc::ListEndpoints => "EndpointService/ListEndpoints",
            Rpc::ApplyPolicies => "PolicyService/ApplyPolicies",
            Rpc::ListPolicies => "PolicyService/ListPolicies",
            Rpc::DeletePolicies => "PolicyService/DeletePolicies",
            Rpc::CheckPolicy => "PolicyService/CheckPolicy",
            Rpc::UploadModule => "ModuleService/UploadModule",
            Rpc::ListModules => "ModuleService/ListModules",
            Rpc::GetModule => "ModuleService/GetModule",
            Rpc::DeleteModule => "ModuleService/DeleteModule",
            Rpc::Watch => "EventService/Watch",
            Rpc::GetStats => "SystemService/GetStats",
            Rpc::GetUsage => "TenantService/GetUsage",
        }
    }

    /// The RPC of a request path `/weft.v1.Service/Method`.
    pub fn from_path(path: &str) -> Option<Rpc> {
        let name = path.strip_prefix("/weft.v1.")?;
        Rpc::ALL.into_iter().find(|r| r.name() == name)
    }

    fn kind(self) -> Kind {
        match self {
            Rpc::CreateNetwork
            | Rpc::DeleteNetwork
            | Rpc::UpdateNetwork
            | Rpc::ApplyPolicies
            | Rpc::DeletePolicies
            | Rpc::UploadModule
            | Rpc::DeleteModule => Kind::Own,
            Rpc::AttachEndpoint | Rpc::DetachEndpoint => Kind::Place,
            Rpc::GetNetwork
            | Rpc::ListNetworks
            | Rpc::GetEndpoint
            | Rpc::ListEndpoints
            | Rpc::ListPolicies
            | Rpc::CheckPolicy
            | Rpc::ListModules
            | Rpc::GetModule
            | Rpc::Watch
            | Rpc::GetUsage => Kind::Read,
            Rpc::GetStats => Kind::Host,
        }
    }

    /// Whether it changes state (and is audited).
    pub fn mutating(self) -> bool {
        matches!(self.kind(), Kind::Own | Kind::Place)
    }

    /// Whether `role` may call it.
    pub fn allowed(self, role: Role) -> bool {
        match (self.kind(), role) {
            (_, Role::Operator) => true,
            (Kind::Own, Role::Tenant) => true,
            (Kind::Place | Kind::Read, _) => true,
            (Kind::Own | Kind::Host, _) => false,
        }
    }

    /// PERMISSION_DENIED for `caller`, which may not call it.
    pub fn denied(self, caller: &Caller) -> ControlError {
        ControlError::PermissionDenied(format!(
            "{}: the {} role may not call {} (see docs/security.md)",
            caller.principal,
            caller.role,
            self.name()
        ))
    }
}

/// Who a Unix-socket peer is: a uid, or a primary gid, mapped to a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixCaller {
    /// The peer's uid; or ...
    #[serde(default)]
    pub uid: Option<u32>,
    /// ... its primary gid (a uid entry wins over a gid entry).
    #[serde(default)]
    pub gid: Option<u32>,
    /// Its role.
    pub role: Role,
    /// A tenant caller's tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The tenants an orchestrator may act for (empty: any).
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// A host-level option: one that reaches past a tenant's own bridge into
/// the host, so operator-only unless configuration allows it for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostOption {
    /// `--driver macvlan`: containers straight on a host interface's LAN.
    Macvlan,
    /// `--opt bridge_name=`: a host interface name of the tenant's choosing.
    BridgeName,
    /// `--mode host`: an endpoint in the host's own stack.
    HostMode,
    /// `--opt dns_upstream=`: where weftd forwards the network's queries
    /// (from the operator's list only).
    DnsUpstream,
}

impl HostOption {
    /// The option as requests spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            HostOption::Macvlan => "driver macvlan",
            HostOption::BridgeName => "option bridge_name",
            HostOption::HostMode => "mode host",
            HostOption::DnsUpstream => "option dns_upstream",
        }
    }
}

/// What one tenant may use and hold. Unset keys fall back to
/// `[tenant_defaults]`, then to weft's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantRules {
    /// Host-level options it may set.
    pub allow: Option<Vec<HostOption>>,
    /// The macvlan parents it may name (macvlan allowed; unset: any).
    pub macvlan_parents: Option<Vec<String>>,
    /// The DNS upstreams it may choose from (dns_upstream allowed): `IP`
    /// (port 53), `IP:PORT` or `[IPv6]:PORT`.
    #[serde(deserialize_with = "upstreams")]
    pub dns_upstreams: Option<Vec<std::net::SocketAddr>>,
    /// Ranges its subnets must lie in (unset: anywhere not refused).
    pub subnet_pools: Option<Vec<ipnet::IpNet>>,
    /// Ranges its subnets must not overlap.
    pub subnet_deny: Option<Vec<ipnet::IpNet>>,
    /// Its quotas.
    pub quotas: QuotaRules,
}

fn upstreams<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<std::net::SocketAddr>>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    let parse = |s: &String| {
        s.parse::<std::net::SocketAddr>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not IP, IP:PORT or [IPv6]:PORT")))
    };
    list.iter().map(parse).collect::<Result<Vec<_>, _>>().map(Some)
}

/// Quotas as configured: each unset one falls back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaRules {
    /// Networks.
    pub networks: Option<u64>,
    /// Endpoints, over all its networks.
    pub endpoints: Option<u64>,
    /// Published host ports, over all its endpoints (a range counts each port).
    pub published_ports: Option<u64>,
    /// Uploaded modules.
    pub modules: Option<u64>,
    /// Bytes of uploaded modules, summed.
    pub module_bytes: Option<u64>,
    /// Policy documents.
    pub documents: Option<u64>,
}

/// An amount of each resource a tenant holds: its quotas, or its usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// Networks.
    pub networks: u64,
    /// Endpoints.
    pub endpoints: u64,
    /// Published host ports.
    pub published_ports: u64,
    /// Uploaded modules.
    pub modules: u64,
    /// Bytes of uploaded modules.
    pub module_bytes: u64,
    /// Policy documents.
    pub documents: u64,
}

impl Resources {
    /// weft's default quotas: room for a busy tenant on one host, a ceiling
    /// for a runaway one.
    pub const DEFAULT_QUOTAS: Resources = Resources {
        networks: 128,
        endpoints: 4096,
        published_ports: 16384,
        modules: 32,
        module_bytes: 512 << 20,
        documents: 4096,
    };

    /// Each resource by its configuration key, in the order of the docs.
    pub fn each(&self) -> [(&'static str, u64); 6] {
        [
            ("networks", self.networks),
            ("endpoints", self.endpoints),
            ("published_ports", self.published_ports),
            ("modules", self.modules),
            ("module_bytes", self.module_bytes),
            ("documents", self.documents),
        ]
    }

    fn under(rules: &QuotaRules, base: Resources) -> Resources {
        Resources {
            networks: rules.networks.unwrap_or(base.networks),
            endpoints: rules.endpoints.unwrap_or(base.endpoints),
            published_ports: rules.published_ports.unwrap_or(base.published_ports),
            modules: rules.modules.unwrap_or(base.modules),
            module_bytes: rules.module_bytes.unwrap_or(base.module_bytes),
            documents: rules.documents.unwrap_or(base.documents),
        }
    }
}

/// The access rules weftd runs with, as configured (reloaded whole).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Unix-socket callers. uid 0 is an operator unless an entry says otherwise.
    pub unix: Vec<UnixCaller>,
    /// Rules for every tenant not listed in `tenants`, and under those listed.
    pub tenant_defaults: TenantRules,
    /// Rules per tenant.
    pub tenants: BTreeMap<String, TenantRules>,
    /// The SPIFFE trust domain client certificates must be of (TLS listener).
    pub trust_domain: String,
    /// The tenants each orchestrator identified by certificate may act for,
    /// by its name (`spiffe://<td>/orchestrator/<name>`); unlisted: any.
    pub orchestrators: BTreeMap<String, Vec<String>>,
}

impl Access {
    /// The caller a Unix-socket peer with `uid`/`gid` is, or None: it has no
    /// access (UNAUTHENTICATED).
    pub fn unix_caller(&self, uid: u32, gid: u32) -> Option<Caller> {
        let entry = self
            .unix
            .iter()
            .find(|c| c.uid == Some(uid))
            .or_else(|| self.unix.iter().find(|c| c.uid.is_none() && c.gid == Some(gid)));
        let principal = format!("uid {uid}");
        match entry {
            None if uid == 0 => Some(Caller::operator(principal)),
            None => None,
            Some(c) => Some(Caller { principal, role: c.role, tenants: c.tenant_list() }),
        }
    }

    /// The caller a verified client certificate with the single URI SAN
    /// `uri` is: `spiffe://<trust domain>/<role>/<name>`, the trust domain
    /// this weftd's, the role one of weft's, a tenant's name a tenant. None:
    /// no access (UNAUTHENTICATED).
    pub fn spiffe_caller(&self, uri: &str) -> Option<Caller> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (td, role, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || td.is_empty() || td != self.trust_domain || name.is_empty() {
            return None;
        }
        let role = Role::parse(role)?;
        let tenants = match role {
            Role::Operator => Vec::new(),
            Role::Tenant => vec![Tenant::parse("tenant", name).ok()?],
            Role::Orchestrator => self
                .orchestrators
                .get(name)
                .map(|ts| ts.iter().filter_map(|t| Tenant::parse("tenant", t).ok()).collect())
                .unwrap_or_default(),
        };
        Some(Caller { principal: uri.to_owned(), role, tenants })
    }

    /// Whether `who`, acting for `tenant`, may use `subnet` (the request's
    /// `subnets[i]`): inside the tenant's `subnet_pools` if it has any, and
    /// clear of its `subnet_deny`. An operator may use any.
    pub fn admit_subnet(
        &self,
        who: &Caller,
        tenant: &Tenant,
        i: usize,
        subnet: &ipnet::IpNet,
    ) -> Result<(), ControlError> {
        if who.is_operator() {
            return Ok(());
        }
        let field = format!("subnets[{i}].subnet");
        if let Some(pools) = self.pick(tenant, |r| &r.subnet_pools)
            && !pools.iter().any(|p| p.contains(subnet))
        {
            let list: Vec<String> = pools.iter().map(ToString::to_string).collect();
            return Err(crate::InvalidRequest::new(
                field,
                format!(
                    "{subnet} is outside the subnet pools of tenant {:?} ({}; subnet_pools)",
                    tenant.as_str(),
                    list.join(", ")
                ),
            )
            .into());
        }
        if let Some(d) =
            self.pick(tenant, |r| &r.subnet_deny).and_then(|deny| deny.iter().find(|d| crate::net::overlaps(d, subnet)))
        {
            return Err(crate::InvalidRequest::new(
                field,
                format!("{subnet} overlaps {d}, which tenants may not use (subnet_deny)"),
            )
            .into());
        }
        Ok(())
    }

    fn pick<'a, T>(&'a self, tenant: &Tenant, f: impl Fn(&'a TenantRules) -> &'a Option<T>) -> Option<&'a T> {
        self.tenants.get(tenant.as_str()).and_then(|r| f(r).as_ref()).or_else(|| f(&self.tenant_defaults).as_ref())
    }

    /// `tenant`'s quotas.
    pub fn quotas(&self, tenant: &Tenant) -> Resources {
        let base = Resources::under(&self.tenant_defaults.quotas, Resources::DEFAULT_QUOTAS);
        match self.tenants.get(tenant.as_str()) {
            Some(r) => Resources::under(&r.quotas, base),
            None => base,
        }
    }

    /// Whether `who`, acting for `tenant`, may use `option` (with `value`:
    /// a macvlan parent, a DNS upstream). An operator may use every one.
    pub fn admit(&self, who: &Caller, tenant: &Tenant, option: HostOption, value: &str) -> Result<(), ControlError> {
        if who.is_operator() {
            return Ok(());
        }
        let denied = |why: String| {
            ControlError::PermissionDenied(format!("{}: {why} (see docs/configuration.md, [tenants])", option.as_str()))
        };
        let allowed = self.pick(tenant, |r| &r.allow).is_some_and(|a| a.contains(&option));
        let (rules, tenant) = (tenant, tenant.as_str());
        if !allowed {
            return Err(denied(format!("a host-level option the operator has not allowed tenant {tenant:?}")));
        }
        match option {
            HostOption::Macvlan => match self.pick(rules, |r| &r.macvlan_parents) {
                Some(list) if !list.iter().any(|p| p == value) => {
                    Err(denied(format!("parent {value:?} is not one of the parents allowed for tenant {tenant:?}")))
                }
                _ => Ok(()),
            },
            HostOption::DnsUpstream => {
                let listed =
                    self.pick(rules, |r| &r.dns_upstreams).is_some_and(|l| l.iter().any(|u| u.to_string() == value));
                if listed {
                    Ok(())
                } else {
                    Err(denied(format!("upstream {value} is not one the operator lists for tenant {tenant:?}")))
                }
            }
            HostOption::BridgeName | HostOption::HostMode => Ok(()),
        }
    }
}

/// The access rules in force, swapped whole on reload: a request sees the
/// rules of one moment, never half of an old and half of a new file.
#[derive(Debug, Default)]
pub struct SharedAccess(std::sync::RwLock<std::sync::Arc<Access>>);

impl SharedAccess {
    /// Rules `a`.
    pub fn new(a: Access) -> SharedAccess {
        SharedAccess(std::sync::RwLock::new(std::sync::Arc::new(a)))
    }
    /// The rules now.
    pub fn get(&self) -> std::sync::Arc<Access> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Replace the rules.
    pub fn set(&self, a: Access) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(a);
    }
}

impl UnixCaller {
    /// Check the entry holds together: it names a uid or a gid, a tenant
    /// caller names its tenant, only an orchestrator lists tenants, names parse.
    pub fn check(&self) -> Result<(), String> {
        if self.uid.is_none() && self.gid.is_none() {
            return Err("names neither a uid nor a gid".into());
        }
        match self.role {
            Role::Tenant if self.tenant.is_none() => return Err("a tenant caller needs `tenant`".into()),
            Role::Tenant | Role::Operator if !self.tenants.is_empty() => {
                return Err("only an orchestrator takes `tenants`".into());
            }
            Role::Orchestrator | Role::Operator if self.tenant.is_some() => {
                return Err("only a tenant caller takes `tenant` (an orchestrator: `tenants`)".into());
            }
            _ => {}
        }
        for t in self.tenant.iter().chain(&self.tenants) {
            Tenant::parse("tenant", t).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn tenant_list(&self) -> Vec<Tenant> {
        // validate() has parsed them; an entry that does not parse gives none.
        self.tenant.iter().chain(&self.tenants).filter_map(|t| Tenant::parse("tenant", t).ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Tenant {
        Tenant::parse("t", "acme").unwrap()
    }

    #[test]
    fn a_tenant_acts_only_for_itself() {
        let c = Caller::tenant("uid 1000", acme());
        assert_eq!(c.tenant_for("").unwrap(), "acme");
        assert_eq!(c.tenant_for("acme").unwrap(), "acme");
        let e = c.tenant_for("beta").unwrap_err();
        assert!(matches!(e, ControlError::PermissionDenied(_)), "{e:?}");
        assert!(!e.to_string().contains("beta"), "the other tenant is not echoed: {e}");
    }

    #[test]
    fn an_orchestrator_acts_for_the_tenants_it_may_name() {
        let any = Caller { principal: "uid 5".into(), role: Role::Orchestrator, tenants: vec![] };
        assert_eq!(any.tenant_for("beta").unwrap(), "beta");
        assert_eq!(any.tenant_for("").unwrap(), "");
        let some = Caller { tenants: vec![acme()], ..any };
        assert_eq!(some.tenant_for("acme").unwrap(), "acme");
        assert!(matches!(some.tenant_for("beta"), Err(ControlError::PermissionDenied(_))));
        assert!(matches!(some.tenant_for(""), Err(ControlError::PermissionDenied(_))), "default is a tenant too");
        assert!(matches!(some.tenant_for("no such!"), Err(ControlError::Invalid(_))));
    }

    #[test]
    fn the_role_table() {
        use Role::*;
        let allowed = |r: Rpc| Role::ALL.map(|role| r.allowed(role));
        assert_eq!(allowed(Rpc::CreateNetwork), [true, false, true]);
        assert_eq!(allowed(Rpc::AttachEndpoint), [true, true, true]);
        assert_eq!(allowed(Rpc::ListNetworks), [true, true, true]);
        assert_eq!(allowed(Rpc::UploadModule), [true, false, true]);
        assert_eq!(allowed(Rpc::GetStats), [true, false, false]);
        assert!(Rpc::ALL.iter().all(|r| r.allowed(Operator)));
        for r in Rpc::ALL {
            assert_eq!(Rpc::from_path(&format!("/weft.v1.{}", r.name())), Some(r));
            let writes = ["Create", "Delete", "Update", "Attach", "Detach", "Apply", "Upload"];
            let method = r.name().split('/').nth(1).unwrap();
            assert_eq!(r.mutating(), writes.iter().any(|w| method.starts_with(w)), "{method}");
        }
        assert_eq!(Rpc::from_path("/grpc.health.v1.Health/Check"), None);
    }

    #[test]
    fn unix_peers_map_to_callers() {
        let a = Access {
            unix: vec![
                UnixCaller {
                    uid: Some(1000),
                    gid: None,
                    role: Role::Tenant,
                    tenant: Some("acme".into()),
                    tenants: vec![],
                },
                UnixCaller { uid: None, gid: Some(2000), role: Role::Orchestrator, tenant: None, tenants: vec![] },
            ],
            ..Access::default()
        };
        assert_eq!(a.unix_caller(0, 0).unwrap().role, Role::Operator);
        let t = a.unix_caller(1000, 2000).unwrap();
        assert_eq!((t.role, t.tenants.clone()), (Role::Tenant, vec![acme()]), "a uid entry wins over a gid entry");
        assert_eq!(a.unix_caller(1001, 2000).unwrap().role, Role::Orchestrator);
        assert_eq!(a.unix_caller(1001, 1001), None, "no entry, not root: no access");
        let root_demoted = Access {
            unix: vec![UnixCaller {
                uid: Some(0),
                gid: None,
                role: Role::Tenant,
                tenant: Some("acme".into()),
                tenants: vec![],
            }],
            ..Access::default()
        };
        assert_eq!(root_demoted.unix_caller(0, 0).unwrap().role, Role::Tenant);
    }

    #[test]
    fn inconsistent_entries_are_refused() {
        let base = UnixCaller { uid: Some(1), gid: None, role: Role::Tenant, tenant: None, tenants: vec![] };
        let bad = |c: UnixCaller| c.check().unwrap_err();
        assert!(bad(base.clone()).contains("needs `tenant`"));
        assert!(bad(UnixCaller { uid: None, tenant: Some("a".into()), ..base.clone() }).contains("neither"));
        assert!(bad(UnixCaller { tenant: Some("bad name!".into()), ..base.clone() }).contains("must start"));
        assert!(
            bad(UnixCaller { role: Role::Orchestrator, tenant: Some("a".into()), ..base.clone() })
                .contains("only a tenant caller")
        );
        assert!(
            bad(UnixCaller { role: Role::Operator, tenants: vec!["a".into()], ..base.clone() })
                .contains("only an orchestrator")
        );
        UnixCaller { tenant: Some("a".into()), ..base }.check().unwrap();
    }

    #[test]
    fn quotas_fall_back_key_by_key() {
        let mut a = Access::default();
        assert_eq!(a.quotas(&acme()), Resources::DEFAULT_QUOTAS);
        a.tenant_defaults.quotas.networks = Some(4);
        a.tenants.insert(
            "acme".into(),
            TenantRules {
                quotas: QuotaRules { endpoints: Some(9), ..QuotaRules::default() },
                ..TenantRules::default()
            },
        );
        let q = a.quotas(&acme());
        assert_eq!((q.networks, q.endpoints, q.modules), (4, 9, Resources::DEFAULT_QUOTAS.modules));
        assert_eq!(a.quotas(&Tenant::parse("t", "beta").unwrap()).endpoints, Resources::DEFAULT_QUOTAS.endpoints);
    }

    #[test]
    fn host_options_are_the_operators_unless_allowed() {
        let op = Caller::operator("uid 0");
        let t = Caller::tenant("uid 1000", acme());
        let mut a = Access::default();
        for o in [HostOption::Macvlan, HostOption::BridgeName, HostOption::HostMode, HostOption::DnsUpstream] {
            a.admit(&op, &acme(), o, "x").unwrap();
            assert!(matches!(a.admit(&t, &acme(), o, "x"), Err(ControlError::PermissionDenied(_))), "{o:?}");
        }
        a.tenants.insert(
            "acme".into(),
            TenantRules {
                allow: Some(vec![HostOption::Macvlan, HostOption::DnsUpstream]),
                macvlan_parents: Some(vec!["eth1".into()]),
                dns_upstreams: Some(vec!["10.0.0.53:53".parse().unwrap()]),
                ..TenantRules::default()
            },
        );
        a.admit(&t, &acme(), HostOption::Macvlan, "eth1").unwrap();
        let e = a.admit(&t, &acme(), HostOption::Macvlan, "eth0").unwrap_err().to_string();
        assert!(e.contains("parent \"eth0\" is not one of the parents allowed"), "{e}");
        a.admit(&t, &acme(), HostOption::DnsUpstream, "10.0.0.53:53").unwrap();
        assert!(a.admit(&t, &acme(), HostOption::DnsUpstream, "127.0.0.1:22").is_err());
        assert!(a.admit(&t, &acme(), HostOption::BridgeName, "br-x").is_err(), "not in its allow list");
    }

    #[test]
    fn the_documented_table_is_the_code() {
        let doc = include_str!("../../../docs/security.md");
        let rows: Vec<Vec<&str>> = doc
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains("Service/"))
            .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
            .collect();
        assert_eq!(rows.len(), Rpc::ALL.len(), "one row per RPC");
        for (row, rpc) in rows.iter().zip(Rpc::ALL) {
            assert_eq!(row[0], rpc.name());
            for (cell, role) in row[1..].iter().zip(Role::ALL) {
                assert_eq!(*cell == "yes", rpc.allowed(role), "{} for {role}", rpc.name());
            }
        }
    }

    #[test]
    fn certificates_name_callers_by_spiffe_id() {
        let mut a = Access { trust_domain: "weft.test".into(), ..Access::default() };
        a.orchestrators.insert("kube".into(), vec!["acme".into()]);
        let t = a.spiffe_caller("spiffe://weft.test/tenant/acme").unwrap();
        assert_eq!(
            (t.role, t.tenants, t.principal.as_str()),
            (Role::Tenant, vec![acme()], "spiffe://weft.test/tenant/acme")
        );
        assert_eq!(a.spiffe_caller("spiffe://weft.test/operator/alice").unwrap().role, Role::Operator);
        assert_eq!(a.spiffe_caller("spiffe://weft.test/orchestrator/kube").unwrap().tenants, vec![acme()]);
        assert!(a.spiffe_caller("spiffe://weft.test/orchestrator/other").unwrap().tenants.is_empty(), "unlisted: any");
        for bad in [
            "spiffe://other.test/tenant/acme",
            "spiffe://weft.test/king/acme",
            "spiffe://weft.test/tenant/",
            "spiffe://weft.test/tenant/acme/extra",
            "spiffe://weft.test/tenant/bad name",
            "https://weft.test/tenant/acme",
            "spiffe://weft.test",
        ] {
            assert_eq!(a.spiffe_caller(bad), None, "{bad}");
        }
        assert_eq!(Access::default().spiffe_caller("spiffe:///tenant/acme"), None, "no trust domain configured");
    }

    #[test]
    fn tenant_subnets_stay_in_their_pools_and_out_of_the_deny_list() {
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        let mut a = Access::default();
        a.tenant_defaults.subnet_deny = Some(vec![net("10.0.0.0/16")]);
        a.tenants.insert(
            "acme".into(),
            TenantRules {
                subnet_pools: Some(vec![net("10.128.0.0/12"), net("fd00:ac::/48")]),
                ..TenantRules::default()
            },
        );
        let t = Caller::tenant("uid 1", acme());
        a.admit_subnet(&t, &acme(), 0, &net("10.129.0.0/24")).unwrap();
        a.admit_subnet(&t, &acme(), 0, &net("fd00:ac:0:1::/64")).unwrap();
        let e = a.admit_subnet(&t, &acme(), 1, &net("10.60.0.0/24")).unwrap_err().to_string();
        assert!(e.starts_with("subnets[1].subnet: 10.60.0.0/24 is outside the subnet pools of tenant \"acme\""), "{e}");
        let beta = Tenant::parse("t", "beta").unwrap();
        let e = a.admit_subnet(&t, &beta, 0, &net("10.0.5.0/24")).unwrap_err().to_string();
        assert!(e.contains("overlaps 10.0.0.0/16, which tenants may not use (subnet_deny)"), "{e}");
        a.admit_subnet(&Caller::operator("uid 0"), &beta, 0, &net("10.0.5.0/24")).unwrap();
    }
}
