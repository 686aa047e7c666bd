//! The RPCs of `weft.v1` and which role may call each: the table of
//! docs/security.md, as code (a test holds the two together).

use super::{Caller, Role};
use crate::error::ControlError;

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
    /// NodeService.ListNodes
    ListNodes,
    /// NodeService.RemoveNode
    RemoveNode,
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
    /// Changes the cluster itself: operator only.
    Cluster,
}

impl Rpc {
    /// Every RPC, in the order of the documentation's table.
    pub const ALL: [Rpc; 22] = [
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
        Rpc::ListNodes,
        Rpc::RemoveNode,
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
            Rpc::ListNodes => "NodeService/ListNodes",
            Rpc::RemoveNode => "NodeService/RemoveNode",
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
            Rpc::GetStats | Rpc::ListNodes => Kind::Host,
            Rpc::RemoveNode => Kind::Cluster,
        }
    }

    /// Whether it changes state (and is audited).
    pub fn mutating(self) -> bool {
        matches!(self.kind(), Kind::Own | Kind::Place | Kind::Cluster)
    }

    /// Whether `role` may call it.
    pub fn allowed(self, role: Role) -> bool {
        match (self.kind(), role) {
            (_, Role::Operator) => true,
            (Kind::Own, Role::Tenant) => true,
            (Kind::Place | Kind::Read, _) => true,
            (Kind::Own | Kind::Host | Kind::Cluster, _) => false,
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let writes = ["Create", "Delete", "Update", "Attach", "Detach", "Apply", "Upload", "Remove"];
            let method = r.name().split('/').nth(1).unwrap();
            assert_eq!(r.mutating(), writes.iter().any(|w| method.starts_with(w)), "{method}");
        }
        assert_eq!(Rpc::from_path("/grpc.health.v1.Health/Check"), None);
    }

    #[test]
    fn the_documented_table_is_the_code() {
        let doc = include_str!("../../../../docs/security.md");
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
}
