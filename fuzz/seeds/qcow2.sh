#!/usr/bin/env bash
# Makes a seed corpus for the qcow2 fuzz target with qemu-img and qemu-io: small
# images of each kind the reader handles (v2, v3, 512 B and 4 KiB clusters,
# extended L2, zero clusters, zlib and zstd compression). Idempotent.
# Usage: fuzz/seeds/qcow2.sh [DIR]   (default fuzz/corpus/qcow2)
set -euo pipefail
dir=${1:-$(dirname "$0")/../corpus/qcow2}
mkdir -p "$dir"
cd "$dir"
io() { qemu-io -f "$1" -c "write -P 0x11 0 8k" -c "write -z 64k 4k" -c "write -P 3 100k 1k" "$2" >/dev/null; }
for opts in compat=0.10,cluster_size=512 cluster_size=512 cluster_size=4k \
  extended_l2=on,cluster_size=16k cluster_size=4k,lazy_refcounts=on; do
  f="seed-${opts//[=,]/-}.qcow2"
  [ -f "$f" ] && continue
  qemu-img create -q -f qcow2 -o "$opts" "$f" 256k
  io qcow2 "$f"
done
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
truncate -s 256k "$raw"
io raw "$raw"
[ -f seed-zlib.qcow2 ] || qemu-img convert -c -f raw -O qcow2 -o cluster_size=4k "$raw" seed-zlib.qcow2
[ -f seed-zstd.qcow2 ] || qemu-img convert -c -f raw -O qcow2 -o cluster_size=4k,compression_type=zstd "$raw" seed-zstd.qcow2
ls -l
