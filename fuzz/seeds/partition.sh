#!/usr/bin/env bash
# Makes a seed corpus for the partition fuzz target with sfdisk, sgdisk, mkswap,
# mkfs.vfat and mke2fs: small disks with each table kind and a few volumes.
# Idempotent. Usage: fuzz/seeds/partition.sh [DIR]   (default fuzz/corpus/partition)
set -euo pipefail
dir=${1:-$(dirname "$0")/../corpus/partition}
mkdir -p "$dir"
cd "$dir"
make() { [ -f "$1" ] && return 1; truncate -s "$2" "$1"; }
if make gpt.img 128k; then
  sgdisk -n1:34:+16k -t1:ef02 -n2:0:+32k -t2:ef00 -c2:EFI -n3:0:0 -t3:8300 -c3:root gpt.img >/dev/null
fi
if make mbr-logical.img 128k; then
  printf 'label: dos\nstart=1, size=40, type=83\nstart=41, size=200, type=5\nstart=42, size=50, type=83\nstart=93, size=50, type=82\n' \
    | sfdisk -q --no-reread mbr-logical.img >/dev/null
fi
if make swap.img 64k; then mkswap -q -L seedswap swap.img >/dev/null; fi
if make vfat.img 128k; then mkfs.vfat -n SEED vfat.img >/dev/null; fi
if make ext4.img 128k; then mke2fs -q -F -t ext4 -b 1024 -N 16 ext4.img >/dev/null; fi
# Inputs are capped at 128 KiB (-max_len): keep only the first 128 KiB of each.
for f in *.img; do truncate -s '<128k' "$f"; done
