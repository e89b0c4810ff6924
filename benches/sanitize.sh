#!/usr/bin/env bash
# Benchmark: `imgsan sanitize` against `qemu-img convert -O raw` and against the
# libguestfs way (virt-sysprep, virt-sparsify --in-place, qemu-img convert), on the
# same "used instance" disk image.
#
# The image (built once, cached in WORKDIR): a 5 GiB GPT disk with a BIOS boot
# partition (GRUB-like bytes), an ext4 root (by UUID in fstab) and a swap partition.
# The root looks like a used Ubuntu 22.04 instance: os-release, accounts with two
# human users (hashed passwords), their homes with files, keys and shell histories,
# /root, /tmp and /var/tmp files, live and rotated logs, a journal, wtmp/btmp/lastlog,
# ssh host keys, cloud-init state, DHCP leases, apt caches. Its bulk is real files
# copied from the host (/usr/bin, /usr/lib/x86_64-linux-gnu and /usr/share, capped;
# they compress like a real system) plus 192 MiB of random bytes, and 128 MiB of a
# deleted file's data left in free blocks, as on a disk that has been used: about
# 1.5 GiB allocated in all. It is stored twice: as a zlib-compressed qcow2 (like
# Ubuntu's cloud images) and as an uncompressed qcow2.
#
# For each qcow2, with a warm page cache:
#  1. hyperfine ($RUNS runs) times `imgsan $IMGSAN_CMD IN -o OUT` against
#     `qemu-img convert -O raw IN OUT` (and, since imgsan fsyncs its output and
#     qemu-img does not, against qemu-img followed by a sync of its output), and
#     prints the ratios of their mean times; /usr/bin/time -v gives each one's
#     peak RSS.
#  2. The libguestfs way, timed once with /usr/bin/time (it is slow): on a fresh
#     copy of the qcow2 (the copy is not timed), `virt-sysprep -a COPY`, then
#     `virt-sparsify --in-place COPY`, then `qemu-img convert -O raw COPY OUT`.
#     libguestfs runs with LIBGUESTFS_BACKEND=direct and, unless the environment
#     says otherwise, LIBGUESTFS_BACKEND_SETTINGS=force_tcg (no KVM needed). Prints
#     the ratio imgsan / libguestfs way.
#
# Usage: benches/sanitize.sh [WORKDIR]   (default /var/tmp/imgsan-sanbench)
# Environment: RUNS (default 3); IMGSAN_CMD, the imgsan subcommand and its options
# placed before IN (default "sanitize --force"; "repack" works as a stand-in).
# The guest has no sshd, a blocking finding that sanitize does not fix: with
# --force imgsan writes the image and exits 1, which the timing accepts.
# Needs: root (the guest's files are owned by its users), cargo, mke2fs, debugfs,
# sgdisk, mkswap, ssh-keygen, python3, qemu-img, hyperfine, /usr/bin/time,
# virt-sysprep and virt-sparsify (libguestfs-tools), all from .ci/setup.sh; about
# 20 GiB free in WORKDIR (the raw disk is kept sparse, ~1.6 GiB; two qcow2s; the
# outputs, 5 GiB apparent each, sparse).
# Takes, on 2 shared cores: about 4 minutes to build the image and its two qcow2s
# the first time (cached after that), then about 2 minutes per variant: under a
# minute of hyperfine runs, and about 50 s for the libguestfs way under TCG (most
# of it booting its appliance twice). About 10 minutes in all the first time.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/var/tmp/imgsan-sanbench}
runs=${RUNS:-3}
imgsan_cmd=${IMGSAN_CMD:-sanitize --force}
export LIBGUESTFS_BACKEND=direct
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}

for tool in cargo mke2fs debugfs sgdisk mkswap ssh-keygen python3 qemu-img hyperfine \
  /usr/bin/time virt-sysprep virt-sparsify; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run .ci/setup.sh" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root: the guest's files belong to its users" >&2; exit 1; }

