//! A caller, once identified, and the tenant each of its requests acts for.

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
}
