//! The CNI plugin (`weft-cni`) run as a runtime runs it — one process per
//! verb, the `CNI_*` environment, the network configuration on stdin —
//! against a real weftd, with real namespaces and packets: ADD (creating
//! the network from the configuration's subnets, Kubernetes args as
//! labels, the capabilities), a repeated ADD answering the first result,
//! a conflicting one refused, results shaped per version, CHECK reporting
//! each difference, DEL (twice, and without a namespace), GC keeping only
//! the listed attachments, STATUS and VERSION, and CNI error codes for
//! bad input and an unreachable weftd.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use weft_grpc::pb;
use weft_tests::{Host, addr_of, bin_dir, tcp_connect, tcp_server};

/// One invocation: (exit status ok, what it printed as JSON or Null).
fn cni(host: &Host, command: &str, conf: &Value, env: &[(&str, &str)]) -> (bool, Value) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &host.ns.name])
        .arg(bin_dir().join("weft-cni"))
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/opt/cni/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    (out.status.success(), v)
}

fn conf(host: &Host, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "pods",
        "type": "weft",
        "socket": host.socket(),
        "subnets": ["10.77.0.0/24"],
    })
}

fn env<'a>(id: &'a str, ns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("CNI_CONTAINERID", id), ("CNI_NETNS", ns), ("CNI_IFNAME", "eth0")]
}

fn ok(r: (bool, Value)) -> Value {
    assert!(r.0, "the plugin failed: {}", r.1);
    r.1
}

fn err(r: (bool, Value), code: u64) -> Value {
    assert!(!r.0, "the plugin succeeded: {}", r.1);
    assert_eq!(r.1["code"], code, "{}", r.1);
    r.1
}

