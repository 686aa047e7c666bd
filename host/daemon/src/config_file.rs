//! weftd's configuration file (`/etc/weft/weftd.toml`; every key in
//! docs/configuration.md). It carries the flags' settings, under whatever
//! the command line says, and the access rules — who the callers are and
//! what they may do — that a SIGHUP reloads. A file that does not parse, has
//! an unknown key or rules that do not hold together is refused with its
//! line and the reason: weftd does not start, and a reload keeps the rules
//! in force.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use weft_model::Tenant;
use weft_model::access::{Access, TenantRules, UnixCaller};

use crate::config::Config;

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    socket: Option<PathBuf>,
    socket_group: Option<u32>,
    state_dir: Option<PathBuf>,
    modules_dir: Option<PathBuf>,
    dns_upstream: Option<Vec<String>>,
    dns_timeout_ms: Option<u64>,
    reconcile_interval_secs: Option<u64>,
    module_max_bytes: Option<usize>,
    compile_timeout_secs: Option<u64>,
    compile_memory_mib: Option<u64>,
    tenant_wasm_concurrency: Option<usize>,
    log_format: Option<String>,
    listen: Option<std::net::SocketAddr>,
    metrics_listen: Option<std::net::SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    trust_domain: Option<String>,
    /// Cluster mode: etcd endpoints.
    etcd: Option<Vec<String>>,
    node: Option<String>,
    advertise_ip: Option<std::net::IpAddr>,
    node_ttl_secs: Option<u64>,
    etcd_timeout_ms: Option<u64>,
    /// A bridge network weftd makes at start if it does not exist.
    default_network: Option<DefaultNetwork>,
    /// The tenants each certificate-identified orchestrator may act for.
    #[serde(default)]
    orchestrators: BTreeMap<String, Orchestrator>,
    /// Unix-socket callers by uid or gid.
    #[serde(default)]
    unix: Vec<toml::Spanned<UnixCaller>>,
    /// Rules for every tenant (under each tenant's own).
    #[serde(default)]
    tenant_defaults: TenantRules,
    /// Rules per tenant.
    #[serde(default)]
    tenants: BTreeMap<String, toml::Spanned<TenantRules>>,
    #[serde(skip)]
    upstreams: Vec<std::net::SocketAddr>,
    #[serde(skip)]
    access: Access,
}

/// `[default_network]`: Docker's `bridge` is `name = "bridge"`,
/// `subnets = ["172.17.0.0/16"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultNetwork {
    name: String,
    subnets: Vec<String>,
    #[serde(default)]
    driver: String,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

impl DefaultNetwork {
    fn request(&self) -> weft_model::network::CreateNetwork {
        weft_model::network::CreateNetwork {
            name: self.name.clone(),
            driver: self.driver.clone(),
            subnets: self
                .subnets
                .iter()
                .map(|s| weft_model::network::SubnetRequest { subnet: s.clone(), ..Default::default() })
                .collect(),
            internal: self.internal,
            options: self.options.clone(),
            ..Default::default()
        }
    }
}

/// `[orchestrators.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Orchestrator {
    #[serde(default)]
    tenants: Vec<String>,
}

/// Line `n` (1-based) of `text` holding byte `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Read and check the file at `path`.
pub fn read(path: &Path) -> anyhow::Result<File> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("configuration file {}: {e}", path.display()))?;
    let mut f = parse(&text).map_err(|e| anyhow::anyhow!("configuration file {}: {e}", path.display()))?;
    f.relative_to(path.parent().unwrap_or(Path::new(".")));
    Ok(f)
}

