#!/usr/bin/env bash
# Makes a small disk image that looks like a used Ubuntu 24.04 cloud instance, to try
# imgsan's main job on (README, "The two commands"):
#
#   bash examples/make-sample-disk.sh sample.qcow2
#   target/release/imgsan sanitize sample.qcow2 -o clean.raw \
#       --name Sample-Ubuntu-v1 --description "Ubuntu 24.04 sample image for trying imgsan sanitize"
#
# The guest is a skeleton, not a bootable system: the files imgsan inspects (os-release,
# accounts, fstab, dpkg's status, sshd, python, cloud-init with growpart and resizefs,
# the qemu guest agent, GRUB for UEFI) and what a user leaves behind (a home with a shell
# history and a key, logs, /tmp files, ssh host keys, a machine-id). The disk is GPT,
# 3 GiB virtual and sparse (a few MiB on disk): a BIOS boot partition, an EFI system
# partition (FAT) and an ext4 root, laid out as Ubuntu's cloud images are.
#
# Needs: mke2fs (e2fsprogs 1.43 or later, for -d), sgdisk, mkfs.vfat and mcopy
# (dosfstools, mtools), qemu-img; `bash .ci/setup.sh` installs them. No root, no loop
# device, no mount. Run as root, the guest's files are owned by root as in a real image;
# otherwise (under fakeroot when it is installed) by whoever runs it.
# Output: OUT as QCOW2 when its name ends in .qcow2, else RAW. About 2 seconds.
set -euo pipefail

out=${1:?usage: make-sample-disk.sh OUT.qcow2|OUT.raw}
if [ "$(id -u)" != 0 ] && [ -z "${IMGSAN_SAMPLE_FAKEROOT:-}" ] && command -v fakeroot >/dev/null; then
  IMGSAN_SAMPLE_FAKEROOT=1 exec fakeroot -- bash "$0" "$@"
fi
for tool in mke2fs sgdisk mkfs.vfat mcopy qemu-img; do
  command -v "$tool" >/dev/null || { echo "make-sample-disk: $tool is missing (bash .ci/setup.sh installs it)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/imgsan-sample-XXXXXX")
trap 'rm -rf "$work"' EXIT
r=$work/root
# Fixed identities and times, so every run makes the same guest.
root_uuid=6f3c1a2b-4d5e-4f60-8a7b-9c0d1e2f3a4b
esp_id=5A1B2C3D
disk_guid=1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f
export E2FSPROGS_FAKE_TIME=1704614400 SOURCE_DATE_EPOCH=1704614400
stamp=202401070800

f() { # f PATH MODE CONTENT: a file in the guest
  mkdir -p "$(dirname "$r$1")"
  printf '%s' "$3" > "$r$1"
  chmod "$2" "$r$1"
}

# Merged /usr, as Ubuntu since 20.04.
mkdir -p "$r"/usr/{bin,sbin,lib} "$r"/{boot/efi,dev,proc,sys,run,mnt,srv,opt,media,var/tmp,tmp}
ln -s usr/bin "$r/bin"; ln -s usr/sbin "$r/sbin"; ln -s usr/lib "$r/lib"
chmod 1777 "$r/tmp" "$r/var/tmp"

# An x86-64 ELF header is all imgsan reads of a binary to tell the architecture.
elf() {
  mkdir -p "$(dirname "$r$1")"
  printf '\177ELF\002\001\001\000\000\000\000\000\000\000\000\000\003\000\076\000\001\000\000\000' > "$r$1"
  head -c 40 /dev/zero >> "$r$1"
  chmod 755 "$r$1"
}
elf /usr/bin/dash; ln -s dash "$r/usr/bin/sh"
elf /usr/bin/bash
elf /usr/bin/python3.12; ln -s python3.12 "$r/usr/bin/python3"
elf /usr/sbin/sshd
elf /usr/sbin/qemu-ga
f /usr/bin/cloud-init 755 $'#!/usr/bin/python3\nimport sys\nfrom cloudinit.cmd.main import main\nsys.exit(main())\n'
f /usr/bin/growpart 755 $'#!/bin/sh\n# growpart: extend a partition into the free space after it (cloud-guest-utils)\nexit 0\n'

