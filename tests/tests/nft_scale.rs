//! The kernel's view of weft's nftables table as endpoints grow: the
//! rendered table for N endpoints with one published port each is loaded
//! into a real nftables in a throwaway namespace, and the rules and map
//! elements are counted from `nft -j list table`. Rules must not grow.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use weft_model::Mac;
use weft_model::endpoint::{AttachEndpoint, Endpoint, EndpointState};
use weft_model::network::{CreateNetwork, Network, SubnetRequest};
use weft_plan::nft::render_ruleset;
use weft_tests::Netns;

fn network() -> Network {
    let req = CreateNetwork {
        name: "scale".into(),
        subnets: vec![SubnetRequest { subnet: "10.64.0.0/16".into(), ..Default::default() }],
        ..Default::default()
    };
    Network::new("5ca1e".repeat(7), req.validate().unwrap()).unwrap()
}

fn endpoint(net: &Network, i: usize) -> Endpoint {
    let id = format!("{i:032x}");
    let addr = format!("10.64.{}.{}/16", (i + 2) / 256, (i + 2) % 256);
    Endpoint {
        host_ifname: Endpoint::host_ifname_for(&id).unwrap(),
        netns_id: 0,
        network_id: net.id.clone(),
        spec: AttachEndpoint {
            network: "scale".into(),
            name: format!("e{i}"),
            netns: "/var/run/netns/x".into(),
            publish: vec![format!("{}:80", 20000 + i)],
            ..Default::default()
        }
        .validate()
        .unwrap(),
        id,
        mac: Mac([2, 0x42, 0, 0, 0, 1]),
        addresses: vec![addr.parse().unwrap()],
        state: EndpointState::Ready,
        groups: vec![],
        node: None,
    }
}

/// (rules, map/set elements) of `inet weft` in namespace `ns`.
fn counts(ns: &Netns) -> (usize, usize) {
    let out = ns.exec(&["nft", "-j", "list", "table", "inet", "weft"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v["nftables"].as_array().unwrap();
    let rules = items.iter().filter(|i| i.get("rule").is_some()).count();
    let elems = items
        .iter()
        .filter_map(|i| i.get("map").or_else(|| i.get("set")))
        .map(|m| m["elem"].as_array().map_or(0, Vec::len))
        .sum();
    (rules, elems)
}

#[test]
fn rule_count_is_flat_in_the_kernel() {
    let net = network();
    let mut seen = Vec::new();
    for n in [1usize, 100, 1000] {
        let ns = Netns::new("nftscale", &n.to_string());
        let eps: Vec<Endpoint> = (0..n).map(|i| endpoint(&net, i)).collect();
        let policy = weft_model::policy::RuleSet::default();
        let script = render_ruleset(&[(&net, &policy)], eps.iter());
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
        let (rules, elems) = counts(&ns);
        println!("endpoints={n} rules={rules} elements={elems}");
        seen.push((n, rules, elems));
    }
    assert!(seen.iter().all(|(_, r, _)| *r == seen[0].1), "rule count grew: {seen:?}");
    // Elements: the fixed sets (bridge, intra pair, subnet) plus one per port.
    let fixed = seen[0].2 - 1;
    assert!(seen.iter().all(|(n, _, e)| *e == fixed + n), "{seen:?}");
}
