//! Cluster mode end to end: three simulated hosts on one underlay, a
//! three-member etcd cluster, a weftd per host. Overlay networks are seen
//! by every node, endpoints on different hosts reach each other (ping, TCP,
//! DNS by name, 10 MB through the overlay MTU), remote endpoints are
//! programmed (FDB + neighbour, nothing learned) and removed everywhere on
//! detach, and addresses are unique across nodes under concurrency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use weft_grpc::pb;
use weft_tests::cluster::{Cluster, underlay_ip};

use weft_tests::{Host, Netns, Server, addr_of, on_ns, probe_tcp, tcp_connect, tcp_server};

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
            a.iter().filter(|e| e["dst"].is_string()).filter_map(|e| e["mac"].as_str().map(str::to_owned)).collect()
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

    // Egress is masqueraded on the container's own host (the outside has
    // no route back to the overlay's subnet).
    let outside = c.hosts[0].outside(1);
    assert!(ns[0].ping("198.18.1.2"), "an overlay container reaches past its host");
    drop(outside);

    // A published port works on the node hosting the endpoint.
    let pub_ns = c.hosts[2].container("pub");
    let req = pb::AttachEndpointRequest {
        network: "ov".into(),
        name: "pub".into(),
        netns: pub_ns.path(),
        publish: vec!["18080:7002".into()],
        ..Default::default()
    };
    let pe = c.hosts[2].endpoints().await.attach_endpoint(req).await.unwrap().into_inner();
    let server = tcp_server(&pub_ns.name, &format!("{}:7002", addr_of(&pe.addresses[0])));
    assert_eq!(tcp_connect(&c.hosts[2].ns.name, &format!("{}:18080", underlay_ip(2))).unwrap(), "hello");
    assert!(server.join().unwrap().is_some());

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
    // A NetworkPolicy applied on n1 is enforced on n0 for a pod there: a
    // (on n1) may reach web (on n0), b (on n2) may not.
    let out = c.hosts[0].cli(&[
        "network",
        "create",
        "pol",
        "--driver",
        "overlay",
        "--subnet",
        "10.97.0.0/24",
        "--policy",
        "policy-k8s",
    ]);
    assert!(out.status.success(), "{out:?}");
    for h in &c.hosts {
        c.wait_for("the policed network on every node", Duration::from_secs(10), || inspect(h, "pol").is_some());
    }
    let pods: Vec<Netns> = c.hosts.iter().map(|h| h.container("pod")).collect();
    let mut addrs = Vec::new();
    for (i, name) in ["web", "a", "b"].iter().enumerate() {
        let req = pb::AttachEndpointRequest {
            network: "pol".into(),
            name: (*name).into(),
            netns: pods[i].path(),
            labels: [("pod".to_string(), name.to_string()), ("io.kubernetes.pod.namespace".into(), "default".into())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let ep = c.hosts[i].endpoints().await.attach_endpoint(req).await.unwrap().into_inner();
        addrs.push(addr_of(&ep.addresses[0]));
    }
    let _web = Server::start(&pods[0].name, "[::]:80");
    let to_web: SocketAddr = format!("{}:80", addrs[0]).parse().unwrap();
    let reach = |from: usize| probe_tcp(&pods[from].name, to_web, Duration::from_millis(800)).join().unwrap();
    c.wait_for("both reach web before any policy", Duration::from_secs(5), || reach(1) && reach(2));
    let docs = "apiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {ns: default}}\n---\n\
                apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web-from-a, namespace: default}\n\
                spec: {podSelector: {matchLabels: {pod: web}}, policyTypes: [Ingress], \
                ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}], ports: [{port: 80, protocol: TCP}]}]}\n";
    let req = pb::ApplyPoliciesRequest { network: "pol".into(), documents: docs.into(), ..Default::default() };
    c.hosts[1].policies().await.apply_policies(req).await.unwrap();
    c.wait_for("b (on n2) denied by the policy applied on n1", Duration::from_secs(5), || !reach(2));
    assert!(reach(1), "a (on n1) is still allowed");
    let listed = c.hosts[2].cli(&["policy", "ls", "--network", "pol"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("web-from-a"), "{listed:?}");
    // Deleted on n2, the policy is gone on n0 too: b reaches web again.
    for doc in ["web-from-a", "default"] {
        let out = c.hosts[2].cli(&["policy", "rm", doc]);
        assert!(out.status.success(), "{out:?}");
    }
    c.wait_for("b reaches web again", Duration::from_secs(5), || reach(2));
    // The policy component swapped on n2 is swapped on every node.
    let out = c.hosts[2].cli(&["network", "update", "pol", "--policy", "policy-isolation"]);
    assert!(out.status.success(), "{out:?}");
    c.wait_for("n0 runs the new component", Duration::from_secs(5), || {
        inspect(&c.hosts[0], "pol").is_some_and(|n| n["policy"] == "policy-isolation")
    });
    assert!(reach(1) && reach(2), "one network, no isolation between its endpoints");

    // A network with endpoints cannot be deleted from any node.
    let e = c.hosts[0]
        .networks()
        .await
        .delete_network(pb::DeleteNetworkRequest { name: "ov".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("n1") && e.message().contains("n2"), "{}", e.message());

    // Once empty, deleting on one node removes it from every node.
    let req = pb::DetachEndpointRequest { network: "ov2".into(), name: "o1".into(), ..Default::default() };
    c.hosts[1].endpoints().await.detach_endpoint(req).await.unwrap();
    let vx2 = vxlan_of(&c.hosts[0], "ov2");
    let out = c.hosts[2].cli(&["network", "rm", "ov2"]);
    assert!(out.status.success(), "{out:?}");
    for h in &c.hosts {
        c.wait_for("ov2 gone from every node", Duration::from_secs(5), || {
            inspect(h, "ov2").is_none() && !h.host_links().contains(&vx2)
        });
    }
    // Its VNI is free again.
    let again = c.hosts[0]
        .networks()
        .await
        .create_network(overlay_req("ov5", &["10.91.0.0/24"], &[("vni", "77")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.vni, 77);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_cluster_the_overlay_driver_is_refused_clearly() {
    let h = Host::new("noclu");
    let e = h.networks().await.create_network(overlay_req("ov", &["10.90.0.0/24"], &[])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("--etcd"), "{}", e.message());
    let out = h.cli(&["node", "ls"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cluster mode"), "{out:?}");
    assert!(h.host_links().iter().all(|l| l == "lo"), "nothing made: {:?}", h.host_links());
    // A bad VNI is refused at the edge.
    let e = h.networks().await.create_network(overlay_req("ov", &["10.90.0.0/24"], &[("vni", "0")])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("vni"), "{}", e.message());
    // weftd refuses to start in cluster mode without an advertise address.
    let out = std::process::Command::new(weft_tests::bin_dir().join("weftd"))
        .args(["--etcd", "http://127.0.0.1:2379", "--socket", "/nonexistent/x.sock", "--state-dir", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--advertise-ip"), "{out:?}");
}

/// Attach `n` endpoints named `{prefix}{j}` into namespace `ns` on host `h`,
/// all at once; the answers in order.
async fn attach_many(
    h: &Host,
    network: &str,
    prefix: &str,
    ns: &Netns,
    n: usize,
) -> Vec<Result<pb::Endpoint, tonic::Status>> {
    let ch = h.channel().await;
    let calls = (0..n).map(|j| {
        let mut client = weft_grpc::client::EndpointServiceClient::new(ch.clone());
        let req = pb::AttachEndpointRequest {
            network: network.into(),
            name: format!("{prefix}{j}"),
            netns: ns.path(),
            ..Default::default()
        };
        async move { client.attach_endpoint(req).await.map(|r| r.into_inner()) }
    });
    futures::future::join_all(calls).await
}

#[tokio::test(flavor = "multi_thread")]
async fn addresses_stay_unique_across_nodes_under_concurrency() {
    let c = Cluster::new("ipam", 3, &[]);
    let out = c.hosts[0].cli(&["network", "create", "wide", "--driver", "overlay", "--subnet", "10.94.0.0/22"]);
    assert!(out.status.success(), "{out:?}");
    for h in &c.hosts {
        c.wait_for("the network on every node", Duration::from_secs(10), || inspect(h, "wide").is_some());
    }
    // 100 attaches through each of the three nodes, all at once.
    let ns: Vec<Netns> = c.hosts.iter().map(|h| h.container("many")).collect();
    let (a, b, d) = tokio::join!(
        attach_many(&c.hosts[0], "wide", "a", &ns[0], 100),
        attach_many(&c.hosts[1], "wide", "b", &ns[1], 100),
        attach_many(&c.hosts[2], "wide", "c", &ns[2], 100),
    );
    let mut addrs = Vec::new();
    for r in a.into_iter().chain(b).chain(d) {
        let ep = r.unwrap_or_else(|e| panic!("attach failed: {e:?}\n{}", c.logs()));
        addrs.push(ep.addresses[0].clone());
    }
    assert_eq!(addrs.len(), 300);
    let mut unique = addrs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 300, "300 distinct addresses across three nodes");
    // Every node's view agrees: 300 endpoints, each on the node that made it.
    for h in &c.hosts {
        c.wait_for("every endpoint on every node", Duration::from_secs(10), || {
            inspect(h, "wide").is_some_and(|n| n["endpoints"].as_array().is_some_and(|e| e.len() == 300))
        });
    }
    let listed = inspect(&c.hosts[2], "wide").unwrap();
    for e in listed["endpoints"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let node = e["node"].as_str().unwrap();
        let want = match &name[..1] {
            "a" => "n0",
            "b" => "n1",
            _ => "n2",
        };
        assert_eq!(node, want, "{e}");
    }
    // And the kernel agrees: a sample of pairs across hosts answer.
    let ip = |n: &serde_json::Value, name: &str| {
        let e = n["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap().clone();
        addr_of(e["addresses"][0].as_str().unwrap())
    };
    assert!(ns[0].ping(&ip(&listed, "b99")), "a namespace on n0 reaches b99 on n1");
    assert!(ns[2].ping(&ip(&listed, "a0")), "a namespace on n2 reaches a0 on n0");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_and_node_failures() {
    let c = Cluster::new("fail", 3, &[]);
    let out = c.hosts[0].cli(&["network", "create", "ov", "--driver", "overlay", "--subnet", "10.95.0.0/24"]);
    assert!(out.status.success(), "{out:?}");
    for h in &c.hosts {
        c.wait_for("the network on every node", Duration::from_secs(10), || inspect(h, "ov").is_some());
    }
    let ns: Vec<Netns> = c.hosts.iter().map(|h| h.container("c")).collect();
    let mut eps = Vec::new();
    for (i, h) in c.hosts.iter().enumerate() {
        eps.push(h.attach("ov", &format!("c{i}"), &ns[i]).await.unwrap());
    }
    let v4 = |e: &pb::Endpoint| addr_of(&e.addresses[0]);
    assert!(ns[0].ping(&v4(&eps[1])));
    let shown = c.hosts[2].cli(&["network", "inspect", "ov"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("NODE") && text.contains("n0") && text.contains("VNI:"), "{text}");

    // One etcd member of three killed: attaches go on after one election.
    let mut c = c;
    c.etcd[2].kill();
    let spares: Vec<Netns> = c.hosts.iter().map(|h| h.container("spare")).collect();
    let t = std::time::Instant::now();
    let mut first_ok = None;
    for k in 0..60 {
        match c.hosts[k % 3].attach("ov", &format!("after{k}"), &spares[k % 3]).await {
            Ok(_) => {
                first_ok.get_or_insert(t.elapsed());
                if k >= 5 {
                    break;
                }
            }
            Err(e) => {
                assert!(first_ok.is_none(), "a failure after attaches worked again: {e:?}");
                assert!(t.elapsed() < Duration::from_secs(3), "attaches still failing after 3 s: {e:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    assert!(first_ok.is_some(), "attaches work with two etcd members of three");

    // Every member down: traffic flows, bridge networks work, overlay
    // attaches fail fast as UNAVAILABLE naming etcd and change nothing.
    c.etcd[0].kill();
    c.etcd[1].kill();
    assert!(ns[0].ping(&v4(&eps[1])), "existing traffic keeps flowing with etcd down");
    let bridge = c.hosts[1].create_network("local", &["10.96.0.0/24"]).await.unwrap();
    assert_eq!(bridge.driver, "bridge");
    let local_ns = c.hosts[1].container("local");
    c.hosts[1].attach("local", "l1", &local_ns).await.expect("bridge attaches work with etcd down");
    c.hosts[0].retired_deleted();
    let links_before = c.hosts[0].host_links();
    let late = c.hosts[0].container("late");
    let t = std::time::Instant::now();
    let e = c.hosts[0].attach("ov", "late", &late).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "failed in {:?}", t.elapsed());
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("etcd"), "{}", e.message());
    assert_eq!(c.hosts[0].host_links(), links_before, "nothing half-applied");
    assert!(late.links().iter().all(|l| l == "lo"), "{:?}", late.links());
    let got = c.hosts[0].cli(&["endpoint", "inspect", "ov", "late"]);
    assert!(!got.status.success(), "the refused endpoint is not recorded");

    // etcd back: the nodes resync and overlay attaches work again.
    for m in &mut c.etcd {
        m.start();
    }
    let t = std::time::Instant::now();
    loop {
        match c.hosts[0].attach("ov", "late", &late).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "no overlay attach 5 s after etcd came back: {e:?}\n{}",
                    c.logs()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    // weftd on n1 killed with kill -9; meanwhile c0 is detached. On
    // restart n1 keeps c1's address and has no stale entry for c0.
    let vx = vxlan_of(&c.hosts[1], "ov");
    assert!(fdb(&c.hosts[1], &vx).contains(&eps[0].mac));
    c.hosts[1].kill9();
    let req = pb::DetachEndpointRequest { network: "ov".into(), name: "c0".into(), ..Default::default() };
    c.hosts[0].endpoints().await.detach_endpoint(req).await.unwrap();
    c.hosts[1].start();
    c.wait_for("n1 forgets c0 after its restart", Duration::from_secs(5), || {
        !fdb(&c.hosts[1], &vx).contains(&eps[0].mac)
    });
    let c1 = c.hosts[1].cli(&["endpoint", "inspect", "ov", "c1", "-o", "json"]);
    let c1: serde_json::Value = serde_json::from_slice(&c1.stdout).unwrap();
    assert_eq!(c1["addresses"][0], eps[1].addresses[0], "c1 keeps its address");
    assert!(ns[2].ping(&v4(&eps[1])), "c2 still reaches c1");
    assert!(fdb(&c.hosts[1], &vx).contains(&eps[2].mac), "and n1 still has c2");

    // n2 gone for longer than its lease: the others forget its endpoints'
    // entries; its address lease stays until `weft node rm`.
    c.hosts[2].kill9();
    c.wait_for("n0 sees n2 down", Duration::from_secs(10), || !c.alive_nodes(0).contains(&"n2".to_owned()));
    let vx0 = vxlan_of(&c.hosts[0], "ov");
    c.wait_for("n2's entries removed on n0", Duration::from_secs(5), || !fdb(&c.hosts[0], &vx0).contains(&eps[2].mac));
    let nodes = c.hosts[0].cli(&["node", "ls"]);
    let text = String::from_utf8_lossy(&nodes.stdout);
    assert!(text.lines().any(|l| l.starts_with("n2 ") && l.contains("down")), "{text}");
    let e = c.hosts[0].cli(&["node", "rm", "n0"]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("alive"), "{e:?}");
    let listed = c.hosts[0].cli(&["node", "ls", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let held = listed.as_array().unwrap().iter().find(|n| n["name"] == "n2").unwrap()["endpoints"].as_u64().unwrap();
    assert!(held >= 1, "n2's endpoints keep their leases while it is down: {listed}");
    let rm = c.hosts[0].cli(&["node", "rm", "n2"]);
    assert!(rm.status.success(), "{rm:?}");
    assert!(String::from_utf8_lossy(&rm.stdout).contains(&format!("released {held} endpoint")), "{rm:?}");
    c.wait_for("n2 forgotten", Duration::from_secs(5), || {
        inspect(&c.hosts[0], "ov").is_some_and(|n| n["endpoints"].as_array().unwrap().iter().all(|e| e["node"] != "n2"))
    });
}
