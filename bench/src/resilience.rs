//! Two measurements of the commit path under stress, each against one
//! weftd in a fresh host namespace:
//!
//! - `neighbours`: tenant B makes sequential attaches on its own network,
//!   in rounds alternating between tenant A idle and A's client attaching to
//!   a network bound to A's own IPAM and policy components, which spin to
//!   their deadline on every call (`ipam-hostile` for endpoints named
//!   `spin`, `policy-hostile` for endpoints labelled `spin=classify`; one
//!   client, alternating, so one core stays free), and rounds with 16 such
//!   clients of A's at once (A's calls then queue for A's share of the
//!   sandbox). B's latency should not notice: no lock B needs is held
//!   across A's Wasm calls, and A's calls neither take B's CPU nor its
//!   threads.
//! - `repair`: each kind of drift the watcher repairs, made by hand N times;
//!   the time from the disruption until the kernel state is whole again and
//!   until a ping between two containers passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_grpc::client::{EndpointServiceClient, connect_unix};
use weft_grpc::pb;
use weft_tests::{Host, Netns, addr_of, component};

use crate::stats::{Summary, ms};

/// B's attach latencies with A idle and with A's modules spinning.
pub struct Neighbours {
    /// B's attaches with A idle.
    pub idle: Vec<Duration>,
    /// B's attaches while A's modules spin.
    pub noisy: Vec<Duration>,
    /// B's attaches while 16 of A's clients call spinning modules at once.
    pub crowd: Vec<Duration>,
    /// A's call latencies (each refused at the deadline).
    pub spin_times: Vec<Duration>,
    /// The 16 clients' call latencies (refused at the deadline, or as busy).
    pub crowd_times: Vec<Duration>,
    /// Idle/noisy round pairs the samples were pooled from.
    pub rounds: usize,
    /// A tenant's concurrent Wasm calls weftd allowed.
    pub share: String,
}

fn b_attach(i: usize, ns: &Netns) -> pb::AttachEndpointRequest {
    pb::AttachEndpointRequest {
        tenant: "b".into(),
        network: "b-net".into(),
        name: format!("e{i}"),
        netns: ns.path(),
        ..Default::default()
    }
}

async fn b_round(host: &Host, containers: &[Netns]) -> Result<Vec<Duration>> {
    let mut c = host.endpoints().await;
    let mut out = Vec::with_capacity(containers.len());
    for (i, ns) in containers.iter().enumerate() {
        let t = Instant::now();
        c.attach_endpoint(b_attach(i, ns)).await.with_context(|| format!("tenant b attach e{i}"))?;
        out.push(t.elapsed());
    }
    for i in 0..containers.len() {
        let req = pb::DetachEndpointRequest {
            tenant: "b".into(),
            network: "b-net".into(),
            name: format!("e{i}"),
            ..Default::default()
        };
        c.detach_endpoint(req).await.with_context(|| format!("tenant b detach e{i}"))?;
    }
    Ok(out)
}

/// B's round while `spinners` clients of A's keep calling its spinning
/// modules; B's latencies and A's.
async fn noisy_round(
    host: &Host,
    containers: &[Netns],
    a_ns: &Netns,
    spinners: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = |k: usize| {
        let (stop, sock, path) = (stop.clone(), host.socket(), a_ns.path());
        tokio::spawn(async move {
            let mut c = EndpointServiceClient::new(connect_unix(sock).await?);
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Alternate: IPAM spins for "spin"; classify spins on the label.
                // Each client on a network of its own: attaches to one
                // network take its lock in turn.
                let mut req = pb::AttachEndpointRequest {
                    tenant: "a".into(),
                    network: format!("a-net-{k}"),
                    name: "spin".into(),
                    netns: path.clone(),
                    ..Default::default()
                };
                if (times.len() + k) % 2 == 1 {
                    req.name = "spin2".into();
                    req.labels.insert("spin".into(), "classify".into());
                }
                let t = Instant::now();
                if c.attach_endpoint(req).await.is_ok() {
                    bail!("tenant a's spinning attach succeeded");
                }
                times.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(times)
        })
    };
    let clients: Vec<_> = (0..spinners).map(spinner).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let noisy = b_round(host, containers).await;
    stop.store(true, Ordering::Relaxed);
    let mut spin_times = Vec::new();
    for c in clients {
        spin_times.extend(c.await??);
    }
    Ok((noisy?, spin_times))
}

/// A's clients in the crowded rounds.
const CROWD: usize = 16;

