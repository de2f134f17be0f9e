#!/usr/bin/env bash
# Cargo's test runner for aarch64 under qemu-user (set by cross/env.sh).
#
# qemu-user hands the program the host's /proc/cpuinfo (x86). The CPU
# detection inside libLiteRt.so (XNNPACK's cpuinfo) parses it as ARM, finds
# no cores and dereferences a null pointer: every LiteRT test dies with
# SIGSEGV. So the test runs in a private mount namespace whose /proc/cpuinfo
# is a Raspberry Pi 4's (cross/cpuinfo-aarch64.txt, 2 cores to match the
# host's CPU count in /sys), and QEMU emulates that CPU (Cortex-A72;
# QEMU_CPU overrides). Without a mount namespace (needs root, as in CI) it
# runs the program as is and says why LiteRT tests may crash.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sysroot=/usr/aarch64-linux-gnu
export QEMU_CPU="${QEMU_CPU:-cortex-a72}"
if [ "${1:-}" = --in-namespace ]; then
    shift
    mount --bind "$here/cpuinfo-aarch64.txt" /proc/cpuinfo
    exec qemu-aarch64-static -L "$sysroot" "$@"
fi
if unshare -m true 2>/dev/null; then
    exec unshare -m -- "$here/qemu-run.sh" --in-namespace "$@"
fi
echo "cross/qemu-run.sh: no mount namespace here (needs root): the program sees the host's /proc/cpuinfo, on which LiteRT's CPU detection crashes" >&2
exec qemu-aarch64-static -L "$sysroot" "$@"
