use super::*;

fn rule(group: &str, peers: Vec<Peer>) -> Rule {
    Rule {
        name: "r".into(),
        source: "doc".into(),
        group: group.into(),
        direction: Direction::Ingress,
        peers,
        proto: RuleProto::Ports(Proto::Tcp),
        ports: vec![(80, 80)],
        named_ports: vec![],
    }
}

#[test]
fn groups_in_first_use_order() {
    let rs = RuleSet {
        isolated: vec![Isolation::new("db", Direction::Ingress, "doc")],
        rules: vec![rule("db", vec![Peer::Group("web".into()), Peer::Network]), rule("web", vec![Peer::Any])],
    };
    assert_eq!(rs.groups(), ["db", "web"]);
    assert!(rs.validate().is_ok());
}

#[test]
fn bad_rule_sets_are_refused() {
    let mut r = rule("db", vec![]);
    r.ports = vec![(90, 80)];
    assert!(RuleSet { isolated: vec![], rules: vec![r] }.validate().is_err());
    let mut r = rule("db", vec![]);
    r.proto = RuleProto::Any;
    assert!(RuleSet { isolated: vec![], rules: vec![r] }.validate().unwrap_err().contains("ports need"));
    let r = rule(
        "db",
        vec![Peer::Cidr { prefix: "10.0.0.0/8".parse().unwrap(), except: vec!["192.168.0.0/16".parse().unwrap()] }],
    );
    assert!(RuleSet { isolated: vec![], rules: vec![r] }.validate().is_err());
    assert!(
        RuleSet { isolated: vec![Isolation::new("", Direction::Egress, "doc")], rules: vec![] }.validate().is_err()
    ); // Named ports: a protocol with ports, and names Kubernetes accepts.
    let named = |proto, name: &str| {
        let mut r = rule("db", vec![]);
        (r.proto, r.ports, r.named_ports) = (proto, vec![], vec![name.to_owned()]);
        RuleSet { isolated: vec![], rules: vec![r] }.validate()
    };
    assert!(named(RuleProto::Ports(Proto::Tcp), "http").is_ok());
    assert!(named(RuleProto::Icmp, "http").unwrap_err().contains("ports need"));
    assert!(named(RuleProto::Ports(Proto::Tcp), "HTTP").unwrap_err().contains("port name \"HTTP\""));
}
