use std::net::IpAddr;
use std::str::FromStr;
use std::sync::RwLock;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use weft_model::naming::{NameRecord, RecordKind};

use super::*;
use crate::table::Table;
use crate::{Counts, DnsConfig};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A table with network n1 ("front", 10.0.1.0/24): `web` at 10.0.1.2 (and
/// its PTR `web.front`), and `many`, an alias of 100 addresses.
fn inner() -> Inner {
    let mut t = Table::default();
    t.add_network("n1", "front", &["10.0.1.0/24".parse().unwrap()], None);
    let rec = |kind, name: &str, a: &str| NameRecord { kind, name: name.into(), address: ip(a) };
    t.set_endpoint(
        "n1",
        "e1",
        1,
        &[ip("10.0.1.2")],
        vec![rec(RecordKind::Address, "web", "10.0.1.2"), rec(RecordKind::Pointer, "web.front", "10.0.1.2")],
    );
    for i in 0..100 {
        let a = format!("10.0.1.{}", i + 10);
        t.set_endpoint("n1", &format!("m{i}"), 0, &[ip(&a)], vec![rec(RecordKind::Address, "many", &a)]);
    }
    Inner {
        table: RwLock::new(t),
        config: DnsConfig { upstreams: vec![], timeout: std::time::Duration::from_secs(1) },
        counts: Counts::default(),
    }
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut q = Message::new(0x1234, MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.queries.push(HQuery::query(Name::from_str(name).unwrap(), qtype));
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        q.edns = Some(e);
    }
    q.to_vec().unwrap()
}

/// The fast path's answer, parsed back by hickory.
fn ask(inner: &Inner, wire: &[u8]) -> Option<Message> {
    let mut out = Vec::new();
    answer(inner, "n1", wire, ip("10.0.1.2"), &mut out).then(|| Message::from_vec(&out).expect("a valid DNS message"))
}

#[test]
fn own_names_are_answered_as_the_handler_would() {
    let inner = inner();
    let mut wire = query("web.", RecordType::A, None);
    wire[13..16].copy_from_slice(b"WeB");
    let m = ask(&inner, &wire).unwrap();
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert!(m.metadata.authoritative && m.metadata.recursion_available && m.metadata.recursion_desired);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    // The question as sent, case and all (DNS 0x20).
    let mut out = Vec::new();
    assert!(answer(&inner, "n1", &wire, ip("10.0.1.2"), &mut out));
    assert_eq!(&out[12..wire.len()], &wire[12..]);
    assert_eq!(m.queries[0].name().to_ascii().to_lowercase(), "web.");
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].ttl, LOCAL_TTL);
    assert_eq!(m.answers[0].data, RData::A("10.0.1.2".parse().unwrap()));
    assert!(m.edns.is_none());

    // A name of ours without an IPv6 address: NODATA.
    let m = ask(&inner, &query("web.", RecordType::AAAA, None)).unwrap();
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0));
    // Missing, single-label or under the network's zone: NXDOMAIN.
    for n in ["nothere.", "nothere.front."] {
        let m = ask(&inner, &query(n, RecordType::A, None)).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{n}");
    }
    // Reverse.
    let m = ask(&inner, &query("2.1.0.10.in-addr.arpa.", RecordType::PTR, None)).unwrap();
    assert_eq!(m.answers[0].data, RData::PTR(hickory_proto::rr::rdata::PTR(Name::from_str("web.front.").unwrap())));
    let m = ask(&inner, &query("99.1.0.10.in-addr.arpa.", RecordType::PTR, None)).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let q = inner.counts.0.iter().map(|c| c.load(std::sync::atomic::Ordering::Relaxed)).collect::<Vec<_>>();
    assert_eq!(&q[..2], &[4, 3], "local and nxdomain answers counted");
}

#[test]
fn edns_and_truncation() {
    let inner = inner();
    let m = ask(&inner, &query("web.", RecordType::A, Some(4096))).unwrap();
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    // 100 addresses are 1,600 bytes of answers: without EDNS as many as fit
    // 512 bytes, and the truncation bit.
    let m = ask(&inner, &query("many.", RecordType::A, None)).unwrap();
    assert!(m.metadata.truncation);
    assert_eq!(m.answers.len(), (512 - 12 - 10) / 16);
    let m = ask(&inner, &query("many.", RecordType::A, Some(1232))).unwrap();
    assert!(m.metadata.truncation);
    assert_eq!(m.answers.len(), (1232 - 12 - 10 - 11) / 16);
    let m = ask(&inner, &query("many.", RecordType::A, Some(65000))).unwrap();
    assert!(m.metadata.truncation, "never more than weft's own 1232 bytes");
}

#[test]
fn everything_else_goes_to_the_handler() {
    let inner = inner();
    let slow = |wire: &[u8]| ask(&inner, wire).is_none();
    // Names to forward, types and classes it does not answer.
    assert!(slow(&query("example.com.", RecordType::A, None)));
    assert!(slow(&query("web.", RecordType::MX, None)));
    assert!(slow(&query("web.", RecordType::ANY, None)));
    assert!(slow(&query("8.8.8.8.in-addr.arpa.", RecordType::PTR, None)));
    assert!(slow(&query("1.0.10.in-addr.arpa.", RecordType::PTR, None)));
    let mut chaos = query("web.", RecordType::A, None);
    let n = chaos.len();
    chaos[n - 1] = 3;
    assert!(slow(&chaos));
    // Malformed or unusual messages.
    let good = query("web.", RecordType::A, None);
    for cut in 0..good.len() {
        assert!(slow(&good[..cut]), "cut at {cut}");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(slow(&trailing));
    let mut answer_bit = good.clone();
    answer_bit[2] |= 0x80;
    assert!(slow(&answer_bit));
    let mut notify = good.clone();
    notify[2] |= 4 << 3;
    assert!(slow(&notify));
    let mut two = good.clone();
    two[5] = 2;
    assert!(slow(&two));
    let mut odd = good.clone();
    odd[13] = b'.';
    assert!(slow(&odd), "a label with a dot in it");
    // EDNS version 1 is hickory's to refuse (BADVERS).
    let mut v1 = query("web.", RecordType::A, Some(1232));
    let opt = v1.len() - 11;
    v1[opt + 6] = 1;
    assert!(slow(&v1));
}

#[test]
fn reverse_names() {
    assert_eq!(arpa_address("4.3.2.1.in-addr.arpa"), Some(ip("1.2.3.4")));
    assert_eq!(arpa_address("3.2.1.in-addr.arpa"), None);
    assert_eq!(arpa_address("256.3.2.1.in-addr.arpa"), None);
    let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
    assert_eq!(arpa_address(v6), Some(ip("fd00::1")));
    assert_eq!(arpa_address("0.d.f.ip6.arpa"), None);
}