/// Parse and check `text`: `line N: reason` on error.
pub fn parse(text: &str) -> Result<File, String> {
    let mut f: File = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => format!("line {}: {}", line_of(text, span.start), e.message()),
        None => e.message().to_owned(),
    })?;
    let at = |span: std::ops::Range<usize>| format!("line {}", line_of(text, span.start));
    for (i, c) in f.unix.iter().enumerate() {
        c.get_ref().check().map_err(|e| format!("{}: [[unix]] entry: {e}", at(c.span())))?;
        if let Some(first) =
            f.unix[..i].iter().find(|o| (o.get_ref().uid, o.get_ref().gid) == (c.get_ref().uid, c.get_ref().gid))
        {
            return Err(format!(
                "{}: [[unix]] entry: the same uid/gid as the entry at {}",
                at(c.span()),
                at(first.span())
            ));
        }
    }
    if let Some(v) = &f.log_format
        && v != "text"
        && v != "json"
    {
        return Err(format!("log_format: {v:?} is not text or json"));
    }
    for s in f.dns_upstream.iter().flatten() {
        let a = weft_dns::parse_upstream(s)
            .ok_or_else(|| format!("dns_upstream: {s:?} is not IP, IP:PORT or [IPv6]:PORT"))?;
        f.upstreams.push(a);
    }
    if let Some(d) = &f.default_network {
        d.request().validate().map_err(|e| format!("[default_network]: {e}"))?;
    }
    check_rules("[tenant_defaults]", &f.tenant_defaults)?;
    for (name, r) in &f.tenants {
        let here = format!("{}: [tenants.{name}]", at(r.span()));
        Tenant::parse("tenant", name).map_err(|e| format!("{here}: {e}"))?;
        check_rules(&here, r.get_ref())?;
    }
    for (name, o) in &f.orchestrators {
        for t in &o.tenants {
            Tenant::parse("tenant", t).map_err(|e| format!("[orchestrators.{name}]: {e}"))?;
        }
    }
    f.access = Access {
        unix: f.unix.iter().map(|c| c.get_ref().clone()).collect(),
        tenant_defaults: f.tenant_defaults.clone(),
        tenants: f.tenants.iter().map(|(k, v)| (k.clone(), v.get_ref().clone())).collect(),
        // Set by the daemon from the merged settings (`Config::with_trust_domain`).
        trust_domain: String::new(),
        orchestrators: f.orchestrators.iter().map(|(k, o)| (k.clone(), o.tenants.clone())).collect(),
    };
    Ok(f)
}

fn check_rules(at: &str, r: &TenantRules) -> Result<(), String> {
    for p in r.macvlan_parents.iter().flatten() {
        weft_model::IfName::parse("macvlan_parents", p).map_err(|e| format!("{at}: {e}"))?;
    }
    Ok(())
}