/// Run the noisy-neighbour comparison: `rounds` times, `attaches` attaches
/// with A idle, as many with one client of A's spinning, and as many with
/// [`CROWD`] of them.
pub fn neighbours(attaches: usize, rounds: usize, share: Option<usize>) -> Result<Neighbours> {
    let rt = crate::tokio_rt(2)?;
    rt.block_on(async {
        let share = share.map(|k| k.to_string());
        let args: Vec<&str> = share.iter().flat_map(|k| ["--tenant-wasm-concurrency", k.as_str()]).collect();
        let host = Host::with_args("bn", &args);
        host.upload("a", "spin-ipam", "ipam", &component("ipam-hostile")).await.context("upload ipam-hostile")?;
        host.upload("a", "spin-policy", "policy", &component("policy-hostile"))
            .await
            .context("upload policy-hostile")?;
        let mut nets = host.networks().await;
        let net = |tenant: &str, name: &str, subnet: &str, ipam: &str, policy: &str| pb::CreateNetworkRequest {
            tenant: tenant.into(),
            name: name.into(),
            subnets: vec![pb::Subnet { subnet: subnet.into(), ..Default::default() }],
            ipam: ipam.into(),
            policy: policy.into(),
            ..Default::default()
        };
        for k in 0..CROWD {
            nets.create_network(net(
                "a",
                &format!("a-net-{k}"),
                &format!("10.95.{k}.0/24"),
                "spin-ipam",
                "spin-policy",
            ))
            .await?;
        }
        nets.create_network(net("b", "b-net", "10.96.0.0/16", "", "")).await?;
        let containers: Vec<Netns> = (0..attaches).map(|i| host.container(&format!("b{i}"))).collect();
        let a_ns = host.container("a0");
        // Warm up both paths once.
        b_round(&host, &containers[..1]).await?;
        // Idle and noisy rounds alternate, so a slow stretch of the machine
        // lands on both sides rather than on one.
        let mut n = Neighbours {
            idle: Vec::new(),
            noisy: Vec::new(),
            crowd: Vec::new(),
            spin_times: Vec::new(),
            crowd_times: Vec::new(),
            rounds,
            share: String::new(),
        };
        for _ in 0..rounds {
            n.idle.extend(b_round(&host, &containers).await?);
            let (b, a) = noisy_round(&host, &containers, &a_ns, 1).await?;
            n.noisy.extend(b);
            n.spin_times.extend(a);
            let (b, a) = noisy_round(&host, &containers, &a_ns, CROWD).await?;
            n.crowd.extend(b);
            n.crowd_times.extend(a);
        }
        n.share = share.unwrap_or_else(|| "weftd's default, half the cores,".to_owned());
        Ok(n)
    })
}

/// The noisy-neighbour table.
pub fn neighbours_markdown(n: &Neighbours) -> String {
    let (i, q, c) = (Summary::of(&n.idle), Summary::of(&n.noisy), Summary::of(&n.crowd));
    let (s, cs) = (Summary::of(&n.spin_times), Summary::of(&n.crowd_times));
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let mut out = String::new();
    out.push_str(&format!(
        "Tenant B: {} sequential gRPC attaches on its own network per round; {} rounds each with tenant A \
         idle, with A busy and with A crowding, interleaved, and the samples are pooled. Busy: one client of \
         A's attaching without pause to a network bound to A's `ipam-hostile` and `policy-hostile` \
         components, which spin to their deadline on every call ({} calls, each refused after p50 {} ms). \
         Crowding: {CROWD} such clients at once, each on a network of its own ({} calls, refused after p50 \
         {} ms, p95 {} ms: past A's share of the sandbox, {} concurrent call(s), a call waits up to 1 s for a \
         slot, then is refused as busy).\n\n",
        n.idle.len() / n.rounds.max(1),
        n.rounds,
        n.spin_times.len(),
        ms(s.p50),
        n.crowd_times.len(),
        ms(cs.p50),
        ms(cs.p95),
        n.share,
    ));
    out.push_str("| tenant A | B attach p50 ms | p95 | p99 | p99 vs idle |\n|---|---:|---:|---:|---:|\n");
    out.push_str(&format!("| idle | {} | {} | {} | |\n", ms(i.p50), ms(i.p95), ms(i.p99)));
    for (what, x) in [("1 client spinning", &q), (&format!("{CROWD} clients spinning") as &str, &c)] {
        out.push_str(&format!(
            "| {what} | {} | {} | {} | {:.2}× |\n",
            ms(x.p50),
            ms(x.p95),
            ms(x.p99),
            ratio(x.p99, i.p99)
        ));
    }
    out
}

