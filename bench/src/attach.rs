//! Attach and detach: weft against netavark, the CNI reference chain and the
//! kernel floor, on the same machine in the same run.
//!
//! Every system gets its own fresh "host" namespace and builds the same
//! topology: a bridge with a /16, N container namespaces (shared by all
//! systems, created before any timing and cleaned by each system's own
//! teardown), each with a veth, an address, a default route and one
//! published TCP port (host port 20000+i -> 80). Each system is checked to
//! have really done the work (a ping from the first container to the last)
//! before its teardown is timed.
//!
//! - weft: sequential `AttachEndpoint`/`DetachEndpoint` over gRPC (one call
//!   timed at a time), the same through the `weft` CLI (a process per call,
//!   as a shell script would), and a bulk attach of N endpoints by 32
//!   concurrent clients (wall time).
//! - weft's CNI plugin, a process per ADD and DEL as a runtime runs it.
//! - netavark (Debian's 1.4, iptables driver): `netavark setup`/`teardown`
//!   per container with the JSON podman sends, static addresses given.
//! - CNI (Debian's containernetworking-plugins 1.1.1): `bridge` (IPAM
//!   `host-local`) then `portmap`, invoked as a runtime does (environment +
//!   config on stdin, the bridge result passed as `prevResult`); DEL in
//!   reverse order.
//! - the kernel floors (`floor.rs`): the same kernel work with nothing else,
//!   by the standard tools per endpoint, and batched by one process.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_grpc::client::{EndpointServiceClient, SystemServiceClient, connect_unix};
use weft_grpc::pb;
use weft_tests::{Host, Netns, bin_dir, on_ns};

use crate::firewall::{Counts, count_ruleset};
use crate::stats::Summary;

/// Where Debian installs netavark.
const NETAVARK: &str = "/usr/lib/podman/netavark";
/// Where Debian installs the CNI reference plugins.
const CNI_PATH: &str = "/usr/lib/cni";
/// Concurrent clients of the bulk attach.
const BULK_CLIENTS: usize = 32;

/// The systems compared, in table order.
pub const SYSTEMS: [&str; 9] = [
    "weft gRPC",
    "weft CLI",
    "weft bulk (32 clients)",
    "netavark 1.4",
    "CNI 1.1.1",
    "floor (processes)",
    "weft CNI plugin",
    "floor (batched)",
    "weft network rm --force",
];

/// One system at one N.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub system: &'static str,
    pub n: usize,
    /// How many of the N were set up: N, unless the time budget ran out.
    pub done: usize,
    /// Per-endpoint setup times (one per call; empty for bulk).
    pub setup: Vec<Duration>,
    /// Per-endpoint teardown times (one per call; empty for bulk).
    pub teardown: Vec<Duration>,
    /// Bulk only: each concurrent attach call's own latency (the series'
    /// per-endpoint figure stays wall time / N).
    pub calls: Vec<Duration>,
    /// Bulk only: the same for the concurrent detach calls.
    pub teardown_calls: Vec<Duration>,
    /// Wall time of all N teardowns (bulk and batched systems).
    pub teardown_total: Duration,
    /// Wall time of all N setups.
    pub setup_total: Duration,
    /// nft rules and set/map elements in the host namespace with N attached.
    pub counts: Option<Counts>,
}

impl Series {
    /// The per-endpoint figure compared across systems: p50 of the calls,
    /// or wall time / N for bulk.
    pub fn per_endpoint(&self) -> Duration {
        if self.setup.is_empty() { self.setup_total / self.n.max(1) as u32 } else { Summary::of(&self.setup).p50 }
    }

    /// The same for teardown.
    pub fn per_endpoint_teardown(&self) -> Duration {
        if self.teardown.is_empty() {
            self.teardown_total / self.done.max(1) as u32
        } else {
            Summary::of(&self.teardown).p50
        }
    }

    /// Whether the time budget stopped the setups short of N.
    pub fn partial(&self) -> bool {
        self.done < self.n
    }
}