impl File {
    /// Make the file's relative paths relative to `dir`, the file's own
    /// directory (as a reader of the file would take them).
    fn relative_to(&mut self, dir: &Path) {
        for p in [&mut self.socket, &mut self.state_dir, &mut self.modules_dir, &mut self.tls_cert, &mut self.tls_key]
            .into_iter()
            .chain([&mut self.client_ca])
            .flatten()
        {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }

    /// Set every key the command line did not (`given(flag id)`) into
    /// `cfg`; answer the access rules.
    pub fn apply(self, cfg: &mut Config, given: impl Fn(&str) -> bool) -> Access {
        fn set<T>(given: &dyn Fn(&str) -> bool, id: &str, dst: &mut T, v: Option<T>) {
            if let Some(v) = v
                && !given(id)
            {
                *dst = v;
            }
        }
        let g: &dyn Fn(&str) -> bool = &given;
        set(g, "socket", &mut cfg.socket, self.socket);
        set(g, "socket_group", &mut cfg.socket_group, self.socket_group.map(Some));
        set(g, "state_dir", &mut cfg.state_dir, self.state_dir);
        set(g, "modules_dir", &mut cfg.modules_dir, self.modules_dir.map(Some));
        set(g, "dns_upstream", &mut cfg.dns_upstream, self.dns_upstream.map(|_| self.upstreams));
        set(g, "dns_timeout_ms", &mut cfg.dns_timeout_ms, self.dns_timeout_ms);
        set(g, "reconcile_interval_secs", &mut cfg.reconcile_interval_secs, self.reconcile_interval_secs);
        set(g, "module_max_bytes", &mut cfg.module_max_bytes, self.module_max_bytes);
        set(g, "compile_timeout_secs", &mut cfg.compile_timeout_secs, self.compile_timeout_secs);
        set(g, "compile_memory_mib", &mut cfg.compile_memory_mib, self.compile_memory_mib);
        set(g, "tenant_wasm_concurrency", &mut cfg.tenant_wasm_concurrency, self.tenant_wasm_concurrency);
        set(g, "log_format", &mut cfg.log_format, self.log_format);
        set(g, "listen", &mut cfg.listen, self.listen.map(Some));
        set(g, "metrics_listen", &mut cfg.metrics_listen, self.metrics_listen.map(Some));
        set(g, "tls_cert", &mut cfg.tls_cert, self.tls_cert.map(Some));
        set(g, "tls_key", &mut cfg.tls_key, self.tls_key.map(Some));
        set(g, "client_ca", &mut cfg.client_ca, self.client_ca.map(Some));
        set(g, "trust_domain", &mut cfg.trust_domain, self.trust_domain.map(Some));
        set(g, "etcd", &mut cfg.etcd, self.etcd);
        set(g, "node", &mut cfg.node, self.node.map(Some));
        set(g, "advertise_ip", &mut cfg.advertise_ip, self.advertise_ip.map(Some));
        set(g, "node_ttl_secs", &mut cfg.node_ttl_secs, self.node_ttl_secs);
        set(g, "etcd_timeout_ms", &mut cfg.etcd_timeout_ms, self.etcd_timeout_ms);
        cfg.default_network = self.default_network.as_ref().map(DefaultNetwork::request);
        self.access
    }

    /// The access rules alone (a reload).
    pub fn access(self) -> Access {
        self.access
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use weft_model::access::Role;

    use super::*;

    #[test]
    fn keys_fill_in_under_the_flags() {
        let f = parse(
            "socket = \"/tmp/x.sock\"\nstate_dir = \"/tmp/state\"\ndns_upstream = [\"10.0.0.53\"]\n\n\
             [[unix]]\nuid = 1000\nrole = \"tenant\"\ntenant = \"acme\"\n",
        )
        .unwrap();
        let mut cfg = Config::parse_from(["weftd", "--state-dir", "/flag/state"]);
        let access = f.apply(&mut cfg, |id| id == "state_dir");
        assert_eq!(cfg.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(cfg.state_dir, PathBuf::from("/flag/state"), "the flag wins");
        assert_eq!(cfg.dns_upstream, vec!["10.0.0.53:53".parse().unwrap()]);
        assert_eq!(access.unix_caller(1000, 1000).unwrap().role, Role::Tenant);
    }

    #[test]
    fn a_bad_file_names_the_line_and_the_reason() {
        let e = parse("socket = \"/x\"\nsokcet = 1\n").unwrap_err();
        assert!(e.starts_with("line 2: unknown field `sokcet`"), "{e}");
        let e = parse("[[unix]]\nuid = 1\nrole = \"tenant\"\ntenant = \"a\"\n\n[[unix]]\nuid = 2\nrole = \"tenant\"\n")
            .unwrap_err();
        assert!(e.starts_with("line 6: [[unix]] entry: a tenant caller needs `tenant`"), "{e}");
        let e = parse("[[unix]]\nuid = 1\nrole = \"king\"\n").unwrap_err();
        assert!(e.starts_with("line 3: unknown variant `king`"), "{e}");
        let e =
            parse("[[unix]]\ngid = 7\nrole = \"orchestrator\"\n[[unix]]\ngid = 7\nrole = \"operator\"\n").unwrap_err();
        assert!(e.contains("line 4: [[unix]] entry: the same uid/gid as the entry at line 1"), "{e}");
        assert!(parse("dns_upstream = [\"nope\"]").unwrap_err().contains("dns_upstream: \"nope\""));
        assert!(parse("log_format = \"xml\"").unwrap_err().contains("not text or json"));
        assert!(parse("").is_ok(), "an empty file is the defaults");
        let e = parse("[default_network]\nname = \"bridge\"\nsubnets = [\"172.17.0.0/33\"]\n").unwrap_err();
        assert!(e.starts_with("[default_network]: ") && e.contains("172.17.0.0/33"), "{e}");
        let e = parse("[default_network]\nname = \"bridge\"\n").unwrap_err();
        assert!(e.contains("missing field `subnets`"), "{e}");
        let f = parse(include_str!("../../../scripts/install/weftd.toml")).unwrap();
        assert_eq!(f.default_network.map(|d| d.request().name), Some("bridge".to_owned()), "the installed file");
    }

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("../../../docs/configuration.md");
        let blocks: Vec<&str> = doc.split("```toml\n").skip(1).filter_map(|s| s.split("```").next()).collect();
        for b in &blocks {
            parse(b).unwrap_or_else(|e| panic!("{e}:\n{b}"));
        }
        let example = blocks.iter().find(|b| b.contains("[[unix]]")).expect("the access example");
        let access = parse(example).unwrap().access();
        assert_eq!(access.unix_caller(991, 991).unwrap().role, Role::Orchestrator);
        let acme = weft_model::Tenant::parse("t", "acme").unwrap();
        let q = access.quotas(&acme);
        assert_eq!((q.networks, q.endpoints), (8, 1024), "acme's own key, then the defaults'");
        let doc_default = doc.lines().find(|l| l.starts_with("| `module_max_bytes`")).unwrap();
        assert!(doc_default.contains(&weft_model::module::DEFAULT_MAX_MODULE_BYTES.to_string()), "{doc_default}");
    }

    #[test]
    fn relative_paths_are_the_files_own() {
        let mut f = parse("tls_cert = \"weftd.pem\"\nstate_dir = \"/var/lib/weft\"\n").unwrap();
        f.relative_to(Path::new("/etc/weft"));
        assert_eq!(f.tls_cert, Some(PathBuf::from("/etc/weft/weftd.pem")));
        assert_eq!(f.state_dir, Some(PathBuf::from("/var/lib/weft")));
    }
}
