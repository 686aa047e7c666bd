//! Multi-tenant trust, end to end: callers identified by the Unix socket's
//! peer credentials (each test client connects as its own uid), the role ×
//! RPC table, tenants confined to their own objects, namespace ownership, no
//! other tenant's names, subnets or addresses in any reply, host-level
//! options refused, quotas held against 32 racing clients, and a SIGHUP
//! reload that changes roles and quotas on open connections.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::time::Duration;

use tonic::Code;
use tonic::transport::Channel;
use weft_grpc::client::{
    EndpointServiceClient, EventServiceClient, ModuleServiceClient, NetworkServiceClient, NodeServiceClient,
    PolicyServiceClient, SystemServiceClient, TenantServiceClient,
};
use weft_grpc::pb;
use weft_model::access::{Role, Rpc};
use weft_tests::{Host, Netns, bin_dir, component, connect_as};

/// The group the socket file is given; every test caller connects with it.
const GID: u32 = 64100;
const ACME: u32 = 64101;
const EVIL: u32 = 64102;
const ORCH: u32 = 64103;
const NOBODY: u32 = 64104;
const ORCH_EVIL: u32 = 64105;

fn config(extra: &str) -> String {
    format!(
        "socket_group = {GID}\nlog_format = \"json\"\n\n\
         [[unix]]\nuid = {ACME}\nrole = \"tenant\"\ntenant = \"acme\"\n\n\
         [[unix]]\nuid = {EVIL}\nrole = \"tenant\"\ntenant = \"evil\"\n\n\
         [[unix]]\nuid = {ORCH}\nrole = \"orchestrator\"\ntenants = [\"acme\"]\n\n{extra}"
    )
}

async fn as_uid(host: &Host, uid: u32) -> Channel {
    connect_as(host.socket(), uid, GID).await.unwrap()
}

fn net_req(tenant: &str, name: &str, subnet: &str) -> pb::CreateNetworkRequest {
    pb::CreateNetworkRequest {
        tenant: tenant.into(),
        name: name.into(),
        subnets: vec![pb::Subnet { subnet: subnet.into(), ..Default::default() }],
        policy: "policy-k8s".into(),
        ..Default::default()
    }
}

fn attach_req(tenant: &str, network: &str, name: &str, ns: &Netns) -> pb::AttachEndpointRequest {
    pb::AttachEndpointRequest {
        tenant: tenant.into(),
        network: network.into(),
        name: name.into(),
        netns: ns.path(),
        ..Default::default()
    }
}

const DOC: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: NAME, namespace: default}\n\
                   spec: {podSelector: {}, policyTypes: [Ingress]}\n";

/// What one call is aimed at: a network, an endpoint on it, a second
/// endpoint, a module and a policy document, by name.
struct Target {
    network: &'static str,
    endpoint: &'static str,
    peer: &'static str,
    module: &'static str,
    doc: &'static str,
}

const MISSING: Target =
    Target { network: "nope", endpoint: "nope-ep", peer: "nope-ep2", module: "nope-mod", doc: "nope-doc" };

