//! DNS: weft's embedded server vs aardvark-dns, answering the same local
//! names to the same client under the same load.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use weft_tests::{Host, Netns, on_ns, sh};

use crate::stats::Summary;

/// Where Debian installs aardvark-dns.
const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";

/// One load run's result.
struct Load {
    sent: u64,
    answered: u64,
    qps: f64,
    p50: Duration,
    p99: Duration,
}

/// Datagrams per `sendmmsg`/`recvmmsg` of the load generator and the echo
/// server.
const BATCH: usize = 64;

/// Keep `outstanding` queries (of type `qtype`) in flight against `server`
/// from namespace `ns` for `secs` seconds; names are picked round-robin from
/// `names`.
fn load(
    ns: &str,
    server: SocketAddr,
    names: Vec<String>,
    qtype: RecordType,
    secs: u64,
    outstanding: usize,
) -> Result<Load> {
    let ns = ns.to_owned();
    on_ns(&ns, move || -> Result<Load> {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.connect(server)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let queries: Vec<Vec<u8>> = names
            .iter()
            .map(|n| {
                let mut q = Message::new(0, MessageType::Query, OpCode::Query);
                q.metadata.recursion_desired = true;
                q.queries.push(Query::query(Name::from_str(&format!("{n}."))?, qtype));
                Ok(q.to_vec()?)
            })
            .collect::<Result<_>>()?;
        let mut in_flight: HashMap<u16, Instant> = HashMap::new();
        let mut lat: Vec<Duration> = Vec::new();
        let (mut sent, mut next_id, mut k) = (0u64, 0u16, 0usize);
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        // Batched both ways (sendmmsg, recvmmsg), so the generator's own
        // system calls leave the server under test as much of the machine
        // as they can; the echo floor shows what is left.
        let fd = sock.as_raw_fd();
        let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let connected: Vec<Option<SockaddrStorage>> = vec![None; BATCH];
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        let mut bufs = vec![[0u8; 512]; BATCH];
        let mut got: Vec<usize> = Vec::with_capacity(BATCH);
        while Instant::now() < end {
            batch.clear();
            while in_flight.len() + batch.len() < outstanding && batch.len() < BATCH {
                next_id = next_id.wrapping_add(1);
                let mut q = queries[k % queries.len()].clone();
                k += 1;
                q[..2].copy_from_slice(&next_id.to_be_bytes());
                batch.push(q);
            }
            if !batch.is_empty() {
                sent += batch.len() as u64;
                let iovs: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|q| [IoSlice::new(q)]).collect();
                // A refused send (the server's socket is gone) is a lost query.
                let n = sendmmsg(fd, &mut send_headers, iovs.iter(), &connected[..batch.len()], [], MsgFlags::empty())
                    .map_or(0, Iterator::count);
                let now = Instant::now();
                for q in &batch[..n] {
                    in_flight.insert(u16::from_be_bytes([q[0], q[1]]), now);
                }
            }
            got.clear();
            {
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
                match recvmmsg(fd, &mut recv_headers, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                    Ok(msgs) => got.extend(msgs.map(|m| m.bytes)),
                    // A query unanswered for 200 ms, or refused (ICMP port
                    // unreachable: nothing listening), is lost.
                    Err(_) => in_flight.clear(),
                }
            }
            let now = Instant::now();
            for (buf, &n) in bufs.iter().zip(&got) {
                if n >= 2
                    && let Some(t) = in_flight.remove(&u16::from_be_bytes([buf[0], buf[1]]))
                {
                    lat.push(now - t);
                }
            }
        }
        let mut buf = [0u8; 1500];
        let took = start.elapsed().as_secs_f64();
        // Drain: answers to the last window still count.
        let drain_end = Instant::now() + Duration::from_millis(200);
        while !in_flight.is_empty() && Instant::now() < drain_end {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 2 => {
                    if let Some(t) = in_flight.remove(&u16::from_be_bytes([buf[0], buf[1]])) {
                        lat.push(t.elapsed());
                    }
                }
                _ => break,
            }
        }
        let s = Summary::of(&lat);
        Ok(Load { sent, answered: lat.len() as u64, qps: lat.len() as f64 / took, p50: s.p50, p99: s.p99 })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("load thread panicked"))?
}

