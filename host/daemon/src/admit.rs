//! What a caller may ask for, checked before any lock, Wasm call or kernel
//! operation: the host-level options and subnets of a network (against
//! the tenant's rules and the host's own addresses and routes), an
//! attach's host mode and namespace override. And the tenant's quotas, put
//! on a change for the commit to check under the index lock (`quota.rs`).

use weft_model::access::{Access, Caller, HostOption};
use weft_model::endpoint::{EndpointMode, EndpointSpec};
use weft_model::network::NetworkSpec;
use weft_model::{ControlError, InvalidRequest, Tenant};

use crate::change::Change;
use crate::controller::Ctl;

/// The host-level options and subnets of `spec` that `who` may not use,
/// refused.
pub fn network(access: &Access, who: &Caller, spec: &NetworkSpec) -> Result<(), ControlError> {
    for (i, s) in spec.subnets.iter().enumerate() {
        access.admit_subnet(who, &spec.tenant, i, &s.subnet)?;
    }
    if let Some(m) = &spec.macvlan {
        access.admit(who, &spec.tenant, HostOption::Macvlan, m.parent.as_str())?;
    }
    if spec.bridge_name.is_some() {
        access.admit(who, &spec.tenant, HostOption::BridgeName, "")?;
    }
    for up in &spec.dns_upstream {
        access.admit(who, &spec.tenant, HostOption::DnsUpstream, &up.to_string())?;
    }
    if spec.vni.is_some() {
        access.admit(who, &spec.tenant, HostOption::Vni, "")?;
    }
    Ok(())
}

/// An attach's host mode and namespace override, refused to whom they are not allowed.
pub fn attach(access: &Access, who: &Caller, spec: &EndpointSpec, foreign_netns: bool) -> Result<(), ControlError> {
    if spec.mode == EndpointMode::Host {
        access.admit(who, &spec.tenant, HostOption::HostMode, "")?;
    }
    if foreign_netns && !who.is_operator() {
        return Err(ControlError::PermissionDenied(format!(
            "allow_foreign_netns: {}: only an operator may attach a namespace another tenant is in",
            who.principal
        )));
    }
    Ok(())
}

impl Ctl {
    /// A tenant's subnets must not shadow what the host itself uses: its
    /// addresses and routes, other than those of weft's own bridges (and a
    /// macvlan network's parent, whose LAN it is meant to share). The
    /// message does not say which of the host's prefixes it is.
    pub(crate) async fn clear_of_the_host(&self, spec: &NetworkSpec) -> Result<(), ControlError> {
        let host = self
            .commit
            .kernel
            .host_prefixes()
            .await
            .map_err(|e| ControlError::Internal(format!("reading the host's addresses and routes: {e}")))?;
        let ours: std::collections::HashSet<weft_model::IfName> =
            self.index.read(|st| st.all_networks().map(|n| n.bridge.clone()).collect());
        let parent = spec.macvlan.as_ref().map(|m| &m.parent);
        for (i, s) in spec.subnets.iter().enumerate() {
            let shadows = host.iter().any(|(p, link)| {
                let weft_owned = link.as_ref().is_some_and(|l| ours.contains(l) || Some(l) == parent);
                !weft_owned && weft_model::net::overlaps(p, &s.subnet)
            });
            if shadows {
                return Err(InvalidRequest::new(
                    format!("subnets[{i}].subnet"),
                    format!("{} overlaps an address or route of the host, which tenants may not use", s.subnet),
                )
                .into());
            }
        }
        Ok(())
    }

    /// `change`, held to `tenant`'s quotas.
    pub(crate) fn limited(&self, mut change: Change, tenant: &Tenant) -> Change {
        change.quota = Some((tenant.clone(), self.access.get().quotas(tenant)));
        change
    }
}
