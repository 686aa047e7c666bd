//! weft's Kubernetes NetworkPolicy component (`weft:policy`).
//!
//! Tenants bind it with `weft network create --policy policy-k8s` and apply
//! `networking.k8s.io/v1` NetworkPolicy and `v1` Namespace documents with
//! `weft policy apply`. An endpoint's namespace is its
//! `io.kubernetes.pod.namespace` label and its pod labels are its endpoint
//! labels. The translation is in [`compile`]; selectors in [`selector`].

pub mod compile;
pub mod selector;

wit_bindgen::generate!({
    path: ["../../wit/types", "../../wit/policy"],
    world: "weft:policy/policy",
    generate_all,
});

use exports::weft::policy::engine::Guest;
use weft::policy::types as wit;
use weft::types::types::{Cidr, IpAddress};

struct Component;

fn direction(d: compile::Dir) -> wit::Direction {
    match d {
        compile::Dir::Ingress => wit::Direction::Ingress,
        compile::Dir::Egress => wit::Direction::Egress,
    }
}

fn cidr(c: &compile::Cidr) -> Cidr {
    let address = match c.addr {
        std::net::IpAddr::V4(v) => IpAddress::V4(u32::from(v)),
        std::net::IpAddr::V6(v) => {
            let n = u128::from(v);
            IpAddress::V6(((n >> 64) as u64, n as u64))
        }
    };
    Cidr { address, prefix: c.prefix }
}

fn rule(r: compile::Rule) -> wit::Rule {
    wit::Rule {
        name: r.name,
        source: r.source,
        group: r.group,
        direction: direction(r.dir),
        peers: r
            .peers
            .iter()
            .map(|p| match p {
                compile::Peer::Group(g) => wit::Peer::Group(g.clone()),
                compile::Peer::Any => wit::Peer::Any,
                compile::Peer::Cidr { prefix, except } => {
                    wit::Peer::Cidr(wit::CidrBlock { prefix: cidr(prefix), except: except.iter().map(cidr).collect() })
                }
            })
            .collect(),
        protocol: match r.proto {
            compile::Proto::Any => wit::Protocol::Any,
            compile::Proto::Tcp => wit::Protocol::Tcp,
            compile::Proto::Udp => wit::Protocol::Udp,
            compile::Proto::Sctp => wit::Protocol::Sctp,
        },
        ports: r.ports.into_iter().map(|(first, last)| wit::PortRange { first, last }).collect(),
        named_ports: r.named_ports,
    }
}

impl Guest for Component {
    fn compile(_network: wit::NetworkInfo, documents: Vec<String>) -> Result<wit::Compiled, String> {
        let out = compile::compile(&documents)?;
        Ok(wit::Compiled {
            rules: wit::RuleSet {
                isolated: out
                    .isolated
                    .into_iter()
                    .map(|i| wit::Isolation { group: i.group, direction: direction(i.dir), source: i.source })
                    .collect(),
                rules: out.rules.into_iter().map(rule).collect(),
            },
            state: out.state,
        })
    }

    fn classify(_network: wit::NetworkInfo, state: String, endpoint: wit::EndpointInfo) -> Result<Vec<String>, String> {
        compile::classify(&state, &endpoint.labels.into_iter().collect())
    }
}

export!(Component);
