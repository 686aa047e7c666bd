#!/usr/bin/env bash
# The full benchmark run behind docs/BENCHMARKS.md (as root: it makes
# network namespaces). Builds weftd, the CLI and the benchmark in release,
# then compares attach/detach against netavark, the CNI reference plugins
# and the kernel floor for N = 1, 10, 100, 1000, measures per-packet cost
# with iperf3 and what policy costs a new connection, one tenant's attaches
# while another's modules spin, the time to repair each kind of drift,
# cluster-mode convergence, and DNS against aardvark-dns. Results and the
# plots go to docs/bench/.
# Usage: bench/run.sh [SIZES]   (default 1,10,100,1000)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
cargo xtask build-policies
cargo build --release --workspace --bins
sizes="${1:-1,10,100,1000}"
# Before the block below: tee truncates machine.txt, which would make the
# tree look dirty.
rev="$(git describe --always --dirty)"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "kernel: $(uname -r)"
  echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "weft: $rev"
  echo "netavark: $(dpkg-query -W -f '${Version}' netavark)"
  echo "aardvark-dns: $(dpkg-query -W -f '${Version}' aardvark-dns)"
  echo "containernetworking-plugins: $(dpkg-query -W -f '${Version}' containernetworking-plugins)"
  echo "iproute2: $(dpkg-query -W -f '${Version}' iproute2)"
  echo "nftables: $(dpkg-query -W -f '${Version}' nftables)"
  echo "iptables: $(dpkg-query -W -f '${Version}' iptables) ($(readlink -f /usr/sbin/iptables | xargs basename))"
  echo "iperf3: $(dpkg-query -W -f '${Version}' iperf3)"
} | tee docs/bench/machine.txt
# netavark and CNI slow down as their rules pile up (at N = 1,000 a setup
# takes them 150-350 ms): each gets PEER_BUDGET seconds of setups per N,
# and the report marks figures the budget cut short as lower bounds.
target/release/weft-bench attach --sizes "$sizes" --peer-budget "${PEER_BUDGET:-300}" --out docs/bench
target/release/weft-bench firewall --runs 3 --secs 3 --out docs/bench
target/release/weft-bench policy --runs 3 --secs 3 --out docs/bench
target/release/weft-bench neighbours --attaches 200 --out docs/bench
target/release/weft-bench neighbours --attaches 200 --share 16 --out docs/bench
target/release/weft-bench repair --trials 20 --out docs/bench
target/release/weft-bench overlay --attaches 100 --secs 3 --nodes 10 --out docs/bench
target/release/weft-bench dns --names 100 --secs 5 --outstanding 64 --out docs/bench
