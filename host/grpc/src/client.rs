//! Connecting to weftd over its Unix socket or its mutual-TLS listener
//! (used by the CLI, the benchmarks and tests).

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

pub use crate::pb::endpoint_service_client::EndpointServiceClient;
pub use crate::pb::event_service_client::EventServiceClient;
pub use crate::pb::module_service_client::ModuleServiceClient;
pub use crate::pb::network_service_client::NetworkServiceClient;
pub use crate::pb::node_service_client::NodeServiceClient;
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

/// The files a client presents to weftd's TLS listener.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The client's certificate (PEM), with its one SPIFFE URI SAN.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA weftd's certificate chains to (PEM).
    pub ca: PathBuf,
}

impl ClientTls {
    /// tonic's TLS configuration from the files.
    pub fn config(&self) -> Result<tonic::transport::ClientTlsConfig, String> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let read = |what: &str, p: &PathBuf| std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()));
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("--ca", &self.ca)?))
            .identity(Identity::from_pem(read("--tls-cert", &self.cert)?, read("--tls-key", &self.key)?)))
    }
}

/// A channel to weftd's TLS listener at `addr` (`https://HOST:PORT`).
pub async fn connect_tls(addr: &str, tls: &ClientTls) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(addr.to_owned()).map_err(|e| format!("--addr {addr:?}: {e}"))?;
    let endpoint = endpoint.tls_config(tls.config()?).map_err(|e| format!("TLS: {e}"))?;
    endpoint.connect().await.map_err(|e| format!("cannot reach weftd at {addr}: {}", chain(&e)))
}

/// An error with its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
