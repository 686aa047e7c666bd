//! Components in other languages against the same WIT: the Python naming
//! example (componentize-py) and the JavaScript IPAM example
//! (componentize-js) from `policies/examples/`, uploaded by a tenant, bound
//! to one network with a module configuration, and checked with real
//! traffic: the addresses the JavaScript code chose carry pings, and the
//! names the Python code chose answer DNS queries.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use weft_grpc::pb;
use weft_tests::{Host, Netns, component};

fn dig_short(ns: &Netns, args: &[&str]) -> Vec<String> {
    let mut all = vec!["dig", "+time=3", "+tries=2", "+short"];
    all.extend_from_slice(args);
    let mut v: Vec<String> = String::from_utf8_lossy(&ns.exec(&all).stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.starts_with(";;"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_naming_and_javascript_ipam_run_in_weft() {
    let host = Host::new("poly");
    let py = host.upload("t", "py-names", "naming", &component("naming-python")).await.unwrap();
    let js = host.upload("t", "js-top", "ipam", &component("ipam-js")).await.unwrap();
    // No WASI: they import only their worlds.
    for m in [&py, &js] {
        assert!(m.imports.iter().all(|i| i.starts_with("weft:")), "{} imports {:?}", m.name, m.imports);
    }
    let req = pb::CreateNetworkRequest {
        tenant: "t".into(),
        name: "poly".into(),
        subnets: vec![pb::Subnet { subnet: "10.101.0.0/24".into(), ..Default::default() }],
        ipam: "js-top".into(),
        naming: "py-names".into(),
        module_config: [("domain".to_string(), "corp.test".to_string()), ("reserve-top".into(), "2".into())]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    host.networks().await.create_network(req).await.unwrap();
    let c1 = host.container("c1");
    let c2 = host.container("c2");
    let attach = |name: &str, ns: &Netns, labels: &[(&str, &str)]| pb::AttachEndpointRequest {
        tenant: "t".into(),
        network: "poly".into(),
        name: name.into(),
        netns: ns.path(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let e1 = host.endpoints().await.attach_endpoint(attach("api", &c1, &[("role", "web")])).await.unwrap().into_inner();
    let e2 = host.endpoints().await.attach_endpoint(attach("db", &c2, &[])).await.unwrap().into_inner();
    // Top down, keeping the two highest addresses free (.254, .253).
    assert_eq!(e1.addresses, ["10.101.0.252/24"]);
    assert_eq!(e2.addresses, ["10.101.0.251/24"]);
    assert!(c2.ping("10.101.0.252") && c1.ping("10.101.0.251"));
    // A static request is checked by the JavaScript code too.
    let mut taken = attach("dup", &c2, &[]);
    taken.ips = vec!["10.101.0.252".into()];
    taken.ifname = "eth1".into();
    let e = host.endpoints().await.attach_endpoint(taken).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("already leased"), "{}", e.message());

    let at = "@10.101.0.1";
    assert_eq!(dig_short(&c2, &[at, "api.corp.test"]), ["10.101.0.252"]);
    assert_eq!(dig_short(&c2, &[at, "api"]), ["10.101.0.252"]);
    assert_eq!(dig_short(&c2, &[at, "web.corp.test"]), ["10.101.0.252"], "the role label's name");
    assert_eq!(dig_short(&c1, &[at, "db.corp.test"]), ["10.101.0.251"]);
    assert_eq!(dig_short(&c1, &[at, "-x", "10.101.0.251"]), ["db.corp.test."]);
}

/// `weft module test` runs a component offline (no weftd) under the same
/// sandbox and checks, for each kind.
#[test]
fn module_test_runs_components_offline() {
    let run = |args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(weft_tests::bin_dir().join("weft")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let dir = std::env::temp_dir().join(format!("weft-module-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str| {
        let p = dir.join(format!("{name}.wasm"));
        std::fs::write(&p, component(name)).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let js = file("ipam-js");
    let v = run(&["module", "test", &js, "--kind", "ipam", "--subnet", "10.5.0.0/29", "--count", "2"]);
    let got: Vec<&str> =
        v["result"]["allocations"].as_array().unwrap().iter().map(|a| a["address"].as_str().unwrap()).collect();
    assert_eq!(got, ["10.5.0.6", "10.5.0.5"]);
    let py = file("naming-python");
    let v = run(&["module", "test", &py, "--kind", "naming", "--endpoint", "web", "--address", "10.0.0.2"]);
    let names: Vec<&str> =
        v["result"]["records"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web", "web.test.internal", "web.test.internal"]);
    let k8s = file("policy-k8s");
    let docs = dir.join("np.yaml");
    std::fs::write(
        &docs,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: shop}\n\
         spec: {podSelector: {matchLabels: {app: db}}}\n",
    )
    .unwrap();
    let v = run(&[
        "module",
        "test",
        &k8s,
        "--kind",
        "policy",
        "-f",
        docs.to_str().unwrap(),
        "--endpoint",
        "db:app=db,io.kubernetes.pod.namespace=shop",
    ]);
    assert_eq!(v["result"]["classified"][0]["groups"], serde_json::json!(["shop/db"]));
    assert_eq!(v["result"]["rules"]["isolated"][0]["source"], "NetworkPolicy shop/db");
    // A component that would be refused at upload is refused here too.
    let wasi = file("ipam-wasi");
    let out = std::process::Command::new(weft_tests::bin_dir().join("weft"))
        .args(["module", "test", &wasi, "--kind", "ipam"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("imports wasi:"));
    let _ = std::fs::remove_dir_all(&dir);
}
