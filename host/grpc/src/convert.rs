//! Protobuf <-> model conversion. Requests become the model's raw request
//! types (validation happens in the model); views become messages.

use weft_model::api::{
    DocumentsChanged, EndpointView, ModuleView, NetworkView, Outcome, Plan, PolicyVerdict, Ref, Stats,
};
use weft_model::document::StoredDocument;
use weft_model::endpoint::{AttachEndpoint, DetachEndpoint, EndpointState};
use weft_model::event::{Event, WatchItem};
use weft_model::network::{CreateNetwork, SubnetRequest};
use weft_model::policy::explain::Check;

use crate::pb;

/// Create request to model.
pub fn create_network(r: pb::CreateNetworkRequest) -> CreateNetwork {
    CreateNetwork {
        tenant: r.tenant,
        name: r.name,
        driver: r.driver,
        subnets: r
            .subnets
            .into_iter()
            .map(|s| SubnetRequest { subnet: s.subnet, gateway: s.gateway, ip_range: s.ip_range })
            .collect(),
        internal: r.internal,
        options: r.options.into_iter().collect(),
        labels: r.labels.into_iter().collect(),
        ipam: r.ipam,
        policy: r.policy,
        naming: r.naming,
        module_config: r.module_config.into_iter().collect(),
        dry_run: r.dry_run,
    }
}

/// Attach request to model.
pub fn attach(r: pb::AttachEndpointRequest) -> AttachEndpoint {
    AttachEndpoint {
        tenant: r.tenant,
        network: r.network,
        name: r.name,
        netns: r.netns,
        ifname: r.ifname,
        ips: r.ips,
        mac: r.mac,
        labels: r.labels.into_iter().collect(),
        publish: r.publish,
        port_names: r.port_names,
        mode: r.mode,
        aliases: r.aliases,
        dry_run: r.dry_run,
        allow_foreign_netns: r.allow_foreign_netns,
        request_key: r.request_key,
    }
}

/// Detach request to model.
pub fn detach(r: pb::DetachEndpointRequest) -> DetachEndpoint {
    DetachEndpoint {
        tenant: r.tenant,
        network: r.network,
        name: r.name,
        request_key: r.request_key,
        allow_missing: r.allow_missing,
        dry_run: r.dry_run,
    }
}

/// A reference by tenant / network / endpoint name.
pub fn reference(tenant: String, network: String, name: String) -> Ref {
    Ref { tenant, network, name, dry_run: false }
}

/// A reference of a mutating call, with its dry-run flag.
pub fn mutation(tenant: String, network: String, name: String, dry_run: bool) -> Ref {
    Ref { tenant, network, name, dry_run }
}

/// A dry run's plan to message.
pub fn plan(p: Option<Plan>) -> Option<pb::DryRun> {
    p.map(|p| pb::DryRun {
        ops: p.ops.into_iter().map(|o| pb::PlannedOp { ns: o.ns, command: o.command, json: o.json }).collect(),
        writes: p.writes,
        events: p.events.into_iter().map(event).collect(),
    })
}

/// A network view and the call's outcome to message.
pub fn network_outcome((v, o): (NetworkView, Outcome)) -> pb::Network {
    pb::Network { revision: o.revision, dry_run: plan(o.plan), ..network(v) }
}

/// An endpoint view and the call's outcome to message.
pub fn endpoint_outcome((v, o): (EndpointView, Outcome)) -> pb::Endpoint {
    pb::Endpoint { revision: o.revision, dry_run: plan(o.plan), ..endpoint(v) }
}

/// An event to message.
pub fn event(e: Event) -> pb::Event {
    pb::Event {
        revision: e.revision,
        time_ms: e.time_ms,
        kind: e.kind.as_str().to_owned(),
        tenant: e.tenant,
        network: e.network,
        name: e.name,
        addresses: e.addresses,
        mac: e.mac,
        ports: e.ports,
        message: e.message,
    }
}

/// A watch item to message.
pub fn watch_item(i: WatchItem) -> pb::WatchResponse {
    use pb::watch_response::Item;
    pb::WatchResponse {
        item: Some(match i {
            WatchItem::Event(e) => Item::Event(event(e)),
            WatchItem::Heartbeat(revision) => Item::Heartbeat(pb::Heartbeat { revision }),
        }),
    }
}

/// Network view to message.
pub fn network(v: NetworkView) -> pb::Network {
    let n = v.network;
    pb::Network {
        id: n.id,
        tenant: n.spec.tenant.to_string(),
        name: n.spec.name.to_string(),
        driver: n.spec.driver,
        subnets: n
            .spec
            .subnets
            .iter()
            .map(|s| pb::Subnet {
                subnet: s.subnet.to_string(),
                gateway: s.gateway.to_string(),
                ip_range: s.ip_range.map(|r| r.to_string()).unwrap_or_default(),
            })
            .collect(),
        bridge: n.bridge.to_string(),
        internal: n.spec.internal,
        options: n.spec.options.into_iter().collect(),
        labels: n.spec.labels.into_iter().collect(),
        ipam: n.spec.ipam,
        policy: n.spec.policy,
        naming: n.spec.naming,
        module_config: n.spec.module_config.into_iter().collect(),
        endpoints: v.endpoints.into_iter().map(endpoint).collect(),
        vni: n.overlay.map_or(0, |o| o.vni),
        mtu: n.spec.mtu.unwrap_or(0),
        revision: 0,
        dry_run: None,
    }
}

