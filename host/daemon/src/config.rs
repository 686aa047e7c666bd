//! weftd's command-line flags, and how they meet the configuration file
//! (`config_file.rs`): a flag given on the command line or in the
//! environment wins, then the file's key, then the flag's default.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use weft_model::access::Access;

/// weftd — the weft network controller.
#[derive(Debug, Parser)]
#[command(name = "weftd", version, about)]
pub struct Config {
    /// Configuration file (docs/configuration.md). Flags given on the
    /// command line or in the environment win over its keys. Default:
    /// /etc/weft/weftd.toml if it exists.
    #[arg(long, env = "WEFT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Unix socket to serve the gRPC API on.
    #[arg(long, env = "WEFT_SOCKET", default_value = "/run/weft/weft.sock")]
    pub socket: PathBuf,
    /// Group (gid) the socket file belongs to, so the callers configured by
    /// gid can connect (mode 0660). Default: root's.
    #[arg(long)]
    pub socket_group: Option<u32>,
    /// Also serve the API on this TCP address with mutual TLS (needs
    /// --tls-cert, --tls-key, --client-ca and --trust-domain).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// weftd's certificate chain for the TLS listener (PEM).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// The CA that client certificates must chain to (PEM).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// The SPIFFE trust domain of client certificates: each carries exactly
    /// one URI SAN spiffe://<trust-domain>/<role>/<name>.
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Serve Prometheus metrics on this TCP address (`GET /metrics`): an
    /// operator's view of the whole host, bind it where only operators reach.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Log lines as `text` or `json` (one JSON object per line).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Directory of the state database (weft.redb).
    #[arg(long, default_value = "/var/lib/weft")]
    pub state_dir: PathBuf,
    /// Directory of the built-in Wasm components (`*.wasm`, named by folder
    /// name). Default: `../modules` beside the weftd binary if present
    /// (`target/modules` in a checkout), else /usr/local/lib/weft/modules.
    #[arg(long, env = "WEFT_MODULES_DIR")]
    pub modules_dir: Option<PathBuf>,
    /// Upstream resolver for names weft does not own (repeatable; IP,
    /// IP:PORT or [IPv6]:PORT). Default: the nameservers of /etc/resolv.conf.
    #[arg(long = "dns-upstream", value_parser = parse_upstream)]
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// Milliseconds to wait for one upstream before trying the next.
    #[arg(long, default_value_t = 1500)]
    pub dns_timeout_ms: u64,
    /// Seconds between reconcile passes (0 disables the periodic pass).
    #[arg(long, default_value_t = 30)]
    pub reconcile_interval_secs: u64,
    /// Largest module upload accepted, in bytes.
    #[arg(long, default_value_t = weft_model::module::DEFAULT_MAX_MODULE_BYTES)]
    pub module_max_bytes: usize,
    /// Wall-clock seconds one upload's compile worker may run.
    #[arg(long, default_value_t = 120)]
    pub compile_timeout_secs: u64,
    /// Address space one upload's compile worker may use, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub compile_memory_mib: u64,
    /// Calls into one tenant's uploaded components that may run at once;
    /// more wait (up to 1 s) for a slot. Default: half the cores, at least 1.
    #[arg(long, default_value_t = weft_wasm::default_tenant_concurrency())]
    pub tenant_wasm_concurrency: usize,
    /// Join a cluster: its etcd endpoints (`http://IP:PORT`, comma-separated
    /// or repeated). Without it weftd runs alone on its redb store.
    #[arg(long, env = "WEFT_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// This node's name in the cluster (default: the host name).
    #[arg(long, env = "WEFT_NODE")]
    pub node: Option<String>,
    /// The address other nodes reach this one at: the local end of its
    /// VXLAN tunnels (needed with --etcd).
    #[arg(long)]
    pub advertise_ip: Option<std::net::IpAddr>,
    /// Seconds a node stays alive in etcd without renewing its lease.
    #[arg(long, default_value_t = 15)]
    pub node_ttl_secs: u64,
    /// Milliseconds one etcd call may take before an overlay change fails
    /// as unavailable.
    #[arg(long, default_value_t = 2000)]
    pub etcd_timeout_ms: u64,
    /// A network made at start if it does not exist (`[default_network]`
    /// in the configuration file).
    #[arg(skip)]
    pub default_network: Option<weft_model::network::CreateNetwork>,
}

fn parse_upstream(s: &str) -> Result<std::net::SocketAddr, String> {
    weft_dns::parse_upstream(s).ok_or_else(|| format!("{s:?} is not IP, IP:PORT or [IPv6]:PORT"))
}

/// The default configuration file, read if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/weft/weftd.toml";

