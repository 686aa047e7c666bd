//! Golden tests: each plan is rendered to JSON (or nft text) and compared
//! with a file under `host/plan/golden/`. Run with `UPDATE_GOLDEN=1` to
//! rewrite the files after an intended change, then review the diff.

use std::path::PathBuf;

use weft_model::endpoint::{AttachEndpoint, Endpoint, EndpointMode, EndpointState};
use weft_model::network::{CreateNetwork, Network, SubnetRequest};
use weft_model::{IfName, Mac};

use weft_model::policy::RuleSet;

use super::*;

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    assert_eq!(actual, want, "plan differs from {}", path.display());
}

/// No policy: nothing isolated, no rules.
static NONE: RuleSet = RuleSet { isolated: Vec::new(), rules: Vec::new() };

fn json(ops: &[Op]) -> String {
    serde_json::to_string_pretty(ops).unwrap() + "\n"
}

fn network(name: &str, subnets: &[&str], internal: bool) -> Network {
    let req = CreateNetwork {
        name: name.into(),
        subnets: subnets.iter().map(|s| SubnetRequest { subnet: (*s).into(), ..Default::default() }).collect(),
        internal,
        ..Default::default()
    };
    Network::new(format!("{name:x<32}"), req.validate().unwrap()).unwrap()
}

fn endpoint(net: &Network, addrs: &[&str]) -> Endpoint {
    endpoint_publishing(net, addrs, &[])
}

