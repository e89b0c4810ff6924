#!/usr/bin/env bash
# Seed fuzz/corpus/ext4 with small ext4 images made by mke2fs -d (not committed:
# the corpus directory is ignored). Each holds a few files of every kind, with
# xattrs, an ACL, long and short symlinks, devices, and a directory big enough
# to span blocks; the variants cover extents, block maps, inline data, 128-byte
# inodes, metadata_csum or not, and one with a journal.
# Usage: fuzz/seeds/ext4.sh [DIR]   (default fuzz/corpus/ext4)
set -euo pipefail
out=${1:-$(dirname "$0")/../corpus/ext4}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/src
mkdir -p "$src/dir/sub" "$src/wide"
printf 'hello\n' > "$src/small"
head -c 5000 /dev/urandom > "$src/dir/blocks"
truncate -s 70000 "$src/dir/sparse"; printf 'tail' >> "$src/dir/sparse"
ln "$src/small" "$src/dir/hardlink"
ln -s small "$src/fast"
ln -s "$(printf 'x%.0s' {1..100})" "$src/dir/slow"
mknod "$src/dir/chr" c 4 70000
mknod "$src/dir/blk" b 8 1
mkfifo "$src/dir/fifo"
for i in $(seq 1 60); do : > "$src/wide/entry-with-a-longer-name-$i"; done
setfattr -n user.note -v "a value" "$src/small"
setfattr -n security.selinux -v "system_u:object_r:etc_t:s0" "$src/dir/blocks"
setfacl -m u:1000:r "$src/dir/blocks"
chown 70000:70001 "$src/dir/sub"

mk() {
  local name=$1 size=$2; shift 2
  mke2fs -q -F -N 128 "$@" -d "$src" "$work/$name.img" "$size" >/dev/null 2>&1
  cp "$work/$name.img" "$out/$name"
}
mk ext4 256K -t ext4 -b 1024 -O ^has_journal
mk ext4-nocsum 256K -t ext4 -b 1024 -O ^has_journal,^metadata_csum
mk ext4-inline 256K -t ext4 -b 1024 -O ^has_journal,inline_data
mk ext4-i128 256K -t ext4 -b 1024 -I 128 -O ^has_journal
mk ext2 256K -t ext2 -b 1024
mk ext4-journal 1200K -t ext4 -b 1024
ls -l "$out"
