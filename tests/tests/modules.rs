//! Tenant modules end to end: upload (CLI and gRPC streaming), validation
//! with a reason for every refusal, binding by name, tenancy (another
//! tenant's module is not found), removal refused while bound, the compiled
//! artefact reused after a restart, and hostile components contained at call
//! time while another tenant keeps attaching.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use tonic::Code;
use weft_grpc::pb;
use weft_tests::{Host, component};

fn network(tenant: &str, name: &str, subnet: &str, ipam: &str, naming: &str) -> pb::CreateNetworkRequest {
    pb::CreateNetworkRequest {
        tenant: tenant.into(),
        name: name.into(),
        subnets: vec![pb::Subnet { subnet: subnet.into(), ..Default::default() }],
        ipam: ipam.into(),
        naming: naming.into(),
        ..Default::default()
    }
}

async fn attach(
    host: &Host,
    tenant: &str,
    network: &str,
    name: &str,
    netns: &str,
) -> Result<pb::Endpoint, tonic::Status> {
    let req = pb::AttachEndpointRequest {
        tenant: tenant.into(),
        network: network.into(),
        name: name.into(),
        netns: netns.into(),
        ..Default::default()
    };
    host.endpoints().await.attach_endpoint(req).await.map(|r| r.into_inner())
}

