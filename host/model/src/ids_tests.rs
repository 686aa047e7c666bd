use super::*;

#[test]
fn ifname_limits() {
    assert!(IfName::parse("ifname", "eth0").is_ok());
    assert!(IfName::parse("ifname", "abcdefghijklmno").is_ok());
    let e = IfName::parse("ifname", "abcdefghijklmnop").unwrap_err();
    assert_eq!(e.field, "ifname");
    assert!(e.reason.contains("1 to 15 bytes"), "{e}");
    assert!(IfName::parse("ifname", "a/b").is_err());
    assert!(IfName::parse("ifname", "a b").is_err());
    assert!(IfName::parse("ifname", "..").is_err());
}

#[test]
fn mac_docker_rule_and_parse() {
    let m = Mac::from_ipv4("172.18.0.2".parse().unwrap());
    assert_eq!(m.to_string(), "02:42:ac:12:00:02");
    assert_eq!(Mac::parse("mac", "02:42:AC:12:00:02").unwrap(), m);
    assert!(Mac::parse("mac", "01:00:5e:00:00:01").unwrap_err().reason.contains("multicast"));
    assert!(Mac::parse("mac", "02:42:ac:12:00").is_err());
    assert!(Mac::parse("mac", "00:00:00:00:00:00").is_err());
}

#[test]
fn names_and_tenant() {
    assert_eq!(Tenant::parse("tenant", "").unwrap().as_str(), "default");
    assert!(Tenant::parse("tenant", "team_a.prod").is_ok(), "tenants keep the wider rule");
    assert!(NetworkName::parse("name", "web-1").is_ok());
    for bad in ["-bad", "bad-", "web-1.prod", "web_1", "EP1", "a."] {
        let e = NetworkName::parse("name", bad).unwrap_err().reason;
        assert!(e.contains("must be a DNS label") || e.contains("must start"), "{bad}: {e}");
    }
    assert!(NetworkName::parse("name", "").unwrap_err().reason.contains("empty"));
    assert!(EndpointName::parse("name", &"a".repeat(64)).is_err());
    // A huge name is echoed cut short.
    let e = EndpointName::parse("name", &"a".repeat(1_000_000)).unwrap_err().reason;
    assert!(e.len() < 200 && e.contains("(1000000 bytes)"), "{e}");
    // A name stored under the earlier rule still loads.
    let stored: NetworkName = serde_json::from_str("\"Web_1.prod\"").unwrap();
    assert_eq!(stored.as_str(), "Web_1.prod");
}
