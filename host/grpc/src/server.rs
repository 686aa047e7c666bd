//! The tonic services and the servers that host them — the Unix socket and
//! the optional mutual-TLS listener, the same services behind the same
//! caller layer — with grpc.health.v1 and server reflection (v1 and
//! v1alpha, so grpcurl works).

use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};
use tower::layer::util::{Identity, Stack};

use crate::audit::{Audited, refused};
use crate::auth::{AuthLayer, caller};
use crate::pb::endpoint_service_server::{EndpointService, EndpointServiceServer};
use crate::pb::event_service_server::{EventService, EventServiceServer};
use crate::pb::module_service_server::{ModuleService, ModuleServiceServer};
use crate::pb::network_service_server::{NetworkService, NetworkServiceServer};
use crate::pb::node_service_server::{NodeService, NodeServiceServer};
use crate::pb::policy_service_server::{PolicyService, PolicyServiceServer};
use crate::pb::system_service_server::{SystemService, SystemServiceServer};
use crate::pb::tenant_service_server::{TenantService, TenantServiceServer};
use crate::status::to_status;
use crate::tls::{TlsListener, TlsSettings};
use crate::{Controller, convert, pb};
use weft_model::access::{Caller, Rpc, SharedAccess};
use weft_model::api::{ApplyDocuments, CheckPolicy, DeleteDocuments, UpdateNetwork, UploadModule};
use weft_model::event::WatchFilter;
use weft_model::{ControlError, InvalidRequest};

/// Every service over one controller.
pub struct Api<C> {
    ctl: Arc<C>,
}

impl<C> Clone for Api<C> {
    fn clone(&self) -> Self {
        Api { ctl: self.ctl.clone() }
    }
}

/// Who calls `rpc`, and the request with its tenant field resolved for
/// them (see [`Caller::tenant_for`]; a refusal of a mutating call is
/// audited).
fn scoped<T>(r: Request<T>, rpc: Rpc, tenant: impl FnOnce(&mut T) -> &mut String) -> Result<(Caller, T), Status> {
    let who = caller(&r)?;
    let mut m = r.into_inner();
    let t = tenant(&mut m);
    match who.tenant_for(t) {
        Ok(v) => *t = v,
        Err(e) => return Err(refused(&who, rpc, e)),
    }
    Ok((who, m))
}

/// `network/name`, or `network` alone, for the audit line.
fn object(network: &str, name: &str) -> String {
    if name.is_empty() { network.to_owned() } else { format!("{network}/{name}") }
}

fn audited<'a>(who: &'a Caller, rpc: Rpc, tenant: &str, object: String, dry_run: bool) -> Audited<'a> {
    Audited { who, rpc, tenant: tenant.to_owned(), object, dry_run }
}

