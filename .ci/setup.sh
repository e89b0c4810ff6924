#!/usr/bin/env bash
# Installs what imgsan's tests need, idempotently. Safe to rerun: every step checks
# before it acts. Runs as root on a Debian bookworm machine (the CI image).
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }

have mkfs.xfs      || need_pkgs+=(xfsprogs)
have sgdisk        || need_pkgs+=(gdisk)
have sfdisk        || need_pkgs+=(fdisk)
have hyperfine     || need_pkgs+=(hyperfine)
have debootstrap   || need_pkgs+=(debootstrap)
have xmllint       || need_pkgs+=(libxml2-utils)
have mkfs.vfat     || need_pkgs+=(dosfstools)
have zstd          || need_pkgs+=(zstd)
have rpmbuild      || need_pkgs+=(rpm)
# Guest facts tests: rpm's NDB writer is compiled from Debian's rpm source (cc,
# xz); dcrpm's CentOS 7 rpmdb comes from PyPI (pip); findmnt, pwck/grpck,
# db_load and dpkg-query are oracles.
have cc            || need_pkgs+=(gcc)
have xz            || need_pkgs+=(xz-utils)
python3 -m pip --version >/dev/null 2>&1 || need_pkgs+=(python3-pip)
have findmnt       || need_pkgs+=(util-linux)
have pwck          || need_pkgs+=(passwd)
have db_load       || need_pkgs+=(db-util)
have pvcreate      || need_pkgs+=(lvm2)
have clang         || need_pkgs+=(clang)
have /usr/bin/time || need_pkgs+=(time)
have debugfs       || need_pkgs+=(e2fsprogs)
have setfattr      || need_pkgs+=(attr)
have setfacl       || need_pkgs+=(acl)
[ -e /usr/lib/grub/i386-pc/modinfo.sh ] || need_pkgs+=(grub-pc-bin)
# Test fixtures (tests/common, tests/boot): ssh host and user keys, files copied into
# FAT images, rpmbuild for Rocky's rpmdb, pip to fetch the CentOS 7 rpmdb test data.
have ssh-keygen    || need_pkgs+=(openssh-client)
have mcopy         || need_pkgs+=(mtools)
have debugfs       || need_pkgs+=(e2fsprogs)
have python3       || need_pkgs+=(python3)
have grub-install  || need_pkgs+=(grub2-common)
# Ubuntu release dates: the oracle for rules/eol.yaml.
[ -e /usr/share/distro-info/ubuntu.csv ] || need_pkgs+=(distro-info-data)

bp_pkgs=()
have qemu-system-x86_64 || bp_pkgs+=(qemu-system-x86)
# qemu-img and qemu-io: the oracles of the QCOW2 tests.
{ have qemu-img && have qemu-io; } || bp_pkgs+=(qemu-utils)
have guestfish          || bp_pkgs+=(libguestfs-tools)
# The appliance needs a kernel it can read.
ls /boot/vmlinuz-* >/dev/null 2>&1 || bp_pkgs+=(linux-image-amd64)

src=/etc/apt/sources.list.d/debian.sources
if [ ${#need_pkgs[@]} -gt 0 ] || [ ${#bp_pkgs[@]} -gt 0 ]; then
  if [ ${#bp_pkgs[@]} -gt 0 ] && [ -f "$src" ] && ! grep -q 'bookworm-backports' "$src"; then
    # qemu-system and libguestfs must match the qemu-utils from backports.
    sed -i '0,/^Suites: bookworm bookworm-updates$/s//Suites: bookworm bookworm-updates bookworm-backports/' "$src"
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  if [ ${#need_pkgs[@]} -gt 0 ]; then
    apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
  fi
  if [ ${#bp_pkgs[@]} -gt 0 ]; then
    apt-get install -y -q -t bookworm-backports "${bp_pkgs[@]}"
  fi
  # The downloaded packages are not needed once installed; CI disks are small.
  apt-get clean
fi

# cargo-fuzz runs the fuzz targets for a bounded time (nightly toolchain).
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

# Independent readers of imgsan's reports: a JSON Schema validator for the JSON
# report and a JUnit XML parser for the JUnit report (tests/report.rs).
python3 -c 'import jsonschema' 2>/dev/null || python3 -m pip install -q jsonschema
python3 -c 'import junitparser' 2>/dev/null || python3 -m pip install -q junitparser
