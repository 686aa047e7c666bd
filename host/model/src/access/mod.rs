//! Who is calling and what they may do. A connection's peer (a Unix uid/gid
//! or a TLS certificate's SPIFFE id) is resolved once, at the edge, to a
//! [`Caller`] with a [`Role`]; the role decides which RPCs it may call
//! ([`Rpc::allowed`]) and the caller decides which tenant a request acts for
//! ([`Caller::tenant_for`]). The rules an operator configures — who maps to
//! which caller, what each tenant may use — are [`Access`], reloadable as a
//! whole. Pure data and rules: the daemon loads it, the gRPC edge and the
//! controller consult it.

mod caller;
mod rpc;
mod rules;

pub use caller::{Caller, Role};
pub use rpc::Rpc;
pub use rules::{Access, HostOption, QuotaRules, Resources, SharedAccess, TenantRules, UnixCaller};
