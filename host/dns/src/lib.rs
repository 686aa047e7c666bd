//! weft's embedded DNS server. It listens on each DNS-enabled network's
//! gateway addresses (port 53, UDP and TCP), answers names of endpoints from
//! the records the network's naming component decided, and forwards every
//! other name to upstream resolvers with a timeout and fallback.
//!
//! Answers are network-scoped: a client sees the endpoints of the network it
//! asked on and of every other network its namespace is attached to. The
//! record table is shared in memory and updated in place, so an attach or a
//! detach is visible to the very next query and no socket is ever restarted.
//!
//! Over UDP, a query for one of weft's own names is answered on a fast path
//! straight from the wire bytes (`fast`); everything else — forwarding, other
//! record types, TCP, malformed messages — goes through hickory, whose wire
//! format, EDNS and truncation handling this crate relies on.

mod fast;
mod handler;
mod table;
mod udp;
mod upstream;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_server::Server;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tracing::{info, warn};
use weft_model::naming::NameRecord;

use crate::handler::NetHandler;
use crate::table::Table;

/// TTL of weft's own answers, in seconds: short, since endpoints come and go.
pub const LOCAL_TTL: u32 = 60;
/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// The EDNS payload size weft advertises and the largest UDP answer it
/// sends (RFC 9715's safe default); both UDP paths use it.
pub(crate) const EDNS_PAYLOAD: u16 = 1232;
/// How long an idle TCP client may keep its connection.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Upstream resolvers and how long to wait for each.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Default upstreams (a network may override them).
    pub upstreams: Vec<SocketAddr>,
    /// Time to wait for one upstream before trying the next.
    pub timeout: Duration,
}

pub(crate) struct Inner {
    pub(crate) table: RwLock<Table>,
    pub(crate) config: DnsConfig,
    pub(crate) counts: Counts,
}

/// How queries ended, counted since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryOutcome {
    /// Answered from weft's records (an empty NODATA answer included).
    Local,
    /// NXDOMAIN for a name of a network's zone.
    NxDomain,
    /// Forwarded and answered by an upstream.
    Forwarded,
    /// Forwarded, and no upstream answered in time (SERVFAIL).
    UpstreamFailed,
    /// Not a query weft answers (another opcode, a malformed message).
    Refused,
}

impl QueryOutcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [QueryOutcome; 5] = [
        QueryOutcome::Local,
        QueryOutcome::NxDomain,
        QueryOutcome::Forwarded,
        QueryOutcome::UpstreamFailed,
        QueryOutcome::Refused,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryOutcome::Local => "local",
            QueryOutcome::NxDomain => "nxdomain",
            QueryOutcome::Forwarded => "forwarded",
            QueryOutcome::UpstreamFailed => "upstream_failed",
            QueryOutcome::Refused => "refused",
        }
    }
}

/// One counter per [`QueryOutcome`].
#[derive(Default)]
pub(crate) struct Counts([std::sync::atomic::AtomicU64; 5]);

impl Counts {
    pub(crate) fn add(&self, o: QueryOutcome) {
        self.0[o as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One network's listeners: UDP loops of weft's own (the fast path, then
/// the handler) and hickory's server for TCP.
struct Served {
    udp: Vec<udp::Listener>,
    tcp: Server<NetHandler>,
}

impl Served {
    /// Stop every listener; the UDP sockets are closed when this returns.
    async fn stop(mut self) -> Result<(), String> {
        for l in self.udp {
            l.stop().await;
        }
        self.tcp.shutdown_gracefully().await.map_err(|e| e.to_string())
    }
}

/// The DNS service: the shared table plus the listeners of each network.
pub struct Dns {
    inner: Arc<Inner>,
    servers: Mutex<HashMap<String, Served>>,
}

impl Dns {
    /// A service with no network yet.
    pub fn new(config: DnsConfig) -> Dns {
        Dns {
            inner: Arc::new(Inner { table: RwLock::new(Table::default()), config, counts: Counts::default() }),
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// Queries answered since start, by outcome.
    pub fn queries(&self) -> Vec<(QueryOutcome, u64)> {
        QueryOutcome::ALL
            .into_iter()
            .map(|o| (o, self.inner.counts.0[o as usize].load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }

    /// Start answering for a network on `listen` (its gateways), port 53.
    /// `upstreams` overrides the default upstreams for this network.
    pub async fn serve_network(
        &self,
        network_id: &str,
        name: &str,
        listen: &[IpAddr],
        subnets: &[IpNet],
        upstreams: Option<Vec<SocketAddr>>,
    ) -> std::io::Result<()> {
        self.inner.table.write().unwrap_or_else(|p| p.into_inner()).add_network(network_id, name, subnets, upstreams);
        let handler = || NetHandler { inner: self.inner.clone(), network_id: network_id.to_owned() };
        let udp_handler = Arc::new(handler());
        let mut served = Served { udp: Vec::new(), tcp: Server::new(handler()) };
        for ip in listen {
            let addr = SocketAddr::new(*ip, DNS_PORT);
            let bound = async {
                served.udp.push(udp::Listener::start(addr, udp_handler.clone())?);
                served.tcp.register_listener(TcpListener::bind(addr).await?, TCP_IDLE, 64);
                Ok::<(), std::io::Error>(())
            }
            .await;
            if let Err(e) = bound {
                let _ = served.stop().await;
                self.inner.table.write().unwrap_or_else(|p| p.into_inner()).remove_network(network_id);
                return Err(std::io::Error::new(e.kind(), format!("DNS on {addr}: {e}")));
            }
        }
        info!(network = name, addresses = ?listen, "DNS serving");
        let old = self.servers.lock().unwrap_or_else(|p| p.into_inner()).insert(network_id.to_owned(), served);
        if let Some(old) = old {
            let _ = old.stop().await;
        }
        Ok(())
    }

    /// Stop answering for a network.
    pub async fn stop_network(&self, network_id: &str) {
        let server = self.servers.lock().unwrap_or_else(|p| p.into_inner()).remove(network_id);
        if let Some(s) = server
            && let Err(e) = s.stop().await
        {
            warn!(network = network_id, error = %e, "stopping DNS");
        }
        self.inner.table.write().unwrap_or_else(|p| p.into_inner()).remove_network(network_id);
    }

    /// Whether a network is being served.
    pub fn serves(&self, network_id: &str) -> bool {
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).contains_key(network_id)
    }

    /// Set (or replace) an endpoint's records; visible to the next query.
    pub fn set_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
        netns_id: u64,
        addresses: &[IpAddr],
        records: Vec<NameRecord>,
    ) {
        self.inner.table.write().unwrap_or_else(|p| p.into_inner()).set_endpoint(
            network_id,
            endpoint_id,
            netns_id,
            addresses,
            records,
        );
    }

    /// Forget an endpoint; visible to the next query.
    pub fn remove_endpoint(&self, network_id: &str, endpoint_id: &str) {
        self.inner.table.write().unwrap_or_else(|p| p.into_inner()).remove_endpoint(network_id, endpoint_id);
    }
}

/// Nameservers from a resolv.conf text (port 53), skipping ones that are
/// not IP addresses.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .collect()
}

/// Parse `IP` or `IP:PORT` / `[IPv6]:PORT` as an upstream.
pub fn parse_upstream(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, DNS_PORT)))
}

#[cfg(test)]
mod tests;
