//! The audit trail: every mutating call, once, with who made it (principal
//! and role), the tenant it acted for, the RPC, the object and the outcome —
//! refusals too. Lines go to the `weft::audit` tracing target, so an
//! operator can route or filter them (and `weftd --log-format json` makes
//! each one a JSON object).

use tonic::Status;
use tracing::info;
use weft_model::ControlError;
use weft_model::access::{Caller, Rpc};
use weft_model::ids::DEFAULT_TENANT;

use crate::status::{code, to_status};

/// What an audited call was about.
pub struct Audited<'a> {
    /// Who called.
    pub who: &'a Caller,
    /// The RPC.
    pub rpc: Rpc,
    /// The tenant it acted for (empty: the default tenant).
    pub tenant: String,
    /// The object: `network`, `network/endpoint`, a module's name, ...
    pub object: String,
    /// A dry run changes nothing but is recorded all the same.
    pub dry_run: bool,
}

impl Audited<'_> {
    /// Record `result` and turn its error into the client's status.
    pub fn record<T>(self, result: Result<T, ControlError>) -> Result<T, Status> {
        self.log(result.as_ref().err());
        result.map_err(to_status)
    }

    /// Write the line: the call succeeded, or failed with `error`.
    fn log(&self, error: Option<&ControlError>) {
        let tenant = if self.tenant.is_empty() { DEFAULT_TENANT } else { self.tenant.as_str() };
        let (outcome, error) = match error {
            None => ("ok", String::new()),
            Some(e) => (code_name(code(e)), crate::status::bounded(e.to_string())),
        };
        info!(
            target: "weft::audit",
            caller = %self.who.principal,
            role = %self.who.role,
            tenant,
            rpc = self.rpc.name(),
            object = %self.object,
            dry_run = self.dry_run,
            outcome,
            error,
            "audit"
        );
    }
}

/// Record the refusal `e` of a mutating `rpc` made before its request was
/// read (the caller's role, or the tenant it named), and answer its status.
pub fn refused(who: &Caller, rpc: Rpc, e: ControlError) -> Status {
    if rpc.mutating() {
        Audited { who, rpc, tenant: String::new(), object: String::new(), dry_run: false }.log(Some(&e));
    }
    to_status(e)
}

fn code_name(c: tonic::Code) -> &'static str {
    match c {
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::NotFound => "not_found",
        tonic::Code::AlreadyExists => "already_exists",
        tonic::Code::FailedPrecondition => "failed_precondition",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::PermissionDenied => "permission_denied",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::OutOfRange => "out_of_range",
        tonic::Code::Aborted => "aborted",
        _ => "internal",
    }
}
