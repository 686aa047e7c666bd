//! The cluster logic against fake-kernel nodes sharing one in-memory
//! cluster store: adoption, remote programming, the attach that loses a
//! compare-and-swap, etcd away, detach. No root, no etcd; the end-to-end
//! tests (tests/tests/cluster.rs) run the real kernel and etcd.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_model::api::Controller;
use weft_model::endpoint::{AttachEndpoint, DetachEndpoint};
use weft_model::network::{CreateNetwork, SubnetRequest};
use weft_store::mem::MemCluster;

use super::{Cluster, Settings};
use crate::tests::{Rig, op, rig_with};

async fn node(store: &Arc<MemCluster>, name: &str, ip: &str) -> Rig {
    let settings = Settings {
        endpoints: vec![],
        node: name.into(),
        advertise_ip: ip.parse().unwrap(),
        ttl: Duration::from_secs(15),
        timeout: Duration::from_millis(200),
    };
    let c = Cluster::on(settings, store.clone());
    let r = rig_with(&format!("cl-{name}"), Some(c.clone())).await;
    super::sync::spawn(r.ctl.clone(), c);
    r
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn overlay(subnet: &str) -> CreateNetwork {
    CreateNetwork {
        name: "ov".into(),
        driver: "overlay".into(),
        subnets: vec![SubnetRequest { subnet: subnet.into(), ..Default::default() }],
        options: [("dns".to_owned(), "false".to_owned())].into(),
        ..Default::default()
    }
}

fn attach(name: &str) -> AttachEndpoint {
    AttachEndpoint {
        network: "ov".into(),
        name: name.into(),
        netns: format!("/run/netns/{name}"),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_overlay_networks_and_program_each_others_endpoints() {
    let store = MemCluster::new();
    let a = node(&store, "n0", "10.200.0.1").await;
    let b = node(&store, "n1", "10.200.0.2").await;
    let (net, _) = a.ctl.create_network(&op(), overlay("10.95.0.0/24")).await.unwrap();
    let vx = net.network.overlay.clone().unwrap().vxlan.to_string();
    // Its device, and its record: the kernel work of the adoption comes before the index holds it.
    wait("n1 serves the network", || {
        b.kernel.state().links.contains_key(&("host".into(), vx.clone()))
            && b.ctl.index.read(|st| st.networks.values().any(|n| n.spec.name.as_str() == "ov"))
    });
    // Attaches through both nodes at once: every address distinct, each
    // endpoint programmed on the other node behind its node's address.
    let calls = (0..20).map(|i| {
        let (r, name) = if i % 2 == 0 { (&a, format!("a{i}")) } else { (&b, format!("b{i}")) };
        let ctl = r.ctl.clone();
        async move { ctl.attach(&op(), attach(&name)).await }
    });
    let eps: Vec<_> = futures::future::join_all(calls).await.into_iter().map(|r| r.unwrap().0.endpoint).collect();
    let mut addrs: Vec<_> = eps.iter().map(|e| e.addresses[0]).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 20, "distinct addresses across nodes");
    for e in &eps {
        let (other, vtep) = if e.spec.name.as_str().starts_with('a') { (&b, "10.200.0.1") } else { (&a, "10.200.0.2") };
        wait("remote FDB entry", || {
            other.kernel.state().fdb.get(&(vx.clone(), e.mac.to_string())).is_some_and(|d| d.to_string() == vtep)
        });
    }
    // etcd away: an overlay attach fails as unavailable and changes nothing.
    store.set_down(true);
    let before = a.kernel.state();
    let e = a.ctl.attach(&op(), attach("late")).await.unwrap_err();
    assert!(matches!(e, weft_model::ControlError::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("etcd"), "{e}");
    assert_eq!(a.kernel.state(), before, "nothing half-applied");
    store.set_down(false);
    // Detach on a: gone from b's kernel.
    let gone = eps.iter().find(|e| e.spec.name.as_str() == "a0").unwrap().clone();
    a.ctl.detach(DetachEndpoint { network: "ov".into(), name: "a0".into(), ..Default::default() }).await.unwrap();
    wait("FDB entry removed on detach", || !b.kernel.state().fdb.contains_key(&(vx.clone(), gone.mac.to_string())));
    // A node's lease expiring: the others forget its entries.
    let b_ep = eps.iter().find(|e| e.spec.name.as_str() == "b1").unwrap().clone();
    let key = weft_store::etcd::keys::node("n1");
    wait("n1 registered", || store.lease_of(&key).is_some());
    store.expire(store.lease_of(&key).unwrap());
    wait("n1's entries removed on n0", || !a.kernel.state().fdb.contains_key(&(vx.clone(), b_ep.mac.to_string())));
}
