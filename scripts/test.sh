#!/usr/bin/env bash
# The whole test suite (run as root: the end-to-end tests make network
# namespaces). Formatting, lints, the Wasm components, unit tests (model,
# plan golden files, store, Wasm host, guest arithmetic) and the end-to-end
# tests that run weftd in namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
cargo fmt --all -- --check
(cd policies && cargo fmt --all -- --check)
cargo xtask build-policies
cargo clippy --workspace --all-targets --quiet -- -D warnings
(cd policies && cargo test --lib --quiet)
cargo xtask test
# Benchmarks are not tests; a quick smoke run (N = 10, one short iperf3 run
# per scenario) keeps the harness and the peers' invocations working.
target/debug/weft-bench attach --sizes 10 --out target/bench-smoke
target/debug/weft-bench firewall --runs 1 --secs 1 --out target/bench-smoke
target/debug/weft-bench neighbours --attaches 10 --out target/bench-smoke
target/debug/weft-bench repair --trials 2 --out target/bench-smoke
target/debug/weft-bench overlay --attaches 5 --secs 1 --nodes 4 --out target/bench-smoke
target/debug/weft-bench dns --names 10 --secs 1 --outstanding 16 --out target/bench-smoke
target/debug/weft-bench policy --runs 1 --secs 1 --out target/bench-smoke
