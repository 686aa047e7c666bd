//! What a runtime hands the plugin: the network configuration on stdin
//! (with `runtimeConfig` for the capabilities weft honours, `prevResult`,
//! and GC's attachment list) and the `CNI_*` environment. Everything is
//! checked here, before weftd is called.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{self, CniError};

/// The CNI versions the plugin speaks (results are shaped for the one asked).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// weftd's socket when the configuration names none.
pub const DEFAULT_SOCKET: &str = "/run/weft/weft.sock";
/// The request key prefix of attachments made through CNI.
pub const KEY_PREFIX: &str = "cni/";

/// The files the plugin presents to weftd's TLS listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Client certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The CA weftd's certificate chains to (PEM).
    pub ca: PathBuf,
}

/// One `portMappings` entry (the `portMappings` capability).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortMap {
    /// Port on the host.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// tcp (default), udp or sctp.
    #[serde(default)]
    pub protocol: String,
    /// Host address to listen on; empty for all.
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

/// One `portNames` entry (weft's `portNames` capability): a container port
/// declared by name, as a Kubernetes container declares one, so that a
/// NetworkPolicy `port: http` can resolve it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortName {
    /// The name (an IANA service name: `http`).
    pub name: String,
    /// The port in the container.
    pub container_port: u16,
    /// tcp (default), udp or sctp.
    #[serde(default)]
    pub protocol: String,
}

impl PortName {
    /// As weft's API takes it: `NAME=PORT/PROTO`.
    pub fn to_request(&self) -> String {
        let proto = if self.protocol.is_empty() { "tcp".to_owned() } else { self.protocol.to_ascii_lowercase() };
        format!("{}={}/{proto}", self.name, self.container_port)
    }
}

/// The `dns` capability: what the runtime wants in the container's resolv.conf.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RuntimeDns {
    /// Name servers.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub searches: Vec<String>,
    /// resolv.conf options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// `runtimeConfig`: the capabilities weft honours.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// Published ports.
    #[serde(default)]
    pub port_mappings: Vec<PortMap>,
    /// Static addresses (`10.1.0.5/24` or `10.1.0.5`).
    #[serde(default)]
    pub ips: Vec<String>,
    /// A MAC address.
    #[serde(default)]
    pub mac: String,
    /// DNS the runtime asks for.
    #[serde(default)]
    pub dns: Option<RuntimeDns>,
    /// podman's `aliases` capability: network name to DNS names.
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    /// weft's `portNames` capability: named container ports.
    #[serde(default)]
    pub port_names: Vec<PortName>,
}

/// One attachment of GC's valid list.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attachment {
    /// The container.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface.
    pub ifname: String,
}

