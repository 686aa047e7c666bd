//! weft: the command-line client for weftd, shaped like `docker network`.
//! Tables by default, `-o json` on every read; errors print the daemon's
//! message (which names the field and the rule) and exit non-zero.

mod module;
mod module_test;
mod output;
mod policy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use weft_grpc::client::{
    ClientTls, EndpointServiceClient, EventServiceClient, ModuleServiceClient, NetworkServiceClient, NodeServiceClient,
    PolicyServiceClient, SystemServiceClient, TenantServiceClient, connect_tls, connect_unix,
};
use weft_grpc::pb;

/// One example per command, shown by `weft --help`.
const EXAMPLES: &str = "\
Examples:
  weft network create web --subnet 10.89.0.0/24          # network: create, ls, inspect, update, rm
  weft endpoint attach web --netns /run/netns/c1 --name c1 -p 8080:80
                                                         # endpoint: attach, detach, ls, inspect
  weft policy apply -f policy.yaml --network web         # policy: apply, ls, delete, check
  weft module upload ipam.wasm --kind ipam --name my-ipam # module: upload, ls, inspect, rm, test
  weft stats                                             # per-phase timings, memory, CPU (operators)
  weft tenant usage                                      # what the tenant holds against its quotas
  source <(weft completion bash)                         # completion: bash, zsh, fish
  weft node ls                                           # node: ls, rm (cluster mode, operators)
  weft events --kind endpoint                            # follow committed changes
Every command takes -o json on reads and --dry-run on writes; `weft COMMAND --help` for more.";

