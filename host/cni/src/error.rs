//! CNI's error object: what the runtime reads when a verb fails, with the
//! spec's well-known codes (1–99) and weft's own (100+).

use serde::Serialize;

/// The network configuration's CNI version is not one the plugin speaks.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// A field of the network configuration is not supported.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// The container (its attachment) is unknown.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// A required environment variable is missing or malformed.
pub const INVALID_ENV: u32 = 4;
/// Reading the configuration failed.
pub const IO_FAILURE: u32 = 5;
/// The configuration is not valid JSON of the expected shape.
pub const DECODE_FAILURE: u32 = 6;
/// The network configuration breaks a rule.
pub const INVALID_CONFIG: u32 = 7;
/// Transient: weftd is unreachable or asked for a retry.
pub const TRY_AGAIN: u32 = 11;
/// STATUS: the plugin cannot serve ADD now (weftd down or not ready).
pub const NOT_AVAILABLE: u32 = 50;
/// weftd refused the request (details carry its gRPC code and message).
pub const REFUSED: u32 = 100;
/// CHECK found the attachment not as it was made.
pub const CHECK_FAILED: u32 = 101;

/// A failed verb, printed as CNI's error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    /// The spec's or weft's code.
    pub code: u32,
    /// One line saying what failed.
    pub msg: String,
    /// More: each difference CHECK found, weftd's gRPC code.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code` and message.
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    /// The same error with details.
    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// weftd's answer to `what` as an error: transient codes are "try again
    /// later", the rest are refusals that keep weftd's message.
    pub fn from_status(what: &str, s: &tonic::Status) -> CniError {
        use tonic::Code;
        let code = match s.code() {
            Code::Unavailable | Code::Aborted | Code::DeadlineExceeded | Code::ResourceExhausted => TRY_AGAIN,
            _ => REFUSED,
        };
        CniError::new(code, format!("{what}: {}", s.message())).with_details(format!("grpc code {:?}", s.code()))
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)
    }
}
