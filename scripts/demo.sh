#!/usr/bin/env bash
# A first look at weft (run as root). Installs what is needed, builds, starts
# weftd, creates a dual-stack network, attaches two container namespaces and
# shows them talking. Everything runs inside a "host" network namespace
# (weft-demo-host), so your machine's own interfaces and firewall are not
# touched. `scripts/demo.sh down` removes it all.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

RUN=/run/weft-demo
HOST=weft-demo-host
SOCK=$RUN/weft.sock
WEFT="./target/debug/weft --socket $SOCK"

down() {
  if [ -f $RUN/weftd.pid ]; then kill "$(cat $RUN/weftd.pid)" 2>/dev/null || true; fi
  for ns in weft-demo-a weft-demo-b $HOST; do ip netns del $ns 2>/dev/null || true; done
  rm -rf $RUN
  echo "demo removed"
}
if [ "${1:-}" = down ]; then down; exit 0; fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "installing and building"
scripts/setup.sh
cargo xtask build-policies
cargo build --workspace --bins

step "starting weftd in namespace $HOST (socket $SOCK)"
down >/dev/null
mkdir -p $RUN
ip netns add $HOST
ip netns exec $HOST ./target/debug/weftd --socket $SOCK --state-dir $RUN/state >$RUN/weftd.log 2>&1 &
echo $! > $RUN/weftd.pid
for _ in $(seq 100); do [ -S $SOCK ] && break; sleep 0.1; done
[ -S $SOCK ] || { cat $RUN/weftd.log; exit 1; }

step "weft network create demo --subnet 10.89.0.0/24 --subnet fd00:89::/64"
$WEFT network create demo --subnet 10.89.0.0/24 --subnet fd00:89::/64

step "two containers (network namespaces) attached"
ip netns add weft-demo-a
ip netns add weft-demo-b
$WEFT endpoint attach demo --netns /var/run/netns/weft-demo-a --name a
$WEFT endpoint attach demo --netns /var/run/netns/weft-demo-b --name b

step "weft network inspect demo"
$WEFT network inspect demo

step "inside container a"
ip netns exec weft-demo-a ip -br addr
ip netns exec weft-demo-a ip route

step "a -> b (IPv4 and IPv6)"
ip netns exec weft-demo-a ping -c 2 10.89.0.3
ip netns exec weft-demo-a ping -c 2 fd00:89::3

step "a resolves b through weft's DNS (dig @10.89.0.1 b)"
ip netns exec weft-demo-a dig +short @10.89.0.1 b
ip netns exec weft-demo-a dig +short @10.89.0.1 b.demo AAAA

step "weftd is running (pid $(cat $RUN/weftd.pid), log $RUN/weftd.log)"
echo "try:   $WEFT network ls"
echo "       $WEFT endpoint ls -o json"
echo "clean: scripts/demo.sh down"