/// The load generator's ceiling: a UDP server in `ns` on `addr` that sends
/// every datagram straight back with the answer bit set — the same client,
/// sockets and kernel path as a DNS server, and no DNS work.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(ns: &str, addr: SocketAddr) -> Result<Echo> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = on_ns(ns, move || {
            let sock = match UdpSocket::bind(addr) {
                Ok(s) => s,
                Err(e) => return drop(ready_tx.send(Err(e))),
            };
            let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = ready_tx.send(Ok(()));
            // Batched like weft's own UDP loop, so the floor is the load
            // generator's, not the echo server's.
            let fd = sock.as_raw_fd();
            let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
            let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
            let mut bufs = vec![[0u8; 512]; BATCH];
            let mut got: Vec<(usize, Option<SockaddrStorage>)> = Vec::with_capacity(BATCH);
            while !flag.load(Ordering::Relaxed) {
                got.clear();
                {
                    let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
                    if let Ok(msgs) = recvmmsg(fd, &mut recv_headers, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                        got.extend(msgs.map(|m| (m.bytes, m.address)));
                    }
                }
                for (buf, (n, _)) in bufs.iter_mut().zip(&got) {
                    if *n > 2 {
                        buf[2] |= 0x80;
                    }
                }
                let to: Vec<Option<SockaddrStorage>> = got.iter().map(|g| g.1).collect();
                let iovs: Vec<[IoSlice<'_>; 1]> =
                    bufs.iter().zip(&got).map(|(b, (n, _))| [IoSlice::new(&b[..*n])]).collect();
                if !iovs.is_empty() {
                    let _ = sendmmsg(fd, &mut send_headers, iovs.iter(), &to, [], MsgFlags::empty());
                }
            }
        });
        ready.recv()?.context("echo server bind")?;
        Ok(Echo { stop, thread: Some(thread) })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn check_answers(ns: &Netns, server: &str, name: &str, want: &str) -> Result<()> {
    let out = ns.exec(&["dig", "+short", "+time=2", "+tries=1", &format!("@{server}"), name]);
    let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if got != want {
        bail!("{server} answered {name} with {got:?}, expected {want}");
    }
    Ok(())
}

/// aardvark-dns in its own "host" namespace with a bridge at 10.52.0.1,
/// the client at 10.52.0.2, and `names` entries.
struct Aardvark {
    host: Netns,
    client: Netns,
    dir: std::path::PathBuf,
    child: Child,
    conf: String,
}

