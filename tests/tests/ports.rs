//! Published ports, tested with real TCP and UDP traffic: from an outside
//! host (client address preserved), from the host itself (127.0.0.1 and its
//! own addresses), from a container of the same network (hairpin) and from a
//! container of another, isolated network; host-IP limits, conflicts,
//! removal on detach, IPv6.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use tonic::Code;
use weft_grpc::pb;
use weft_tests::{Host, Netns, Server, tcp_connect, udp_query};

async fn attach_publishing(
    host: &Host,
    network: &str,
    name: &str,
    ns: &Netns,
    publish: &[&str],
) -> Result<pb::Endpoint, tonic::Status> {
    let req = pb::AttachEndpointRequest {
        network: network.into(),
        name: name.into(),
        netns: ns.path(),
        publish: publish.iter().map(|p| (*p).to_string()).collect(),
        ..Default::default()
    };
    host.endpoints().await.attach_endpoint(req).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_reach_the_container_from_everywhere() {
    let host = Host::new("ports");
    let out = host.outside(3);
    host.create_network("a", &["10.80.0.0/24", "fd00:80::/64"]).await.unwrap();
    host.create_network("b", &["10.81.0.0/24"]).await.unwrap();
    let web = host.container("web");
    let peer = host.container("peer");
    let other = host.container("other");
    let ep = attach_publishing(&host, "a", "web", &web, &["8080:80", "5353:53/udp"]).await.unwrap();
    assert_eq!(ep.publish, ["8080:80/tcp", "5353:53/udp"]);
    attach_publishing(&host, "a", "peer", &peer, &[]).await.unwrap();
    attach_publishing(&host, "b", "other", &other, &[]).await.unwrap();
    let srv = Server::start(&web.name, "[::]:80");
    let srv_udp = Server::start(&web.name, "[::]:53");

    // a. From an outside host, on the host's address; client address kept.
    assert_eq!(tcp_connect(&out.name, "198.18.3.1:8080").unwrap(), "hello");
    assert_eq!(srv.last_peer().unwrap().to_string(), "198.18.3.2", "source address preserved");
    assert_eq!(udp_query(&out.name, "198.18.3.1:5353").unwrap(), "hello");
    assert_eq!(srv_udp.last_peer().unwrap().to_string(), "198.18.3.2");
    // IPv6 from outside.
    assert_eq!(tcp_connect(&out.name, "[fd00:198:3::1]:8080").unwrap(), "hello");
    assert_eq!(srv.last_peer().unwrap().to_string(), "fd00:198:3::2");

    // b. From the host itself, on 127.0.0.1 and on its own address.
    assert_eq!(tcp_connect(&host.ns.name, "127.0.0.1:8080").unwrap(), "hello");
    assert_eq!(tcp_connect(&host.ns.name, "198.18.3.1:8080").unwrap(), "hello");
    assert_eq!(udp_query(&host.ns.name, "127.0.0.1:5353").unwrap(), "hello");

    // c. Hairpin: a container of the same network through the host address.
    assert_eq!(tcp_connect(&peer.name, "198.18.3.1:8080").unwrap(), "hello");

    // d. A container of another network through the host address, though it
    // cannot reach the container directly (networks are isolated).
    assert_eq!(tcp_connect(&other.name, "198.18.3.1:8080").unwrap(), "hello");
    assert_eq!(srv.last_peer().unwrap().to_string(), "10.81.0.2", "source kept across networks");
    assert!(tcp_connect(&other.name, "10.80.0.2:80").is_err(), "networks are isolated");
    let _other_srv = Server::start(&other.name, "[::]:81");
    assert!(tcp_connect(&web.name, "10.81.0.2:81").is_err(), "isolated in both directions");

    // A second endpoint may not take the same host port.
    let late = host.container("late");
    let e = attach_publishing(&host, "b", "late", &late, &["8080:81"]).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains("\"web\""), "names the holder: {}", e.message());
    assert_eq!(late.links(), ["lo"], "refused attach left nothing");
    // Other protocol, same port: fine.
    attach_publishing(&host, "b", "late", &late, &["8080:81/udp"]).await.unwrap();

    // Detach removes the mapping.
    host.endpoints()
        .await
        .detach_endpoint(pb::DetachEndpointRequest { network: "a".into(), name: "web".into(), ..Default::default() })
        .await
        .unwrap();
    assert!(tcp_connect(&out.name, "198.18.3.1:8080").is_err(), "mapping removed on detach");
    let table =
        String::from_utf8_lossy(&host.ns.exec(&["nft", "list", "map", "inet", "weft", "pub4_any"]).stdout).into_owned();
    assert!(!table.contains("tcp . 8080"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ip_limits_a_published_port() {
    let host = Host::new("hostip");
    let out = host.outside(4);
    host.ns.exec(&["ip", "addr", "add", "198.18.40.1/32", "dev", "lo"]);
    host.create_network("a", &["10.82.0.0/24"]).await.unwrap();
    let web = host.container("web");
    attach_publishing(&host, "a", "web", &web, &["198.18.4.1:9090:80", "127.0.0.1:9191:80"]).await.unwrap();
    let _srv = Server::start(&web.name, "0.0.0.0:80");
    assert_eq!(tcp_connect(&out.name, "198.18.4.1:9090").unwrap(), "hello");
    assert!(tcp_connect(&host.ns.name, "198.18.40.1:9090").is_err(), "not published on other host addresses");
    assert!(tcp_connect(&host.ns.name, "127.0.0.1:9090").is_err());
    assert_eq!(tcp_connect(&host.ns.name, "127.0.0.1:9191").unwrap(), "hello");
    assert!(tcp_connect(&out.name, "198.18.4.1:9191").is_err(), "loopback-only port is not reachable from outside");

    // Same port on a different host IP does not clash; on "any" it does.
    let second = host.container("second");
    attach_publishing(&host, "a", "second", &second, &["198.18.40.1:9090:80"]).await.unwrap();
    let third = host.container("third");
    assert_eq!(
        attach_publishing(&host, "a", "third", &third, &["9090:80"]).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    // Bad mappings are refused with the field named.
    let e = attach_publishing(&host, "a", "third", &third, &["70000:80"]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("publish[0]"), "{}", e.message());
}

/// True if this kernel can open SCTP sockets (many CI kernels cannot).
fn sctp_supported() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sctp_published_port() {
    if !sctp_supported() {
        eprintln!("SKIPPED sctp_published_port: this kernel has no SCTP (socket(IPPROTO_SCTP) fails)");
        return;
    }
    let host = Host::new("sctp");
    let out = host.outside(6);
    host.create_network("a", &["10.72.0.0/24"]).await.unwrap();
    let web = host.container("web");
    attach_publishing(&host, "a", "web", &web, &["3868:3868/sctp"]).await.unwrap();
    let server = "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_STREAM,socket.IPPROTO_SCTP);\
s.bind(('0.0.0.0',3868));s.listen(1);s.settimeout(10);c,_=s.accept();c.send(b'hello')";
    let mut srv =
        std::process::Command::new("ip").args(["netns", "exec", &web.name, "python3", "-c", server]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let client = "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_STREAM,socket.IPPROTO_SCTP);\
s.settimeout(5);s.connect(('198.18.6.1',3868));print(s.recv(5).decode())";
    let got = out.exec(&["python3", "-c", client]);
    let _ = srv.kill();
    let _ = srv.wait();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "hello", "{}", String::from_utf8_lossy(&got.stderr));
}
