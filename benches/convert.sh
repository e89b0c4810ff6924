#!/usr/bin/env bash
# Benchmark: `imgsan convert` against `qemu-img convert -O raw` on the same images.
#
# Builds a 5 GiB disk holding an ext4 filesystem with about 1.5 GiB of real files
# (a copy of /usr/share and /usr/bin, which compress well, plus 256 MiB of random
# bytes, which do not), as (a) a zlib-compressed qcow2 and (b) an uncompressed
# qcow2. Then, with a warm page cache, times both tools with hyperfine and
# measures their peak memory with /usr/bin/time -v.
#
# Usage: benches/convert.sh [WORKDIR]   (default /var/tmp/imgsan-bench; needs
# about 12 GiB free). Set RUNS to change the number of timed runs (default 5).
# Needs: cargo, qemu-img, mke2fs, hyperfine, /usr/bin/time.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/var/tmp/imgsan-bench}
runs=${RUNS:-5}
mkdir -p "$work"

(cd "$here" && cargo build --release --quiet)
imgsan="$here/target/release/imgsan"

tree="$work/tree"
raw="$work/disk.raw"
if [ ! -f "$raw" ]; then
  echo "== building the source tree and disk (once)"
  rm -rf "$tree"
  mkdir -p "$tree"
  cp -a /usr/share "$tree/share"
  cp -a /usr/bin "$tree/bin"
  head -c $((256 << 20)) /dev/urandom > "$tree/random.bin"
  du -sh "$tree"
  mke2fs -q -t ext4 -d "$tree" -F "$raw" 5G
  rm -rf "$tree"
fi
[ -f "$work/zlib.qcow2" ] || qemu-img convert -c -O qcow2 "$raw" "$work/zlib.qcow2"
[ -f "$work/plain.qcow2" ] || qemu-img convert -O qcow2 "$raw" "$work/plain.qcow2"
ls -ls "$work"/*.qcow2
qemu-img info "$work/zlib.qcow2" | grep -E 'virtual size|disk size'

out="$work/out"
mkdir -p "$out"
for img in zlib plain; do
  src="$work/$img.qcow2"
  cat "$src" > /dev/null # warm the page cache
  echo
  echo "== $img.qcow2: wall time (hyperfine, warm cache, $runs runs)"
  # Every run starts from flushed dirty pages, so one tool's writeback does not
  # land on the other's clock. imgsan fsyncs its output; qemu-img does not, so
  # qemu-img is also timed with a sync of its output added.
  hyperfine --warmup 1 --runs "$runs" --prepare "sync" \
    -n "imgsan convert" "$imgsan convert -q $src -o $out/imgsan.raw" \
    -n "qemu-img convert -O raw" "qemu-img convert -O raw $src $out/qemu.raw" \
    -n "qemu-img convert -O raw + sync" "qemu-img convert -O raw $src $out/qemu.raw && sync $out/qemu.raw"
  cmp "$out/imgsan.raw" "$out/qemu.raw" && echo "outputs identical"
  echo "== $img.qcow2: peak memory (/usr/bin/time -v)"
  for cmd in "$imgsan convert -q $src -o $out/imgsan.raw" "qemu-img convert -O raw $src $out/qemu.raw"; do
    sync
    /usr/bin/time -v $cmd 2>&1 | awk -v c="${cmd%% *}" '/Maximum resident/ {print c ": " $6 " KiB peak RSS"} /Elapsed/ {print c ": " $8 " elapsed"}'
  done
  du -k "$out/imgsan.raw" "$out/qemu.raw"
done
rm -rf "$out"
