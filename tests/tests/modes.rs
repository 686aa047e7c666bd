//! Network modes beyond the bridge: macvlan networks, and the endpoint modes
//! none, host and container:<endpoint>.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use tonic::Code;
use weft_grpc::pb;
use weft_tests::{Host, Netns, sh};

async fn attach_mode(
    host: &Host,
    network: &str,
    name: &str,
    netns: &str,
    mode: &str,
) -> Result<pb::Endpoint, tonic::Status> {
    let req = pb::AttachEndpointRequest {
        network: network.into(),
        name: name.into(),
        netns: netns.into(),
        mode: mode.into(),
        ..Default::default()
    };
    host.endpoints().await.attach_endpoint(req).await.map(|r| r.into_inner())
}

async fn detach(host: &Host, network: &str, name: &str) -> Result<(), tonic::Status> {
    let req = pb::DetachEndpointRequest { network: network.into(), name: name.into(), ..Default::default() };
    host.endpoints().await.detach_endpoint(req).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macvlan_network_reaches_the_lan_directly() {
    let host = Host::new("macvlan");
    // The "LAN": a namespace behind the host's parent interface.
    let lan = Netns::new("macvlan", "lan");
    sh(&[
        "ip",
        "-n",
        &host.ns.name,
        "link",
        "add",
        "wtpar0",
        "type",
        "veth",
        "peer",
        "name",
        "wtlan",
        "netns",
        &lan.name,
    ]);
    sh(&["ip", "-n", &host.ns.name, "link", "set", "wtpar0", "up"]);
    sh(&["ip", "-n", &lan.name, "addr", "add", "10.77.0.100/24", "dev", "wtlan"]);
    sh(&["ip", "-n", &lan.name, "link", "set", "wtlan", "up"]);

    let mut opts = std::collections::HashMap::new();
    opts.insert("parent".to_string(), "wtpar0".to_string());
    let req = pb::CreateNetworkRequest {
        name: "lan".into(),
        driver: "macvlan".into(),
        subnets: vec![pb::Subnet {
            subnet: "10.77.0.0/24".into(),
            gateway: "10.77.0.100".into(),
            ..Default::default()
        }],
        options: opts.clone(),
        ..Default::default()
    };
    let net = host.networks().await.create_network(req.clone()).await.unwrap().into_inner();
    assert_eq!(net.driver, "macvlan");
    let links_before = host.host_links();

    let c1 = host.container("c1");
    let c2 = host.container("c2");
    let e1 = host.attach("lan", "c1", &c1).await.unwrap();
    let e2 = host.attach("lan", "c2", &c2).await.unwrap();
    assert!(c1.ping("10.77.0.100"), "a macvlan child reaches the LAN through the parent");
    assert!(c1.ping(&weft_tests::addr_of(&e2.addresses[0])), "children of one parent talk (bridge mode)");
    let routes = String::from_utf8_lossy(&c1.exec(&["ip", "route", "show", "default"]).stdout).into_owned();
    assert!(routes.contains("via 10.77.0.100"), "{routes}");
    let kind = String::from_utf8_lossy(&c1.exec(&["ip", "-d", "link", "show", "eth0"]).stdout).into_owned();
    assert!(kind.contains("macvlan mode bridge"), "{kind}");
    assert_eq!(host.host_links(), links_before, "no host-side link per endpoint");
    assert_eq!(
        e1.mac,
        format!(
            "02:42:0a:4d:00:{:02x}",
            weft_tests::addr_of(&e1.addresses[0]).rsplit('.').next().unwrap().parse::<u8>().unwrap()
        )
    );

    // Published ports need a bridge; a missing parent is refused.
    let c3 = host.container("c3");
    let bad = pb::AttachEndpointRequest {
        network: "lan".into(),
        name: "c3".into(),
        netns: c3.path(),
        publish: vec!["8080:80".into()],
        ..Default::default()
    };
    assert_eq!(host.endpoints().await.attach_endpoint(bad).await.unwrap_err().code(), Code::InvalidArgument);
    let mut missing = req.clone();
    missing.name = "lan2".into();
    missing.subnets[0].subnet = "10.78.0.0/24".into();
    missing.subnets[0].gateway = String::new();
    missing.options.insert("parent".into(), "nosuchif0".into());
    let e = host.networks().await.create_network(missing).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("nosuchif0"), "{}", e.message());

    detach(&host, "lan", "c1").await.unwrap();
    assert_eq!(c1.links(), ["lo"], "the macvlan child is gone");
    detach(&host, "lan", "c2").await.unwrap();
    host.networks()
        .await
        .delete_network(pb::DeleteNetworkRequest { name: "lan".into(), ..Default::default() })
        .await
        .unwrap();
    assert!(host.host_links().contains(&"wtpar0".to_string()), "the parent is the operator's and stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_modes_none_host_and_container() {
    let host = Host::new("modes");
    host.create_network("n1", &["10.76.0.0/24"]).await.unwrap();

    // none: only loopback, recorded without addresses.
    let iso = host.container("iso");
    let e = attach_mode(&host, "n1", "iso", &iso.path(), "none").await.unwrap();
    assert_eq!(e.mode, "none");
    assert!(e.addresses.is_empty());
    assert_eq!(iso.links(), ["lo"]);
    assert!(iso.ping("127.0.0.1"), "lo is up");

    // host: recorded, no interface, no namespace.
    let e = attach_mode(&host, "n1", "hostnet", "", "host").await.unwrap();
    assert_eq!(e.mode, "host");
    let bad = attach_mode(&host, "n1", "hostnet2", &iso.path(), "host").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // container:<endpoint>: shares the namespace and reports its addresses.
    let app = host.container("app");
    let main = host.attach("n1", "main", &app).await.unwrap();
    let side = attach_mode(&host, "n1", "sidecar", "", "container:main").await.unwrap();
    assert_eq!(side.addresses, main.addresses);
    assert_eq!(side.netns, app.path());
    assert_eq!(side.mode, "container:main");
    assert_eq!(attach_mode(&host, "n1", "x", "", "container:nosuch").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(attach_mode(&host, "n1", "x", "", "bogus").await.unwrap_err().code(), Code::InvalidArgument);

    // Detach order: the shared endpoint goes last.
    let e = detach(&host, "n1", "main").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("sidecar"), "{}", e.message());
    detach(&host, "n1", "sidecar").await.unwrap();
    assert!(app.links().contains(&"eth0".to_string()), "detaching the sharer leaves the interface");
    detach(&host, "n1", "main").await.unwrap();
    detach(&host, "n1", "iso").await.unwrap();
    detach(&host, "n1", "hostnet").await.unwrap();
    // The lease of `main` is free again and was never shared.
    let again = host.container("again");
    let req = pb::AttachEndpointRequest {
        network: "n1".into(),
        name: "again".into(),
        netns: again.path(),
        ips: vec![weft_tests::addr_of(&main.addresses[0])],
        ..Default::default()
    };
    host.endpoints().await.attach_endpoint(req).await.unwrap();
}
