//! Rendering API messages as tables and JSON.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use weft_grpc::pb;

/// Print a JSON value, pretty.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn sorted(m: &std::collections::HashMap<String, String>) -> BTreeMap<&String, &String> {
    m.iter().collect()
}

/// A network as JSON (what `inspect -o json` prints).
pub fn network_json(n: &pb::Network) -> Value {
    json!({
        "name": n.name,
        "id": n.id,
        "tenant": n.tenant,
        "driver": n.driver,
        "subnets": n.subnets.iter().map(|s| json!({
            "subnet": s.subnet,
            "gateway": s.gateway,
            "ip_range": if s.ip_range.is_empty() { Value::Null } else { Value::from(s.ip_range.clone()) },
        })).collect::<Vec<_>>(),
        "gateways": n.subnets.iter().map(|s| s.gateway.clone()).collect::<Vec<_>>(),
        "bridge": n.bridge,
        "internal": n.internal,
        "ipam": n.ipam,
        "policy": n.policy,
        "naming": n.naming,
        "module_config": sorted(&n.module_config),
        "options": sorted(&n.options),
        "labels": sorted(&n.labels),
        "vni": if n.vni == 0 { Value::Null } else { Value::from(n.vni) },
        "mtu": if n.mtu == 0 { Value::Null } else { Value::from(n.mtu) },
        "endpoints": n.endpoints.iter().map(endpoint_json).collect::<Vec<_>>(),
    })
}

/// An endpoint as JSON.
pub fn endpoint_json(e: &pb::Endpoint) -> Value {
    json!({
        "name": e.name,
        "id": e.id,
        "tenant": e.tenant,
        "network": e.network,
        "netns": e.netns,
        "ifname": e.ifname,
        "mac": e.mac,
        "addresses": e.addresses,
        "gateways": e.gateways,
        "host_ifname": e.host_ifname,
        "labels": sorted(&e.labels),
        "publish": e.publish,
        "port_names": e.port_names,
        "mode": e.mode,
        "groups": e.groups,
        "aliases": e.aliases,
        "dns_servers": e.dns_servers,
        "dns_search": e.dns_search,
        "state": e.state,
        "node": if e.node.is_empty() { Value::Null } else { Value::from(e.node.clone()) },
    })
}

/// Print aligned columns.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", s.join("   ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r);
    }
}

/// `weft network ls`.
pub fn network_table(ns: &[pb::Network]) {
    table(
        &["NAME", "ID", "DRIVER", "SUBNETS", "BRIDGE", "ENDPOINTS"],
        ns.iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.id.chars().take(12).collect(),
                    n.driver.clone(),
                    n.subnets.iter().map(|s| s.subnet.clone()).collect::<Vec<_>>().join(","),
                    n.bridge.clone(),
                    n.endpoints.len().to_string(),
                ]
            })
            .collect(),
    );
}

/// `weft network inspect`.
pub fn network_detail(n: &pb::Network) {
    println!("Name:      {}", n.name);
    println!("ID:        {}", n.id);
    println!("Tenant:    {}", n.tenant);
    println!("Driver:    {}", n.driver);
    println!("Bridge:    {}", n.bridge);
    println!("Internal:  {}", n.internal);
    println!("IPAM:      {}", n.ipam);
    println!("Policy:    {}", n.policy);
    println!("Naming:    {}", n.naming);
    if n.vni > 0 {
        println!("VNI:       {}", n.vni);
    }
    if n.mtu > 0 {
        println!("MTU:       {}", n.mtu);
    }
    for s in &n.subnets {
        let range = if s.ip_range.is_empty() { String::new() } else { format!("  range {}", s.ip_range) };
        println!("Subnet:    {}  gateway {}{range}", s.subnet, s.gateway);
    }
    for (k, v) in sorted(&n.options) {
        println!("Option:    {k}={v}");
    }
    for (k, v) in sorted(&n.labels) {
        println!("Label:     {k}={v}");
    }
    for (k, v) in sorted(&n.module_config) {
        let v = if v.contains('\n') || v.len() > 60 { format!("({} bytes)", v.len()) } else { v.clone() };
        println!("Config:    {k}={v}");
    }
    println!();
    endpoint_table(&n.endpoints);
}