/// Make `rpc` as the caller of `ch`, naming `tenant` (mutations as dry
/// runs, so the matrix changes nothing), and answer the reply as text.
async fn call(ch: &Channel, rpc: Rpc, tenant: &str, t: &Target, netns: &str) -> Result<String, tonic::Status> {
    let tenant = tenant.to_owned();
    let ch = ch.clone();
    let text = |v: &dyn std::fmt::Debug| format!("{v:?}");
    match rpc {
        Rpc::CreateNetwork => {
            let req = pb::CreateNetworkRequest { dry_run: true, ..net_req(&tenant, t.network, "10.77.0.0/24") };
            NetworkServiceClient::new(ch).create_network(req).await.map(|r| text(&r))
        }
        Rpc::GetNetwork => {
            let req = pb::GetNetworkRequest { tenant, name: t.network.into() };
            NetworkServiceClient::new(ch).get_network(req).await.map(|r| text(&r))
        }
        Rpc::ListNetworks => {
            NetworkServiceClient::new(ch).list_networks(pb::ListNetworksRequest { tenant }).await.map(|r| text(&r))
        }
        Rpc::DeleteNetwork => {
            let req = pb::DeleteNetworkRequest { tenant, name: t.network.into(), dry_run: true, force: false };
            NetworkServiceClient::new(ch).delete_network(req).await.map(|r| text(&r))
        }
        Rpc::UpdateNetwork => {
            let req =
                pb::UpdateNetworkRequest { tenant, name: t.network.into(), policy: "policy-k8s".into(), dry_run: true };
            NetworkServiceClient::new(ch).update_network(req).await.map(|r| text(&r))
        }
        Rpc::AttachEndpoint => {
            let req = pb::AttachEndpointRequest {
                tenant,
                network: t.network.into(),
                name: "matrix".into(),
                netns: netns.into(),
                dry_run: true,
                ..Default::default()
            };
            EndpointServiceClient::new(ch).attach_endpoint(req).await.map(|r| text(&r))
        }
        Rpc::DetachEndpoint => {
            let req = pb::DetachEndpointRequest {
                tenant,
                network: t.network.into(),
                name: t.endpoint.into(),
                dry_run: true,
                ..Default::default()
            };
            EndpointServiceClient::new(ch).detach_endpoint(req).await.map(|r| text(&r))
        }
        Rpc::GetEndpoint => {
            let req = pb::GetEndpointRequest { tenant, network: t.network.into(), name: t.endpoint.into() };
            EndpointServiceClient::new(ch).get_endpoint(req).await.map(|r| text(&r))
        }
        Rpc::ListEndpoints => {
            let req = pb::ListEndpointsRequest { tenant, network: t.network.into() };
            EndpointServiceClient::new(ch).list_endpoints(req).await.map(|r| text(&r))
        }
        Rpc::ApplyPolicies => {
            let req = pb::ApplyPoliciesRequest {
                tenant,
                network: t.network.into(),
                documents: DOC.replace("NAME", t.doc),
                dry_run: true,
            };
            PolicyServiceClient::new(ch).apply_policies(req).await.map(|r| text(&r))
        }
        Rpc::ListPolicies => {
            let req = pb::ListPoliciesRequest { tenant, network: t.network.into() };
            PolicyServiceClient::new(ch).list_policies(req).await.map(|r| text(&r))
        }
        Rpc::DeletePolicies => {
            let req = pb::DeletePoliciesRequest { tenant, name: t.doc.into(), dry_run: true, ..Default::default() };
            PolicyServiceClient::new(ch).delete_policies(req).await.map(|r| text(&r))
        }
        Rpc::CheckPolicy => {
            let req = pb::CheckPolicyRequest {
                tenant,
                network: t.network.into(),
                from: t.endpoint.into(),
                to: t.peer.into(),
                port: "80/tcp".into(),
            };
            PolicyServiceClient::new(ch).check_policy(req).await.map(|r| text(&r))
        }
        Rpc::UploadModule => {
            use pb::upload_module_request::Part;
            let header = pb::ModuleHeader { tenant, name: t.module.into(), kind: "ipam".into(), dry_run: true };
            let parts = vec![
                pb::UploadModuleRequest { part: Some(Part::Header(header)) },
                pb::UploadModuleRequest { part: Some(Part::Chunk(component("ipam-default"))) },
            ];
            ModuleServiceClient::new(ch).upload_module(tokio_stream::iter(parts)).await.map(|r| text(&r))
        }
        Rpc::ListModules => {
            ModuleServiceClient::new(ch).list_modules(pb::ListModulesRequest { tenant }).await.map(|r| text(&r))
        }
        Rpc::GetModule => {
            let req = pb::GetModuleRequest { tenant, name: t.module.into() };
            ModuleServiceClient::new(ch).get_module(req).await.map(|r| text(&r))
        }
        Rpc::DeleteModule => {
            let req = pb::DeleteModuleRequest { tenant, name: t.module.into(), dry_run: true };
            ModuleServiceClient::new(ch).delete_module(req).await.map(|r| text(&r))
        }
        Rpc::Watch => {
            let req = pb::WatchRequest { tenant, from_revision: 1, network: t.network.into(), kinds: vec![] };
            let mut s = EventServiceClient::new(ch).watch(req).await?.into_inner();
            let mut seen = String::new();
            while let Ok(item) = tokio::time::timeout(Duration::from_millis(300), s.message()).await {
                match item? {
                    Some(i) => seen.push_str(&text(&i)),
                    None => break,
                }
            }
            Ok(seen)
        }
        Rpc::GetStats => SystemServiceClient::new(ch).get_stats(pb::GetStatsRequest {}).await.map(|r| text(&r)),
        Rpc::GetUsage => TenantServiceClient::new(ch).get_usage(pb::GetUsageRequest { tenant }).await.map(|r| text(&r)),
        Rpc::ListNodes => NodeServiceClient::new(ch).list_nodes(pb::ListNodesRequest {}).await.map(|r| text(&r)),
        Rpc::RemoveNode => {
            let req = pb::RemoveNodeRequest { name: "gone-node".into() };
            NodeServiceClient::new(ch).remove_node(req).await.map(|r| text(&r))
        }
    }
}

