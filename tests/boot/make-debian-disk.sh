#!/usr/bin/env bash
# Builds a bootable Debian bookworm disk image for the full-boot test, without loop
# devices or mounts:
#   1. debootstrap a minimal system (kernel, systemd, openssh-server) once, and cache it
#      as a tarball;
#   2. configure it as a used instance (fstab by UUID, serial console, a human user with
#      secrets, ssh host keys from openssh-server's postinst);
#   3. build the ext4 root with mke2fs -d and a swap area with mkswap, lay them out on a
#      GPT disk with a BIOS boot partition (sgdisk), and install GRUB for i386-pc by
#      writing boot.img into the MBR and core.img into the BIOS boot partition with the
#      sector pointers set, as grub-bios-setup would.
#
# Usage: [IMGSAN_BOOT_DETACHED_VOLUME=1] make-debian-disk.sh OUT.raw
# With IMGSAN_BOOT_DETACHED_VOLUME=1 the fstab also names a volume that is not in the
# image (without nofail): such a disk boots only after a sanitizer drops that line.
# Writes OUT.raw, OUT.raw.markers (secret strings planted, one per line),
# OUT.raw.hostkeys (the image's ssh host public keys) and OUT.raw.stamp; when the stamp matches this script, an existing image is reused.
# Cache: $IMGSAN_BOOT_CACHE (default: <repo>/target/tmp/boot-cache, as the Rust test uses). Needs root.
set -euo pipefail

out=${1:?usage: make-debian-disk.sh OUT.raw}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${IMGSAN_BOOT_CACHE:-$repo/target/tmp/boot-cache}
mirror=${IMGSAN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
include=linux-image-amd64,systemd-sysv,openssh-server,udev,kmod,initramfs-tools,ifupdown,isc-dhcp-client,iproute2
mkdir -p "$cache"

stamp=$( (sha256sum "$0"; echo "detached=${IMGSAN_BOOT_DETACHED_VOLUME:-0}") | sha256sum | cut -c1-16)
if [ -f "$out" ] && [ -f "$out.stamp" ] && [ "$(cat "$out.stamp")" = "$stamp" ]; then
  echo "make-debian-disk: $out is up to date"
  exit 0
fi

# Fixed identities, so fstab, grub.cfg and the filesystems agree and reruns match.
root_uuid=3d2a1f0e-6b7c-4d8e-9f10-2a3b4c5d6e7f
swap_uuid=8e9f0a1b-2c3d-4e5f-8a7b-6c5d4e3f2a1b
disk_guid=0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9
export E2FSPROGS_FAKE_TIME=1704614400 SOURCE_DATE_EPOCH=1704614400

t0=$(date +%s)
tarball=$cache/debootstrap-$suite-$(echo "$include" | sha256sum | cut -c1-12).tar
if [ ! -f "$tarball" ]; then
  work=$(mktemp -d "$cache/.debootstrap-XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "make-debian-disk: debootstrap $suite (once; cached in $tarball)"
  debootstrap --variant=minbase --include="$include" "$suite" "$work/root" "$mirror" \
    > "$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log"; exit 1; }
  r=$work/root
  kver=$(ls "$r/lib/modules" | head -1)
  # Keep what a virtual machine boots with; drop the rest of the modules, the docs and
  # the apt lists (the image stays a few hundred MiB).
  ( cd "$r/lib/modules/$kver/kernel"
    for d in *; do case $d in arch|crypto|fs|lib|drivers|net) ;; *) rm -rf "$d" ;; esac; done
    ( cd drivers && for d in *; do case $d in ata|block|scsi|virtio|char|input|cdrom|md|net) ;; *) rm -rf "$d" ;; esac; done )
    ( cd drivers/net && for d in *; do case $d in virtio_net.ko*|net_failover.ko*|ethernet) ;; *) rm -rf "$d" ;; esac; done )
    ( cd drivers/net/ethernet 2>/dev/null && for d in *; do case $d in intel) ;; *) rm -rf "$d" ;; esac; done ) || true
    ( cd fs && for d in *; do case $d in ext4|jbd2|mbcache.ko*|fat|vfat|nls) ;; *) rm -rf "$d" ;; esac; done )
    ( cd net && for d in *; do case $d in core|ipv4|ipv6|packet|unix|failover) ;; *) rm -rf "$d" ;; esac; done ) )
  depmod -b "$r" "$kver"
  rm -rf "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/locale/* "$r"/usr/share/info/* \
         "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
         "$r"/var/log/bootstrap.log
  tar --numeric-owner --xattrs --xattrs-include='*' -C "$r" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$work"
  trap - EXIT