/// `weft endpoint ls` (with the node of each, in cluster mode).
pub fn endpoint_table(es: &[pb::Endpoint]) {
    let nodes = es.iter().any(|e| !e.node.is_empty());
    let mut head = vec!["NAME", "NETWORK", "IFNAME", "MAC", "ADDRESSES", "PORTS", "NETNS", "STATE"];
    if nodes {
        head.insert(1, "NODE");
    }
    table(
        &head,
        es.iter()
            .map(|e| {
                let mut row = vec![
                    e.name.clone(),
                    e.network.clone(),
                    e.ifname.clone(),
                    e.mac.clone(),
                    e.addresses.join(","),
                    e.publish.join(","),
                    e.netns.clone(),
                    e.state.clone(),
                ];
                if nodes {
                    row.insert(1, e.node.clone());
                }
                row
            })
            .collect(),
    );
}

/// `weft node ls`.
pub fn node_table(ns: &[pb::Node]) {
    table(
        &["NAME", "ADVERTISE IP", "STATE", "ENDPOINTS", "JOINED"],
        ns.iter()
            .map(|n| {
                let name = if n.this { format!("{} *", n.name) } else { n.name.clone() };
                let state = if n.alive { "alive" } else { "down" };
                vec![name, n.advertise_ip.clone(), state.into(), n.endpoints.to_string(), rfc3339_ms(n.joined_ms)]
            })
            .collect(),
    );
}

/// `weft node ls -o json`.
pub fn nodes_json(ns: &[pb::Node]) -> Value {
    Value::Array(
        ns.iter()
            .map(|n| {
                json!({"name": n.name, "advertise_ip": n.advertise_ip, "alive": n.alive, "this": n.this,
                       "endpoints": n.endpoints, "joined": rfc3339_ms(n.joined_ms)})
            })
            .collect(),
    )
}

/// `weft endpoint inspect`.
pub fn endpoint_detail(e: &pb::Endpoint) {
    println!("Name:       {}", e.name);
    println!("ID:         {}", e.id);
    println!("Tenant:     {}", e.tenant);
    println!("Network:    {}", e.network);
    println!("Netns:      {}", e.netns);
    println!("Interface:  {} (host side {})", e.ifname, e.host_ifname);
    println!("MAC:        {}", e.mac);
    println!("Addresses:  {}", e.addresses.join(", "));
    println!("Gateways:   {}", e.gateways.join(", "));
    println!("Mode:       {}", e.mode);
    println!("Groups:     {}", e.groups.join(", "));
    println!("Aliases:    {}", e.aliases.join(", "));
    println!("DNS:        {} (search {})", e.dns_servers.join(", "), e.dns_search.join(" "));
    println!("State:      {}", e.state);
    for p in &e.publish {
        println!("Publish:    {p}");
    }
    for p in &e.port_names {
        println!("Port name:  {p}");
    }
    for (k, v) in sorted(&e.labels) {
        println!("Label:      {k}={v}");
    }
}

/// `weft stats -o json`.
pub fn stats_json(s: &pb::Stats) -> Value {
    let phases: Vec<Value> = s
        .phases
        .iter()
        .map(|p| json!({"name": p.name, "count": p.count, "total_us": p.total_us, "max_us": p.max_us}))
        .collect();
    json!({
        "phases": phases,
        "rss_bytes": s.rss_bytes,
        "cpu_user_ms": s.cpu_user_ms,
        "cpu_system_ms": s.cpu_system_ms,
        "networks": s.networks,
        "endpoints": s.endpoints,
        "revision": s.revision,
        "repairs": s.repairs.iter().collect::<BTreeMap<_, _>>(),
    })
}

