//! weft's domain model: the types every other crate speaks, the rules that
//! make a request valid, and the traits behind which decisions (IPAM, ...)
//! are made. It does no I/O so it can be tested in isolation and shared by
//! the planner, the daemon and the gRPC edge alike.

pub mod access;
pub mod api;
pub mod document;
pub mod endpoint;
pub mod error;
pub mod event;
pub mod ids;
pub mod ipam;
pub mod module;
pub mod naming;
pub mod net;
pub mod network;
pub mod policy;
pub mod ports;

pub use access::{Caller, Role, Rpc};
pub use error::{ControlError, InvalidRequest};
pub use ids::{EndpointName, IfName, Mac, NetworkName, Tenant};