fi
t1=$(date +%s)

work=$(mktemp -d "$(dirname "$out")/.mkdisk-XXXXXX")
trap 'rm -rf "$work"' EXIT
r=$work/root
mkdir "$r"
tar --numeric-owner --xattrs --xattrs-include='*' -C "$r" -xf "$tarball"
kver=$(ls "$r/lib/modules" | head -1)

# --- configure the guest -------------------------------------------------------------
echo imgsan-boot > "$r/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 imgsan-boot\n' > "$r/etc/hosts"
cat > "$r/etc/fstab" <<FSTAB
# /etc/fstab: static file system information.
UUID=$root_uuid / ext4 errors=remount-ro 0 1
UUID=$swap_uuid none swap sw 0 0
FSTAB
if [ "${IMGSAN_BOOT_DETACHED_VOLUME:-0}" = 1 ]; then
  # A volume that was attached to the instance. Without nofail, systemd waits 90 s for
  # it and then drops to emergency mode (no login prompt): a sanitizer must drop the
  # line for the image to boot.
  echo 'UUID=5f5f5f5f-1111-4222-8333-944444444444 /mnt/volume ext4 defaults 0 2' >> "$r/etc/fstab"
fi
mkdir -p "$r/mnt/volume"
cat > "$r/etc/network/interfaces" <<'NET'
auto lo
iface lo inet loopback
allow-hotplug ens3
iface ens3 inet dhcp
NET
# root has no password (locked); the human user can log in with a key only.
sed -i 's/^root:[^:]*:/root:*:/' "$r/etc/shadow"
m() { printf 'IMGSAN-SECRET-boot%s\n' "$(printf '%s' "$1" | sha256sum | cut -c1-16)"; }
markers=$work/markers
echo 'alice:x:1000:1000:Alice Researcher,,,:/home/alice:/bin/bash' >> "$r/etc/passwd"
echo 'alice:x:1000:' >> "$r/etc/group"
echo "alice:\$y\$j9T\$$(m salt | cut -c15-36)\$$(m hash | cut -c15-40)AbCdEfGhIjKlMnOpQ:19729:0:99999:7:::" >> "$r/etc/shadow"
grep '^alice:' "$r/etc/shadow" | cut -d: -f2 >> "$markers"
sed -i 's/^sudo:x:27:$/sudo:x:27:alice/' "$r/etc/group"
mkdir -p "$r/home/alice/.ssh" "$r/root"
m history >> "$markers"; echo "export API_TOKEN=$(m history)" > "$r/home/alice/.bash_history"
m idrsa >> "$markers"; printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\n%s\n-----END OPENSSH PRIVATE KEY-----\n' "$(m idrsa)" > "$r/home/alice/.ssh/id_rsa"
m roothist >> "$markers"; echo "mysql -p$(m roothist)" > "$r/root/.bash_history"
m tmp >> "$markers"; echo "$(m tmp)" > "$r/tmp/x"
m log >> "$markers"; echo "Jan  7 07:59:02 imgsan-boot app[1]: token=$(m log)" >> "$r/var/log/auth.log"
chown -R 1000:1000 "$r/home/alice"
chmod 700 "$r/home/alice" "$r/home/alice/.ssh"; chmod 600 "$r/home/alice/.ssh/id_rsa" "$r/home/alice/.bash_history"
# Host keys from openssh-server's postinst; their public halves are kept next to the
# image, so the test can tell the keys of a booted output from the image's own.
cat "$r"/etc/ssh/ssh_host_*_key.pub > "$work/hostkeys"

# GRUB: modules and configuration where grub-install would put them.
mkdir -p "$r/boot/grub/i386-pc"
cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst "$r/boot/grub/i386-pc/"
cat > "$r/boot/grub/grub.cfg" <<CFG
set timeout=0
set default=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
menuentry 'Debian GNU/Linux 12 (imgsan full-boot fixture)' {
	search --no-floppy --fs-uuid --set=root $root_uuid
	linux /boot/vmlinuz-$kver root=UUID=$root_uuid ro console=tty0 console=ttyS0,115200n8 systemd.show_status=1
	initrd /boot/initrd.img-$kver
}
CFG