/// `weft stats`: one row per phase with its mean, then the process.
pub fn stats_table(s: &pb::Stats) {
    let rows = s
        .phases
        .iter()
        .map(|p| {
            let mean = if p.count == 0 { 0.0 } else { p.total_us as f64 / p.count as f64 / 1e3 };
            vec![
                p.name.clone(),
                p.count.to_string(),
                format!("{mean:.3}"),
                format!("{:.3}", p.max_us as f64 / 1e3),
                format!("{:.1}", p.total_us as f64 / 1e3),
            ]
        })
        .collect();
    table(&["PHASE", "COUNT", "MEAN MS", "MAX MS", "TOTAL MS"], rows);
    println!(
        "\nnetworks {}   endpoints {}   rss {:.1} MiB   cpu user {:.2} s   system {:.2} s",
        s.networks,
        s.endpoints,
        s.rss_bytes as f64 / (1 << 20) as f64,
        s.cpu_user_ms as f64 / 1e3,
        s.cpu_system_ms as f64 / 1e3
    );
    let repairs: BTreeMap<&String, &u64> = s.repairs.iter().collect();
    let repairs: Vec<String> = repairs.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "revision {}   repairs {}",
        s.revision,
        if repairs.is_empty() { "none".to_owned() } else { repairs.join(", ") }
    );
}

/// A dry run's plan as JSON.
pub fn plan_json(p: &pb::DryRun) -> Value {
    json!({
        "ops": p.ops.iter().map(|o| json!({
            "ns": o.ns,
            "command": o.command,
            "op": serde_json::from_str::<Value>(&o.json).unwrap_or(Value::Null),
        })).collect::<Vec<_>>(),
        "writes": p.writes,
        "events": p.events.iter().map(event_json).collect::<Vec<_>>(),
    })
}

/// A dry run's plan as text: what would run, be written and be published.
pub fn plan_text(p: &pb::DryRun) {
    println!("dry run: nothing was changed");
    println!("would run:");
    for o in &p.ops {
        if o.ns == "host" {
            println!("  {}", o.command);
        } else {
            println!("  [netns {}] {}", o.ns, o.command);
        }
    }
    println!("would write (one transaction):");
    for w in &p.writes {
        println!("  {w}");
    }
    println!("would publish:");
    for e in &p.events {
        println!("  {}", event_line(e));
    }
}

/// An event as JSON.
pub fn event_json(e: &pb::Event) -> Value {
    json!({
        "revision": e.revision,
        "time_ms": e.time_ms,
        "kind": e.kind,
        "tenant": e.tenant,
        "network": e.network,
        "name": e.name,
        "addresses": e.addresses,
        "mac": e.mac,
        "ports": e.ports,
        "message": e.message,
    })
}

/// An event as one line, shaped like `docker events`:
/// `TIME REVISION KIND NETWORK/NAME (details)`.
pub fn event_line(e: &pb::Event) -> String {
    let mut details: Vec<String> = Vec::new();
    if !e.addresses.is_empty() {
        details.push(format!("addresses={}", e.addresses.join(",")));
    }
    if !e.mac.is_empty() {
        details.push(format!("mac={}", e.mac));
    }
    if !e.ports.is_empty() {
        details.push(format!("ports={}", e.ports.join(",")));
    }
    if !e.message.is_empty() {
        details.push(e.message.clone());
    }
    let object =
        if e.network.is_empty() || e.network == e.name { e.name.clone() } else { format!("{}/{}", e.network, e.name) };
    let time = if e.time_ms == 0 { "-".to_owned() } else { rfc3339_ms(e.time_ms) };
    let details = if details.is_empty() { String::new() } else { format!(" ({})", details.join(", ")) };
    format!("{time} {} {} {object}{details}", e.revision, e.kind)
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, ms % 1000)
}

/// A tenant's usage as JSON: `{"tenant": .., "resources": {name: {used, limit}}}`.
pub fn usage_json(u: &pb::TenantUsage) -> Value {
    let resources: serde_json::Map<String, Value> =
        u.resources.iter().map(|r| (r.resource.clone(), json!({"used": r.used, "limit": r.limit}))).collect();
    json!({"tenant": u.tenant, "resources": resources})
}

/// A tenant's usage as a table.
pub fn usage_table(u: &pb::TenantUsage) {
    let rows = u.resources.iter().map(|r| vec![r.resource.clone(), r.used.to_string(), r.limit.to_string()]).collect();
    table(&["RESOURCE", "USED", "LIMIT"], rows);
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_times_are_utc_rfc3339() {
        assert_eq!(super::rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339_ms(1_796_190_123_456), "2026-12-02T05:42:03.456Z");
    }
}