/// The network configuration (one plugin's entry of a conflist, with the
/// list's `name` and `cniVersion` injected by the runtime).
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    /// The CNI version the runtime speaks.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// The network configuration's name.
    #[serde(default)]
    pub name: String,
    /// `weft`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The weft network; empty: the configuration's `name`.
    #[serde(default)]
    pub network: String,
    /// weftd's Unix socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// weftd's TLS listener (`https://HOST:PORT`), instead of the socket.
    #[serde(default)]
    pub addr: Option<String>,
    /// The TLS files for `addr`.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// The tenant the network is of (an operator or orchestrator caller
    /// acting for it); empty: the caller's own.
    #[serde(default)]
    pub tenant: String,
    /// Subnets to create the network from if it does not exist (and the
    /// caller may create networks).
    #[serde(default)]
    pub subnets: Vec<String>,
    /// One subnet, the same as `subnets: [subnet]`.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Capabilities' values.
    #[serde(rename = "runtimeConfig", default)]
    pub runtime: RuntimeConfig,
    /// The result of ADD (CHECK, DEL).
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<serde_json::Value>,
    /// An `ipam` section (from a bridge conflist): refused, weft's IPAM is
    /// the network's component.
    #[serde(default)]
    pub ipam: Option<serde_json::Value>,
    /// GC: the attachments to keep (CNI 1.1).
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// GC: the same, under its name in drafts of the spec.
    #[serde(rename = "cni.dev/attachments", default)]
    pub attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parse stdin. An empty stdin (VERSION from some runtimes) is a
    /// configuration with no fields.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let text = if stdin.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { stdin };
        serde_json::from_slice(text)
            .map_err(|e| CniError::new(error::DECODE_FAILURE, format!("the network configuration on stdin: {e}")))
    }

    /// Check the fields every verb but VERSION needs.
    pub fn check(&self) -> Result<(), CniError> {
        check_version(&self.cni_version)?;
        if self.kind != "weft" {
            return Err(CniError::new(
                error::INVALID_CONFIG,
                format!("\"type\" is {:?}; this plugin is \"weft\"", self.kind),
            ));
        }
        if self.name.is_empty() {
            return Err(CniError::new(error::INVALID_CONFIG, "\"name\" (the network configuration's) is required"));
        }
        if self.addr.is_some() != self.tls.is_some() {
            return Err(CniError::new(
                error::INVALID_CONFIG,
                "\"addr\" (weftd's TLS listener) needs \"tls\": {\"cert\", \"key\", \"ca\"}, and \"tls\" needs \"addr\"",
            ));
        }
        if self.ipam.is_some() {
            return Err(CniError::new(
                error::UNSUPPORTED_FIELD,
                "\"ipam\": weft assigns addresses with the network's IPAM component; remove the section",
            ));
        }
        if self.addr.is_some() && self.socket.is_some() {
            return Err(CniError::new(error::INVALID_CONFIG, "give \"socket\" or \"addr\", not both"));
        }
        Ok(())
    }

    /// The weft network this configuration attaches to.
    pub fn network(&self) -> &str {
        if self.network.is_empty() { &self.name } else { &self.network }
    }

    /// The subnets to create the network from, if absent.
    pub fn subnets(&self) -> Vec<String> {
        self.subnet.iter().chain(&self.subnets).cloned().collect()
    }

    /// The attachments GC keeps (None: the runtime sent no list, so GC
    /// cannot know what is stale and removes nothing).
    pub fn keep(&self) -> Option<BTreeSet<Attachment>> {
        let list = self.valid_attachments.as_ref().or(self.attachments.as_ref())?;
        Some(list.iter().cloned().collect())
    }

    /// The request key of an attachment made through this configuration.
    pub fn request_key(&self, container_id: &str, ifname: &str) -> String {
        format!("{KEY_PREFIX}{}/{container_id}/{ifname}", self.name)
    }

    /// The attachment a request key names, if it is one of this
    /// configuration's.
    pub fn attachment_of(&self, key: &str) -> Option<Attachment> {
        let rest = key.strip_prefix(KEY_PREFIX)?.strip_prefix(&self.name)?.strip_prefix('/')?;
        let (container_id, ifname) = rest.rsplit_once('/')?;
        Some(Attachment { container_id: container_id.to_owned(), ifname: ifname.to_owned() })
    }
}

/// `version` must be one the plugin speaks.
pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        return Ok(());
    }
    Err(CniError::new(
        error::INCOMPATIBLE_VERSION,
        format!("cniVersion {version:?} is not supported; this plugin speaks {}", SUPPORTED_VERSIONS.join(", ")),
    ))
}

/// True when `version` is at least `min` (both supported versions).
pub fn at_least(version: &str, min: &str) -> bool {
    let pos = |v: &str| SUPPORTED_VERSIONS.iter().position(|s| *s == v);
    pos(version) >= pos(min)
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// ADD, DEL, CHECK, GC, STATUS or VERSION.
    pub command: String,
    /// The container's id.
    pub container_id: String,
    /// Its network namespace (may be empty on DEL).
    pub netns: String,
    /// The interface to make inside it.
    pub ifname: String,
    /// `CNI_ARGS`, parsed.
    pub args: Args,
}

/// `CNI_ARGS` keys weft uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// Kubernetes pod namespace, name, uid.
    pub pod_namespace: String,
    /// The pod's name (podman: the container's).
    pub pod_name: String,
    /// The pod's uid.
    pub pod_uid: String,
}

impl Args {
    /// Parse `K=V;K=V`. Unknown keys are an error unless `IgnoreUnknown`
    /// is set, as libcni's convention is.
    pub fn parse(s: &str) -> Result<Args, CniError> {
        let mut a = Args::default();
        let mut unknown = Vec::new();
        let mut ignore_unknown = false;
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(CniError::new(error::INVALID_ENV, format!("CNI_ARGS: {pair:?} is not KEY=VALUE")));
            };
            match k {
                "K8S_POD_NAMESPACE" => a.pod_namespace = v.to_owned(),
                "K8S_POD_NAME" => a.pod_name = v.to_owned(),
                "K8S_POD_UID" => a.pod_uid = v.to_owned(),
                "K8S_POD_INFRA_CONTAINER_ID" => {}
                "IgnoreUnknown" => ignore_unknown = matches!(v.to_ascii_lowercase().as_str(), "1" | "true"),
                other => unknown.push(other.to_owned()),
            }
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(CniError::new(
                error::INVALID_ENV,
                format!("CNI_ARGS: unknown key(s) {} (set IgnoreUnknown=1 to pass them)", unknown.join(", ")),
            ));
        }
        Ok(a)
    }

    /// The labels the endpoint gets (Kubernetes' names, so NetworkPolicy
    /// selects pods).
    pub fn labels(&self) -> BTreeMap<String, String> {
        [
            ("io.kubernetes.pod.namespace", &self.pod_namespace),
            ("io.kubernetes.pod.name", &self.pod_name),
            ("io.kubernetes.pod.uid", &self.pod_uid),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }
}

