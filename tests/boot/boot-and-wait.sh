#!/usr/bin/env bash
# Boots a RAW disk image under qemu (TCG by default, serial console) and waits until the
# console shows a login prompt, and any extra patterns given, all within TIMEOUT seconds.
#
# Usage: boot-and-wait.sh IMG TIMEOUT [EXTRA_REGEX...]
# Exit 0 when everything was seen; 1 on timeout or if qemu exits first, printing the
# last console lines. The image is opened with snapshot=on: the boot never writes to it.
# qemu is always killed on exit. $IMGSAN_BOOT_ACCEL overrides the accelerator (tcg);
# $IMGSAN_BOOT_LOG keeps the console log at that path.
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

qemu-system-x86_64 -accel "$accel" -m 1024 -smp 1 \
  -display none -vga none -monitor none -no-reboot -nodefaults \
  -serial "file:$log" \
  -drive "file=$img,format=raw,if=virtio,snapshot=on" \
  -nic user,model=virtio-net-pci \
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
  now=$(date +%s)
  if [ ${#missing[@]} -eq 0 ]; then
    echo "boot-and-wait: saw ${patterns[*]} after $((now - start)) s"
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
