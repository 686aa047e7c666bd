//! Events: one per object a commit changed, numbered by the commit's
//! revision. Orchestrators watch them (`EventService.Watch`) the way a
//! Kubernetes client watches a resource: list (which carries the current
//! revision), then watch from that revision, re-listing if told the
//! revision is too old.

use serde::{Deserialize, Serialize};

/// How many events weftd keeps for clients that resume (at least; events
/// younger than [`RETAIN_SECS`] are kept even past this count).
pub const RETAIN_EVENTS: usize = 10_000;
/// Events younger than this are kept whatever their number.
pub const RETAIN_SECS: u64 = 300;
/// An idle watch gets a heartbeat with the current revision this often.
pub const HEARTBEAT_SECS: u64 = 5;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A network was created.
    NetworkCreated,
    /// A network changed (its policy component).
    NetworkUpdated,
    /// A network was removed.
    NetworkRemoved,
    /// An endpoint was attached.
    EndpointAttached,
    /// An endpoint was detached.
    EndpointDetached,
    /// A policy document was created or changed.
    PolicyApplied,
    /// A policy document was deleted.
    PolicyDeleted,
    /// A module was uploaded.
    ModuleUploaded,
    /// A module was removed.
    ModuleRemoved,
    /// Reconcile found drift and repaired it.
    Repaired,
}

impl EventKind {
    /// Every kind, in a stable order.
    pub const ALL: [EventKind; 10] = [
        EventKind::NetworkCreated,
        EventKind::NetworkUpdated,
        EventKind::NetworkRemoved,
        EventKind::EndpointAttached,
        EventKind::EndpointDetached,
        EventKind::PolicyApplied,
        EventKind::PolicyDeleted,
        EventKind::ModuleUploaded,
        EventKind::ModuleRemoved,
        EventKind::Repaired,
    ];

    /// As clients name it: `network.created`, `endpoint.attached`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::NetworkCreated => "network.created",
            EventKind::NetworkUpdated => "network.updated",
            EventKind::NetworkRemoved => "network.removed",
            EventKind::EndpointAttached => "endpoint.attached",
            EventKind::EndpointDetached => "endpoint.detached",
            EventKind::PolicyApplied => "policy.applied",
            EventKind::PolicyDeleted => "policy.deleted",
            EventKind::ModuleUploaded => "module.uploaded",
            EventKind::ModuleRemoved => "module.removed",
            EventKind::Repaired => "repair",
        }
    }

    /// Parse a kind by its name, or every kind of an object type
    /// (`network`, `endpoint`, `policy`, `module`, `repair`).
    pub fn parse_filter(s: &str) -> Option<Vec<EventKind>> {
        let exact: Vec<EventKind> = EventKind::ALL.into_iter().filter(|k| k.as_str() == s).collect();
        if !exact.is_empty() {
            return Some(exact);
        }
        let prefix: Vec<EventKind> =
            EventKind::ALL.into_iter().filter(|k| k.as_str().split('.').next() == Some(s)).collect();
        (!prefix.is_empty()).then_some(prefix)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The revision of the commit that made it (several events may share one).
    pub revision: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The tenant that owns the object (empty: an operator-level event).
    pub tenant: String,
    /// The network it concerns (empty for modules and tenant-wide documents).
    pub network: String,
    /// The object's name: endpoint, network, document (`Kind ns/name`) or module.
    pub name: String,
    /// An endpoint's addresses (CIDR form).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// An endpoint's MAC.
    #[serde(default)]
    pub mac: String,
    /// An endpoint's published ports (`-p` syntax).
    #[serde(default)]
    pub ports: Vec<String>,
    /// Free text: for repairs what had drifted and what was done.
    #[serde(default)]
    pub message: String,
}

impl Event {
    /// An event of `kind` about `name`, numbered and stamped at commit.
    pub fn new(kind: EventKind, tenant: &str, network: &str, name: &str) -> Event {
        Event {
            revision: 0,
            time_ms: 0,
            kind,
            tenant: tenant.to_owned(),
            network: network.to_owned(),
            name: name.to_owned(),
            addresses: Vec::new(),
            mac: String::new(),
            ports: Vec::new(),
            message: String::new(),
        }
    }

    /// The same event with a message.
    pub fn with_message(mut self, message: impl Into<String>) -> Event {
        self.message = message.into();
        self
    }
}

/// What a watch asks for.
#[derive(Debug, Clone, Default)]
pub struct WatchFilter {
    /// The tenant whose events to deliver (empty: the default tenant).
    pub tenant: String,
    /// Deliver events after this revision; 0: only events from now on.
    pub from_revision: u64,
    /// Only events of this network (name), if set.
    pub network: String,
    /// Only these kinds (names or object types), if any.
    pub kinds: Vec<String>,
}

/// One item of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// An event.
    Event(Event),
    /// Nothing happened for a while; the current revision.
    Heartbeat(u64),
}
