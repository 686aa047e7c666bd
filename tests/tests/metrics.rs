//! weftd's Prometheus metrics (`--metrics-listen`), scraped and parsed
//! after real work: RPCs by method and code (refusals included), attach
//! and detach histograms, Wasm calls, networks and endpoints per tenant,
//! store commits, DNS queries by outcome (real `dig` queries), events
//! streamed to a watcher, and a drift repair.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use weft_grpc::client::EventServiceClient;
use weft_grpc::pb;
use weft_tests::Host;
use weft_tests::metrics::{ADDR, Scrape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_weftd_did() {
    let host = Host::with_args("metrics", &["--metrics-listen", ADDR]);
    let net = host.create_network("web", &["10.74.0.0/24"]).await.unwrap();
    let mut watch = EventServiceClient::new(host.channel().await)
        .watch(pb::WatchRequest { kinds: vec!["endpoint".into()], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let (c1, c2) = (host.container("c1"), host.container("c2"));
    host.attach("web", "c1", &c1).await.unwrap();
    host.attach("web", "c2", &c2).await.unwrap();
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
    }
    let missing = pb::GetNetworkRequest { name: "nope".into(), ..Default::default() };
    host.networks().await.get_network(missing).await.unwrap_err();
    for name in ["c2", "nobody-here"] {
        c1.exec(&["dig", "+short", "+time=2", "+tries=1", "@10.74.0.1", name]);
    }
    let detach = pb::DetachEndpointRequest { network: "web".into(), name: "c2".into(), ..Default::default() };
    host.endpoints().await.detach_endpoint(detach).await.unwrap();
    // A drift repair: the bridge set down under weftd.
    host.ns.exec(&["ip", "link", "set", &net.bridge, "down"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = Scrape::of(&host);
        if m.0.keys().any(|k| k.starts_with("weft_repairs_total{")) || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let rpc =
        |method: &str, code: &str| m.get(&format!("weft_rpc_requests_total{{method=\"{method}\",code=\"{code}\"}}"));
    assert_eq!(rpc("EndpointService/AttachEndpoint", "OK"), 2.0, "{:?}", m.0);
    assert_eq!(rpc("EndpointService/DetachEndpoint", "OK"), 1.0);
    assert_eq!(rpc("NetworkService/GetNetwork", "NotFound"), 1.0);
    assert_eq!(rpc("EventService/Watch", "OK"), 1.0);
    assert_eq!(m.get("weft_attach_duration_seconds_count"), 2.0);
    assert!(m.get("weft_attach_duration_seconds_sum") > 0.0);
    assert_eq!(m.get("weft_attach_duration_seconds_bucket{le=\"+Inf\"}"), 2.0);
    assert_eq!(m.get("weft_detach_duration_seconds_count"), 1.0);
    assert!(m.get("weft_store_commit_duration_seconds_count") >= 4.0, "create, 2 attaches, detach");
    assert!(m.get("weft_wasm_calls_total{kind=\"ipam\",outcome=\"ok\"}") >= 2.0);
    assert!(m.get("weft_wasm_calls_total{kind=\"policy\",outcome=\"ok\"}") >= 2.0);
    assert!(m.get("weft_wasm_call_duration_seconds_count{kind=\"naming\"}") >= 2.0);
    assert_eq!(m.get("weft_networks{tenant=\"default\"}"), 1.0);
    assert_eq!(m.get("weft_endpoints{tenant=\"default\"}"), 1.0);
    assert!(m.get("weft_dns_queries_total{outcome=\"local\"}") >= 1.0);
    assert!(m.get("weft_dns_queries_total{outcome=\"nxdomain\"}") >= 1.0);
    assert!(m.get("weft_events_streamed_total") >= 2.0);
    assert!(m.0.iter().any(|(k, v)| k.starts_with("weft_repairs_total{") && *v >= 1.0), "{:?}", m.0);
    // Only /metrics is served.
    let other = weft_tests::http_get_path(&host.ns.name, ADDR, "/").unwrap();
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
}

#[test]
fn a_metrics_address_in_use_stops_weftd_at_start() {
    let host = Host::with_args("metricsbusy", &["--metrics-listen", ADDR]);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &host.ns.name])
        .arg(weft_tests::bin_dir().join("weftd"))
        .args(["--metrics-listen", ADDR, "--socket"])
        .arg(host.dir.join("second.sock"))
        .arg("--state-dir")
        .arg(host.dir.join("second"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("--metrics-listen {ADDR}")), "{err}");
}
