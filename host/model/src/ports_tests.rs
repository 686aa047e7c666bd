use super::*;

#[test]
fn parses_docker_syntax() {
    let m = PortMapping::parse("publish", "8080:80").unwrap();
    assert_eq!(
        (m.host_ip, m.host_port, m.host_port_end, m.container_port, m.proto),
        (None, 8080, 8080, 80, Proto::Tcp)
    );
    let m = PortMapping::parse("publish", "127.0.0.1:53:53/udp").unwrap();
    assert_eq!(m.host_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(m.proto, Proto::Udp);
    let m = PortMapping::parse("publish", "[::1]:8443:443/sctp").unwrap();
    assert_eq!(m.host_ip, Some("::1".parse().unwrap()));
    assert_eq!(m.to_string(), "[::1]:8443:443/sctp");
    let m = PortMapping::parse("publish", "9000-9002:7000-7002").unwrap();
    assert_eq!(m.pairs().collect::<Vec<_>>(), [(9000, 7000), (9001, 7001), (9002, 7002)]);
    assert_eq!(m.to_string(), "9000-9002:7000-7002/tcp");
    assert_eq!(PortMapping::parse("publish", "0.0.0.0:80:80").unwrap().host_ip, None);
}

#[test]
fn rejects_bad_mappings() {
    for bad in ["80", "0:80", "70000:80", "8080:80/icmp", "9000-9001:80", "x:1:2", "9-1:9-1", "[::1:80:80"] {
        let e = PortMapping::parse("publish[0]", bad).unwrap_err();
        assert_eq!(e.field, "publish[0]", "{bad}");
    }
}

#[test]
fn clashes() {
    let p = |s: &str| PortMapping::parse("p", s).unwrap();
    assert!(p("8080:80").clashes_with(&p("127.0.0.1:8080:81")));
    assert!(!p("8080:80").clashes_with(&p("8080:80/udp")));
    assert!(!p("10.0.0.1:8080:80").clashes_with(&p("10.0.0.2:8080:80")));
    assert!(p("8000-8010:8000-8010").clashes_with(&p("8005:80")));
    assert!(!p("8000-8010:8000-8010").clashes_with(&p("8011:80")));
}

#[test]
fn broadcast_and_multicast_host_ips_are_refused() {
    for spec in ["255.255.255.255:8080:80", "224.0.0.1:8080:80", "[ff02::1]:8080:80"] {
        let e = PortMapping::parse("publish", spec).unwrap_err();
        assert!(e.reason.contains("broadcast or multicast"), "{spec}: {e}");
    }
    assert!(PortMapping::parse("publish", "192.0.2.1:8080:80").is_ok());
}

#[test]
fn named_ports_follow_kubernetes_rules() {
    let n = NamedPort::parse("port_names[0]", "http=80").unwrap();
    assert_eq!((n.name.as_str(), n.port, n.proto), ("http", 80, Proto::Tcp));
    assert_eq!(NamedPort::parse("port_names[0]", "dns-udp=53/udp").unwrap().to_string(), "dns-udp=53/udp");
    assert_eq!(NamedPort::parse("p", "serve-80-tcp=80/tcp").unwrap().name, "serve-80-tcp");
    for (bad, why) in [
        ("http", "NAME=PORT"),
        ("=80", "1 to 15"),
        ("a-very-long-port-name=80", "1 to 15"),
        ("HTTP=80", "lower-case"),
        ("web_ui=80", "lower-case"),
        ("8080=80", "a letter"),
        ("-http=80", "start or end"),
        ("ht--tp=80", "start or end"),
        ("http=0", "1 to 65535"),
        ("http=80/icmp", "icmp"),
    ] {
        let e = NamedPort::parse("port_names[2]", bad).unwrap_err();
        assert_eq!(e.field, "port_names[2]", "{bad}");
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
}
