//! `weft-bench overlay`: cluster mode on simulated hosts (the tests'
//! harness: an underlay bridge, a three-member etcd, a weftd per host).
//! - convergence: from an attach returning on node A to the first echo
//!   reply from a container on node B, over N attaches;
//! - detach: from a detach returning on A to its FDB entry being gone on
//!   every other node (read over netlink, every millisecond);
//! - iperf3 between containers on two hosts across the overlay, against
//!   the same two hosts' underlay;
//! - joining: M nodes started at once, time until every node sees every
//!   other alive, then one endpoint per node and every pair pinged.
//!
//! flannel, Docker's overlay and Cilium state no convergence figure, so
//! there is no peer to run beside; the goal is p99 at most 250 ms.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_grpc::pb;
use weft_tests::cluster::{Cluster, underlay_ip};
use weft_tests::{Host, Netns, addr_of, on_ns};

use crate::stats::{Summary, ms};

/// What one run measured.
pub struct Overlay {
    pub attaches: usize,
    pub attach: Vec<Duration>,
    pub converge: Vec<Duration>,
    pub converge_failed: usize,
    pub detach: Vec<Duration>,
    pub overlay_gbits: f64,
    pub underlay_gbits: f64,
    pub mtu: u32,
    pub nodes: usize,
    pub serving: Duration,
    pub join: Duration,
    pub txn_mean: Duration,
    pub pairs: usize,
    pub pairs_ok: usize,
}

/// Echo requests from inside `ns` to `to` every 2 ms until one is answered
/// (ICMP datagram socket); the time since `since`, or None after `limit`.
fn first_echo(ns: &str, to: Ipv4Addr, since: Instant, limit: Duration) -> std::thread::JoinHandle<Option<Duration>> {
    on_ns(ns, move || {
        let sock = socket2_icmp()?;
        let dst = SocketAddr::from((to, 0));
        let mut seq: u16 = 0;
        while since.elapsed() < limit {
            seq = seq.wrapping_add(1);
            let mut pkt = [8u8, 0, 0, 0, 0, 0, (seq >> 8) as u8, seq as u8];
            let sum = checksum(&pkt);
            pkt[2..4].copy_from_slice(&sum.to_be_bytes());
            let _ = sock.send_to(&pkt, dst);
            let mut buf = [0u8; 64];
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && n >= 8
                && buf[0] == 0
            {
                return Some(since.elapsed());
            }
        }
        None
    })
}

/// An ICMP echo datagram socket with a 2 ms receive timeout.
fn socket2_icmp() -> Option<std::net::UdpSocket> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) returns a new descriptor we own (or -1).
    #[allow(unsafe_code)]
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh socket nothing else owns; a datagram socket's
    // send_to/recv_from are what UdpSocket calls.
    #[allow(unsafe_code)]
    let s = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
    s.set_read_timeout(Some(Duration::from_millis(2))).ok()?;
    Some(s)
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether the VXLAN device `dev` in host namespace `ns` has an FDB entry
/// for `mac`, read over netlink from inside it.
fn has_fdb(ns: &str, dev: &str, mac: &str) -> std::thread::JoinHandle<Result<bool>> {
    let (dev, mac) = (dev.to_owned(), mac.to_owned());
    on_ns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            use weft_kernel::KernelApi;
            let k = weft_kernel::Kernel::new()?;
            let dev = weft_model::IfName::parse("dev", &dev)?;
            let e = k.vxlan_entries(&dev).await?;
            Ok(e.fdb.iter().any(|(m, _)| m.to_string() == mac))
        })
    })
}

/// Poll (in a thread inside `ns`) until `dev` has no FDB entry for `mac`;
/// the time since `since`.
fn fdb_gone(ns: &str, dev: &str, mac: &str, since: Instant) -> std::thread::JoinHandle<Result<Duration>> {
    let (dev, mac) = (dev.to_owned(), mac.to_owned());
    on_ns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            use weft_kernel::KernelApi;
            let k = weft_kernel::Kernel::new()?;
            let dev = weft_model::IfName::parse("dev", &dev)?;
            loop {
                let e = k.vxlan_entries(&dev).await?;
                if !e.fdb.iter().any(|(m, _)| m.to_string() == mac) {
                    return Ok(since.elapsed());
                }
                if since.elapsed() > Duration::from_secs(10) {
                    bail!("the FDB entry for {mac} is still on {dev} after 10 s");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    })
}