# --- filesystems ---------------------------------------------------------------------
used_mib=$(( $(du -s --block-size=1M "$r" | cut -f1) ))
root_mib=$(( used_mib + used_mib / 3 + 128 ))
swap_mib=64
mke2fs -q -F -t ext4 -b 4096 -U "$root_uuid" -L root -E "hash_seed=$root_uuid,root_owner=0:0" \
  -d "$r" "$work/root.img" "${root_mib}M"
truncate -s "${swap_mib}M" "$work/swap.img"
mkswap -q -U "$swap_uuid" -L swap "$work/swap.img"

# --- disk ----------------------------------------------------------------------------
bios_start=2048                       # 1 MiB
root_start=4096                       # 2 MiB
root_end=$(( root_start + root_mib * 2048 - 1 ))
swap_start=$(( root_end + 1 ))
swap_end=$(( swap_start + swap_mib * 2048 - 1 ))
total=$(( (swap_end + 1 + 2048) * 512 ))
rm -f "$work/disk.raw"
truncate -s "$total" "$work/disk.raw"
sgdisk -o --disk-guid="$disk_guid" \
  --new=1:$bios_start:$((root_start - 1)) --typecode=1:EF02 --change-name=1:bios \
  --new=2:$root_start:$root_end --typecode=2:8300 --change-name=2:root \
  --new=3:$swap_start:$swap_end --typecode=3:8200 --change-name=3:swap \
  "$work/disk.raw" > /dev/null
dd if="$work/root.img" of="$work/disk.raw" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
dd if="$work/swap.img" of="$work/disk.raw" bs=1M seek=$((swap_start / 2048)) conv=notrunc,sparse status=none

# GRUB core image: finds the root by UUID, then reads /boot/grub/grub.cfg.
cat > "$work/early.cfg" <<EARLY
search --no-floppy --fs-uuid --set=root $root_uuid
set prefix=(\$root)/boot/grub
EARLY
grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc -o "$work/core.img" -c "$work/early.cfg" -p /boot/grub \
  biosdisk part_gpt ext2 search search_fs_uuid normal linux configfile echo serial terminal test all_video
python3 - "$work/disk.raw" "$work/core.img" /usr/lib/grub/i386-pc/boot.img $bios_start <<'PY'
# What grub-bios-setup does for a disk with a BIOS boot partition (util/setup.c):
#  - core.img goes into the partition; the blocklist at the end of its first sector
#    (start: u64, len: u16, segment: u16) names the sectors holding the rest;
#  - boot.img goes into the MBR code area (the partition table is kept), with the
#    sector of core.img at 0x5c, boot drive 0xff at 0x64, and the drive check at
#    0x66 replaced by two NOPs for BIOSes that pass a wrong drive number.
import struct, sys
disk, core_path, boot_path, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
core = bytearray(open(core_path, 'rb').read())
core += b'\0' * (-len(core) % 512)
nsec = len(core) // 512
assert nsec <= 2048, 'core.img does not fit in the BIOS boot partition'
core[512 - 12:512] = struct.pack('<QHH', start + 1, nsec - 1, 0x820)
boot = bytearray(open(boot_path, 'rb').read())
assert len(boot) == 512
with open(disk, 'r+b') as f:
    mbr = bytearray(f.read(512))
    boot[0x03:0x5a] = mbr[0x03:0x5a]
    boot[0x5c:0x64] = struct.pack('<Q', start)
    boot[0x64] = 0xff
    boot[0x66:0x68] = b'\x90\x90'
    boot[0x1b8:0x200] = mbr[0x1b8:0x200]
    f.seek(0); f.write(boot)
    f.seek(start * 512); f.write(core)
PY
sgdisk -v "$work/disk.raw" | grep -q 'No problems found' || { sgdisk -v "$work/disk.raw"; exit 1; }

mv "$work/disk.raw" "$out"
cp "$markers" "$out.markers"
cp "$work/hostkeys" "$out.hostkeys"
echo "$stamp" > "$out.stamp"
t2=$(date +%s)
echo "make-debian-disk: $out ($(du -h --apparent-size "$out" | cut -f1) apparent, $(du -h "$out" | cut -f1) used); debootstrap+cache $((t1 - t0)) s, disk $((t2 - t1)) s"
