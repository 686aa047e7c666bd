#!/usr/bin/env bash
# Install weft from a checkout, after the build (`cargo build --release
# --workspace --bins && cargo xtask build-policies`, or what `cargo xtask
# test` built): weftd and weft in /usr/local/bin, the CNI plugin as
# /opt/cni/bin/weft, the built-in components in /usr/local/lib/weft/modules,
# weftd.service in /etc/systemd/system, /etc/weft/weftd.toml (kept if it
# exists) and an example conflist and the docs in /usr/local/share.
#
#   scripts/install.sh [--root DIR] [--from target/release]
#   scripts/install.sh --uninstall [--root DIR]
#
# --root installs under DIR instead of / (a staging root). --from picks the
# build; default: the newer of target/release and target/debug. The
# uninstall removes what the install wrote (a changed weftd.toml stays).
set -euo pipefail
cd "$(dirname "$0")/.."
root=""
from=""
uninstall=false
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --from) from="${2:?--from needs a directory}"; shift 2 ;;
    --uninstall) uninstall=true; shift ;;
    *) echo "install.sh: unknown argument $1 (see the header of scripts/install.sh)" >&2; exit 2 ;;
  esac
done
manifest="$root/usr/local/share/weft/installed-files"
config="$root/etc/weft/weftd.toml"

if $uninstall; then
  if [ ! -f "$manifest" ]; then
    echo "install.sh: nothing to uninstall ($manifest is missing)" >&2
    exit 1
  fi
  while read -r f; do rm -f "$root$f"; done < "$manifest"
  if [ -f "$config" ]; then
    if cmp -s "$config" scripts/install/weftd.toml; then
      rm -f "$config"
    else
      echo "install.sh: kept $config (changed since the install)"
    fi
  fi
  rm -f "$manifest"
  for d in /usr/local/lib/weft/modules /usr/local/lib/weft /usr/local/share/weft /usr/local/share/doc/weft /etc/weft; do
    rmdir "$root$d" 2>/dev/null || true
  done
  echo "weft uninstalled"
  exit 0
fi

if [ -z "$from" ]; then
  from=target/debug
  if [ -x target/release/weftd ] && { [ ! -x target/debug/weftd ] || [ target/release/weftd -nt target/debug/weftd ]; }; then
    from=target/release
  fi
fi
for b in weftd weft weft-cni; do
  [ -x "$from/$b" ] || { echo "install.sh: $from/$b is missing: build first (cargo build --release --workspace --bins)" >&2; exit 1; }
done
ls target/modules/*.wasm >/dev/null 2>&1 || { echo "install.sh: no components in target/modules: run cargo xtask build-policies" >&2; exit 1; }

files=()
put() { # put MODE SOURCE DEST
  install -D -m "$1" "$2" "$root$3"
  files+=("$3")
}
put 0755 "$from/weftd" /usr/local/bin/weftd
put 0755 "$from/weft" /usr/local/bin/weft
put 0755 "$from/weft-cni" /opt/cni/bin/weft
for m in target/modules/*.wasm; do
  put 0644 "$m" "/usr/local/lib/weft/modules/$(basename "$m")"
done
put 0644 scripts/install/weftd.service /etc/systemd/system/weftd.service
put 0644 scripts/install/10-weft.conflist /usr/local/share/weft/10-weft.conflist
for d in README.md docs/*.md; do
  put 0644 "$d" "/usr/local/share/doc/weft/$(basename "$d")"
done
if [ -f "$config" ]; then
  echo "install.sh: kept the existing $config"
else
  install -D -m 0644 scripts/install/weftd.toml "$config"
fi
printf '%s\n' "${files[@]}" | install -D -m 0644 /dev/stdin "$manifest"
echo "weft installed from $from${root:+ under $root}: ${#files[@]} files"
echo "start it: systemctl enable --now weftd   (or: weftd --config /etc/weft/weftd.toml)"
