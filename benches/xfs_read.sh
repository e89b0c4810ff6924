#!/usr/bin/env bash
# Benchmark: read the whole Tree (metadata only) of an XFS image holding 500k
# files, with the xfs_tree_stats example. Goal: under 1 s and 300 MiB peak.
#
# The image is made once by the kernel (mkfs.xfs, mount -o loop, 1000
# directories in two levels, 500 files each, mostly empty, some small, each
# with an SELinux label, a few symlinks; unmount) and cached under
# target/bench-cache; delete it to rebuild. Needs root and loop devices.
#
# Usage: benches/xfs_read.sh            (FILES=500000 by default)
#        FILES=100000 benches/xfs_read.sh
# Needs: xfsprogs, setfattr (attr), hyperfine, /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=${FILES:-500000}
PER_DIR=500
DIRS=$(( (FILES + PER_DIR - 1) / PER_DIR ))
CACHE=target/bench-cache
IMG=$CACHE/xfs-$FILES.img
mkdir -p "$CACHE"

if [ ! -f "$IMG" ]; then
  rm -f "$IMG.tmp"
  truncate -s 8G "$IMG.tmp"
  mkfs.xfs -q -f -m crc=1,finobt=1,reflink=1,bigtime=1,inobtcount=1 "$IMG.tmp"
  MNT=$(mktemp -d)
  mount -o loop "$IMG.tmp" "$MNT"
  trap 'umount "$MNT" 2>/dev/null; rmdir "$MNT"' EXIT
  echo "generating $FILES files in $DIRS directories" >&2
  made=0
  for ((d = 0; d < DIRS; d++)); do
    dir=$MNT/top$((d / 100))/dir$d
    mkdir -p "$dir"
    n=$(( FILES - made < PER_DIR ? FILES - made : PER_DIR ))
    (cd "$dir" && eval "touch f{1..$n}")
    for i in 1 2 3 4 5; do printf 'file %d of directory %d\n' "$i" "$d" > "$dir/f$i"; done
    ln -sf f1 "$dir/link"
    (cd "$dir" && setfattr -n security.selinux -v system_u:object_r:usr_t:s0 f*)
    made=$((made + n))
  done
  umount "$MNT"
  rmdir "$MNT"
  trap - EXIT
  mv "$IMG.tmp" "$IMG"
fi

cargo build --release --example xfs_tree_stats
BIN=target/release/examples/xfs_tree_stats

"$BIN" "$IMG"
hyperfine --warmup 1 --runs 10 "$BIN $IMG"
/usr/bin/time -v "$BIN" "$IMG" 2>&1 >/dev/null | grep -E 'Maximum resident set size|Elapsed \(wall clock\)'
