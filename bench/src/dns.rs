//! DNS: weft's embedded server vs aardvark-dns, answering the same local
//! names to the same client under the same load.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, Command};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
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

/// Keep `outstanding` queries in flight against `server` from namespace `ns`
/// for `secs` seconds; names are picked round-robin from `names`.
fn load(ns: &str, server: Ipv4Addr, names: Vec<String>, secs: u64, outstanding: usize) -> Result<Load> {
    let ns = ns.to_owned();
    on_ns(&ns, move || -> Result<Load> {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.connect((server, 53))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let queries: Vec<Vec<u8>> = names
            .iter()
            .map(|n| {
                let mut q = Message::new(0, MessageType::Query, OpCode::Query);
                q.metadata.recursion_desired = true;
                q.queries.push(Query::query(Name::from_str(&format!("{n}."))?, RecordType::A));
                Ok(q.to_vec()?)
            })
            .collect::<Result<_>>()?;
        let mut in_flight: HashMap<u16, Instant> = HashMap::new();
        let mut lat: Vec<Duration> = Vec::new();
        let (mut sent, mut next_id, mut k) = (0u64, 0u16, 0usize);
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        let mut buf = [0u8; 1500];
        while Instant::now() < end {
            while in_flight.len() < outstanding {
                next_id = next_id.wrapping_add(1);
                let mut q = queries[k % queries.len()].clone();
                k += 1;
                q[..2].copy_from_slice(&next_id.to_be_bytes());
                sent += 1;
                // A refused send (the server's socket is gone) is a lost query.
                if sock.send(&q).is_ok() {
                    in_flight.insert(next_id, Instant::now());
                }
            }
            match sock.recv(&mut buf) {
                Ok(n) if n >= 2 => {
                    let id = u16::from_be_bytes([buf[0], buf[1]]);
                    if let Some(t) = in_flight.remove(&id) {
                        lat.push(t.elapsed());
                    }
                }
                Ok(_) => {}
                // A query unanswered for 200 ms, or refused (ICMP port
                // unreachable: nothing listening), is lost.
                Err(_) => in_flight.clear(),
            }
        }
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
    _host: Netns,
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
        Ok(Aardvark { _host: host, client, dir, child, conf })
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

/// Run the DNS benchmark and print a markdown table.
pub fn run(n_names: usize, secs: u64, outstanding: usize) -> Result<()> {
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
    let w = load(&client.name, Ipv4Addr::new(10, 51, 0, 1), names.clone(), secs, outstanding)?;

    let aard = Aardvark::start(&names)?;
    check_answers(&aard.client, "10.52.0.1", "svc0", "10.52.1.0")?;
    let a = load(&aard.client.name, Ipv4Addr::new(10, 52, 0, 1), names, secs, outstanding)?;

    // Churn: queries keep flowing (8 in flight, 200 ms to answer) while
    // 100 endpoints are added and removed, one at a time.
    let churn_secs = 8;
    let cli = client.name.clone();
    let wl = std::thread::spawn(move || load(&cli, Ipv4Addr::new(10, 51, 0, 1), vec!["svc0".into()], churn_secs, 8));
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
    let al = std::thread::spawn(move || load(&cli, Ipv4Addr::new(10, 52, 0, 1), vec!["svc0".into()], churn_secs, 8));
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

    println!("| server | names | outstanding | seconds | sent | answered | queries/s | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (who, l) in [("weft (embedded, hickory)", &w), ("aardvark-dns 1.4 (Debian)", &a)] {
        println!(
            "| {who} | {n_names} | {outstanding} | {secs} | {} | {} | {:.0} | {:.0} µs | {:.0} µs |",
            l.sent,
            l.answered,
            l.qps,
            l.p50.as_secs_f64() * 1e6,
            l.p99.as_secs_f64() * 1e6
        );
    }
    println!("\nweft / aardvark-dns throughput: {:.2}x", w.qps / a.qps.max(1.0));
    println!("\nUnder churn (100 adds + 100 removes while queries flow, {churn_secs} s, 8 in flight):\n");
    println!("| server | how a change is applied | changes took | sent | answered | lost | answers afterwards |");
    println!("|---|---|---:|---:|---:|---:|---|");
    println!(
        "| weft | attach + detach over gRPC, table updated in place | {:.1} s | {} | {} | {} | {} |",
        weft_churn.as_secs_f64(),
        wc.sent,
        wc.answered,
        wc.sent - wc.answered,
        if weft_alive { "yes" } else { "no" }
    );
    println!(
        "| aardvark-dns 1.4 | config rewritten + SIGHUP, as netavark does | {:.1} s | {} | {} | {} | {} |",
        aard_churn.as_secs_f64(),
        ac.sent,
        ac.answered,
        ac.sent - ac.answered,
        if aard_alive { "yes" } else { "no" }
    );
    Ok(())
}
