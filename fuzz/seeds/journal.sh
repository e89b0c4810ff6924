#!/usr/bin/env bash
# Makes a seed corpus for the journal fuzz target: real jbd2 journals written by
# debugfs (1 KiB blocks, 32- and 64-bit block numbers, a revoke), cut to the first
# 128 blocks, with the journal superblock's s_maxlen set to match, so replay walks
# real descriptor, commit and revoke blocks. Idempotent.
# Usage: fuzz/seeds/journal.sh [DIR]   (default fuzz/corpus/journal)
set -euo pipefail
dir=${1:-$(dirname "$0")/../corpus/journal}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c 3072 /dev/zero | tr '\0' 'J' > "$work/data"
for bits in 32 64; do
  out="$dir/journal-$bits.bin"
  [ -f "$out" ] && continue
  img="$work/fs-$bits.img"
  feat='^metadata_csum'
  [ "$bits" = 64 ] && feat="$feat,64bit" || feat="$feat,^64bit"
  mke2fs -q -F -t ext4 -b 1024 -O "$feat" "$img" 8M >/dev/null
  debugfs -w "$img" -f - >/dev/null 2>&1 <<CMDS
jo
jw -b 300,301 $work/data
jc
jo
jw -b 302,303,304 $work/data
jw -r 301
jc
CMDS
  debugfs -R "dump <8> $work/j-$bits" "$img" >/dev/null 2>&1
  head -c $((128 * 1024)) "$work/j-$bits" > "$out"
  # s_maxlen (big-endian u32 at byte 0x10 of the journal superblock) = 128 blocks.
  printf '\x00\x00\x00\x80' | dd of="$out" bs=1 seek=16 conv=notrunc status=none
done