/// Endpoint view to message.
pub fn endpoint(v: EndpointView) -> pb::Endpoint {
    let e = v.endpoint;
    pb::Endpoint {
        id: e.id,
        tenant: e.spec.tenant.to_string(),
        network: e.spec.network.to_string(),
        name: e.spec.name.to_string(),
        netns: e.spec.netns.display().to_string(),
        ifname: e.spec.ifname.to_string(),
        mac: e.mac.to_string(),
        addresses: e.addresses.iter().map(ToString::to_string).collect(),
        gateways: v.gateways.iter().map(ToString::to_string).collect(),
        host_ifname: e.host_ifname.to_string(),
        labels: e.spec.labels.into_iter().collect(),
        publish: e.spec.publish.iter().map(ToString::to_string).collect(),
        port_names: e.spec.port_names.iter().map(ToString::to_string).collect(),
        mode: e.spec.mode.to_string(),
        groups: e.groups,
        node: e.node.unwrap_or_default(),
        request_key: e.spec.request_key.unwrap_or_default(),
        bridge: v.bridge.map(|b| b.to_string()).unwrap_or_default(),
        aliases: e.spec.aliases,
        dns_servers: v.dns_servers.iter().map(ToString::to_string).collect(),
        dns_search: v.dns_search,
        state: match e.state {
            EndpointState::Pending => "pending",
            EndpointState::Ready => "ready",
        }
        .into(),
        revision: 0,
        dry_run: None,
    }
}

/// A stored policy document to message.
pub fn document(d: StoredDocument) -> pb::PolicyDocument {
    pb::PolicyDocument {
        kind: d.doc.key.kind,
        namespace: d.doc.key.namespace,
        name: d.doc.key.name,
        network: d.network,
        body: d.doc.body,
    }
}

/// The outcome of an apply.
pub fn applied((c, o): (DocumentsChanged, Outcome)) -> pb::ApplyPoliciesResponse {
    pb::ApplyPoliciesResponse {
        documents: c
            .documents
            .into_iter()
            .map(|(d, a)| pb::AppliedDocument { document: Some(document(d)), action: a.as_str().into() })
            .collect(),
        networks: c.networks,
        revision: o.revision,
        dry_run: plan(o.plan),
    }
}

/// The outcome of a delete.
pub fn deleted((c, o): (DocumentsChanged, Outcome)) -> pb::DeletePoliciesResponse {
    pb::DeletePoliciesResponse {
        documents: c.documents.into_iter().map(|(d, _)| document(d)).collect(),
        networks: c.networks,
        revision: o.revision,
        dry_run: plan(o.plan),
    }
}

fn check(c: Check) -> pb::PolicyCheck {
    match c {
        Check::NotIsolated => pb::PolicyCheck { outcome: "not_isolated".into(), ..Default::default() },
        Check::Allowed { rule, source } => {
            pb::PolicyCheck { outcome: "allowed".into(), rule, source, isolated_by: vec![] }
        }
        Check::Denied { isolated_by } => pb::PolicyCheck {
            outcome: "denied".into(),
            isolated_by: isolated_by.into_iter().map(|(g, s)| format!("{g} ({s})")).collect(),
            ..Default::default()
        },
    }
}

/// Node view to message.
pub fn node(n: weft_model::api::NodeView) -> pb::Node {
    pb::Node {
        name: n.name,
        advertise_ip: n.advertise_ip,
        alive: n.alive,
        this: n.this,
        joined_ms: n.joined_ms,
        endpoints: n.endpoints,
    }
}

/// Counters to message.
pub fn stats(v: Stats) -> pb::Stats {
    pb::Stats {
        phases: v
            .phases
            .into_iter()
            .map(|p| pb::PhaseStat { name: p.name, count: p.count, total_us: p.total_us, max_us: p.max_us })
            .collect(),
        rss_bytes: v.rss_bytes,
        cpu_user_ms: v.cpu_user_ms,
        cpu_system_ms: v.cpu_system_ms,
        networks: v.networks,
        endpoints: v.endpoints,
        revision: v.revision,
        repairs: v.repairs.into_iter().collect(),
    }
}

/// A verdict to message.
pub fn verdict(v: PolicyVerdict) -> pb::CheckPolicyResponse {
    pb::CheckPolicyResponse {
        allowed: v.explanation.allowed,
        egress: Some(check(v.explanation.egress)),
        ingress: Some(check(v.explanation.ingress)),
        from_address: v.from.to_string(),
        to_address: v.to.to_string(),
    }
}

/// A module to message.
pub fn module(v: ModuleView) -> pb::Module {
    let r = v.record;
    pb::Module {
        tenant: r.tenant,
        name: r.name,
        kind: r.kind,
        digest: r.digest,
        size: r.size,
        builtin: v.builtin,
        created: r.created,
        imports: r.imports,
        exports: r.exports,
        bound_to: v.bound_to,
        revision: 0,
        dry_run: None,
    }
}

/// A tenant's usage to message.
pub fn usage(u: weft_model::api::TenantUsage) -> pb::TenantUsage {
    let resources = u
        .used
        .each()
        .into_iter()
        .zip(u.limits.each())
        .map(|((resource, used), (_, limit))| pb::ResourceUsage { resource: resource.to_owned(), used, limit })
        .collect();
    pb::TenantUsage { tenant: u.tenant, resources }
}
