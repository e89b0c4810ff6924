#!/usr/bin/env bash
# Benchmark: repack a 5 GiB ext4 filesystem holding ~1.6 GiB in ~50k files with
# `imgsan repack src.img -o out.img` (read the tree with the ext4 reader, build a
# fresh filesystem, copy the data), and compare with `e2image -ra -p` of the same
# filesystem (it copies only the used blocks: the I/O floor). Both read warm data
# (page cache) and write a sparse RAW file on the same filesystem. Peak memory of
# the repack comes from /usr/bin/time -v.
#
# With PLACEMENT=1, also compares directory placement (packed against spread) with
# the builder example (examples/ext4_build.rs), which builds from the host tree.
#
# Usage: benches/ext4_build.sh [WORKDIR]   (needs ~10 GiB free; hyperfine, e2fsprogs,
# python3, /usr/bin/time)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /var/tmp/ext4bench.XXXXXX)}
mkdir -p "$work"
host=$work/tree
src=$work/src.img

for t in hyperfine e2image mke2fs e2fsck python3 /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }
done

if [ ! -e "$host/.done" ]; then
  rm -rf "$host"
  # 49 000 small files (1-16 KiB) in 490 directories under ten top-level ones,
  # 1 000 larger ones (0.5-2 MiB), a few sparse files: ~1.6 GiB, ~50k inodes.
  python3 - "$host" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(1)
blob = os.urandom(4 << 20)
def data(n):
    off = rnd.randrange(0, len(blob) - n) if n < len(blob) else 0
    return blob[off:off + n]
tops = ["bin", "boot", "etc", "home", "lib", "opt", "root", "srv", "usr", "var"]
for d in range(490):
    p = os.path.join(root, tops[d % len(tops)], f"lib{d // 49}", f"pkg{d:03}")
    os.makedirs(p, exist_ok=True)
    for i in range(100):
        with open(os.path.join(p, f"file{i:03}.so"), "wb") as f:
            f.write(data(rnd.randrange(1024, 16384)))
p = os.path.join(root, "var", "big")
os.makedirs(p, exist_ok=True)
for i in range(1000):
    with open(os.path.join(p, f"blob{i:04}"), "wb") as f:
        n = rnd.randrange(512 << 10, 2 << 20)
        while n > 0:
            k = min(n, len(blob))
            f.write(data(k))
            n -= k
for i in range(10):
    with open(os.path.join(root, "var", f"sparse{i}"), "wb") as f:
        f.seek(i << 24)
        f.write(data(65536))
os.makedirs(os.path.join(root, "lost+found"), exist_ok=True)
os.chmod(os.path.join(root, "lost+found"), 0o700)
PY
  touch "$host/.done"
fi
du -sh --apparent-size "$host" | sed 's/^/tree: /'
find "$host" | wc -l | sed 's/^/entries: /'

if [ ! -e "$src" ]; then
  mke2fs -q -F -t ext4 -d "$host" "$src" 5G
fi

cargo build --release --bin imgsan --manifest-path "$here/Cargo.toml" 2>&1 | tail -1
imgsan=$here/target/release/imgsan

# Warm the cache the commands read from.
cat "$src" >/dev/null

hyperfine --warmup 1 --runs 5 \
  --prepare "rm -f $work/floor.img $work/out.img" \
  -n "e2image -ra -p (floor)" "e2image -ra -p $src $work/floor.img" \
  -n "imgsan repack" "$imgsan --quiet repack $src -o $work/out.img" \
  --export-markdown "$work/results.md" --export-json "$work/results.json"
python3 - "$work/results.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
floor, ours = r["e2image -ra -p (floor)"], r["imgsan repack"]
print(f"ratio repack/floor: {ours['mean'] / floor['mean']:.2f}")
PY

echo "--- peak memory of the repack"
rm -f "$work/out.img"
/usr/bin/time -v "$imgsan" repack "$src" -o "$work/out.img" 2>&1 |
  grep -E "Maximum resident|Elapsed|imgsan:"
rm -f "$work/floor.img"
e2image -ra -p "$src" "$work/floor.img"
echo "--- allocated on disk (floor, repack)"
du -h "$work/floor.img" "$work/out.img"
e2fsck -fn "$work/out.img" | tail -1

[ "${PLACEMENT:-0}" = 1 ] || exit 0

cargo build --release --example ext4_build --manifest-path "$here/Cargo.toml" 2>&1 | tail -1
bin=$here/target/release/examples/ext4_build
find "$host" -type f -exec cat {} + >/dev/null

# Directory placement: packed (the default) against Orlov-like spreading of
# top-level directories. Build time, e2fsck time, space, fragmentation as e2fsck
# counts it, groups left untouched (BLOCK_UNINIT), and the --shrink size.
echo "--- placement: packed vs spread"
hyperfine --warmup 1 --runs 3 \
  --prepare "rm -f $work/packed.img $work/spread.img" \
  -n "packed" "$bin $src $host $work/packed.img" \
  -n "spread" "$bin $src $host $work/spread.img --spread"
$bin "$src" "$host" "$work/packed.img"
$bin "$src" "$host" "$work/spread.img" --spread
hyperfine --runs 3 -n "e2fsck packed" "e2fsck -fn $work/packed.img" -n "e2fsck spread" "e2fsck -fn $work/spread.img"
for p in packed spread; do
  echo "$p: $(e2fsck -fn "$work/$p.img" | tail -1)"
  echo "$p: $(du -h "$work/$p.img" | cut -f1) allocated, $(dumpe2fs "$work/$p.img" 2>/dev/null | grep -c BLOCK_UNINIT) BLOCK_UNINIT groups"
done
$bin "$src" "$host" "$work/shrunk-packed.img" --shrink
$bin "$src" "$host" "$work/shrunk-spread.img" --shrink --spread
ls -l "$work"/shrunk-*.img
for p in packed spread; do echo "shrunk $p: $(e2fsck -fn "$work/shrunk-$p.img" | tail -1)"; done
