//! Kubernetes NetworkPolicy, end to end: the `policy-k8s` component bound to
//! a network, documents applied through the API, and the **kernel**
//! deciding. The model is upstream's e2e reachability matrix: namespaces
//! x, y, z with pods a, b, c each, every pod serving TCP and UDP on ports 80
//! and 81. For each case the test probes every pod pair on every port and
//! protocol with real connections and compares with the verdict the case
//! expects (written by hand from the API's rules, not computed by weft), and
//! also asks `CheckPolicy` for every probe: the explanation must agree with
//! the packets.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tonic::Code;
use weft_grpc::pb;
use weft_tests::{Host, Netns, Server, addr_of, in_ns, probe_tcp, probe_udp};

const NET: &str = "cluster";
const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PORTS: [u16; 2] = [80, 81];
/// The pod that declares no named ports (every other pod declares
/// `serve-80-tcp` ... `serve-81-udp`, as upstream's pods do).
const UNNAMED: &str = "z/c";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

struct Pod {
    ns: &'static str,
    name: &'static str,
    netns: Netns,
    addr: String,
    _servers: Vec<Server>,
}

impl Pod {
    fn is(&self, id: &str) -> bool {
        id == format!("{}/{}", self.ns, self.name)
    }
    fn endpoint(&self) -> String {
        format!("{}-{}", self.ns, self.name)
    }
}

struct Cluster {
    host: Host,
    pods: Vec<Pod>,
}