#[tonic::async_trait]
impl<C: Controller> NetworkService for Api<C> {
    async fn create_network(&self, r: Request<pb::CreateNetworkRequest>) -> Result<Response<pb::Network>, Status> {
        let (who, m) = scoped(r, Rpc::CreateNetwork, |m| &mut m.tenant)?;
        let a = audited(&who, Rpc::CreateNetwork, &m.tenant, m.name.clone(), m.dry_run);
        let v = a.record(self.ctl.create_network(&who, convert::create_network(m)).await)?;
        Ok(Response::new(convert::network_outcome(v)))
    }
    async fn get_network(&self, r: Request<pb::GetNetworkRequest>) -> Result<Response<pb::Network>, Status> {
        let (_, r) = scoped(r, Rpc::GetNetwork, |m| &mut m.tenant)?;
        let v = self.ctl.get_network(convert::reference(r.tenant, r.name, String::new())).await.map_err(to_status)?;
        Ok(Response::new(convert::network(v)))
    }
    async fn list_networks(
        &self,
        r: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let (_, r) = scoped(r, Rpc::ListNetworks, |m| &mut m.tenant)?;
        let (v, revision) = self.ctl.list_networks(r.tenant).await.map_err(to_status)?;
        Ok(Response::new(pb::ListNetworksResponse {
            networks: v.into_iter().map(convert::network).collect(),
            revision,
        }))
    }
    async fn delete_network(
        &self,
        r: Request<pb::DeleteNetworkRequest>,
    ) -> Result<Response<pb::DeleteNetworkResponse>, Status> {
        let (who, r) = scoped(r, Rpc::DeleteNetwork, |m| &mut m.tenant)?;
        let a = audited(&who, Rpc::DeleteNetwork, &r.tenant, r.name.clone(), r.dry_run);
        let o = a.record(
            self.ctl.delete_network(convert::mutation(r.tenant, r.name, String::new(), r.dry_run), r.force).await,
        )?;
        Ok(Response::new(pb::DeleteNetworkResponse { revision: o.revision, dry_run: convert::plan(o.plan) }))
    }
    async fn update_network(&self, r: Request<pb::UpdateNetworkRequest>) -> Result<Response<pb::Network>, Status> {
        let (who, r) = scoped(r, Rpc::UpdateNetwork, |m| &mut m.tenant)?;
        let a = audited(&who, Rpc::UpdateNetwork, &r.tenant, r.name.clone(), r.dry_run);
        let req = UpdateNetwork { tenant: r.tenant, name: r.name, policy: r.policy, dry_run: r.dry_run };
        let v = a.record(self.ctl.update_network(req).await)?;
        Ok(Response::new(convert::network_outcome(v)))
    }
}

#[tonic::async_trait]
impl<C: Controller> PolicyService for Api<C> {
    async fn apply_policies(
        &self,
        r: Request<pb::ApplyPoliciesRequest>,
    ) -> Result<Response<pb::ApplyPoliciesResponse>, Status> {
        let (who, r) = scoped(r, Rpc::ApplyPolicies, |m| &mut m.tenant)?;
        let a = audited(&who, Rpc::ApplyPolicies, &r.tenant, r.network.clone(), r.dry_run);
        let req = ApplyDocuments { tenant: r.tenant, network: r.network, text: r.documents, dry_run: r.dry_run };
        let c = a.record(self.ctl.apply_documents(req).await)?;
        Ok(Response::new(convert::applied(c)))
    }
    async fn list_policies(
        &self,
        r: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let (_, r) = scoped(r, Rpc::ListPolicies, |m| &mut m.tenant)?;
        let docs =
            self.ctl.list_documents(convert::reference(r.tenant, r.network, String::new())).await.map_err(to_status)?;
        Ok(Response::new(pb::ListPoliciesResponse { documents: docs.into_iter().map(convert::document).collect() }))
    }
    async fn delete_policies(
        &self,
        r: Request<pb::DeletePoliciesRequest>,
    ) -> Result<Response<pb::DeletePoliciesResponse>, Status> {
        let (who, r) = scoped(r, Rpc::DeletePolicies, |m| &mut m.tenant)?;
        let a = audited(&who, Rpc::DeletePolicies, &r.tenant, r.name.clone(), r.dry_run);
        let req = DeleteDocuments {
            tenant: r.tenant,
            text: r.documents,
            name: r.name,
            kind: r.kind,
            namespace: r.namespace,
            dry_run: r.dry_run,
        };
        let c = a.record(self.ctl.delete_documents(req).await)?;
        Ok(Response::new(convert::deleted(c)))
    }
    async fn check_policy(
        &self,
        r: Request<pb::CheckPolicyRequest>,
    ) -> Result<Response<pb::CheckPolicyResponse>, Status> {
        let (_, r) = scoped(r, Rpc::CheckPolicy, |m| &mut m.tenant)?;
        let req = CheckPolicy { tenant: r.tenant, network: r.network, from: r.from, to: r.to, port: r.port };
        let v = self.ctl.check_policy(req).await.map_err(to_status)?;
        Ok(Response::new(convert::verdict(v)))
    }
}