(cd "$here" && cargo build --release --quiet)
imgsan=${CARGO_TARGET_DIR:-$here/target}/release/imgsan

mkdir -p "$work"
raw=$work/disk.raw
root_uuid=3b4c5d6e-7f80-4192-a3b4-c5d6e7f80912
swap_uuid=0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d
disk_mib=5120
root_start_mib=2
swap_mib=512
root_mib=$((disk_mib - root_start_mib - swap_mib - 1)) # the last MiB holds the backup GPT

build_tree() {
  local tree=$1
  python3 - "$tree" "$root_uuid" "$swap_uuid" <<'EOF'
import os, random, shutil, stat, sys, time
root, root_uuid, swap_uuid = sys.argv[1], sys.argv[2], sys.argv[3]
rnd = random.Random(20220421)

def p(path):
    return os.path.join(root, path.lstrip("/"))

def mkdir(path, mode=0o755, uid=0, gid=0):
    os.makedirs(p(path), exist_ok=True)
    os.chmod(p(path), mode)
    os.chown(p(path), uid, gid)

def put(path, data, mode=0o644, uid=0, gid=0):
    os.makedirs(os.path.dirname(p(path)), exist_ok=True)
    with open(p(path), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(p(path), mode)
    os.chown(p(path), uid, gid)

def link(path, target):
    os.makedirs(os.path.dirname(p(path)), exist_ok=True)
    os.symlink(target, p(path))

def text(nlines, words):
    return "".join(" ".join(rnd.choice(words) for _ in range(rnd.randint(4, 14))) + "\n"
                   for _ in range(nlines))

# Merged /usr, as on Ubuntu.
for d in ["/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/etc", "/var", "/home",
          "/mnt", "/media", "/opt", "/srv", "/boot", "/dev", "/proc", "/sys", "/run",
          "/snap", "/usr/local/bin"]:
    mkdir(d)
mkdir("/tmp", 0o1777)
mkdir("/var/tmp", 0o1777)
mkdir("/root", 0o700)
for name in ["bin", "sbin", "lib", "lib64"]:
    link("/" + name, "usr/" + name)

# Bulk: the host's real files, capped per source (MiB), copied with their modes.
def copy_capped(src, dst, cap_mib):
    budget = cap_mib << 20
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel = os.path.relpath(dirpath, src)
        out = os.path.normpath(os.path.join(p(dst), rel))
        os.makedirs(out, exist_ok=True)
        for name in sorted(filenames):
            s = os.path.join(dirpath, name)
            try:
                st = os.lstat(s)
            except OSError:
                continue
            d = os.path.join(out, name)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISREG(st.st_mode):
                if st.st_size > budget:
                    return
                try:
                    shutil.copy2(s, d)
                except OSError:
                    continue
                budget -= st.st_size
copy_capped("/usr/bin", "/usr/bin", 350)
copy_capped("/usr/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", 350)
copy_capped("/usr/share", "/usr/share", 350)

# The system's identity and accounts.
put("/etc/os-release",
    'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
    'VERSION="22.04.4 LTS (Jammy Jellyfish)"\nVERSION_CODENAME=jammy\nID=ubuntu\n'
    'ID_LIKE=debian\nHOME_URL="https://www.ubuntu.com/"\nUBUNTU_CODENAME=jammy\n')
link("/usr/lib/os-release", "../../etc/os-release")
put("/etc/lsb-release", "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\n"
    'DISTRIB_DESCRIPTION="Ubuntu 22.04.4 LTS"\n')
put("/etc/hostname", "ip-10-0-3-17\n")
put("/etc/hosts", "127.0.0.1 localhost\n10.0.3.17 ip-10-0-3-17\n")
put("/etc/machine-id", "5f1d2c3b4a5968778695a4b3c2d1e0f9\n", 0o444)
put("/var/lib/dbus/machine-id", "5f1d2c3b4a5968778695a4b3c2d1e0f9\n", 0o444)
put("/var/lib/systemd/random-seed", os.urandom(512), 0o600)
put("/etc/fstab",
    "# /etc/fstab: static file system information.\n"
    f"UUID={root_uuid}\t/\text4\tdiscard,errors=remount-ro\t0 1\n"
    f"UUID={swap_uuid}\tnone\tswap\tsw\t0 0\n"
    "/dev/nvme1n1\t/data\text4\tdefaults,nofail\t0 2\n")
link("/etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf")
system = [("root", 0, 0, "/root", "/bin/bash"), ("daemon", 1, 1, "/usr/sbin", "/usr/sbin/nologin"),
          ("bin", 2, 2, "/bin", "/usr/sbin/nologin"), ("sys", 3, 3, "/dev", "/usr/sbin/nologin"),
          ("sync", 4, 65534, "/bin", "/bin/sync"), ("man", 6, 12, "/var/cache/man", "/usr/sbin/nologin"),
          ("www-data", 33, 33, "/var/www", "/usr/sbin/nologin"),
          ("nobody", 65534, 65534, "/nonexistent", "/usr/sbin/nologin"),
          ("systemd-network", 100, 102, "/run/systemd", "/usr/sbin/nologin"),
          ("systemd-resolve", 101, 103, "/run/systemd", "/usr/sbin/nologin"),
          ("messagebus", 102, 105, "/nonexistent", "/usr/sbin/nologin"),
          ("syslog", 104, 111, "/home/syslog", "/usr/sbin/nologin"),
          ("_apt", 105, 65534, "/nonexistent", "/usr/sbin/nologin"),
          ("sshd", 109, 65534, "/run/sshd", "/usr/sbin/nologin")]
humans = [("ubuntu", 1000), ("alice", 1001)]
passwd = "".join(f"{n}:x:{u}:{g}:{n}:{h}:{s}\n" for n, u, g, h, s in system)
passwd += "".join(f"{n}:x:{u}:{u}:{n.title()},,,:/home/{n}:/bin/bash\n" for n, u in humans)
put("/etc/passwd", passwd)
shadow = "".join(f"{n}:{'*' if n != 'root' else '!'}:19100:0:99999:7:::\n" for n, *_ in system)
shadow += "".join(f"{n}:$6$Zq1xY2w3$" + "".join(rnd.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789./") for _ in range(86)) + ":19200:0:99999:7:::\n" for n, _ in humans)
put("/etc/shadow", shadow, 0o640, 0, 42)
groups = [("root", 0, ""), ("daemon", 1, ""), ("bin", 2, ""), ("sys", 3, ""), ("adm", 4, "syslog,ubuntu"),
          ("sudo", 27, "ubuntu,alice"), ("www-data", 33, ""), ("shadow", 42, ""), ("users", 100, ""),
          ("nogroup", 65534, ""), ("systemd-network", 102, ""), ("systemd-resolve", 103, ""),
          ("messagebus", 105, ""), ("syslog", 111, ""), ("lxd", 110, "ubuntu")]
groups += [(n, u, "") for n, u in humans]
put("/etc/group", "".join(f"{n}:x:{g}:{m}\n" for n, g, m in groups))
put("/etc/gshadow", "".join(f"{n}:*::{m}\n" for n, g, m in groups), 0o640, 0, 42)
put("/etc/subuid", "ubuntu:100000:65536\nalice:165536:65536\n")
put("/etc/subgid", "ubuntu:100000:65536\nalice:165536:65536\n")
put("/etc/login.defs", "UID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\n")
put("/etc/sudoers.d/90-cloud-init-users", "ubuntu ALL=(ALL) NOPASSWD:ALL\n", 0o440)
put("/etc/netplan/50-cloud-init.yaml",
    "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n"
    "      match: {macaddress: '0a:1b:2c:3d:4e:5f'}\n", 0o600)
put("/etc/udev/rules.d/70-persistent-net.rules",
    'SUBSYSTEM=="net", ATTR{address}=="0a:1b:2c:3d:4e:5f", NAME="eth0"\n')
put("/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin prohibit-password\n"
    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM yes\n")
put("/etc/cloud/cloud.cfg", "users:\n  - default\ndisable_root: true\nssh_pwauth: false\n")
status = "/var/lib/dpkg/status"
if os.path.exists(status):
    mkdir("/var/lib/dpkg")
    shutil.copy2(status, p(status))

words = ("the a cloud image server deploy backup update restart config error warning kernel "
         "network disk user session opened closed accepted publickey for from port ssh2 "
         "systemd started stopped unit service apt install upgrade python3 nginx postgres").split()

# Homes: documents, keys, histories, a project, caches.
for n, u in humans:
    h = f"/home/{n}"
    mkdir(h, 0o750, u, u)
    mkdir(h + "/.ssh", 0o700, u, u)
    put(h + "/.ssh/authorized_keys", f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{n}key {n}@laptop\n", 0o600, u, u)
    put(h + "/.bash_history", "".join(rnd.choice([
        "sudo apt update", "sudo apt upgrade -y", "ls -la", "cd /var/www", "git pull",
        "vim config.yaml", "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "mysql -u root -pHunter2secret", "docker ps", "tail -f /var/log/syslog",
        "python3 manage.py migrate", "scp backup.tar.gz bob@10.0.0.5:"]) + "\n" for _ in range(800)),
        0o600, u, u)
    put(h + "/.bashrc", "# ~/.bashrc\nexport HISTSIZE=10000\nalias ll='ls -alF'\n", 0o644, u, u)
    put(h + "/.profile", "# ~/.profile\n[ -f ~/.bashrc ] && . ~/.bashrc\n", 0o644, u, u)
    put(h + "/.viminfo", text(200, words), 0o600, u, u)
    put(h + "/.python_history", text(100, words), 0o600, u, u)
    put(h + "/.aws/credentials", "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n", 0o600, u, u)
    for i in range(200):
        put(f"{h}/Documents/notes-{i:03d}.txt", text(rnd.randint(20, 400), words), 0o644, u, u)
    for i in range(40):
        put(f"{h}/project/src/module_{i:02d}.py", text(rnd.randint(50, 600), words), 0o644, u, u)
    put(h + "/.cache/pip/http/blob.bin", os.urandom(4 << 20), 0o644, u, u)
put("/root/.bash_history", "".join(rnd.choice(["apt-get install -y nginx", "systemctl restart nginx",
    "cat /etc/shadow", "passwd alice", "journalctl -xe", "reboot"]) + "\n" for _ in range(300)), 0o600)
put("/root/.ssh/authorized_keys", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIrootkey admin@bastion\n", 0o600)
put("/root/.mysql_history", "CREATE USER 'app'@'%' IDENTIFIED BY 'S3cretPassw0rd';\n", 0o600)
put("/root/backup.sql", text(20000, words), 0o600)

# Scratch files.
for i in range(50):
    put(f"/tmp/tmp.{rnd.getrandbits(40):010x}", text(rnd.randint(10, 200), words), 0o600, 1000, 1000)
put("/tmp/session-dump.bin", os.urandom(8 << 20), 0o600)
put("/var/tmp/systemd-private-cache/data", text(500, words), 0o600)
mkdir("/mnt/scratch")
put("/mnt/scratch/export.csv", text(3000, words))

# Logs: live, rotated, compressed, journal, login records.
def log(path, nlines, mode=0o640, uid=104, gid=4):
    put(path, "".join(f"Apr 21 10:{i // 60 % 60:02d}:{i % 60:02d} ip-10-0-3-17 "
                      + " ".join(rnd.choice(words) for _ in range(rnd.randint(5, 15))) + "\n"
                      for i in range(nlines)), mode, uid, gid)
for name in ["syslog", "auth.log", "kern.log", "cloud-init.log", "dpkg.log", "apt/history.log",
             "apt/term.log", "nginx/access.log", "nginx/error.log", "unattended-upgrades/unattended-upgrades.log"]:
    log("/var/log/" + name, rnd.randint(2000, 30000))
    log("/var/log/" + name + ".1", rnd.randint(2000, 30000))
    for k in (2, 3, 4):
        put(f"/var/log/{name}.{k}.gz", os.urandom(rnd.randint(50, 400) << 10), 0o640, 104, 4)
log("/var/log/cloud-init-output.log", 5000)
put("/var/log/wtmp", os.urandom(384 * 500), 0o664, 0, 43)
put("/var/log/btmp", os.urandom(384 * 200), 0o660, 0, 43)
put("/var/log/lastlog", os.urandom(292 * 1002), 0o664, 0, 43)
for k in range(4):
    put(f"/var/log/journal/5f1d2c3b4a5968778695a4b3c2d1e0f9/system@{k:032x}-{k:016x}-{k:016x}.journal",
        os.urandom(8 << 20), 0o640, 0, 101)
put("/var/log/journal/5f1d2c3b4a5968778695a4b3c2d1e0f9/system.journal", os.urandom(8 << 20), 0o640, 0, 101)

# Cloud-init state, leases, caches, crash dumps.
put("/var/lib/cloud/instances/i-0abc123def4567890/user-data.txt",
    "#cloud-config\npassword: Hunter2secret\nchpasswd: {expire: false}\n", 0o600)
put("/var/lib/cloud/instances/i-0abc123def4567890/obj.pkl", os.urandom(64 << 10), 0o600)
link("/var/lib/cloud/instance", "/var/lib/cloud/instances/i-0abc123def4567890")
put("/var/lib/cloud/data/instance-id", "i-0abc123def4567890\n")
put("/var/lib/dhcp/dhclient.eth0.leases", "lease {\n  interface \"eth0\";\n  fixed-address 10.0.3.17;\n}\n")
for i in range(30):
    put(f"/var/cache/apt/archives/pkg{i:02d}_1.0-1_amd64.deb", os.urandom(rnd.randint(100, 2000) << 10))
put("/var/cache/apt/pkgcache.bin", os.urandom(16 << 20))
put("/var/crash/_usr_bin_python3.10.0.crash", text(3000, words), 0o640)

# Incompressible bulk: an application's data files, and a user's dataset.
for i in range(4):
    put(f"/var/lib/app/blob-{i}.bin", os.urandom(32 << 20))
put("/home/alice/data/dataset.bin", os.urandom(64 << 20), 0o644, 1001, 1001)
EOF
  # ssh host keys, made fresh (real keys, as a booted instance has).
  mkdir -p "$tree/etc/ssh"
  for t in rsa ecdsa ed25519; do
    ssh-keygen -q -t "$t" -N '' -C root@ip-10-0-3-17 -f "$tree/etc/ssh/ssh_host_${t}_key"
  done
  ssh-keygen -q -t ed25519 -N '' -C alice@ip-10-0-3-17 -f "$tree/home/alice/.ssh/id_ed25519"
  chown 1001:1001 "$tree/home/alice/.ssh/id_ed25519"*
}

if [ ! -f "$raw" ]; then
  echo "== building the used-instance disk (once): $raw"
  tree=$work/tree
  part=$work/root.part
  rm -rf "$tree" "$part" "$raw.tmp"
  mkdir -p "$tree"
  build_tree "$tree"
  du -sh --apparent-size "$tree"
  mke2fs -q -F -t ext4 -U "$root_uuid" -L cloudimg-rootfs -d "$tree" "$part" "${root_mib}M"
  rm -rf "$tree"
  # A deleted file's data left in free blocks, as on a used disk: the sanitizers must
  # not carry it (qemu-img convert does, since the blocks are allocated in the image).
  head -c $((128 << 20)) /dev/urandom >"$work/deleted.bin"
  debugfs -w -R "write $work/deleted.bin /var/tmp/deleted.bin" "$part" >/dev/null
  debugfs -w -R "rm /var/tmp/deleted.bin" "$part" >/dev/null
  rm -f "$work/deleted.bin"
  e2fsck -fn "$part" >/dev/null

  truncate -s "${disk_mib}M" "$raw.tmp"
  # (sgdisk 1.0.9 takes an unknown -q silently and then writes nothing: no -q here.)
  sgdisk -a 2048 \
    -n "1:1M:+1M" -t 1:EF02 -c 1:bios \
    -n "2:${root_start_mib}M:+${root_mib}M" -t 2:8300 -c 2:root \
    -n "3:$((root_start_mib + root_mib))M:+${swap_mib}M" -t 3:8200 -c 3:swap \
    "$raw.tmp" >/dev/null
  [ "$(sgdisk -p "$raw.tmp" | grep -cE '^ +[0-9]+ ')" = 3 ] || { echo "sgdisk wrote no table" >&2; exit 1; }
  # Boot code in the MBR and a core image in the BIOS boot partition, copied verbatim
  # by every tool here.
  if [ -f /usr/lib/grub/i386-pc/boot.img ]; then
    dd if=/usr/lib/grub/i386-pc/boot.img of="$raw.tmp" bs=440 count=1 conv=notrunc status=none
  fi
  head -c $((100 << 10)) /dev/urandom | dd of="$raw.tmp" bs=1M seek=1 conv=notrunc status=none
  dd if="$part" of="$raw.tmp" bs=4M seek="$((root_start_mib << 20))" oflag=seek_bytes \
    conv=sparse,notrunc status=none
  rm -f "$part"
  rm -f "$work/swap.part"
  truncate -s "${swap_mib}M" "$work/swap.part"
  mkswap -q -U "$swap_uuid" -L swap "$work/swap.part"
  dd if="$work/swap.part" of="$raw.tmp" bs=1M seek=$((root_start_mib + root_mib)) \
    conv=sparse,notrunc status=none
  rm -f "$work/swap.part"
  mv "$raw.tmp" "$raw"
  rm -f "$work/zlib.qcow2" "$work/plain.qcow2"
fi
[ -f "$work/zlib.qcow2" ] || qemu-img convert -c -O qcow2 "$raw" "$work/zlib.qcow2"
[ -f "$work/plain.qcow2" ] || qemu-img convert -O qcow2 "$raw" "$work/plain.qcow2"

mib() { echo "$(($1 >> 20)) MiB"; }
echo "== image"
echo "virtual size:   $(mib "$(stat -c %s "$raw")")"
echo "data (raw, allocated): $(mib $(($(stat -c %b "$raw") * 512)))"
for v in zlib plain; do
  echo "$v.qcow2 file:  $(mib "$(stat -c %s "$work/$v.qcow2")")"
done

out=$work/out
mkdir -p "$out"
mean() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["mean"])' "$1" "$2"; }
ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$1" "$2"; }
peak() { # label, command...: prints wall time and peak RSS from /usr/bin/time -v
  local label=$1
  shift
  sync
  # imgsan exits 1 when forced past blocking findings; the figures still count.
  { /usr/bin/time -v "$@" 2>&1 >/dev/null || true; } | awk -v c="$label" \
    '/Maximum resident/ {rss=$6} /Elapsed/ {t=$8} END {print c ": " t " elapsed, " rss " KiB peak RSS"}'
}
elapsed() { # seconds taken by a command, from /usr/bin/time; its output goes to a log
  local log=$1
  shift
  /usr/bin/time -f %e -o "$log.time" "$@" >"$log" 2>&1 || { cat "$log" >&2; return 1; }
  cat "$log.time"
}

summary=()
for v in zlib plain; do
  src=$work/$v.qcow2
  # shellcheck disable=SC2206
  san=("$imgsan" $imgsan_cmd "$src" -o "$out/imgsan.raw" --report "$out/report.txt")
  cat "$src" >/dev/null # warm the page cache
  echo
  echo "== $v.qcow2: wall time (hyperfine, warm cache, $runs runs)"
  # Dirty pages are flushed before every run, so one tool's writeback does not land
  # on the other's clock. imgsan fsyncs its output before renaming it; qemu-img
  # does not, so it is also timed with a sync of its output, for the fair figure.
  # The goal is stated against plain `qemu-img convert`.
  hyperfine --warmup 1 --runs "$runs" --prepare "sync; rm -f $out/imgsan.raw $out/qemu.raw" \
    --export-json "$out/$v.json" \
    -n "imgsan $imgsan_cmd" "${san[*]} || test \$? = 1" \
    -n "qemu-img convert -O raw" "qemu-img convert -O raw $src $out/qemu.raw" \
    -n "qemu-img convert -O raw + sync" "qemu-img convert -O raw $src $out/qemu.raw && sync $out/qemu.raw"
  t_san=$(mean "$out/$v.json" 0)
  t_qemu=$(mean "$out/$v.json" 1)
  t_qsync=$(mean "$out/$v.json" 2)
  echo "ratio imgsan / qemu-img: $(ratio "$t_san" "$t_qemu") (goal: at most 0.5);" \
    "against qemu-img + sync: $(ratio "$t_san" "$t_qsync")"
  echo "== $v.qcow2: peak memory (/usr/bin/time -v)"
  rm -f "$out/imgsan.raw" "$out/qemu.raw"
  peak "imgsan $imgsan_cmd" "${san[@]}"
  peak "qemu-img convert" qemu-img convert -O raw "$src" "$out/qemu.raw"
  echo "output data: imgsan $(mib $(($(stat -c %b "$out/imgsan.raw") * 512))), qemu-img $(mib $(($(stat -c %b "$out/qemu.raw") * 512)))"
  rm -f "$out/imgsan.raw" "$out/qemu.raw"

  echo "== $v.qcow2: the libguestfs way (timed once; $LIBGUESTFS_BACKEND, $LIBGUESTFS_BACKEND_SETTINGS)"
  copy=$out/copy.qcow2
  cp --sparse=always "$src" "$copy"
  sync
  t1=$(elapsed "$out/sysprep.log" virt-sysprep -a "$copy")
  echo "virt-sysprep -a COPY:                $t1 s"
  t2=$(elapsed "$out/sparsify.log" virt-sparsify --in-place "$copy")
  echo "virt-sparsify --in-place COPY:       $t2 s"
  t3=$(elapsed "$out/convert.log" qemu-img convert -O raw "$copy" "$out/guestfs.raw")
  echo "qemu-img convert -O raw COPY OUT:    $t3 s"
  t_gfs=$(python3 -c 'import sys; print(f"{sum(map(float, sys.argv[1:])):.2f}")' "$t1" "$t2" "$t3")
  echo "libguestfs way, total: $t_gfs s; output data $(mib $(($(stat -c %b "$out/guestfs.raw") * 512)))"
  echo "ratio imgsan / libguestfs way: $(ratio "$t_san" "$t_gfs")"
  rm -f "$copy" "$out/guestfs.raw"
  summary+=("$(printf '%s: imgsan %s %.2f s; qemu-img convert %.2f s (ratio %s), + sync %.2f s (ratio %s); libguestfs way %.1f s (ratio %s)' \
    "$v.qcow2" "$imgsan_cmd" "$t_san" "$t_qemu" "$(ratio "$t_san" "$t_qemu")" "$t_qsync" \
    "$(ratio "$t_san" "$t_qsync")" "$t_gfs" "$(ratio "$t_san" "$t_gfs")")")
done
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
