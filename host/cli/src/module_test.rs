//! `weft module test`: run a component offline, in this process, under the
//! same sandbox and the same host checks weftd applies, without a daemon or
//! a kernel change — the quickest loop while writing a module (in the spirit
//! of Kubewarden's `kwctl run`). Prints what the component decided as JSON.

use std::collections::BTreeMap;

use clap::Args;
use serde_json::json;
use weft_model::ipam::{Ipam, IpamRequest, Pool, PoolLeases, check_answer};
use weft_model::naming::{Naming, NamingEndpoint, NamingNetwork, RecordKind};
use weft_model::policy::{EndpointInfo, NetworkInfo, Policy};
use weft_wasm::{Kind, WasmHost};

use crate::{parse_kv, parse_module_config};

/// What to run the component on.
#[derive(Args)]
pub struct TestArgs {
    /// The component (.wasm).
    file: String,
    /// ipam, policy or naming.
    #[arg(long)]
    kind: String,
    /// Network name (all kinds).
    #[arg(long, default_value = "test")]
    network: String,
    /// Network option KEY=VALUE (policy, naming).
    #[arg(long = "opt", value_parser = parse_kv)]
    opts: Vec<(String, String)>,
    /// Module configuration: KEY=VALUE or @FILE (all kinds).
    #[arg(long = "module-config", value_parser = parse_module_config)]
    module_config: Vec<Vec<(String, String)>>,
    /// ipam: the subnet to allocate from.
    #[arg(long, default_value = "10.0.0.0/24")]
    subnet: String,
    /// ipam: the gateway (never handed out) [default: the first address].
    #[arg(long)]
    gateway: Option<String>,
    /// ipam: how many addresses to allocate in a row.
    #[arg(long, default_value_t = 3)]
    count: usize,
    /// policy: documents to compile (YAML or JSON, as for `weft policy apply`).
    #[arg(short = 'f', long = "filename")]
    documents: Option<String>,
    /// policy: an endpoint to classify, NAME[:KEY=VALUE,KEY=VALUE] (repeatable).
    /// naming: the endpoint's name (the first one given).
    #[arg(long = "endpoint")]
    endpoints: Vec<String>,
    /// naming: the endpoint's addresses.
    #[arg(long = "address")]
    addresses: Vec<std::net::IpAddr>,
    /// naming: the endpoint's aliases.
    #[arg(long = "alias")]
    aliases: Vec<String>,
}

fn endpoint(spec: &str) -> Result<(String, Vec<(String, String)>), String> {
    let (name, labels) = spec.split_once(':').unwrap_or((spec, ""));
    let labels = labels.split(',').filter(|s| !s.is_empty()).map(parse_kv).collect::<Result<_, _>>()?;
    Ok((name.to_owned(), labels))
}

/// Run the component and print its decisions.
pub fn run(a: TestArgs) -> Result<(), String> {
    let kind = Kind::parse(&a.kind).ok_or_else(|| format!("--kind {:?} must be ipam, policy or naming", a.kind))?;
    let bytes = std::fs::read(&a.file).map_err(|e| format!("reading {}: {e}", a.file))?;
    let host = WasmHost::new().map_err(|e| e.to_string())?;
    let info = host.load(kind, "test", &bytes).map_err(|e| e.to_string())?;
    let config: Vec<(String, String)> =
        a.module_config.iter().flatten().cloned().collect::<BTreeMap<_, _>>().into_iter().collect();
    let options: Vec<(String, String)> = a.opts.clone();
    let out = match kind {
        Kind::Ipam => {
            let subnet: ipnet::IpNet = a.subnet.parse().map_err(|e| format!("--subnet {}: {e}", a.subnet))?;
            let gateway = match &a.gateway {
                Some(g) => g.parse().map_err(|e| format!("--gateway {g}: {e}"))?,
                None => subnet.hosts().next().ok_or("the subnet has no usable address")?,
            };
            let pool = Pool { subnet, range: None, gateway: Some(gateway) };
            let mut leases = PoolLeases::default();
            let mut got = Vec::new();
            for i in 0..a.count {
                let req = IpamRequest { network: a.network.clone(), endpoint: format!("ep{i}"), static_address: None };
                match host.allocate("test", &pool, &req, &config, &mut leases) {
                    Ok(addr) => {
                        check_answer(&pool, &req, &leases, addr).map_err(|e| format!("weft would refuse: {e}"))?;
                        leases.reserve(addr, &req.endpoint);
                        got.push(json!({ "endpoint": req.endpoint, "address": addr.to_string() }));
                    }
                    Err(e) => got.push(json!({ "endpoint": req.endpoint, "error": e.to_string() })),
                }
            }
            json!({ "allocations": got })
        }
        Kind::Naming => {
            let name = a.endpoints.first().map(|e| endpoint(e)).transpose()?.unwrap_or(("web".into(), vec![]));
            let ep = NamingEndpoint {
                name: name.0,
                aliases: a.aliases.clone(),
                addresses: a.addresses.clone(),
                labels: name.1,
            };
            let net = NamingNetwork { name: a.network.clone(), tenant: "test".into(), options, config };
            let records = host.names("test", &ep, &net).map_err(|e| e.to_string())?;
            let records: Vec<_> = records
                .iter()
                .map(|r| {
                    let kind = match r.kind {
                        RecordKind::Address if r.address.is_ipv4() => "A",
                        RecordKind::Address => "AAAA",
                        RecordKind::Pointer => "PTR",
                    };
                    json!({ "type": kind, "name": r.name, "address": r.address.to_string() })
                })
                .collect();
            json!({ "records": records })
        }
        Kind::Policy => {
            let docs = match &a.documents {
                Some(f) => {
                    let text = std::fs::read_to_string(f).map_err(|e| format!("reading {f}: {e}"))?;
                    weft_model::document::parse("documents", &text)
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .map(|d| d.body)
                        .collect()
                }
                None => Vec::new(),
            };
            let net = NetworkInfo { name: a.network.clone(), tenant: "test".into(), internal: false, options, config };
            let compiled = host.compile("test", &net, &docs).map_err(|e| e.to_string())?;
            let mut groups = Vec::new();
            for spec in &a.endpoints {
                let (name, labels) = endpoint(spec)?;
                let ep = EndpointInfo { name: name.clone(), network: a.network.clone(), labels };
                let g = host.classify("test", &net, &compiled.state, &ep).map_err(|e| e.to_string())?;
                groups.push(json!({ "endpoint": name, "groups": g }));
            }
            json!({ "rules": compiled.rules, "classified": groups })
        }
    };
    let out = json!({ "module": a.file, "kind": kind.as_str(), "imports": info.imports, "exports": info.exports, "result": out });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}
