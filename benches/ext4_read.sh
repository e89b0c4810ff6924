#!/usr/bin/env bash
# Benchmark: read the whole Tree (metadata only) of an ext4 image holding 500k
# files, with the ext4_tree_stats example. Goal: under 2 s and 300 MiB peak.
#
# The image is made once (mke2fs -d from a generated directory: 1000
# directories in two levels, 500 files each, mostly empty, some small, a few
# symlinks) and cached under target/bench-cache; delete it to rebuild.
#
# Usage: benches/ext4_read.sh            (FILES=500000 by default)
#        FILES=100000 benches/ext4_read.sh
# Needs: mke2fs (e2fsprogs), hyperfine, /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=${FILES:-500000}
PER_DIR=500
DIRS=$(( (FILES + PER_DIR - 1) / PER_DIR ))
CACHE=target/bench-cache
IMG=$CACHE/ext4-$FILES.img
mkdir -p "$CACHE"

if [ ! -f "$IMG" ]; then
  SRC=$CACHE/src-$FILES
  rm -rf "$SRC"
  mkdir -p "$SRC"
  echo "generating $FILES files in $DIRS directories under $SRC" >&2
  made=0
  for ((d = 0; d < DIRS; d++)); do
    dir=$SRC/top$((d / 100))/dir$d
    mkdir -p "$dir"
    n=$(( FILES - made < PER_DIR ? FILES - made : PER_DIR ))
    # Empty files in bulk (one touch per directory), then a few with content
    # and a symlink.
    (cd "$dir" && eval "touch f{1..$n}")
    for i in 1 2 3 4 5; do printf 'file %d of directory %d\n' "$i" "$d" > "$dir/f$i"; done
    ln -sf "f1" "$dir/link"
    made=$((made + n))
  done
  inodes=$(( FILES + DIRS * 2 + 50000 ))
  echo "mke2fs -d (this takes a while)" >&2
  mke2fs -q -F -t ext4 -N "$inodes" -d "$SRC" "$IMG.tmp" 8G
  mv "$IMG.tmp" "$IMG"
  rm -rf "$SRC"
fi

cargo build --release --example ext4_tree_stats
BIN=target/release/examples/ext4_tree_stats

"$BIN" "$IMG"
hyperfine --warmup 1 --runs 10 "$BIN $IMG"
/usr/bin/time -v "$BIN" "$IMG" 2>&1 >/dev/null | grep -E 'Maximum resident set size|Elapsed \(wall clock\)'