/// weftd's resource use after N endpoints were attached, and where the
/// time of the sequential gRPC attaches and detaches went (weftd's own
/// per-phase counters, `weft stats`: the delta over that run).
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub n: usize,
    pub rss_kib: u64,
    pub cpu: Duration,
    pub phases: Vec<pb::PhaseStat>,
    /// The same counters over the sequential attaches alone.
    pub attach_phases: Vec<pb::PhaseStat>,
    /// The same over the 32-client attaches alone.
    pub bulk_phases: Vec<pb::PhaseStat>,
    /// One Prometheus scrape of weftd with the N endpoints (p50 of 20,
    /// the whole HTTP exchange over loopback).
    pub scrape: Duration,
    /// After the last sequential detach returned: until every retired link
    /// was deleted.
    pub retired_gone: Duration,
    /// The same after the 32-client detaches.
    pub bulk_retired_gone: Duration,
    /// The same after `network rm --force`.
    pub rm_retired_gone: Duration,
}

/// p50 of 20 scrapes of `host`'s metrics, each checked to list its endpoints.
fn scrape_time(host: &Host) -> Result<Duration> {
    let mut took = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let body = weft_tests::http_get_path(&host.ns.name, weft_tests::metrics::ADDR, "/metrics")
            .map_err(|e| anyhow::anyhow!("scraping metrics: {e}"))?;
        took.push(t.elapsed());
        if !body.contains("weft_endpoints{tenant=\"default\"}") {
            bail!("the scrape lists no endpoints: {body}");
        }
    }
    Ok(Summary::of(&took).p50)
}

/// weftd's counters now (`SystemService.GetStats`: phases, memory, CPU).
async fn stats(host: &Host) -> Result<pb::Stats> {
    let mut c = SystemServiceClient::new(host.channel().await);
    Ok(c.get_stats(pb::GetStatsRequest {}).await?.into_inner())
}

/// CPU time (user + system) in a stats answer.
fn cpu(s: &pb::Stats) -> Duration {
    Duration::from_millis(s.cpu_user_ms + s.cpu_system_ms)
}

/// `after - before`, phase by phase (max is the run's maximum only if it
/// grew; otherwise the earlier one, which is an upper bound).
fn delta(before: &[pb::PhaseStat], after: Vec<pb::PhaseStat>) -> Vec<pb::PhaseStat> {
    after
        .into_iter()
        .map(|mut a| {
            if let Some(b) = before.iter().find(|b| b.name == a.name) {
                a.count -= b.count.min(a.count);
                a.total_us -= b.total_us.min(a.total_us);
            }
            a
        })
        .collect()
}

/// An IPv4 address in `base`'s /16 for endpoint `i` (.0.2 upwards, skipping
/// .0 and .255 of each /24).
pub(crate) fn addr(base: [u8; 2], i: usize) -> Ipv4Addr {
    Ipv4Addr::new(base[0], base[1], (i / 250) as u8, (i % 250) as u8 + 2)
}

pub(crate) fn port(i: usize) -> u16 {
    20000 + i as u16
}

/// Run the comparison for every N in `sizes`. netavark and CNI stop setting
/// up containers once `peer_budget` has passed (their per-call cost grows
/// with the rules already installed, so N = 1,000 takes them most of an
/// hour); their figures then cover the first containers only, a lower
/// bound of their cost at N.
pub fn run(sizes: &[usize], peer_budget: Duration) -> Result<(Vec<Series>, Vec<Resources>)> {
    for (what, p) in [("netavark", NETAVARK), ("containernetworking-plugins", CNI_PATH)] {
        if !Path::new(p).exists() {
            bail!("{p} missing: apt-get install {what}");
        }
    }
    let rt = crate::tokio_rt(2)?;
    let mut all = Vec::new();
    let mut res = Vec::new();
    for &n in sizes {
        eprintln!("attach: N = {n}: making {n} container namespaces");
        let containers: Vec<Netns> = (0..n).map(|i| Netns::new("b", &format!("c{i}"))).collect();
        let (weft, r) = rt.block_on(weft_series(n, &containers))?;
        weft.iter().for_each(progress);
        all.extend(weft);
        res.push(r);
        let peers: [(&str, &dyn Fn() -> Result<Series>); 4] = [
            ("netavark", &|| netavark(&containers, peer_budget)),
            ("CNI", &|| cni(&containers, peer_budget)),
            ("floor (processes)", &|| crate::floor::processes(&containers)),
            ("floor (batched)", &|| crate::floor::batched(&containers)),
        ];
        for (what, run) in peers {
            eprintln!("attach: N = {n}: {what}");
            let s = run()?;
            progress(&s);
            all.push(s);
        }
    }
    Ok((all, res))
}