impl Config {
    /// Flags, then the configuration file under them, and the access rules
    /// it configures.
    pub fn load() -> anyhow::Result<(Config, Access)> {
        use clap::parser::ValueSource;
        use clap::{CommandFactory, FromArgMatches};
        let matches = Config::command().get_matches();
        let mut cfg = Config::from_arg_matches(&matches)?;
        let access = match cfg.config_path() {
            None => Access::default(),
            Some(path) => {
                let file = crate::config_file::read(&path)?;
                let given = |id: &str| {
                    matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
                };
                file.apply(&mut cfg, given)
            }
        };
        cfg.check()?;
        let access = cfg.with_trust_domain(access);
        Ok((cfg, access))
    }

    /// `rules` with the trust domain weftd runs with: the one its TLS
    /// listener was started with (flag, else file), kept across reloads.
    pub fn with_trust_domain(&self, rules: Access) -> Access {
        Access { trust_domain: self.trust_domain.clone().unwrap_or_default(), ..rules }
    }

    /// The flags hold together: a TLS listener has its files and a trust
    /// domain.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.etcd.is_empty() {
            anyhow::ensure!(
                self.advertise_ip.is_some(),
                "--etcd needs --advertise-ip (or advertise_ip in the configuration file): the address other nodes tunnel to"
            );
            for e in &self.etcd {
                anyhow::ensure!(
                    e.starts_with("http://") || e.starts_with("https://"),
                    "--etcd {e:?}: an endpoint is http://HOST:PORT"
                );
            }
            let node = self.node_name();
            weft_model::ids::check_node_name(&node).map_err(|e| anyhow::anyhow!("--node {node:?}: {e}"))?;
            anyhow::ensure!(self.node_ttl_secs >= 2, "--node-ttl-secs {}: at least 2", self.node_ttl_secs);
        }
        if self.listen.is_some() {
            for (flag, v) in
                [("--tls-cert", &self.tls_cert), ("--tls-key", &self.tls_key), ("--client-ca", &self.client_ca)]
            {
                anyhow::ensure!(v.is_some(), "--listen needs {flag} (or its key in the configuration file)");
            }
            anyhow::ensure!(
                self.trust_domain.as_deref().is_some_and(|t| !t.is_empty()),
                "--listen needs --trust-domain (or trust_domain in the configuration file)"
            );
        }
        Ok(())
    }

    /// Where to serve.
    pub fn listeners(&self) -> weft_grpc::server::Listeners {
        let tls = match (self.listen, &self.tls_cert, &self.tls_key, &self.client_ca) {
            (Some(listen), Some(cert), Some(key), Some(ca)) => Some(weft_grpc::tls::TlsSettings {
                listen,
                cert: cert.clone(),
                key: key.clone(),
                client_ca: ca.clone(),
            }),
            _ => None,
        };
        weft_grpc::server::Listeners {
            socket: self.socket.clone(),
            socket_group: self.socket_group,
            tls,
            observer: None,
        }
    }

    /// The configuration file to read: the one named, or the default if it
    /// exists.
    pub fn config_path(&self) -> Option<PathBuf> {
        match &self.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        }
    }

    /// The DNS service's configuration.
    pub fn dns(&self) -> weft_dns::DnsConfig {
        let upstreams = if self.dns_upstream.is_empty() {
            weft_dns::parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
        } else {
            self.dns_upstream.clone()
        };
        weft_dns::DnsConfig { upstreams, timeout: Duration::from_millis(self.dns_timeout_ms) }
    }

    /// The built-in module directory to use.
    pub fn modules_dir(&self) -> PathBuf {
        if let Some(d) = &self.modules_dir {
            return d.clone();
        }
        if let Some(beside) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|p| p.join("../modules")))
            .filter(|p| p.is_dir())
        {
            return beside;
        }
        PathBuf::from("/usr/local/lib/weft/modules")
    }

    /// This node's name: `--node`, else the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned()
        })
    }

    /// The cluster to join, if any.
    pub fn cluster(&self) -> Option<crate::cluster::Settings> {
        let advertise_ip = self.advertise_ip?;
        (!self.etcd.is_empty()).then(|| crate::cluster::Settings {
            endpoints: self.etcd.clone(),
            node: self.node_name(),
            advertise_ip,
            ttl: Duration::from_secs(self.node_ttl_secs),
            timeout: Duration::from_millis(self.etcd_timeout_ms),
        })
    }

    /// The periodic reconcile interval, if enabled.
    pub fn reconcile_interval(&self) -> Option<Duration> {
        (self.reconcile_interval_secs > 0).then(|| Duration::from_secs(self.reconcile_interval_secs))
    }
}
