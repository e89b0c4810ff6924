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
# Independent readers of imgsan's reports (tests/report.rs, tests/upload.rs): a JSON
# Schema validator, a JUnit XML parser; venv for python-openstackclient's parser.
/usr/bin/python3 -c 'import jsonschema' 2>/dev/null || need_pkgs+=(python3-jsonschema)
/usr/bin/python3 -c 'import junitparser' 2>/dev/null || need_pkgs+=(python3-junitparser)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need_pkgs+=(python3-venv)
# The sample disk of examples/make-sample-disk.sh (owners as root without root).
have fakeroot      || need_pkgs+=(fakeroot)
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
# imgsan batch: a single-node Slurm cluster (tests/batch.rs starts the daemons
# itself, there is no systemd) and GNU parallel (benches/batch.sh).
have slurmctld     || need_pkgs+=(slurmctld)
have slurmd        || need_pkgs+=(slurmd)
have sbatch        || need_pkgs+=(slurm-client)
have munged        || need_pkgs+=(munge)
have parallel      || need_pkgs+=(parallel)
# Ubuntu release dates: the oracle for rules/eol.yaml.
[ -e /usr/share/distro-info/ubuntu.csv ] || need_pkgs+=(distro-info-data)

bp_pkgs=()
have qemu-system-x86_64 || bp_pkgs+=(qemu-system-x86)
# qemu-img and qemu-io: the oracles of the QCOW2 tests.
{ have qemu-img && have qemu-io; } || bp_pkgs+=(qemu-utils)
have guestfish          || bp_pkgs+=(libguestfs-tools)
# The appliance needs a kernel it can read.
ls /boot/vmlinuz-* >/dev/null 2>&1 || bp_pkgs+=(linux-image-amd64)

# qemu-system and libguestfs must match the qemu-utils from backports. Backports is
# added as a file of its own, in the style of the machine's sources: deb822
# (/etc/apt/sources.list.d/debian.sources, bookworm's default) or a classic one-line
# sources.list.
backports_enabled() {
  grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/
}
add_backports() {
  local uri
  uri=$(sed -n 's|^URIs:[[:space:]]*\([^[:space:]]*debian\)/*$|\1|p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  [ -n "$uri" ] || uri=$(sed -n 's|^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*debian\)/*[[:space:]]\+bookworm[[:space:]].*|\2|p' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1)
  [ -n "$uri" ] || uri=http://deb.debian.org/debian
  if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$uri" > /etc/apt/sources.list.d/imgsan-backports.sources
  else
    echo "deb $uri bookworm-backports main" > /etc/apt/sources.list.d/imgsan-backports.list
  fi
}
if [ ${#need_pkgs[@]} -gt 0 ] || [ ${#bp_pkgs[@]} -gt 0 ]; then
  if [ ${#bp_pkgs[@]} -gt 0 ] && ! backports_enabled; then
    add_backports
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

# The tests run `python3` from PATH. Debian's is served by the apt packages above; an
# interpreter of another origin first on PATH (pyenv, a virtualenv: not "externally
# managed") gets the two modules from PyPI instead.
if [ "$(command -v python3)" != /usr/bin/python3 ]; then
  python3 -c 'import jsonschema' 2>/dev/null || python3 -m pip install -q jsonschema
  python3 -c 'import junitparser' 2>/dev/null || python3 -m pip install -q junitparser
fi
# The Kubernetes API's published schemas, for `imgsan batch --emit k8s` (tests/batch.rs).
have kubernetes-validate || python3 -m pip install -q kubernetes-validate
