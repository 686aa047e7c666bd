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

/// Generated bindings for the `weft:policy/policy` world (0.2).
pub mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: ["../../wit/types", "../../wit/policy"],
        world: "weft:policy/policy",
        with: { "weft:types/types": crate::ipam::bindings::weft::types::types },
    });
}

/// Generated bindings for the frozen 0.1 world, so components built before
/// named ports keep loading.
pub mod bindings_01 {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: ["../../wit/types", "../../wit/policy-0.1"],
        world: "weft:policy/policy",
        with: { "weft:types/types": crate::ipam::bindings::weft::types::types },
    });
}

use bindings::weft::policy::types as wit;
use bindings_01::weft::policy::types as wit01;

/// A linked policy component, of either world version.
pub enum Pre {
    /// `weft:policy@0.2`.
    V02(bindings::PolicyPre<CallState>),
    /// `weft:policy@0.1`.
    V01(bindings_01::PolicyPre<CallState>),
}

/// An instance of a [`Pre`].
enum Instance {
    V02(bindings::Policy),
    V01(bindings_01::Policy),
}

/// Link `component`; the world imports only types. A component exporting
/// the 0.2 engine is bound as 0.2, else as 0.1.
pub fn prepare(engine: &Engine, name: &str, component: &Component) -> Result<Pre, PluginError> {
    let pre = crate::link(name, "weft:policy", component, &Linker::new(engine))?;
    match bindings::PolicyPre::new(pre.clone()) {
        Ok(p) => Ok(Pre::V02(p)),
        Err(e) => {
            bindings_01::PolicyPre::new(pre).map(Pre::V01).map_err(|_| crate::wrong_world(name, "weft:policy", e))
        }
    }
}

/// The conversions between the host's model and one version's bindings
/// (`$w`): the types are the same shape, and `$named` gives a rule's named
/// ports (0.1 has none).
macro_rules! conversions {
    ($w:ident, $network_info:ident, $endpoint_info:ident, $rule_set:ident, $named:expr) => {
        fn $network_info(n: &NetworkInfo) -> $w::NetworkInfo {
            $w::NetworkInfo {
                name: n.name.clone(),
                tenant: n.tenant.clone(),
                internal: n.internal,
                options: n.options.clone(),
                config: n.config.clone(),
            }
        }

        fn $endpoint_info(e: &EndpointInfo) -> $w::EndpointInfo {
            $w::EndpointInfo { name: e.name.clone(), network: e.network.clone(), labels: e.labels.clone() }
        }

        fn $rule_set(rs: $w::RuleSet) -> RuleSet {
            let direction = |d: $w::Direction| match d {
                $w::Direction::Ingress => Direction::Ingress,
                $w::Direction::Egress => Direction::Egress,
            };
            let named: fn(&$w::Rule) -> Vec<String> = $named;
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
                        named_ports: named(&r),
                        name: r.name,
                        source: r.source,
                        group: r.group,
                        direction: direction(r.direction),
                        peers: r
                            .peers
                            .into_iter()
                            .map(|p| match p {
                                $w::Peer::Group(g) => Peer::Group(g),
                                $w::Peer::Network => Peer::Network,
                                $w::Peer::Any => Peer::Any,
                                $w::Peer::Cidr(c) => Peer::Cidr {
                                    prefix: cidr_from_wit(&c.prefix),
                                    except: c.except.iter().map(cidr_from_wit).collect(),
                                },
                            })
                            .collect(),
                        proto: match r.protocol {
                            $w::Protocol::Any => RuleProto::Any,
                            $w::Protocol::Tcp => RuleProto::Ports(Proto::Tcp),
                            $w::Protocol::Udp => RuleProto::Ports(Proto::Udp),
                            $w::Protocol::Sctp => RuleProto::Ports(Proto::Sctp),
                            $w::Protocol::Icmp => RuleProto::Icmp,
                        },
                        ports: r.ports.into_iter().map(|p| (p.first, p.last)).collect(),
                    })
                    .collect(),
            }
        }
    };
}

conversions!(wit, network_info, endpoint_info, rule_set, |r| r.named_ports.clone());
conversions!(wit01, network_info_01, endpoint_info_01, rule_set_01, |_| Vec::new());

impl WasmHost {
    fn policy_call<T>(
        &self,
        module: &str,
        f: impl FnOnce(Instance, &mut Store<CallState>) -> wasmtime::Result<T>,
    ) -> Result<T, DecisionError> {
        let failed = |e: PluginError| e.into_decision(module);
        let m = self.policy_module(module).map_err(failed)?;
        let mut store = self.limited_store();
        self.run(crate::Kind::Policy, &m, &mut store, |pre, store| {
            let inst = match pre {
                Pre::V02(p) => Instance::V02(p.instantiate(&mut *store)?),
                Pre::V01(p) => Instance::V01(p.instantiate(&mut *store)?),
            };
            f(inst, store)
        })
        .map_err(|e| failed(crate::classify(module, e)))
    }
}

impl Policy for WasmHost {
    fn compile(&self, module: &str, network: &NetworkInfo, documents: &[String]) -> Result<Compiled, DecisionError> {
        let out = self.policy_call(module, |inst, store| {
            Ok(match inst {
                Instance::V02(i) => i
                    .weft_policy_engine()
                    .call_compile(store, &network_info(network), documents)?
                    .map(|c| (rule_set(c.rules), c.state)),
                Instance::V01(i) => i
                    .weft_policy_engine()
                    .call_compile(store, &network_info_01(network), documents)?
                    .map(|c| (rule_set_01(c.rules), c.state)),
            })
        })?;
        let (rules, state) = out.map_err(DecisionError::Invalid)?;
        let bad = |reason: String| DecisionError::Failed { module: module.to_owned(), reason };
        if state.len() > MAX_STATE {
            return Err(bad(format!("returned a classify state of {} bytes (at most {MAX_STATE})", state.len())));
        }
        rules.validate().map_err(|why| bad(format!("compiled an invalid rule set: {why}")))?;
        Ok(Compiled { rules, state })
    }

    fn classify(
        &self,
        module: &str,
        network: &NetworkInfo,
        state: &str,
        endpoint: &EndpointInfo,
    ) -> Result<Vec<String>, DecisionError> {
        let groups = self
            .policy_call(module, |inst, store| match inst {
                Instance::V02(i) => {
                    i.weft_policy_engine().call_classify(store, &network_info(network), state, &endpoint_info(endpoint))
                }
                Instance::V01(i) => i.weft_policy_engine().call_classify(
                    store,
                    &network_info_01(network),
                    state,
                    &endpoint_info_01(endpoint),
                ),
            })?
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
