//! A hostile policy component for weft's noisy-neighbour benchmark: it
//! compiles every network to an empty rule set, and `classify` spins
//! forever for an endpoint labelled `spin=classify` (the host stops it at
//! its deadline); any other endpoint is put in the group `all`. Never
//! loaded as a built-in. Built against the frozen `weft:policy@0.1` world,
//! so the host's 0.1 bindings are exercised (host/wasm tests).

wit_bindgen::generate!({
    path: ["../../../wit/types", "../../../wit/policy-0.1"],
    world: "weft:policy/policy",
    generate_all,
});

use exports::weft::policy::engine::Guest;
use weft::policy::types::{Compiled, EndpointInfo, NetworkInfo, RuleSet};

struct Component;

impl Guest for Component {
    fn compile(_network: NetworkInfo, _documents: Vec<String>) -> Result<Compiled, String> {
        Ok(Compiled { rules: RuleSet { isolated: Vec::new(), rules: Vec::new() }, state: String::new() })
    }

    fn classify(_network: NetworkInfo, _state: String, endpoint: EndpointInfo) -> Result<Vec<String>, String> {
        if endpoint.labels.iter().any(|(k, v)| k == "spin" && v == "classify") {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        Ok(vec!["all".into()])
    }
}

export!(Component);
