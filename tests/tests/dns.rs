//! The embedded DNS server, queried from inside container namespaces with a
//! real resolver client (`dig`): names, aliases, `<name>.<network>`, PTR,
//! AAAA, NXDOMAIN vs NODATA, network scoping, TCP, forwarding to a fake
//! upstream with timeout and fallback, truncation with TCP retry, and no
//! query lost while endpoints come and go.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tonic::Code;
use weft_grpc::pb;
use weft_tests::{Host, Netns, on_ns};

/// `dig` from inside `ns`; returns stdout.
fn dig(ns: &Netns, args: &[&str]) -> String {
    let mut all = vec!["dig", "+time=3", "+tries=1"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&ns.exec(&all).stdout).into_owned()
}

fn short(ns: &Netns, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+short"];
    all.extend_from_slice(args);
    let mut v: Vec<String> = dig(ns, &all).lines().map(str::to_owned).filter(|l| !l.starts_with(";;")).collect();
    v.sort();
    v
}

fn status(out: &str) -> String {
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("none").to_owned()
}

async fn create(
    host: &Host,
    name: &str,
    subnets: &[&str],
    opts: &[(&str, &str)],
) -> Result<pb::Network, tonic::Status> {
    let req = pb::CreateNetworkRequest {
        name: name.into(),
        subnets: subnets.iter().map(|s| pb::Subnet { subnet: (*s).into(), ..Default::default() }).collect(),
        options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
        ..Default::default()
    };
    host.networks().await.create_network(req).await.map(|r| r.into_inner())
}

