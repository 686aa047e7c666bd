//! ADD, DEL, CHECK, GC and STATUS, each one or two calls to weftd. Every
//! ADD carries the attachment's identity (configuration name, container
//! id, interface) as its request key, so a repeated ADD answers the first
//! result and DEL, CHECK and GC find the endpoint by it.

use serde_json::Value;
use tonic::transport::Channel;
use weft_grpc::client::{ClientTls, EndpointServiceClient, NetworkServiceClient, connect_tls, connect_unix};
use weft_grpc::pb;

use crate::conf::{DEFAULT_SOCKET, Env, NetConf, PortName};
use crate::error::{self, CniError};
use crate::result::result;

/// A connection to weftd, as the configuration says.
pub async fn connect(conf: &NetConf, unreachable: u32) -> Result<Channel, CniError> {
    match (&conf.addr, &conf.tls) {
        (Some(addr), Some(t)) => {
            let tls = ClientTls { cert: t.cert.clone(), key: t.key.clone(), ca: t.ca.clone() };
            connect_tls(addr, &tls).await.map_err(|e| CniError::new(unreachable, e))
        }
        _ => {
            let path = conf.socket.clone().unwrap_or_else(|| DEFAULT_SOCKET.into());
            connect_unix(&path)
                .await
                .map_err(|e| CniError::new(unreachable, format!("cannot reach weftd at {}: {e}", path.display())))
        }
    }
}

