//! End-to-end tests of the commit path's outputs: the event stream (watch,
//! resume across a weftd restart with no gap and no duplicate, tenant
//! filtering, heartbeats), dry runs (nothing changed, by kernel and store
//! inspection; the real attach then does what the dry run said) and
//! exactly one winner among concurrent identical requests.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tonic::Code;
use weft_grpc::client::EventServiceClient;
use weft_grpc::pb;
use weft_grpc::pb::watch_response::Item;
use weft_tests::{Host, component};

async fn watch(host: &Host, tenant: &str, from: u64) -> tonic::Streaming<pb::WatchResponse> {
    let req = pb::WatchRequest { tenant: tenant.into(), from_revision: from, ..Default::default() };
    EventServiceClient::new(host.channel().await).watch(req).await.unwrap().into_inner()
}

/// The next `n` events (heartbeats skipped), each within `wait`.
async fn events(s: &mut tonic::Streaming<pb::WatchResponse>, n: usize) -> Vec<pb::Event> {
    let mut out = Vec::new();
    while out.len() < n {
        let item = tokio::time::timeout(Duration::from_secs(15), s.message()).await.expect("an event in time");
        match item.unwrap().and_then(|r| r.item) {
            Some(Item::Event(e)) => out.push(e),
            Some(Item::Heartbeat(_)) => {}
            None => panic!("stream ended after {out:?}"),
        }
    }
    out
}

