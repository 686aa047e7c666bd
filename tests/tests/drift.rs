//! Drift repaired from kernel notifications: weft's bridge deleted or
//! downed, a host veth deleted, weft's nftables table deleted or flushed, a
//! set element removed — each is repaired by the drift watcher (the
//! periodic pass is off in these tests), traffic works again, and a repair
//! event says what happened. Objects weft does not own are left alone.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use weft_grpc::client::{EventServiceClient, SystemServiceClient};
use weft_grpc::pb;
use weft_grpc::pb::watch_response::Item;
use weft_tests::{Host, addr_of};

async fn repairs(host: &Host) -> u64 {
    let s =
        SystemServiceClient::new(host.channel().await).get_stats(pb::GetStatsRequest {}).await.unwrap().into_inner();
    s.repairs.values().sum()
}

/// Wait (bounded) until `ok` holds; the drift watcher works in well under a second.
fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "not repaired: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_from_kernel_notifications() {
    let host = Host::new("drift");
    let net = host.create_network("web", &["10.73.0.0/24"]).await.unwrap();
    let (c1, c2) = (host.container("c1"), host.container("c2"));
    let req = pb::AttachEndpointRequest {
        network: "web".into(),
        name: "c1".into(),
        netns: c1.path(),
        publish: vec!["18090:8080".into()],
        ..Default::default()
    };
    let e1 = host.endpoints().await.attach_endpoint(req).await.unwrap().into_inner();
    host.attach("web", "c2", &c2).await.unwrap();
    let a1 = addr_of(&e1.addresses[0]);
    assert!(c2.ping(&a1));
    let rev =
        host.networks().await.list_networks(pb::ListNetworksRequest::default()).await.unwrap().into_inner().revision;
    let mut events = EventServiceClient::new(host.channel().await)
        .watch(pb::WatchRequest { from_revision: rev, kinds: vec!["repair".into()], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let table =
        || String::from_utf8_lossy(&host.ns.exec(&["nft", "list", "table", "inet", "weft"]).stdout).into_owned();
    let has_port = || table().contains("tcp . 18090");
    let bridge = net.bridge.clone();
    let veth = e1.host_ifname.clone();
    let disruptions: Vec<(&str, Vec<&str>)> = vec![
        ("bridge deleted", vec!["ip", "link", "del", &bridge]),
        ("bridge down", vec!["ip", "link", "set", &bridge, "down"]),
        ("host veth deleted", vec!["ip", "link", "del", &veth]),
        ("nft table deleted", vec!["nft", "delete", "table", "inet", "weft"]),
        ("nft table flushed", vec!["nft", "flush", "table", "inet", "weft"]),
        ("set element deleted", vec!["nft", "delete", "element", "inet", "weft", "pub4_any", "{ tcp . 18090 }"]),
    ];
    for (what, cmd) in &disruptions {
        let before = repairs(&host).await;
        let out = host.ns.exec(cmd);
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(10);
        while repairs(&host).await == before {
            assert!(Instant::now() < deadline, "no repair after: {what}\n{}", host.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eventually(what, || host.host_links().contains(&bridge) && host.host_links().contains(&veth) && has_port());
        eventually(what, || {
            table().contains("chain forward") && table().contains("ct state established,related accept")
        });
        assert!(c2.ping(&a1), "traffic after: {what}");
        let ev = tokio::time::timeout(Duration::from_secs(10), events.message()).await.unwrap().unwrap().unwrap();
        let Some(Item::Event(e)) = ev.item else { panic!("{ev:?}") };
        assert_eq!(e.kind, "repair", "{what}: {e:?}");
        assert!(!e.message.is_empty(), "{what}: {e:?}");
        // A repair may come as more than one event (a bridge with its ports):
        // drain what belongs to this disruption.
        while let Ok(Ok(Some(m))) = tokio::time::timeout(Duration::from_millis(300), events.message()).await {
            assert!(
                matches!(m.item, Some(Item::Event(ref e)) if e.kind == "repair")
                    || matches!(m.item, Some(Item::Heartbeat(_)))
            );
        }
    }

    let stats = String::from_utf8_lossy(&host.cli(&["stats"]).stdout).into_owned();
    assert!(stats.contains("repairs ") && stats.contains("bridge ") && stats.contains("nft "), "{stats}");

    // Objects weft does not own: no repair.
    let before = repairs(&host).await;
    for cmd in [
        vec!["nft", "add", "table", "inet", "wtdrift_other"],
        vec!["nft", "delete", "table", "inet", "wtdrift_other"],
        vec!["ip", "link", "add", "wtdrift0", "type", "veth", "peer", "name", "wtdrift1"],
        vec!["ip", "link", "del", "wtdrift0"],
    ] {
        assert!(host.ns.exec(&cmd).status.success(), "{cmd:?}");
    }
    // Weft's own changes are not drift either.
    host.cli(&["endpoint", "detach", "web", "c2"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(repairs(&host).await, before, "nothing weft does not own, nor weft's own change, is repaired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_or_default_route_removed_inside_a_container_is_restored_by_reconcile() {
    let mut host = Host::new("inside");
    host.create_network("web", &["10.74.0.0/24"]).await.unwrap();
    let (c1, c2) = (host.container("c1"), host.container("c2"));
    let e1 = host.attach("web", "c1", &c1).await.unwrap();
    host.attach("web", "c2", &c2).await.unwrap();
    assert!(c1.exec(&["ip", "addr", "del", &e1.addresses[0], "dev", "eth0"]).status.success());
    // Removing the address took the default route with it; make sure.
    let _ = c1.exec(&["ip", "route", "del", "default"]);
    assert!(!String::from_utf8_lossy(&c1.exec(&["ip", "route"]).stdout).contains("default"));
    assert!(!c2.ping(&addr_of(&e1.addresses[0])), "broken by hand");
    // The periodic pass (off in tests) and start-up run the same full pass.
    host.stop();
    host.start();
    assert!(c2.ping(&addr_of(&e1.addresses[0])), "address restored:\n{}", host.log());
    let routes = String::from_utf8_lossy(&c1.exec(&["ip", "route"]).stdout).into_owned();
    assert!(routes.contains("default via 10.74.0.1 dev eth0"), "{routes}");
    assert!(repairs(&host).await >= 1);
    assert!(host.log().contains("inside the namespace"), "{}", host.log());
}
