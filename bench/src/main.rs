//! weft's benchmarks, run side by side with peers in fresh network
//! namespaces on this machine (nothing leaves it). Build weftd in the same
//! profile first (`cargo build --release --workspace --bins`); `bench/run.sh`
//! does all of it.
//!
//! - `weft-bench attach [--sizes 1,10,100,1000] [--peer-budget SECS] [--out DIR]`:
//!   attach and detach latency of weft (gRPC, CLI, 32 concurrent clients)
//!   against netavark, the CNI reference chain (each stops setting up
//!   containers after SECS per N) and the kernel floor; firewall objects;
//!   weftd's RSS and CPU. Writes `DIR/attach.md` and
//!   `DIR/attach-latency.svg`.
//! - `weft-bench firewall [--runs 3] [--secs 3] [--out DIR]`: iperf3 between
//!   two containers with 0 / 10,000 published ports and 0 / 1,000 policy
//!   rules. Writes `DIR/firewall.md`.
//! - `weft-bench dns [--names 100] [--secs 5] [--outstanding 64] [--out DIR]`:
//!   weft's embedded DNS (its fast path and its general path) against
//!   aardvark-dns and an echo server's floor, then queries lost while names
//!   come and go. Writes `DIR/dns.md`.
//! - `weft-bench policy [--runs 3] [--secs 3] [--out DIR]`: new TCP
//!   connections per second between two containers with no policy, one
//!   rule, and 1,000 rules of each kind in front of it. Writes
//!   `DIR/policy.md`.
//! - `weft-bench neighbours [--attaches 200] [--rounds 3] [--share N] [--out DIR]`:
//!   one tenant's attach latency while another tenant's modules spin to
//!   their deadline, from one client and from 16 at once (`--share`: weftd's
//!   `--tenant-wasm-concurrency`; default weftd's own). Writes
//!   `DIR/neighbours.md` (`neighbours-share-N.md` with `--share`).
//! - `weft-bench repair [--trials 20] [--out DIR]`: time to repair each
//!   kind of drift from kernel notifications. Writes `DIR/repair.md`.
//! - `weft-bench overlay [--attaches 100] [--secs 3] [--nodes 10] [--out DIR]`:
//!   cluster mode on simulated hosts: attach-to-first-ping convergence
//!   across hosts, detach-to-FDB-removal on every node, iperf3 across the
//!   overlay against the underlay, and N nodes joining at once. Writes
//!   `DIR/overlay.md`.

mod attach;
mod conns;
mod dns;
mod firewall;
mod floor;
mod overlay;
mod report;
mod resilience;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: weft-bench attach [--sizes 1,10,100,1000] [--peer-budget SECS] [--out DIR]
       weft-bench firewall [--runs 3] [--secs 3] [--out DIR]
       weft-bench policy [--runs 3] [--secs 3] [--out DIR]
       weft-bench dns [--names 100] [--secs 5] [--outstanding 64] [--out DIR]
       weft-bench neighbours [--attaches 200] [--rounds 3] [--share N] [--out DIR]
       weft-bench repair [--trials 20] [--out DIR]
       weft-bench overlay [--attaches 100] [--secs 3] [--nodes 10] [--out DIR]";

/// A tokio runtime for the benchmark's clients.
pub fn tokio_rt(workers: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?)
}

