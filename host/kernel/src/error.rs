//! The kernel error type: which operation failed, on which object, and why.

use std::fmt::Display;

use thiserror::Error;

/// A kernel operation failed.
#[derive(Debug, Clone, Error)]
#[error("{op} {target}: {reason}")]
pub struct KernelError {
    /// The operation, named like the `ip`/`nft` verb (`link add`, `addr add`).
    pub op: String,
    /// The object (interface, address, namespace, table).
    pub target: String,
    /// The kernel's or tool's reason.
    pub reason: String,
    /// The errno, when the kernel gave one.
    pub errno: Option<i32>,
}

impl KernelError {
    /// A failure of `op` on `target`.
    pub fn new(op: &str, target: impl Display, source: impl Display) -> Self {
        KernelError { op: op.into(), target: target.to_string(), reason: source.to_string(), errno: None }
    }

    /// A netlink failure, keeping the errno.
    pub fn netlink(op: &str, target: impl Display, e: rtnetlink::Error) -> Self {
        let errno = match &e {
            rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
            _ => None,
        };
        let source = match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        };
        KernelError { op: op.into(), target: target.to_string(), reason: source, errno }
    }

    /// True if the kernel said the object already exists.
    pub fn is_exists(&self) -> bool {
        self.errno == Some(libc::EEXIST)
    }

    /// True if the kernel said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.errno == Some(libc::ENODEV) || self.errno == Some(libc::ENOENT)
    }
}
