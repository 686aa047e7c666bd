//! The `weft:policy` world on the host side: `compile` and `classify`, each
//! in a fresh, limited store. The world imports nothing callable.

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};
use weft_model::ipam::DecisionError;
use weft_model::policy::{
    Compiled, Direction, EndpointInfo, Isolation, MAX_STATE, NetworkInfo, Peer, Policy, Rule, RuleProto, RuleSet,
};
use weft_model::ports::Proto;

use crate::convert::cidr_from_wit;
use crate::{CallState, PluginError, WasmHost};

/// Generated bindings for the `weft:policy/policy` world.
pub mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: ["../../wit/types", "../../wit/policy"],
        world: "weft:policy/policy",
        with: { "weft:types/types": crate::ipam::bindings::weft::types::types },
    });
}

use bindings::weft::policy::types as wit;

/// Link `component`; the world imports only types.
pub fn prepare(
    engine: &Engine,
    name: &str,
    component: &Component,
) -> Result<bindings::PolicyPre<CallState>, PluginError> {
    let pre = crate::link(name, "weft:policy", component, &Linker::new(engine))?;
    bindings::PolicyPre::new(pre).map_err(|e| crate::wrong_world(name, "weft:policy", e))
}

fn network_info(n: &NetworkInfo) -> wit::NetworkInfo {
    wit::NetworkInfo {
        name: n.name.clone(),
        tenant: n.tenant.clone(),
        internal: n.internal,
        options: n.options.clone(),
        config: n.config.clone(),
    }
}

fn direction(d: wit::Direction) -> Direction {
    match d {
        wit::Direction::Ingress => Direction::Ingress,
        wit::Direction::Egress => Direction::Egress,
    }
}

fn rule_set(rs: wit::RuleSet) -> RuleSet {
    RuleSet {
        isolated: rs
            .isolated
            .into_iter()
            .map(|i| Isolation { group: i.group, direction: direction(i.direction), source: i.source })
            .collect(),
        rules: rs
            .rules
            .into_iter()
            .map(|r| Rule {
                name: r.name,
                source: r.source,
                group: r.group,
                direction: direction(r.direction),
                peers: r
                    .peers
                    .into_iter()
                    .map(|p| match p {
                        wit::Peer::Group(g) => Peer::Group(g),
                        wit::Peer::Network => Peer::Network,
                        wit::Peer::Any => Peer::Any,
                        wit::Peer::Cidr(c) => Peer::Cidr {
                            prefix: cidr_from_wit(&c.prefix),
                            except: c.except.iter().map(cidr_from_wit).collect(),
                        },
                    })
                    .collect(),
                proto: match r.protocol {
                    wit::Protocol::Any => RuleProto::Any,
                    wit::Protocol::Tcp => RuleProto::Ports(Proto::Tcp),
                    wit::Protocol::Udp => RuleProto::Ports(Proto::Udp),
                    wit::Protocol::Sctp => RuleProto::Ports(Proto::Sctp),
                    wit::Protocol::Icmp => RuleProto::Icmp,
                },
                ports: r.ports.into_iter().map(|p| (p.first, p.last)).collect(),
            })
            .collect(),
    }
}

impl WasmHost {
    fn policy_call<T>(
        &self,
        module: &str,
        f: impl FnOnce(&bindings::Policy, &mut Store<CallState>) -> wasmtime::Result<T>,
    ) -> Result<T, DecisionError> {
        let failed = |e: PluginError| e.into_decision(module);
        let m = self.policy_module(module).map_err(failed)?;
        let mut store = self.limited_store();
        self.run(crate::Kind::Policy, &m, &mut store, |pre, store| f(&pre.instantiate(&mut *store)?, store))
            .map_err(|e| failed(crate::classify(module, e)))
    }
}

impl Policy for WasmHost {
    fn compile(&self, module: &str, network: &NetworkInfo, documents: &[String]) -> Result<Compiled, DecisionError> {
        let info = network_info(network);
        let out =
            self.policy_call(module, |inst, store| inst.weft_policy_engine().call_compile(store, &info, documents))?;
        let out = out.map_err(DecisionError::Invalid)?;
        let bad = |reason: String| DecisionError::Failed { module: module.to_owned(), reason };
        if out.state.len() > MAX_STATE {
            return Err(bad(format!("returned a classify state of {} bytes (at most {MAX_STATE})", out.state.len())));
        }
        let rules = rule_set(out.rules);
        rules.validate().map_err(|why| bad(format!("compiled an invalid rule set: {why}")))?;
        Ok(Compiled { rules, state: out.state })
    }

    fn classify(
        &self,
        module: &str,
        network: &NetworkInfo,
        state: &str,
        endpoint: &EndpointInfo,
    ) -> Result<Vec<String>, DecisionError> {
        let info = network_info(network);
        let ep = wit::EndpointInfo {
            name: endpoint.name.clone(),
            network: endpoint.network.clone(),
            labels: endpoint.labels.clone(),
        };
        let groups = self
            .policy_call(module, |inst, store| inst.weft_policy_engine().call_classify(store, &info, state, &ep))?
            .map_err(|why| DecisionError::Failed { module: module.to_owned(), reason: format!("classify: {why}") })?;
        if groups.len() > weft_model::policy::MAX_GROUPS
            || groups.iter().any(|g| g.is_empty() || g.len() > weft_model::policy::MAX_NAME)
        {
            return Err(DecisionError::Failed {
                module: module.to_owned(),
                reason: "classified into too many groups or a group with a bad name".into(),
            });
        }
        Ok(groups)
    }
}