/// The value after `--name`, if given.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn out_dir(args: &[String]) -> Result<PathBuf> {
    let d = PathBuf::from(flag(args, "--out").unwrap_or_else(|| "docs/bench".into()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> Result<()> {
    let p = dir.join(name);
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    eprintln!("wrote {}", p.display());
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("attach") => {
            let sizes: Vec<usize> = flag(&args, "--sizes")
                .unwrap_or_else(|| "1,10,100,1000".into())
                .split(',')
                .map(|s| s.trim().parse().with_context(|| format!("--sizes: {s:?} is not a number")))
                .collect::<Result<_>>()?;
            if sizes.iter().any(|n| *n == 0 || *n > 10_000) {
                bail!("--sizes: each N must be 1..=10000");
            }
            let budget = flag(&args, "--peer-budget")
                .map_or(Ok(Duration::MAX), |s| s.parse().map(Duration::from_secs))
                .context("--peer-budget")?;
            let out = out_dir(&args)?;
            let (series, res) = attach::run(&sizes, budget)?;
            let md = report::attach_markdown(&series, &res);
            println!("{md}");
            write(&out, "attach.md", &md)?;
            write(&out, "attach-latency.svg", &report::latency_svg(&series, report::Phase::Attach))?;
            write(&out, "detach-latency.svg", &report::latency_svg(&series, report::Phase::Detach))
        }
        Some("firewall") => {
            let runs = flag(&args, "--runs").map_or(Ok(3), |s| s.parse()).context("--runs")?;
            let secs = flag(&args, "--secs").map_or(Ok(3), |s| s.parse()).context("--secs")?;
            let out = out_dir(&args)?;
            let t = firewall::throughput(runs, secs)?;
            let md = report::firewall_markdown(&t);
            println!("{md}");
            write(&out, "firewall.md", &md)
        }
        Some("policy") => {
            let runs = flag(&args, "--runs").map_or(Ok(3), |s| s.parse()).context("--runs")?;
            let secs = flag(&args, "--secs").map_or(Ok(3), |s| s.parse()).context("--secs")?;
            if runs == 0 || secs == 0 {
                bail!("--runs and --secs must be at least 1");
            }
            let out = out_dir(&args)?;
            let md = conns::markdown(&conns::run(runs, secs)?);
            println!("{md}");
            write(&out, "policy.md", &md)
        }
        Some("neighbours") => {
            let n = flag(&args, "--attaches").map_or(Ok(200), |s| s.parse()).context("--attaches")?;
            if n == 0 {
                bail!("--attaches must be at least 1");
            }
            let rounds = flag(&args, "--rounds").map_or(Ok(3), |s| s.parse()).context("--rounds")?;
            if rounds == 0 {
                bail!("--rounds must be at least 1");
            }
            let share = flag(&args, "--share").map(|s| s.parse::<usize>()).transpose().context("--share")?;
            let out = out_dir(&args)?;
            let md = resilience::neighbours_markdown(&resilience::neighbours(n, rounds, share)?);
            println!("{md}");
            match share {
                Some(k) => write(&out, &format!("neighbours-share-{k}.md"), &md),
                None => write(&out, "neighbours.md", &md),
            }
        }
        Some("repair") => {
            let n = flag(&args, "--trials").map_or(Ok(20), |s| s.parse()).context("--trials")?;
            if n == 0 {
                bail!("--trials must be at least 1");
            }
            let out = out_dir(&args)?;
            let md = resilience::repair_markdown(&resilience::repair(n)?);
            println!("{md}");
            write(&out, "repair.md", &md)
        }
        Some("overlay") => {
            let n =
                |name: &str, d: usize| flag(&args, name).map_or(Ok(d), |s| s.parse()).with_context(|| name.to_owned());
            let (attaches, secs, nodes) = (n("--attaches", 100)?, n("--secs", 3)?, n("--nodes", 10)?);
            if attaches == 0 || secs == 0 || !(3..=50).contains(&nodes) {
                bail!("--attaches and --secs must be at least 1, --nodes 3 to 50");
            }
            let out = out_dir(&args)?;
            let md = overlay::markdown(&overlay::run(attaches, secs as u32, nodes)?);
            println!("{md}");
            write(&out, "overlay.md", &md)
        }
        Some("dns") => {
            let n =
                |name: &str, d: usize| flag(&args, name).map_or(Ok(d), |s| s.parse()).with_context(|| name.to_owned());
            let (names, secs, outstanding) = (n("--names", 100)?, n("--secs", 5)?, n("--outstanding", 64)?);
            if !(1..=250).contains(&names) || secs == 0 || !(1..=1024).contains(&outstanding) {
                bail!("--names must be 1 to 250, --secs at least 1, --outstanding 1 to 1024");
            }
            let out = out_dir(&args)?;
            let md = dns::run(names, secs as u64, outstanding)?;
            println!("{md}");
            write(&out, "dns.md", &md)
        }
        _ => bail!("{USAGE}"),
    }
}