async fn endpoints(host: &Host) -> Vec<pb::Endpoint> {
    let req = pb::ListEndpointsRequest { network: "pods".into(), ..Default::default() };
    host.endpoints().await.list_endpoints(req).await.unwrap().into_inner().endpoints
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_check_del_with_real_namespaces() {
    let host = Host::new("cni");
    let (c1, c2) = (host.container("c1"), host.container("c2"));
    let c1_id = "a1".repeat(32);
    let conf1 = conf(&host, "1.0.0");

    // STATUS: without subnets the network must exist; with them ADD makes it.
    let bare = json!({"cniVersion": "1.1.0", "name": "pods", "type": "weft", "socket": host.socket()});
    let e = err(cni(&host, "STATUS", &bare, &[]), 50);
    assert!(e["msg"].as_str().unwrap().contains("not found"), "{e}");
    ok(cni(&host, "STATUS", &conf(&host, "1.1.0"), &[]));
    let v = ok(cni(&host, "VERSION", &json!({"cniVersion": "1.1.0"}), &[]));
    assert_eq!(v["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));

    // ADD creates the network, attaches with the pod's labels and name.
    let c1_path = c1.path();
    let mut e1 = env(&c1_id, &c1_path);
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=Web-0;K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=x";
    e1.push(("CNI_ARGS", args));
    let r1 = ok(cni(&host, "ADD", &conf1, &e1));
    assert_eq!(r1["cniVersion"], "1.0.0");
    let ip1 = r1["ips"][0]["address"].as_str().unwrap().to_owned();
    assert!(ip1.starts_with("10.77.0.") && ip1.ends_with("/24"), "{r1}");
    assert_eq!(r1["ips"][0]["gateway"], "10.77.0.1");
    assert!(r1["ips"][0].get("version").is_none(), "1.0.0 has no version per address: {r1}");
    assert_eq!(r1["interfaces"][r1["ips"][0]["interface"].as_u64().unwrap() as usize]["sandbox"], c1.path());
    assert_eq!(r1["routes"][0], json!({"dst": "0.0.0.0/0", "gw": "10.77.0.1"}));
    assert_eq!(r1["dns"]["nameservers"], json!(["10.77.0.1"]));
    let eps = endpoints(&host).await;
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].name, &c1_id[..12]);
    assert_eq!(eps[0].request_key, format!("cni/pods/{c1_id}/eth0"));
    assert_eq!(eps[0].labels.get("io.kubernetes.pod.namespace").map(String::as_str), Some("shop"));
    assert_eq!(eps[0].labels.get("io.kubernetes.pod.uid").map(String::as_str), Some("u-1"));
    assert_eq!(eps[0].aliases, vec!["web-0".to_owned()]);

    // A repeated ADD answers the first result; a conflicting one is refused.
    assert_eq!(ok(cni(&host, "ADD", &conf1, &e1)), r1);
    let moved = [("CNI_CONTAINERID", c1_id.as_str()), ("CNI_NETNS", &c2.path()), ("CNI_IFNAME", "eth0")];
    let e = err(cni(&host, "ADD", &conf1, &moved), 100);
    assert!(e["msg"].as_str().unwrap().contains("different netns"), "{e}");
    assert_eq!(endpoints(&host).await.len(), 1, "nothing changed");

    // The capabilities: a static address, MAC and published port (0.3.1 result).
    let mut conf2 = conf(&host, "0.3.1");
    conf2["runtimeConfig"] = json!({
        "ips": ["10.77.0.50/24"],
        "mac": "02:00:00:77:00:50",
        "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}],
        "aliases": {"pods": ["api"]},
        "dns": {"servers": ["192.0.2.53"], "searches": ["svc.local"], "options": ["ndots:2"]},
        "portNames": [{"name": "http", "containerPort": 80}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}],
    });
    let r2 = ok(cni(&host, "ADD", &conf2, &env("c2", &c2.path())));
    let named = endpoints(&host).await.into_iter().find(|e| e.mac == "02:00:00:77:00:50").unwrap().port_names;
    assert_eq!(named, ["http=80/tcp", "dns=53/udp"], "weft's portNames capability");
    assert_eq!(r2["ips"][0]["address"], "10.77.0.50/24");
    assert_eq!(r2["ips"][0]["version"], "4");
    assert_eq!(r2["interfaces"][2]["mac"], "02:00:00:77:00:50");
    assert_eq!(r2["dns"]["nameservers"], json!(["10.77.0.1", "192.0.2.53"]));
    assert_eq!(r2["dns"]["options"], json!(["ndots:2"]));
    // Real packets: by address, by the pod's and podman's names, and the port from the host.
    assert!(c1.ping("10.77.0.50"), "c1 reaches c2");
    assert!(c2.ping(&addr_of(&ip1)), "c2 reaches c1");
    for name in ["api", "web-0"] {
        let dig = c1.exec(&["dig", "+short", "+time=2", "+tries=2", "@10.77.0.1", name]);
        let answer = String::from_utf8_lossy(&dig.stdout).trim().to_owned();
        let want = if name == "api" { "10.77.0.50".to_owned() } else { addr_of(&ip1) };
        assert_eq!(answer, want, "{name}");
    }
    let server = tcp_server(&c2.name, "0.0.0.0:80");
    assert_eq!(tcp_connect(&host.ns.name, "127.0.0.1:18080").unwrap(), "hello");
    server.join().unwrap();

    // CHECK: fine as made; then every difference is reported.
    let mut checked = conf1.clone();
    checked["prevResult"] = r1.clone();
    assert_eq!(ok(cni(&host, "CHECK", &checked, &e1)), Value::Null);
    let mut wrong = checked.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("10.77.0.99/24");
    let e = err(cni(&host, "CHECK", &wrong, &e1), 101);
    assert!(e["details"].as_str().unwrap().contains("10.77.0.99/24"), "{e}");
    c1.exec(&["ip", "addr", "del", &ip1, "dev", "eth0"]);
    c1.exec(&["ip", "link", "set", "eth0", "down"]);
    let e = err(cni(&host, "CHECK", &checked, &e1), 101);
    let details = e["details"].as_str().unwrap();
    assert!(details.contains("is down") && details.contains(&format!("lacks address {ip1}")), "{e}");
    assert!(details.contains("no default route 0.0.0.0/0"), "{e}");
    let e = err(cni(&host, "CHECK", &json!({"cniVersion": "0.3.1", "name": "pods", "type": "weft"}), &e1), 1);
    assert!(e["msg"].as_str().unwrap().contains("CHECK needs cniVersion 0.4.0"), "{e}");

    // DEL, and DEL again; DEL of c2 once its namespace is gone (no CNI_NETNS).
    let host_ifname = eps[0].host_ifname.clone();
    assert_eq!(ok(cni(&host, "DEL", &conf1, &e1)), Value::Null);
    host.retired_deleted();
    assert!(!host.host_links().contains(&host_ifname), "host veth gone");
    ok(cni(&host, "DEL", &conf1, &e1));
    let c2_host = endpoints(&host).await[0].host_ifname.clone();
    drop(c2);
    ok(cni(&host, "DEL", &conf2, &[("CNI_CONTAINERID", "c2"), ("CNI_NETNS", ""), ("CNI_IFNAME", "eth0")]));
    assert!(endpoints(&host).await.is_empty());
    host.retired_deleted();
    assert!(!host.host_links().contains(&c2_host));
    // The address was released: a new attach may have it.
    let c3 = host.container("c3");
    let r3 = ok(cni(&host, "ADD", &conf2, &env("c3", &c3.path())));
    assert_eq!(r3["ips"][0]["address"], "10.77.0.50/24");
    ok(cni(&host, "DEL", &conf2, &env("c3", &c3.path())));
    // A DEL on a network that is gone succeeds too.
    let mut elsewhere = conf1.clone();
    elsewhere["network"] = json!("never-made");
    ok(cni(&host, "DEL", &elsewhere, &e1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_only_unlisted_cni_attachments() {
    let host = Host::new("cnigc");
    let (a, b, m) = (host.container("a"), host.container("b"), host.container("m"));
    let conf = conf(&host, "1.1.0");
    ok(cni(&host, "ADD", &conf, &env("ca", &a.path())));
    ok(cni(&host, "ADD", &conf, &env("cb", &b.path())));
    host.attach("pods", "manual", &m).await.unwrap();
    // Another configuration's attachment on the same weft network.
    let mut other = conf.clone();
    other["name"] = json!("other");
    other["network"] = json!("pods");
    let o = host.container("o");
    ok(cni(&host, "ADD", &other, &env("co", &o.path())));
    let names = |eps: Vec<pb::Endpoint>| {
        let mut v: Vec<String> = eps.into_iter().map(|e| e.name).collect();
        v.sort();
        v
    };
    assert_eq!(names(endpoints(&host).await), ["ca", "cb", "co", "manual"]);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ca", "ifname": "eth0"}]);
    ok(cni(&host, "GC", &gc, &[]));
    assert_eq!(names(endpoints(&host).await), ["ca", "co", "manual"], "only cb was stale");
    assert!(a.ping("10.77.0.1"), "a kept working");
    // The legacy key, and an empty list.
    let mut legacy = conf.clone();
    legacy["cni.dev/attachments"] = json!([]);
    ok(cni(&host, "GC", &legacy, &[]));
    assert_eq!(names(endpoints(&host).await), ["co", "manual"]);
    // No list at all: nothing is known stale, nothing is removed.
    ok(cni(&host, "GC", &other, &[]));
    assert_eq!(names(endpoints(&host).await), ["co", "manual"]);
    let e = err(cni(&host, "GC", &json!({"cniVersion": "1.0.0", "name": "pods", "type": "weft"}), &[]), 1);
    assert!(e["msg"].as_str().unwrap().contains("GC needs cniVersion 1.1.0"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_an_unreachable_weftd_are_cni_errors() {
    let host = Host::new("cnibad");
    let c = host.container("c");
    let conf = conf(&host, "1.0.0");
    let c_path = c.path();
    let good = env("c1", &c_path);
    for (what, conf, env, code) in [
        ("no netns", conf.clone(), vec![("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")], 4),
        ("bad args", conf.clone(), [good.clone(), vec![("CNI_ARGS", "FOO=1")]].concat(), 4),
        ("bad id", conf.clone(), env("c 1", &c.path()), 4),
        ("old version", json!({"cniVersion": "0.2.0", "name": "pods", "type": "weft"}), good.clone(), 1),
        ("wrong type", json!({"cniVersion": "1.0.0", "name": "pods", "type": "bridge"}), good.clone(), 7),
        ("ipam", json!({"cniVersion": "1.0.0", "name": "p", "type": "weft", "ipam": {}}), good.clone(), 2),
        (
            "bad ip",
            json!({"cniVersion": "1.0.0", "name": "pods", "type": "weft", "socket": host.socket(),
            "subnets": ["10.77.0.0/24"], "runtimeConfig": {"ips": ["10.78.0.5/24"]}}),
            good.clone(),
            100,
        ),
    ] {
        let e = err(cni(&host, "ADD", &conf, &env), code);
        assert!(!e["msg"].as_str().unwrap().is_empty(), "{what}: {e}");
    }
    let (ok_, out) = cni(&host, "ADD", &json!("not an object"), &good);
    assert!(!ok_ && out["code"] == 6, "{out}");
    assert!(endpoints(&host).await.is_empty(), "nothing was attached");
    let e = err(cni(&host, "NOPE", &conf, &good), 4);
    assert!(e["msg"].as_str().unwrap().contains("NOPE"), "{e}");

    let mut away = conf.clone();
    away["socket"] = json!(host.dir.join("nobody.sock"));
    let e = err(cni(&host, "ADD", &away, &good), 11);
    assert!(e["msg"].as_str().unwrap().contains("cannot reach weftd"), "{e}");
    err(cni(&host, "DEL", &away, &good), 11);
    let mut status = away.clone();
    status["cniVersion"] = json!("1.1.0");
    err(cni(&host, "STATUS", &status, &[]), 50);
}
