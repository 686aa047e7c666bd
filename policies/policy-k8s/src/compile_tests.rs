use super::*;

fn ns(name: &str, labels: &str) -> String {
    format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}","labels":{labels}}}}}"#)
}

fn np(ns: &str, name: &str, spec: &str) -> String {
    format!(
        r#"{{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{{"name":"{name}","namespace":"{ns}"}},"spec":{spec}}}"#
    )
}

fn pod(ns: &str, pod: &str) -> Labels {
    [(NAMESPACE_LABEL, ns), ("pod", pod)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn err(docs: &[String]) -> String {
    compile(docs).expect_err("should not compile")
}

#[test]
fn deny_all_isolates_the_selected_pods_ingress_only() {
    let out = compile(&[np("x", "deny", r#"{"podSelector":{}}"#)]).unwrap();
    assert_eq!(
        out.isolated,
        [Isolation { group: "x/deny".into(), dir: Dir::Ingress, source: "NetworkPolicy x/deny".into() }]
    );
    assert!(out.rules.is_empty());
    assert_eq!(classify(&out.state, &pod("x", "a")).unwrap(), ["x/deny"]);
    assert!(classify(&out.state, &pod("y", "a")).unwrap().is_empty(), "other namespaces are not selected");
}

#[test]
fn policy_types_default_as_the_api_server_does() {
    let out = compile(&[np("x", "p", r#"{"podSelector":{},"egress":[{}]}"#)]).unwrap();
    let dirs: Vec<Dir> = out.isolated.iter().map(|i| i.dir).collect();
    assert_eq!(dirs, [Dir::Ingress, Dir::Egress]);
    let out = compile(&[np("x", "p", r#"{"podSelector":{},"egress":[]}"#)]).unwrap();
    assert_eq!(out.isolated.len(), 1, "an empty egress list does not add Egress");
    let out = compile(&[np("x", "p", r#"{"podSelector":{},"policyTypes":["Egress"],"ingress":[{}]}"#)]).unwrap();
    assert_eq!(out.isolated[0].dir, Dir::Egress);
    assert!(out.rules.is_empty(), "ingress rules of a policy that is not Ingress are ignored");
    assert!(err(&[np("x", "p", r#"{"podSelector":{},"policyTypes":["Inbound"]}"#)]).contains("policyTypes[0]"));
}

#[test]
fn pod_and_namespace_selectors_and_vs_or() {
    let and = np(
        "x",
        "and",
        r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"from":[
            {"namespaceSelector":{"matchLabels":{"ns":"y"}},"podSelector":{"matchLabels":{"pod":"b"}}}]}]}"#,
    );
    let or = np(
        "x",
        "or",
        r#"{"podSelector":{"matchLabels":{"pod":"a"}},"ingress":[{"from":[
            {"namespaceSelector":{"matchLabels":{"ns":"y"}}},{"podSelector":{"matchLabels":{"pod":"b"}}}]}]}"#,
    );
    let docs = [ns("y", r#"{"ns":"y"}"#), and, or];
    let out = compile(&docs).unwrap();
    let peers: Vec<&Vec<Peer>> = out.rules.iter().map(|r| &r.peers).collect();
    assert_eq!(peers[0].len(), 1, "one peer with both selectors");
    assert_eq!(peers[1].len(), 2, "two peers");
    let and_g = match &peers[0][0] {
        Peer::Group(g) => g.clone(),
        p => panic!("{p:?}"),
    };
    let (ns_g, pod_g) = match (&peers[1][0], &peers[1][1]) {
        (Peer::Group(a), Peer::Group(b)) => (a.clone(), b.clone()),
        p => panic!("{p:?}"),
    };
    let g = |ns: &str, p: &str| classify(&out.state, &pod(ns, p)).unwrap();
    // y/b: in y (namespace matches) and pod b: all three peer groups.
    assert!(g("y", "b").contains(&and_g) && g("y", "b").contains(&ns_g));
    // y/c: namespace y, pod c: OR matches by namespace, AND does not.
    assert!(!g("y", "c").contains(&and_g) && g("y", "c").contains(&ns_g));
    // x/b: pod b of the policy's namespace: the podSelector-only peer.
    assert!(g("x", "b").contains(&pod_g) && !g("x", "b").contains(&and_g));
    // z/b: pod b elsewhere: neither.
    assert!(!g("z", "b").contains(&pod_g) && !g("z", "b").contains(&and_g));
}

#[test]
fn namespaces_carry_their_automatic_name_label() {
    let p = np(
        "x",
        "p",
        r#"{"podSelector":{},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"z"}}}]}]}"#,
    );
    let out = compile(&[p]).unwrap();
    let Peer::Group(g) = &out.rules[0].peers[0] else { panic!() };
    assert!(classify(&out.state, &pod("z", "a")).unwrap().contains(g));
    assert!(!classify(&out.state, &pod("y", "a")).unwrap().contains(g));
}

#[test]
fn ports_group_by_protocol_with_ranges() {
    let p = np(
        "x",
        "p",
        r#"{"podSelector":{},"ingress":[{"ports":[
            {"port":80},{"protocol":"UDP","port":81},{"protocol":"TCP","port":8000,"endPort":8080},{"protocol":"SCTP"}]}]}"#,
    );
    let out = compile(&[p]).unwrap();
    let got: Vec<(Proto, Vec<(u16, u16)>)> = out.rules.iter().map(|r| (r.proto, r.ports.clone())).collect();
    assert_eq!(got, [(Proto::Tcp, vec![(80, 80), (8000, 8080)]), (Proto::Udp, vec![(81, 81)]), (Proto::Sctp, vec![])]);
    assert!(out.rules.iter().all(|r| r.peers == [Peer::Any]), "no from: every source");
    assert_eq!(out.rules[0].name, "x/p ingress[0] tcp");
}

#[test]
fn named_ports_stay_names_per_protocol() {
    let p = np(
        "x",
        "p",
        r#"{"podSelector":{},"ingress":[{"ports":[
            {"port":"http"},{"port":80},{"protocol":"UDP","port":"dns"},{"port":"http"},{"protocol":"SCTP","port":"s"},{"protocol":"SCTP"}]}]}"#,
    );
    let out = compile(&[p]).unwrap();
    type Got = (Proto, Vec<(u16, u16)>, Vec<String>);
    let got: Vec<Got> = out.rules.iter().map(|r| (r.proto, r.ports.clone(), r.named_ports.clone())).collect();
    assert_eq!(
        got,
        [
            (Proto::Tcp, vec![(80, 80)], vec!["http".to_string()]),
            (Proto::Udp, vec![], vec!["dns".to_string()]),
            // The whole protocol opened: the name adds nothing.
            (Proto::Sctp, vec![], vec![]),
        ]
    );
}

#[test]
fn ip_blocks_with_excepts() {
    let p = np(
        "x",
        "p",
        r#"{"podSelector":{},"policyTypes":["Egress"],"egress":[{"to":[{"ipBlock":{"cidr":"10.0.0.1/8","except":["10.1.0.0/16"]}}]}]}"#,
    );
    let out = compile(&[p]).unwrap();
    assert_eq!(
        out.rules[0].peers,
        [Peer::Cidr {
            prefix: Cidr { addr: "10.0.0.0".parse().unwrap(), prefix: 8 },
            except: vec![Cidr { addr: "10.1.0.0".parse().unwrap(), prefix: 16 }],
        }]
    );
    let bad = np(
        "x",
        "p",
        r#"{"podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/8","except":["11.0.0.0/16"]}}]}]}"#,
    );
    assert!(err(&[bad]).contains("spec.ingress[0].from[0].ipBlock.except[0]: 11.0.0.0/16 must be strictly within"));
}

#[test]
fn invalid_documents_name_the_field() {
    let cases = [
        (
            np("x", "p", r#"{"podSelector":{},"ingress":[{"ports":[{"port":"Http"}]}]}"#),
            "ports[0].port: named port \"Http\" may hold only lower-case",
        ),
        (
            np("x", "p", r#"{"podSelector":{},"ingress":[{"ports":[{"port":"http","endPort":90}]}]}"#),
            "ports[0].endPort: may not be set when port is the name \"http\"",
        ),
        (np("x", "p", r#"{"podSelector":{},"ingress":[{"ports":[{"port":0}]}]}"#), "between 1 and 65535"),
        (
            np("x", "p", r#"{"podSelector":{},"ingress":[{"ports":[{"port":90,"endPort":80}]}]}"#),
            "endPort: 80 must be greater",
        ),
        (np("x", "p", r#"{"podSelector":{},"ingress":[{"ports":[{"endPort":80}]}]}"#), "without a numeric port"),
        (np("x", "p", r#"{"podSelector":{},"ingress":[{"ports":[{"protocol":"ICMP"}]}]}"#), "must be TCP, UDP or SCTP"),
        (np("x", "p", r#"{"podSelector":{},"ingress":[{"from":[{}]}]}"#), "from[0]: give podSelector"),
        (
            np(
                "x",
                "p",
                r#"{"podSelector":{},"ingress":[{"from":[{"podSelector":{},"ipBlock":{"cidr":"1.0.0.0/8"}}]}]}"#,
            ),
            "cannot be combined",
        ),
        (np("x", "p", r#"{"ingress":[]}"#), "spec.podSelector is required"),
        (np("x", "p", r#"{"podSelector":{},"ingres":[]}"#), "unknown field `ingres`"),
        (r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"}}"#.to_string(), "understands NetworkPolicy"),
        (
            r#"{"apiVersion":"extensions/v1beta1","kind":"NetworkPolicy","metadata":{"name":"s"},"spec":{}}"#
                .to_string(),
            "apiVersion",
        ),
    ];
    for (doc, want) in cases {
        let e = err(std::slice::from_ref(&doc));
        assert!(e.contains(want), "{doc}: {e}");
        if doc.contains("NetworkPolicy") && !doc.contains("v1beta1") {
            assert!(e.starts_with("NetworkPolicy x/p: "), "{e}");
        }
    }
}

#[test]
fn identical_selectors_share_a_group_and_long_names_are_bounded() {
    let a = np("x", "a", r#"{"podSelector":{"matchLabels":{"pod":"a"}}}"#);
    let b = np("x", "b", r#"{"podSelector":{"matchLabels":{"pod":"a"}}}"#);
    let out = compile(&[a, b]).unwrap();
    assert_eq!(out.isolated[0].group, out.isolated[1].group);
    assert_ne!(out.isolated[0].source, out.isolated[1].source);
    let long = "n".repeat(253);
    let g = bounded(&format!("x/{long}/in0.0"));
    assert!(g.len() <= 253 && g.contains('~'));
    assert_ne!(g, bounded(&format!("x/{long}/in0.1")));
}

#[test]
fn a_default_namespace_is_assumed() {
    let out = compile(&[r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"p"},"spec":{"podSelector":{}}}"#.to_string()]).unwrap();
    assert_eq!(out.isolated[0].group, "default/p");
    let no_ns: Labels = [("pod".to_string(), "a".to_string())].into_iter().collect();
    assert_eq!(classify(&out.state, &no_ns).unwrap(), ["default/p"]);
}