/// One finished series on stderr, so a run that fails later still shows
/// what it measured.
fn progress(s: &Series) {
    eprintln!(
        "attach: N = {}: {}: attach {:.3} ms, detach {:.3} ms per endpoint{}",
        s.n,
        s.system,
        s.per_endpoint().as_secs_f64() * 1e3,
        s.per_endpoint_teardown().as_secs_f64() * 1e3,
        if s.partial() { format!(" ({} of {} in the time budget)", s.done, s.n) } else { String::new() }
    );
}

/// Ping `to` from `from` (proof the system did the work), for up to ~10 s:
/// the kernel brings new links' carrier up in batches (linkwatch), and after
/// a thousand links created within a second the last ones take a while.
pub(crate) fn check_ping(system: &str, from: &Netns, to: Ipv4Addr) -> Result<()> {
    if !(0..4).any(|_| from.ping(&to.to_string())) {
        bail!("{system}: {} cannot ping {to} after setup", from.name);
    }
    Ok(())
}

/// The address the first container pings: the last endpoint's, or the
/// gateway's when there is only one.
pub(crate) fn ping_target(base: [u8; 2], n: usize) -> Ipv4Addr {
    if n > 1 { addr(base, n - 1) } else { Ipv4Addr::new(base[0], base[1], 0, 1) }
}

fn attach_req(i: usize, ns: &Netns) -> pb::AttachEndpointRequest {
    pb::AttachEndpointRequest {
        network: "bench".into(),
        name: format!("e{i}"),
        netns: ns.path(),
        ips: vec![addr([10, 91], i).to_string()],
        publish: vec![format!("{}:80/tcp", port(i))],
        ..Default::default()
    }
}

fn detach_req(i: usize) -> pb::DetachEndpointRequest {
    pb::DetachEndpointRequest { network: "bench".into(), name: format!("e{i}"), ..Default::default() }
}

