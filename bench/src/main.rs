//! weft's benchmarks, run side by side with peers in fresh network
//! namespaces on this machine (nothing leaves it).
//!
//! `cargo run --release -p weft-bench -- dns [NAMES] [SECONDS] [OUTSTANDING]`:
//! queries per second and latency percentiles for local names, weft's
//! embedded DNS against aardvark-dns (Podman's), same names, same client,
//! same load. Build weftd in the same profile first (`cargo build --release`).

mod dns;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("dns") => {
            let n = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
            dns::run(n(1, 100) as usize, n(2, 5), n(3, 64) as usize)
        }
        _ => anyhow::bail!("usage: weft-bench dns [NAMES] [SECONDS] [OUTSTANDING]"),
    }
}
