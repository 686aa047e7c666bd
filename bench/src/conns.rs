//! What policy costs a new connection: TCP connections per second (connect,
//! accept, close, one client, one server) between two containers of one
//! weft network, with no policy, with the one rule that lets the client in,
//! and with that rule behind 1,000 rules the connection does not match
//! (1,000 ipBlocks, 1,000 ports, 1,000 selector peers), with the nft rule
//! and element count of each. Established packets never reach the policy
//! chains (conntrack accepts them first), so a new connection's SYN is what
//! pays for the rules: this measures exactly that path.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::socket::{Backlog, Shutdown, listen, shutdown};
use weft_grpc::pb;
use weft_tests::{Host, on_ns};

use crate::firewall::{Counts, count_ruleset, server_and_client};

/// The server's port.
const PORT: u16 = 8080;

/// One scenario's result.
pub struct Rate {
    pub scenario: &'static str,
    pub counts: Counts,
    /// Median of the runs, connections per second.
    pub per_sec: f64,
    pub runs: Vec<f64>,
    /// Connections not set up within 1 s, over all runs.
    pub timeouts: u64,
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

/// `n` rules, each allowing one /32 outside the network on the server's
/// port (every other address, so no two merge into one range).
fn ip_blocks(n: usize) -> String {
    (0..n)
        .map(|i| {
            let a = 2 * i;
            format!(
                "  - from: [{{ipBlock: {{cidr: 172.{}.{}.{}/32}}}}]\n    ports: [{{port: {PORT}}}]\n",
                16 + a / 65536,
                (a / 256) % 256,
                a % 256
            )
        })
        .collect()
}

/// `n` rules, each allowing one other port from anywhere (every other
/// port, so no two merge into one range).
fn ports(n: usize) -> String {
    (0..n)
        .map(|i| format!("  - from: [{{ipBlock: {{cidr: 0.0.0.0/0}}}}]\n    ports: [{{port: {}}}]\n", 9000 + 2 * i))
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

/// Connections per second from namespace `ns` to `to` for `secs` seconds,
/// and how many were not set up within 1 s (a SYN dropped somewhere:
/// counted, not fatal, so a rare loss shows instead of ending the run).
/// Fails if no connection at all was set up.
fn rate(ns: &str, to: SocketAddr, secs: u32) -> Result<(f64, u64)> {
    let h = on_ns(ns, move || -> std::io::Result<(f64, u64)> {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(secs.into());
        let (mut n, mut timeouts) = (0u64, 0u64);
        while Instant::now() < end {
            match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                Ok(s) => {
                    linger_zero(&s)?;
                    n += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut && n > 0 => timeouts += 1,
                Err(e) => return Err(e),
            }
        }
        Ok((n as f64 / t0.elapsed().as_secs_f64(), timeouts))
    });
    h.join().map_err(|_| anyhow::anyhow!("client thread"))?.with_context(|| format!("connecting to {to} from {ns}"))
}

/// An accept loop in a namespace (blocking, with a deep backlog, so a
/// descheduled server does not drop SYNs), stopped on drop.
struct Server {
    stop: Arc<AtomicBool>,
    listener: Arc<TcpListener>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(ns: &str, at: SocketAddr) -> Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = on_ns(ns, move || {
            let l = match TcpListener::bind(at) {
                Ok(l) => Arc::new(l),
                Err(e) => return drop(tx.send(Err(e))),
            };
            // std listens with a backlog of 128; ask for more.
            let _ = listen(&*l, Backlog::new(4096).unwrap_or(Backlog::MAXCONN));
            let _ = tx.send(Ok(l.clone()));
            while !flag.load(Ordering::Relaxed) {
                if let Ok((s, _)) = l.accept() {
                    drop(s);
                }
            }
        });
        let listener = rx.recv().context("server thread")?.with_context(|| format!("binding {at}"))?;
        Ok(Server { stop, listener, thread: Some(thread) })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocked accept (it fails with EINVAL).
        let _ = shutdown(self.listener.as_raw_fd(), Shutdown::Read);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every scenario, each measured `runs` times for `secs` seconds.
pub fn run(runs: usize, secs: u32) -> Result<Vec<Rate>> {
    let rt = crate::tokio_rt(1)?;
    let host = Host::new("bcn");
    let (srv, cli, srv_addr) = server_and_client(&rt, &host, "conns", "10.96.0.0/24")?;
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
        let (mut r, mut timeouts) = (Vec::new(), 0);
        for _ in 0..runs {
            let (per_sec, lost) = rate(&cli.name, at, secs)?;
            r.push(per_sec);
            timeouts += lost;
        }
        Ok(Rate { scenario, counts, per_sec: crate::stats::median(&r), runs: r, timeouts })
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
        "| server's ingress policy | nft rules | set/map elements | connections/s (median) | of no policy | runs | timed out |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---|---:|\n");
    for r in rates {
        let runs: Vec<String> = r.runs.iter().map(|x| format!("{x:.0}")).collect();
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0}% | {} | {} |\n",
            r.scenario,
            r.counts.rules,
            r.counts.elements,
            r.per_sec,
            100.0 * r.per_sec / base,
            runs.join(", "),
            r.timeouts
        ));
    }
    s
}