impl Aardvark {
    fn start(names: &[String]) -> Result<Aardvark> {
        let host = Netns::new("bench", "aardhost");
        let client = Netns::new("bench", "aardcli");
        let h = host.name.as_str();
        sh(&["ip", "-n", h, "link", "add", "wbbr0", "type", "bridge"]);
        sh(&["ip", "-n", h, "addr", "add", "10.52.0.1/16", "dev", "wbbr0"]);
        sh(&["ip", "-n", h, "link", "set", "wbbr0", "up"]);
        sh(&["ip", "-n", h, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", h, "link", "add", "wbv0", "type", "veth", "peer", "name", "eth0", "netns", &client.name]);
        sh(&["ip", "-n", h, "link", "set", "wbv0", "master", "wbbr0", "up"]);
        sh(&["ip", "-n", &client.name, "addr", "add", "10.52.0.2/16", "dev", "eth0"]);
        sh(&["ip", "-n", &client.name, "link", "set", "eth0", "up"]);
        let dir = std::env::temp_dir().join(format!("weft-bench-aardvark-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // Config: the listen address, then one line per container:
        // ID IPV4S IPV6S NAMES.
        let mut conf = String::from("10.52.0.1\n");
        conf.push_str(&format!("{:064x} 10.52.0.2  client\n", 1));
        for (i, n) in names.iter().enumerate() {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 52, 1, 0)) + i as u32);
            conf.push_str(&format!("{:064x} {ip}  {n}\n", i + 2));
        }
        std::fs::write(dir.join("bench"), &conf)?;
        let child = Command::new("ip")
            .args(["netns", "exec", h, AARDVARK, "--config"])
            .arg(&dir)
            .args(["-p", "53", "run"])
            .spawn()
            .context("starting aardvark-dns (apt-get install aardvark-dns)")?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(Aardvark { host, client, dir, child, conf })
    }

    /// Rewrite the config with `extra` lines and tell aardvark-dns to reload
    /// (SIGHUP), as netavark does on every container start and stop.
    fn reload(&self, extra: &str) -> Result<()> {
        std::fs::write(self.dir.join("bench"), format!("{}{extra}", self.conf))?;
        let pid = std::fs::read_to_string(self.dir.join("aardvark.pid")).context("aardvark.pid")?;
        let ok = Command::new("kill").args(["-HUP", pid.trim()]).status()?.success();
        if !ok {
            bail!("SIGHUP to aardvark-dns failed");
        }
        Ok(())
    }
}

impl Drop for Aardvark {
    fn drop(&mut self) {
        // aardvark-dns daemonizes; its pid file is in the config directory.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("aardvark.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run the DNS benchmark; the report as markdown.
pub fn run(n_names: usize, secs: u64, outstanding: usize) -> Result<String> {
    if !std::path::Path::new(AARDVARK).exists() {
        bail!("{AARDVARK} missing: apt-get install aardvark-dns");
    }
    let names: Vec<String> = (0..n_names).map(|i| format!("svc{i}")).collect();

    // weft: a network with `n_names` endpoints, each named, and a client.
    let rt = crate::tokio_rt(1)?;
    let weft = Host::new("benchdns");
    let client = weft.container("cli");
    let spares: Vec<Netns> = (0..n_names).map(|i| weft.container(&format!("n{i}"))).collect();
    rt.block_on(async {
        weft.create_network("bench", &["10.51.0.0/16"]).await?;
        weft.attach("bench", "cli", &client).await?;
        for (ns, name) in spares.iter().zip(&names) {
            weft.attach("bench", name, ns).await?;
        }
        Ok::<(), tonic::Status>(())
    })?;
    check_answers(&client, "10.51.0.1", "svc0", "10.51.0.3")?;
    let weft_at: SocketAddr = (Ipv4Addr::new(10, 51, 0, 1), 53).into();
    let w = load(&client.name, weft_at, names.clone(), RecordType::A, secs, outstanding)?;
    // The same names, asked as ANY: weft answers them from the same table,
    // through hickory's parsing and the general handler (the path every
    // query took before the fast path).
    let wg = load(&client.name, weft_at, names.clone(), RecordType::ANY, secs, outstanding)?;
    // The echo floor on weft's own path (its host namespace, its network's
    // filter rules), beside weft's gateway.
    let weft_echo_at: SocketAddr = (Ipv4Addr::new(10, 51, 0, 1), 5353).into();
    let we = {
        let _echo = Echo::start(&weft.ns.name, weft_echo_at)?;
        load(&client.name, weft_echo_at, names.clone(), RecordType::A, secs, outstanding)?
    };

    let aard = Aardvark::start(&names)?;
    check_answers(&aard.client, "10.52.0.1", "svc0", "10.52.1.0")?;
    let aard_at: SocketAddr = (Ipv4Addr::new(10, 52, 0, 1), 53).into();
    let a = load(&aard.client.name, aard_at, names.clone(), RecordType::A, secs, outstanding)?;
    let echo_at: SocketAddr = (Ipv4Addr::new(10, 52, 0, 1), 5353).into();
    let e = {
        let _echo = Echo::start(&aard.host.name, echo_at)?;
        load(&aard.client.name, echo_at, names, RecordType::A, secs, outstanding)?
    };

    // Churn: queries keep flowing (8 in flight, 200 ms to answer) while
    // 100 endpoints are added and removed, one at a time.
    let churn_secs = 8;
    let cli = client.name.clone();
    let wl = std::thread::spawn(move || load(&cli, weft_at, vec!["svc0".into()], RecordType::A, churn_secs, 8));
    let spare = weft.container("churn");
    let t0 = Instant::now();
    rt.block_on(async {
        for i in 0..100 {
            weft.attach("bench", &format!("tmp{i}"), &spare).await?;
            let req = weft_grpc::pb::DetachEndpointRequest {
                network: "bench".into(),
                name: format!("tmp{i}"),
                ..Default::default()
            };
            weft.endpoints().await.detach_endpoint(req).await?;
        }
        Ok::<(), tonic::Status>(())
    })?;
    let weft_churn = t0.elapsed();
    let wc = wl.join().map_err(|_| anyhow::anyhow!("load thread"))??;
    let cli = aard.client.name.clone();
    let al = std::thread::spawn(move || load(&cli, aard_at, vec!["svc0".into()], RecordType::A, churn_secs, 8));
    let t0 = Instant::now();
    // Paced like weft's changes, so both see the same change rate.
    let pace = weft_churn / 200;
    for i in 0..100 {
        aard.reload(&format!("{:064x} 10.52.200.{}  tmp{i}\n", 1_000_000 + i, i % 250 + 1))?;
        std::thread::sleep(pace);
        aard.reload("")?;
        std::thread::sleep(pace);
    }
    let aard_churn = t0.elapsed();
    let ac = al.join().map_err(|_| anyhow::anyhow!("load thread"))??;
    let aard_alive = check_answers(&aard.client, "10.52.0.1", "svc0", "10.52.1.0").is_ok();
    let weft_alive = check_answers(&client, "10.51.0.1", "svc0", "10.51.0.3").is_ok();

    let mut md = String::new();
    writeln!(
        md,
        "| server | queries | names | outstanding | seconds | sent | answered | queries/s | of the echo floor | p50 | p99 |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (who, kind, l) in [
        ("weft (fast path)", "A", &w),
        ("weft (general path: hickory)", "ANY", &wg),
        ("aardvark-dns 1.4 (Debian)", "A", &a),
        ("echo floor (no DNS work)", "A", &e),
        ("echo floor on weft's path", "A", &we),
    ] {
        writeln!(
            md,
            "| {who} | {kind} | {n_names} | {outstanding} | {secs} | {} | {} | {:.0} | {:.0}% | {:.0} µs | {:.0} µs |",
            l.sent,
            l.answered,
            l.qps,
            100.0 * l.qps / e.qps.max(1.0),
            l.p50.as_secs_f64() * 1e6,
            l.p99.as_secs_f64() * 1e6
        )?;
    }
    writeln!(
        md,
        "\nweft / aardvark-dns: throughput {:.2}x, p99 {:.2}x; weft's fast path / its general path: {:.2}x",
        w.qps / a.qps.max(1.0),
        w.p99.as_secs_f64() / a.p99.as_secs_f64().max(1e-9),
        w.qps / wg.qps.max(1.0)
    )?;
    writeln!(md, "\nUnder churn (100 adds + 100 removes while queries flow, {churn_secs} s, 8 in flight):\n")?;
    writeln!(md, "| server | how a change is applied | changes took | sent | answered | lost | answers afterwards |")?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---|")?;
    writeln!(
        md,
        "| weft | attach + detach over gRPC, table updated in place | {:.1} s | {} | {} | {} | {} |",
        weft_churn.as_secs_f64(),
        wc.sent,
        wc.answered,
        wc.sent - wc.answered,
        if weft_alive { "yes" } else { "no" }
    )?;
    writeln!(
        md,
        "| aardvark-dns 1.4 | config rewritten + SIGHUP, as netavark does | {:.1} s | {} | {} | {} | {} |",
        aard_churn.as_secs_f64(),
        ac.sent,
        ac.answered,
        ac.sent - ac.answered,
        if aard_alive { "yes" } else { "no" }
    )?;
    Ok(md)
}
