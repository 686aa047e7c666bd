//! The optional TCP listener with mutual TLS (rustls). A client
//! certificate is asked for but its checks are made after the handshake,
//! not in it: a client without a certificate, with one that does not chain
//! to the configured CA, that has expired, or whose SAN is not exactly one
//! URI gets a well-formed gRPC UNAUTHENTICATED (and nothing else) instead of
//! a broken connection. The handshake still proves the client holds the
//! certificate's key (rustls checks its signature with the CA verifier's own
//! algorithms). What the handshake found travels with the connection as a
//! [`TlsPeer`], which [`crate::auth`] maps to a caller per request.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{self, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tonic::transport::server::Connected;
use tracing::debug;

/// Where and with what the TLS listener serves.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// weftd's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA client certificates must chain to (PEM).
    pub client_ca: PathBuf,
}

/// A handshake that takes longer is dropped (a client cannot hold an
/// accept slot open).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection's handshake established about the client: the single
/// URI SAN of a certificate that chains to the CA and is valid now, or why
/// not (logged, never sent).
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The client's identity, or the reason it has none.
    pub identity: Result<String, String>,
}

/// Requests a client certificate, lets the handshake finish whatever it is,
/// and leaves judging it to [`TlsPeer`]; signature checks are the CA
/// verifier's.
#[derive(Debug)]
struct AskOnly(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for AskOnly {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn read_err(what: &str, path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what} {}: {e}", path.display()))
}

/// The bound listener, ready to accept.
pub struct TlsListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl TlsListener {
    /// Read the certificate, key and CA, and bind `settings.listen`.
    pub async fn bind(settings: &TlsSettings) -> io::Result<TlsListener> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert)
            .and_then(|i| i.collect())
            .map_err(|e| read_err("--tls-cert", &settings.cert, e))?;
        let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|e| read_err("--tls-key", &settings.key, e))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&settings.client_ca)
            .map_err(|e| read_err("--client-ca", &settings.client_ca, e))?
        {
            let ca = ca.map_err(|e| read_err("--client-ca", &settings.client_ca, e))?;
            roots.add(ca).map_err(|e| read_err("--client-ca", &settings.client_ca, e))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| read_err("--client-ca", &settings.client_ca, e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_client_cert_verifier(Arc::new(AskOnly(verifier.clone())))
            .with_single_cert(chain, key)
            .map_err(|e| read_err("--tls-cert/--tls-key", &settings.cert, e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let listener = TcpListener::bind(settings.listen).await?;
        Ok(TlsListener { listener, acceptor: TlsAcceptor::from(Arc::new(config)), verifier })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept connections for ever: each handshake runs on its own task
    /// (bounded in time), and finished ones come out of the stream.
    pub fn incoming(self) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConn>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let this = Arc::new(self);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = this.listener.accept() => a,
                    // The server stopped taking connections: stop accepting.
                    _ = tx.closed() => return,
                };
                let (tcp, from) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        debug!(error = %e, "accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (tx, this) = (tx.clone(), this.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, this.acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let peer = this.judge(&tls);
                            if let Err(why) = &peer.identity {
                                debug!(%from, why, "TLS client not identified");
                            }
                            let _ = tx.send(Ok(TlsConn { inner: tls, peer })).await;
                        }
                        Ok(Err(e)) => debug!(%from, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%from, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    /// What the finished handshake of `tls` says about the client.
    fn judge(&self, tls: &tokio_rustls::server::TlsStream<TcpStream>) -> TlsPeer {
        let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
        let identity = match certs.split_first() {
            None => Err("no client certificate".to_owned()),
            Some((leaf, rest)) => self
                .verifier
                .verify_client_cert(leaf, rest, UnixTime::now())
                .map_err(|e| format!("certificate not accepted: {e}"))
                .and_then(|_| single_uri(leaf)),
        };
        TlsPeer { identity }
    }
}

/// The one URI SAN of certificate `der`.
fn single_uri(der: &CertificateDer<'_>) -> Result<String, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("certificate does not parse: {e}"))?;
    let san = cert.subject_alternative_name().map_err(|e| format!("subjectAltName: {e}"))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [one] => Ok((*one).to_owned()),
        _ => Err(format!("{} URI SANs, not exactly one", uris.len())),
    }
}

/// A TLS connection with what its handshake established.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: TlsPeer,
}

impl Connected for TlsConn {
    type ConnectInfo = TlsPeer;
    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