fn endpoint_publishing(net: &Network, addrs: &[&str], publish: &[&str]) -> Endpoint {
    let spec = AttachEndpoint {
        network: net.spec.name.to_string(),
        name: "web".into(),
        netns: "/var/run/netns/c1".into(),
        publish: publish.iter().map(|p| (*p).to_string()).collect(),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let id = "abcdef0123456789abcdef0123456789".to_string();
    Endpoint {
        host_ifname: Endpoint::host_ifname_for(&id).unwrap(),
        netns_id: 0,
        network_id: net.id.clone(),
        id,
        spec,
        mac: Mac::from_ipv4("10.89.0.2".parse().unwrap()),
        addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        state: EndpointState::Pending,
        groups: vec![],
        node: None,
    }
}

#[test]
fn new_dual_stack_network() {
    let net = network("n1", &["10.89.0.0/24", "fd00:89::/64"], false);
    golden("network_new.json", &json(&plan_network(&net, None)));
}

#[test]
fn repair_network_missing_address() {
    let net = network("n1", &["10.89.0.0/24"], false);
    let observed = ObservedLink { addresses: vec![], up: true, master: None };
    golden("network_repair.json", &json(&plan_network(&net, Some(&observed))));
    let converged = ObservedLink { addresses: vec!["10.89.0.1/24".parse().unwrap()], up: true, master: None };
    let ops = plan_network(&net, Some(&converged));
    assert!(ops.iter().all(|o| matches!(o, Op::Sysctl { .. })), "converged network plans only sysctls: {ops:?}");
}

#[test]
fn attach_endpoint_dual_stack() {
    let net = network("n1", &["10.89.0.0/24", "fd00:89::/64"], false);
    let ep = endpoint(&net, &["10.89.0.2/24", "fd00:89::2/64"]);
    let tmp = Endpoint::peer_tmp_ifname_for(&ep.id).unwrap();
    golden("endpoint_attach.json", &json(&plan_endpoint(&net, &RuleSet::default(), &ep, &tmp)));
}

#[test]
fn internal_network_gets_no_default_route() {
    let net = network("n1", &["10.89.0.0/24"], true);
    let ep = endpoint(&net, &["10.89.0.2/24"]);
    let tmp = Endpoint::peer_tmp_ifname_for(&ep.id).unwrap();
    let ops = plan_endpoint(&net, &RuleSet::default(), &ep, &tmp);
    assert!(!ops.iter().any(|o| matches!(o, Op::AddDefaultRoute { .. })));
}

#[test]
fn undo_deletes_what_was_created_in_reverse() {
    let net = network("n1", &["10.89.0.0/24"], false);
    let ep = endpoint(&net, &["10.89.0.2/24"]);
    let tmp = Endpoint::peer_tmp_ifname_for(&ep.id).unwrap();
    let ops = plan_endpoint(&net, &RuleSet::default(), &ep, &tmp);
    // The veth pair is born across both namespaces in one op: deleting the
    // host end removes both, whatever was applied after it.
    let undo_ops = undo(&ops[..3]);
    assert_eq!(undo_ops, vec![Op::DeleteLink { ns: Ns::Host, link: ep.host_ifname.clone() }]);
    // A detach retires the host end (its deletion is batched later), and
    // undoing the retirement puts it back in service.
    let removal = plan_endpoint_removal(&net, &ep);
    let (link, master) = (ep.host_ifname.clone(), net.bridge.clone());
    assert_eq!(removal, vec![Op::RetireLink { link: link.clone(), master: master.clone() }]);
    assert_eq!(undo(&removal), vec![Op::ReviveLink { link, master }]);
    assert!(!ops.iter().any(|o| matches!(o, Op::MoveToNetns { .. } | Op::Rename { .. })));
    let created = plan_network(&net, None);
    assert_eq!(undo(&created), plan_network_removal(&net));
    let _ = IfName::parse("x", "x").unwrap();
}

/// Rule lines of a rendered table: depth-2 lines that are not a set's or a
/// chain's declaration.
fn rule_count(script: &str) -> usize {
    script
        .lines()
        .filter(|l| l.starts_with("\t\t"))
        .map(str::trim_start)
        .filter(|l| !l.starts_with("type ") && !l.starts_with("elements") && !l.starts_with("flags"))
        .count()
}

#[test]
fn ruleset_is_fixed_and_sets_grow() {
    let a = network("a", &["10.89.0.0/24", "fd00:89::/64"], false);
    let b = network("b", &["10.90.0.0/24"], true);
    let ep = endpoint_publishing(
        &a,
        &["10.89.0.2/24", "fd00:89::2/64"],
        &["8080:80", "127.0.0.1:5353:53/udp", "[fd00::1]:8443:443/sctp", "9000-9001:9000-9001"],
    );
    golden("ruleset_two_networks.nft", &nft::render_ruleset(&[(&a, &NONE), (&b, &NONE)], [&ep]));
    let one = nft::render_ruleset(&[(&a, &NONE)], []);
    let many: Vec<Network> =
        (0..50).map(|i| network(&format!("n{i}"), &[&format!("10.{}.0.0/24", 100 + i)], false)).collect();
    assert_eq!(
        rule_count(&one),
        rule_count(&nft::render_ruleset(&many.iter().map(|n| (n, &NONE)).collect::<Vec<_>>(), []))
    );
    assert_eq!(rule_count(&nft::render_ruleset(&[], [])), rule_count(&one));
    assert_eq!(rule_count(&one), 32);
}

#[test]
fn published_ports_become_map_elements_not_rules() {
    let a = network("a", &["10.89.0.0/24"], false);
    let counts: Vec<usize> = [1usize, 100, 1000]
        .iter()
        .map(|&n| {
            let eps: Vec<Endpoint> =
                (0..n).map(|i| endpoint_publishing(&a, &["10.89.0.2/24"], &[&format!("{}:80", 10000 + i)])).collect();
            let script = nft::render_ruleset(&[(&a, &NONE)], eps.iter());
            assert_eq!(script.matches(" : 10.89.0.2 . 80").count(), n, "one element per endpoint");
            rule_count(&script)
        })
        .collect();
    assert_eq!(counts, [32, 32, 32]);
}

/// One endpoint's elements as the nft script that would add or delete them
/// (what attach sends over netlink, in readable form); None if it has none.
fn render_endpoint(ep: &Endpoint, policy: &RuleSet, change: nft::Change) -> Option<String> {
    let elements = nft::endpoint_elements(ep, policy);
    if elements.is_empty() {
        return None;
    }
    let verb = match change {
        nft::Change::Add => "add",
        nft::Change::Delete => "delete",
    };
    let mut s = String::new();
    for (set, els) in nft::by_set(&elements) {
        let els: Vec<String> = els.iter().map(ToString::to_string).collect();
        s.push_str(&format!("{verb} element {} {} {set} {{ {} }}\n", nft::NFT_FAMILY, nft::NFT_TABLE, els.join(", ")));
    }
    Some(s)
}

#[test]
fn endpoint_elements_per_family_and_host_ip() {
    let a = network("a", &["10.89.0.0/24", "fd00:89::/64"], false);
    let ep = endpoint_publishing(
        &a,
        &["10.89.0.2/24", "fd00:89::2/64"],
        &["8080:80", "127.0.0.1:5353:53/udp", "[fd00::1]:8443:443/sctp", "9000-9001:9000-9001"],
    );
    golden("endpoint_publish_add.nft", &render_endpoint(&ep, &RuleSet::default(), nft::Change::Add).unwrap());
    let del = render_endpoint(&ep, &RuleSet::default(), nft::Change::Delete).unwrap();
    assert!(del.lines().all(|l| l.starts_with("delete element inet weft ")), "{del}");
    assert!(render_endpoint(&endpoint(&a, &["10.89.0.2/24"]), &RuleSet::default(), nft::Change::Add).is_none());
    let tmp = Endpoint::peer_tmp_ifname_for(&ep.id).unwrap();
    let ops = plan_endpoint(&a, &RuleSet::default(), &ep, &tmp);
    assert!(matches!(ops.last(), Some(Op::NftElements { .. })), "the nft transaction comes last");
}

fn macvlan_network() -> Network {
    let mut req = CreateNetwork {
        name: "mv".into(),
        driver: "macvlan".into(),
        subnets: vec![SubnetRequest { subnet: "192.168.50.0/24".into(), ..Default::default() }],
        ..Default::default()
    };
    req.options.insert("parent".into(), "enp1s0".into());
    Network::new(format!("{:x<32}", "mv"), req.validate().unwrap()).unwrap()
}

#[test]
fn macvlan_endpoint_and_removal() {
    let net = macvlan_network();
    assert!(!net.is_bridge());
    assert_eq!(net.bridge.as_str(), "enp1s0");
    assert!(plan_network(&net, None).is_empty(), "weft makes no host objects for a macvlan network");
    assert!(!nft::render_ruleset(&[(&net, &NONE)], []).contains("enp1s0"), "no firewall elements for macvlan");
    let ep = endpoint(&net, &["192.168.50.2/24"]);
    let tmp = Endpoint::peer_tmp_ifname_for(&ep.id).unwrap();
    golden("endpoint_macvlan.json", &json(&plan_endpoint(&net, &RuleSet::default(), &ep, &tmp)));
    assert_eq!(
        plan_endpoint_removal(&net, &ep),
        vec![Op::DeleteLink { ns: Ns::Path(ep.spec.netns.clone()), link: ep.spec.ifname.clone() }]
    );
}

#[test]
fn endpoint_modes() {
    let net = network("n1", &["10.89.0.0/24"], false);
    let mut ep = endpoint(&net, &[]);
    let tmp = Endpoint::peer_tmp_ifname_for(&ep.id).unwrap();
    ep.spec.mode = EndpointMode::None;
    assert_eq!(
        plan_endpoint(&net, &RuleSet::default(), &ep, &tmp),
        vec![Op::LinkUp { ns: Ns::Path(ep.spec.netns.clone()), link: IfName::parse("x", "lo").unwrap() }]
    );
    assert!(plan_endpoint_removal(&net, &ep).is_empty());
    ep.spec.mode = EndpointMode::Host;
    assert!(plan_endpoint(&net, &RuleSet::default(), &ep, &tmp).is_empty());
}

#[test]
fn policy_becomes_group_sets_and_rules() {
    use weft_model::policy::{Direction, Isolation, Peer, Rule, RuleProto};
    use weft_model::ports::Proto;
    let net = network("p", &["10.89.0.0/24", "fd00:89::/64"], false);
    let rs = RuleSet {
        isolated: vec![
            Isolation::new("db", Direction::Ingress, "policy/db"),
            Isolation::new("db", Direction::Egress, "policy/db"),
        ],
        rules: vec![
            Rule {
                name: "web-to-db".into(),
                source: "policy/db".into(),
                group: "db".into(),
                direction: Direction::Ingress,
                peers: vec![Peer::Group("web".into())],
                proto: RuleProto::Ports(Proto::Tcp),
                ports: vec![(5432, 5432), (6000, 6010)],
                named_ports: vec![],
            },
            Rule {
                name: "db-out".into(),
                source: "policy/db".into(),
                group: "db".into(),
                direction: Direction::Egress,
                peers: vec![Peer::Cidr {
                    prefix: "10.0.0.0/8".parse().unwrap(),
                    except: vec!["10.1.0.0/16".parse().unwrap()],
                }],
                proto: RuleProto::Any,
                ports: vec![],
                named_ports: vec![],
            },
        ],
    };
    let mut db = endpoint(&net, &["10.89.0.2/24", "fd00:89::2/64"]);
    db.groups = vec!["db".into(), "unused".into()];
    let script = nft::render_ruleset(&[(&net, &rs)], [&db]);
    golden("ruleset_policy.nft", &script);
    let els: Vec<(String, String)> =
        nft::endpoint_elements(&db, &rs).into_iter().map(|e| (e.set.clone(), e.to_string())).collect();
    assert!(els.contains(&("iso_in4".to_string(), "10.89.0.2".to_string())));
    assert!(els.contains(&("iso_out6".to_string(), "fd00:89::2".to_string())));
    assert!(els.iter().any(|(s, e)| s.starts_with("g4_") && e == "10.89.0.2"));
    assert!(!els.iter().any(|(_, e)| e.contains("unused")));
    // Rules grow with the policy, not with endpoints.
    let many: Vec<Endpoint> = (0..50)
        .map(|i| {
            let mut e = endpoint(&net, &[&format!("10.89.0.{}/24", i + 3)]);
            e.groups = vec!["web".into()];
            e
        })
        .collect();
    assert_eq!(rule_count(&script), rule_count(&nft::render_ruleset(&[(&net, &rs)], many.iter())));
}

#[test]
fn repairs_plan_only_what_drifted() {
    let net = network("n1", &["10.89.0.0/24", "fd00:89::/64"], false);
    let ep = endpoint(&net, &["10.89.0.2/24", "fd00:89::2/64"]);
    let fine = ObservedLink { addresses: vec![], up: true, master: Some(net.bridge.clone()) };
    assert!(plan_veth_repair(&net, &ep, &fine).is_empty());
    let loose = ObservedLink { master: None, ..fine.clone() };
    assert_eq!(
        plan_veth_repair(&net, &ep, &loose),
        vec![
            Op::SetMaster { link: ep.host_ifname.clone(), master: net.bridge.clone() },
            Op::LinkUp { ns: Ns::Host, link: ep.host_ifname.clone() },
        ]
    );
    let whole = ObservedInside {
        link: Some(ObservedLink { addresses: ep.addresses.clone(), up: true, master: None }),
        default_v4: true,
        default_v6: true,
    };
    assert!(plan_inside_repair(&net, &ep, &whole, true).is_empty());
    let bare = ObservedInside {
        link: Some(ObservedLink { addresses: vec![], up: false, master: None }),
        default_v4: false,
        default_v6: false,
    };
    let ops = plan_inside_repair(&net, &ep, &bare, true);
    let n_addrs = ep.addresses.len();
    assert_eq!(ops.len(), n_addrs + 1 + plan_default_routes(&net, &ep).len(), "{ops:?}");
    assert!(ops.iter().any(|o| matches!(o, Op::AddDefaultRoute { .. })));
    let not_owner = plan_inside_repair(&net, &ep, &bare, false);
    assert!(!not_owner.iter().any(|o| matches!(o, Op::AddDefaultRoute { .. })), "only the route's owner adds it");
    assert!(plan_inside_repair(&net, &ep, &ObservedInside::default(), true).is_empty(), "a missing link is a re-plumb");
}

fn overlay(vni: u32) -> Network {
    let req = CreateNetwork {
        name: "ov".into(),
        driver: "overlay".into(),
        subnets: vec![SubnetRequest { subnet: "10.95.0.0/24".into(), ..Default::default() }],
        options: [("mtu".to_string(), "1450".to_string())].into_iter().collect(),
        ..Default::default()
    };
    Network::new("ab".repeat(16), req.validate().unwrap()).unwrap().with_vni(vni).unwrap()
}

#[test]
fn overlay_network_and_remote_endpoints() {
    let net = overlay(4096);
    let local: std::net::IpAddr = "10.200.0.1".parse().unwrap();
    let mut ops = plan_network(&net, None);
    ops.extend(plan_overlay(&net, local, None));
    golden("overlay_network.json", &json(&ops));
    // Present and in place: nothing to do; out of its bridge: put back.
    let vx = ObservedLink { up: true, master: Some(net.bridge.clone()), ..Default::default() };
    assert!(plan_overlay(&net, local, Some(&vx)).is_empty());
    let loose = ObservedLink { up: false, master: None, ..Default::default() };
    assert_eq!(plan_overlay(&net, local, Some(&loose)).len(), 2);
    // A remote endpoint: one FDB entry, one neighbour per address.
    let ep = endpoint(&net, &["10.95.0.7/24"]);
    let vtep: std::net::IpAddr = "10.200.0.2".parse().unwrap();
    let add = plan_remote_endpoint(&net, &ep, vtep);
    golden("overlay_remote_endpoint.json", &json(&add));
    let cmds: Vec<String> = add.iter().map(Op::command).collect();
    assert_eq!(cmds[0], "bridge fdb replace 02:42:0a:59:00:02 dev vx-abababababab dst 10.200.0.2 self permanent");
    assert!(cmds[1].starts_with("ip neigh replace 10.95.0.7 lladdr"), "{cmds:?}");
    // Removal is the undo of the programming, in reverse.
    assert_eq!(plan_remote_removal(&net, &ep, vtep), undo(&add));
    // Removing the network deletes the VXLAN device before the bridge.
    let gone = plan_network_removal(&net);
    assert_eq!(
        gone.iter().map(Op::command).collect::<Vec<_>>(),
        ["ip link del vx-abababababab", "ip link del br-abababababab"]
    );
    // A bridge network has none of it.
    let br = network("n1", &["10.89.0.0/24"], false);
    assert!(plan_overlay(&br, local, None).is_empty() && plan_remote_endpoint(&br, &ep, vtep).is_empty());
}

#[test]
fn policy_rules_do_not_grow_with_rules_or_peers() {
    use weft_model::policy::{Direction, Isolation, Peer, Rule, RuleProto};
    use weft_model::ports::Proto;
    let net = network("p", &["10.89.0.0/24", "fd00:89::/64"], false);
    let rule = |peers: Vec<Peer>, port: u16| Rule {
        name: format!("r{port}"),
        source: "policy/srv".into(),
        group: "srv".into(),
        direction: Direction::Ingress,
        peers,
        proto: RuleProto::Ports(Proto::Tcp),
        ports: vec![(port, port)],
        named_ports: vec![],
    };
    let with =
        |rules: Vec<Rule>| RuleSet { isolated: vec![Isolation::new("srv", Direction::Ingress, "policy/srv")], rules };
    let cidr = |s: String| Peer::Cidr { prefix: s.parse().unwrap(), except: vec![] };
    let client = || rule(vec![Peer::Group("cli".into())], 8080);
    let count = |rs: &RuleSet| rule_count(&nft::render_ruleset(&[(&net, rs)], []));
    let base = count(&with(vec![client()]));
    let mut blocks: Vec<Rule> =
        (0..1000).map(|i| rule(vec![cidr(format!("172.16.{}.{}/32", i / 256, i % 256))], 8080)).collect();
    blocks.push(client());
    let mut ports: Vec<Rule> = (0..1000).map(|i| rule(vec![cidr("0.0.0.0/0".into())], 9000 + i)).collect();
    ports.push(client());
    let mut selectors: Vec<Rule> = (0..1000).map(|i| rule(vec![Peer::Group(format!("p{i}"))], 8080)).collect();
    selectors.push(client());
    // One more lookup for the address peers' set (the client's is a member set).
    assert_eq!(count(&with(blocks)), base + 1);
    assert_eq!(count(&with(ports)), base + 1);
    assert_eq!(count(&with(selectors)), base);

    // A peer's flows travel with it, merged: cli is a peer of two rules.
    let two = with(vec![
        rule(vec![Peer::Group("cli".into())], 8080),
        Rule { ports: vec![(8081, 8090), (9000, 9000)], ..rule(vec![Peer::Group("cli2".into())], 0) },
    ]);
    let mut cli = endpoint(&net, &["10.89.0.3/24", "fd00:89::3/64"]);
    cli.groups = vec!["cli".into(), "cli2".into()];
    let members: Vec<String> = nft::endpoint_elements(&cli, &two)
        .iter()
        .filter(|e| e.set.starts_with('m'))
        .map(|e| format!("{} {e}", e.set))
        .collect();
    assert_eq!(
        members,
        [
            "m4_pxxxxxxxxxxx_0_ipp 10.89.0.3 . 6 . 8080-8090",
            "m4_pxxxxxxxxxxx_0_ipp 10.89.0.3 . 6 . 9000",
            "m6_pxxxxxxxxxxx_0_ipp fd00:89::3 . 6 . 8080-8090",
            "m6_pxxxxxxxxxxx_0_ipp fd00:89::3 . 6 . 9000",
        ]
    );
    // On another node the same elements come with it.
    let remote: Vec<String> =
        nft::remote_elements(&cli, &two).iter().filter(|e| e.set.starts_with('m')).map(|e| e.to_string()).collect();
    assert_eq!(remote.len(), 4);
}

#[test]
fn named_ports_resolve_on_the_destination() {
    use weft_model::policy::{Direction, Isolation, Peer, Rule, RuleProto};
    use weft_model::ports::{NamedPort, Proto};
    let net = network("p", &["10.89.0.0/24"], false);
    let named = |dir: Direction, peers: Vec<Peer>| Rule {
        name: format!("{dir:?}"),
        source: "policy/srv".into(),
        group: "srv".into(),
        direction: dir,
        peers,
        proto: RuleProto::Ports(Proto::Tcp),
        ports: vec![],
        named_ports: vec!["http".into()],
    };
    let rs = RuleSet {
        isolated: vec![
            Isolation::new("srv", Direction::Ingress, "policy/srv"),
            Isolation::new("srv", Direction::Egress, "policy/srv"),
        ],
        rules: vec![
            named(
                Direction::Ingress,
                vec![
                    Peer::Group("cli".into()),
                    Peer::Cidr { prefix: "172.16.0.0/12".parse().unwrap(), except: vec![] },
                ],
            ),
            named(Direction::Egress, vec![Peer::Group("cli".into())]),
            named(Direction::Ingress, vec![]),
        ],
    };
    let script = nft::render_ruleset(&[(&net, &rs)], []);
    let lines: Vec<&str> = script.lines().filter(|l| l.contains("@n4_")).map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "meta nfproto ipv4 ip daddr . meta l4proto . th dport @n4_pxxxxxxxxxxx_0 ip saddr @q4_pxxxxxxxxxxx_0 return comment \"Ingress (policy/srv)\"",
            "meta nfproto ipv4 ip daddr . meta l4proto . th dport @n4_pxxxxxxxxxxx_0 ip saddr @s4_pxxxxxxxxxxx_0 return comment \"Ingress (policy/srv)\"",
            "meta nfproto ipv4 ip daddr . meta l4proto . th dport @n4_pxxxxxxxxxxx_2 return comment \"Ingress (policy/srv)\"",
            "meta nfproto ipv4 ip saddr @g4_pxxxxxxxxxxx_0 ip daddr . meta l4proto . th dport @n4_pxxxxxxxxxxx_1 return comment \"Egress (policy/srv)\"",
        ],
        "{script}"
    );
    assert!(!script.contains("@p4_") && !script.contains("@m4_"), "no numeric part: {script}");
    assert!(script.contains("172.16.0.0-172.31.255.255"), "{script}");
    let declaring = |groups: &[&str], names: &[&str]| {
        let mut e = endpoint(&net, &["10.89.0.5/24"]);
        e.groups = groups.iter().map(|g| (*g).to_string()).collect();
        e.spec.port_names = names.iter().map(|n| NamedPort::parse("port_names", n).unwrap()).collect();
        nft::endpoint_elements(&e, &rs)
            .iter()
            .filter(|e| ["n4_", "s4_"].iter().any(|p| e.set.starts_with(p)))
            .map(|e| format!("{} {e}", e.set))
            .collect::<Vec<_>>()
    };
    // A member of srv declaring http=8080: its port in both ingress rules.
    assert_eq!(
        declaring(&["srv"], &["http=8080/tcp", "dns=53/udp"]),
        ["n4_pxxxxxxxxxxx_0 10.89.0.5 . 6 . 8080", "n4_pxxxxxxxxxxx_2 10.89.0.5 . 6 . 8080"]
    );
    // A client declaring http: a destination of srv's egress and a source
    // of its ingress.
    assert_eq!(
        declaring(&["cli"], &["http=80"]),
        ["s4_pxxxxxxxxxxx_0 10.89.0.5", "n4_pxxxxxxxxxxx_1 10.89.0.5 . 6 . 80"]
    );
    // The name under another protocol, or not declared: matches nothing.
    assert_eq!(declaring(&["srv"], &["http=8080/udp"]), Vec::<String>::new());
    assert_eq!(declaring(&["cli"], &[]), ["s4_pxxxxxxxxxxx_0 10.89.0.5"]);
}