async fn attach(host: &Host, network: &str, name: &str, ns: &Netns, aliases: &[&str]) -> pb::Endpoint {
    let req = pb::AttachEndpointRequest {
        network: network.into(),
        name: name.into(),
        netns: ns.path(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    host.endpoints().await.attach_endpoint(req).await.unwrap().into_inner()
}

async fn detach(host: &Host, network: &str, name: &str) {
    let req = pb::DetachEndpointRequest { network: network.into(), name: name.into(), ..Default::default() };
    host.endpoints().await.detach_endpoint(req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_names_aliases_ptr_and_scope() {
    let host = Host::new("dnsnames");
    create(&host, "front", &["10.61.0.0/24", "fd00:61::/64"], &[]).await.unwrap();
    create(&host, "back", &["10.62.0.0/24"], &[]).await.unwrap();
    let web = host.container("web");
    let cli = host.container("cli");
    let db = host.container("db");
    let e = attach(&host, "front", "web", &web, &["www", "Api"]).await;
    assert_eq!(e.dns_servers, ["10.61.0.1", "fd00:61::1"]);
    assert_eq!(e.dns_search, ["front"]);
    assert_eq!(e.aliases, ["www", "api"]);
    attach(&host, "front", "cli", &cli, &[]).await;
    attach(&host, "back", "db", &db, &[]).await;

    let at = "@10.61.0.1";
    assert_eq!(short(&cli, &[at, "web"]), ["10.61.0.2"]);
    assert_eq!(short(&cli, &[at, "WWW"]), ["10.61.0.2"], "names are case-insensitive");
    assert_eq!(short(&cli, &[at, "api.front"]), ["10.61.0.2"]);
    assert_eq!(short(&cli, &[at, "web.front", "AAAA"]), ["fd00:61::2"]);
    assert_eq!(short(&cli, &[at, "-x", "10.61.0.2"]), ["web.front."]);
    assert_eq!(short(&cli, &[at, "-x", "fd00:61::2"]), ["web.front."]);
    assert_eq!(short(&cli, &["@fd00:61::1", "web"]), ["10.61.0.2"], "served on the IPv6 gateway too");
    assert_eq!(short(&cli, &["+tcp", at, "web"]), ["10.61.0.2"], "TCP");
    // NXDOMAIN for a name that does not exist, NODATA for a missing type.
    assert_eq!(status(&dig(&cli, &[at, "nothere"])), "NXDOMAIN");
    assert_eq!(status(&dig(&cli, &[at, "nothere.front"])), "NXDOMAIN");
    let nodata = dig(&cli, &[at, "web", "MX"]);
    assert_eq!(status(&nodata), "NOERROR");
    assert!(nodata.contains("ANSWER: 0"), "{nodata}");
    assert_eq!(status(&dig(&cli, &[at, "-x", "10.61.0.99"])), "NXDOMAIN");
    // Scope: db is on a network cli does not share.
    assert_eq!(status(&dig(&cli, &[at, "db"])), "NXDOMAIN");
    assert_eq!(short(&db, &["@10.62.0.1", "db"]), ["10.62.0.2"]);
    assert_eq!(status(&dig(&db, &["@10.62.0.1", "web"])), "NXDOMAIN");
    // TTL and EDNS are set.
    let full = dig(&cli, &[at, "web", "+edns=0"]);
    assert!(full.contains("EDNS: version: 0"), "{full}");
    assert!(full.contains("\t60\tIN\tA\t10.61.0.2"), "{full}");
    // Joining "back" too, cli sees db as well.
    let req = pb::AttachEndpointRequest {
        network: "back".into(),
        name: "cli".into(),
        netns: cli.path(),
        ..Default::default()
    };
    host.endpoints().await.attach_endpoint(req).await.unwrap();
    assert_eq!(short(&cli, &[at, "db"]), ["10.62.0.2"]);
    // Detach is visible to the next query.
    detach(&host, "front", "web").await;
    assert_eq!(status(&dig(&cli, &[at, "web"])), "NXDOMAIN");
}

/// A fake upstream resolver in a test namespace: `example.test` has one A
/// record, `big.test` has 60 (too many for 512 bytes of UDP), anything else
/// is NXDOMAIN. Serves UDP and TCP until `stop` is set.
fn fake_upstream(ns: &str, addr: &str, stop: Arc<AtomicBool>) {
    fn answer(query: &[u8]) -> Vec<u8> {
        let q = Message::from_vec(query).unwrap();
        let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_available = true;
        let question = q.queries[0].clone();
        let name = question.name().to_ascii().to_ascii_lowercase();
        let count = match name.as_str() {
            "example.test." => 1u8,
            "big.test." => 60,
            _ => 0,
        };
        for i in 0..count {
            let rd = RData::A(A(Ipv4Addr::new(192, 0, 2, 10 + i)));
            m.answers.push(Record::from_rdata(question.name().clone(), 30, rd));
        }
        if count == 0 {
            m.metadata.response_code = ResponseCode::NXDomain;
        }
        m.queries.push(question);
        m.to_vec().unwrap()
    }
    let addr: SocketAddr = addr.parse().unwrap();
    let (s1, s2) = (stop.clone(), stop);
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    on_ns(ns, move || {
        let u = UdpSocket::bind(addr).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 4096];
        while !s1.load(Ordering::SeqCst) {
            if let Ok((n, peer)) = u.recv_from(&mut buf) {
                let _ = u.send_to(&answer(&buf[..n]), peer);
            }
        }
    });
    on_ns(ns, move || {
        let l = TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        tx2.send(()).unwrap();
        while !s2.load(Ordering::SeqCst) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
            if s.read_exact(&mut q).is_ok() {
                let a = answer(&q);
                let _ = s.write_all(&(a.len() as u16).to_be_bytes());
                let _ = s.write_all(&a);
            }
        }
    });
    rx.recv().unwrap();
    rx.recv().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_with_fallback_and_truncation() {
    let host = Host::new("dnsfwd");
    let out = host.outside(8);
    let stop = Arc::new(AtomicBool::new(false));
    fake_upstream(&out.name, "198.18.8.2:53", stop.clone());
    // The first upstream never answers (nothing at that address): weft must
    // time out on it and fall back to the second.
    create(&host, "n", &["10.63.0.0/24"], &[("dns_upstream", "198.18.8.99,198.18.8.2")]).await.unwrap();
    let c = host.container("c");
    attach(&host, "n", "c", &c, &[]).await;
    let at = "@10.63.0.1";
    assert_eq!(short(&c, &[at, "example.test"]), ["192.0.2.10"], "forwarded after the dead upstream timed out");
    assert_eq!(status(&dig(&c, &[at, "missing.test"])), "NXDOMAIN", "upstream NXDOMAIN is passed on");
    // 60 A records do not fit 512 bytes: the UDP answer is truncated, dig
    // retries over TCP, and weft forwards that over TCP.
    let big = dig(&c, &[at, "big.test", "+noedns"]);
    assert!(big.contains("Truncated, retrying in TCP mode"), "{big}");
    assert!(big.contains("ANSWER: 60"), "{big}");
    // With every upstream dead: SERVFAIL, not a hang.
    create(&host, "dead", &["10.64.0.0/24"], &[("dns_upstream", "198.18.8.99")]).await.unwrap();
    let d = host.container("d");
    attach(&host, "dead", "d", &d, &[]).await;
    assert_eq!(status(&dig(&d, &["@10.64.0.1", "example.test"])), "SERVFAIL");
    stop.store(true, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_off_and_bad_bindings() {
    let host = Host::new("dnsoff");
    create(&host, "quiet", &["10.65.0.0/24"], &[("dns", "false")]).await.unwrap();
    let c = host.container("c");
    let e = attach(&host, "quiet", "c", &c, &[]).await;
    assert!(e.dns_servers.is_empty() && e.dns_search.is_empty());
    assert!(short(&c, &["@10.65.0.1", "c"]).is_empty(), "no server on a network with dns=false");
    let mut nets = host.networks().await;
    let req = pb::CreateNetworkRequest {
        name: "x".into(),
        subnets: vec![pb::Subnet { subnet: "10.66.0.0/24".into(), ..Default::default() }],
        naming: "no-such-naming".into(),
        ..Default::default()
    };
    assert_eq!(nets.create_network(req).await.unwrap_err().code(), Code::NotFound);
    let bad = pb::AttachEndpointRequest {
        network: "quiet".into(),
        name: "y".into(),
        netns: c.path(),
        aliases: vec!["not a name".into()],
        ..Default::default()
    };
    let e = host.endpoints().await.attach_endpoint(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("aliases[0]"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_query_lost_while_endpoints_come_and_go() {
    let host = Host::new("dnsloop");
    create(&host, "n", &["10.67.0.0/24"], &[]).await.unwrap();
    let web = host.container("web");
    let cli = host.container("cli");
    attach(&host, "n", "web", &web, &[]).await;
    attach(&host, "n", "cli", &cli, &[]).await;

    // A resolver loop inside `cli`: one outstanding query at a time, each
    // must be answered (with web's address) within 2 s, no retries.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, lost) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (st, se, lo) = (stop.clone(), sent.clone(), lost.clone());
    let looper = on_ns(&cli.name, move || {
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.connect("10.67.0.1:53").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut id: u16 = 0;
        let mut buf = [0u8; 1500];
        while !st.load(Ordering::SeqCst) {
            id = id.wrapping_add(1);
            let mut q = Message::new(id, MessageType::Query, OpCode::Query);
            q.metadata.recursion_desired = true;
            q.queries.push(Query::query(Name::from_str("web.").unwrap(), RecordType::A));
            u.send(&q.to_vec().unwrap()).unwrap();
            se.fetch_add(1, Ordering::SeqCst);
            let ok = u.recv(&mut buf).ok().and_then(|n| Message::from_vec(&buf[..n]).ok()).is_some_and(|m| {
                m.metadata.id == id && m.answers.iter().any(|r| r.data == RData::A(A(Ipv4Addr::new(10, 67, 0, 2))))
            });
            if !ok {
                lo.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let spare: Vec<Netns> = (0..4).map(|i| host.container(&format!("s{i}"))).collect();
    for i in 0..100 {
        let ns = &spare[i % spare.len()];
        attach(&host, "n", &format!("tmp{i}"), ns, &[]).await;
        detach(&host, "n", &format!("tmp{i}")).await;
    }
    stop.store(true, Ordering::SeqCst);
    looper.join().unwrap();
    let (sent, lost) = (sent.load(Ordering::SeqCst), lost.load(Ordering::SeqCst));
    println!("queries sent during 100 attach+detach cycles: {sent}, lost: {lost}");
    assert!(sent > 100, "the loop ran throughout ({sent} queries)");
    assert_eq!(lost, 0, "{lost} of {sent} queries lost");
}
