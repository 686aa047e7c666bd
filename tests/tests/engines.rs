//! Real container engines on weft through its CNI plugin: podman 4.3 (CNI
//! backend) runs containers that reach each other by address and by name
//! through weft's DNS, publishes a port the host answers on, and leaves
//! nothing behind when the containers are removed; containerd 1.6's CRI
//! plugin runs pods that get weft addresses and reach each other, a
//! NetworkPolicy applied through weft denies and then allows them, and
//! stopping and removing the pods (two DELs, the second without a
//! namespace) leaves nothing behind.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::json;
use weft_grpc::pb;
use weft_tests::engines::Podman;
use weft_tests::{Host, addr_of, http_get};

async fn endpoints(host: &Host, network: &str) -> Vec<pb::Endpoint> {
    let req = pb::ListEndpointsRequest { network: network.into(), ..Default::default() };
    let mut v = host.endpoints().await.list_endpoints(req).await.unwrap().into_inner().endpoints;
    v.sort_by(|a, b| a.labels.get("io.kubernetes.pod.name").cmp(&b.labels.get("io.kubernetes.pod.name")));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_containers_on_a_weft_network() {
    let host = Host::new("podman");
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "weftnet",
        "plugins": [{
            "type": "weft",
            "socket": host.socket(),
            "subnets": ["10.66.0.0/24"],
            "capabilities": {"portMappings": true, "ips": true, "mac": true, "dns": true, "aliases": true},
        }],
    });
    let podman = Podman::new(&host, &conflist);
    let rootfs = podman.rootfs();
    let run = |name: &str, extra: &[&str], cmd: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name, "--network", "weftnet"];
        args.extend_from_slice(extra);
        args.extend(["--rootfs", &rootfs]);
        args.extend_from_slice(cmd);
        podman.ok(&args)
    };
    run("web", &["-p", "8080:80"], &["httpd", "-f", "-p", "80", "-h", "/www"]);
    run("client", &[], &["sleep", "600"]);

    let eps = endpoints(&host, "weftnet").await;
    assert_eq!(eps.len(), 2, "{eps:?}");
    let (client, web) = (&eps[0], &eps[1]);
    assert_eq!(client.labels.get("io.kubernetes.pod.name").map(String::as_str), Some("client"));
    assert_eq!(web.labels.get("io.kubernetes.pod.name").map(String::as_str), Some("web"));
    assert!(web.aliases.contains(&"web".to_owned()), "{:?}", web.aliases);
    assert_eq!(web.publish, ["8080:80/tcp"]);
    assert!(web.request_key.starts_with("cni/weftnet/"), "{}", web.request_key);
    let web_ip = addr_of(&web.addresses[0]);

    // By address and by name (weft's DNS, which podman wrote into resolv.conf).
    podman.ok(&["exec", "client", "ping", "-c", "1", "-W", "2", &web_ip]);
    let resolv = podman.ok(&["exec", "client", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.66.0.1"), "{resolv}");
    let page = podman.eventually(&["exec", "client", "wget", "-q", "-O", "-", "http://web/"]);
    assert_eq!(page, "hello from weft");
    // The published port, from the host.
    let answer = http_get(&host.ns.name, "127.0.0.1:8080").unwrap();
    assert!(answer.contains("hello from weft"), "{answer}");

    // podman rm: nothing left in weft, on the host or in /run/netns.
    let netns: Vec<String> = eps.iter().map(|e| e.netns.clone()).collect();
    let veths: Vec<String> = eps.iter().map(|e| e.host_ifname.clone()).collect();
    podman.ok(&["rm", "--force", "--time", "0", "web", "client"]);
    assert!(endpoints(&host, "weftnet").await.is_empty());
    let links = host.host_links();
    assert!(veths.iter().all(|v| !links.contains(v)), "{links:?}");
    assert!(netns.iter().all(|n| !Path::new(n).exists()), "{netns:?}");
    assert!(http_get(&host.ns.name, "127.0.0.1:8080").is_err(), "the port is no longer published");
}
