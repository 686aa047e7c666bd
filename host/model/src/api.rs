//! The controller contract the gRPC edge is written against. The daemon
//! implements it; the edge converts protobuf to these model types and back
//! and never sees the store, the kernel or the Wasm host.

use std::future::Future;

use crate::endpoint::{AttachEndpoint, Endpoint};
use crate::error::ControlError;
use crate::network::{CreateNetwork, Network};

/// A network with its endpoints, as returned to clients.
#[derive(Debug, Clone)]
pub struct NetworkView {
    /// The network.
    pub network: Network,
    /// Its endpoints.
    pub endpoints: Vec<EndpointView>,
}

/// An endpoint with what a client needs beside the record.
#[derive(Debug, Clone)]
pub struct EndpointView {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Gateways of the subnets it has addresses in.
    pub gateways: Vec<std::net::IpAddr>,
    /// DNS servers for its resolv.conf (empty: no DNS on the network).
    pub dns_servers: Vec<std::net::IpAddr>,
    /// DNS search domains for its resolv.conf.
    pub dns_search: Vec<String>,
}

/// Addresses an object by tenant and name(s), as raw request strings.
#[derive(Debug, Clone, Default)]
pub struct Ref {
    /// Tenant; empty for default.
    pub tenant: String,
    /// Network name.
    pub network: String,
    /// Endpoint name (endpoint calls only).
    pub name: String,
}

/// What weftd does for its clients.
pub trait Controller: Send + Sync + 'static {
    /// Create a network.
    fn create_network(&self, req: CreateNetwork) -> impl Future<Output = Result<NetworkView, ControlError>> + Send;
    /// One network by name.
    fn get_network(&self, r: Ref) -> impl Future<Output = Result<NetworkView, ControlError>> + Send;
    /// All of a tenant's networks.
    fn list_networks(&self, tenant: String) -> impl Future<Output = Result<Vec<NetworkView>, ControlError>> + Send;
    /// Delete a network with no endpoints.
    fn delete_network(&self, r: Ref) -> impl Future<Output = Result<(), ControlError>> + Send;
    /// Attach a container namespace to a network.
    fn attach(&self, req: AttachEndpoint) -> impl Future<Output = Result<EndpointView, ControlError>> + Send;
    /// Detach an endpoint.
    fn detach(&self, r: Ref) -> impl Future<Output = Result<(), ControlError>> + Send;
    /// One endpoint.
    fn get_endpoint(&self, r: Ref) -> impl Future<Output = Result<EndpointView, ControlError>> + Send;
    /// A tenant's endpoints, optionally of one network (`r.network`).
    fn list_endpoints(&self, r: Ref) -> impl Future<Output = Result<Vec<EndpointView>, ControlError>> + Send;
}