fn sysctl(ns: &str, kv: &str) -> Result<()> {
    let out = Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", kv]).output()?;
    if !out.status.success() {
        bail!("sysctl {kv} in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

async fn attach(h: &Host, network: &str, name: &str, ns: &Netns) -> Result<pb::Endpoint> {
    let req = pb::AttachEndpointRequest {
        network: network.into(),
        name: name.into(),
        netns: ns.path(),
        ..Default::default()
    };
    Ok(h.endpoints().await.attach_endpoint(req).await.with_context(|| format!("attaching {name}"))?.into_inner())
}

fn create_overlay(h: &Host, name: &str, subnet: &str) -> Result<()> {
    let out = h.cli(&["network", "create", name, "--driver", "overlay", "--subnet", subnet]);
    if !out.status.success() {
        bail!("creating {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn wait_network(h: &Host, name: &str) -> Result<serde_json::Value> {
    let t = Instant::now();
    loop {
        let out = h.cli(&["network", "inspect", name, "-o", "json"]);
        if out.status.success() {
            return Ok(serde_json::from_slice(&out.stdout)?);
        }
        if t.elapsed() > Duration::from_secs(10) {
            bail!("{name} did not reach {}", h.ns.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An iperf3 server, stopped by PID on drop.
struct Iperf(std::process::Child);

impl Drop for Iperf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iperf(server_ns: &str, server: &str, client_ns: &str, secs: u32) -> Result<f64> {
    let _s = Iperf(
        Command::new("ip")
            .args(["netns", "exec", server_ns, "iperf3", "-s", "-B", server, "-1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("iperf3")?,
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("ip")
        .args(["netns", "exec", client_ns, "iperf3", "-J", "-c", server, "-t", &secs.to_string()])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .with_context(|| format!("iperf3 failed: {}", v["error"]))
}

/// Run every part: `attaches` convergence rounds, `secs` of iperf3 each
/// way, `nodes` joining at once.
pub fn run(attaches: usize, secs: u32, nodes: usize) -> Result<Overlay> {
    let rt = crate::tokio_rt(2)?;
    let c = Cluster::new("bov", 3, &[]);
    let (a, b) = (&c.hosts[0], &c.hosts[1]);
    create_overlay(a, "ov", "10.98.0.0/16")?;
    let net = wait_network(b, "ov")?;
    wait_network(&c.hosts[2], "ov")?;
    let mtu = net["mtu"].as_u64().unwrap_or(0) as u32;
    let vx = format!("vx-{}", &net["id"].as_str().unwrap_or_default()[..12]);
    // The prober on B: ARP retried every 5 ms, so a probe sent before the
    // entry is programmed is not held back a whole second by ARP's timer.
    let probe = b.container("probe");
    let pe = rt.block_on(attach(b, "ov", "probe", &probe))?;
    sysctl(&probe.name, "net.ipv4.ping_group_range=0 2147483647")?;
    sysctl(&probe.name, &format!("net.ipv4.neigh.{}.retrans_time_ms=5", pe.ifname))?;
    sysctl(&probe.name, &format!("net.ipv4.neigh.{}.mcast_solicit=100", pe.ifname))?;
    let targets: Vec<Netns> = (0..attaches).map(|i| a.container(&format!("t{i}"))).collect();
    let mut converge = Vec::new();
    let mut took = Vec::new();
    let mut failed = 0;
    let mut made = Vec::new();
    for (i, ns) in targets.iter().enumerate() {
        let t = Instant::now();
        let ep = rt.block_on(attach(a, "ov", &format!("t{i}"), ns))?;
        let back = Instant::now();
        took.push(back - t);
        let ip: Ipv4Addr = addr_of(&ep.addresses[0]).parse()?;
        match first_echo(&probe.name, ip, back, Duration::from_secs(3)).join().ok().flatten() {
            Some(d) => converge.push(d),
            None => failed += 1,
        }
        made.push(ep);
    }
    // Detach: until the entry is gone on B and on C.
    let mut detach = Vec::new();
    for ep in made.iter().take(attaches.min(50)) {
        for h in &c.hosts[1..] {
            if !has_fdb(&h.ns.name, &vx, &ep.mac).join().map_err(|_| anyhow::anyhow!("fdb reader"))?? {
                bail!("{} has no FDB entry for {} before the detach", h.ns.name, ep.name);
            }
        }
        let req = pb::DetachEndpointRequest { network: "ov".into(), name: ep.name.clone(), ..Default::default() };
        rt.block_on(async { a.endpoints().await.detach_endpoint(req).await })?;
        let back = Instant::now();
        let waits: Vec<_> = c.hosts[1..].iter().map(|h| fdb_gone(&h.ns.name, &vx, &ep.mac, back)).collect();
        let mut worst = Duration::ZERO;
        for w in waits {
            worst = worst.max(w.join().map_err(|_| anyhow::anyhow!("fdb reader"))??);
        }
        detach.push(worst);
    }
    // Throughput: overlay between containers, then the hosts' underlay.
    let srv = a.container("srv");
    let se = rt.block_on(attach(a, "ov", "srv", &srv))?;
    let overlay_gbits = iperf(&srv.name, &addr_of(&se.addresses[0]), &probe.name, secs)?;
    let underlay_gbits = iperf(&a.ns.name, &underlay_ip(0), &b.ns.name, secs)?;
    let stats = rt.block_on(async {
        weft_grpc::client::SystemServiceClient::new(a.channel().await).get_stats(pb::GetStatsRequest {}).await
    })?;
    let txn_mean = stats
        .into_inner()
        .phases
        .iter()
        .find(|p| p.name == "cluster.etcd_txn" && p.count > 0)
        .map_or(Duration::ZERO, |p| Duration::from_micros(p.total_us / p.count));
    drop(c);
    let (serving, join, pairs, pairs_ok) = join_at_once(&rt, nodes)?;
    Ok(Overlay {
        attaches,
        attach: took,
        converge,
        converge_failed: failed,
        detach,
        overlay_gbits,
        underlay_gbits,
        mtu,
        nodes,
        serving,
        join,
        txn_mean,
        pairs,
        pairs_ok,
    })
}

/// `n` nodes started at once: the time until every node sees every other
/// alive; then one endpoint per node and every ordered pair pinged.
fn join_at_once(rt: &tokio::runtime::Runtime, n: usize) -> Result<(Duration, Duration, usize, usize)> {
    let c = Cluster::new("bjn", n, &[]);
    for i in 0..n {
        c.wait_nodes(i, n, Duration::from_secs(30));
    }
    let serving = c.ready - c.started;
    let join = c.ready.elapsed();
    create_overlay(&c.hosts[0], "all", "10.99.0.0/24")?;
    for h in &c.hosts {
        wait_network(h, "all")?;
    }
    let ns: Vec<Netns> = c.hosts.iter().map(|h| h.container("p")).collect();
    let mut ips = Vec::new();
    for (i, h) in c.hosts.iter().enumerate() {
        ips.push(addr_of(&rt.block_on(attach(h, "all", &format!("p{i}"), &ns[i]))?.addresses[0]));
    }
    let mut pairs = 0;
    let mut ok = 0;
    for (i, from) in ns.iter().enumerate() {
        let probes: Vec<_> = (0..n).filter(|j| *j != i).map(|j| (j, from.name.clone(), ips[j].clone())).collect();
        let handles: Vec<_> = probes
            .into_iter()
            .map(|(_, ns, ip)| {
                std::thread::spawn(move || {
                    (0..3).any(|_| {
                        Command::new("ip")
                            .args(["netns", "exec", &ns, "ping", "-c", "1", "-W", "1", &ip])
                            .output()
                            .is_ok_and(|o| o.status.success())
                    })
                })
            })
            .collect();
        for h in handles {
            pairs += 1;
            ok += usize::from(h.join().unwrap_or(false));
        }
    }
    Ok((serving, join, pairs, ok))
}

/// The report.
pub fn markdown(o: &Overlay) -> String {
    let a = Summary::of(&o.attach);
    let c = Summary::of(&o.converge);
    let d = Summary::of(&o.detach);
    let mut s = format!(
        "{} attaches on node A, one at a time, each probed from a container on node B; {} of them detached.\n\n",
        o.attaches,
        o.detach.len()
    );
    s.push_str("| measure | p50 | p95 | p99 | n |\n|---|---|---|---|---|\n");
    s.push_str(&format!(
        "| the attach on A, as its gRPC client waits (ms; its etcd transaction: {} mean) | {} | {} | {} | {} |\n",
        ms(o.txn_mean),
        ms(a.p50),
        ms(a.p95),
        ms(a.p99),
        o.attach.len()
    ));
    s.push_str(&format!(
        "| attach on A returned -> first echo reply from B (ms) | {} | {} | {} | {}{} |\n",
        ms(c.p50),
        ms(c.p95),
        ms(c.p99),
        o.converge.len(),
        if o.converge_failed > 0 { format!(" ({} never answered in 3 s)", o.converge_failed) } else { String::new() }
    ));
    s.push_str(&format!(
        "| detach on A returned -> FDB entry gone on B and C (ms) | {} | {} | {} | {} |\n\n",
        ms(d.p50),
        ms(d.p95),
        ms(d.p99),
        o.detach.len()
    ));
    s.push_str(&format!(
        "| iperf3, one TCP stream | Gbit/s |\n|---|---|\n| container on B -> container on A, overlay (MTU {}) | {:.2} |\n| host B -> host A, underlay (MTU 1500) | {:.2} |\n| overlay / underlay | {:.2} |\n\n",
        o.mtu,
        o.overlay_gbits,
        o.underlay_gbits,
        o.overlay_gbits / o.underlay_gbits.max(1e-9)
    ));
    s.push_str(&format!(
        "{} weftds started at once: all serving after {} ms (weftd's own start-up, {} processes on this machine's cores); every node saw every other alive {} ms after the last was serving; {} of {} ordered pairs of containers (one per node) answered ping.\n",
        o.nodes,
        ms(o.serving),
        o.nodes,
        ms(o.join),
        o.pairs_ok,
        o.pairs
    ));
    s
}
