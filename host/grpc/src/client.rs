//! Connecting to weftd over its Unix socket (used by the CLI and tests).

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

pub use crate::pb::endpoint_service_client::EndpointServiceClient;
pub use crate::pb::event_service_client::EventServiceClient;
pub use crate::pb::module_service_client::ModuleServiceClient;
pub use crate::pb::network_service_client::NetworkServiceClient;
pub use crate::pb::policy_service_client::PolicyServiceClient;
pub use crate::pb::system_service_client::SystemServiceClient;
pub use crate::pb::tenant_service_client::TenantServiceClient;

/// A channel to weftd at the Unix socket `path`.
pub async fn connect_unix(path: impl Into<PathBuf>) -> Result<Channel, tonic::transport::Error> {
    let path = path.into();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::from_static("http://weftd.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}
