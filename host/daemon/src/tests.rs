//! Unit tests of decide / commit / rollback / reconcile against the fake
//! kernel, a redb store in a temp dir and fake deciders: no root needed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use weft_kernel::fake::FakeKernel;
use weft_model::ControlError;
use weft_model::api::{Controller, Ref};
use weft_model::endpoint::{AttachEndpoint, DetachEndpoint};
use weft_model::event::{EventKind, WatchFilter, WatchItem};
use weft_model::ipam::{DecisionError, Ipam, IpamRequest, Pool, PoolLeases};
use weft_model::module::ModuleRecord;
use weft_model::naming::{NameRecord, Naming, NamingEndpoint, NamingNetwork};
use weft_model::network::{CreateNetwork, SubnetRequest};
use weft_model::policy::{Compiled, EndpointInfo, NetworkInfo, Policy};
use weft_plan::Op;
use weft_store::{RedbStore, Store};

use crate::controller::{Ctl, Parts};
use crate::modules::{ModuleFiles, Modules};
use crate::reconcile::Trigger;

/// Lowest free host address; no policy; no names.
struct Fakes;

impl Ipam for Fakes {
    fn allocate(
        &self,
        _module: &str,
        pool: &Pool,
        req: &IpamRequest,
        _config: &[(String, String)],
        leases: &mut PoolLeases,
    ) -> Result<IpAddr, DecisionError> {
        if let Some(a) = req.static_address {
            return Ok(a);
        }
        pool.subnet
            .hosts()
            .find(|a| Some(*a) != pool.gateway && leases.is_free(*a))
            .ok_or_else(|| DecisionError::Exhausted("full".into()))
    }
}

impl Policy for Fakes {
    fn compile(&self, _m: &str, _n: &NetworkInfo, _d: &[String]) -> Result<Compiled, DecisionError> {
        Ok(Compiled::default())
    }
    fn classify(&self, _m: &str, _n: &NetworkInfo, _s: &str, _e: &EndpointInfo) -> Result<Vec<String>, DecisionError> {
        Ok(Vec::new())
    }
}

impl Naming for Fakes {
    fn names(&self, _m: &str, _e: &NamingEndpoint, _n: &NamingNetwork) -> Result<Vec<NameRecord>, DecisionError> {
        Ok(Vec::new())
    }
}

