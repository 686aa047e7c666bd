//! Errors the controller reports to clients. Each variant maps to exactly one
//! gRPC status code (in `weft-grpc`), and each message names the object and
//! the rule that was broken.

use thiserror::Error;

/// A request field that broke a rule. Rendered as `field: reason`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {reason}")]
pub struct InvalidRequest {
    /// The request field (or field path), e.g. `subnets[0]`.
    pub field: String,
    /// What is wrong with it, naming the value and the rule.
    pub reason: String,
}

impl InvalidRequest {
    /// Build an error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// Every error the controller returns to a client.
#[derive(Debug, Clone, Error)]
pub enum ControlError {
    /// Bad input; nothing was changed.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The named object does not exist (for this tenant).
    #[error("{0}")]
    NotFound(String),
    /// An object with that identity already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the current state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A pool or quota is used up.
    #[error("{0}")]
    Exhausted(String),
    /// A decision component failed (trap, deadline, bad answer); rolled back.
    #[error("{0}")]
    Plugin(String),
    /// A revision is older than what is retained (the client re-lists).
    #[error("{0}")]
    OutOfRange(String),
    /// A stream was ended (a watch consumer too slow to keep up).
    #[error("{0}")]
    Aborted(String),
    /// A service weft depends on (etcd) cannot be reached; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    /// The kernel or the store failed; the operation was rolled back.
    #[error("{0}")]
    Internal(String),
    /// The caller could not be identified (no configured uid, no valid
    /// certificate); nothing else is said.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but its role or tenant may not do this.
    #[error("{0}")]
    PermissionDenied(String),
}
