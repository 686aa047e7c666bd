//! Cluster mode end to end: three simulated hosts on one underlay, a
//! three-member etcd cluster, a weftd per host. Overlay networks are seen
//! by every node, endpoints on different hosts reach each other (ping, TCP,
//! DNS by name, 10 MB through the overlay MTU), remote endpoints are
//! programmed (FDB + neighbour, nothing learned) and removed everywhere on
//! detach, and addresses are unique across nodes under concurrency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use weft_grpc::pb;
use weft_tests::cluster::{Cluster, underlay_ip};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use weft_tests::{Host, Netns, addr_of, on_ns, tcp_connect, tcp_server};

/// A TCP server in `ns` on `addr` that counts what one connection sends.
fn bulk_sink(ns: &str, addr: &str) -> std::thread::JoinHandle<usize> {
    let addr: SocketAddr = addr.parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = on_ns(ns, move || {
        let l = TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    rx.recv().unwrap();
    h
}

/// Send `bytes` zeros from `ns` to `addr`.
fn bulk_send(ns: &str, addr: &str, bytes: usize) {
    let addr: SocketAddr = addr.parse().unwrap();
    on_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let chunk = vec![0u8; 1 << 16];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
    })
    .join()
    .unwrap();
}

fn overlay_req(name: &str, subnets: &[&str], opts: &[(&str, &str)]) -> pb::CreateNetworkRequest {
    pb::CreateNetworkRequest {
        name: name.into(),
        driver: "overlay".into(),
        subnets: subnets.iter().map(|s| pb::Subnet { subnet: (*s).into(), ..Default::default() }).collect(),
        options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

/// `weft network inspect NAME -o json` on `h`, if it has the network.
fn inspect(h: &Host, name: &str) -> Option<serde_json::Value> {
    let out = h.cli(&["network", "inspect", name, "-o", "json"]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The FDB entries (MACs) of `dev` in host `h`.
fn fdb(h: &Host, dev: &str) -> Vec<String> {
    let out = h.ns.exec(&["bridge", "-j", "fdb", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["dst"].is_string())
                .filter_map(|e| e["mac"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn vxlan_of(h: &Host, name: &str) -> String {
    let net = inspect(h, name).unwrap();
    format!("vx-{}", &net["id"].as_str().unwrap()[..12])
}

#[tokio::test(flavor = "multi_thread")]
async fn overlay_across_three_hosts() {
    let c = Cluster::new("ov", 3, &[]);
    // Every node sees every node.
    for i in 0..3 {
        c.wait_nodes(i, 3, Duration::from_secs(10));
    }
    let h0 = &c.hosts[0];
    let net = h0
        .networks()
        .await
        .create_network(overlay_req("ov", &["10.90.0.0/24", "fd00:90::/64"], &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(net.driver, "overlay");
    assert!(net.vni >= 4096, "an automatic VNI starts at 4096: {}", net.vni);
    assert_eq!(net.mtu, 1450, "the underlay's 1500 less 50");
    // A second network: its own VNI; a clashing subnet or VNI is refused.
    let other = h0
        .networks()
        .await
        .create_network(overlay_req("ov2", &["10.91.0.0/24"], &[("vni", "77")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.vni, 77);
    let e = h0.networks().await.create_network(overlay_req("ov3", &["10.90.0.128/25"], &[])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = c.hosts[1]
        .networks()
        .await
        .create_network(overlay_req("ov4", &["10.92.0.0/24"], &[("vni", "77")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("vni 77 is in use"), "{}", e.message());
    let e = c.hosts[2].networks().await.create_network(overlay_req("ov", &["10.93.0.0/24"], &[])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");

    // Every node serves both: bridge and VXLAN device (no learning).
    for h in &c.hosts {
        c.wait_for("the overlay network on every node", Duration::from_secs(10), || inspect(h, "ov").is_some());
        let vx = vxlan_of(h, "ov");
        let out = h.ns.exec(&["ip", "-d", "-j", "link", "show", &vx]);
        let link: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let info = &link[0]["linkinfo"]["info_data"];
        assert_eq!(info["id"], net.vni, "{link}");
        assert_eq!(info["port"], 4789, "{link}");
        assert_eq!(info["learning"], false, "{link}");
        assert_eq!(info["proxy"], true, "{link}");
        assert_eq!(link[0]["mtu"], 1450, "{link}");
    }

    // One container on each host.
    let ns: Vec<Netns> = c.hosts.iter().map(|h| h.container("c")).collect();
    let mut eps = Vec::new();
    for (i, h) in c.hosts.iter().enumerate() {
        eps.push(h.attach("ov", &format!("c{i}"), &ns[i]).await.unwrap());
    }
    let v4 = |i: usize| addr_of(&eps[i].addresses[0]);
    let v6 = |i: usize| addr_of(&eps[i].addresses[1]);
    let mut seen: Vec<String> = (0..3).map(v4).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "distinct addresses across nodes: {eps:?}");
    for (i, e) in eps.iter().enumerate() {
        assert_eq!(e.node, format!("n{i}"));
    }
    // Remote endpoints are programmed on every other node.
    for (i, h) in c.hosts.iter().enumerate() {
        let vx = vxlan_of(h, "ov");
        c.wait_for("remote FDB entries", Duration::from_secs(5), || {
            let macs = fdb(h, &vx);
            (0..3).filter(|j| *j != i).all(|j| macs.contains(&eps[j].mac))
        });
        let out = h.ns.exec(&["bridge", "fdb", "show", "dev", &vx]);
        let text = String::from_utf8_lossy(&out.stdout);
        for j in (0..3).filter(|j| *j != i) {
            assert!(text.contains(&format!("dst {}", underlay_ip(j))), "{text}");
        }
        let neigh = String::from_utf8_lossy(&h.ns.exec(&["ip", "neigh", "show", "dev", &vx]).stdout).into_owned();
        for j in (0..3).filter(|j| *j != i) {
            assert!(neigh.contains(&v4(j)) && neigh.contains("PERMANENT"), "{neigh}");
        }
    }
    // Ping both ways and both families, across hosts.
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        assert!(ns[a].ping(&v4(b)), "c{a} -> c{b} {}\n{}", v4(b), c.logs());
        assert!(ns[a].ping(&v6(b)), "c{a} -> c{b} {}", v6(b));
    }
    // TCP, and a 10 MB transfer through the overlay's MTU.
    let server = tcp_server(&ns[2].name, &format!("{}:7000", v4(2)));
    assert_eq!(tcp_connect(&ns[0].name, &format!("{}:7000", v4(2))).unwrap(), "hello");
    assert!(server.join().unwrap().is_some());
    let sink = bulk_sink(&ns[1].name, &format!("{}:7001", v4(1)));
    bulk_send(&ns[0].name, &format!("{}:7001", v4(1)), 10_000_000);
    assert_eq!(sink.join().unwrap(), 10_000_000, "10 MB across the overlay (MTU 1450)");
    // DNS by name across hosts: c0 asks its own node for c2.
    let at = format!("@{}", net.subnets[0].gateway);
    let answer = ns[0].exec(&["dig", "+time=3", "+tries=1", "+short", &at, "c2"]);
    assert_eq!(String::from_utf8_lossy(&answer.stdout).trim(), v4(2), "DNS on n0 answers for an endpoint on n2");

    // Every node lists every endpoint, with the node it is on.
    let listed = inspect(&c.hosts[1], "ov").unwrap();
    let mut nodes: Vec<String> =
        listed["endpoints"].as_array().unwrap().iter().map(|e| e["node"].as_str().unwrap().to_owned()).collect();
    nodes.sort();
    assert_eq!(nodes, ["n0", "n1", "n2"], "{listed}");

    // Isolation: the second overlay network cannot reach the first.
    let other_ns = c.hosts[1].container("o");
    let o = c.hosts[1].attach("ov2", "o1", &other_ns).await.unwrap();
    assert!(other_ns.ping(&o.gateways[0]), "its own gateway");
    assert!(!other_ns.ping(&v4(0)), "ov2 must not reach ov on another host");

    // Detach removes the endpoint's entries everywhere.
    let mac0 = eps[0].mac.clone();
    let req = pb::DetachEndpointRequest { network: "ov".into(), name: "c0".into(), ..Default::default() };
    c.hosts[0].endpoints().await.detach_endpoint(req).await.unwrap();
    for h in &c.hosts[1..] {
        let vx = vxlan_of(h, "ov");
        c.wait_for("FDB removal on detach", Duration::from_secs(5), || !fdb(h, &vx).contains(&mac0));
    }
    // A network with endpoints cannot be deleted from any node.
    let e = c.hosts[0]
        .networks()
        .await
        .delete_network(pb::DeleteNetworkRequest { name: "ov".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("n1") && e.message().contains("n2"), "{}", e.message());
}
