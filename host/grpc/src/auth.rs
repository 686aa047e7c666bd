//! The one place a request gets its caller: a tower layer in front of every
//! service resolves the connection's peer (the Unix socket's SO_PEERCRED
//! uid/gid, as tonic records it, or the TLS listener's verified certificate
//! URI, [`TlsPeer`]) to a [`Caller`] under the access rules in
//! force, refuses an unknown peer with UNAUTHENTICATED and an RPC its role may
//! not call with PERMISSION_DENIED — both before the request is decoded —
//! and hands the caller to the handler in the request's extensions. It also
//! tells an [`RpcObserver`] (weftd's metrics) the method and status code of
//! every call, refused ones included.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};
use tower::{Layer, Service};
use weft_model::access::{Caller, Rpc, SharedAccess};

use crate::audit::refused;
use crate::tls::TlsPeer;

/// Told the method (`NetworkService/ListNetworks`; the service alone for
/// health and reflection; `other` for anything else) and the status code of
/// each call once its response starts. A streaming call counts as OK when
/// its stream opens.
#[derive(Clone)]
pub struct RpcObserver(pub Arc<dyn Fn(&'static str, tonic::Code) + Send + Sync>);

impl std::fmt::Debug for RpcObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcObserver")
    }
}

/// The layer: [`Authenticate`] around each service.
#[derive(Clone)]
pub struct AuthLayer {
    access: Arc<SharedAccess>,
    observer: Option<RpcObserver>,
}

impl AuthLayer {
    /// Resolve callers under `access` (read per request: a reload applies to
    /// the next request, on connections already open too), telling
    /// `observer` of every call.
    pub fn new(access: Arc<SharedAccess>, observer: Option<RpcObserver>) -> AuthLayer {
        AuthLayer { access, observer }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate { inner, access: self.access.clone(), observer: self.observer.clone() }
    }
}

/// A service that runs only for identified callers allowed the RPC.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    access: Arc<SharedAccess>,
    observer: Option<RpcObserver>,
}

/// The method label of a request path (a fixed set: no label from input).
fn method_label(path: &str) -> &'static str {
    if let Some(rpc) = Rpc::from_path(path) {
        return rpc.name();
    }
    if path.starts_with("/grpc.health.v1.Health/") {
        "grpc.health.v1.Health"
    } else if path.starts_with("/grpc.reflection.") {
        "grpc.reflection"
    } else {
        "other"
    }
}

/// The status code of a response whose headers are in: `grpc-status` in the
/// headers (an error, trailers-only), else OK (a reply whose status comes in
/// its trailers, or a stream that opened).
fn status_of<R>(r: &http::Response<R>) -> tonic::Code {
    r.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// Who the peer of a request's connection is, or the status refusing it.
fn identify<B>(access: &SharedAccess, req: &http::Request<B>) -> Result<Caller, Status> {
    let unknown = || Status::unauthenticated("the caller is not identified");
    if let Some(info) = req.extensions().get::<UdsConnectInfo>() {
        let cred = info.peer_cred.ok_or_else(unknown)?;
        return access.get().unix_caller(cred.uid(), cred.gid()).ok_or_else(unknown);
    }
    if let Some(peer) = req.extensions().get::<TlsPeer>() {
        let uri = peer.identity.as_ref().map_err(|_| unknown())?;
        return access.get().spiffe_caller(uri).ok_or_else(unknown);
    }
    Err(unknown())
}

impl<S, B, R> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path());
        let answer = answer(self, req);
        let Some(observe) = self.observer.clone() else { return answer };
        Box::pin(async move {
            let r = answer.await;
            if let Ok(resp) = &r {
                (observe.0)(method, status_of(resp));
            }
            r
        })
    }
}

/// The response future of a request: identify, check the role, call the
/// service.
type Answer<R, E> = Pin<Box<dyn Future<Output = Result<http::Response<R>, E>> + Send>>;

fn answer<S, B, R>(me: &mut Authenticate<S>, mut req: http::Request<B>) -> Answer<R, S::Error>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    let caller = match identify(&me.access, &req) {
        Ok(c) => c,
        Err(s) => return Box::pin(std::future::ready(Ok(s.into_http()))),
    };
    if let Some(rpc) = Rpc::from_path(req.uri().path())
        && !rpc.allowed(caller.role)
    {
        return Box::pin(std::future::ready(Ok(refused(&caller, rpc, rpc.denied(&caller)).into_http())));
    }
    req.extensions_mut().insert(caller);
    // The service that was polled ready is the one to call.
    let clone = me.inner.clone();
    let mut inner = std::mem::replace(&mut me.inner, clone);
    Box::pin(inner.call(req))
}

/// The caller [`AuthLayer`] identified for `r`.
pub fn caller<T>(r: &Request<T>) -> Result<Caller, Status> {
    r.extensions().get::<Caller>().cloned().ok_or_else(|| Status::unauthenticated("the caller is not identified"))
}
