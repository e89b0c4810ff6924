#!/usr/bin/env bash
# Seed fuzz/corpus/lvm with LVM2 PV heads made by lvm2 itself (pvcreate,
# vgcreate, vgcfgrestore with a linear, a two-segment and a thin-pool LV), cut
# to their first 64 KiB (label and metadata area), and with the metadata texts
# vgcfgbackup writes. Needs root and a free loop device; restricts lvm2 to that
# device (--devices) so other loop devices are not touched.
# Usage: fuzz/seeds/lvm.sh [DIR]   (default fuzz/corpus/lvm)
set -euo pipefail
out=${1:-$(dirname "$0")/../corpus/lvm}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
dev=
cleanup() { [ -n "$dev" ] && losetup -d "$dev"; rm -rf "$work"; }
trap cleanup EXIT
truncate -s 16M "$work/pv.img"
dev=$(losetup -f --show "$work/pv.img")
export LVM_SUPPRESS_FD_WARNINGS=1
cfg='backup { backup = 0 archive = 0 }'
pvcreate -q -ff -y --config "$cfg" --devices "$dev" --metadatasize 32k --dataalignment 64k "$dev" >/dev/null
vgcreate -q --config "$cfg" --devices "$dev" -s 1m fuzzvg "$dev" >/dev/null
vgcfgbackup -q --devices "$dev" -f "$work/vg.txt" fuzzvg >/dev/null
cp "$work/vg.txt" "$out/text-empty"
head -c 65536 "$work/pv.img" > "$out/pv-empty"
lv() { # name type count pe
  printf '%s {\nid = "aaaaaa-bbbb-cccc-dddd-eeee-ffff-%06d"\nstatus = ["READ", "WRITE", "VISIBLE"]\nflags = []\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = %s\ntype = "%s"\nstripe_count = 1\nstripes = ["pv0", %s]\n}\n}\n' "$1" "$4" "$3" "$2" "$4"
}
variant() { # name body
  python3 - "$work/vg.txt" "$work/$1.txt" "$2" <<'PY'
import sys
t = open(sys.argv[1]).read()
i = t.rindex('}')
open(sys.argv[2], 'w').write(t[:i] + "logical_volumes {\n" + sys.argv[3] + "}\n" + t[i:])
PY
  vgcfgrestore -q --devices "$dev" -f "$work/$1.txt" fuzzvg >/dev/null 2>&1 || true
  cp "$work/$1.txt" "$out/text-$1"
  head -c 65536 "$work/pv.img" > "$out/pv-$1"
}
variant linear "$(lv root striped 4 0)$(lv swap striped 2 4)"
variant thin "$(lv pool thin-pool 4 0)"
ls -l "$out"
