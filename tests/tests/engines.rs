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

use weft_grpc::pb;
use weft_tests::engines::{Containerd, Podman};
use weft_tests::{Host, ORCHESTRATORS, Server, addr_of, block_after, documented_conflist, http_get, probe_tcp};

async fn endpoints(host: &Host, network: &str) -> Vec<pb::Endpoint> {
    let req = pb::ListEndpointsRequest { network: network.into(), ..Default::default() };
    let mut v = host.endpoints().await.list_endpoints(req).await.unwrap().into_inner().endpoints;
    v.sort_by(|a, b| a.labels.get("io.kubernetes.pod.name").cmp(&b.labels.get("io.kubernetes.pod.name")));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_containers_on_a_weft_network() {
    let host = Host::new("podman");
    let conflist = documented_conflist("(podman conflist)", &host.socket());
    let podman = Podman::new(&host, &conflist);
    let rootfs = podman.rootfs();
    let cgroup_parent = format!("--cgroup-parent={}", podman.cgroups.0);
    let run = |name: &str, extra: &[&str], cmd: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name, "--network", "weftnet", &cgroup_parent];
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
    host.retired_deleted();
    let links = host.host_links();
    assert!(veths.iter().all(|v| !links.contains(v)), "{links:?}");
    assert!(netns.iter().all(|n| !Path::new(n).exists()), "{netns:?}");
    assert!(http_get(&host.ns.name, "127.0.0.1:8080").is_err(), "the port is no longer published");
}

async fn apply(host: &Host, network: &str, docs: &str) {
    let req = pb::ApplyPoliciesRequest { network: network.into(), documents: docs.into(), ..Default::default() };
    host.policies().await.apply_policies(req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_cri_pods_on_a_weft_network() {
    use k8s_cri::v1 as cri;
    let host = Host::new("cri");
    // The network as docs/orchestrators.md makes it.
    let create = block_after(ORCHESTRATORS, "The pods' network", "sh");
    let args: Vec<&str> = create.split_whitespace().skip(1).collect();
    let out = host.cli(&args);
    assert!(out.status.success(), "{create}: {}", String::from_utf8_lossy(&out.stderr));
    apply(&host, "", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: shop}}\n").await;
    let conflist = documented_conflist("(containerd conflist)", &host.socket());
    let containerd = Containerd::start(&host, &conflist);
    let mut c = containerd.cri().await;
    let v = c.version(cri::VersionRequest::default()).await.unwrap().into_inner();
    assert_eq!(v.runtime_name, "containerd");

    let mut pods = Vec::new();
    for name in ["a", "b"] {
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "shop".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: containerd.dir.0.join("logs").display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: containerd.cgroups.0.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = cri::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
        let id = c.run_pod_sandbox(req).await.unwrap_or_else(|e| panic!("{e}\n{}", containerd.log())).into_inner();
        pods.push(id.pod_sandbox_id);
    }
    let eps = endpoints(&host, "pods").await;
    assert_eq!(eps.len(), 2, "{eps:?}");
    for (ep, name) in eps.iter().zip(["a", "b"]) {
        assert_eq!(ep.labels.get("io.kubernetes.pod.namespace").map(String::as_str), Some("shop"));
        assert_eq!(ep.labels.get("io.kubernetes.pod.name").map(String::as_str), Some(name));
        assert!(ep.addresses[0].starts_with("10.67.0."), "{ep:?}");
        let status = c
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pods[eps.iter().position(|e| e == ep).unwrap()].clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        let ip = status.status.unwrap().network.unwrap().ip;
        assert_eq!(ip, addr_of(&ep.addresses[0]), "the CRI reports weft's address");
    }
    let ns_of = |ep: &pb::Endpoint| ep.netns.rsplit('/').next().unwrap().to_owned();
    let (a, b) = (&eps[0], &eps[1]);
    let a_addr: std::net::SocketAddr = format!("{}:80", addr_of(&a.addresses[0])).parse().unwrap();
    let _server = Server::start(&ns_of(a), &a_addr.to_string());
    let probe = || probe_tcp(&ns_of(b), a_addr, std::time::Duration::from_secs(1)).join().unwrap();
    assert!(probe(), "b reaches a");

    // A NetworkPolicy applied through weft: deny all ingress, then allow the namespace.
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\n\
                spec: {podSelector: {}, policyTypes: [Ingress]}\n";
    apply(&host, "pods", deny).await;
    assert!(!probe(), "denied");
    let allow = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow, namespace: shop}\n\
                 spec: {podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}\n";
    apply(&host, "pods", allow).await;
    assert!(probe(), "allowed again");

    // Stop and remove: nothing is left, and the second DEL had no namespace.
    let netns: Vec<String> = eps.iter().map(|e| e.netns.clone()).collect();
    for id in &pods {
        c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await.unwrap();
    }
    assert!(endpoints(&host, "pods").await.is_empty());
    host.retired_deleted();
    let links = host.host_links();
    assert!(eps.iter().all(|e| !links.contains(&e.host_ifname)), "{links:?}");
    assert!(netns.iter().all(|n| !Path::new(n).exists()), "{netns:?}");
    let calls = containerd.cni_calls();
    let dels: Vec<&(String, String)> = calls.iter().filter(|(c, _)| c == "DEL").collect();
    assert!(dels.len() >= 4, "two DELs per pod: {calls:?}");
    assert!(dels.iter().any(|(_, ns)| ns.is_empty()), "one without a namespace: {calls:?}");
}
