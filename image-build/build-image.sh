#!/usr/bin/env bash
# Make the VM's disk image from the cached rootfs and Spotter's .deb:
#   image-build/build-image.sh ARCH DEB OUTDIR [AUTHORIZED_KEYS]
# OUTDIR gets disk.img (ext4 over the whole disk, root=/dev/vda), vmlinuz
# and initrd.img (for QEMU's -kernel/-initrd) and ssh_known_host.pub (the
# guest's host key, so the host can check it). The .deb is installed with
# dpkg in a chroot of the unpacked rootfs (its maintainer scripts create
# the service user and enable the unit); the image is then written with
# `mkfs.ext4 -d`: no loop devices, no mounts. Needs root (file ownership).
source "$(dirname "$0")/../scripts/lib.sh"
HERE="$REPO/image-build"
[ $# -ge 3 ] || die "usage: $0 amd64|arm64 SPOTTER.deb OUTDIR [AUTHORIZED_KEYS]"
arch="$1" deb="$2" out="$3" keys="${4:-}"
[ -f "$deb" ] || die "no such .deb: $deb"
[ "$(id -u)" -eq 0 ] || die "build-image.sh needs root: the image keeps file owners"
deb_arch="$(dpkg-deb -f "$deb" Architecture)"
[ "$deb_arch" = "$arch" ] || die "$deb is for $deb_arch, not $arch"

tarball="$(bash "$HERE/build-rootfs.sh" "$arch" | tail -n1)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
root="$out/root"
rm -rf "$root" "$out/disk.img"
mkdir -p "$root"
say "image $arch: unpacking $(basename "$tarball")"
tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$tarball" -C "$root"

say "image $arch: installing $(basename "$deb")"
cp "$deb" "$root/tmp/spotter.deb"
# No /run/systemd/system in a chroot, so the postinst starts nothing.
chroot "$root" dpkg -i /tmp/spotter.deb >&2
rm -f "$root/tmp/spotter.deb"
chroot "$root" systemctl is-enabled --quiet spotter.service \
    || die "the .deb did not enable spotter.service"
chroot "$root" getent passwd spotter >/dev/null || die "the .deb did not create the spotter user"

# SPOTTER_IMAGE_DROPIN: a config drop-in the image gets as
# /etc/spotter/spotter.d/05-image.toml (the system tests' settings).
if [ -n "${SPOTTER_IMAGE_DROPIN:-}" ]; then
    install -d -m 0755 "$root/etc/spotter/spotter.d"
    install -m 0644 "$SPOTTER_IMAGE_DROPIN" "$root/etc/spotter/spotter.d/05-image.toml"
fi
if [ -n "$keys" ]; then
    install -d -m 0700 "$root/root/.ssh"
    install -m 0600 "$keys" "$root/root/.ssh/authorized_keys"
fi
# Host keys unique to this image, not shared by every image of the tarball.
rm -f "$root"/etc/ssh/ssh_host_*
chroot "$root" ssh-keygen -A >&2
cp "$root/etc/ssh/ssh_host_ed25519_key.pub" "$out/ssh_known_host.pub"
kernel="$(find "$root/boot" -name 'vmlinuz-*' | sort -V | tail -n1)"
initrd="$root/boot/initrd.img-${kernel##*/vmlinuz-}"
[ -f "$kernel" ] && [ -f "$initrd" ] || die "no kernel/initrd under $root/boot"
cp "$kernel" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"

used_mb="$(du -sm "$root" | cut -f1)"
size_mb=$(( used_mb * 13 / 10 + 512 ))
say "image $arch: mkfs.ext4 -d (${used_mb} MiB used, ${size_mb} MiB image)"
mkfs.ext4 -q -F -L spotter-root -d "$root" "$out/disk.img" "${size_mb}M"
rm -rf "$root"
say "image $arch: $out/disk.img"
echo "$out/disk.img"