fn namespaces_yaml(extra_z: &str) -> String {
    NAMESPACES
        .iter()
        .map(|n| {
            let extra = match *n {
                "y" => ", env: prod",
                "z" => extra_z,
                _ => "",
            };
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}, labels: {{ns: {n}{extra}}}}}\n")
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A NetworkPolicy document with `spec` given as JSON (valid YAML).
fn np(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

async fn apply(host: &Host, network: &str, text: &str) -> Result<pb::ApplyPoliciesResponse, tonic::Status> {
    let req = pb::ApplyPoliciesRequest { network: network.into(), documents: text.into(), ..Default::default() };
    host.policies().await.apply_policies(req).await.map(|r| r.into_inner())
}

async fn delete(host: &Host, text: &str) {
    let req = pb::DeletePoliciesRequest { documents: text.into(), ..Default::default() };
    host.policies().await.delete_policies(req).await.unwrap();
}

/// A network bound to policy-k8s with the nine pods attached and serving.
async fn cluster(tag: &str, pods: &[(&'static str, &'static str)]) -> Cluster {
    let host = Host::new(tag);
    let req = pb::CreateNetworkRequest {
        name: NET.into(),
        subnets: vec![pb::Subnet { subnet: "10.91.0.0/24".into(), ..Default::default() }],
        policy: "policy-k8s".into(),
        ..Default::default()
    };
    host.networks().await.create_network(req).await.unwrap();
    apply(&host, "", &namespaces_yaml("")).await.unwrap();
    let mut out = Vec::new();
    for (ns, name) in pods {
        let netns = host.container(&format!("{ns}{name}"));
        let port_names = if format!("{ns}/{name}") == UNNAMED {
            Vec::new()
        } else {
            PORTS.iter().flat_map(|p| ["tcp", "udp"].map(|proto| format!("serve-{p}-{proto}={p}/{proto}"))).collect()
        };
        let req = pb::AttachEndpointRequest {
            network: NET.into(),
            name: format!("{ns}-{name}"),
            netns: netns.path(),
            labels: [("pod".to_string(), name.to_string()), ("io.kubernetes.pod.namespace".into(), ns.to_string())]
                .into_iter()
                .collect(),
            port_names,
            ..Default::default()
        };
        let ep = host.endpoints().await.attach_endpoint(req).await.unwrap().into_inner();
        let servers = PORTS.iter().map(|p| Server::start(&netns.name, &format!("[::]:{p}"))).collect();
        out.push(Pod { ns, name, netns, addr: addr_of(&ep.addresses[0]), _servers: servers });
    }
    Cluster { host, pods: out }
}

fn all_pods() -> Vec<(&'static str, &'static str)> {
    NAMESPACES.iter().flat_map(|n| PODS.iter().map(move |p| (*n, *p))).collect()
}

type Expect = dyn Fn(&Pod, &Pod, u16, Proto) -> bool;

/// Every probe of the matrix: (from, to, port, protocol).
fn matrix(c: &Cluster) -> Vec<(usize, usize, u16, Proto)> {
    let n = c.pods.len();
    let mut v = Vec::new();
    for f in 0..n {
        for t in (0..n).filter(|t| *t != f) {
            for port in PORTS {
                for proto in [Proto::Tcp, Proto::Udp] {
                    v.push((f, t, port, proto));
                }
            }
        }
    }
    v
}

/// Probe the matrix with real packets, all at once; the blocked probes are
/// tried again (again all at once) with a longer wait, so only a flow the
/// kernel really drops counts as blocked.
fn reachability(c: &Cluster, probes: &[(usize, usize, u16, Proto)]) -> Vec<bool> {
    let run = |i: &(usize, usize, u16, Proto), wait: Duration| {
        let (f, t, port, proto) = *i;
        let to: SocketAddr = format!("{}:{port}", c.pods[t].addr).parse().unwrap();
        match proto {
            Proto::Tcp => probe_tcp(&c.pods[f].netns.name, to, wait),
            Proto::Udp => probe_udp(&c.pods[f].netns.name, to, wait),
        }
    };
    let first: Vec<_> = probes.iter().map(|p| run(p, Duration::from_millis(800))).collect();
    let mut got: Vec<bool> = first.into_iter().map(|h| h.join().unwrap()).collect();
    let again: Vec<(usize, _)> =
        (0..probes.len()).filter(|i| !got[*i]).map(|i| (i, run(&probes[i], Duration::from_millis(1500)))).collect();
    for (i, h) in again {
        got[i] = h.join().unwrap();
    }
    got
}

/// Probe, explain and compare with `expect`; every mismatch is recorded.
async fn check(c: &Cluster, case: &str, expect: &Expect, failures: &mut Vec<String>) {
    let probes = matrix(c);
    let got = reachability(c, &probes);
    let mut client = c.host.policies().await;
    let mut allowed = 0;
    for (i, (f, t, port, proto)) in probes.iter().enumerate() {
        let (from, to) = (&c.pods[*f], &c.pods[*t]);
        let want = expect(from, to, *port, *proto);
        let what = format!("{}/{} -> {}/{} {port}/{}", from.ns, from.name, to.ns, to.name, proto.as_str());
        if got[i] != want {
            failures.push(format!("{case}: {what}: expected {}, packets {}", verdict(want), verdict(got[i])));
        }
        let req = pb::CheckPolicyRequest {
            network: NET.into(),
            from: from.endpoint(),
            to: to.endpoint(),
            port: format!("{port}/{}", proto.as_str()),
            ..Default::default()
        };
        let r = client.check_policy(req).await.unwrap().into_inner();
        if r.allowed != want {
            failures.push(format!("{case}: {what}: expected {}, explained {}", verdict(want), verdict(r.allowed)));
        }
        allowed += usize::from(want);
    }
    eprintln!("{case}: {} probes, {allowed} expected allowed", probes.len());
}

fn to_xa(t: &Pod) -> bool {
    t.is("x/a")
}

/// Whether `port`/`proto` is the named port `want` on `t` (which declares
/// it unless it is the unnamed pod).
fn named(t: &Pod, port: u16, proto: Proto, want: (u16, Proto)) -> bool {
    !t.is(UNNAMED) && (port, proto) == want
}

fn verdict(b: bool) -> &'static str {
    if b { "allowed" } else { "blocked" }
}