pub(crate) struct Rig {
    pub(crate) ctl: Arc<Ctl>,
    pub(crate) kernel: Arc<FakeKernel>,
    store: Arc<RedbStore>,
    dir: std::path::PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The operator, as the tests call.
pub(crate) fn op() -> weft_model::Caller {
    weft_model::Caller::operator("test")
}

fn builtin(name: &str, kind: &str) -> ModuleRecord {
    ModuleRecord {
        tenant: String::new(),
        name: name.into(),
        kind: kind.into(),
        digest: String::new(),
        size: 0,
        created: 0,
        imports: vec![],
        exports: vec![],
    }
}

async fn rig(tag: &str) -> Rig {
    rig_with(tag, None).await
}

/// A rig whose controller is a node of `cluster`.
pub(crate) async fn rig_with(tag: &str, cluster: Option<Arc<crate::cluster::Cluster>>) -> Rig {
    let dir = std::env::temp_dir().join(format!("weftd-unit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let kernel = Arc::new(FakeKernel::new());
    let store = Arc::new(RedbStore::open(&dir).unwrap());
    let parts = Parts {
        kernel: kernel.clone(),
        store: store.clone(),
        deciders: Arc::new(Fakes),
        builtins: vec![
            builtin("ipam-default", "ipam"),
            builtin("policy-isolation", "policy"),
            builtin("naming-default", "naming"),
        ],
        modules: Modules { files: ModuleFiles::at(dir.join("modules")), wasm: None },
        dns: weft_dns::Dns::new(weft_dns::DnsConfig { upstreams: vec![], timeout: Duration::from_millis(100) }),
        access: Arc::default(),
        cluster,
    };
    let ctl = Arc::new(Ctl::open(parts).await.unwrap());
    Rig { ctl, kernel, store, dir }
}

fn network(name: &str, subnet: &str) -> CreateNetwork {
    CreateNetwork {
        name: name.into(),
        subnets: vec![SubnetRequest { subnet: subnet.into(), ..Default::default() }],
        options: [("dns".to_owned(), "false".to_owned())].into(),
        ..Default::default()
    }
}

fn attach(name: &str) -> AttachEndpoint {
    AttachEndpoint {
        network: "web".into(),
        name: name.into(),
        netns: format!("/run/netns/{name}"),
        publish: vec![format!("{}:80", 18000 + name.len())],
        ..Default::default()
    }
}

fn ep_ref(name: &str) -> Ref {
    Ref { network: "web".into(), name: name.into(), ..Default::default() }
}

fn detaching(name: &str) -> DetachEndpoint {
    DetachEndpoint { network: "web".into(), name: name.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_and_detach_are_idempotent_by_request_key() {
    let r = rig("idempotent").await;
    r.ctl.create_network(&op(), network("web", "10.3.0.0/24")).await.unwrap();
    let keyed = |name: &str| AttachEndpoint { request_key: "cni/c1/eth0".into(), ..attach(name) };
    let (first, o1) = r.ctl.attach(&op(), keyed("a")).await.unwrap();
    let kernel = r.kernel.state();
    let applied = r.kernel.applied().len();
    let (again, o2) = r.ctl.attach(&op(), keyed("a")).await.expect("a retry answers the first result");
    assert_eq!(again.endpoint, first.endpoint);
    assert_eq!(o2.revision, o1.revision, "and takes no revision");
    assert_eq!((r.kernel.state(), r.kernel.applied().len()), (kernel.clone(), applied), "nor any kernel op");
    let (planned, o) = r.ctl.attach(&op(), AttachEndpoint { dry_run: true, ..keyed("a") }).await.unwrap();
    assert_eq!((planned.endpoint, o.plan.map(|p| p.ops.len())), (first.endpoint.clone(), Some(0)));
    // The same key asking for something else is refused, naming the field.
    for (req, field) in [
        (AttachEndpoint { netns: "/run/netns/other".into(), ..keyed("a") }, "netns"),
        (keyed("b"), "name"),
        (AttachEndpoint { ips: vec!["10.3.0.77".into()], ..keyed("a") }, "ips"),
    ] {
        let e = r.ctl.attach(&op(), req).await.expect_err(field);
        assert!(matches!(e, ControlError::AlreadyExists(_)), "{e}");
        assert!(e.to_string().contains(&format!("different {field}")), "{e}");
    }
    // Without a key, or with another, the name is taken as before.
    let e = r.ctl.attach(&op(), attach("a")).await.expect_err("name taken");
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(r.store.load().unwrap().endpoints.len(), 1);
    // Detach by key; again: NOT_FOUND, or success with allow_missing, also for a missing network.
    let by_key = DetachEndpoint { network: "web".into(), request_key: "cni/c1/eth0".into(), ..Default::default() };
    r.ctl.detach(by_key.clone()).await.unwrap();
    assert!(r.store.load().unwrap().endpoints.is_empty());
    let e = r.ctl.detach(by_key.clone()).await.expect_err("gone");
    assert!(matches!(e, ControlError::NotFound(_)), "{e}");
    assert!(e.to_string().contains("request key \"cni/c1/eth0\""), "{e}");
    let revision = r.store.load().unwrap().revision;
    let o = r.ctl.detach(DetachEndpoint { allow_missing: true, ..by_key.clone() }).await.unwrap();
    assert_eq!(o.revision, revision);
    let nowhere = DetachEndpoint { network: "nope".into(), allow_missing: true, ..by_key.clone() };
    r.ctl.detach(nowhere).await.expect("a missing network is missing too");
    // Bad input is still an error.
    for bad in [
        DetachEndpoint { name: "a".into(), ..by_key.clone() },
        DetachEndpoint { request_key: String::new(), allow_missing: true, ..by_key.clone() },
        DetachEndpoint { request_key: "has space".into(), allow_missing: true, ..by_key },
    ] {
        let e = r.ctl.detach(bad).await.expect_err("invalid");
        assert!(matches!(e, ControlError::Invalid(_)), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_any_op_of_an_attach_leaves_kernel_store_and_index_unchanged() {
    let r = rig("attach-fail").await;
    r.ctl.create_network(&op(), network("web", "10.1.0.0/24")).await.unwrap();
    r.ctl.attach(&op(), attach("a")).await.unwrap();
    let kernel_before = r.kernel.state();
    let stored_before = r.store.load().unwrap();
    let (planned, outcome) = r.ctl.attach(&op(), AttachEndpoint { dry_run: true, ..attach("bb") }).await.unwrap();
    let plan = outcome.plan.expect("a dry run answers its plan");
    assert_eq!(r.kernel.state(), kernel_before, "a dry run changes no kernel object");
    assert_eq!(r.store.load().unwrap().revision, stored_before.revision, "nor the store");
    assert!(plan.ops.len() >= 5, "{plan:?}");
    for k in 0..plan.ops.len() {
        r.kernel.fail_nth(k);
        let e = r.ctl.attach(&op(), attach("bb")).await.expect_err("op {k} fails");
        r.kernel.heal();
        assert!(e.to_string().contains("rolled back"), "op {k}: {e}");
        assert_eq!(r.kernel.state(), kernel_before, "kernel after a failure at op {k} ({})", plan.ops[k].command);
        let stored = r.store.load().unwrap();
        assert_eq!(stored.endpoints, stored_before.endpoints, "store after op {k}");
        assert_eq!(stored.revision, stored_before.revision, "no revision taken at op {k}");
        let (listed, _) = r.ctl.list_endpoints(Ref { network: "web".into(), ..Default::default() }).await.unwrap();
        assert_eq!(listed.len(), 1, "index after op {k}");
    }
    let (ep, _) = r.ctl.attach(&op(), attach("bb")).await.unwrap();
    assert_eq!(ep.endpoint.addresses, planned.endpoint.addresses, "the dry run named the address");
    assert_eq!(ep.endpoint.mac, planned.endpoint.mac, "and the MAC");
    let applied: Vec<String> = r.kernel.applied().iter().rev().take(plan.ops.len()).rev().map(Op::command).collect();
    let said: Vec<String> = plan
        .ops
        .iter()
        .map(|o| o.command.replace(&planned.endpoint.host_ifname.to_string(), &ep.endpoint.host_ifname.to_string()))
        .collect();
    assert_eq!(applied.len(), said.len());
    for (a, s) in applied.iter().zip(&said) {
        assert_eq!(a.split_whitespace().next(), s.split_whitespace().next(), "{a} vs {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detach_whose_link_retirement_fails_leaves_the_endpoint_working() {
    let r = rig("detach-fail").await;
    r.ctl.create_network(&op(), network("web", "10.2.0.0/24")).await.unwrap();
    r.ctl.attach(&op(), attach("a")).await.unwrap();
    let before = r.kernel.state();
    assert!(!before.elements.is_empty(), "the published port is an element");
    r.kernel.fail_when(|op| matches!(op, Op::RetireLink { .. }));
    let e = r.ctl.detach(detaching("a")).await.expect_err("link deletion fails");
    r.kernel.heal();
    assert!(e.to_string().contains("rolled back"), "{e}");
    assert_eq!(r.kernel.state(), before, "elements put back, link still there");
    assert_eq!(r.store.load().unwrap().endpoints.len(), 1);
    r.ctl.get_endpoint(ep_ref("a")).await.expect("still attached");
    r.ctl.detach(detaching("a")).await.unwrap();
    assert!(r.kernel.state().elements.is_empty());
    assert!(r.store.load().unwrap().endpoints.is_empty());
}

/// The host links of the fake kernel: (name, up, retired).
fn host_links(r: &Rig) -> Vec<(String, bool, bool)> {
    r.kernel
        .state()
        .links
        .iter()
        .filter(|((ns, _), _)| ns == "host")
        .map(|((_, n), l)| (n.clone(), l.up, l.retired))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detach_retires_the_link_and_its_deletion_follows_in_one_call() {
    let r = rig("retire").await;
    r.ctl.create_network(&op(), network("web", "10.2.0.0/24")).await.unwrap();
    let mut veths = Vec::new();
    // (Names of different lengths: `attach` publishes a port by length.)
    for name in ["a", "bb", "ccc"] {
        veths.push(r.ctl.attach(&op(), attach(name)).await.unwrap().0.endpoint.host_ifname.to_string());
    }
    let ops_before = r.kernel.applied().len();
    for name in ["a", "bb"] {
        r.ctl.detach(detaching(name)).await.unwrap();
    }
    // Retired at once: down, in the group, record gone; not deleted yet.
    let links = host_links(&r);
    for v in &veths[..2] {
        assert!(links.contains(&(v.clone(), false, true)), "{v} retired: {links:?}");
    }
    assert!(links.contains(&(veths[2].clone(), true, false)), "c untouched: {links:?}");
    assert_eq!(r.store.load().unwrap().endpoints.len(), 1);
    // A re-attach into a's namespace with a's interface name deletes the
    // retired links first (a's container end still holds eth0 there).
    r.ctl.attach(&op(), attach("a")).await.expect("re-attach right after the detach");
    let links = host_links(&r);
    assert!(links.iter().all(|(_, _, retired)| !retired), "retired links deleted first: {links:?}");
    let deletions = r.kernel.applied()[ops_before..].iter().filter(|o| matches!(o, Op::DeleteRetired)).count();
    assert_eq!(deletions, 1, "both retired links went in one deletion");
    // Without an attach to force it, the deletion follows within a second.
    r.ctl.detach(detaching("ccc")).await.unwrap();
    let t = std::time::Instant::now();
    while host_links(&r).iter().any(|(n, ..)| n == &veths[2]) {
        assert!(t.elapsed() < Duration::from_secs(1), "retired link still there after 1 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_link_left_by_a_crash_is_deleted_and_not_an_orphan() {
    let r = rig("retire-crash").await;
    let bridge = r.ctl.create_network(&op(), network("web", "10.2.0.0/24")).await.unwrap().0.network.bridge;
    // As a crash between a detach and the deletion leaves it: no record,
    // still a port of the bridge, down, in the group.
    let veth = ("host".to_owned(), "veth0123456789a".to_owned());
    r.kernel.edit(|st| {
        let link = weft_kernel::fake::FakeLink {
            kind: "veth".into(),
            master: Some(bridge.to_string()),
            retired: true,
            ..Default::default()
        };
        st.links.insert(veth.clone(), link);
    });
    let repairs = r.ctl.stats().await.unwrap().repairs;
    r.ctl.reconcile(Trigger::Periodic).await;
    assert!(!r.kernel.state().links.contains_key(&veth), "deleted");
    assert_eq!(r.ctl.stats().await.unwrap().repairs, repairs, "not an orphan repair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_requests_have_exactly_one_winner() {
    let r = rig("one-winner").await;
    let creates: Vec<_> = (0..32)
        .map(|_| {
            let c = r.ctl.clone();
            tokio::spawn(async move { c.create_network(&op(), network("web", "10.3.0.0/24")).await.is_ok() })
        })
        .collect();
    let mut ok = 0;
    for t in creates {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 1, "creates");
    for round in ["attach", "detach"] {
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let c = r.ctl.clone();
                tokio::spawn(async move {
                    if round == "attach" {
                        c.attach(&op(), attach("a")).await.is_ok()
                    } else {
                        c.detach(detaching("a")).await.is_ok()
                    }
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        assert_eq!(ok, 1, "{round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_repairs_a_deleted_bridge_and_veth_and_says_so() {
    let r = rig("repair").await;
    let (net, o) = r.ctl.create_network(&op(), network("web", "10.4.0.0/24")).await.unwrap();
    let (ep, _) = r.ctl.attach(&op(), attach("a")).await.unwrap();
    let mut events = r.ctl.watch(WatchFilter { from_revision: o.revision, ..Default::default() }).await.unwrap();
    let bridge = net.network.bridge.to_string();
    let veth = ep.endpoint.host_ifname.to_string();
    r.kernel.edit(|k| {
        k.links.retain(|(_, n), _| *n != bridge && *n != veth);
        k.links.retain(|(ns, _), _| !ns.starts_with("/run/netns/a"));
    });
    r.ctl.reconcile(Trigger::Periodic).await;
    let k = r.kernel.state();
    assert!(k.links.contains_key(&("host".into(), bridge.clone())), "bridge re-created");
    let v = &k.links[&("host".into(), veth.clone())];
    assert_eq!(v.master.as_deref(), Some(bridge.as_str()), "veth re-plumbed onto the bridge");
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(2), events.next()).await;
        let Ok(Some(Ok(item))) = next else { panic!("events so far: {kinds:?}; state: {:?}", r.kernel.state()) };
        match item {
            WatchItem::Event(e) => kinds.push((e.kind, e.message)),
            WatchItem::Heartbeat(_) => {}
        }
    }
    assert_eq!(kinds[0].0, EventKind::EndpointAttached);
    assert!(kinds[1..].iter().all(|(k, _)| *k == EventKind::Repaired), "{kinds:?}");
    assert!(kinds.iter().any(|(_, m)| m.contains("bridge") && m.contains("re-created")), "{kinds:?}");
    assert!(kinds.iter().any(|(_, m)| m.contains("re-plumbed")), "{kinds:?}");
    let stats = r.ctl.stats().await.unwrap();
    assert!(stats.repairs.iter().any(|(k, n)| k == "bridge" && *n == 1), "{:?}", stats.repairs);
    // A second pass finds nothing to repair.
    let rev = stats.revision;
    r.ctl.reconcile(Trigger::Periodic).await;
    assert_eq!(r.ctl.stats().await.unwrap().revision, rev, "no drift, no commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_pass_restores_addresses_and_the_default_route_inside() {
    let r = rig("inside").await;
    r.ctl.create_network(&op(), network("web", "10.5.0.0/24")).await.unwrap();
    r.ctl.attach(&op(), attach("a")).await.unwrap();
    let good = r.kernel.state();
    r.kernel.edit(|k| {
        if let Some(l) = k.links.get_mut(&("/run/netns/a".into(), "eth0".into())) {
            l.addresses.clear();
        }
        k.routes.clear();
    });
    r.ctl.reconcile(Trigger::Periodic).await;
    let now = r.kernel.state();
    assert_eq!((now.links, now.routes), (good.links, good.routes), "address and route back");
    let stats = r.ctl.stats().await.unwrap();
    assert!(stats.repairs.iter().any(|(k, n)| k == "inside" && *n == 1), "{:?}", stats.repairs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_network_is_made_once_and_a_failure_is_not_fatal() {
    let r = rig("default-net").await;
    let names = |r: &Rig| {
        r.store
            .load()
            .unwrap()
            .networks
            .into_iter()
            .map(|n| (n.spec.name.to_string(), n.spec.subnets.len()))
            .collect::<Vec<_>>()
    };
    r.ctl.ensure_default_network(network("bridge", "172.17.0.0/16")).await;
    assert_eq!(names(&r), [("bridge".to_owned(), 1)]);
    let revision = r.store.load().unwrap().revision;
    // At the next start it exists: nothing is made or changed.
    r.ctl.ensure_default_network(network("bridge", "172.18.0.0/16")).await;
    assert_eq!(r.store.load().unwrap().revision, revision);
    // One that cannot be made (its subnet is another network's): weftd goes on without it.
    r.ctl.ensure_default_network(network("other", "172.17.5.0/24")).await;
    assert_eq!(names(&r), [("bridge".to_owned(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attaches_to_one_network_share_store_transactions() {
    let r = rig("group-commit").await;
    r.ctl.create_network(&op(), network("web", "10.4.0.0/24")).await.unwrap();
    let txns = |r: &Rig| r.ctl.commit.timings.snapshot().iter().find(|p| p.name == "store.txn").map_or(0, |p| p.count);
    let before = txns(&r);
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let c = r.ctl.clone();
            tokio::spawn(async move {
                let req = AttachEndpoint { publish: vec![format!("{}:80", 19000 + i)], ..attach(&format!("e{i}")) };
                c.attach(&op(), req).await.map(|(v, _)| v.endpoint.addresses)
            })
        })
        .collect();
    let mut addresses = std::collections::BTreeSet::new();
    for t in tasks {
        for a in t.await.unwrap().expect("every attach succeeds") {
            assert!(addresses.insert(a), "{a} given twice");
        }
    }
    assert_eq!(addresses.len(), 32);
    let shared = txns(&r) - before;
    assert!(shared < 32, "32 concurrent attaches to one network took {shared} store transactions");
    // All durable, and what a detach (which waits for records) sees.
    assert_eq!(r.store.load().unwrap().endpoints.len(), 32);
    for i in 0..32 {
        r.ctl.detach(detaching(&format!("e{i}"))).await.unwrap();
    }
    assert!(r.store.load().unwrap().endpoints.is_empty());
}