#[tonic::async_trait]
impl<C: Controller> SystemService for Api<C> {
    async fn get_stats(&self, _r: Request<pb::GetStatsRequest>) -> Result<Response<pb::Stats>, Status> {
        let v = self.ctl.stats().await.map_err(to_status)?;
        Ok(Response::new(convert::stats(v)))
    }
}

#[tonic::async_trait]
impl<C: Controller> NodeService for Api<C> {
    async fn list_nodes(&self, _r: Request<pb::ListNodesRequest>) -> Result<Response<pb::ListNodesResponse>, Status> {
        let nodes = self.ctl.list_nodes().await.map_err(to_status)?;
        Ok(Response::new(pb::ListNodesResponse { nodes: nodes.into_iter().map(convert::node).collect() }))
    }

    async fn remove_node(&self, r: Request<pb::RemoveNodeRequest>) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let who = caller(&r)?;
        let m = r.into_inner();
        let a = audited(&who, Rpc::RemoveNode, "", format!("node/{}", weft_model::ids::shown(&m.name)), false);
        let endpoints = a.record(self.ctl.remove_node(m.name).await)?;
        Ok(Response::new(pb::RemoveNodeResponse { endpoints }))
    }
}

#[tonic::async_trait]
impl<C: Controller> TenantService for Api<C> {
    async fn get_usage(&self, r: Request<pb::GetUsageRequest>) -> Result<Response<pb::TenantUsage>, Status> {
        let (_, r) = scoped(r, Rpc::GetUsage, |m| &mut m.tenant)?;
        let u = self.ctl.usage(r.tenant).await.map_err(to_status)?;
        Ok(Response::new(convert::usage(u)))
    }
}

#[tonic::async_trait]
impl<C: Controller> EndpointService for Api<C> {
    async fn attach_endpoint(&self, r: Request<pb::AttachEndpointRequest>) -> Result<Response<pb::Endpoint>, Status> {
        let (who, m) = scoped(r, Rpc::AttachEndpoint, |m| &mut m.tenant)?;
        let a = audited(&who, Rpc::AttachEndpoint, &m.tenant, object(&m.network, &m.name), m.dry_run);
        let v = a.record(self.ctl.attach(&who, convert::attach(m)).await)?;
        Ok(Response::new(convert::endpoint_outcome(v)))
    }
    async fn detach_endpoint(
        &self,
        r: Request<pb::DetachEndpointRequest>,
    ) -> Result<Response<pb::DetachEndpointResponse>, Status> {
        let (who, r) = scoped(r, Rpc::DetachEndpoint, |m| &mut m.tenant)?;
        let name = if r.name.is_empty() { &r.request_key } else { &r.name };
        let a = audited(&who, Rpc::DetachEndpoint, &r.tenant, object(&r.network, name), r.dry_run);
        let o = a.record(self.ctl.detach(convert::detach(r)).await)?;
        Ok(Response::new(pb::DetachEndpointResponse { revision: o.revision, dry_run: convert::plan(o.plan) }))
    }
    async fn get_endpoint(&self, r: Request<pb::GetEndpointRequest>) -> Result<Response<pb::Endpoint>, Status> {
        let (_, r) = scoped(r, Rpc::GetEndpoint, |m| &mut m.tenant)?;
        let v = self.ctl.get_endpoint(convert::reference(r.tenant, r.network, r.name)).await.map_err(to_status)?;
        Ok(Response::new(convert::endpoint(v)))
    }
    async fn list_endpoints(
        &self,
        r: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let (_, r) = scoped(r, Rpc::ListEndpoints, |m| &mut m.tenant)?;
        let (v, revision) =
            self.ctl.list_endpoints(convert::reference(r.tenant, r.network, String::new())).await.map_err(to_status)?;
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints: v.into_iter().map(convert::endpoint).collect(),
            revision,
        }))
    }
}

