use std::net::IpAddr;

use weft_model::naming::{NameRecord, RecordKind};

use super::*;
use crate::table::{Answer, Table};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rec(kind: RecordKind, name: &str, a: &str) -> NameRecord {
    NameRecord { kind, name: name.into(), address: ip(a) }
}

#[test]
fn scoped_lookups() {
    let mut t = Table::default();
    t.add_network("n1", "front", &["10.0.1.0/24".parse().unwrap()], None);
    t.add_network("n2", "back", &["10.0.2.0/24".parse().unwrap()], Some(vec!["10.9.9.9:53".parse().unwrap()]));
    t.set_endpoint(
        "n1",
        "e1",
        1,
        &[ip("10.0.1.2")],
        vec![
            rec(RecordKind::Address, "web", "10.0.1.2"),
            rec(RecordKind::Address, "web.front", "10.0.1.2"),
            rec(RecordKind::Pointer, "web.front", "10.0.1.2"),
        ],
    );
    t.set_endpoint("n2", "e2", 2, &[ip("10.0.2.2")], vec![rec(RecordKind::Address, "db", "10.0.2.2")]);
    // A client on n1 sees n1 only.
    assert_eq!(t.lookup_name("n1", ip("10.0.1.2"), "web"), Answer::Addresses(vec![ip("10.0.1.2")]));
    assert_eq!(t.lookup_name("n1", ip("10.0.1.2"), "db"), Answer::NxDomain);
    assert_eq!(t.lookup_name("n1", ip("10.0.1.2"), "web.front"), Answer::Addresses(vec![ip("10.0.1.2")]));
    assert_eq!(t.lookup_name("n1", ip("10.0.1.2"), "nope.front"), Answer::NxDomain);
    assert_eq!(t.lookup_name("n1", ip("10.0.1.2"), "example.com"), Answer::Forward(None));
    assert_eq!(t.lookup_addr("n1", ip("10.0.1.2"), ip("10.0.1.2")), Answer::Names(vec!["web.front".into()]));
    assert_eq!(t.lookup_addr("n1", ip("10.0.1.2"), ip("10.0.1.77")), Answer::Names(vec![]));
    assert!(matches!(t.lookup_addr("n1", ip("10.0.1.2"), ip("8.8.8.8")), Answer::Forward(_)));
    // The same namespace joins n2: now it sees db too.
    t.set_endpoint("n2", "e1b", 1, &[ip("10.0.2.3")], vec![]);
    assert_eq!(t.lookup_name("n1", ip("10.0.1.2"), "db"), Answer::Addresses(vec![ip("10.0.2.2")]));
    assert_eq!(t.upstreams("n2"), Some(vec!["10.9.9.9:53".parse().unwrap()]));
    // Removal is immediate.
    t.remove_endpoint("n2", "e1b");
    assert_eq!(t.lookup_name("n1", ip("10.0.1.2"), "db"), Answer::NxDomain);
    t.remove_endpoint("n1", "e1");
    assert_eq!(t.lookup_name("n1", ip("10.0.1.3"), "web"), Answer::NxDomain);
    t.remove_network("n2");
    assert_eq!(t.lookup_name("n2", ip("10.0.2.2"), "db"), Answer::NxDomain);
}

#[test]
fn resolv_conf_and_upstreams() {
    let r = "# comment\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nsearch x\nnameserver bogus\n";
    assert_eq!(parse_resolv_conf(r), vec!["10.0.0.53:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]);
    assert_eq!(parse_upstream("10.1.1.1"), Some("10.1.1.1:53".parse().unwrap()));
    assert_eq!(parse_upstream("10.1.1.1:5353"), Some("10.1.1.1:5353".parse().unwrap()));
    assert_eq!(parse_upstream("[fd00::1]:5353"), Some("[fd00::1]:5353".parse().unwrap()));
    assert_eq!(parse_upstream("x"), None);
}