fn cli(host: &Host, tenant: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(weft_tests::bin_dir().join("weft"))
        .env("WEFT_SOCKET", host.socket())
        .env("WEFT_TENANT", tenant)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sha256_hex(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_bind_isolate_and_reload_without_recompiling() {
    let mut host = Host::new("mods");
    let file = host.dir.join("seq.wasm");
    std::fs::write(&file, component("ipam-default")).unwrap();
    let digest = sha256_hex(&file);

    // Upload through the CLI: it prints the digest.
    let (ok, out, err) =
        cli(&host, "acme", &["module", "upload", file.to_str().unwrap(), "--kind", "ipam", "--name", "seq"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("sha256:{digest}"));
    // The same bytes again under the same name: the same module.
    let again = host.upload("acme", "seq", "ipam", &component("ipam-default")).await.unwrap();
    assert_eq!(again.digest, digest);
    // Other bytes under that name: refused.
    let e = host.upload("acme", "seq", "ipam", &component("ipam-hostile")).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    let (_, ls, _) = cli(&host, "acme", &["module", "ls"]);
    assert!(
        ls.contains("seq") && ls.contains("uploaded") && ls.contains("policy-k8s") && ls.contains("built-in"),
        "{ls}"
    );
    let (ok, inspect, _) = cli(&host, "acme", &["module", "inspect", "seq", "-o", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["kind"], "ipam");
    assert_eq!(v["digest"], format!("sha256:{digest}"));
    assert!(v["exports"].as_array().unwrap().iter().any(|e| e == "weft:ipam/allocator@0.1.0"), "{v}");
    assert!(v["imports"].as_array().unwrap().iter().all(|i| i.as_str().unwrap().starts_with("weft:")), "{v}");

    // Another tenant neither sees nor binds it.
    let (_, ls, _) = cli(&host, "other", &["module", "ls"]);
    assert!(!ls.contains("seq"), "{ls}");
    let (ok, _, err) = cli(&host, "other", &["module", "inspect", "seq"]);
    assert!(!ok && err.contains("not found") && err.contains("NotFound"), "{err}");
    let e = host.networks().await.create_network(network("other", "n", "10.96.0.0/24", "seq", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("ipam module \"seq\" not found"), "{}", e.message());
    // The wrong kind is named.
    let mut req = network("acme", "n", "10.96.0.0/24", "", "");
    req.policy = "seq".into();
    let e = host.networks().await.create_network(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("is a ipam module; policy needs a policy module"), "{}", e.message());

    // Bound and used: two endpoints get addresses from it and talk.
    host.networks().await.create_network(network("acme", "n", "10.96.0.0/24", "seq", "")).await.unwrap();
    let c1 = host.container("c1");
    let c2 = host.container("c2");
    let e1 = attach(&host, "acme", "n", "c1", &c1.path()).await.unwrap();
    attach(&host, "acme", "n", "c2", &c2.path()).await.unwrap();
    assert_eq!(e1.addresses, ["10.96.0.2/24"]);
    assert!(c2.ping("10.96.0.2"));
    let (ok, _, err) = cli(&host, "acme", &["module", "rm", "seq"]);
    assert!(!ok && err.contains("bound to network(s) n"), "{err}");

    // A restart loads the cached artefact: the file is not rewritten.
    let art = host.dir.join("state/modules").join(format!("{digest}.cwasm"));
    let before = std::fs::metadata(&art).unwrap();
    host.stop();
    host.start();
    let after = std::fs::metadata(&art).unwrap();
    assert_eq!((before.ino(), before.mtime_nsec()), (after.ino(), after.mtime_nsec()), "artefact rewritten");
    assert!(host.log().contains("module loaded from its artefact"), "{}", host.log());
    let c3 = host.container("c3");
    let e3 = attach(&host, "acme", "n", "c3", &c3.path()).await.unwrap();
    assert_eq!(e3.addresses, ["10.96.0.4/24"], "the uploaded IPAM still decides after a restart");

    // Unbound, it can go; its files go with it.
    for ep in ["c1", "c2", "c3"] {
        let req = pb::DetachEndpointRequest {
            tenant: "acme".into(),
            network: "n".into(),
            name: ep.into(),
            dry_run: false,
            ..Default::default()
        };
        host.endpoints().await.detach_endpoint(req).await.unwrap();
    }
    host.networks()
        .await
        .delete_network(pb::DeleteNetworkRequest { tenant: "acme".into(), name: "n".into(), ..Default::default() })
        .await
        .unwrap();
    let (ok, _, err) = cli(&host, "acme", &["module", "rm", "seq"]);
    assert!(ok, "{err}");
    assert!(!art.exists());
    let (ok, _, err) = cli(&host, "acme", &["module", "rm", "ipam-default"]);
    assert!(!ok && err.contains("built-in"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_with_the_reason() {
    let host = Host::new("badmods");
    let core = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../policies/target/wasm32-unknown-unknown/release/ipam_default.wasm"),
    )
    .unwrap();
    let good = component("ipam-default");
    let cases: Vec<(&str, &str, Vec<u8>, Code, &str)> = vec![
        ("junk", "ipam", b"this is not wasm".to_vec(), Code::InvalidArgument, "not a WebAssembly binary"),
        ("core", "ipam", core, Code::InvalidArgument, "core WebAssembly module, not a component"),
        ("cut", "ipam", good[..good.len() / 2].to_vec(), Code::InvalidArgument, "not a valid component"),
        ("wasi", "ipam", component("ipam-wasi"), Code::InvalidArgument, "imports wasi:"),
        (
            "wrong",
            "ipam",
            component("naming-default"),
            Code::InvalidArgument,
            "does not export weft:ipam/allocator@0.1.0",
        ),
        ("big", "ipam", vec![0u8; (32 << 20) + 1], Code::InvalidArgument, "over the 33554432-byte limit"),
        ("ipam-default", "ipam", good.clone(), Code::AlreadyExists, "is a built-in module"),
        ("x", "dns", good.clone(), Code::InvalidArgument, "kind \"dns\" must be ipam, policy or naming"),
        ("Bad_Name", "ipam", good.clone(), Code::InvalidArgument, "must be 1 to 63 lowercase"),
    ];
    for (name, kind, bytes, code, want) in cases {
        let e = host.upload("t", name, kind, &bytes).await.unwrap_err();
        assert_eq!(e.code(), code, "{name}: {e:?}");
        assert!(e.message().contains(want), "{name}: {}", e.message());
    }
    // Nothing was recorded or kept.
    let l = host.modules().await.list_modules(pb::ListModulesRequest { tenant: "t".into() }).await.unwrap();
    assert!(l.into_inner().modules.iter().all(|m| m.builtin));
    let kept: Vec<_> = std::fs::read_dir(host.dir.join("state/modules")).unwrap().flatten().collect();
    assert!(kept.is_empty(), "{kept:?}");
    // weftd still serves.
    host.create_network("after", &["10.97.0.0/24"]).await.unwrap();
}

/// A hostile IPAM component and a lying naming component of one tenant:
/// every misdeed becomes a clean error for that call, the attach is rolled
/// back, and meanwhile another tenant's attaches keep succeeding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_are_contained_and_other_tenants_keep_working() {
    let host = Host::new("evil");
    host.upload("evil", "evil-ipam", "ipam", &component("ipam-hostile")).await.unwrap();
    host.upload("evil", "liar", "naming", &component("naming-hostile")).await.unwrap();
    host.networks().await.create_network(network("evil", "bad", "10.98.0.0/24", "evil-ipam", "")).await.unwrap();
    host.networks().await.create_network(network("evil", "lies", "10.99.0.0/24", "", "liar")).await.unwrap();
    host.networks().await.create_network(network("good", "fine", "10.100.0.0/24", "", "")).await.unwrap();
    let links_before = host.host_links().len();

    let victim = host.container("v");
    for (name, want) in [
        ("spin", "deadline"),
        ("grow", "trapped"),
        ("recurse", "trapped"),
        ("trap", "trapped"),
        ("huge", "trapped"),
        ("outside", "not a usable address"),
    ] {
        let e = attach(&host, "evil", "bad", name, &victim.path()).await.unwrap_err();
        assert!(e.message().contains("evil") && e.message().contains(want), "{name}: {:?}", e);
        assert!(e.message().contains("nothing was"), "{name}: says it rolled back: {}", e.message());
    }
    for (name, want) in [("liar", "points at an address that is not endpoint"), ("badname", "bad record")] {
        let e = attach(&host, "evil", "lies", name, &victim.path()).await.unwrap_err();
        assert!(e.message().contains(want), "{name}: {}", e.message());
    }
    assert_eq!(host.host_links().len(), links_before, "no veth left behind");
    assert!(victim.links().iter().all(|l| l == "lo"), "{:?}", victim.links());
    let mut eps = host.endpoints().await;
    let l = eps.list_endpoints(pb::ListEndpointsRequest { tenant: "evil".into(), ..Default::default() }).await;
    assert!(l.unwrap().into_inner().endpoints.is_empty(), "no record left behind");

    // One tenant's module spins on every call while another tenant attaches.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinner = {
        let (stop, sock) = (stop.clone(), host.socket());
        let ns = victim.path();
        tokio::spawn(async move {
            let mut c =
                weft_grpc::client::EndpointServiceClient::new(weft_grpc::client::connect_unix(sock).await.unwrap());
            let mut spins = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let req = pb::AttachEndpointRequest {
                    tenant: "evil".into(),
                    network: "bad".into(),
                    name: "spin".into(),
                    netns: ns.clone(),
                    ..Default::default()
                };
                let t = Instant::now();
                assert!(c.attach_endpoint(req).await.is_err());
                spins.push((t, Instant::now()));
            }
            spins
        })
    };
    let good: Vec<_> = (0..10).map(|i| host.container(&format!("g{i}"))).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (mut slowest, mut starts) = (Duration::ZERO, Vec::new());
    for (i, ns) in good.iter().enumerate() {
        let t = Instant::now();
        starts.push(t);
        let e = attach(&host, "good", "fine", &format!("g{i}"), &ns.path()).await.unwrap();
        slowest = slowest.max(t.elapsed());
        assert_eq!(e.addresses.len(), 1);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let spins = spinner.await.unwrap();
    // A spinning call is throttled and lasts ~370 ms: the good attaches
    // must have started while one was in flight (a few may fall into the
    // moment between two calls).
    let during = starts.iter().filter(|t| spins.iter().any(|(a, b)| a <= *t && *t <= b)).count();
    eprintln!(
        "10 attaches of tenant good, {during} while tenant evil's module spun ({} calls); slowest {slowest:?}",
        spins.len()
    );
    assert!(during >= 8, "the spinner kept running during the good attaches ({during} of 10)");
    // Liveness, not speed: each is far below what waiting on the spinner
    // without end would take.
    assert!(slowest < Duration::from_secs(3), "an attach waited {slowest:?} behind the spinning module");
    assert!(good[9].ping("10.100.0.2"));
}

/// Compiling an upload is bounded: a compile that runs past
/// `--compile-timeout-secs` is stopped and the upload refused, one that
/// needs more than `--compile-memory-mib` is refused, and neither holds up
/// other requests meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiling_an_upload_is_bounded_and_does_not_stall_the_api() {
    let python = component("naming-python");
    let host = Host::with_args("slowc", &["--compile-timeout-secs", "1"]);
    host.create_network("n", &["10.102.0.0/24"]).await.unwrap();
    let upload = {
        let (sock, bytes) = (host.socket(), python.clone());
        tokio::spawn(async move { weft_tests::upload_to(sock, "t", "py", "naming", &bytes).await })
    };
    // While the worker compiles, the API answers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c1 = host.container("c1");
    host.attach("n", "c1", &c1).await.unwrap();
    let e = upload.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("took longer than 1 s"), "{}", e.message());

    let host = Host::with_args("smallc", &["--compile-memory-mib", "64"]);
    let e = host.upload("t", "py", "naming", &python).await.unwrap_err();
    assert!(e.message().contains("64 MiB"), "{}", e.message());
    let l = host.modules().await.list_modules(pb::ListModulesRequest { tenant: "t".into() }).await.unwrap();
    assert!(l.into_inner().modules.iter().all(|m| m.builtin), "nothing recorded");
}