f /etc/os-release 644 'PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.1 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
'
f /etc/lsb-release 644 $'DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=24.04\nDISTRIB_CODENAME=noble\nDISTRIB_DESCRIPTION="Ubuntu 24.04.1 LTS"\n'
f /etc/debian_version 644 $'trixie/sid\n'
f /etc/hostname 644 $'sample-instance\n'
f /etc/hosts 644 $'127.0.0.1 localhost\n127.0.1.1 sample-instance\n10.0.0.12 labserver.internal\n'
f /etc/resolv.conf 644 $'nameserver 10.0.0.2\nsearch internal\n'
f /etc/machine-id 444 $'3f0c2a5e8b7d4c1a9e6f5d4c3b2a1908\n'
f /etc/fstab 644 "LABEL=cloudimg-rootfs / ext4 discard,commit=30,errors=remount-ro 0 1
LABEL=UEFI /boot/efi vfat umask=0077 0 1
"
f /etc/passwd 644 'root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
sshd:x:106:65534::/run/sshd:/usr/sbin/nologin
ubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash
alice:x:1001:1001:Alice Researcher:/home/alice:/bin/bash
'
f /etc/group 644 'root:x:0:
daemon:x:1:
adm:x:4:ubuntu
sudo:x:27:ubuntu,alice
ubuntu:x:1000:
alice:x:1001:
'
f /etc/shadow 640 'root:*:19722:0:99999:7:::
daemon:*:19722:0:99999:7:::
sshd:!:19722::::::
ubuntu:!:19722:0:99999:7:::
alice:$6$saltsalt$Ue8jHbN0tBq1s3oQm2W6bN0kZqJfK1fY5yX2cV7dR9eT4gH6iJ8kL0mN2oP4qR6sT8uV0wX2yZ4aB6cD8eF0g.:19722:0:99999:7:::
'
f /etc/gshadow 640 $'root:*::\nadm:*::ubuntu\nsudo:*::ubuntu,alice\nubuntu:!::\nalice:!::\n'
f /etc/ssh/sshd_config 644 $'Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\nAcceptEnv LANG LC_*\nSubsystem\tsftp\t/usr/lib/openssh/sftp-server\n'
for t in rsa ecdsa ed25519; do
  f /etc/ssh/ssh_host_${t}_key 600 $'-----BEGIN OPENSSH PRIVATE KEY-----\nsample-host-key-'"$t"$'-not-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n'
  f /etc/ssh/ssh_host_${t}_key.pub 644 "ssh-$t AAAAsamplehostkey$t root@sample-instance"$'\n'
done

# cloud-init with growpart and resizefs in its init stage: the guest grows its root
# partition and filesystem at first boot, so imgsan shrinks the disk by default.
f /etc/cloud/cloud.cfg 644 'users:
   - default
disable_root: true
preserve_hostname: false
cloud_init_modules:
 - seed_random
 - bootcmd
 - write_files
 - growpart
 - resizefs
 - set_hostname
 - update_hostname
 - update_etc_hosts
 - users_groups
 - ssh
cloud_config_modules:
 - runcmd
system_info:
   distro: ubuntu
   default_user:
     name: ubuntu
     lock_passwd: True
     groups: [adm, sudo]
     shell: /bin/bash
'
f /etc/cloud/cloud.cfg.d/90_dpkg.cfg 644 $'datasource_list: [ NoCloud, ConfigDrive, OpenStack, Ec2, None ]\n'
for unit in cloud-init-local cloud-init cloud-config cloud-final; do
  f /usr/lib/systemd/system/$unit.service 644 $'[Unit]\nDescription=cloud-init '"$unit"$'\n[Service]\nType=oneshot\nExecStart=/usr/bin/cloud-init init\n[Install]\nWantedBy=cloud-init.target\n'
  mkdir -p "$r/etc/systemd/system/cloud-init.target.wants"
  ln -s /usr/lib/systemd/system/$unit.service "$r/etc/systemd/system/cloud-init.target.wants/$unit.service"
done
f /usr/lib/systemd/system/ssh.service 644 $'[Unit]\nDescription=OpenBSD Secure Shell server\n[Service]\nExecStartPre=/usr/sbin/sshd -t\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\n'
mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
ln -s /usr/lib/systemd/system/ssh.service "$r/etc/systemd/system/multi-user.target.wants/ssh.service"
f /boot/grub/grub.cfg 644 $'search --no-floppy --fs-uuid --set=root '"$root_uuid"$'\nlinux /boot/vmlinuz root=LABEL=cloudimg-rootfs ro console=tty1 console=ttyS0\ninitrd /boot/initrd.img\n'
f /boot/vmlinuz-6.8.0-41-generic 600 'sample kernel'
ln -s vmlinuz-6.8.0-41-generic "$r/boot/vmlinuz"