/// weft — control container networks through weftd.
#[derive(Parser)]
#[command(name = "weft", version, about, after_help = EXAMPLES)]
struct Cli {
    /// weftd's Unix socket.
    #[arg(long, global = true, env = "WEFT_SOCKET", default_value = "/run/weft/weft.sock")]
    socket: PathBuf,
    /// weftd's TLS listener, `https://HOST:PORT`, instead of the socket
    /// (with --tls-cert, --tls-key and --ca).
    #[arg(long, global = true, env = "WEFT_ADDR")]
    addr: Option<String>,
    /// Client certificate for --addr (PEM; one URI SAN
    /// spiffe://<trust-domain>/<role>/<name>).
    #[arg(long, global = true, env = "WEFT_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, global = true, env = "WEFT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The CA weftd's certificate chains to (PEM).
    #[arg(long, global = true, env = "WEFT_CA")]
    ca: Option<PathBuf>,
    /// Tenant to act as (empty: default).
    #[arg(long, global = true, env = "WEFT_TENANT", default_value = "")]
    tenant: String,
    /// Output format of reads.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Mutating commands: ask weftd what it would do (kernel operations,
    /// store writes, events) and change nothing.
    #[arg(long, global = true)]
    dry_run: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Output formats.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage endpoints (container attachments).
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Manage policy documents and explain verdicts.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Manage the tenant's Wasm components (IPAM, policy, naming).
    #[command(subcommand)]
    Module(module::ModuleCmd),
    /// weftd's counters: time per phase of attach and detach, memory, CPU.
    Stats,
    /// A tenant's view of itself.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Print a shell completion script: `source <(weft completion bash)`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The nodes of a cluster (weftd started with --etcd): operators only.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Follow weftd's events (like `docker events`): every committed change
    /// of the tenant's objects, and repairs.
    Events {
        /// Replay the retained events after this revision first (a list's
        /// or an earlier event's revision); default: from now on.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Only this network's events.
        #[arg(long, default_value = "")]
        network: String,
        /// Only these kinds: network, endpoint, policy, module, repair, or
        /// exact kinds such as endpoint.attached (repeatable).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Exit after this many events (0: follow until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// List the nodes: alive (their etcd lease is renewed) or down.
    #[command(alias = "list")]
    Ls,
    /// Forget nodes that are gone for good (refused while alive): their
    /// endpoints' records and address leases are released.
    #[command(alias = "remove")]
    Rm {
        /// Node names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    /// What the tenant holds against its quotas (yours; an operator names
    /// any with --tenant).
    Usage,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum NetworkCmd {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls,
    /// Show one network with its endpoints.
    Inspect {
        /// Network name.
        name: String,
    },
    /// Remove networks (refused while endpoints are attached, unless --force).
    #[command(alias = "remove")]
    Rm {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Detach the network's endpoints too, in the same change.
        #[arg(short, long)]
        force: bool,
    },
    /// Change a live network: bind another policy component (its documents
    /// are recompiled and applied in one transaction; on failure the old
    /// rules stay).
    Update {
        /// Network name.
        name: String,
        /// The policy component to bind.
        #[arg(long)]
        policy: String,
    },
}

#[derive(Args)]
struct CreateArgs {
    /// Network name.
    name: String,
    /// Subnet in CIDR form; give one IPv4 and/or one IPv6.
    #[arg(long = "subnet", required = true)]
    subnets: Vec<String>,
    /// Gateway; applies to the subnet of the same family.
    #[arg(long = "gateway")]
    gateways: Vec<String>,
    /// Range to allocate from; applies to the subnet of the same family.
    #[arg(long = "ip-range")]
    ip_ranges: Vec<String>,
    /// Driver.
    #[arg(long, default_value = "bridge")]
    driver: String,
    /// No egress: no masquerade, no default route.
    #[arg(long)]
    internal: bool,
    /// Driver option KEY=VALUE (mtu, bridge_name).
    #[arg(long = "opt", value_parser = parse_kv)]
    opts: Vec<(String, String)>,
    /// Label KEY=VALUE.
    #[arg(long = "label", value_parser = parse_kv)]
    labels: Vec<(String, String)>,
    /// IPAM component.
    #[arg(long, default_value = "")]
    ipam: String,
    /// Policy component [default: policy-isolation].
    #[arg(long, default_value = "")]
    policy: String,
    /// Naming component [default: naming-default].
    #[arg(long, default_value = "")]
    naming: String,
    /// Configuration for the network's components: KEY=VALUE, or @FILE (a
    /// YAML or JSON mapping; non-string values are passed as JSON).
    #[arg(long = "module-config", value_parser = parse_module_config)]
    module_config: Vec<Vec<(String, String)>>,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum EndpointCmd {
    /// Attach a network namespace to a network.
    Attach {
        /// Network name.
        network: String,
        /// Path of the namespace (/var/run/netns/NAME or /proc/PID/ns/net).
        #[arg(long, default_value = "")]
        netns: String,
        /// Endpoint name.
        #[arg(long)]
        name: String,
        /// Interface name inside the namespace [default: eth0, or the next
        /// free ethN when the namespace is already on another network].
        #[arg(long, default_value = "")]
        ifname: String,
        /// Static address (one per family).
        #[arg(long = "ip")]
        ips: Vec<String>,
        /// MAC address.
        #[arg(long, default_value = "")]
        mac: String,
        /// Label KEY=VALUE.
        #[arg(long = "label", value_parser = parse_kv)]
        labels: Vec<(String, String)>,
        /// Publish a port: [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|udp|sctp].
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
        /// Name a container port: NAME=PORT[/tcp|udp|sctp] (repeatable), what
        /// a NetworkPolicy's `port: NAME` means on this endpoint.
        #[arg(long = "port-name")]
        port_names: Vec<String>,
        /// none (only lo), host (no interface) or container:ENDPOINT (share
        /// that endpoint's namespace); default: an interface on the network.
        #[arg(long, default_value = "")]
        mode: String,
        /// Extra DNS name on this network (repeatable).
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Attach even if another tenant's endpoints are in the namespace
        /// (operators only; a namespace is otherwise one tenant's).
        #[arg(long)]
        allow_foreign_netns: bool,
        /// Retry identity: attaching again with the same key and request
        /// answers the endpoint made the first time.
        #[arg(long, default_value = "")]
        request_key: String,
    },
    /// Detach an endpoint.
    Detach {
        /// Network name.
        network: String,
        /// Endpoint name (or give --request-key instead).
        #[arg(default_value = "")]
        name: String,
        /// The request key the endpoint was attached with.
        #[arg(long, default_value = "")]
        request_key: String,
        /// Succeed when the endpoint (or network) does not exist.
        #[arg(long)]
        allow_missing: bool,
    },
    /// List endpoints.
    #[command(alias = "list")]
    Ls {
        /// Only this network's endpoints.
        #[arg(long, default_value = "")]
        network: String,
    },
    /// Show one endpoint.
    Inspect {
        /// Network name.
        network: String,
        /// Endpoint name.
        name: String,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

fn parse_module_config(s: &str) -> Result<Vec<(String, String)>, String> {
    let Some(path) = s.strip_prefix('@') else { return parse_kv(s).map(|kv| vec![kv]) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    let map: serde_yaml::Mapping =
        serde_yaml::from_str(&text).map_err(|e| format!("{path}: want a YAML or JSON mapping: {e}"))?;
    map.into_iter()
        .map(|(k, v)| {
            let k = k.as_str().ok_or_else(|| format!("{path}: keys must be strings"))?.to_owned();
            let v = match v {
                serde_yaml::Value::String(s) => s,
                other => serde_json::to_string(&other).map_err(|e| format!("{path}: {k}: {e}"))?,
            };
            Ok((k, v))
        })
        .collect()
}

fn family_of(s: &str) -> Option<bool> {
    let addr = s.split('/').next()?;
    addr.parse::<std::net::IpAddr>().ok().map(|a| a.is_ipv4())
}

fn subnets(a: &CreateArgs) -> Vec<pb::Subnet> {
    a.subnets
        .iter()
        .map(|s| {
            let fam = family_of(s);
            let pick = |v: &Vec<String>| v.iter().find(|x| family_of(x) == fam).cloned().unwrap_or_default();
            pb::Subnet { subnet: s.clone(), gateway: pick(&a.gateways), ip_range: pick(&a.ip_ranges) }
        })
        .collect()
}

/// The largest reply the CLI takes (tonic's default is 4 MB): a listing of
/// a tenant's objects at its quotas, labels and all, fits.
const MAX_REPLY: usize = 64 << 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Die of SIGPIPE like other Unix tools when the reader goes away
/// (`weft stats | head -5`), instead of panicking on the failed write: Rust
/// ignores SIGPIPE by default.
fn quiet_on_closed_pipe() {
    // SAFETY: called first in main, before any other thread exists;
    // SIG_DFL is a valid disposition for SIGPIPE.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Cmd::Completion { shell } = cli.cmd {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "weft", &mut std::io::stdout());
        return Ok(());
    }
    if let Cmd::Module(module::ModuleCmd::Test(a)) = cli.cmd {
        return module_test::run(a);
    }
    let channel = match &cli.addr {
        None => connect_unix(&cli.socket)
            .await
            .map_err(|e| format!("cannot reach weftd at {}: {e}", cli.socket.display()))?,
        Some(addr) => {
            let (Some(cert), Some(key), Some(ca)) = (&cli.tls_cert, &cli.tls_key, &cli.ca) else {
                return Err("--addr needs --tls-cert, --tls-key and --ca".into());
            };
            let tls = ClientTls { cert: cert.clone(), key: key.clone(), ca: ca.clone() };
            connect_tls(addr, &tls).await?
        }
    };
    let status = |s: tonic::Status| format!("{} ({:?})", s.message(), s.code());
    let tenant = cli.tenant.clone();
    let json = cli.output == Format::Json;
    let dry_run = cli.dry_run;
    // A dry run prints its plan instead of the usual answer.
    let plan = |p: &Option<pb::DryRun>| match p {
        Some(p) if json => {
            output::print_json(&output::plan_json(p));
            true
        }
        Some(p) => {
            output::plan_text(p);
            true
        }
        None => false,
    };
    match cli.cmd {
        Cmd::Network(cmd) => {
            let mut c = NetworkServiceClient::new(channel).max_decoding_message_size(MAX_REPLY);
            match cmd {
                NetworkCmd::Create(a) => {
                    let req = pb::CreateNetworkRequest {
                        tenant,
                        name: a.name.clone(),
                        driver: a.driver.clone(),
                        subnets: subnets(&a),
                        internal: a.internal,
                        options: a.opts.iter().cloned().collect::<HashMap<_, _>>(),
                        labels: a.labels.iter().cloned().collect::<HashMap<_, _>>(),
                        ipam: a.ipam.clone(),
                        policy: a.policy.clone(),
                        naming: a.naming.clone(),
                        module_config: a.module_config.iter().flatten().cloned().collect::<HashMap<_, _>>(),
                        dry_run,
                    };
                    let n = c.create_network(req).await.map_err(status)?.into_inner();
                    if plan(&n.dry_run) {
                    } else if json {
                        output::print_json(&output::network_json(&n))
                    } else {
                        println!("{}", n.id)
                    }
                }
                NetworkCmd::Ls => {
                    let l = c.list_networks(pb::ListNetworksRequest { tenant }).await.map_err(status)?.into_inner();
                    if json {
                        output::print_json(&serde_json::Value::Array(
                            l.networks.iter().map(output::network_json).collect(),
                        ))
                    } else {
                        output::network_table(&l.networks)
                    }
                }
                NetworkCmd::Inspect { name } => {
                    let n = c.get_network(pb::GetNetworkRequest { tenant, name }).await.map_err(status)?.into_inner();
                    if json { output::print_json(&output::network_json(&n)) } else { output::network_detail(&n) }
                }
                NetworkCmd::Rm { names, force } => {
                    for name in names {
                        let r = c
                            .delete_network(pb::DeleteNetworkRequest {
                                tenant: tenant.clone(),
                                name: name.clone(),
                                dry_run,
                                force,
                            })
                            .await
                            .map_err(status)?
                            .into_inner();
                        if !plan(&r.dry_run) {
                            println!("{name}");
                        }
                    }
                }
                NetworkCmd::Update { name, policy } => {
                    let req = pb::UpdateNetworkRequest { tenant, name, policy, dry_run };
                    let n = c.update_network(req).await.map_err(status)?.into_inner();
                    if plan(&n.dry_run) {
                    } else if json {
                        output::print_json(&output::network_json(&n))
                    } else {
                        println!("{}", n.name)
                    }
                }
            }
        }
        Cmd::Policy(cmd) => {
            policy::run(
                PolicyServiceClient::new(channel).max_decoding_message_size(MAX_REPLY),
                tenant,
                json,
                dry_run,
                cmd,
            )
            .await?
        }
        Cmd::Module(cmd) => {
            module::run(
                ModuleServiceClient::new(channel).max_decoding_message_size(MAX_REPLY),
                tenant,
                json,
                dry_run,
                cmd,
            )
            .await?
        }
        Cmd::Events { since, network, kinds, count } => {
            let req = pb::WatchRequest { tenant, from_revision: since, network, kinds };
            let mut stream = EventServiceClient::new(channel).watch(req).await.map_err(status)?.into_inner();
            let mut seen = 0;
            while let Some(item) = stream.message().await.map_err(status)? {
                let Some(pb::watch_response::Item::Event(e)) = item.item else { continue };
                if json {
                    println!("{}", output::event_json(&e));
                } else {
                    println!("{}", output::event_line(&e));
                }
                seen += 1;
                if count > 0 && seen >= count {
                    break;
                }
            }
        }
        Cmd::Node(NodeCmd::Ls) => {
            let r =
                NodeServiceClient::new(channel).list_nodes(pb::ListNodesRequest {}).await.map_err(status)?.into_inner();
            if json { output::print_json(&output::nodes_json(&r.nodes)) } else { output::node_table(&r.nodes) }
        }
        Cmd::Node(NodeCmd::Rm { names }) => {
            let mut client = NodeServiceClient::new(channel);
            for name in names {
                let r = client
                    .remove_node(pb::RemoveNodeRequest { name: name.clone() })
                    .await
                    .map_err(status)?
                    .into_inner();
                println!("{name} (released {} endpoint record(s))", r.endpoints);
            }
        }
        Cmd::Tenant(TenantCmd::Usage) => {
            let u = TenantServiceClient::new(channel)
                .get_usage(pb::GetUsageRequest { tenant })
                .await
                .map_err(status)?
                .into_inner();
            if json { output::print_json(&output::usage_json(&u)) } else { output::usage_table(&u) }
        }
        // Answered before connecting.
        Cmd::Completion { .. } => {}
        Cmd::Stats => {
            let s =
                SystemServiceClient::new(channel).get_stats(pb::GetStatsRequest {}).await.map_err(status)?.into_inner();
            if json { output::print_json(&output::stats_json(&s)) } else { output::stats_table(&s) }
        }
        Cmd::Endpoint(cmd) => {
            let mut c = EndpointServiceClient::new(channel).max_decoding_message_size(MAX_REPLY);
            match cmd {
                EndpointCmd::Attach {
                    network,
                    netns,
                    name,
                    ifname,
                    ips,
                    mac,
                    labels,
                    publish,
                    port_names,
                    mode,
                    aliases,
                    allow_foreign_netns,
                    request_key,
                } => {
                    let req = pb::AttachEndpointRequest {
                        tenant,
                        network,
                        name,
                        netns,
                        ifname,
                        ips,
                        mac,
                        labels: labels.into_iter().collect(),
                        publish,
                        mode,
                        aliases,
                        dry_run,
                        allow_foreign_netns,
                        request_key,
                        port_names,
                    };
                    let e = c.attach_endpoint(req).await.map_err(status)?.into_inner();
                    if plan(&e.dry_run) {
                        if !json {
                            println!("endpoint (decided): mac {} addresses {}", e.mac, e.addresses.join(","));
                        }
                    } else if json {
                        output::print_json(&output::endpoint_json(&e))
                    } else {
                        output::endpoint_table(&[e])
                    }
                }
                EndpointCmd::Detach { network, name, request_key, allow_missing } => {
                    let shown = if name.is_empty() { request_key.clone() } else { name.clone() };
                    let req = pb::DetachEndpointRequest { tenant, network, name, dry_run, request_key, allow_missing };
                    let r = c.detach_endpoint(req).await.map_err(status)?.into_inner();
                    if !plan(&r.dry_run) {
                        println!("{shown}");
                    }
                }
                EndpointCmd::Ls { network } => {
                    let l = c
                        .list_endpoints(pb::ListEndpointsRequest { tenant, network })
                        .await
                        .map_err(status)?
                        .into_inner();
                    if json {
                        output::print_json(&serde_json::Value::Array(
                            l.endpoints.iter().map(output::endpoint_json).collect(),
                        ))
                    } else {
                        output::endpoint_table(&l.endpoints)
                    }
                }
                EndpointCmd::Inspect { network, name } => {
                    let e = c
                        .get_endpoint(pb::GetEndpointRequest { tenant, network, name })
                        .await
                        .map_err(status)?
                        .into_inner();
                    if json { output::print_json(&output::endpoint_json(&e)) } else { output::endpoint_detail(&e) }
                }
            }
        }
    }
    Ok(())
}