/// weft over gRPC, through the CLI, and in bulk, against one weftd.
async fn weft_series(n: usize, containers: &[Netns]) -> Result<(Vec<Series>, Resources)> {
    let host = Host::with_args("bw", &["--metrics-listen", weft_tests::metrics::ADDR]);
    host.create_network("bench", &["10.91.0.0/16"]).await.context("create network")?;
    let mut out = Vec::new();
    let mut c = host.endpoints().await;

    // Sequential gRPC.
    let mut s = Series { system: SYSTEMS[0], n, done: n, ..Default::default() };
    let before = stats(&host).await?;
    let t0 = Instant::now();
    for (i, ns) in containers.iter().enumerate() {
        let t = Instant::now();
        c.attach_endpoint(attach_req(i, ns)).await.with_context(|| format!("weft attach e{i}"))?;
        s.setup.push(t.elapsed());
    }
    s.setup_total = t0.elapsed();
    let attached = stats(&host).await?;
    let mut res = Resources {
        n,
        rss_kib: attached.rss_bytes / 1024,
        cpu: cpu(&attached).saturating_sub(cpu(&before)),
        attach_phases: delta(&before.phases, attached.phases.clone()),
        scrape: scrape_time(&host)?,
        ..Default::default()
    };
    check_ping("weft", &containers[0], ping_target([10, 91], n))?;
    s.counts = Some(count_ruleset(&host.ns.name)?);
    for i in 0..n {
        let t = Instant::now();
        c.detach_endpoint(detach_req(i)).await.with_context(|| format!("weft detach e{i}"))?;
        s.teardown.push(t.elapsed());
    }
    res.retired_gone = retired_gone(&host)?;
    res.phases = delta(&before.phases, stats(&host).await?.phases);
    out.push(s);

    // The CLI: one process per call.
    let mut s = Series { system: SYSTEMS[1], n, done: n, ..Default::default() };
    let weft = bin_dir().join("weft");
    let cli = |args: &[&str]| -> Result<Duration> {
        let t = Instant::now();
        let o = Command::new(&weft).env("WEFT_SOCKET", host.socket()).args(args).output()?;
        let took = t.elapsed();
        if !o.status.success() {
            bail!("weft {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(took)
    };
    let t0 = Instant::now();
    for (i, ns) in containers.iter().enumerate() {
        let (name, ip, publish) = (format!("e{i}"), addr([10, 91], i).to_string(), format!("{}:80/tcp", port(i)));
        let path = ns.path();
        s.setup.push(cli(&[
            "endpoint", "attach", "bench", "--netns", &path, "--name", &name, "--ip", &ip, "-p", &publish,
        ])?);
    }
    s.setup_total = t0.elapsed();
    check_ping("weft CLI", &containers[0], ping_target([10, 91], n))?;
    for i in 0..n {
        s.teardown.push(cli(&["endpoint", "detach", "bench", &format!("e{i}")])?);
    }
    out.push(s);
    out.push(plugin_series(&host, n, containers)?);

    // Bulk: 32 clients, each on its own connection, share the N attaches.
    let mut s = Series { system: SYSTEMS[2], n, done: n, ..Default::default() };
    let reqs: Arc<Vec<pb::AttachEndpointRequest>> =
        Arc::new(containers.iter().enumerate().map(|(i, ns)| attach_req(i, ns)).collect());
    let before = stats(&host).await?;
    let t0 = Instant::now();
    s.calls = clients(&host, n, move |mut c, i| {
        let r = reqs[i].clone();
        async move { c.attach_endpoint(r).await.map(|_| ()) }
    })
    .await?;
    s.setup_total = t0.elapsed();
    res.bulk_phases = delta(&before.phases, stats(&host).await?.phases);
    check_ping("weft bulk", &containers[0], ping_target([10, 91], n))?;
    // And the N detaches by 32 clients.
    let t0 = Instant::now();
    s.teardown_calls =
        clients(&host, n, |mut c, i| async move { c.detach_endpoint(detach_req(i)).await.map(|_| ()) }).await?;
    s.teardown_total = t0.elapsed();
    res.bulk_retired_gone = retired_gone(&host)?;
    out.push(s);

    // The N again, torn down by removing the network with --force.
    let mut s = Series { system: SYSTEMS[8], n, done: n, ..Default::default() };
    let reqs: Arc<Vec<pb::AttachEndpointRequest>> =
        Arc::new(containers.iter().enumerate().map(|(i, ns)| attach_req(i, ns)).collect());
    let t0 = Instant::now();
    clients(&host, n, move |mut c, i| {
        let r = reqs[i].clone();
        async move { c.attach_endpoint(r).await.map(|_| ()) }
    })
    .await?;
    s.setup_total = t0.elapsed();
    let t0 = Instant::now();
    let rm = pb::DeleteNetworkRequest { name: "bench".into(), force: true, ..Default::default() };
    host.networks().await.delete_network(rm).await.context("weft network rm --force")?;
    s.teardown_total = t0.elapsed();
    res.rm_retired_gone = retired_gone(&host)?;
    out.push(s);
    Ok((out, res))
}

/// Calls 0..n shared by 32 clients, each on its own connection: `call(client, i)`.
/// Returns each call's latency.
async fn clients<F, Fut>(host: &Host, n: usize, call: F) -> Result<Vec<Duration>>
where
    F: Fn(EndpointServiceClient<tonic::transport::Channel>, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let (next, call) = (Arc::new(AtomicUsize::new(0)), Arc::new(call));
    let mut tasks = Vec::new();
    for _ in 0..BULK_CLIENTS.min(n) {
        let (next, call, sock) = (next.clone(), call.clone(), host.socket());
        tasks.push(tokio::spawn(async move {
            let c = EndpointServiceClient::new(connect_unix(sock).await?);
            let mut took = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return Ok::<_, anyhow::Error>(took);
                }
                let t = Instant::now();
                call(c.clone(), i).await.with_context(|| format!("weft bulk call e{i}"))?;
                took.push(t.elapsed());
            }
        }));
    }
    let mut took = Vec::new();
    for t in tasks {
        took.extend(t.await??);
    }
    Ok(took)
}

