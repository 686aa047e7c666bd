//! The result of ADD (and the answer to a repeated ADD), shaped for the
//! CNI version the runtime asked for: 0.3.x and 0.4.0 mark each address
//! with its IP version; 1.0 and later do not.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};
use weft_grpc::pb;

use crate::conf::{RuntimeDns, at_least};

/// The CNI result for `ep` in `version`. `dns` is what the runtime asked
/// for; weft's own DNS server comes first.
pub fn result(version: &str, ep: &pb::Endpoint, dns: Option<&RuntimeDns>) -> Value {
    let mut interfaces = Vec::new();
    if has_host_side(ep) {
        interfaces.push(json!({ "name": ep.bridge }));
        interfaces.push(json!({ "name": ep.host_ifname }));
    }
    let container = interfaces.len();
    interfaces.push(json!({ "name": ep.ifname, "mac": ep.mac, "sandbox": ep.netns }));
    let gateways: Vec<IpAddr> = ep.gateways.iter().filter_map(|g| g.parse().ok()).collect();
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    for a in ep.addresses.iter().filter_map(|a| a.parse::<IpNet>().ok()) {
        let mut ip = json!({ "address": a.to_string(), "interface": container });
        let gateway = gateways.iter().find(|g| a.contains(*g));
        if let Some(g) = gateway {
            ip["gateway"] = json!(g.to_string());
            let dst = if g.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
            routes.push(json!({ "dst": dst, "gw": g.to_string() }));
        }
        if !at_least(version, "1.0.0") {
            ip["version"] = json!(if a.addr().is_ipv4() { "4" } else { "6" });
        }
        ips.push(ip);
    }
    let mut nameservers = ep.dns_servers.clone();
    let mut search = ep.dns_search.clone();
    let mut options = Vec::new();
    if let Some(d) = dns {
        nameservers.extend(d.servers.iter().filter(|s| !ep.dns_servers.contains(s)).cloned());
        search.extend(d.searches.iter().filter(|s| !ep.dns_search.contains(s)).cloned());
        options.clone_from(&d.options);
    }
    let mut dns = json!({});
    for (k, v) in [("nameservers", nameservers), ("search", search), ("options", options)] {
        if !v.is_empty() {
            dns[k] = json!(v);
        }
    }
    json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": dns,
    })
}

/// `ep` is a veth pair on a bridge (bridge and overlay networks; a
/// macvlan endpoint has no host side, and weftd names no bridge for it).
pub fn has_host_side(ep: &pb::Endpoint) -> bool {
    !ep.bridge.is_empty()
}

/// The addresses (with prefix) and the container interface's MAC a
/// previous result names, for CHECK.
pub fn named_in(prev: &Value) -> (Vec<String>, Option<String>) {
    let ips = prev["ips"].as_array().map(Vec::as_slice).unwrap_or_default();
    let addresses = ips.iter().filter_map(|i| i["address"].as_str().map(str::to_owned)).collect();
    let ifaces = prev["interfaces"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mac = ifaces.iter().find(|i| i.get("sandbox").is_some()).and_then(|i| i["mac"].as_str().map(str::to_owned));
    (addresses, mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> pb::Endpoint {
        pb::Endpoint {
            bridge: "weft-ab".into(),
            ifname: "eth0".into(),
            host_ifname: "veth0123".into(),
            mac: "02:42:0a:01:00:02".into(),
            netns: "/run/netns/c".into(),
            addresses: vec!["10.1.0.2/24".into(), "fd00::2/64".into()],
            gateways: vec!["10.1.0.1".into(), "fd00::1".into()],
            dns_servers: vec!["10.1.0.1".into()],
            dns_search: vec!["pods".into()],
            ..Default::default()
        }
    }

    #[test]
    fn shaped_for_the_version_asked() {
        let ep = ep();
        let r = result("1.0.0", &ep, None);
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(r["ips"][0], json!({"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 2}));
        assert_eq!(r["routes"][1], json!({"dst": "::/0", "gw": "fd00::1"}));
        assert_eq!(r["dns"], json!({"nameservers": ["10.1.0.1"], "search": ["pods"]}));
        let old = result("0.3.1", &ep, None);
        assert_eq!(old["ips"][1]["version"], "6");
        assert_eq!(named_in(&r), (ep.addresses.clone(), Some(ep.mac.clone())));
        let macvlan = pb::Endpoint { bridge: String::new(), ..ep };
        assert_eq!(result("1.0.0", &macvlan, None)["interfaces"].as_array().unwrap().len(), 1, "the container's only");
    }

    #[test]
    fn the_runtimes_dns_follows_wefts_own() {
        let ep = ep();
        let asked = RuntimeDns {
            servers: vec!["9.9.9.9".into(), "10.1.0.1".into()],
            searches: vec![],
            options: vec!["ndots:2".into()],
        };
        let r = result("1.1.0", &ep, Some(&asked));
        assert_eq!(r["dns"]["nameservers"], json!(["10.1.0.1", "9.9.9.9"]));
        assert_eq!(r["dns"]["options"], json!(["ndots:2"]));
    }
}
