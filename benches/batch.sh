#!/usr/bin/env bash
# imgsan batch throughput: 8 small images, with --jobs 1, --jobs 2, and the GNU
# parallel one-liner (one `--index` run per image, then `--summary`).
#
# Builds (once, cached in $WORK) one GPT disk whose ext4 root holds a small
# Ubuntu-like guest and $DATA_MIB MiB of incompressible files, copies it to 8
# images (half RAW, half QCOW2) and writes a manifest with `force: true`. Each way
# runs on a fresh output folder under /usr/bin/time -v; the script prints the
# images per minute and the peak memory (the largest process's RSS).
#
# Knobs (environment): WORK (default /var/tmp/imgsan-batch-bench), DATA_MIB (64).
# Needs: mke2fs, sgdisk, qemu-img, parallel, /usr/bin/time (.ci/setup.sh).
# Takes about a minute on a 2-core machine, plus the release build.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-/var/tmp/imgsan-batch-bench}
DATA_MIB=${DATA_MIB:-64}
N=8

for tool in mke2fs sgdisk qemu-img parallel /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run .ci/setup.sh" >&2; exit 1; }
done

cargo build --release --quiet
IMGSAN=${CARGO_TARGET_DIR:-$PWD/target}/release/imgsan

mkdir -p "$WORK/images"
BASE=$WORK/base-${DATA_MIB}m.raw
if [ ! -e "$BASE" ]; then
  echo "== building $BASE"
  TREE=$WORK/tree
  rm -rf "$TREE"
  mkdir -p "$TREE"/{etc/ssh,home/alice,root,tmp,var/log,usr/bin,opt/data}
  printf 'NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\nVERSION_CODENAME=jammy\n' > "$TREE/etc/os-release"
  printf 'LABEL=root / ext4 defaults 0 1\n' > "$TREE/etc/fstab"
  printf 'root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n' > "$TREE/etc/passwd"
  printf 'root:x:0:\nalice:x:1000:\n' > "$TREE/etc/group"
  printf 'PermitRootLogin no\n' > "$TREE/etc/ssh/sshd_config"
  echo 'secret history' > "$TREE/home/alice/.bash_history"
  echo 'boot log' > "$TREE/var/log/syslog"
  for i in $(seq 1 "$DATA_MIB"); do
    head -c 1M /dev/urandom > "$TREE/opt/data/f$i"
  done
  SIZE_MIB=$((DATA_MIB * 2 + 64))
  dd if=/dev/zero of="$BASE.part" bs=1M count=0 seek=$((SIZE_MIB - 2)) status=none
  mke2fs -q -t ext4 -L root -d "$TREE" "$BASE.part"
  dd if=/dev/zero of="$BASE" bs=1M count=0 seek="$SIZE_MIB" status=none
  sgdisk -q -n 1:2048:0 -t 1:8300 "$BASE"
  dd if="$BASE.part" of="$BASE" bs=1M seek=1 conv=notrunc,sparse status=none
  rm -f "$BASE.part"
  rm -rf "$TREE"
fi

M=$WORK/batch.yaml
{
  printf 'kind: batch\ndefaults:\n  description: Ubuntu 22.04 with the workshop tools, for the batch benchmark\n  force: true\nimages:\n'
  for i in $(seq 0 $((N - 1))); do
    if [ $((i % 2)) = 0 ]; then img=images/disk$i.raw; else img=images/disk$i.qcow2; fi
    if [ ! -e "$WORK/$img" ]; then
      if [ $((i % 2)) = 0 ]; then cp --sparse=always "$BASE" "$WORK/$img"; else qemu-img convert -O qcow2 "$BASE" "$WORK/$img"; fi
    fi
    printf '  - image: %s\n    name: Bench-Image-%d\n' "$img" "$i"
  done
} > "$M"

measure() { # label, command...
  local label=$1; shift
  local out=$WORK/out-$label
  rm -rf "$out"
  local log=$WORK/time-$label.log
  local t0 t1
  t0=$(date +%s.%N)
  OUT=$out /usr/bin/time -v "$@" > /dev/null 2> "$log" || true
  t1=$(date +%s.%N)
  local rss
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log" | tail -1)
  python3 - "$label" "$t0" "$t1" "$rss" "$N" <<'EOF'
import sys
label, t0, t1, rss, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
wall = t1 - t0
print(f"{label:>10}: {wall:6.1f} s, {n * 60 / wall:6.1f} images/min, peak RSS {rss / 1024:.0f} MiB")
EOF
}

export IMGSAN M N
measure jobs1 bash -c '"$IMGSAN" batch "$M" -o "$OUT" --jobs 1 --quiet'
measure jobs2 bash -c '"$IMGSAN" batch "$M" -o "$OUT" --jobs 2 --quiet'
measure parallel bash -c 'seq 0 $((N - 1)) | parallel -j2 "$IMGSAN" batch "$M" -o "$OUT" --index {} --quiet --threads 1; "$IMGSAN" batch "$M" -o "$OUT" --summary --quiet'