/// Apply `docs`, check `expect`, delete them again.
async fn case(c: &Cluster, name: &str, docs: &[String], expect: &Expect, failures: &mut Vec<String>) {
    let text = docs.join("---\n");
    if !docs.is_empty() {
        let r = apply(&c.host, "", &text).await.unwrap_or_else(|e| panic!("{name}: apply: {e:?}"));
        assert_eq!(r.networks, [NET], "{name}: the network is recompiled");
    }
    check(c, name, expect, failures).await;
    if !docs.is_empty() {
        delete(&c.host, &text).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policy_conformance() {
    let c = cluster("k8s", &all_pods()).await;
    let mut failures = Vec::new();
    let f = &mut failures;

    case(&c, "no policies", &[], &|_, _, _, _| true, f).await;
    case(&c, "deny all ingress in x", &[np("x", "deny", r#"{"podSelector":{}}"#)], &|_, t, _, _| t.ns != "x", f).await;
    case(
        &c,
        "x/a from its own namespace",
        &[np("x", "p", r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"from":[{"podSelector":{}}]}]}"#)],
        &|fr, t, _, _| !to_xa(t) || fr.ns == "x",
        f,
    )
    .await;
    case(
        &c,
        "x/a from namespace y",
        &[np(
            "x",
            "p",
            r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"ns":"y"}}}]}]}"#,
        )],
        &|fr, t, _, _| !to_xa(t) || fr.ns == "y",
        f,
    )
    .await;
    case(
        &c,
        "AND: x/a from pod b of namespace y",
        &[np(
            "x",
            "p",
            r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"from":[
                {"namespaceSelector":{"matchLabels":{"ns":"y"}},"podSelector":{"matchLabels":{"pod":"b"}}}]}]}"#,
        )],
        &|fr, t, _, _| !to_xa(t) || fr.is("y/b"),
        f,
    )
    .await;
    case(
        &c,
        "OR: x/a from namespace y or from pod b of x",
        &[np(
            "x",
            "p",
            r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"from":[
                {"namespaceSelector":{"matchLabels":{"ns":"y"}}},{"podSelector":{"matchLabels":{"pod":"b"}}}]}]}"#,
        )],
        &|fr, t, _, _| !to_xa(t) || fr.ns == "y" || fr.is("x/b"),
        f,
    )
    .await;
    case(
        &c,
        "matchExpressions In / NotIn / Exists / DoesNotExist",
        &[
            np(
                "x",
                "in-notin",
                r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"from":[{
                    "namespaceSelector":{"matchExpressions":[{"key":"ns","operator":"NotIn","values":["y"]}]},
                    "podSelector":{"matchExpressions":[{"key":"pod","operator":"In","values":["b","c"]}]}}]}]}"#,
            ),
            np(
                "x",
                "exists",
                r#"{"podSelector":{"matchLabels":{"pod":"b"}},"ingress":[{"from":[
                    {"namespaceSelector":{"matchExpressions":[{"key":"env","operator":"Exists"}]}}]}]}"#,
            ),
            np(
                "x",
                "not-exists",
                r#"{"podSelector":{"matchLabels":{"pod":"c"}},"ingress":[{"from":[
                    {"namespaceSelector":{"matchExpressions":[{"key":"env","operator":"DoesNotExist"}]}}]}]}"#,
            ),
        ],
        &|fr, t, _, _| {
            if t.is("x/a") {
                fr.ns != "y" && (fr.name == "b" || fr.name == "c")
            } else if t.is("x/b") {
                fr.ns == "y"
            } else if t.is("x/c") {
                fr.ns != "y"
            } else {
                true
            }
        },
        f,
    )
    .await;
    case(
        &c,
        "ports: a port with no protocol is TCP",
        &[np("x", "p", r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"ports":[{"port":81}]}]}"#)],
        &|_, t, port, proto| !to_xa(t) || (port == 81 && proto == Proto::Tcp),
        f,
    )
    .await;
    case(
        &c,
        "ports: UDP, and TCP with endPort",
        &[np(
            "x",
            "p",
            r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"ports":[
                {"protocol":"UDP","port":80},{"protocol":"TCP","port":80,"endPort":81}]}]}"#,
        )],
        &|_, t, port, proto| !to_xa(t) || proto == Proto::Tcp || port == 80,
        f,
    )
    .await;
    // Named ports (upstream's "named port" cases): `port: serve-81-tcp` is
    // port 81/TCP on each destination that declares the name; z/c declares
    // none, so a named port matches nothing on it.
    case(
        &c,
        "named port: ingress on one named port",
        &[np(
            "x",
            "p",
            r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"ports":[{"port":"serve-81-tcp"}]}]}"#,
        )],
        &|_, t, port, proto| !to_xa(t) || named(t, port, proto, (81, Proto::Tcp)),
        f,
    )
    .await;
    case(
        &c,
        "named port: ingress from namespace y on one named UDP port",
        &[np(
            "x",
            "p",
            r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{
                "from":[{"namespaceSelector":{"matchLabels":{"ns":"y"}}}],
                "ports":[{"protocol":"UDP","port":"serve-80-udp"}]}]}"#,
        )],
        &|fr, t, port, proto| !to_xa(t) || (fr.ns == "y" && named(t, port, proto, (80, Proto::Udp))),
        f,
    )
    .await;
    case(
        &c,
        "named port: resolved per destination, none on a pod that does not declare it",
        &[np("z", "p", r#"{"podSelector":{},"ingress":[{"ports":[{"port":"serve-80-tcp"},{"port":81}]}]}"#)],
        &|_, t, port, proto| {
            t.ns != "z" || (proto == Proto::Tcp && (port == 81 || named(t, port, proto, (80, Proto::Tcp))))
        },
        f,
    )
    .await;
    case(
        &c,
        "named port: egress on one named port",
        &[np(
            "x",
            "p",
            r#"{"podSelector":{"matchLabels":{"pod":"a"}},"policyTypes":["Egress"],"egress":[{"ports":[{"port":"serve-80-tcp"}]}]}"#,
        )],
        &|fr, t, port, proto| !fr.is("x/a") || named(t, port, proto, (80, Proto::Tcp)),
        f,
    )
    .await;
    case(
        &c,
        "named port: egress to namespace y on a named port",
        &[np(
            "x",
            "p",
            r#"{"podSelector":{"matchLabels":{"pod":"a"}},"policyTypes":["Egress"],"egress":[{
                "to":[{"namespaceSelector":{"matchLabels":{"ns":"y"}}}],"ports":[{"port":"serve-81-tcp"}]}]}"#,
        )],
        &|fr, t, port, proto| !fr.is("x/a") || (t.ns == "y" && named(t, port, proto, (81, Proto::Tcp))),
        f,
    )
    .await;
    // Upstream's "should enforce updated policy": the same policy applied
    // again with another named port replaces the first.
    let on = |name: &str| {
        np(
            "x",
            "p",
            &format!(
                r#"{{"podSelector":{{"matchLabels":{{"pod":"a"}}}},"ingress":[{{"ports":[{{"port":"{name}"}}]}}]}}"#
            ),
        )
    };
    apply(&c.host, "", &on("serve-80-tcp")).await.unwrap();
    check(
        &c,
        "named port: before the update",
        &|_, t, port, proto| !to_xa(t) || named(t, port, proto, (80, Proto::Tcp)),
        f,
    )
    .await;
    apply(&c.host, "", &on("serve-81-tcp")).await.unwrap();
    check(
        &c,
        "named port: after the update",
        &|_, t, port, proto| !to_xa(t) || named(t, port, proto, (81, Proto::Tcp)),
        f,
    )
    .await;
    delete(&c.host, &on("serve-81-tcp")).await;

    let yb = c.pods.iter().find(|p| p.is("y/b")).unwrap().addr.clone();
    case(
        &c,
        "ipBlock with except",
        &[np(
            "x",
            "p",
            &format!(
                r#"{{"podSelector":{{"matchLabels":{{"pod":"a"}}}},"ingress":[{{"from":[
                    {{"ipBlock":{{"cidr":"10.91.0.0/24","except":["{yb}/32"]}}}}]}}]}}"#
            ),
        )],
        &|fr, t, _, _| !to_xa(t) || !fr.is("y/b"),
        f,
    )
    .await;
    case(
        &c,
        "egress deny all from x/a",
        &[np("x", "p", r#"{"podSelector":{"matchLabels":{"pod":"a"}},"policyTypes":["Egress"]}"#)],
        &|fr, _, _, _| !fr.is("x/a"),
        f,
    )
    .await;
    case(
        &c,
        "egress from x/a to namespace y on port 80 only",
        &[np(
            "x",
            "p",
            r#"{"podSelector":{"matchLabels":{"pod":"a"}},"policyTypes":["Egress"],"egress":[{
                "to":[{"namespaceSelector":{"matchLabels":{"ns":"y"}}}],
                "ports":[{"protocol":"TCP","port":80},{"protocol":"UDP","port":80}]}]}"#,
        )],
        &|fr, t, port, _| !fr.is("x/a") || (t.ns == "y" && port == 80),
        f,
    )
    .await;
    case(
        &c,
        "policies are additive",
        &[
            np("x", "p1", r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"from":[{"podSelector":{"matchLabels":{"pod":"b"}}}]}]}"#),
            np("x", "p2", r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"ns":"z"}}}]}]}"#),
        ],
        &|fr, t, _, _| !to_xa(t) || fr.is("x/b") || fr.ns == "z",
        f,
    )
    .await;
    case(
        &c,
        "egress rules imply policyTypes [Ingress, Egress]",
        &[np("x", "p", r#"{"podSelector":{"matchLabels":{"pod":"a"}},"egress":[{"to":[{"podSelector":{}}]}]}"#)],
        &|fr, t, _, _| !to_xa(t) && (!fr.is("x/a") || t.ns == "x"),
        f,
    )
    .await;
    case(
        &c,
        "both directions must allow",
        &[
            np(
                "x",
                "out",
                r#"{"podSelector":{"matchLabels":{"pod":"a"}},"policyTypes":["Egress"],"egress":[{"to":[{"namespaceSelector":{"matchLabels":{"ns":"y"}}}]}]}"#,
            ),
            np(
                "y",
                "in",
                r#"{"podSelector":{},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"ns":"x"}},"podSelector":{"matchLabels":{"pod":"a"}}}],"ports":[{"port":80}]}]}"#,
            ),
        ],
        &|fr, t, port, proto| {
            (!fr.is("x/a") || t.ns == "y") && (t.ns != "y" || (fr.is("x/a") && port == 80 && proto == Proto::Tcp))
        },
        f,
    )
    .await;

    // A namespace label applied later re-classifies the pods of that
    // namespace into the groups that select it.
    let blue = np(
        "x",
        "blue",
        r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"team":"blue"}}}]}]}"#,
    );
    apply(&c.host, "", &blue).await.unwrap();
    check(&c, "namespace selector, no namespace labelled yet", &|_, t, _, _| !to_xa(t), f).await;
    apply(&c.host, "", &namespaces_yaml(", team: blue")).await.unwrap();
    check(&c, "namespace z labelled team=blue", &|fr, t, _, _| !to_xa(t) || fr.ns == "z", f).await;
    apply(&c.host, "", &namespaces_yaml("")).await.unwrap();
    delete(&c.host, &blue).await;
    check(&c, "all policies deleted", &|_, _, _, _| true, f).await;

    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// Policy changes are all or nothing, survive a restart, and the CLI speaks