# dpkg's database: what `imgsan inspect` lists and the upload properties come from.
pkg() { # pkg NAME VERSION ARCH
  printf 'Package: %s\nStatus: install ok installed\nPriority: optional\nSection: admin\nInstalled-Size: 100\nMaintainer: Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>\nArchitecture: %s\nVersion: %s\nDescription: %s\n\n' "$1" "$3" "$2" "$1" >> "$r/var/lib/dpkg/status"
}
mkdir -p "$r/var/lib/dpkg/info"
: > "$r/var/lib/dpkg/status"
pkg base-files 13ubuntu10.1 amd64
pkg bash 5.2.21-2ubuntu4 amd64
pkg dash 0.5.12-6ubuntu5 amd64
pkg openssh-server 1:9.6p1-3ubuntu13.5 amd64
pkg python3.12 3.12.3-1ubuntu0.1 amd64
pkg python3 3.12.3-0ubuntu2 amd64
pkg cloud-init 24.2-0ubuntu1~24.04.2 all
pkg cloud-guest-utils 0.33-1 all
pkg qemu-guest-agent 1:8.2.2+ds-0ubuntu1.2 amd64
pkg grub-efi-amd64-signed 1.202+2.12-1ubuntu7 amd64
pkg shim-signed 1.58+15.8-0ubuntu1 amd64
pkg linux-image-6.8.0-41-generic 6.8.0-41.41 amd64
pkg samtools 1.19.2-1build2 amd64

# What the instance's users left behind.
mkdir -p "$r/root" "$r/home/ubuntu/.ssh" "$r/home/alice/project"
chmod 700 "$r/root"
f /root/.bash_history 600 $'mysql -u root -pS3cretRootPw\n'
f /home/ubuntu/.ssh/authorized_keys 600 $'ssh-ed25519 AAAAsampleuserkey ubuntu@laptop\n'
f /home/ubuntu/.bash_history 600 $'export AWS_SECRET_ACCESS_KEY=sampleSecretAccessKey\n'
f /home/alice/project/results.csv 644 $'sample,depth\nNA12878,31.4\n'
f /home/alice/.netrc 600 $'machine data.example.org login alice password alicepw\n'
f /tmp/upload-token 600 $'token=sample-upload-token\n'
f /var/log/syslog 640 $'Jan  7 07:59:59 sample-instance sshd[812]: Accepted publickey for alice\n'
f /var/log/auth.log 640 $'Jan  7 07:59:59 sample-instance sudo: alice : COMMAND=/bin/bash\n'
f /var/lib/cloud/data/instance-id 644 $'i-0123456789abcdef0\n'
f /var/lib/dhcp/dhclient.eth0.leases 644 $'lease { fixed-address 10.0.0.57; }\n'

if [ "$(id -u)" = 0 ]; then
  chown -R 0:0 "$r"
  chown -R 1000:1000 "$r/home/ubuntu"
  chown -R 1001:1001 "$r/home/alice"
fi
find "$r" -exec touch -h -t "$stamp" {} +

# Partitions, as Ubuntu's cloud images lay them out: 14 BIOS boot, 15 EFI system,
# 1 the root filesystem after them.
mib=$((1 << 20))
disk_mib=3072
truncate -s $((disk_mib * mib)) "$work/disk.raw"
sgdisk -U "$disk_guid" \
  -n 14:2048:10239 -t 14:ef02 -c 14:BIOS \
  -n 15:10240:227327 -t 15:ef00 -c 15:UEFI \
  -n 1:227328:0 -t 1:8300 -c 1:cloudimg-rootfs \
  "$work/disk.raw" >/dev/null
# Partition 1 runs to the last usable sector (the backup GPT takes the last 33).
first=227328
last=$((disk_mib * mib / 512 - 34))

# The EFI system partition: GRUB's removable-media loader and its config stub.
truncate -s $(( (227328 - 10240) * 512 )) "$work/esp.img"
mkfs.vfat -F 32 -s 1 -n UEFI -i "$esp_id" "$work/esp.img" >/dev/null
printf 'MZ sample shim' > "$work/BOOTX64.EFI"
printf "search.fs_uuid %s root\nconfigfile (\$root)/boot/grub/grub.cfg\n" "$root_uuid" > "$work/grub.cfg"
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT ::/EFI/ubuntu
mcopy -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$work/esp.img" "$work/grub.cfg" ::/EFI/ubuntu/grub.cfg
dd if="$work/esp.img" of="$work/disk.raw" bs=1M seek=5 conv=notrunc,sparse status=none

# The root filesystem, made in place at its partition's offset, its files copied in by
# mke2fs -d.
mke2fs -q -t ext4 -F -b 4096 -E offset=$((first * 512)) -U "$root_uuid" -L cloudimg-rootfs \
  -d "$r" "$work/disk.raw" $(( (last - first + 1) / 8 )) >/dev/null

case "$out" in
  *.qcow2) qemu-img convert -q -f raw -O qcow2 "$work/disk.raw" "$out.tmp" ;;
  *) cp --sparse=always "$work/disk.raw" "$out.tmp" ;;
esac
mv "$out.tmp" "$out"
echo "make-sample-disk: wrote $out ($disk_mib MiB virtual, Ubuntu 24.04-like guest)"
