//! End-to-end tests of the core slice: weftd runs for real in a test "host"
//! namespace; containers are namespaces; every check is a real packet or a
//! real kernel object.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use tonic::Code;
use weft_grpc::pb;
use weft_tests::{Host, addr_of, tcp_connect, tcp_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_talk_and_egress_is_masqueraded() {
    let host = Host::new("talk");
    let out = host.outside(1);
    host.create_network("n1", &["10.91.0.0/24", "fd00:91::/64"]).await.unwrap();
    let c1 = host.container("c1");
    let c2 = host.container("c2");
    let e1 = host.attach("n1", "c1", &c1).await.unwrap();
    let e2 = host.attach("n1", "c2", &c2).await.unwrap();
    assert_eq!(e1.addresses, ["10.91.0.2/24", "fd00:91::2/64"]);
    assert_eq!(e1.mac, "02:42:0a:5b:00:02", "Docker-style MAC from the IPv4 address");
    assert_eq!(e2.addresses[0], "10.91.0.3/24");

    // Inside the container: eth0 with the MAC and address, lo up, default route.
    let show = String::from_utf8_lossy(&c1.exec(&["ip", "-j", "addr", "show", "eth0"]).stdout).into_owned();
    assert!(show.contains("02:42:0a:5b:00:02") && show.contains("10.91.0.2"), "{show}");
    let routes = String::from_utf8_lossy(&c1.exec(&["ip", "route"]).stdout).into_owned();
    assert!(routes.contains("default via 10.91.0.1 dev eth0"), "{routes}");
    let dad = c1.exec(&["cat", "/proc/sys/net/ipv6/conf/eth0/accept_dad"]);
    assert_eq!(String::from_utf8_lossy(&dad.stdout).trim(), "0", "sysctl written inside the container's namespace");

    // TCP between the two endpoints, IPv4 and IPv6, addresses preserved.
    let srv = tcp_server(&c1.name, "0.0.0.0:8080");
    assert_eq!(tcp_connect(&c2.name, "10.91.0.2:8080").unwrap(), "hello");
    assert_eq!(srv.join().unwrap().unwrap().ip().to_string(), "10.91.0.3");
    let srv = tcp_server(&c1.name, "[::]:8081");
    assert_eq!(tcp_connect(&c2.name, "[fd00:91::2]:8081").unwrap(), "hello");
    assert_eq!(srv.join().unwrap().unwrap().ip().to_string(), "fd00:91::3");

    // Egress: the outside sees the host's address, not the container's.
    let srv = tcp_server(&out.name, "198.18.1.2:9000");
    assert_eq!(tcp_connect(&c1.name, "198.18.1.2:9000").unwrap(), "hello");
    assert_eq!(srv.join().unwrap().unwrap().ip().to_string(), "198.18.1.1", "masqueraded to the host address");

    // The outside cannot open connections to the container directly.
    out.exec(&["ip", "route", "add", "10.91.0.0/24", "via", "198.18.1.1"]);
    let _srv = tcp_server(&c1.name, "0.0.0.0:8082");
    assert!(tcp_connect(&out.name, "10.91.0.2:8082").is_err(), "unsolicited inbound traffic must be dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_network_has_no_way_out() {
    let host = Host::new("internal");
    let out = host.outside(2);
    let req = pb::CreateNetworkRequest {
        name: "priv".into(),
        subnets: vec![pb::Subnet { subnet: "10.92.0.0/24".into(), ..Default::default() }],
        internal: true,
        ..Default::default()
    };
    host.networks().await.create_network(req).await.unwrap();
    let c1 = host.container("c1");
    let c2 = host.container("c2");
    host.attach("priv", "c1", &c1).await.unwrap();
    host.attach("priv", "c2", &c2).await.unwrap();
    assert!(c2.ping("10.92.0.2"), "endpoints of an internal network still talk");
    let routes = String::from_utf8_lossy(&c1.exec(&["ip", "route"]).stdout).into_owned();
    assert!(!routes.contains("default"), "no default route on an internal network: {routes}");
    // Even with a route added by hand, the firewall keeps traffic in.
    c1.exec(&["ip", "route", "add", "default", "via", "10.92.0.1"]);
    let _srv = tcp_server(&out.name, "198.18.2.2:9000");
    assert!(tcp_connect(&c1.name, "198.18.2.2:9000").is_err(), "internal network reached the outside");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_and_rm_leave_nothing_behind() {
    let host = Host::new("clean");
    let before = host.host_links();
    let net = host.create_network("n1", &["10.93.0.0/24"]).await.unwrap();
    let c1 = host.container("c1");
    let ep = host.attach("n1", "c1", &c1).await.unwrap();
    assert!(host.host_links().contains(&net.bridge));
    assert!(host.host_links().contains(&ep.host_ifname));
    assert!(host.nft_tables().contains("inet weft"));
    assert!(c1.ping("10.93.0.1"));

    let mut eps = host.endpoints().await;
    eps.detach_endpoint(pb::DetachEndpointRequest { network: "n1".into(), name: "c1".into(), ..Default::default() })
        .await
        .unwrap();
    // Out of service at once; deleted in the background right after.
    assert_eq!(host.retired_links(), vec![ep.host_ifname.clone()], "host veth retired");
    assert!(!c1.ping("10.93.0.1"), "no traffic once the detach returned");
    host.retired_deleted();
    assert!(!host.host_links().contains(&ep.host_ifname), "host veth gone");
    assert!(!c1.links().contains(&"eth0".to_string()), "container interface gone");
    let listed = eps.list_endpoints(pb::ListEndpointsRequest::default()).await.unwrap().into_inner();
    assert!(listed.endpoints.is_empty());
    // The lease was released: a static request for the same address succeeds.
    let req = pb::AttachEndpointRequest {
        network: "n1".into(),
        name: "again".into(),
        netns: c1.path(),
        ips: vec![addr_of(&ep.addresses[0])],
        ..Default::default()
    };
    eps.attach_endpoint(req).await.unwrap();
    eps.detach_endpoint(pb::DetachEndpointRequest { network: "n1".into(), name: "again".into(), ..Default::default() })
        .await
        .unwrap();

    host.networks()
        .await
        .delete_network(pb::DeleteNetworkRequest { name: "n1".into(), ..Default::default() })
        .await
        .unwrap();
    host.retired_deleted();
    assert_eq!(host.host_links(), before, "bridge gone, nothing else left");
    assert!(!host.nft_tables().contains("weft"), "weft's table is removed with the last network");
    let nets = host.networks().await.list_networks(pb::ListNetworksRequest::default()).await.unwrap().into_inner();
    assert!(nets.networks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_rm_force_detaches_every_endpoint_in_one_change() {
    let host = Host::new("rmforce");
    let before = host.host_links();
    host.create_network("n1", &["10.91.0.0/24"]).await.unwrap();
    let other = host.create_network("n2", &["10.92.0.0/24"]).await.unwrap();
    let cs: Vec<_> = (0..3).map(|i| host.container(&format!("c{i}"))).collect();
    for (i, c) in cs.iter().enumerate() {
        let req = pb::AttachEndpointRequest {
            network: "n1".into(),
            name: format!("e{i}"),
            netns: c.path(),
            publish: vec![format!("{}:8080/tcp", 18080 + i)],
            ..Default::default()
        };
        host.endpoints().await.attach_endpoint(req).await.unwrap();
    }
    // c0 is on n2 too: after the removal its default route moves there.
    host.attach("n2", "c0-back", &cs[0]).await.unwrap();
    let srv = tcp_server(&cs[1].name, "0.0.0.0:8080");
    assert_eq!(tcp_connect(&host.ns.name, "127.0.0.1:18081").unwrap(), "hello", "published before");
    srv.join().unwrap();
    let out = host.cli(&["network", "rm", "n1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 endpoint(s) attached") && err.contains("--force"), "{err}");
    let out = host.cli(&["network", "rm", "--force", "--dry-run", "n1"]);
    assert!(out.status.success(), "{out:?}");
    let plan = String::from_utf8_lossy(&out.stdout);
    assert_eq!(plan.matches("down nomaster group").count(), 3, "{plan}");
    let listed = host.endpoints().await.list_endpoints(pb::ListEndpointsRequest::default()).await.unwrap();
    assert_eq!(listed.into_inner().endpoints.len(), 4, "a dry run changes nothing");

    let stats = String::from_utf8_lossy(&host.cli(&["stats"]).stdout).into_owned();
    let rev = stats.split("revision ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_owned();
    let out = host.cli(&["network", "rm", "--force", "n1"]);
    assert!(out.status.success(), "{out:?}");
    // One change: the three detaches and the removal share one revision.
    let events = host.cli(&["events", "--since", &rev, "--count", "4", "-o", "json"]);
    let text = String::from_utf8_lossy(&events.stdout).into_owned();
    let gone: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["network"] == "n1" && (e["kind"] == "endpoint.detached" || e["kind"] == "network.removed"))
        .collect();
    assert_eq!(gone.len(), 4, "{text}");
    assert!(gone.iter().all(|e| e["revision"] == gone[0]["revision"]), "one revision: {text}");
    assert!(tcp_connect(&host.ns.name, "127.0.0.1:18081").is_err(), "the port is no longer published");
    assert!(!cs[1].ping("10.91.0.1"), "no traffic");
    let listed = host.endpoints().await.list_endpoints(pb::ListEndpointsRequest::default()).await.unwrap();
    let names: Vec<String> = listed.into_inner().endpoints.into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["c0-back"], "only the other network's endpoint is left");
    host.retired_deleted();
    let routes = String::from_utf8_lossy(&cs[0].exec(&["ip", "route", "show", "default"]).stdout).into_owned();
    assert!(routes.contains("via 10.92.0.1"), "the default route moved to n2: {routes}");
    for c in &cs[1..] {
        assert_eq!(c.links(), ["lo"], "nothing left in {}", c.name);
    }
    let left: Vec<String> = host.host_links().into_iter().filter(|l| !before.contains(l)).collect();
    assert_eq!(left.len(), 2, "n2's bridge and c0-back's veth only: {left:?}");
    assert!(left.contains(&other.bridge));
    // The ports and addresses are free again.
    host.create_network("n1", &["10.91.0.0/24"]).await.unwrap();
    let req = pb::AttachEndpointRequest {
        network: "n1".into(),
        name: "again".into(),
        netns: cs[1].path(),
        ips: vec!["10.91.0.3".into()],
        publish: vec!["18081:8080/tcp".into()],
        ..Default::default()
    };
    host.endpoints().await.attach_endpoint(req).await.expect("same address, port and interface");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_batched_link_deletion_leaves_nothing_after_restart() {
    let mut host = Host::new("crashdel");
    host.create_network("n1", &["10.95.0.0/24"]).await.unwrap();
    let cs: Vec<_> = (0..3).map(|i| host.container(&format!("c{i}"))).collect();
    let mut veths = Vec::new();
    for (i, c) in cs.iter().enumerate() {
        veths.push(host.attach("n1", &format!("e{i}"), c).await.unwrap().host_ifname);
    }
    let links_before: Vec<String> = host.host_links().into_iter().filter(|l| !veths.contains(l)).collect();
    let mut eps = host.endpoints().await;
    for i in 0..3 {
        let req = pb::DetachEndpointRequest { network: "n1".into(), name: format!("e{i}"), ..Default::default() };
        eps.detach_endpoint(req).await.unwrap();
    }
    // Killed right after the detaches returned: the deletion waits for
    // detaches to pause (25 ms), so the retired links are still there.
    host.kill9();
    let left = host.retired_links();
    eprintln!("retired links left by the crash: {left:?}");
    assert!(!left.is_empty() || host.host_links() == links_before, "either left retired or already deleted");
    assert!(!cs[0].ping("10.95.0.1"), "a retired link carries nothing");
    host.start();
    assert!(host.retired_links().is_empty(), "deleted at start");
    assert_eq!(host.host_links(), links_before, "nothing of the endpoints left on the host");
    for c in &cs {
        assert_eq!(c.links(), ["lo"], "nothing left in {}", c.name);
    }
    let stats = String::from_utf8_lossy(&host.cli(&["stats"]).stdout).into_owned();
    assert!(stats.contains("repairs none"), "a retired link is not an orphan to repair: {stats}");
    // The names are free: the same namespace and interface attach again.
    host.attach("n1", "again", &cs[0]).await.unwrap();
    assert!(cs[0].ping("10.95.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_repairs_a_deleted_bridge_and_table() {
    let mut host = Host::new("restart");
    let net = host.create_network("n1", &["10.94.0.0/24"]).await.unwrap();
    let c1 = host.container("c1");
    let c2 = host.container("c2");
    host.attach("n1", "c1", &c1).await.unwrap();
    host.attach("n1", "c2", &c2).await.unwrap();

    host.stop();
    assert!(c2.ping("10.94.0.2"), "containers keep networking while weftd is down");
    host.ns.exec(&["ip", "link", "del", &net.bridge]);
    host.ns.exec(&["nft", "delete", "table", "inet", "weft"]);
    assert!(!c2.ping("10.94.0.2"), "deleting the bridge cut the network");

    host.start();
    assert!(c2.ping("10.94.0.2"), "reconcile re-created the bridge and re-attached the veths");
    assert!(c2.ping("10.94.0.1"), "gateway address is back");
    assert!(host.nft_tables().contains("inet weft"), "nft table re-created");
    let srv = tcp_server(&c1.name, "0.0.0.0:8080");
    assert_eq!(tcp_connect(&c2.name, "10.94.0.2:8080").unwrap(), "hello");
    srv.join().unwrap();
    // State survived the restart.
    let n = host
        .networks()
        .await
        .get_network(pb::GetNetworkRequest { name: "n1".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n.endpoints.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_parallel_attaches_get_distinct_addresses() {
    let host = Host::new("par");
    host.create_network("n1", &["10.95.0.0/24"]).await.unwrap();
    let containers: Vec<_> = (0..100).map(|i| host.container(&format!("p{i}"))).collect();
    let channel = host.channel().await;
    let tasks: Vec<_> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut client = weft_grpc::client::EndpointServiceClient::new(channel.clone());
            let req = pb::AttachEndpointRequest {
                network: "n1".into(),
                name: format!("p{i}"),
                netns: c.path(),
                ..Default::default()
            };
            tokio::spawn(async move { client.attach_endpoint(req).await.map(|r| r.into_inner()) })
        })
        .collect();
    let mut addrs = HashSet::new();
    let mut by_index = Vec::new();
    for t in futures::future::join_all(tasks).await {
        let ep = t.unwrap().unwrap();
        assert!(addrs.insert(ep.addresses[0].clone()), "duplicate address {}", ep.addresses[0]);
        by_index.push(ep);
    }
    assert_eq!(addrs.len(), 100);
    // The kernel agrees: each namespace holds the address it was given.
    for (c, ep) in containers.iter().zip(&by_index).step_by(17) {
        let show = String::from_utf8_lossy(&c.exec(&["ip", "-o", "addr", "show", "eth0"]).stdout).into_owned();
        assert!(show.contains(&ep.addresses[0]), "{show} lacks {}", ep.addresses[0]);
    }
    assert!(containers[99].ping(&addr_of(&by_index[0].addresses[0])), "first and last endpoint talk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_code_and_changes_nothing() {
    let host = Host::new("bad");
    host.create_network("n1", &["10.96.0.0/29"]).await.unwrap();
    let links_before = host.host_links();
    let nft_before =
        String::from_utf8_lossy(&host.ns.exec(&["nft", "list", "table", "inet", "weft"]).stdout).into_owned();

    let code = |r: Result<pb::Network, tonic::Status>| r.map(|_| ()).unwrap_err();
    let e = code(host.create_network("x", &["10.0.0.0/33"]).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "subnets[0].subnet: 10.0.0.0/33: prefix length must be <= 32");
    let e = code(host.create_network("x", &["10.96.0.0/24"]).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("overlaps"), "{}", e.message());
    assert_eq!(code(host.create_network("n1", &["10.97.0.0/24"]).await).code(), Code::AlreadyExists);
    // A huge echoed value still makes an error a client can receive.
    let e = code(host.create_network(&"n".repeat(1_000_000), &["10.95.0.0/24"]).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().len() <= 1024 && e.message().starts_with("name: "), "{}", e.message().len());
    // Ranges that are not the containers' to use are refused before any
    // kernel work (fe80::/64 and multicast used to come back INTERNAL).
    for (subnet, range) in [
        ("127.0.0.0/8", "127.0.0.0/8 (loopback)"),
        ("0.0.0.0/0", "0.0.0.0/8"),
        ("fe80::/64", "fe80::/10 (link-local)"),
        ("ff05::/64", "ff00::/8 (multicast)"),
    ] {
        let e = code(host.create_network("r", &[subnet]).await);
        assert_eq!(e.code(), Code::InvalidArgument, "{subnet}: {}", e.message());
        assert!(e.message().contains(&format!("overlaps {range}")), "{subnet}: {}", e.message());
    }
    let bad_gw = pb::CreateNetworkRequest {
        name: "gw".into(),
        subnets: vec![pb::Subnet { subnet: "10.98.0.0/24".into(), gateway: "10.99.0.1".into(), ..Default::default() }],
        ..Default::default()
    };
    let e = host.networks().await.create_network(bad_gw).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("subnets[0].gateway"), "{}", e.message());
    let bad_ipam = pb::CreateNetworkRequest {
        name: "m".into(),
        subnets: vec![pb::Subnet { subnet: "10.98.0.0/24".into(), ..Default::default() }],
        ipam: "no-such-module".into(),
        ..Default::default()
    };
    assert_eq!(host.networks().await.create_network(bad_ipam).await.unwrap_err().code(), Code::NotFound);

    let c = host.container("c");
    assert_eq!(host.attach("nope", "a", &c).await.unwrap_err().code(), Code::NotFound);
    let mut eps = host.endpoints().await;
    let not_ns = pb::AttachEndpointRequest {
        network: "n1".into(),
        name: "a".into(),
        netns: "/etc/hostname".into(),
        ..Default::default()
    };
    let e = eps.attach_endpoint(not_ns).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("netns: /etc/hostname"), "{}", e.message());
    // A FIFO is refused at once (opening one for reading used to wait for a
    // writer forever), and so is weftd's own namespace (an endpoint there
    // would put eth0 and a default route into the host).
    let fifo = host.dir.join("not-a-netns");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for (path, why) in [
        (fifo.display().to_string(), "not a network namespace"),
        ("/proc/self/ns/net".to_string(), "is weftd's own network namespace"),
    ] {
        let req = pb::AttachEndpointRequest {
            network: "n1".into(),
            name: "a".into(),
            netns: path.clone(),
            ..Default::default()
        };
        let e = tokio::time::timeout(std::time::Duration::from_secs(20), eps.attach_endpoint(req))
            .await
            .unwrap_or_else(|_| panic!("attach with netns {path} got no answer"))
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{path}: {}", e.message());
        assert_eq!(e.message(), format!("netns: {path}: {why}"));
    }
    let bad_ip = pb::AttachEndpointRequest {
        network: "n1".into(),
        name: "a".into(),
        netns: c.path(),
        ips: vec!["10.1.2.3".into()],
        ..Default::default()
    };
    assert_eq!(eps.attach_endpoint(bad_ip).await.unwrap_err().code(), Code::InvalidArgument);
    // Names become DNS names: DNS labels only, lowercase, so `EP1` cannot sit
    // beside `ep1` (and `a.` never reaches the naming component).
    for name in ["EP1", "a.", "web_1", "x-"] {
        let e = host.attach("n1", name, &c).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {}", e.message());
        assert!(e.message().contains("must be a DNS label"), "{name}: {}", e.message());
    }
    let long = pb::AttachEndpointRequest {
        network: "n1".into(),
        name: "a".into(),
        netns: format!("/{}", "n".repeat(100_000)),
        ..Default::default()
    };
    let e = eps.attach_endpoint(long).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("is longer than 4096 bytes") && e.message().len() < 300, "{}", e.message());
    // A document nested 10^5 deep is refused before it is parsed.
    let deep = pb::ApplyPoliciesRequest {
        documents: format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        ..Default::default()
    };
    let e = host.policies().await.apply_policies(deep).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("nests [ and { 100000 deep; at most 64"), "{}", e.message());

    // /29: gateway .1, endpoints .2 to .6; the sixth attach exhausts the pool.
    let cs: Vec<_> = (0..6).map(|i| host.container(&format!("x{i}"))).collect();
    for (i, c) in cs.iter().take(5).enumerate() {
        host.attach("n1", &format!("x{i}"), c).await.unwrap();
    }
    let e = host.attach("n1", "x5", &cs[5]).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert_eq!(host.attach("n1", "x0", &cs[5]).await.unwrap_err().code(), Code::AlreadyExists);
    let taken = pb::AttachEndpointRequest {
        network: "n1".into(),
        name: "y".into(),
        netns: cs[5].path(),
        ips: vec!["10.96.0.2".into()],
        ..Default::default()
    };
    assert_eq!(eps.attach_endpoint(taken).await.unwrap_err().code(), Code::AlreadyExists);
    let e = host
        .networks()
        .await
        .delete_network(pb::DeleteNetworkRequest { name: "n1".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Nothing changed by the refused requests: same networks, 5 endpoints,
    // only their veths were added, same firewall.
    let nets = host.networks().await.list_networks(pb::ListNetworksRequest::default()).await.unwrap().into_inner();
    assert_eq!(nets.networks.len(), 1);
    assert_eq!(nets.networks[0].endpoints.len(), 5);
    let added: Vec<_> = host.host_links().into_iter().filter(|l| !links_before.contains(l)).collect();
    assert_eq!(added.len(), 5, "{added:?}");
    assert!(added.iter().all(|l| l.starts_with("veth")));
    let nft_after =
        String::from_utf8_lossy(&host.ns.exec(&["nft", "list", "table", "inet", "weft"]).stdout).into_owned();
    assert_eq!(nft_before, nft_after);
    assert!(cs[5].links() == ["lo"], "refused attach left nothing in the namespace: {:?}", cs[5].links());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_failing_halfway_is_rolled_back() {
    let host = Host::new("rollback");
    host.create_network("n1", &["10.97.0.0/24"]).await.unwrap();
    let links_before = host.host_links();
    let c = host.container("c");
    // Something already called eth0 in the namespace makes the rename fail
    // after the veth pair was made and moved.
    assert!(c.exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]).status.success());
    let e = host.attach("n1", "a", &c).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{}", e.message());
    assert!(e.message().contains("rolled back"), "{}", e.message());
    assert_eq!(host.host_links(), links_before, "no veth left on the host");
    let mut inside = c.links();
    inside.sort();
    assert_eq!(inside, ["eth0", "eth0p", "lo"], "only what the test made remains in the namespace");
    let eps = host.endpoints().await.list_endpoints(pb::ListEndpointsRequest::default()).await.unwrap().into_inner();
    assert!(eps.endpoints.is_empty(), "no endpoint record");
    // The lease was released: the address is free for a static request.
    let c2 = host.container("c2");
    let req = pb::AttachEndpointRequest {
        network: "n1".into(),
        name: "b".into(),
        netns: c2.path(),
        ips: vec!["10.97.0.2".into()],
        ..Default::default()
    };
    host.endpoints().await.attach_endpoint(req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    let host = Host::new("health");
    let mut h = tonic_health::pb::health_client::HealthClient::new(host.channel().await);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest { service: "weft.v1.NetworkService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let host = Host::new("reflect");
    let mut client = ServerReflectionClient::new(host.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected {resp:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["weft.v1.NetworkService", "weft.v1.EndpointService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_by_proc_pid_ns_path() {
    let host = Host::new("procns");
    host.create_network("n1", &["10.87.0.0/24"]).await.unwrap();
    // A "container" that is only a process in its own network namespace.
    let mut child = std::process::Command::new("unshare").args(["--net", "sleep", "60"]).spawn().unwrap();
    let pid = child.id();
    let path = format!("/proc/{pid}/ns/net");
    // Wait until unshare has switched namespace (the link differs from ours).
    for _ in 0..100 {
        if std::fs::read_link(&path).ok() != std::fs::read_link("/proc/self/ns/net").ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let req =
        pb::AttachEndpointRequest { network: "n1".into(), name: "proc".into(), netns: path, ..Default::default() };
    let attached = host.endpoints().await.attach_endpoint(req).await;
    let ping = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ping", "-c", "1", "-W", "2", "10.87.0.1"])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(attached.unwrap().into_inner().addresses, ["10.87.0.2/24"]);
    assert!(ping.status.success(), "the process reaches its gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_namespace_on_two_networks() {
    let host = Host::new("multi");
    host.create_network("front", &["10.85.0.0/24"]).await.unwrap();
    host.create_network("back", &["10.86.0.0/24"]).await.unwrap();
    let app = host.container("app");
    let web = host.container("web");
    let db = host.container("db");
    let e0 = host.attach("front", "app", &app).await.unwrap();
    let e1 = host.attach("back", "app", &app).await.unwrap();
    assert_eq!((e0.ifname.as_str(), e1.ifname.as_str()), ("eth0", "eth1"));
    host.attach("front", "web", &web).await.unwrap();
    host.attach("back", "db", &db).await.unwrap();
    assert!(app.ping("10.85.0.3") && app.ping("10.86.0.3"), "reaches both networks");
    assert!(!web.ping("10.86.0.3"), "the networks stay isolated from each other");
    assert!(!db.ping("10.85.0.3"), "in both directions");
    let routes = String::from_utf8_lossy(&app.exec(&["ip", "route", "show", "default"]).stdout).into_owned();
    assert!(routes.contains("via 10.85.0.1 dev eth0"), "the first network keeps the default route: {routes}");

    host.endpoints()
        .await
        .detach_endpoint(pb::DetachEndpointRequest {
            network: "front".into(),
            name: "app".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(app.ping("10.86.0.3"), "the other network keeps working");
    assert!(!app.links().contains(&"eth0".to_string()));
    let routes = String::from_utf8_lossy(&app.exec(&["ip", "route", "show", "default"]).stdout).into_owned();
    assert!(routes.contains("via 10.86.0.1 dev eth1"), "the default route moved to the remaining network: {routes}");
    // A named interface that is taken is refused.
    let req = pb::AttachEndpointRequest {
        network: "front".into(),
        name: "app2".into(),
        netns: app.path(),
        ifname: "eth1".into(),
        ..Default::default()
    };
    assert_eq!(host.endpoints().await.attach_endpoint(req).await.unwrap_err().code(), Code::AlreadyExists);
}

/// A request that is not the protobuf it claims to be is the caller's
/// error (INVALID_ARGUMENT naming the message), not weftd's (INTERNAL), and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_is_invalid_argument() {
    let host = Host::new("garble");
    // A message whose field 1 is a varint, sent where field 1 is a string.
    let wrong = pb::DeleteNetworkResponse { revision: 7, ..Default::default() };
    let mut grpc = tonic::client::Grpc::new(weft_grpc::client::connect_unix(host.socket()).await.unwrap());
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/weft.v1.NetworkService/CreateNetwork");
    let codec = tonic_prost::ProstCodec::<pb::DeleteNetworkResponse, pb::Network>::default();
    let e = grpc.unary(tonic::Request::new(wrong), path, codec).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("CreateNetworkRequest message does not decode"), "{}", e.message());
    let nets = host.networks().await.list_networks(pb::ListNetworksRequest::default()).await.unwrap().into_inner();
    assert!(nets.networks.is_empty());
}