/// One kind of drift and how long its repairs took.
pub struct Repair {
    /// What was done by hand.
    pub what: &'static str,
    /// Until the kernel state was whole again.
    pub state: Vec<Duration>,
    /// Until a ping between the two containers passed.
    pub traffic: Vec<Duration>,
}

/// Disrupt each kind of state `trials` times and time the repairs.
pub fn repair(trials: usize) -> Result<Vec<Repair>> {
    let rt = crate::tokio_rt(2)?;
    rt.block_on(async {
        let host = Host::with_args("br", &[]);
        let net = host.create_network("web", &["10.97.0.0/24"]).await.context("create network")?;
        let (c1, c2) = (host.container("c1"), host.container("c2"));
        let req = pb::AttachEndpointRequest {
            network: "web".into(),
            name: "c1".into(),
            netns: c1.path(),
            publish: vec!["18091:8080".into()],
            ..Default::default()
        };
        let e1 = host.endpoints().await.attach_endpoint(req).await.context("attach c1")?.into_inner();
        let e2 = host.attach("web", "c2", &c2).await.context("attach c2")?;
        let a1 = addr_of(&e1.addresses[0]);
        let (bridge, v1, v2) = (net.bridge.clone(), e1.host_ifname.clone(), e2.host_ifname.clone());
        let whole = || whole(&host, &bridge, &[&v1, &v2]);
        if !whole() || !c2.ping(&a1) {
            bail!("the network is not whole before the first disruption");
        }
        let kinds: [(&'static str, Vec<&str>); 6] = [
            ("bridge deleted", vec!["ip", "link", "del", &bridge]),
            ("bridge down", vec!["ip", "link", "set", &bridge, "down"]),
            ("host veth deleted", vec!["ip", "link", "del", &v1]),
            ("nft table deleted", vec!["nft", "delete", "table", "inet", "weft"]),
            ("nft table flushed", vec!["nft", "flush", "table", "inet", "weft"]),
            ("set element deleted", vec!["nft", "delete", "element", "inet", "weft", "pub4_any", "{ tcp . 18091 }"]),
        ];
        let mut out = Vec::new();
        for (what, cmd) in kinds {
            let mut r = Repair { what, state: Vec::new(), traffic: Vec::new() };
            for _ in 0..trials {
                let o = host.ns.exec(&cmd);
                if !o.status.success() {
                    bail!("{what}: {}", String::from_utf8_lossy(&o.stderr));
                }
                let t = Instant::now();
                let deadline = t + Duration::from_secs(30);
                while !whole() {
                    if Instant::now() > deadline {
                        bail!("{what}: not repaired within 30 s");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                r.state.push(t.elapsed());
                while !c2.exec(&["ping", "-c", "1", "-W", "1", "-q", &a1]).status.success() {
                    if Instant::now() > deadline {
                        bail!("{what}: no traffic within 30 s");
                    }
                }
                r.traffic.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            out.push(r);
        }
        Ok(out)
    })
}

/// True if the bridge is up, both veths are its ports and up, and weft's
/// table has its rules and the published port.
fn whole(host: &Host, bridge: &str, veths: &[&str]) -> bool {
    let links = host.ns.exec(&["ip", "-j", "link", "show"]);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&links.stdout) else { return false };
    let up = |name: &str, master: Option<&str>| {
        v.as_array().is_some_and(|a| {
            a.iter().any(|l| {
                l["ifname"] == name
                    && l["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"))
                    && master.is_none_or(|m| l["master"] == m)
            })
        })
    };
    if !up(bridge, None) || !veths.iter().all(|v| up(v, Some(bridge))) {
        return false;
    }
    let t = host.ns.exec(&["nft", "list", "table", "inet", "weft"]);
    let t = String::from_utf8_lossy(&t.stdout);
    t.contains("ct state established,related accept") && t.contains("tcp . 18091")
}

/// The repair-time table.
pub fn repair_markdown(rs: &[Repair]) -> String {
    let mut out = String::from(
        "Each disruption made by hand in weft's host namespace; the periodic pass is off, so every repair \
         comes from the drift watcher. Time from the disruption until the kernel state is whole again, and \
         until a ping from one container to the other passes.\n\n\
         | disruption | trials | whole p50 ms | p99 | traffic p50 ms | p99 |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rs {
        let (s, t) = (Summary::of(&r.state), Summary::of(&r.traffic));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.what,
            r.state.len(),
            ms(s.p50),
            ms(s.p99),
            ms(t.p50),
            ms(t.p99)
        ));
    }
    out
}
