use super::*;

fn req(subnet: &str) -> CreateNetwork {
    CreateNetwork {
        name: "n1".into(),
        subnets: vec![SubnetRequest { subnet: subnet.into(), ..Default::default() }],
        ..Default::default()
    }
}

#[test]
fn defaults() {
    let spec = req("10.89.0.0/24").validate().unwrap();
    assert_eq!(spec.tenant.as_str(), "default");
    assert_eq!(spec.driver, "bridge");
    assert_eq!(spec.subnets[0].gateway.to_string(), "10.89.0.1");
    assert_eq!(spec.ipam, DEFAULT_IPAM);
    let net = Network::new("0123456789abcdef0123456789abcdef".into(), spec).unwrap();
    assert_eq!(net.bridge.as_str(), "br-0123456789ab");
}

#[test]
fn subnet_rules() {
    let e = req("10.0.0.0/33").validate().unwrap_err();
    assert_eq!(e.to_string(), "subnets[0].subnet: 10.0.0.0/33: prefix length must be <= 32");
    let e = req("10.0.0.1/24").validate().unwrap_err();
    assert!(e.reason.contains("did you mean 10.0.0.0/24"), "{e}");
    assert!(req("nonsense").validate().is_err());
    assert!(req("10.0.0.0/31").validate().is_err());
    assert!(req("fd00::/64").validate().is_ok());
}

#[test]
fn reserved_ranges_are_refused_naming_the_range() {
    for (range, _) in crate::net::RESERVED {
        assert!(range.parse::<ipnet::IpNet>().is_ok(), "{range}");
    }
    for (subnet, range) in [
        ("0.0.0.0/0", "0.0.0.0/8"),
        ("0.0.0.0/8", "0.0.0.0/8"),
        ("127.0.0.0/8", "127.0.0.0/8 (loopback)"),
        ("127.1.0.0/16", "127.0.0.0/8 (loopback)"),
        ("169.254.0.0/16", "169.254.0.0/16 (link-local)"),
        ("224.1.0.0/16", "224.0.0.0/4 (multicast)"),
        ("240.0.0.0/4", "240.0.0.0/4"),
        ("::/64", "::/96"),
        ("::ffff:0:0/96", "::ffff:0:0/96 (IPv4-mapped)"),
        ("fe80::/64", "fe80::/10 (link-local)"),
        ("ff02::/16", "ff00::/8 (multicast)"),
    ] {
        let e = req(subnet).validate().unwrap_err();
        assert_eq!(e.field, "subnets[0].subnet", "{subnet}");
        assert!(e.reason.contains(&format!("overlaps {range}")), "{subnet}: {e}");
    }
    for ok in ["10.0.0.0/8", "172.16.0.0/12", "192.168.1.0/24", "100.64.0.0/10", "fd00:1::/64", "2001:db8::/64"] {
        assert!(req(ok).validate().is_ok(), "{ok}");
    }
}

#[test]
fn gateway_and_range_must_be_inside() {
    let mut r = req("10.89.0.0/24");
    r.subnets[0].gateway = "10.90.0.1".into();
    let e = r.validate().unwrap_err();
    assert_eq!(e.field, "subnets[0].gateway");
    r.subnets[0].gateway = "10.89.0.255".into();
    assert!(r.validate().is_err(), "broadcast is not a usable gateway");
    r.subnets[0].gateway = "10.89.0.254".into();
    r.subnets[0].ip_range = "10.89.1.0/25".into();
    assert_eq!(r.validate().unwrap_err().field, "subnets[0].ip_range");
    r.subnets[0].ip_range = "10.89.0.128/25".into();
    assert!(r.validate().is_ok());
}

#[test]
fn options_and_families() {
    let mut r = req("10.89.0.0/24");
    r.options.insert("mtu".into(), "9000".into());
    assert_eq!(r.validate().unwrap().mtu, Some(9000));
    r.options.insert("mtu".into(), "20".into());
    assert!(r.validate().is_err());
    r.options.clear();
    r.options.insert("colour".into(), "blue".into());
    assert!(r.validate().unwrap_err().reason.contains("unknown option"));
    r.options.clear();
    r.options.insert("bridge_name".into(), "a-very-long-bridge-name".into());
    assert!(r.validate().is_err());
    let mut r = req("10.89.0.0/24");
    r.subnets.push(SubnetRequest { subnet: "10.90.0.0/24".into(), ..Default::default() });
    assert!(r.validate().unwrap_err().reason.contains("one subnet per address family"));
    r.driver = "overlay".into();
}

#[test]
fn overlap_and_name_conflicts() {
    let a = Network::new("a".repeat(32), req("10.89.0.0/16").validate().unwrap()).unwrap();
    let mut r = req("10.89.3.0/24");
    r.name = "n2".into();
    let spec = r.validate().unwrap();
    let br = IfName::parse("b", "br-x").unwrap();
    assert!(matches!(conflicts_with(&spec, &br, &a), Some(InvalidOrExists::Invalid(_))));
    let spec = req("10.100.0.0/24").validate().unwrap();
    assert!(matches!(conflicts_with(&spec, &br, &a), Some(InvalidOrExists::Exists(_))));
    let mut other = req("10.100.0.0/24");
    other.tenant = "acme".into();
    assert!(conflicts_with(&other.validate().unwrap(), &br, &a).is_none());
}

#[test]
fn macvlan_parent_is_not_loopback() {
    let mut r = req("192.168.1.0/24");
    r.driver = "macvlan".into();
    r.options.insert("parent".into(), "lo".into());
    let e = r.validate().unwrap_err();
    assert!(e.reason.contains("loopback"), "{e}");
}
