//! weft's default policy component: Docker's behaviour as a rule set.
//!
//! Every endpoint is in the group `all`. With `icc=true` (the default)
//! nothing is isolated: endpoints of a network talk freely. With
//! `--opt icc=false` the group is ingress-isolated with no allow rule, so no
//! endpoint accepts new connections from another endpoint of its network;
//! replies, outbound traffic and published ports still pass. Isolation
//! between networks and `--internal` are enforced by the host's fixed rules
//! and need nothing here. It takes no documents.

wit_bindgen::generate!({
    path: ["../../wit/types", "../../wit/policy"],
    world: "weft:policy/policy",
    generate_all,
});

use exports::weft::policy::engine::Guest;
use weft::policy::types::{Compiled, Direction, EndpointInfo, Isolation, NetworkInfo, RuleSet};

/// The one group every endpoint is in.
const ALL: &str = "all";

struct Component;

fn icc(network: &NetworkInfo) -> Result<bool, String> {
    match network.options.iter().find(|(k, _)| k == "icc").map(|(_, v)| v.as_str()) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!("option icc={other:?} must be true or false")),
    }
}

impl Guest for Component {
    fn compile(network: NetworkInfo, documents: Vec<String>) -> Result<Compiled, String> {
        if !documents.is_empty() {
            return Err("policy-isolation takes no policy documents; bind a policy component that does".into());
        }
        let isolated = if icc(&network)? {
            Vec::new()
        } else {
            vec![Isolation { group: ALL.into(), direction: Direction::Ingress, source: "option icc=false".into() }]
        };
        Ok(Compiled { rules: RuleSet { isolated, rules: Vec::new() }, state: String::new() })
    }

    fn classify(_network: NetworkInfo, _state: String, _endpoint: EndpointInfo) -> Result<Vec<String>, String> {
        Ok(vec![ALL.into()])
    }
}

export!(Component);
