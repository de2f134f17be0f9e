#!/usr/bin/env bash
# Build the VM's Debian rootfs tarball with mmdebstrap, once per package list:
#   image-build/build-rootfs.sh amd64|arm64
# prints the tarball's path (.cache/image/rootfs-ARCH-FLAVOUR-KEY.tar, FLAVOUR = the suite, plus -bpo-kernel) as its last
# stdout line. KEY hashes packages.txt, this script and customize.sh, so
# editing any of them builds a new tarball; an existing one is reused.
# Spotter is not in it: build-image.sh installs the .deb on top.
#
# Kept small and quiet: the `essential` variant plus packages.txt, no
# Recommends (so no time sync, no apt and no apt timers in the guest), and
# one initrd with only the virtio and ext4 modules, built by customize.sh
# at the end instead of on every kernel trigger (update-initramfs is
# diverted to a no-op meanwhile).
source "$(dirname "$0")/../scripts/lib.sh"
HERE="$REPO/image-build"
arch="${1:-}"
case "$arch" in amd64|arm64) ;; *) die "usage: $0 amd64|arm64" ;; esac
suite="${SPOTTER_IMAGE_SUITE:-bookworm}"
mirror="${SPOTTER_IMAGE_MIRROR:-http://deb.debian.org/debian}"
# SPOTTER_IMAGE_BACKPORTS_KERNEL=1: the kernel from SUITE-backports (trixie's
# has the gpio-sim module the GPIO system test needs; the suite's own
# kernel does not).
bpo_kernel="${SPOTTER_IMAGE_BACKPORTS_KERNEL:-0}"

pkgs="$(grep -v '^\s*#' "$HERE/packages.txt" | sed "s/ARCH/$arch/g" | xargs | tr ' ' ',')"
mirrors=("$mirror")
if [ "$bpo_kernel" = 1 ]; then
    pkgs="${pkgs/linux-image-$arch/linux-image-$arch/$suite-backports}"
    mirrors=("deb $mirror $suite main" "deb $mirror $suite-backports main")
fi
key="$( (echo "$suite $mirror $arch $bpo_kernel"; cat "$HERE/packages.txt" "$HERE/build-rootfs.sh" "$HERE/customize.sh") \
        | sha256sum | cut -c1-16)"
flavour="$suite"
if [ "$bpo_kernel" = 1 ]; then flavour="$suite-bpo-kernel"; fi
out="$CACHE/image/rootfs-$arch-$flavour-$key.tar"
if [ -s "$out" ]; then
    say "rootfs $arch: cached $out"
    echo "$out"
    exit 0
fi
mkdir -p "$CACHE/image"
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
    # Foreign maintainer scripts run through qemu-user via binfmt_misc.
    [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    # (systemd-binfmt where systemd runs; else the rule straight to the kernel.)
    if [ "$arch" = arm64 ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        { command -v systemd-binfmt >/dev/null && systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf; } \
            || grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
    fi
fi

say "rootfs $arch: mmdebstrap $suite ($pkgs)"
# mmdebstrap picks the output format from the name: keep it ending in .tar.
tmp="$CACHE/image/.partial-$$-rootfs.tar"
trap 'rm -f "$tmp"' EXIT
# shellcheck disable=SC2016 # $1 is mmdebstrap's hook argument (the root).
mmdebstrap --quiet --mode=root --variant=essential --arch="$arch" \
    --include="$pkgs" \
    --aptopt='Acquire::Retries "3"' \
    --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
    --essential-hook='printf "#!/bin/sh\n# diverted while the rootfs is built; see build-rootfs.sh\nexit 0\n" >"$1/usr/sbin/update-initramfs"; chmod 755 "$1/usr/sbin/update-initramfs"' \
    --customize-hook="\"$HERE/customize.sh\" \"\$1\" $arch" \
    "$suite" "$tmp" "${mirrors[@]}" >&2
mv "$tmp" "$out"
trap - EXIT
# Older tarballs of this arch are stale once the key changed.
find "$CACHE/image" -maxdepth 1 -name "rootfs-$arch-$flavour-*.tar" ! -name "$(basename "$out")" -delete
say "rootfs $arch: $(du -h "$out" | cut -f1) $out"
echo "$out"