/// The reply as one text: the message's fields, or the status code and message.
fn shown(r: &Result<String, tonic::Status>) -> String {
    match r {
        Ok(s) => s.clone(),
        Err(e) => format!("{:?}: {}", e.code(), e.message()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_see_or_reach_each_other() {
    let extra = format!(
        "[[unix]]\nuid = {ORCH_EVIL}\nrole = \"orchestrator\"\ntenants = [\"evil\"]\n\n\
         [tenant_defaults]\nsubnet_deny = [\"10.200.0.0/16\"]\n"
    );
    let host = Host::with_config("tenancy", &config(&extra), &[]);
    let (acme, evil) = (as_uid(&host, ACME).await, as_uid(&host, EVIL).await);
    let (acme_c, acme_c2, evil_c) = (host.container("acme-c"), host.container("acme-c2"), host.container("evil-c"));

    // acme's world: a network, two endpoints (one publishing a port), a
    // document and a module.
    let net = NetworkServiceClient::new(acme.clone())
        .create_network(net_req("", "secret-net", "10.60.0.0/24"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(net.tenant, "acme", "a tenant caller acts for its own tenant");
    let db = pb::AttachEndpointRequest {
        publish: vec!["15432:80/tcp".into()],
        ..attach_req("", "secret-net", "db-7f3", &acme_c)
    };
    let db = EndpointServiceClient::new(acme.clone()).attach_endpoint(db).await.unwrap().into_inner();
    EndpointServiceClient::new(acme.clone())
        .attach_endpoint(attach_req("", "secret-net", "web-1", &acme_c2))
        .await
        .unwrap();
    let doc = pb::ApplyPoliciesRequest {
        network: "secret-net".into(),
        documents: DOC.replace("NAME", "vault-doc"),
        ..Default::default()
    };
    PolicyServiceClient::new(acme.clone()).apply_policies(doc).await.unwrap();
    let digest = weft_tests::upload_to(host.socket(), "acme", "vault-mod", "ipam", &component("ipam-hostile"))
        .await
        .unwrap()
        .digest;

    // evil's own: a network with two endpoints, a document, a module.
    NetworkServiceClient::new(evil.clone()).create_network(net_req("", "evil-net", "10.70.0.0/24")).await.unwrap();
    let evil_c2 = host.container("evil-c2");
    for (name, ns) in [("e-own", &evil_c), ("e-peer", &evil_c2)] {
        EndpointServiceClient::new(evil.clone()).attach_endpoint(attach_req("", "evil-net", name, ns)).await.unwrap();
    }

    // What only acme's side knows. "acme" itself: evil never names it below
    // except in the tenant field, which is refused without echoing it.
    let secrets = [
        "acme".to_owned(),
        "10.60.".to_owned(),
        net.id.clone(),
        net.bridge.clone(),
        db.id.clone(),
        db.host_ifname.clone(),
        acme_c.name.clone(),
        digest.clone(),
    ];
    let leaks = |who: &str, label: &str, r: &Result<String, tonic::Status>| {
        let s = shown(r);
        for secret in &secrets {
            assert!(!s.contains(secret.as_str()), "{who} {label}: the reply reveals {secret:?}: {s}");
        }
    };

    // The matrix: every RPC × {own, another tenant's, missing object} ×
    // each role acting for tenant evil (a tenant caller, an orchestrator
    // that may act for evil, the operator naming evil).
    let own = Target { network: "evil-net", endpoint: "e-own", peer: "e-peer", module: "evil-mod", doc: "evil-doc" };
    let other =
        Target { network: "secret-net", endpoint: "db-7f3", peer: "web-1", module: "vault-mod", doc: "vault-doc" };
    let orch = as_uid(&host, ORCH_EVIL).await;
    let root = host.channel().await;
    let callers = [
        ("tenant", &evil, "", Role::Tenant),
        ("orchestrator", &orch, "evil", Role::Orchestrator),
        ("operator", &root, "evil", Role::Operator),
    ];
    for (who, ch, tenant, role) in callers {
        for rpc in Rpc::ALL {
            let mine = call(ch, rpc, tenant, &own, &evil_c.path()).await;
            let theirs = call(ch, rpc, tenant, &other, &evil_c.path()).await;
            let missing = call(ch, rpc, tenant, &MISSING, &evil_c.path()).await;
            for (what, r) in [("own", &mine), ("other's", &theirs), ("missing", &missing)] {
                leaks(who, &format!("{rpc:?} {what}"), r);
            }
            if !rpc.allowed(role) {
                for r in [&mine, &theirs, &missing] {
                    assert_eq!(r.as_ref().map_err(|e| e.code()).err(), Some(Code::PermissionDenied), "{who} {rpc:?}");
                }
                continue;
            }
            // Another tenant's object answers exactly as a missing one does.
            let norm = |r: &Result<String, tonic::Status>, t: &Target| {
                let mut s = shown(r);
                let mut names =
                    [(t.network, "NET"), (t.endpoint, "EP"), (t.peer, "PEER"), (t.module, "MOD"), (t.doc, "DOC")];
                names.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
                for (name, to) in names {
                    s = s.replace(name, to);
                }
                // Object ids, revisions and the like differ between any two calls.
                s.split(|c: char| !c.is_ascii_alphabetic() && c != '_')
                    .filter(|w| w.len() > 2)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let (a, b) = (norm(&theirs, &other), norm(&missing, &MISSING));
            if rpc != Rpc::Watch {
                assert_eq!(
                    theirs.as_ref().map_err(|e| e.code()).err(),
                    missing.as_ref().map_err(|e| e.code()).err(),
                    "{who} {rpc:?}: {a} | {b}"
                );
            }
            if theirs.is_err() {
                assert_eq!(a, b, "{who} {rpc:?}: another tenant's object is told apart from a missing one");
            }
            // Naming the other tenant is refused, whatever the object (the
            // operator may name any tenant).
            if role != Role::Operator {
                let named = call(ch, rpc, "acme", &other, &evil_c.path()).await;
                assert_eq!(
                    named.as_ref().map_err(|e| e.code()).err(),
                    Some(Code::PermissionDenied),
                    "{who} {rpc:?}: {}",
                    shown(&named)
                );
                leaks(who, &format!("{rpc:?} naming acme"), &named);
            }
        }
    }

    // The scenarios of the issue, each refused with its code and no leak.
    let mut nets = NetworkServiceClient::new(evil.clone());
    let mut eps = EndpointServiceClient::new(evil.clone());
    let listed = nets.list_networks(pb::ListNetworksRequest { tenant: "".into() }).await.unwrap().into_inner();
    assert_eq!(listed.networks.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["evil-net"]);

    let e = eps.attach_endpoint(attach_req("", "evil-net", "steal", &acme_c)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("another tenant's network"), "{e:?}");
    assert!(!acme_c.links().iter().any(|l| l == "eth1"), "acme's container got nothing");

    let evil_p = host.container("evil-p");
    let port =
        pb::AttachEndpointRequest { publish: vec!["15432:80/tcp".into()], ..attach_req("", "evil-net", "p", &evil_p) };
    let e = eps.attach_endpoint(port).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::AlreadyExists, "host port 15432/tcp is in use"));

    let e = nets.create_network(net_req("", "overlap", "10.60.0.0/25")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "subnets[0].subnet: 10.60.0.0/25 overlaps a subnet in use");

    for (opt, what) in
        [(("dns_upstream", "127.0.0.1:22"), "option dns_upstream"), (("bridge_name", "br-evil"), "option bridge_name")]
    {
        let mut req = net_req("", "hostile", "10.71.0.0/24");
        req.options.insert(opt.0.into(), opt.1.into());
        let e = nets.create_network(req).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{opt:?}: {e:?}");
        assert!(e.message().starts_with(what), "{e:?}");
    }
    // Subnets a tenant may not take: the host's own addresses and routes,
    // and the operator's deny list (the operator itself may).
    let ns = host.ns.name.as_str();
    weft_tests::sh(&["ip", "-n", ns, "link", "add", "wtdummy0", "type", "veth", "peer", "name", "wtdummy1"]);
    weft_tests::sh(&["ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "wtdummy0"]);
    weft_tests::sh(&["ip", "-n", ns, "link", "set", "wtdummy0", "up"]);
    weft_tests::sh(&["ip", "-n", ns, "route", "add", "198.51.100.0/24", "dev", "wtdummy0"]);
    for subnet in ["192.0.2.0/25", "198.51.100.128/25"] {
        let e = nets.create_network(net_req("", "shadow", subnet)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{subnet}: {e:?}");
        assert!(e.message().ends_with("overlaps an address or route of the host, which tenants may not use"), "{e:?}");
    }
    let e = nets.create_network(net_req("", "denied", "10.200.1.0/24")).await.unwrap_err();
    assert!(e.message().contains("overlaps 10.200.0.0/16, which tenants may not use (subnet_deny)"), "{e:?}");
    let mut root_nets = NetworkServiceClient::new(host.channel().await);
    root_nets.create_network(net_req("evil", "shadow", "198.51.100.128/25")).await.unwrap();

    let mut mv = net_req("", "lan", "10.72.0.0/24");
    mv.driver = "macvlan".into();
    mv.options.insert("parent".into(), "wtnone0".into());
    let e = nets.create_network(mv).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let host_mode = pb::AttachEndpointRequest {
        mode: "host".into(),
        netns: String::new(),
        ..attach_req("", "evil-net", "h", &evil_c)
    };
    let e = eps.attach_endpoint(host_mode).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let foreign =
        pb::AttachEndpointRequest { allow_foreign_netns: true, ..attach_req("", "evil-net", "steal", &acme_c) };
    assert_eq!(eps.attach_endpoint(foreign).await.unwrap_err().code(), Code::PermissionDenied);

    // The namespace is acme's whoever asks; the operator may override.
    let mut root = EndpointServiceClient::new(host.channel().await);
    let e = root.attach_endpoint(attach_req("evil", "evil-net", "steal", &acme_c)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "even the operator, unless it says so: {e:?}");
    let forced =
        pb::AttachEndpointRequest { allow_foreign_netns: true, ..attach_req("evil", "evil-net", "adopted", &acme_c) };
    root.attach_endpoint(forced).await.unwrap();
    assert!(acme_c.links().iter().any(|l| l == "eth1"), "the operator's override attached it");

    // The operator sees every tenant (by naming it); stats are its alone.
    let theirs = NetworkServiceClient::new(host.channel().await)
        .list_networks(pb::ListNetworksRequest { tenant: "acme".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(theirs.networks[0].name, "secret-net");
    assert_eq!(call(&evil, Rpc::GetStats, "", &own, "").await.unwrap_err().code(), Code::PermissionDenied);

    // Every refusal and change was audited once, with the caller.
    let audit: Vec<serde_json::Value> = host
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "weft::audit")
        .collect();
    let steal = audit
        .iter()
        .find(|v| v["object"] == "evil-net/steal" && v["caller"] == format!("uid {EVIL}") && v["dry_run"] == false)
        .unwrap_or_else(|| panic!("no audit line of evil's attach: {audit:?}"));
    assert_eq!(
        (&steal["role"], &steal["tenant"], &steal["rpc"]),
        (&"tenant".into(), &"evil".into(), &"EndpointService/AttachEndpoint".into())
    );
    assert_eq!(steal["outcome"], "permission_denied");
    let adopted = audit.iter().find(|v| v["object"] == "evil-net/adopted").expect("the override is audited");
    assert_eq!(
        (&adopted["caller"], &adopted["role"], &adopted["outcome"]),
        (&"uid 0".into(), &"operator".into(), &"ok".into())
    );
    assert!(audit.iter().all(|v| v["rpc"] != "NetworkService/ListNetworks"), "reads are not audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_held_and_a_reload_changes_them_on_open_connections() {
    let host = Host::with_config("roles", &config(""), &[]);
    let c = host.container("c");
    let root = host.channel().await;
    NetworkServiceClient::new(root.clone()).create_network(net_req("acme", "web", "10.62.0.0/24")).await.unwrap();
    NetworkServiceClient::new(root.clone()).create_network(net_req("evil", "other", "10.63.0.0/24")).await.unwrap();

    // Each role against the table in docs/security.md: refused exactly
    // where the table says, for the tenant the caller may act for.
    let target = Target { network: "web", endpoint: "x", peer: "y", module: "m", doc: "d" };
    for (uid, role, tenant) in
        [(0, Role::Operator, "acme"), (ORCH, Role::Orchestrator, "acme"), (ACME, Role::Tenant, "")]
    {
        let ch = if uid == 0 { root.clone() } else { as_uid(&host, uid).await };
        for rpc in Rpc::ALL {
            let r = call(&ch, rpc, tenant, &target, &c.path()).await;
            let denied = matches!(&r, Err(e) if e.code() == Code::PermissionDenied);
            assert_eq!(denied, !rpc.allowed(role), "{role} {rpc:?}: {}", shown(&r));
        }
    }
    // A refusal by role, before the request is read, is audited too.
    let refused = host.log().lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
            v["target"] == "weft::audit"
                && v["caller"] == format!("uid {ORCH}")
                && v["rpc"] == "NetworkService/CreateNetwork"
                && v["outcome"] == "permission_denied"
        })
    });
    assert!(refused, "{}", host.log());
    // The orchestrator attaches for the tenants it may name, not others.
    let orch = as_uid(&host, ORCH).await;
    EndpointServiceClient::new(orch.clone()).attach_endpoint(attach_req("acme", "web", "placed", &c)).await.unwrap();
    let e = EndpointServiceClient::new(orch.clone())
        .attach_endpoint(attach_req("evil", "other", "placed", &host.container("c2")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // An unmapped uid is not identified, and told nothing else; a uid
    // outside the socket's group cannot even connect.
    let nobody = as_uid(&host, NOBODY).await;
    let e = call(&nobody, Rpc::ListNetworks, "", &target, "").await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "the caller is not identified"));
    assert!(connect_as(host.socket(), NOBODY, GID + 1).await.is_err(), "the socket is 0660 root:{GID}");

    // The CLI, run as the tenant's user, sees the tenant's networks.
    let out = std::process::Command::new(bin_dir().join("weft"))
        .env("WEFT_SOCKET", host.socket())
        .args(["network", "ls"])
        .uid(ACME)
        .gid(GID)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("web") && !text.contains("other"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Reload: nobody becomes tenant "late"; acme's endpoint quota drops to
    // what it holds. Connections opened before the reload carry on.
    let mut acme_eps = EndpointServiceClient::new(as_uid(&host, ACME).await);
    let reloaded = config(&format!(
        "[[unix]]\nuid = {NOBODY}\nrole = \"tenant\"\ntenant = \"late\"\n\n[tenants.acme.quotas]\nendpoints = 1\n"
    ));
    std::fs::write(host.config_path(), reloaded).unwrap();
    let pid = nix::unistd::Pid::from_raw(host.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let late = loop {
        match call(&nobody, Rpc::ListNetworks, "", &target, "").await {
            Ok(v) => break v,
            Err(e) => assert!(std::time::Instant::now() < deadline, "not reloaded: {e:?}\n{}", host.log()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!late.contains("web"), "late sees only its own: {late}");
    let e = acme_eps.attach_endpoint(attach_req("", "web", "second", &host.container("c3"))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("quota endpoints is 1"), "{e:?}");

    // A reload that does not check out keeps the rules in force.
    std::fs::write(host.config_path(), "[[unix]]\nuid = 1\nrole = \"king\"\n").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !host.log().contains("configuration not reloaded") {
        assert!(std::time::Instant::now() < deadline, "{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(call(&nobody, Rpc::ListNetworks, "", &target, "").await.is_ok(), "the last good rules stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_against_racing_clients() {
    let quotas = "[tenants.racer.quotas]\nnetworks = 1\nendpoints = 5\npublished_ports = 3\n";
    let host = Host::with_config("quota", &config(quotas), &[]);
    let root = host.channel().await;
    let mut nets = NetworkServiceClient::new(root.clone());
    nets.create_network(net_req("racer", "r1", "10.64.0.0/24")).await.unwrap();
    let e = nets.create_network(net_req("racer", "r2", "10.65.0.0/24")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(
        e.message(),
        "tenant \"racer\": quota networks is 1 and 1 are in use (tenants.racer.quotas.networks in weftd's configuration)"
    );
    let dry = pb::CreateNetworkRequest { dry_run: true, ..net_req("racer", "r2", "10.65.0.0/24") };
    assert_eq!(
        nets.create_network(dry).await.unwrap_err().code(),
        Code::ResourceExhausted,
        "a dry run is refused as the commit"
    );

    // 32 clients race for 5 endpoint slots: exactly 5 win.
    let containers: Vec<Netns> = (0..32).map(|i| host.container(&format!("r{i}"))).collect();
    let mut tasks = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let ch = weft_grpc::client::connect_unix(host.socket()).await.unwrap();
        let req = attach_req("racer", "r1", &format!("e{i}"), c);
        tasks.push(tokio::spawn(async move { EndpointServiceClient::new(ch).attach_endpoint(req).await }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains("quota endpoints is 5"), "{e:?}");
            }
        }
    }
    assert_eq!(won, 5, "never more than the quota, and the quota is reached");
    let usage = TenantServiceClient::new(root.clone())
        .get_usage(pb::GetUsageRequest { tenant: "racer".into() })
        .await
        .unwrap()
        .into_inner();
    let of = |k: &str| usage.resources.iter().find(|r| r.resource == k).map(|r| (r.used, r.limit)).unwrap();
    assert_eq!((of("networks"), of("endpoints")), ((1, 1), (5, 5)));

    // Published ports count each port of a range; freeing makes room.
    let mut eps = EndpointServiceClient::new(root.clone());
    eps.detach_endpoint(pb::DetachEndpointRequest {
        tenant: "racer".into(),
        network: "r1".into(),
        name: an_endpoint(&root).await,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = host.container("ports");
    let req = pb::AttachEndpointRequest {
        publish: vec!["18000-18003:80-83/tcp".into()],
        ..attach_req("racer", "r1", "ports", &c)
    };
    let e = eps.attach_endpoint(req).await.unwrap_err();
    assert!(e.message().contains("quota published_ports is 3 and 0 are in use"), "{e:?}");
    let req = pb::AttachEndpointRequest {
        publish: vec!["18000-18002:80-82/tcp".into()],
        ..attach_req("racer", "r1", "ports", &c)
    };
    eps.attach_endpoint(req).await.unwrap();

    // `weft tenant usage` shows the same, for the operator naming the tenant.
    let out = host.cli(&["--tenant", "racer", "tenant", "usage"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.split_whitespace().eq(["published_ports", "3", "3"])), "{text}");
}

/// The name of one of racer's endpoints.
async fn an_endpoint(root: &Channel) -> String {
    let l = EndpointServiceClient::new(root.clone())
        .list_endpoints(pb::ListEndpointsRequest { tenant: "racer".into(), network: "r1".into() })
        .await
        .unwrap()
        .into_inner();
    l.endpoints[0].name.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_callers_are_their_certificates() {
    use rcgen::SanType;
    use weft_grpc::client::ClientTls;
    use weft_tests::ScratchDir;
    use weft_tests::connect_tls_in;
    use weft_tests::pki::TestCa;

    let pki = ScratchDir::new("tls");
    let dir = &pki.0;
    let (ca, stranger) = (TestCa::new("weft test CA"), TestCa::new("another CA"));
    let ca_pem = ca.write(dir, "ca");
    let server = ca.server(dir);
    let conf = format!(
        "listen = \"127.0.0.1:7443\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nclient_ca = \"{}\"\ntrust_domain = \"weft.test\"\n\
         log_format = \"json\"\n\n[orchestrators.kube]\ntenants = [\"acme\"]\n",
        server.cert.display(),
        server.key.display(),
        ca_pem.display()
    );
    let host = Host::with_config("tls", &conf, &[]);
    let addr: std::net::SocketAddr = "127.0.0.1:7443".parse().unwrap();
    let client = |name: &str, uri: &str| {
        let c = ca.client(dir, name, uri);
        ClientTls { cert: c.cert, key: c.key, ca: ca_pem.clone() }
    };
    let channel = |tls: ClientTls| {
        let ns = host.ns.name.clone();
        async move { connect_tls_in(&ns, addr, tls.config().unwrap()).await.unwrap() }
    };

    // A tenant's certificate: the tenant, as over the socket.
    let acme = channel(client("acme", "spiffe://weft.test/tenant/acme")).await;
    let net =
        NetworkServiceClient::new(acme.clone()).create_network(net_req("", "tls-net", "10.66.0.0/24")).await.unwrap();
    assert_eq!(net.into_inner().tenant, "acme");
    let e = call(&acme, Rpc::GetStats, "", &MISSING, "").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // An operator's, and an orchestrator's limited to acme.
    let op = channel(client("alice", "spiffe://weft.test/operator/alice")).await;
    call(&op, Rpc::GetStats, "", &MISSING, "").await.unwrap();
    let kube = channel(client("kube", "spiffe://weft.test/orchestrator/kube")).await;
    let seen = call(&kube, Rpc::ListNetworks, "acme", &MISSING, "").await.unwrap();
    assert!(seen.contains("tls-net"), "{seen}");
    assert_eq!(call(&kube, Rpc::ListNetworks, "evil", &MISSING, "").await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(call(&kube, Rpc::CreateNetwork, "acme", &MISSING, "").await.unwrap_err().code(), Code::PermissionDenied);

    // Every certificate that does not name exactly one caller of this trust
    // domain, chained to its CA and valid now, is UNAUTHENTICATED, and told
    // nothing else.
    let uri = |u: &str| SanType::URI(u.try_into().unwrap());
    let with = |issued: weft_tests::pki::Issued| ClientTls { cert: issued.cert, key: issued.key, ca: ca_pem.clone() };
    let refused = [
        ("another trust domain", client("td", "spiffe://other.test/tenant/acme")),
        ("an unknown role", client("king", "spiffe://weft.test/king/acme")),
        (
            "two URIs",
            with(ca.issue(
                dir,
                "two",
                vec![uri("spiffe://weft.test/tenant/acme"), uri("spiffe://weft.test/operator/x")],
                false,
                false,
            )),
        ),
        ("no URI", with(ca.issue(dir, "dns", vec![SanType::DnsName("acme.test".try_into().unwrap())], false, false))),
        ("expired", with(ca.issue(dir, "old", vec![uri("spiffe://weft.test/operator/old")], false, true))),
        (
            "another CA",
            with(stranger.issue(dir, "stranger", vec![uri("spiffe://weft.test/operator/mallory")], false, false)),
        ),
    ];
    for (case, tls) in refused {
        let ch = channel(tls).await;
        let e = call(&ch, Rpc::ListNetworks, "", &MISSING, "").await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "the caller is not identified"), "{case}");
    }
    let anonymous = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(&ca_pem).unwrap()));
    let ch = connect_tls_in(&host.ns.name, addr, anonymous).await.unwrap();
    let e = call(&ch, Rpc::ListNetworks, "", &MISSING, "").await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "the caller is not identified"), "no certificate");

    // The CLI over TLS (run in the host namespace, where 127.0.0.1:7443 is).
    let tls = client("cli", "spiffe://weft.test/tenant/acme");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &host.ns.name])
        .arg(bin_dir().join("weft"))
        .args(["--addr", "https://127.0.0.1:7443", "--tls-cert"])
        .arg(&tls.cert)
        .arg("--tls-key")
        .arg(&tls.key)
        .arg("--ca")
        .arg(&tls.ca)
        .args(["network", "ls"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("tls-net"), "{text}{}", String::from_utf8_lossy(&out.stderr));

    // The audit line names the certificate's identity.
    let audited = host.log().lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
            v["target"] == "weft::audit" && v["caller"] == "spiffe://weft.test/tenant/acme" && v["object"] == "tls-net"
        })
    });
    assert!(audited, "{}", host.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_wasm_calls_are_held_to_its_share() {
    let host =
        Host::with_args("share", &["--tenant-wasm-concurrency", "2", "--metrics-listen", weft_tests::metrics::ADDR]);
    host.upload("evil", "spin-ipam", "ipam", &component("ipam-hostile")).await.unwrap();
    let root = host.channel().await;
    // One network per call: attaches to one network take its lock in turn.
    for i in 0..12 {
        let mut spin_net = net_req("evil", &format!("bad-{i}"), &format!("10.67.{i}.0/24"));
        spin_net.ipam = "spin-ipam".into();
        NetworkServiceClient::new(root.clone()).create_network(spin_net).await.unwrap();
    }
    NetworkServiceClient::new(root.clone()).create_network(net_req("good", "fine", "10.68.0.0/24")).await.unwrap();

    // 12 of evil's attaches at once, each calling an IPAM that spins to its
    // deadline (~370 ms throttled): two run at a time, the rest wait for a
    // slot, and those still waiting after 1 s are refused as busy.
    let victim = host.container("v");
    let spins: Vec<_> = (0..12)
        .map(|i| {
            let (sock, ns) = (host.socket(), victim.path());
            tokio::spawn(async move {
                let ch = weft_grpc::client::connect_unix(sock).await.unwrap();
                let req = pb::AttachEndpointRequest {
                    tenant: "evil".into(),
                    network: format!("bad-{i}"),
                    name: "spin".into(),
                    netns: ns,
                    ..Default::default()
                };
                EndpointServiceClient::new(ch).attach_endpoint(req).await.unwrap_err()
            })
        })
        .collect();
    // Meanwhile another tenant attaches as usual.
    let good: Vec<Netns> = (0..4).map(|i| host.container(&format!("g{i}"))).collect();
    for (i, ns) in good.iter().enumerate() {
        EndpointServiceClient::new(root.clone())
            .attach_endpoint(attach_req("good", "fine", &format!("g{i}"), ns))
            .await
            .unwrap();
    }
    let (mut deadline, mut busy) = (0, 0);
    for s in spins {
        let e = s.await.unwrap();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        if e.message().contains("deadline") {
            deadline += 1;
        } else {
            assert!(e.message().contains("tenant \"evil\" already has 2 Wasm call(s) running"), "{e:?}");
            busy += 1;
        }
    }
    assert!(deadline >= 2 && busy >= 1, "{deadline} ran to their deadline, {busy} were refused as busy");
    // The metrics count the same outcomes.
    let m = weft_tests::metrics::Scrape::of(&host);
    let calls = |outcome: &str| m.get(&format!("weft_wasm_calls_total{{kind=\"ipam\",outcome=\"{outcome}\"}}"));
    assert_eq!((calls("deadline"), calls("rejected")), (f64::from(deadline), f64::from(busy)), "{:?}", m.0);
    assert!(calls("ok") >= 4.0, "the good tenant's attaches");
}

#[test]
fn a_bad_configuration_file_stops_weftd_at_start() {
    let dir = weft_tests::ScratchDir::new("badconf");
    let file = dir.0.join("weftd.toml");
    std::fs::write(&file, "socket = \"x.sock\"\n[[unix]]\nuid = 5\nrole = \"tenant\"\n").unwrap();
    // In a namespace of its own, should it get further than it may.
    let out = std::process::Command::new("unshare")
        .args(["--net"])
        .arg(bin_dir().join("weftd"))
        .arg("--config")
        .arg(&file)
        .arg("--state-dir")
        .arg(dir.0.join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "configuration file {}: line 2: [[unix]] entry: a tenant caller needs `tenant`",
            file.display()
        )),
        "{err}"
    );
    assert!(!dir.0.join("x.sock").exists() && !dir.0.join("state").exists(), "nothing was made");
}