async fn revision(host: &Host) -> u64 {
    host.networks().await.list_networks(pb::ListNetworksRequest::default()).await.unwrap().into_inner().revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resume_across_a_restart_and_dry_runs_change_nothing() {
    let mut host = Host::new("events");
    let created = host.create_network("web", &["10.71.0.0/24"]).await.unwrap();
    assert!(created.revision > 0, "a commit answers with its revision");
    let r0 = revision(&host).await;
    assert_eq!(r0, created.revision, "lists carry the current revision");
    let c1 = host.container("c1");

    // Dry run: the decided endpoint and plan, and nothing changed anywhere.
    let links = host.host_links();
    let table = host.ns.exec(&["nft", "list", "table", "inet", "weft"]).stdout;
    let req = pb::AttachEndpointRequest {
        network: "web".into(),
        name: "c1".into(),
        netns: c1.path(),
        publish: vec!["18080:80".into()],
        dry_run: true,
        ..Default::default()
    };
    let dry = host.endpoints().await.attach_endpoint(req.clone()).await.unwrap().into_inner();
    let plan = dry.dry_run.clone().expect("a plan");
    assert_eq!(dry.addresses, ["10.71.0.2/24"]);
    assert!(
        plan.ops.iter().any(|o| o.command.starts_with("ip link add") && o.command.contains("type veth")),
        "{plan:?}"
    );
    assert!(plan.ops.iter().any(|o| o.command.contains("ip addr add 10.71.0.2/24 dev eth0")), "{plan:?}");
    assert!(plan.ops.iter().any(|o| o.command.contains("nft add element inet weft pub4_any")), "{plan:?}");
    assert!(plan.writes.iter().any(|w| w.starts_with("put endpoint default/web/c1")), "{:?}", plan.writes);
    assert_eq!(plan.events.len(), 1);
    assert_eq!(plan.events[0].kind, "endpoint.attached");
    assert_eq!(host.host_links(), links, "no link made");
    assert_eq!(host.ns.exec(&["nft", "list", "table", "inet", "weft"]).stdout, table, "no element added");
    assert_eq!(c1.links(), vec!["lo".to_string()], "nothing inside the container");
    assert_eq!(revision(&host).await, r0, "no revision taken");
    let listed = host.endpoints().await.list_endpoints(pb::ListEndpointsRequest::default()).await.unwrap();
    assert!(listed.into_inner().endpoints.is_empty(), "no record");

    // The CLI's dry run says the same, as text.
    let out =
        host.cli(&["--dry-run", "endpoint", "attach", "web", "--netns", &c1.path(), "--name", "c1", "-p", "18080:80"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("dry run: nothing was changed")
            && text.contains("ip addr add 10.71.0.2/24"),
        "{text}"
    );

    // The real attach does what the dry run said.
    let mut s = watch(&host, "", r0).await;
    let real = host
        .endpoints()
        .await
        .attach_endpoint(pb::AttachEndpointRequest { dry_run: false, ..req })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((real.addresses.clone(), real.mac.clone()), (dry.addresses.clone(), dry.mac.clone()));
    assert!(real.dry_run.is_none() && real.revision == r0 + 1);
    assert!(c1.links().contains(&"eth0".to_string()));
    let ev = events(&mut s, 1).await;
    assert_eq!((ev[0].kind.as_str(), ev[0].name.as_str(), ev[0].revision), ("endpoint.attached", "c1", r0 + 1));
    assert_eq!(ev[0].addresses, real.addresses);
    assert_eq!(ev[0].mac, real.mac);
    assert_eq!(ev[0].ports, ["18080:80/tcp"]);

    // Another tenant sees none of it: its first item is a heartbeat.
    let mut other = watch(&host, "other", r0).await;
    let first = tokio::time::timeout(Duration::from_secs(15), other.message()).await.unwrap().unwrap().unwrap();
    assert!(matches!(first.item, Some(Item::Heartbeat(pb::Heartbeat { revision })) if revision == r0 + 1), "{first:?}");

    // Restart: resuming from r0 replays the attach exactly once, then live.
    host.stop();
    host.start();
    assert_eq!(revision(&host).await, r0 + 1, "the revision survives a restart");
    let mut s = watch(&host, "", r0).await;
    host.cli(&["endpoint", "detach", "web", "c1"]);
    let ev = events(&mut s, 2).await;
    let got: Vec<(String, u64)> = ev.iter().map(|e| (e.kind.clone(), e.revision)).collect();
    assert_eq!(got, [("endpoint.attached".to_string(), r0 + 1), ("endpoint.detached".to_string(), r0 + 2)]);

    // weft events replays as lines; too old a revision is OUT_OF_RANGE only
    // once trimmed, and a revision ahead of the current one is refused.
    let out = host.cli(&["events", "--since", &r0.to_string(), "--count", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("endpoint.attached web/c1") && text.contains("endpoint.detached web/c1"), "{text}");
    let req = pb::WatchRequest { from_revision: r0 + 100, ..Default::default() };
    let e = EventServiceClient::new(host.channel().await).watch(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Dry-run upload: compiled (a WASI importer is refused), nothing kept.
    let file = host.dir.join("seq.wasm");
    std::fs::write(&file, component("ipam-hostile")).unwrap();
    let files = || std::fs::read_dir(host.dir.join("state/modules")).map(|d| d.count()).unwrap_or(0);
    let before = files();
    let out = host.cli(&["--dry-run", "module", "upload", file.to_str().unwrap(), "--kind", "ipam", "--name", "seq"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("put module") && text.contains("module.uploaded"), "{out:?}");
    assert!(!String::from_utf8_lossy(&host.cli(&["module", "ls"]).stdout).contains("seq"), "not recorded");
    assert_eq!(files(), before, "no file kept");
    std::fs::write(&file, component("ipam-wasi")).unwrap();
    let out = host.cli(&["--dry-run", "module", "upload", file.to_str().unwrap(), "--kind", "ipam", "--name", "w"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("wasi"), "{out:?}");
    assert_eq!(files(), before, "no file kept after a refusal");

    // Dry-run removal: nothing removed.
    let out = host.cli(&["--dry-run", "network", "rm", "web"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ip link del br-"), "{out:?}");
    assert!(
        host.networks()
            .await
            .get_network(pb::GetNetworkRequest { name: "web".into(), ..Default::default() })
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_attaches_and_detaches_have_one_winner() {
    let host = Host::new("winner");
    host.create_network("web", &["10.72.0.0/24"]).await.unwrap();
    let c1 = host.container("c1");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (sock, path) = (host.socket(), c1.path());
        tasks.push(tokio::spawn(async move {
            let ch = weft_grpc::client::connect_unix(sock).await.unwrap();
            let req = pb::AttachEndpointRequest {
                network: "web".into(),
                name: "c1".into(),
                netns: path,
                ..Default::default()
            };
            weft_grpc::client::EndpointServiceClient::new(ch)
                .attach_endpoint(req)
                .await
                .map(|_| ())
                .map_err(|e| e.code())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.is_ok() || *r == Err(Code::AlreadyExists)), "{results:?}");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let sock = host.socket();
        tasks.push(tokio::spawn(async move {
            let ch = weft_grpc::client::connect_unix(sock).await.unwrap();
            let req = pb::DetachEndpointRequest { network: "web".into(), name: "c1".into(), ..Default::default() };
            weft_grpc::client::EndpointServiceClient::new(ch)
                .detach_endpoint(req)
                .await
                .map(|_| ())
                .map_err(|e| e.code())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.is_ok() || *r == Err(Code::NotFound)), "{results:?}");
    assert_eq!(host.log().matches("detached").count(), 1, "logged once");
    host.retired_deleted();
    assert_eq!(c1.links(), vec!["lo".to_string()]);
}
