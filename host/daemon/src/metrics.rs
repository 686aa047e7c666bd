//! Prometheus metrics, served on `--metrics-listen ADDR` (`GET /metrics`,
//! the Prometheus text format 0.0.4). Counted as they happen: RPCs by
//! method and status code (told by the gRPC layer), Wasm calls by kind and
//! outcome with their latency (told by the Wasm host), whole attaches and
//! detaches and every store commit (the timings' histograms). Read at
//! scrape time from the state: networks and endpoints per tenant (no
//! per-endpoint labels: cardinality stays the tenants'), repairs by kind,
//! DNS queries by outcome, events streamed to watchers. The listener is an
//! operator's view of the whole host, like `weft stats`: bind it to an
//! address only operators reach.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::controller::Ctl;
use crate::timings::latency_buckets;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// The registry, and the observers that feed it.
pub struct Metrics {
    registry: Registry,
    rpcs: Family<RpcLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<KindLabels, Histogram>,
}

impl Metrics {
    /// Every metric of `ctl`, registered.
    pub fn new(ctl: Arc<Ctl>) -> Metrics {
        let mut registry = Registry::with_prefix("weft");
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register("rpc_requests", "gRPC calls by method and status code", rpcs.clone());
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "wasm_calls",
            "Calls into Wasm components by kind and outcome (ok, trap, deadline, rejected: not run, the tenant's \
             call slots stayed full)",
            calls.clone(),
        );
        let call_seconds = Family::<KindLabels, Histogram>::new_with_constructor(latency_buckets as fn() -> Histogram);
        registry.register("wasm_call_duration_seconds", "Wasm call latency by kind", call_seconds.clone());
        let t = &ctl.commit.timings;
        registry.register("attach_duration_seconds", "Whole attaches, as the client waits", t.attach.clone());
        registry.register("detach_duration_seconds", "Whole detaches", t.detach.clone());
        registry.register("store_commit_duration_seconds", "Store commits (one transaction each)", t.commit.clone());
        registry.register_collector(Box::new(State(ctl)));
        Metrics { registry, rpcs, calls, call_seconds }
    }

    /// What the gRPC layer tells of each call.
    pub fn rpc_observer(self: &Arc<Self>) -> weft_grpc::auth::RpcObserver {
        let me = self.clone();
        weft_grpc::auth::RpcObserver(Arc::new(move |method, code| {
            // gRPC's names for the codes (OK, NotFound, ...), as other servers label them.
            let code = if code == tonic::Code::Ok { "OK".to_owned() } else { format!("{code:?}") };
            let labels = RpcLabels { method: method.to_owned(), code };
            me.rpcs.get_or_create(&labels).inc();
        }))
    }

    /// What the Wasm host tells of each call.
    pub fn call_observer(self: &Arc<Self>) -> weft_wasm::CallObserver {
        let me = self.clone();
        Arc::new(move |kind, outcome, took: Duration| {
            let labels = CallLabels { kind: kind.as_str().to_owned(), outcome: outcome.as_str().to_owned() };
            me.calls.get_or_create(&labels).inc();
            me.call_seconds.get_or_create(&KindLabels { kind: kind.as_str().to_owned() }).observe(took.as_secs_f64());
        })
    }

    /// The Prometheus text of every metric now.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            warn!(error = %e, "encoding the metrics");
        }
        out
    }
}

/// A counter read at scrape time: name, help, label name ("" for none),
/// and a value per label value.
type Counted = (&'static str, &'static str, &'static str, Vec<(String, u64)>);

/// What is read from weftd's state at each scrape.
struct State(Arc<Ctl>);

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

impl Collector for State {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ctl = &self.0;
        let (networks, endpoints) = ctl.index.read(|st| {
            let mut nets: BTreeMap<String, i64> = BTreeMap::new();
            let mut eps: BTreeMap<String, i64> = BTreeMap::new();
            for n in st.networks.values() {
                *nets.entry(n.spec.tenant.to_string()).or_default() += 1;
                eps.entry(n.spec.tenant.to_string()).or_default();
            }
            for e in st.endpoints.values() {
                *eps.entry(e.spec.tenant.to_string()).or_default() += 1;
            }
            (nets, eps)
        });
        for (name, help, per) in [
            ("networks", "Networks per tenant", networks),
            ("endpoints", "Endpoints on this node per tenant", endpoints),
        ] {
            let g = ConstGauge::new(0i64);
            let mut f = enc.encode_descriptor(name, help, None, g.metric_type())?;
            for (tenant, n) in per {
                ConstGauge::new(n).encode(f.encode_family(&[("tenant", tenant)])?)?;
            }
        }
        let counters: [Counted; 3] = [
            ("repairs", "Drift repairs by kind", "kind", ctl.repairs()),
            (
                "dns_queries",
                "DNS queries answered by outcome",
                "outcome",
                ctl.commit.dns.queries().into_iter().map(|(o, n)| (o.as_str().to_owned(), n)).collect(),
            ),
            ("events_streamed", "Events sent to watchers", "", vec![(String::new(), ctl.commit.events.streamed())]),
        ];
        for (name, help, label, values) in counters {
            let c = ConstCounter::new(0u64);
            let mut f = enc.encode_descriptor(name, help, None, c.metric_type())?;
            for (v, n) in values {
                if label.is_empty() {
                    ConstCounter::new(n).encode(f.encode_family(&Vec::<(String, String)>::new())?)?;
                } else {
                    ConstCounter::new(n).encode(f.encode_family(&[(label, v)])?)?;
                }
            }
        }
        Ok(())
    }
}

/// Bind the metrics listener (before anything else is started, so an
/// address in use stops weftd having changed nothing).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))
}

/// Serve `metrics` on `listener` until the task is aborted: `GET /metrics`
/// answers the text, anything else 404 (405 for another method). One
/// request per connection.
pub fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving metrics");
    }
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { continue };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                let read = async {
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                };
                if tokio::time::timeout(Duration::from_secs(5), read).await.is_err() {
                    return;
                }
                let line = String::from_utf8_lossy(&req);
                let mut words = line.split_whitespace();
                let (status, body) = match (words.next(), words.next()) {
                    (Some("GET"), Some("/metrics")) => ("200 OK", metrics.render()),
                    (Some("GET"), _) => ("404 Not Found", "only /metrics is served here\n".to_owned()),
                    _ => ("405 Method Not Allowed", "GET /metrics\n".to_owned()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    })
}
