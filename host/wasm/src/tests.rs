//! Runs the built `ipam-default` component (built by `cargo xtask
//! build-policies`) through the host, including the sandbox refusals.

use std::net::IpAddr;
use std::path::PathBuf;

use weft_model::ipam::{DecisionError, Ipam, IpamRequest, Pool, PoolLeases};

use super::*;

fn modules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/modules")
}

fn host() -> WasmHost {
    let h = WasmHost::new().unwrap();
    let dir = modules_dir();
    assert!(
        dir.join("ipam-default.wasm").exists(),
        "{} missing: run `cargo xtask build-policies` first",
        dir.display()
    );
    h.load_builtin_dir(&dir).unwrap();
    h
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn req(static_address: Option<IpAddr>) -> IpamRequest {
    IpamRequest { network: "n".into(), endpoint: "e".into(), static_address }
}

#[test]
fn sequential_with_wraparound_and_reserved_addresses() {
    let h = host();
    let pool = Pool { subnet: "10.0.0.0/29".parse().unwrap(), range: None, gateway: Some(ip("10.0.0.1")) };
    let mut leases = PoolLeases::default();
    let mut got = Vec::new();
    for i in 0..5 {
        let a = h.allocate("ipam-default", &pool, &req(None), &[], &mut leases).unwrap();
        weft_model::ipam::check_answer(&pool, &req(None), &leases, a).unwrap();
        leases.reserve(a, &format!("e{i}"));
        got.push(a.to_string());
    }
    assert_eq!(got, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
    let e = h.allocate("ipam-default", &pool, &req(None), &[], &mut leases).unwrap_err();
    assert!(matches!(e, DecisionError::Exhausted(_)), "{e:?}");
    // Release one in the middle: wrap-around finds it.
    leases.release(ip("10.0.0.3"), "e1");
    assert_eq!(h.allocate("ipam-default", &pool, &req(None), &[], &mut leases).unwrap(), ip("10.0.0.3"));
    assert_eq!(leases.leases.len(), 4, "leases handed back after the call");
}

#[test]
fn static_requests_and_ranges() {
    let h = host();
    let pool = Pool {
        subnet: "10.0.0.0/24".parse().unwrap(),
        range: Some("10.0.0.128/25".parse().unwrap()),
        gateway: Some(ip("10.0.0.1")),
    };
    let mut leases = PoolLeases::default();
    assert_eq!(h.allocate("ipam-default", &pool, &req(None), &[], &mut leases).unwrap(), ip("10.0.0.129"));
    assert_eq!(
        h.allocate("ipam-default", &pool, &req(Some(ip("10.0.0.7"))), &[], &mut leases).unwrap(),
        ip("10.0.0.7")
    );
    leases.reserve(ip("10.0.0.7"), "x");
    assert!(matches!(
        h.allocate("ipam-default", &pool, &req(Some(ip("10.0.0.7"))), &[], &mut leases),
        Err(DecisionError::Conflict(_))
    ));
    assert!(matches!(
        h.allocate("ipam-default", &pool, &req(Some(ip("10.0.0.1"))), &[], &mut leases),
        Err(DecisionError::Invalid(_))
    ));
    assert!(matches!(
        h.allocate("ipam-default", &pool, &req(Some(ip("10.0.0.255"))), &[], &mut leases),
        Err(DecisionError::Invalid(_))
    ));
    let v6 = Pool { subnet: "fd00:1::/64".parse().unwrap(), range: None, gateway: Some(ip("fd00:1::1")) };
    assert_eq!(h.allocate("ipam-default", &v6, &req(None), &[], &mut leases).unwrap(), ip("fd00:1::2"));
}

#[test]
fn refuses_what_is_not_an_ipam_component() {
    let h = host();
    let e = h.load_ipam("junk", b"not wasm at all").unwrap_err();
    assert!(e.to_string().contains("not a WebAssembly binary"), "{e}");
    let e = h.load_ipam("truncated", b"\0asm\x0d\0\x01\0\x07").unwrap_err();
    assert!(e.to_string().contains("not a valid component"), "{e}");
    // A core module (not a component) is refused too.
    let core = b"\0asm\x01\0\0\0";
    assert!(h.load_ipam("core", core).is_err());
    assert!(!h.has_ipam("junk"));
    let e = h
        .allocate(
            "missing",
            &Pool { subnet: "10.0.0.0/24".parse().unwrap(), range: None, gateway: None },
            &req(None),
            &[],
            &mut PoolLeases::default(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("not loaded"), "{e}");
}

/// A policy component of the frozen 0.1 world still loads and answers
/// beside 0.2 ones.
#[test]
fn policy_components_of_world_0_1_still_load() {
    use weft_model::policy::{EndpointInfo, NetworkInfo, Policy};
    let h = host();
    let info = h.load(Kind::Policy, "old", &test_module("policy-hostile")).unwrap();
    assert!(info.exports.iter().any(|e| e == "weft:policy/engine@0.1.0"), "{info:?}");
    let net = NetworkInfo { name: "n".into(), tenant: "t".into(), internal: false, options: vec![], config: vec![] };
    assert_eq!(h.compile("old", &net, &[]).unwrap().rules, Default::default());
    let ep = EndpointInfo { name: "e".into(), network: "n".into(), labels: vec![] };
    assert_eq!(h.classify("old", &net, "", &ep).unwrap(), ["all"]);
    let k8s = h.load(Kind::Policy, "new", &std::fs::read(modules_dir().join("policy-k8s.wasm")).unwrap()).unwrap();
    assert!(k8s.exports.iter().any(|e| e == "weft:policy/engine@0.2.0"), "{k8s:?}");
}

#[test]
fn policy_isolation_compiles_docker_behaviour() {
    use weft_model::policy::{Direction, EndpointInfo, Isolation, NetworkInfo, Policy};
    let h = host();
    assert!(h.has_policy("policy-isolation"));
    let mut net =
        NetworkInfo { name: "n".into(), tenant: "t".into(), internal: false, options: vec![], config: vec![] };
    let rs = h.compile("policy-isolation", &net, &[]).unwrap().rules;
    assert!(rs.isolated.is_empty() && rs.rules.is_empty(), "icc=true isolates nothing");
    net.options.push(("icc".into(), "false".into()));
    let rs = h.compile("policy-isolation", &net, &[]).unwrap().rules;
    assert_eq!(rs.isolated, [Isolation::new("all", Direction::Ingress, "option icc=false")]);
    let e = h.compile("policy-isolation", &net, &["kind: NetworkPolicy".into()]).unwrap_err();
    assert!(matches!(e, DecisionError::Invalid(_)), "{e:?}");
    net.options[0].1 = "maybe".into();
    assert!(h.compile("policy-isolation", &net, &[]).is_err());
    let ep = EndpointInfo { name: "e".into(), network: "n".into(), labels: vec![] };
    assert_eq!(h.classify("policy-isolation", &net, "", &ep).unwrap(), ["all"]);
}

#[test]
fn naming_default_names_and_aliases() {
    use weft_model::naming::{Naming, NamingEndpoint, NamingNetwork, RecordKind};
    let h = host();
    let ep = NamingEndpoint {
        name: "Web".into(),
        aliases: vec!["www".into()],
        addresses: vec![ip("10.0.0.2"), ip("fd00::2")],
        labels: vec![],
    };
    let net = NamingNetwork { name: "front".into(), tenant: "t".into(), options: vec![], config: vec![] };
    let recs = h.names("naming-default", &ep, &net).unwrap();
    let a: Vec<(String, String)> = recs
        .iter()
        .filter(|r| r.kind == RecordKind::Address)
        .map(|r| (r.name.clone(), r.address.to_string()))
        .collect();
    for n in ["web", "web.front", "www", "www.front"] {
        assert!(a.contains(&(n.to_string(), "10.0.0.2".to_string())), "{n} missing: {a:?}");
        assert!(a.contains(&(n.to_string(), "fd00::2".to_string())));
    }
    let ptr: Vec<&str> = recs.iter().filter(|r| r.kind == RecordKind::Pointer).map(|r| r.name.as_str()).collect();
    assert_eq!(ptr, ["web.front", "web.front"]);
}

fn test_module(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-modules").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}: run `cargo xtask build-policies` first", path.display()))
}

/// A hostile component is contained: every misbehaviour becomes an error for
/// that one call, within the deadline, and the host keeps serving.
#[test]
fn hostile_guests_are_contained() {
    let h = host();
    h.load_ipam("ipam-hostile", &test_module("ipam-hostile")).unwrap();
    let pool = Pool { subnet: "10.0.0.0/24".parse().unwrap(), range: None, gateway: Some(ip("10.0.0.1")) };
    let call = |endpoint: &str| {
        let req = IpamRequest { network: "n".into(), endpoint: endpoint.into(), static_address: None };
        let started = std::time::Instant::now();
        let r = h.allocate("ipam-hostile", &pool, &req, &[], &mut PoolLeases::default());
        (r, started.elapsed())
    };
    let (r, took) = call("spin");
    let e = r.unwrap_err().to_string();
    assert!(e.contains("deadline"), "{e}");
    assert!(took < std::time::Duration::from_secs(2), "an endless loop is stopped at the deadline ({took:?})");
    for (what, why) in
        [("grow", "memory cap"), ("recurse", "stack limit"), ("trap", "abort"), ("huge", "64 MiB answer")]
    {
        let (r, _) = call(what);
        let e = r.expect_err(why).to_string();
        assert!(e.contains("trapped") || e.contains("deadline"), "{what}: {e}");
    }
    // A wrong answer comes back as an answer; the host's check refuses it.
    let (r, _) = call("outside");
    let outside = IpamRequest { network: "n".into(), endpoint: "outside".into(), static_address: None };
    let answer = r.unwrap();
    assert!(weft_model::ipam::check_answer(&pool, &outside, &PoolLeases::default(), answer).is_err());
    // The host still serves, and no pooled instance leaked: more calls than
    // the pool has slots.
    let mut leases = PoolLeases::default();
    for _ in 0..(crate::limits::POOL_COMPONENT_INSTANCES as usize + 50) {
        let (r, _) = call("ok");
        assert!(r.is_ok());
        assert!(h.allocate("ipam-default", &pool, &req(None), &[], &mut leases).is_ok());
    }
}

/// A tenant's runaway call runs idle-class and, past its free CPU time, on
/// a quarter of a core: it is stopped after its CPU deadline, having taken
/// far less CPU than the wall-clock time it lasted; an honest call of the
/// same component is not slowed.
#[test]
fn a_tenants_runaway_call_is_throttled_and_stopped() {
    let h = host();
    let component = Component::new(&h.engine, test_module("ipam-hostile")).unwrap();
    h.install(Kind::Ipam, "t/spin", &component, Some(h.share.of("t"))).unwrap();
    let pool = Pool { subnet: "10.0.0.0/24".parse().unwrap(), range: None, gateway: None };
    std::thread::spawn(move || {
        let call = |endpoint: &str| {
            let req = IpamRequest { network: "n".into(), endpoint: endpoint.into(), static_address: None };
            let (wall, cpu) = (std::time::Instant::now(), cpu::thread_cpu());
            let r = h.allocate("t/spin", &pool, &req, &[], &mut PoolLeases::default());
            (r, wall.elapsed(), cpu::thread_cpu() - cpu)
        };
        let (r, wall, cpu) = call("spin");
        let e = r.unwrap_err().to_string();
        assert!(e.contains("deadline"), "{e}");
        assert!(cpu < limits::deadline() * 2, "stopped near its CPU deadline: {cpu:?} of CPU");
        assert!(wall > cpu * 2, "throttled: {cpu:?} of CPU in {wall:?}");
        assert!(wall < limits::TENANT_WALL_CAP * 2, "stopped at the wall-clock cap at the latest: {wall:?}");
        assert_eq!(cpu::policy(), libc::SCHED_OTHER, "the thread's policy came back");
        let (r, _, _) = call("ok");
        assert!(r.is_ok());
    })
    .join()
    .unwrap();
}

#[test]
fn wasi_imports_and_wrong_worlds_are_refused_at_load() {
    let h = host();
    let e = h.load_ipam("ipam-wasi", &test_module("ipam-wasi")).unwrap_err().to_string();
    assert!(e.contains("does not grant") && e.contains("wasi:"), "names the WASI import: {e}");
    assert!(!h.has_ipam("ipam-wasi"));
    let naming = std::fs::read(modules_dir().join("naming-default.wasm")).unwrap();
    let e = h.load_ipam("naming-as-ipam", &naming).unwrap_err().to_string();
    assert!(e.contains("does not export weft:ipam/allocator@0.1.0"), "{e}");
}

#[test]
fn a_worker_compiled_artefact_loads_in_the_pooled_host() {
    let h = host();
    let bytes = std::fs::read(modules_dir().join("ipam-default.wasm")).unwrap();
    let art = compile_untrusted(Kind::Ipam, &bytes).unwrap();
    let path = std::env::temp_dir().join(format!("weft-wasm-test-{}.cwasm", std::process::id()));
    std::fs::write(&path, &art).unwrap();
    let info = h.load_precompiled(Kind::Ipam, "t/pre", &path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(info.exports.iter().any(|e| e == "weft:ipam/allocator@0.1.0"), "{info:?}");
    assert!(info.imports.iter().any(|i| i.starts_with("weft:ipam/leases")), "{info:?}");
    let pool = Pool { subnet: "10.0.0.0/24".parse().unwrap(), range: None, gateway: Some(ip("10.0.0.1")) };
    assert_eq!(h.allocate("t/pre", &pool, &req(None), &[], &mut PoolLeases::default()).unwrap(), ip("10.0.0.2"));
    // The worker refuses what the host would refuse, with the same words.
    let e = compile_untrusted(Kind::Ipam, &test_module("ipam-wasi")).unwrap_err();
    assert!(e.contains("imports wasi:") && e.contains("grants no WASI"), "{e}");
    let e = compile_untrusted(Kind::Policy, &bytes).unwrap_err();
    assert!(e.contains("does not export weft:policy/engine@0.2.0"), "{e}");
    h.remove(Kind::Ipam, "t/pre");
    assert!(!h.has(Kind::Ipam, "t/pre"));
}