#[tonic::async_trait]
impl<C: Controller> ModuleService for Api<C> {
    async fn upload_module(
        &self,
        r: Request<tonic::Streaming<pb::UploadModuleRequest>>,
    ) -> Result<Response<pb::Module>, Status> {
        use pb::upload_module_request::Part;
        let who = caller(&r)?;
        let mut stream = r.into_inner();
        let cap = self.ctl.max_module_bytes();
        let mut header = match stream.message().await? {
            Some(pb::UploadModuleRequest { part: Some(Part::Header(h)) }) => h,
            _ => return Err(Status::invalid_argument("module: the first message of an upload must be its header")),
        };
        header.tenant = who.tenant_for(&header.tenant).map_err(|e| refused(&who, Rpc::UploadModule, e))?;
        let a = audited(&who, Rpc::UploadModule, &header.tenant, header.name.clone(), header.dry_run);
        let mut bytes = Vec::new();
        while let Some(m) = stream.message().await? {
            match m.part {
                Some(Part::Chunk(c)) => {
                    // Refuse as soon as the cap is passed, not after
                    // buffering everything a client sends.
                    if bytes.len() + c.len() > cap {
                        return a.record(Err(ControlError::Invalid(InvalidRequest::new(
                            "module",
                            format!("{:?} is over the {cap}-byte limit (weftd --module-max-bytes)", header.name),
                        ))));
                    }
                    bytes.extend_from_slice(&c);
                }
                _ => return Err(Status::invalid_argument("module: only the first message may be a header")),
            }
        }
        let req = UploadModule {
            tenant: header.tenant,
            name: header.name,
            kind: header.kind,
            bytes,
            dry_run: header.dry_run,
        };
        let (v, o) = a.record(self.ctl.upload_module(req).await)?;
        Ok(Response::new(pb::Module { revision: o.revision, dry_run: convert::plan(o.plan), ..convert::module(v) }))
    }
    async fn list_modules(
        &self,
        r: Request<pb::ListModulesRequest>,
    ) -> Result<Response<pb::ListModulesResponse>, Status> {
        let (_, r) = scoped(r, Rpc::ListModules, |m| &mut m.tenant)?;
        let v = self.ctl.list_modules(r.tenant).await.map_err(to_status)?;
        Ok(Response::new(pb::ListModulesResponse { modules: v.into_iter().map(convert::module).collect() }))
    }
    async fn get_module(&self, r: Request<pb::GetModuleRequest>) -> Result<Response<pb::Module>, Status> {
        let (_, r) = scoped(r, Rpc::GetModule, |m| &mut m.tenant)?;
        let v = self.ctl.get_module(convert::reference(r.tenant, String::new(), r.name)).await.map_err(to_status)?;
        Ok(Response::new(convert::module(v)))
    }
    async fn delete_module(
        &self,
        r: Request<pb::DeleteModuleRequest>,
    ) -> Result<Response<pb::DeleteModuleResponse>, Status> {
        let (who, r) = scoped(r, Rpc::DeleteModule, |m| &mut m.tenant)?;
        let a = audited(&who, Rpc::DeleteModule, &r.tenant, r.name.clone(), r.dry_run);
        let o =
            a.record(self.ctl.delete_module(convert::mutation(r.tenant, String::new(), r.name, r.dry_run)).await)?;
        Ok(Response::new(pb::DeleteModuleResponse { revision: o.revision, dry_run: convert::plan(o.plan) }))
    }
}

#[tonic::async_trait]
impl<C: Controller> EventService for Api<C> {
    type WatchStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

    async fn watch(&self, r: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        use tokio_stream::StreamExt;
        let (_, r) = scoped(r, Rpc::Watch, |m| &mut m.tenant)?;
        let filter =
            WatchFilter { tenant: r.tenant, from_revision: r.from_revision, network: r.network, kinds: r.kinds };
        let stream = self.ctl.watch(filter).await.map_err(to_status)?;
        let out = stream.map(|i| i.map(convert::watch_item).map_err(to_status));
        Ok(Response::new(Box::pin(out)))
    }
}