/// How long after the last detach returned weftd's retired links (the
/// detached veths, deleted in the background) were all gone.
fn retired_gone(host: &Host) -> Result<Duration> {
    let t = Instant::now();
    while !host.retired_links().is_empty() {
        if t.elapsed() > Duration::from_secs(30) {
            bail!("retired links still there after 30 s: {:?}", host.retired_links());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(t.elapsed())
}

/// weft through its CNI plugin, invoked as a runtime does: a process per
/// ADD and DEL, the environment and the configuration (with the
/// `portMappings` and `ips` capabilities) on stdin.
fn plugin_series(host: &Host, n: usize, containers: &[Netns]) -> Result<Series> {
    let mut s = Series { system: SYSTEMS[6], n, done: n, ..Default::default() };
    let plugin = bin_dir().join("weft-cni");
    let call = |verb: &str, i: usize, path: &str| -> Result<Duration> {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "weft", "socket": host.socket(),
            "runtimeConfig": {
                "ips": [addr([10, 91], i).to_string()],
                "portMappings": [{"hostPort": port(i), "containerPort": 80, "protocol": "tcp"}],
            },
        });
        let mut cmd = Command::new(&plugin);
        // A distinct short id (the first 12 hex digits name the endpoint).
        cmd.env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", format!("{:012x}{}", i + 1, "0".repeat(52)))
            .env("CNI_NETNS", path)
            .env("CNI_IFNAME", "eth0");
        Ok(timed(&mut cmd, &conf.to_string()).with_context(|| format!("weft-cni {verb} {i}"))?.1)
    };
    let t0 = Instant::now();
    for (i, ns) in containers.iter().enumerate() {
        s.setup.push(call("ADD", i, &ns.path())?);
    }
    s.setup_total = t0.elapsed();
    check_ping("weft CNI plugin", &containers[0], ping_target([10, 91], n))?;
    for (i, ns) in containers.iter().enumerate() {
        s.teardown.push(call("DEL", i, &ns.path())?);
    }
    Ok(s)
}

/// Run `cmd` with `stdin`, failing with its stderr; returns stdout and the
/// wall time.
pub(crate) fn timed(cmd: &mut Command, stdin: &str) -> Result<(String, Duration)> {
    let t = Instant::now();
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    child.stdin.take().context("stdin")?.write_all(stdin.as_bytes())?;
    let o = child.wait_with_output()?;
    let took = t.elapsed();
    if !o.status.success() {
        bail!("{cmd:?}: {} {}", String::from_utf8_lossy(&o.stderr), String::from_utf8_lossy(&o.stdout));
    }
    Ok((String::from_utf8_lossy(&o.stdout).into_owned(), took))
}

/// Run `f` on a thread inside `host`'s namespace: the peers' processes are
/// spawned from there and so run in it.
pub(crate) fn in_host<T: Send + 'static>(host: &Netns, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    on_ns(&host.name, f).join().map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
}