impl Env {
    /// Read the environment.
    pub fn from_env() -> Result<Env, CniError> {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Ok(Env {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: Args::parse(&var("CNI_ARGS"))?,
        })
    }

    /// Check that the variables `names` are set.
    pub fn require(&self, names: &[&str]) -> Result<(), CniError> {
        for n in names {
            let v = match *n {
                "CNI_CONTAINERID" => &self.container_id,
                "CNI_NETNS" => &self.netns,
                "CNI_IFNAME" => &self.ifname,
                _ => continue,
            };
            if v.is_empty() {
                return Err(CniError::new(error::INVALID_ENV, format!("{n} is required for {}", self.command)));
            }
        }
        let id_ok = self.container_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !id_ok {
            return Err(CniError::new(
                error::INVALID_ENV,
                format!("CNI_CONTAINERID {:?} must contain only [A-Za-z0-9_.-]", self.container_id),
            ));
        }
        Ok(())
    }

    /// The endpoint name of this container's interface: the container id
    /// (its first 12 characters when it is a 64-digit hex id, as docker
    /// and podman show it), and the interface when it is not eth0.
    pub fn endpoint_name(&self) -> String {
        let id = &self.container_id;
        let hex = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
        let mut name = if hex || id.len() > 40 { id[..12].to_owned() } else { id.clone() };
        if self.ifname != "eth0" {
            name.push('-');
            name.push_str(&self.ifname);
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_follow_libcni() {
        let a = Args::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;FOO=bar").unwrap();
        assert_eq!(a.labels().get("io.kubernetes.pod.namespace").map(String::as_str), Some("ns"));
        assert_eq!(a.labels().len(), 2);
        assert_eq!(Args::parse("FOO=bar").unwrap_err().code, error::INVALID_ENV);
        assert_eq!(Args::parse("novalue").unwrap_err().code, error::INVALID_ENV);
        assert_eq!(Args::parse("").unwrap(), Args::default());
    }

    #[test]
    fn keys_round_trip_and_name_only_this_configuration() {
        let c = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"pods","type":"weft"}"#).unwrap();
        c.check().unwrap();
        let k = c.request_key("abc", "eth0");
        assert_eq!(k, "cni/pods/abc/eth0");
        assert_eq!(c.attachment_of(&k), Some(Attachment { container_id: "abc".into(), ifname: "eth0".into() }));
        assert_eq!(c.attachment_of("cni/podsx/abc/eth0"), None);
        assert_eq!(c.attachment_of("mine"), None);
        assert_eq!(c.network(), "pods");
    }

    #[test]
    fn port_names_capability_reads_container_ports() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"weft","runtimeConfig":{"portNames":[
                {"name":"http","containerPort":8080},{"name":"dns","containerPort":53,"protocol":"UDP"}]}}"#,
        )
        .unwrap();
        let got: Vec<String> = c.runtime.port_names.iter().map(PortName::to_request).collect();
        assert_eq!(got, ["http=8080/tcp", "dns=53/udp"]);
    }

    #[test]
    fn bad_configurations_are_named() {
        for (conf, code) in [
            (r#"{"cniVersion":"0.2.0","name":"n","type":"weft"}"#, error::INCOMPATIBLE_VERSION),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#, error::INVALID_CONFIG),
            (r#"{"cniVersion":"1.0.0","type":"weft"}"#, error::INVALID_CONFIG),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"weft","addr":"https://x:1"}"#, error::INVALID_CONFIG),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"weft","ipam":{"type":"host-local"}}"#,
                error::UNSUPPORTED_FIELD,
            ),
        ] {
            assert_eq!(NetConf::parse(conf.as_bytes()).unwrap().check().unwrap_err().code, code, "{conf}");
        }
        assert_eq!(NetConf::parse(b"{").unwrap_err().code, error::DECODE_FAILURE);
        assert!(at_least("1.1.0", "0.4.0") && !at_least("0.3.1", "0.4.0"));
    }

    #[test]
    fn endpoint_names_are_short_and_per_interface() {
        let hex = "0123456789abcdef".repeat(4);
        let env = |id: &str, ifname: &str| Env { container_id: id.into(), ifname: ifname.into(), ..Env::default() };
        assert_eq!(env(&hex, "eth0").endpoint_name(), "0123456789ab");
        assert_eq!(env(&hex, "net1").endpoint_name(), "0123456789ab-net1");
        assert_eq!(env("pod-1", "eth0").endpoint_name(), "pod-1");
    }
}
