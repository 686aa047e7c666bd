//! What policy costs a new connection: TCP connections per second (connect,
//! accept, close, one client, one server) between two containers of one
//! weft network, with no policy, with the one rule that lets the client in,
//! and with that rule behind 1,000 rules the connection does not match
//! (1,000 ipBlocks, 1,000 ports, 1,000 selector peers), with the nft rule
//! and element count of each. Established packets never reach the policy
//! chains (conntrack accepts them first), so a new connection's SYN is what
//! pays for the rules: this measures exactly that path.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_grpc::pb;
use weft_tests::{Host, addr_of, on_ns};

use crate::firewall::{Counts, count_ruleset};

/// The server's port.
const PORT: u16 = 8080;

/// One scenario's result.
pub struct Rate {
    pub scenario: &'static str,
    pub counts: Counts,
    /// Median of the runs, connections per second.
    pub per_sec: f64,
    pub runs: Vec<f64>,
}

/// The NetworkPolicy documents of a scenario: `srv` isolated for ingress,
/// `filler` rules that the client's connection does not match, then the
/// rule that lets `cli` in on [`PORT`] (the rule a linear walk reaches
/// last).
fn policy(filler: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: conns, namespace: default}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: srv}}}}\n  ingress:\n{filler}\
         \x20 - from: [{{podSelector: {{matchLabels: {{app: cli}}}}}}]\n    ports: [{{port: {PORT}}}]\n"
    )
}

/// 1,000 rules, each allowing one /32 outside the network on the server's
/// port.
fn ip_blocks(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "  - from: [{{ipBlock: {{cidr: 172.{}.{}.{}/32}}}}]\n    ports: [{{port: {PORT}}}]\n",
                16 + i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect()
}

/// `n` rules, each allowing one other port from anywhere.
fn ports(n: usize) -> String {
    (0..n)
        .map(|i| format!("  - from: [{{ipBlock: {{cidr: 0.0.0.0/0}}}}]\n    ports: [{{port: {}}}]\n", 9000 + i))
        .collect()
}

/// `n` rules, each allowing pods of a label nobody has, on the server's
/// port.
fn selectors(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!("  - from: [{{podSelector: {{matchLabels: {{app: p{i}}}}}}}]\n    ports: [{{port: {PORT}}}]\n")
        })
        .collect()
}

/// Close without TIME_WAIT (RST), so one client can open connections for
/// seconds without running out of ports.
fn linger_zero(s: &TcpStream) -> std::io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    setsockopt(s, sockopt::Linger, &l).map_err(std::io::Error::from)
}

/// Connections per second from namespace `ns` to `to` for `secs` seconds.
fn rate(ns: &str, to: SocketAddr, secs: u32) -> Result<f64> {
    let h = on_ns(ns, move || -> std::io::Result<f64> {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(secs.into());
        let mut n = 0u64;
        while Instant::now() < end {
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(1))?;
            linger_zero(&s)?;
            drop(s);
            n += 1;
        }
        Ok(n as f64 / t0.elapsed().as_secs_f64())
    });
    h.join().map_err(|_| anyhow::anyhow!("client thread"))?.context("connect")
}

/// An accept loop in a namespace, stopped on drop.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(ns: &str, at: SocketAddr) -> Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = on_ns(ns, move || {
            let l = match TcpListener::bind(at) {
                Ok(l) => l,
                Err(e) => return drop(tx.send(Err(e))),
            };
            let _ = l.set_nonblocking(true);
            let _ = tx.send(Ok(()));
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(Duration::from_micros(50)),
                }
            }
        });
        rx.recv().context("server thread")?.with_context(|| format!("binding {at}"))?;
        Ok(Server { stop, thread: Some(thread) })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every scenario, each measured `runs` times for `secs` seconds.
pub fn run(runs: usize, secs: u32) -> Result<Vec<Rate>> {
    let rt = crate::tokio_rt(1)?;
    let host = Host::new("bcn");
    let (srv, cli) = (host.container("srv"), host.container("cli"));
    let srv_addr = rt.block_on(async {
        let req = pb::CreateNetworkRequest {
            name: "conns".into(),
            subnets: vec![pb::Subnet { subnet: "10.96.0.0/24".into(), ..Default::default() }],
            policy: "policy-k8s".into(),
            ..Default::default()
        };
        host.networks().await.create_network(req).await?;
        let mut addr = String::new();
        for (name, ns) in [("srv", &srv), ("cli", &cli)] {
            let req = pb::AttachEndpointRequest {
                network: "conns".into(),
                name: name.into(),
                netns: ns.path(),
                labels: [("app".to_string(), name.to_string())].into_iter().collect(),
                ..Default::default()
            };
            let ep = host.endpoints().await.attach_endpoint(req).await?.into_inner();
            if name == "srv" {
                addr = addr_of(&ep.addresses[0]);
            }
        }
        Ok::<_, anyhow::Error>(addr)
    })?;
    let at: SocketAddr = format!("{srv_addr}:{PORT}").parse()?;
    let _server = Server::start(&srv.name, at)?;
    let apply = |documents: String| {
        rt.block_on(async {
            let req = pb::ApplyPoliciesRequest { network: "conns".into(), documents, ..Default::default() };
            host.policies().await.apply_policies(req).await?;
            Ok::<_, anyhow::Error>(())
        })
    };
    let measure = |scenario: &'static str| -> Result<Rate> {
        let counts = count_ruleset(&host.ns.name)?;
        // Warm up (ARP, the accept loop), then measure.
        rate(&cli.name, at, 1)?;
        let mut r = Vec::new();
        for _ in 0..runs {
            r.push(rate(&cli.name, at, secs)?);
        }
        let mut sorted = r.clone();
        sorted.sort_by(f64::total_cmp);
        Ok(Rate { scenario, counts, per_sec: sorted[sorted.len() / 2], runs: r })
    };
    let mut out = vec![measure("no policy")?];
    apply(policy(""))?;
    out.push(measure("1 rule (the client's)")?);
    apply(policy(&ip_blocks(1000)))?;
    out.push(measure("1,000 ipBlock rules + the client's")?);
    apply(policy(&ports(1000)))?;
    out.push(measure("1,000 port rules + the client's")?);
    apply(policy(&selectors(1000)))?;
    out.push(measure("1,000 selector rules + the client's")?);
    // The policy still decides: a client it does not allow cannot connect.
    apply(policy(&ip_blocks(1000)).replace("app: cli", "app: nobody"))?;
    if rate(&cli.name, at, 1).is_ok() {
        bail!("the client connected although no rule allows it: the policy is not in force");
    }
    Ok(out)
}

/// The connection-rate table.
pub fn markdown(rates: &[Rate]) -> String {
    let base = rates.first().map_or(1.0, |r| r.per_sec.max(1.0));
    let mut s = String::from(
        "| server's ingress policy | nft rules | set/map elements | connections/s (median) | of no policy | runs |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---|\n");
    for r in rates {
        let runs: Vec<String> = r.runs.iter().map(|x| format!("{x:.0}")).collect();
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0}% | {} |\n",
            r.scenario,
            r.counts.rules,
            r.counts.elements,
            r.per_sec,
            100.0 * r.per_sec / base,
            runs.join(", ")
        ));
    }
    s
}
