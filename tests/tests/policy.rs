//! The policy path end to end: the default policy component
//! (policy-isolation) compiled per network, one classify per attach, and
//! the kernel enforcing it: `icc=false` stops traffic between endpoints of a
//! network while replies, egress and published ports still pass.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use tonic::Code;
use weft_grpc::pb;
use weft_tests::{Host, Server, tcp_connect};

fn create(name: &str, subnet: &str, opts: &[(&str, &str)], policy: &str) -> pb::CreateNetworkRequest {
    pb::CreateNetworkRequest {
        name: name.into(),
        subnets: vec![pb::Subnet { subnet: subnet.into(), ..Default::default() }],
        options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
        policy: policy.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icc_false_isolates_endpoints_of_a_network() {
    let host = Host::new("icc");
    let out = host.outside(5);
    let net =
        host.networks().await.create_network(create("quiet", "10.75.0.0/24", &[("icc", "false")], "")).await.unwrap();
    assert_eq!(net.into_inner().policy, "policy-isolation");
    let c1 = host.container("c1");
    let c2 = host.container("c2");
    let req = pb::AttachEndpointRequest {
        network: "quiet".into(),
        name: "c1".into(),
        netns: c1.path(),
        publish: vec!["8080:80".into()],
        ..Default::default()
    };
    let e1 = host.endpoints().await.attach_endpoint(req).await.unwrap().into_inner();
    assert_eq!(e1.groups, ["all"], "classified by the policy component");
    host.attach("quiet", "c2", &c2).await.unwrap();
    let _srv = Server::start(&c1.name, "[::]:80");

    assert!(tcp_connect(&c2.name, "10.75.0.2:80").is_err(), "icc=false: no traffic between endpoints");
    assert!(!c2.ping("10.75.0.2"));
    assert_eq!(tcp_connect(&c2.name, "198.18.5.1:8080").unwrap(), "hello", "published ports still pass");
    assert_eq!(tcp_connect(&out.name, "198.18.5.1:8080").unwrap(), "hello");
    let _outside = Server::start(&out.name, "198.18.5.2:9000");
    assert_eq!(tcp_connect(&c1.name, "198.18.5.2:9000").unwrap(), "hello", "egress is not isolated");

    // The default network of the same host is not affected.
    host.create_network("chatty", &["10.74.0.0/24"]).await.unwrap();
    let d1 = host.container("d1");
    let d2 = host.container("d2");
    host.attach("chatty", "d1", &d1).await.unwrap();
    host.attach("chatty", "d2", &d2).await.unwrap();
    assert!(d2.ping("10.74.0.2"), "icc=true by default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_binding_errors_change_nothing() {
    let host = Host::new("polerr");
    let mut nets = host.networks().await;
    let e = nets.create_network(create("a", "10.73.0.0/24", &[("icc", "maybe")], "")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("policy: option icc=\"maybe\""), "{}", e.message());
    let e = nets.create_network(create("a", "10.73.0.0/24", &[], "no-such-policy")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(nets.list_networks(pb::ListNetworksRequest::default()).await.unwrap().into_inner().networks.is_empty());
    assert!(!host.nft_tables().contains("weft"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_are_isolated_over_ipv6_too() {
    let host = Host::new("iso6");
    host.create_network("a", &["10.71.0.0/24", "fd00:71::/64"]).await.unwrap();
    host.create_network("b", &["10.70.0.0/24", "fd00:70::/64"]).await.unwrap();
    let a1 = host.container("a1");
    let a2 = host.container("a2");
    let b1 = host.container("b1");
    host.attach("a", "a1", &a1).await.unwrap();
    host.attach("a", "a2", &a2).await.unwrap();
    host.attach("b", "b1", &b1).await.unwrap();
    assert!(a2.ping("fd00:71::2"), "IPv6 within a network");
    assert!(!b1.ping("fd00:71::2"), "b -> a over IPv6 is blocked");
    assert!(!a1.ping("fd00:70::2"), "a -> b over IPv6 is blocked");
    let _srv = Server::start(&a1.name, "[::]:80");
    assert!(tcp_connect(&b1.name, "[fd00:71::2]:80").is_err());
    assert_eq!(tcp_connect(&a2.name, "[fd00:71::2]:80").unwrap(), "hello");
}
