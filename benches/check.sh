#!/usr/bin/env bash
# imgsan check against qemu-img convert on the same image.
#
# Builds (once, cached in $WORK) a 6 GiB GPT disk image whose ext4 root holds a small
# Ubuntu-like guest (os-release, fstab, accounts, the host's real dpkg status file,
# sshd and python) and 20,000 files of incompressible data (2 GiB by default), and
# converts it to QCOW2. Then hyperfine times:
#   imgsan check IMAGE ...            (reads metadata and a few files)
#   qemu-img convert -O raw IMAGE OUT (reads and writes every allocated byte)
# and /usr/bin/time -v reports imgsan's peak memory.
#
# Knobs (environment): WORK (default /var/tmp/imgsan-check-bench), FILES (20000),
# DATA_MIB (2048), SIZE_MIB (6144), FORMAT (qcow2 or raw), RUNS (5).
# Needs: mke2fs, sgdisk, qemu-img, hyperfine, python3, /usr/bin/time (.ci/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-/var/tmp/imgsan-check-bench}
FILES=${FILES:-20000}
DATA_MIB=${DATA_MIB:-2048}
SIZE_MIB=${SIZE_MIB:-6144}
FORMAT=${FORMAT:-qcow2}
RUNS=${RUNS:-5}

for tool in mke2fs sgdisk qemu-img hyperfine python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run .ci/setup.sh" >&2; exit 1; }
done

cargo build --release --quiet
IMGSAN=${CARGO_TARGET_DIR:-$PWD/target}/release/imgsan

mkdir -p "$WORK"
RAW=$WORK/disk-${FILES}f-${DATA_MIB}m.raw
IMG=$RAW
[ "$FORMAT" = qcow2 ] && IMG=${RAW%.raw}.qcow2

if [ ! -e "$RAW" ]; then
  echo "== building $RAW: $FILES files, $DATA_MIB MiB of data, $SIZE_MIB MiB disk"
  TREE=$WORK/tree
  rm -rf "$TREE"
  UUID=6f1c2b9e-4d1a-4c55-9a57-3c1f0e5b7d21
  python3 - "$TREE" "$FILES" "$DATA_MIB" "$UUID" <<'EOF'
import os, random, shutil, sys
root, nfiles, data_mib, uuid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rnd = random.Random(20240601)

def put(path, data, mode=0o644):
    p = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(p, mode)

put("/etc/os-release", 'NAME="Ubuntu"\nVERSION="22.04.4 LTS (Jammy Jellyfish)"\nID=ubuntu\n'
    'ID_LIKE=debian\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\nVERSION_ID="22.04"\n')
put("/etc/fstab", f"UUID={uuid}\t/\text4\tdefaults\t0 1\n")
put("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nalice:x:1001:1001::/home/alice:/bin/bash\n")
put("/etc/group", "root:x:0:\nalice:x:1001:\n")
put("/etc/shadow", "root:*:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\n", 0o640)
put("/etc/ssh/sshd_config", "PermitRootLogin prohibit-password\nPasswordAuthentication no\n")
put("/usr/sbin/sshd", b"\x7fELF" + os.urandom(64 << 10), 0o755)
put("/usr/bin/python3", b"\x7fELF" + os.urandom(64 << 10), 0o755)
status = "/var/lib/dpkg/status"
if os.path.exists(status):
    put(status, open(status, "rb").read())
put("/etc/atmo/post-scripts.d/10-hello.sh", "#!/bin/bash\necho hello\n", 0o755)
os.chmod(os.path.join(root, "etc/atmo/post-scripts.d"), 0o755)

# Sizes: heavy-tailed like real trees, scaled to the data budget.
weights = [rnd.paretovariate(1.2) for _ in range(nfiles)]
scale = (data_mib << 20) / sum(weights)
places = ["/usr/share/bench", "/usr/lib/bench", "/opt/app/lib", "/home/alice/data", "/var/lib/bench"]
block = os.urandom(4 << 20)
for i, w in enumerate(weights):
    size = max(1, int(w * scale))
    d = f"{places[i % len(places)]}/d{i // 200:03d}"
    p = os.path.join(root, d.lstrip("/"), f"f{i:05d}.bin")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        left, off = size, (i * 4099) % len(block)
        while left > 0:
            n = min(left, len(block) - off)
            f.write(block[off:off + n])
            left -= n
            off = 0
EOF
  PART=$WORK/part.img
  PART_MIB=$((SIZE_MIB - 2))
  rm -f "$PART"
  mke2fs -q -F -t ext4 -U "$UUID" -L bench-root -d "$TREE" "$PART" "${PART_MIB}M"
  rm -rf "$TREE"
  rm -f "$RAW"
  truncate -s "${SIZE_MIB}M" "$RAW"
  # No -q: sgdisk 1.0.9 accepts it and then writes no table.
  sgdisk -n "1:2048:+${PART_MIB}M" -t 1:8300 "$RAW" >/dev/null
  [ "$(sgdisk -p "$RAW" | grep -c '^ *1 ')" = 1 ] || { echo "sgdisk wrote no table" >&2; exit 1; }
  dd if="$PART" of="$RAW" bs=4M seek=1M oflag=seek_bytes conv=sparse,notrunc status=none
  rm -f "$PART"
fi
if [ "$FORMAT" = qcow2 ] && [ ! -e "$IMG" ]; then
  qemu-img convert -O qcow2 "$RAW" "$IMG"
fi

echo "== image: $IMG ($(du -h --apparent-size "$IMG" | cut -f1) apparent, $(du -h "$IMG" | cut -f1) allocated)"
"$IMGSAN" inspect "$IMG" | sed -n '1,12p'

OUT=$WORK/converted.raw
CHECK="$IMGSAN check $IMG --name bench-image --description 'A benchmark guest with twenty thousand files' --today 2024-06-01 --format json -o $WORK/report.json"
hyperfine --warmup 1 --runs "$RUNS" --ignore-failure \
  --prepare "rm -f $OUT" \
  --export-markdown "$WORK/check.md" \
  -n "imgsan check" "$CHECK" \
  -n "qemu-img convert -O raw" "qemu-img convert -O raw $IMG $OUT"
rm -f "$OUT"

echo "== imgsan check, peak memory"
/usr/bin/time -v sh -c "$CHECK" 2>&1 | grep -E "Elapsed|Maximum resident" || true
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('findings:', [f['check_id'] for f in r['findings']]); print('walked:', r['facts']['walk'])" "$WORK/report.json"
