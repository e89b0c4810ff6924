#!/usr/bin/env bash
# Seed fuzz/corpus/fast_commit with fast-commit areas (1 KiB blocks) written
# here by a small Python encoder of the on-disk records (fs/ext4/fast_commit.h):
# a HEAD, inode, range, link and unlink records and a TAIL whose crc32c covers
# them, in one and in two commits, the second spilling into a second block.
# Nothing third-party is committed. Idempotent.
# Usage: fuzz/seeds/fast_commit.sh [DIR]   (default fuzz/corpus/fast_commit)
set -euo pipefail
dir=${1:-$(dirname "$0")/../corpus/fast_commit}
mkdir -p "$dir"
python3 - "$dir" <<'PY'
import struct, sys, os

def crc32c(crc, data):
    # Castagnoli polynomial, reflected, no final inversion (the kernel's crc32c
    # as ext4 seeds it with 0 here).
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc

def tl(tag, val):
    return struct.pack('<HH', tag, len(val)) + val

def inode(mode, size, links, flags, extra=32):
    b = bytearray(128 + extra)
    struct.pack_into('<HHI', b, 0, mode, 0, size)
    struct.pack_into('<H', b, 0x1A, links)
    struct.pack_into('<I', b, 0x20, flags)
    struct.pack_into('<H', b, 0x80, extra)
    return bytes(b)

def commit(tid, body):
    out = bytearray()
    out += tl(9, struct.pack('<II', 0, tid))
    out += body
    crc = crc32c(0, bytes(out) + struct.pack('<HHI', 8, 8, tid))
    out += tl(8, struct.pack('<II', tid, crc))
    return bytes(out)

def pad_block(b, bs=1024):
    left = bs - len(b) % bs
    if left >= 4:
        b += tl(7, bytes(left - 4))
    else:
        b += bytes(left)
    return b

tid = 7
ext = lambda ino, lblk, ln, pblk: tl(1, struct.pack('<IIHHI', ino, lblk, ln, pblk >> 32, pblk & 0xffffffff))
body = (tl(6, struct.pack('<I', 12) + inode(0o100644, 8192, 1, 0x80000))
        + ext(12, 0, 2, 1107)
        + tl(3, struct.pack('<II', 2, 12) + b'new')
        + tl(2, struct.pack('<III', 13, 4, 8))
        + ext(13, 20, 32768 + 3, 1200))
one = pad_block(bytearray(commit(tid, body)))
with open(os.path.join(sys.argv[1], 'one-commit.bin'), 'wb') as f:
    f.write(one)
# The kernel starts a commit in a new block when a record would not fit; here
# the second commit simply begins in the next block.
second = (tl(5, struct.pack('<II', 2, 12) + b'new')
          + tl(4, struct.pack('<II', 11, 12) + b'moved')
          + tl(6, struct.pack('<I', 14) + inode(0o40755, 1024, 2, 0x80000)))
two = one + pad_block(bytearray(commit(tid, second)))
with open(os.path.join(sys.argv[1], 'two-commits.bin'), 'wb') as f:
    f.write(two)
PY