/// ADD: attach (creating the network first if the configuration has
/// subnets and it is absent), and answer the result.
pub async fn add(conf: &NetConf, env: &Env) -> Result<Value, CniError> {
    env.require(&["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])?;
    let req = attach_request(conf, env)?;
    let ch = connect(conf, error::TRY_AGAIN).await?;
    let mut eps = EndpointServiceClient::new(ch.clone());
    let attached = match eps.attach_endpoint(req.clone()).await {
        // The network is made on first use, if the configuration says how.
        Err(s) if s.code() == tonic::Code::NotFound && !conf.subnets().is_empty() => {
            ensure_network(conf, ch).await?;
            eps.attach_endpoint(req).await
        }
        r => r,
    };
    let what = format!("attaching {} to network {:?}", env.container_id, conf.network());
    let ep = attached.map_err(|s| CniError::from_status(&what, &s))?.into_inner();
    Ok(result(&conf.cni_version, &ep, conf.runtime.dns.as_ref()))
}

/// The attach request of this invocation.
fn attach_request(conf: &NetConf, env: &Env) -> Result<pb::AttachEndpointRequest, CniError> {
    let rt = &conf.runtime;
    let ips = rt.ips.iter().map(|ip| ip.split('/').next().unwrap_or_default().to_owned()).collect();
    let publish = rt
        .port_mappings
        .iter()
        .map(|p| {
            let proto = if p.protocol.is_empty() { "tcp".to_owned() } else { p.protocol.to_ascii_lowercase() };
            let host = match p.host_ip.as_str() {
                "" | "0.0.0.0" | "::" => String::new(),
                ip if ip.contains(':') => format!("[{ip}]:"),
                ip => format!("{ip}:"),
            };
            format!("{host}{}:{}/{proto}", p.host_port, p.container_port)
        })
        .collect();
    let mut aliases: Vec<String> = rt.aliases.get(&conf.name).cloned().unwrap_or_default();
    let pod = env.args.pod_name.to_ascii_lowercase();
    if !pod.is_empty() && !aliases.contains(&pod) && weft_model::naming::is_dns_name(&pod) {
        aliases.insert(0, pod);
    }
    Ok(pb::AttachEndpointRequest {
        tenant: conf.tenant.clone(),
        network: conf.network().to_owned(),
        name: env.endpoint_name(),
        netns: env.netns.clone(),
        ifname: env.ifname.clone(),
        ips,
        mac: rt.mac.clone(),
        labels: env.args.labels().into_iter().collect(),
        publish,
        port_names: rt.port_names.iter().map(PortName::to_request).collect(),
        aliases,
        request_key: conf.request_key(&env.container_id, &env.ifname),
        ..Default::default()
    })
}

/// Create the configured network unless it exists (a concurrent ADD that
/// created it first is fine).
async fn ensure_network(conf: &NetConf, ch: Channel) -> Result<(), CniError> {
    let mut nets = NetworkServiceClient::new(ch);
    let get = pb::GetNetworkRequest { tenant: conf.tenant.clone(), name: conf.network().to_owned() };
    match nets.get_network(get).await {
        Ok(_) => return Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => return Err(CniError::from_status(&format!("reading network {:?}", conf.network()), &s)),
    }
    let req = pb::CreateNetworkRequest {
        tenant: conf.tenant.clone(),
        name: conf.network().to_owned(),
        subnets: conf.subnets().into_iter().map(|subnet| pb::Subnet { subnet, ..Default::default() }).collect(),
        ..Default::default()
    };
    match nets.create_network(req).await {
        Ok(_) => Ok(()),
        // A concurrent ADD made it first; any other clash (a subnet) stands.
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            let get = pb::GetNetworkRequest { tenant: conf.tenant.clone(), name: conf.network().to_owned() };
            match nets.get_network(get).await {
                Ok(_) => Ok(()),
                Err(_) => Err(CniError::from_status(&format!("creating network {:?}", conf.network()), &s)),
            }
        }
        Err(s) => Err(CniError::from_status(&format!("creating network {:?}", conf.network()), &s)),
    }
}

/// The configured network, with its endpoints.
async fn network(conf: &NetConf, ch: Channel) -> Result<pb::Network, tonic::Status> {
    let get = pb::GetNetworkRequest { tenant: conf.tenant.clone(), name: conf.network().to_owned() };
    NetworkServiceClient::new(ch).get_network(get).await.map(tonic::Response::into_inner)
}

fn read_error(conf: &NetConf, s: &tonic::Status) -> CniError {
    CniError::from_status(&format!("reading network {:?}", conf.network()), s)
}

/// DEL: detach by request key; nothing to detach is success, and so is a
/// missing network. With no `CNI_NETNS` (the namespace is gone) weftd
/// still releases the addresses and removes the host side.
pub async fn del(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    env.require(&["CNI_CONTAINERID", "CNI_IFNAME"])?;
    let ch = connect(conf, error::TRY_AGAIN).await?;
    detach(conf, ch, &conf.request_key(&env.container_id, &env.ifname)).await
}

async fn detach(conf: &NetConf, ch: Channel, key: &str) -> Result<(), CniError> {
    let req = pb::DetachEndpointRequest {
        tenant: conf.tenant.clone(),
        network: conf.network().to_owned(),
        request_key: key.to_owned(),
        allow_missing: true,
        ..Default::default()
    };
    EndpointServiceClient::new(ch)
        .detach_endpoint(req)
        .await
        .map(|_| ())
        .map_err(|s| CniError::from_status(&format!("detaching {key}"), &s))
}

/// The endpoint this configuration made for the container's interface.
pub async fn attached(conf: &NetConf, env: &Env, ch: Channel) -> Result<pb::Endpoint, CniError> {
    let net = network(conf, ch).await.map_err(|s| read_error(conf, &s))?;
    let key = conf.request_key(&env.container_id, &env.ifname);
    net.endpoints.into_iter().find(|e| e.request_key == key).ok_or_else(|| {
        CniError::new(
            error::UNKNOWN_CONTAINER,
            format!("no endpoint of container {} ({}) on network {:?}", env.container_id, env.ifname, conf.network()),
        )
    })
}

/// GC: detach every endpoint this configuration made on the network whose
/// attachment is not in the runtime's list. Nothing else is touched:
/// endpoints made by other clients, or through other configurations.
pub async fn gc(conf: &NetConf) -> Result<Vec<String>, CniError> {
    let Some(keep) = conf.keep() else { return Ok(Vec::new()) };
    let ch = connect(conf, error::TRY_AGAIN).await?;
    let net = match network(conf, ch.clone()).await {
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(Vec::new()),
        r => r.map_err(|s| read_error(conf, &s))?,
    };
    let mut removed = Vec::new();
    for ep in &net.endpoints {
        let Some(a) = conf.attachment_of(&ep.request_key) else { continue };
        if !keep.contains(&a) {
            detach(conf, ch.clone(), &ep.request_key).await?;
            removed.push(ep.name.clone());
        }
    }
    Ok(removed)
}

/// STATUS: weftd answers, is serving, and the network exists (or will be
/// made by ADD from the configured subnets).
pub async fn status(conf: &NetConf) -> Result<(), CniError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let ch = connect(conf, error::NOT_AVAILABLE).await?;
    let service = "weft.v1.EndpointService".to_owned();
    let health = tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest { service })
        .await
        .map_err(|s| CniError::new(error::NOT_AVAILABLE, format!("weftd's health check: {}", s.message())))?;
    if health.into_inner().status() != ServingStatus::Serving {
        return Err(CniError::new(error::NOT_AVAILABLE, "weftd is not serving attaches yet"));
    }
    if conf.subnets().is_empty() {
        network(conf, ch).await.map_err(|s| CniError { code: error::NOT_AVAILABLE, ..read_error(conf, &s) })?;
    }
    Ok(())
}