/// Where the API is served: the Unix socket, always, and the TLS listener
/// if configured.
#[derive(Debug, Clone)]
pub struct Listeners {
    /// The Unix socket's path.
    pub socket: std::path::PathBuf,
    /// The socket file's group (mode 0660), so callers configured by gid
    /// can connect.
    pub socket_group: Option<u32>,
    /// The mutual-TLS TCP listener.
    pub tls: Option<TlsSettings>,
    /// Told of every call on both listeners (weftd's metrics).
    pub observer: Option<crate::auth::RpcObserver>,
}

/// Bind the Unix socket at `path`: readable and writable by owner and
/// group only, its group `group` if given; a stale socket file from an
/// earlier run is replaced.
fn bind_unix(path: &Path, group: Option<u32>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Bind and listen under a temporary name, then rename into place: the
    // socket appears at `path` only once it accepts connections.
    let tmp = path.with_extension("sock.tmp");
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))?;
    }
    if let Some(gid) = group {
        std::os::unix::fs::chown(&tmp, None, Some(gid))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(listener)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every service behind the caller layer, with grpc.health.v1 and
/// reflection.
fn router<C: Controller>(
    api: &Api<C>,
    access: &Arc<SharedAccess>,
    observer: &Option<crate::auth::RpcObserver>,
    health: &tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) -> Result<Router<Stack<AuthLayer, Identity>>, BoxError> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(tonic::transport::Server::builder()
        .layer(AuthLayer::new(access.clone(), observer.clone()))
        .add_service(NetworkServiceServer::new(api.clone()))
        .add_service(EndpointServiceServer::new(api.clone()))
        .add_service(PolicyServiceServer::new(api.clone()))
        .add_service(ModuleServiceServer::new(api.clone()))
        .add_service(SystemServiceServer::new(api.clone()))
        .add_service(TenantServiceServer::new(api.clone()))
        .add_service(NodeServiceServer::new(api.clone()))
        .add_service(EventServiceServer::new(api.clone()))
        .add_service(health.clone())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
}

/// Serve the API on `listeners` until `shutdown` resolves, each caller
/// identified under `access`.
pub async fn serve<C: Controller>(
    ctl: Arc<C>,
    access: Arc<SharedAccess>,
    listeners: &Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    // The socket file appears last: once it is there, both listeners are.
    let tls = match &listeners.tls {
        Some(s) => Some(TlsListener::bind(s).await?),
        None => None,
    };
    let unix = bind_unix(&listeners.socket, listeners.socket_group)?;
    let api = Api { ctl };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<NetworkServiceServer<Api<C>>>().await;
    health.set_serving::<EndpointServiceServer<Api<C>>>().await;
    health.set_serving::<PolicyServiceServer<Api<C>>>().await;
    health.set_serving::<ModuleServiceServer<Api<C>>>().await;
    health.set_serving::<SystemServiceServer<Api<C>>>().await;
    health.set_serving::<EventServiceServer<Api<C>>>().await;
    health.set_serving::<TenantServiceServer<Api<C>>>().await;
    health.set_serving::<NodeServiceServer<Api<C>>>().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let on_unix = router(&api, &access, &listeners.observer, &health_service)?.serve_with_incoming_shutdown(
        tokio_stream::StreamExt::map(UnixListenerStream::new(unix), |c| c.map(crate::authority::Lenient::new)),
        until_stopped(stopped.clone()),
    );
    let on_tls = match tls {
        Some(t) => Some(
            router(&api, &access, &listeners.observer, &health_service)?
                .serve_with_incoming_shutdown(t.incoming(), until_stopped(stopped.clone())),
        ),
        None => None,
    };
    let on_tls = async {
        match on_tls {
            Some(f) => f.await,
            None => Ok(()),
        }
    };
    let signal = async {
        shutdown.await;
        let _ = stop.send(true);
    };
    let (a, b, ()) = tokio::join!(on_unix, on_tls, signal);
    a?;
    Ok(b?)
}