/// them: apply / ls / check / delete, a refused document, swapping the
/// policy component of a live network and back, and a swap that cannot
/// compile leaving the old rules in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_are_atomic_and_explained() {
    let mut c = cluster("k8sops", &[("x", "a"), ("x", "b"), ("y", "a")]).await;
    let xa = c.pods.iter().find(|p| p.is("x/a")).unwrap().addr.clone();
    let reach = |c: &Cluster, from: &str| {
        let p = c.pods.iter().find(|p| p.is(from)).unwrap();
        probe_tcp(&p.netns.name, format!("{xa}:80").parse().unwrap(), Duration::from_millis(1500)).join().unwrap()
    };
    assert!(reach(&c, "x/b") && reach(&c, "y/a"));

    // Through the CLI, from a file holding a kind: List.
    let file = c.host.dir.join("policy.yaml");
    let list = r#"apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: only-x, namespace: x}
  spec:
    podSelector: {matchLabels: {pod: a}}
    ingress:
    - from: [{podSelector: {}}]
      ports: [{port: 80}]
"#;
    std::fs::write(&file, list).unwrap();
    let out = c.host.cli(&["policy", "apply", "-f", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("NetworkPolicy/x/only-x created") && text.contains("recompiled: cluster"), "{text}");
    assert!(reach(&c, "x/b") && !reach(&c, "y/a"));
    let out = c.host.cli(&["policy", "apply", "-f", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("only-x unchanged"));
    let ls = String::from_utf8_lossy(&c.host.cli(&["policy", "ls"]).stdout).into_owned();
    assert!(ls.contains("NetworkPolicy") && ls.contains("only-x") && ls.contains("Namespace"), "{ls}");
    // Documents belong to their tenant.
    let mut pol = c.host.policies().await;
    let other = pol.list_policies(pb::ListPoliciesRequest { tenant: "other".into(), ..Default::default() }).await;
    assert!(other.unwrap().into_inner().documents.is_empty(), "another tenant sees no documents");
    let del = pb::DeletePoliciesRequest { tenant: "other".into(), name: "only-x".into(), ..Default::default() };
    assert_eq!(pol.delete_policies(del).await.unwrap_err().code(), Code::NotFound);

    // The explanation names the rule and its document, or the isolation.
    let check = |from: &str, port: &str| {
        let out = c.host.cli(&["policy", "check", "--network", NET, "--from", from, "--to", "x-a", "--port", port]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ok = check("x-b", "80/tcp");
    assert!(
        ok.starts_with("allowed") && ok.contains("x/only-x ingress[0] tcp") && ok.contains("NetworkPolicy x/only-x"),
        "{ok}"
    );
    let no = check("y-a", "80/tcp");
    assert!(no.starts_with("denied") && no.contains("isolated by x/only-x (NetworkPolicy x/only-x)"), "{no}");
    let no = check("x-b", "81/tcp");
    assert!(no.starts_with("denied"), "{no}");

    // A document the component refuses changes nothing and says why.
    let named = np("x", "named", r#"{"podSelector":{},"ingress":[{"ports":[{"port":"Http"}]}]}"#);
    let e = apply(&c.host, "", &named).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("NetworkPolicy x/named: spec.ingress[0].ports[0].port: named port \"Http\" may hold only"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("nothing was changed"), "{}", e.message());
    assert!(!String::from_utf8_lossy(&c.host.cli(&["policy", "ls"]).stdout).contains("named"));
    assert!(reach(&c, "x/b") && !reach(&c, "y/a"), "old rules still in force");
    // A malformed document is refused by the host before any component.
    let e = apply(&c.host, "", "kind: NetworkPolicy\nmetadata: {name: Bad}").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("documents[0]: metadata.name \"Bad\""), "{}", e.message());

    // Swap the live network to Docker's default policy (which takes no
    // tenant-wide documents) and back.
    let swap = |p: &str| c.host.cli(&["network", "update", NET, "--policy", p]);
    assert!(swap("policy-isolation").status.success());
    assert!(reach(&c, "y/a"), "policy-isolation: everything passes");
    assert!(swap("policy-k8s").status.success());
    assert!(!reach(&c, "y/a"), "the documents are compiled again");
    let out = swap("policy-nope");
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("policy module \"policy-nope\" not found")
    );

    // A document applied to the network itself cannot be compiled by
    // policy-isolation: the swap fails and the old rules stay.
    let scoped = np("y", "scoped", r#"{"podSelector":{},"ingress":[{"from":[{"podSelector":{}}]}]}"#);
    apply(&c.host, NET, &scoped).await.unwrap();
    let out = swap("policy-isolation");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("takes no policy documents") && err.contains("nothing was changed"),
        "{err}"
    );
    let mut nets = c.host.networks().await;
    let net = nets.get_network(pb::GetNetworkRequest { name: NET.into(), ..Default::default() }).await.unwrap();
    assert_eq!(net.into_inner().policy, "policy-k8s");
    assert!(reach(&c, "x/b") && !reach(&c, "y/a"), "old rules still in force");

    // Everything survives a restart of weftd.
    c.host.stop();
    c.host.start();
    assert!(reach(&c, "x/b") && !reach(&c, "y/a"), "rules after restart");
    let ls = String::from_utf8_lossy(&c.host.cli(&["policy", "ls", "-o", "json"]).stdout).into_owned();
    let docs: serde_json::Value = serde_json::from_str(&ls).unwrap();
    let names: Vec<&str> = docs.as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 5, "{names:?}");

    // Delete by name; ambiguous and unknown names are refused.
    let out = c.host.cli(&["policy", "delete", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no policy document named \"nope\""));
    let out = c.host.cli(&["policy", "delete", "only-x"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(reach(&c, "y/a"), "deleted: x/a is no longer isolated");
}

/// Peers by selector are member sets whose elements each endpoint brings:
/// a pod attached after the policy is let in on exactly the allowed ports
/// (added by the attach's netlink batch, ranges included), and its
/// elements leave with it, so whoever gets its address next is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_attached_after_a_policy_carry_their_peer_flows() {
    let c = cluster("k8late", &[("x", "a"), ("x", "b")]).await;
    let to_a = |port: u16| -> SocketAddr { format!("{}:{port}", c.pods[0].addr).parse().unwrap() };
    let policy = np(
        "x",
        "late",
        r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"from":[{"podSelector":{"matchLabels":{"pod":"c"}}}],"ports":[{"port":80},{"port":70,"endPort":79}]},{"from":[{"podSelector":{"matchLabels":{"pod":"c"}}},{"ipBlock":{"cidr":"10.0.0.0/8","except":["10.91.0.0/24"]}}],"ports":[{"port":81,"protocol":"UDP"}]}]}"#,
    );
    apply(&c.host, "", &policy).await.unwrap();
    assert!(!probe_tcp(&c.pods[1].netns.name, to_a(80), Duration::from_millis(800)).join().unwrap(), "x/b is not c");

    let attach = |name: &str, pod: &str, netns: &Netns| pb::AttachEndpointRequest {
        network: NET.into(),
        name: name.into(),
        netns: netns.path(),
        labels: [("pod".to_string(), pod.to_string()), ("io.kubernetes.pod.namespace".into(), "x".to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let late = c.host.container("xc");
    let ep = c.host.endpoints().await.attach_endpoint(attach("x-c", "c", &late)).await.unwrap().into_inner();
    let wait = Duration::from_millis(1500);
    assert!(probe_tcp(&late.name, to_a(80), wait).join().unwrap(), "x/c attached after the policy: 80/tcp");
    assert!(!probe_tcp(&late.name, to_a(81), wait).join().unwrap(), "81/tcp is not allowed");
    assert!(probe_udp(&late.name, to_a(81), wait).join().unwrap(), "81/udp is allowed");
    assert!(!probe_udp(&late.name, to_a(80), wait).join().unwrap(), "80/udp is not allowed");

    // Its elements go with it; the next pod, whatever address it gets, is
    // not let in by them.
    let req = pb::DetachEndpointRequest { network: NET.into(), name: "x-c".into(), ..Default::default() };
    c.host.endpoints().await.detach_endpoint(req).await.unwrap();
    let gone = addr_of(&ep.addresses[0]);
    let table = in_ns(&c.host.ns.name, &["nft", "-j", "list", "table", "inet", "weft"]);
    assert!(!String::from_utf8_lossy(&table.stdout).contains(&format!("\"{gone}\"")), "{gone} left in weft's table");
    let next = c.host.container("xd");
    let ep2 = c.host.endpoints().await.attach_endpoint(attach("x-d", "d", &next)).await.unwrap().into_inner();
    assert!(
        !probe_tcp(&next.name, to_a(80), wait).join().unwrap(),
        "x/d ({:?}, x/c was {:?})",
        ep2.addresses,
        ep.addresses
    );
    // And x/c comes back in with a new attach.
    let again = c.host.container("xc2");
    c.host.endpoints().await.attach_endpoint(attach("x-c", "c", &again)).await.unwrap();
    assert!(probe_tcp(&again.name, to_a(80), wait).join().unwrap(), "x/c again");
}
