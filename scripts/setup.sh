#!/usr/bin/env bash
# Installs what weft needs on a fresh Debian machine (run as root):
# kernel tools (iproute2, nftables, ping), protoc for the gRPC API, openssl
# (the README's certificates), etcd (cluster mode), podman, containerd and
# runc (the CNI plugin's end-to-end tests), and the
# Rust target the Wasm components are built for. Idempotent and quick when
# everything is already there.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v ping >/dev/null || need+=(iputils-ping)
command -v python3 >/dev/null || need+=(python3)
command -v dig >/dev/null || need+=(dnsutils)
# The README's tenant walk-through makes its certificates with openssl.
command -v openssl >/dev/null || need+=(openssl)
# The peers the benchmark compares against, and its traffic generator.
[ -x /usr/lib/podman/netavark ] || need+=(netavark)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iperf3 >/dev/null || need+=(iperf3)
# Cluster mode's shared store: the tests run their own etcd members (the
# package's own service, if the machine starts one, is not used).
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
# The container engines the CNI plugin is tested under (each test gives them
# their own configuration, storage and sockets), and the busybox the test
# containers run.
command -v podman >/dev/null || need+=(podman)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
for t in wasm32-unknown-unknown wasm32-wasip2; do
  if ! rustup target list --installed | grep -qx "$t"; then
    echo "setup: adding the $t target"
    rustup target add "$t"
  fi
done
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
# Toolchains of the Python and JavaScript example components.
if ! command -v componentize-py >/dev/null || [ "$(componentize-py --version 2>/dev/null)" != "componentize-py 0.25.1" ]; then
  echo "setup: installing componentize-py"
  python3 -m pip install -q componentize-py==0.25.1 2>/dev/null ||
    python3 -m pip install -q --break-system-packages componentize-py==0.25.1
fi
# grpc-python, a stock client the Unix socket is tested with.
if ! python3 -c 'import grpc' 2>/dev/null; then
  echo "setup: installing grpcio"
  python3 -m pip install -q grpcio==1.85.3 2>/dev/null ||
    python3 -m pip install -q --break-system-packages grpcio==1.85.3
fi
if ! command -v npm >/dev/null; then
  echo "setup: installing nodejs and npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$root/policies/examples/js-ipam/node_modules/.bin/componentize-js" ]; then
  echo "setup: installing componentize-js"
  # `npm ci` refuses this lock file (npm leaves the versions of optional
  # per-platform packages out of it); install from it without rewriting it.
  (cd "$root/policies/examples/js-ipam" && npm install --no-save --silent --no-audit --no-fund)
fi
echo "setup: ok"
