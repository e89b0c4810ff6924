#!/usr/bin/env bash
# Boots a RAW disk image under qemu (TCG by default, serial console) and waits until the
# console shows a login prompt, and any extra patterns given, all within TIMEOUT seconds.
#
# Usage: boot-and-wait.sh IMG TIMEOUT [EXTRA_REGEX...]
# Exit 0 when everything was seen; 1 on timeout or if qemu exits first, printing the
# last console lines. The image is opened with snapshot=on: the boot never writes to it.
# qemu is always killed on exit. $IMGSAN_BOOT_ACCEL overrides the accelerator (tcg);
# $IMGSAN_BOOT_LOG keeps the console log at that path.
# With $IMGSAN_BOOT_SSH_KEYS=FILE the guest's port 22 is forwarded to a free local
# port, and the boot counts as done only once ssh-keyscan gets the host keys from the
# guest's sshd through it (written to FILE). This is a stronger check than any console
# line: systemd stops printing unit status on the serial console once a getty runs
# there, so a daemon that starts after the login prompt never shows up in the log.
# The guest gets a virtio-rng device, as cloud instances do: under TCG the kernel's
# own entropy gathering is slow, and `ssh-keygen -A` at first boot would otherwise
# wait minutes for getrandom().
set -euo pipefail

img=${1:?usage: boot-and-wait.sh IMG TIMEOUT [EXTRA_REGEX...]}
timeout=${2:?usage: boot-and-wait.sh IMG TIMEOUT [EXTRA_REGEX...]}
shift 2
patterns=('login:' "$@")
accel=${IMGSAN_BOOT_ACCEL:-tcg}
log=${IMGSAN_BOOT_LOG:-$(mktemp /tmp/imgsan-boot-XXXXXX.log)}
: > "$log"

keys=${IMGSAN_BOOT_SSH_KEYS:-}
netdev=user,id=net0
if [ -n "$keys" ]; then
  : > "$keys"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  netdev+=",hostfwd=tcp:127.0.0.1:$port-:22"
fi

# The NIC sits in PCI slot 3, so the guest names it ens3 (the fixture's interfaces file).
qemu-system-x86_64 -accel "$accel" -m 1024 -smp 1 \
  -display none -vga none -monitor none -no-reboot -nodefaults \
  -serial "file:$log" \
  -drive "file=$img,format=raw,if=virtio,snapshot=on" \
  -netdev "$netdev" -device virtio-net-pci,netdev=net0,addr=0x3 \
  -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0 &
qemu=$!
cleanup() { kill "$qemu" 2>/dev/null || true; wait "$qemu" 2>/dev/null || true; }
trap cleanup EXIT

start=$(date +%s)
while :; do
  missing=()
  for p in "${patterns[@]}"; do
    grep -Eaq -- "$p" "$log" || missing+=("$p")
  done
  if [ -n "$keys" ] && [ ! -s "$keys" ]; then
    # slirp accepts the connection even when nothing listens in the guest; keyscan
    # then prints nothing and the next round tries again.
    ssh-keyscan -T 5 -p "$port" 127.0.0.1 > "$keys" 2>/dev/null || true
    [ -s "$keys" ] || missing+=("ssh host keys on guest port 22")
  fi
  now=$(date +%s)
  if [ ${#missing[@]} -eq 0 ]; then
    echo "boot-and-wait: saw ${patterns[*]}${keys:+ and got the ssh host keys} after $((now - start)) s"
    exit 0
  fi
  if ! kill -0 "$qemu" 2>/dev/null; then
    echo "boot-and-wait: qemu exited before the console showed: ${missing[*]}" >&2
    tail -n 40 "$log" | tr -d '\r' >&2
    exit 1
  fi
  if [ $((now - start)) -ge "$timeout" ]; then
    echo "boot-and-wait: timeout after ${timeout} s; not seen: ${missing[*]}" >&2
    echo "--- last console lines ---" >&2
    tail -n 40 "$log" | tr -d '\r' >&2
    exit 1
  fi
  sleep 1
done
