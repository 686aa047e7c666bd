use super::*;
use crate::policy::Isolation;

fn rs() -> RuleSet {
    RuleSet {
        isolated: vec![Isolation::new("db", Direction::Ingress, "NetworkPolicy x/db")],
        rules: vec![Rule {
            name: "x/db: ingress[0]".into(),
            source: "NetworkPolicy x/db".into(),
            group: "db".into(),
            direction: Direction::Ingress,
            peers: vec![
                Peer::Group("web".into()),
                Peer::Cidr { prefix: "10.0.0.0/24".parse().unwrap(), except: vec!["10.0.0.128/25".parse().unwrap()] },
            ],
            proto: RuleProto::Ports(Proto::Tcp),
            ports: vec![(5432, 5432)],
            named_ports: vec![],
        }],
    }
}

fn side<'a>(addr: &str, groups: &'a [String]) -> Side<'a> {
    Side { addr: addr.parse().unwrap(), groups, port_names: &[] }
}

#[test]
fn verdicts_name_the_rule_or_the_isolation() {
    let subnets: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
    let db = ["db".to_string()];
    let web = ["web".to_string()];
    let none: [String; 0] = [];
    let rs = rs();
    let e = explain(&rs, &subnets, &side("10.0.0.9", &web), &side("10.0.0.2", &db), Flow::Port(Proto::Tcp, 5432));
    assert!(e.allowed);
    assert_eq!(e.egress, Check::NotIsolated);
    assert_eq!(e.ingress, Check::Allowed { rule: "x/db: ingress[0]".into(), source: "NetworkPolicy x/db".into() });
    // Wrong port, wrong protocol.
    for flow in [Flow::Port(Proto::Tcp, 80), Flow::Port(Proto::Udp, 5432), Flow::Icmp] {
        let e = explain(&rs, &subnets, &side("10.0.0.9", &web), &side("10.0.0.2", &db), flow);
        assert!(!e.allowed, "{flow}");
        assert_eq!(e.ingress, Check::Denied { isolated_by: vec![("db".into(), "NetworkPolicy x/db".into())] });
    }
    // Not in the group, but inside the CIDR (and not in its except).
    assert!(
        explain(&rs, &subnets, &side("10.0.0.9", &none), &side("10.0.0.2", &db), Flow::Port(Proto::Tcp, 5432)).allowed
    );
    assert!(
        !explain(&rs, &subnets, &side("10.0.0.200", &none), &side("10.0.0.2", &db), Flow::Port(Proto::Tcp, 5432))
            .allowed
    );
    // The unisolated side is never restricted.
    assert!(explain(&rs, &subnets, &side("10.0.0.2", &db), &side("10.0.0.9", &web), Flow::Port(Proto::Tcp, 1)).allowed);
}

#[test]
fn named_ports_resolve_on_the_destination() {
    use crate::ports::NamedPort;
    let subnets: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
    let mut rs = rs();
    rs.rules[0].ports = vec![];
    rs.rules[0].named_ports = vec!["pg".into()];
    let db = ["db".to_string()];
    let web = ["web".to_string()];
    let declares = [NamedPort::parse("p", "pg=6432").unwrap()];
    let to = |port_names| Side { addr: "10.0.0.2".parse().unwrap(), groups: &db, port_names };
    let flow = |p| Flow::Port(Proto::Tcp, p);
    assert!(explain(&rs, &subnets, &side("10.0.0.9", &web), &to(&declares), flow(6432)).allowed);
    assert!(!explain(&rs, &subnets, &side("10.0.0.9", &web), &to(&declares), flow(5432)).allowed);
    assert!(!explain(&rs, &subnets, &side("10.0.0.9", &web), &to(&[]), flow(6432)).allowed, "not declared");
    let udp = [NamedPort::parse("p", "pg=6432/udp").unwrap()];
    assert!(!explain(&rs, &subnets, &side("10.0.0.9", &web), &to(&udp), flow(6432)).allowed, "another protocol");
}

#[test]
fn flows_parse() {
    assert_eq!(Flow::parse("80").unwrap(), Flow::Port(Proto::Tcp, 80));
    assert_eq!(Flow::parse("53/udp").unwrap(), Flow::Port(Proto::Udp, 53));
    assert_eq!(Flow::parse("ICMP").unwrap(), Flow::Icmp);
    assert!(Flow::parse("0").is_err());
    assert!(Flow::parse("80/gre").is_err());
}
