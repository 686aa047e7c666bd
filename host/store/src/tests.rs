use weft_model::Mac;
use weft_model::endpoint::{AttachEndpoint, EndpointState};
use weft_model::network::{CreateNetwork, SubnetRequest};

use super::*;

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("weft-store-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn round_trip_survives_reopen() {
    let dir = tmpdir("rt");
    let spec = CreateNetwork {
        name: "n1".into(),
        subnets: vec![SubnetRequest { subnet: "10.9.0.0/24".into(), ..Default::default() }],
        ..Default::default()
    }
    .validate()
    .unwrap();
    let net = Network::new("ab".repeat(16), spec).unwrap();
    let ep = Endpoint {
        id: "cd".repeat(16),
        network_id: net.id.clone(),
        spec: AttachEndpoint { network: "n1".into(), name: "e".into(), netns: "/x".into(), ..Default::default() }
            .validate()
            .unwrap(),
        host_ifname: Endpoint::host_ifname_for(&"cd".repeat(16)).unwrap(),
        netns_id: 0,
        mac: Mac([2, 0x42, 10, 9, 0, 2]),
        addresses: vec!["10.9.0.2/24".parse().unwrap()],
        state: EndpointState::Ready,
        groups: vec![],
        node: None,
    };
    {
        let s = RedbStore::open(&dir).unwrap();
        let mut ev = weft_model::event::Event::new(weft_model::event::EventKind::EndpointAttached, "t", "n1", "e");
        ev.revision = 7;
        s.commit(&Batch {
            put_networks: vec![net.clone()],
            put_endpoints: vec![ep.clone()],
            cursors: vec![(format!("{}/v4", net.id), "10.9.0.2".parse().unwrap())],
            revision: Some(7),
            events: vec![ev],
            ..Default::default()
        })
        .unwrap();
    }
    let s = RedbStore::open(&dir).unwrap();
    let snap = s.load().unwrap();
    assert_eq!(snap.networks, vec![net.clone()]);
    assert_eq!(snap.endpoints, vec![ep.clone()]);
    assert_eq!(snap.cursors.len(), 1);
    assert_eq!(snap.revision, 7);
    assert_eq!(snap.events.len(), 1);
    s.commit(&Batch {
        delete_endpoints: vec![ep.id.clone()],
        delete_networks: vec![net.id.clone()],
        revision: Some(8),
        trim_events_below: Some(8),
        ..Default::default()
    })
    .unwrap();
    let snap = s.load().unwrap();
    assert!(snap.networks.is_empty() && snap.endpoints.is_empty() && snap.cursors.is_empty());
    assert_eq!(snap.revision, 8);
    assert!(snap.events.is_empty(), "events below 8 were trimmed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_batch_lands_whole_and_documents_round_trip() {
    use weft_model::document::{DocKey, Document};
    let dir = tmpdir("batch");
    let doc = |name: &str| StoredDocument {
        tenant: "t".into(),
        network: "n1".into(),
        doc: Document {
            key: DocKey { kind: "NetworkPolicy".into(), namespace: "x".into(), name: name.into() },
            body: format!(r#"{{"kind":"NetworkPolicy","metadata":{{"name":"{name}"}}}}"#),
        },
    };
    let (a, b) = (doc("a"), doc("b"));
    {
        let s = RedbStore::open(&dir).unwrap();
        s.commit(&Batch { put_documents: vec![a.clone(), b.clone()], ..Default::default() }).unwrap();
        s.commit(&Batch { delete_documents: vec![a.store_key()], ..Default::default() }).unwrap();
    }
    let snap = RedbStore::open(&dir).unwrap().load().unwrap();
    assert_eq!(snap.documents, vec![b]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trimming_drops_only_the_events_below_the_cut() {
    let dir = tmpdir("trim");
    let event = |rev: u64| {
        let mut ev = weft_model::event::Event::new(weft_model::event::EventKind::EndpointAttached, "t", "n1", "e");
        ev.revision = rev;
        ev
    };
    let s = RedbStore::open(&dir).unwrap();
    s.commit(&Batch { revision: Some(5), events: (1..=5).map(event).collect(), ..Default::default() }).unwrap();
    s.commit(&Batch { revision: Some(6), events: vec![event(6)], trim_events_below: Some(3), ..Default::default() })
        .unwrap();
    let kept: Vec<u64> = s.load().unwrap().events.iter().map(|e| e.revision).collect();
    assert_eq!(kept, vec![3, 4, 5, 6]);
    let _ = std::fs::remove_dir_all(&dir);
}