fn temp_dir(what: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("weft-bench-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// The JSON podman hands netavark for container `i`.
fn netavark_json(i: usize) -> String {
    serde_json::json!({
        "container_id": format!("{:064x}", i + 1),
        "container_name": format!("c{i}"),
        "port_mappings": [{"host_ip": "", "container_port": 80, "host_port": port(i), "range": 1, "protocol": "tcp"}],
        "networks": {"bench": {"static_ips": [addr([10, 92], i).to_string()], "interface_name": "eth0", "aliases": []}},
        "network_info": {"bench": {
            "name": "bench", "id": format!("{:064x}", 7), "driver": "bridge", "network_interface": "wbnv0",
            "subnets": [{"subnet": "10.92.0.0/16", "gateway": "10.92.0.1"}],
            "ipv6_enabled": false, "internal": false, "dns_enabled": false,
            "ipam_options": {"driver": "host-local"}
        }}
    })
    .to_string()
}

/// A per-container setup or teardown: `(i, netns path)` -> the call's time.
type Step = Box<dyn Fn(usize, &str) -> Result<Duration> + Send + Sync>;

/// A system's per-container setup and teardown, run from inside its host
/// namespace. Setups stop early (after at least two) once `budget` has
/// passed; only the containers set up are torn down.
pub(crate) fn per_container(
    system: &'static str,
    containers: &[Netns],
    target: fn(usize) -> Ipv4Addr,
    host: &Netns,
    budget: Duration,
    (setup, teardown): (Step, Step),
) -> Result<Series> {
    let paths: Arc<Vec<String>> = Arc::new(containers.iter().map(Netns::path).collect());
    let n = containers.len();
    let (hn, p) = (host.name.clone(), paths.clone());
    let mut s = in_host(host, move || {
        let mut s = Series { system, n, ..Default::default() };
        let t0 = Instant::now();
        for (i, path) in p.iter().enumerate() {
            if i >= 2 && t0.elapsed() > budget {
                eprintln!("attach: {system}: time budget spent after {i} of {n}");
                break;
            }
            s.setup.push(setup(i, path).with_context(|| format!("{system} setup c{i}"))?);
            s.done = i + 1;
        }
        s.setup_total = t0.elapsed();
        s.counts = Some(count_ruleset(&hn)?);
        Ok(s)
    })?;
    check_ping(system, &containers[0], target(s.done))?;
    let done = s.done;
    s.teardown = in_host(host, move || {
        let mut t = Vec::new();
        for (i, path) in paths.iter().enumerate().take(done) {
            t.push(teardown(i, path).with_context(|| format!("{system} teardown c{i}"))?);
        }
        Ok(t)
    })?;
    Ok(s)
}

/// netavark setup/teardown per container.
fn netavark(containers: &[Netns], budget: Duration) -> Result<Series> {
    let host = Netns::new("b", "nvhost");
    let dir = temp_dir("netavark")?;
    let config = dir.clone();
    let nv = move |verb: &'static str| -> Step {
        let dir = config.clone();
        Box::new(move |i: usize, path: &str| -> Result<Duration> {
            Ok(timed(Command::new(NETAVARK).arg("--config").arg(&dir).args([verb, path]), &netavark_json(i))?.1)
        })
    };
    let s = per_container(
        SYSTEMS[3],
        containers,
        |n| ping_target([10, 92], n),
        &host,
        budget,
        (nv("setup"), nv("teardown")),
    );
    let _ = std::fs::remove_dir_all(&dir);
    s
}

/// The CNI reference chain: bridge (+ host-local) then portmap.
fn cni(containers: &[Netns], budget: Duration) -> Result<Series> {
    let host = Netns::new("b", "cnihost");
    let data = temp_dir("cni")?;
    let bridge_conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "wbcni0",
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.94.0.0/16", "gateway": "10.94.0.1"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data}
    });
    let portmap_conf = |i: usize, prev: Option<serde_json::Value>| {
        let mut c = serde_json::json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "portmap", "snat": true,
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [{"hostPort": port(i), "containerPort": 80, "protocol": "tcp"}]}
        });
        if let Some(p) = prev {
            c["prevResult"] = p;
        }
        c.to_string()
    };
    let call = |command: &str, plugin: &str, i: usize, path: &str, conf: &str| {
        timed(
            Command::new(Path::new(CNI_PATH).join(plugin))
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", format!("{:064x}", i + 1))
                .env("CNI_NETNS", path)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", CNI_PATH),
            conf,
        )
    };
    let bc = bridge_conf.to_string();
    let bc2 = bc.clone();
    let setup = move |i: usize, path: &str| -> Result<Duration> {
        let (out, t1) = call("ADD", "bridge", i, path, &bc)?;
        let prev: serde_json::Value = serde_json::from_str(&out)?;
        let (_, t2) = call("ADD", "portmap", i, path, &portmap_conf(i, Some(prev)))?;
        Ok(t1 + t2)
    };
    let teardown = move |i: usize, path: &str| -> Result<Duration> {
        let (_, t1) = call("DEL", "portmap", i, path, &portmap_conf(i, None))?;
        let (_, t2) = call("DEL", "bridge", i, path, &bc2)?;
        Ok(t1 + t2)
    };
    // host-local hands out the /16 in order from .0.2, .0.255 and .1.0
    // included.
    let target = |n: usize| {
        if n > 1 {
            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 94, 0, 2)) + n as u32 - 1)
        } else {
            ping_target([10, 94], 1)
        }
    };
    let s = per_container(SYSTEMS[4], containers, target, &host, budget, (Box::new(setup), Box::new(teardown)));
    let _ = std::fs::remove_dir_all(&data);
    s
}
