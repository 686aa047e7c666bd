//! The access rules an operator configures, as data: who a Unix peer or a
//! certificate is, which host-level options and subnets each tenant may
//! use, and its quotas. Loaded whole from weftd.toml and swapped whole on
//! reload ([`SharedAccess`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Caller, Role};
use crate::error::ControlError;
use crate::ids::Tenant;

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
    /// `--opt vni=`: a cluster-wide VXLAN identifier of the tenant's
    /// choosing (the operator's numbering plan; weft picks one otherwise).
    Vni,
}

impl HostOption {
    /// The option as requests spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            HostOption::Macvlan => "driver macvlan",
            HostOption::BridgeName => "option bridge_name",
            HostOption::HostMode => "mode host",
            HostOption::DnsUpstream => "option dns_upstream",
            HostOption::Vni => "option vni",
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
            HostOption::BridgeName | HostOption::HostMode | HostOption::Vni => Ok(()),
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
        for o in [
            HostOption::Macvlan,
            HostOption::BridgeName,
            HostOption::HostMode,
            HostOption::DnsUpstream,
            HostOption::Vni,
        ] {
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
