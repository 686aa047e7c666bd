//! The `weft:naming` world on the host side: `names` in a fresh, limited
//! store, and the host's check of every record it returns.

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use weft_model::ipam::DecisionError;
use weft_model::naming::{NameRecord, Naming, NamingEndpoint, NamingNetwork, RecordKind, check_records};

use crate::convert::{from_wit, to_wit};
use crate::{CallState, PluginError, WasmHost};

/// Generated bindings for the `weft:naming/naming` world.
pub mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: ["../../wit/types", "../../wit/naming"],
        world: "weft:naming/naming",
        with: { "weft:types/types": crate::ipam::bindings::weft::types::types },
    });
}

use bindings::weft::naming::types as wit;

/// Link `component`; the world imports only types.
pub fn prepare(
    engine: &Engine,
    name: &str,
    component: &Component,
) -> Result<bindings::NamingPre<CallState>, PluginError> {
    let pre = crate::link(name, "weft:naming", component, &Linker::new(engine))?;
    bindings::NamingPre::new(pre).map_err(|e| crate::wrong_world(name, "weft:naming", e))
}

impl Naming for WasmHost {
    fn names(
        &self,
        module: &str,
        endpoint: &NamingEndpoint,
        network: &NamingNetwork,
    ) -> Result<Vec<NameRecord>, DecisionError> {
        let failed = |reason: String| DecisionError::Failed { module: module.to_owned(), reason };
        let m = self.naming.get(module).map_err(|e| e.into_decision(module))?;
        let ep = wit::EndpointInfo {
            name: endpoint.name.clone(),
            aliases: endpoint.aliases.clone(),
            addresses: endpoint.addresses.iter().copied().map(to_wit).collect(),
            labels: endpoint.labels.clone(),
        };
        let net = wit::NetworkInfo {
            name: network.name.clone(),
            tenant: network.tenant.clone(),
            options: network.options.clone(),
        };
        let mut store = self.limited_store();
        let out = self
            .run(crate::Kind::Naming, &m, &mut store, |pre, store| {
                pre.instantiate(&mut *store)?.weft_naming_namer().call_names(store, &ep, &net, &network.config)
            })
            .map_err(|e| crate::classify(module, e).into_decision(module))?
            .map_err(DecisionError::Invalid)?;
        let records: Vec<NameRecord> = out
            .into_iter()
            .map(|r| NameRecord {
                kind: match r.kind {
                    wit::RecordKind::Address => RecordKind::Address,
                    wit::RecordKind::Pointer => RecordKind::Pointer,
                },
                name: r.name.to_ascii_lowercase(),
                address: from_wit(r.address),
            })
            .collect();
        check_records(endpoint, &records)
            .map_err(|why| failed(format!("returned a bad record: {why}; nothing was served")))?;
        Ok(records)
    }
}
