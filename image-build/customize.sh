#!/usr/bin/env bash
# mmdebstrap customize hook for the VM rootfs: customize.sh ROOT ARCH.
# Runs on the host with ROOT the unpacked rootfs (mmdebstrap has mounted
# /proc, /sys and /dev inside it). Sets up a quiet appliance guest:
#   - root on /dev/vda (ext4, the whole disk), serial console;
#   - eth0 with the QEMU user-network address, no DNS, no default route
#     beyond QEMU's gateway (which `restrict=on` isolates anyway);
#   - sshd with keys only; no timers that reach out or churn the disk;
#   - vivid's options for one webcam-style capture node;
#   - one small initrd (virtio + ext4) built now, after every package.
set -euo pipefail
root="$1"
arch="$2"

echo spotter-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 spotter-vm\n::1 localhost\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' >"$root/etc/fstab"

# Network: static, the address QEMU's user network expects.
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/10-eth0.network" <<'NET'
[Match]
Name=eth0

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
LinkLocalAddressing=no
IPv6AcceptRA=no
NET
chroot "$root" systemctl enable --quiet systemd-networkd.service systemd-networkd-wait-online.service

# sshd: public keys only (root's authorized_keys is added per image).
mkdir -p "$root/etc/ssh/sshd_config.d"
cat >"$root/etc/ssh/sshd_config.d/spotter-vm.conf" <<'SSH'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
SSH

# No periodic jobs in a test appliance: mask the timers that exist.
for t in e2scrub_all.timer fstrim.timer apt-daily.timer apt-daily-upgrade.timer \
         man-db.timer systemd-timesyncd.service; do
    if [ -e "$root/lib/systemd/system/$t" ] || [ -e "$root/usr/lib/systemd/system/$t" ]; then
        chroot "$root" systemctl mask --quiet "$t"
    fi
done

# Emulated hardware the guest does not need: each module costs seconds
# under TCG at every boot (seen: 5 min to boot on a busy host without this).
cat >"$root/etc/modprobe.d/spotter-vm-blacklist.conf" <<'BL'
blacklist kvm
blacklist kvm_amd
blacklist kvm_intel
blacklist ccp
blacklist iTCO_wdt
blacklist iTCO_vendor_support
blacklist intel_pmc_bxt
blacklist lpc_ich
blacklist i2c_i801
blacklist pcspkr
blacklist serio_raw
blacklist psmouse
blacklist evdev
blacklist efi_pstore
blacklist aesni_intel
blacklist ghash_clmulni_intel
blacklist sha1_ssse3
blacklist sha256_ssse3
blacklist sha512_ssse3
blacklist crct10dif_pclmul
blacklist crc32_pclmul
BL
chroot "$root" systemctl mask --quiet getty-static.service

# vivid: one capture node, one webcam input (`modprobe vivid` uses these).
echo 'options vivid n_devs=1 node_types=0x1 num_inputs=1 input_types=0x0' \
    >"$root/etc/modprobe.d/vivid.conf"

# Kernel modules this guest can never use (no such hardware under QEMU):
# about half of the rootfs. vivid, videobuf2, virtio, ext4 stay.
for kver in "$root"/usr/lib/modules/*; do
    k="$kver/kernel"
    rm -rf "$k/drivers/gpu" "$k/drivers/net/wireless" "$k/drivers/net/ethernet" \
           "$k/drivers/infiniband" "$k/drivers/scsi" "$k/drivers/staging" "$k/drivers/comedi" \
           "$k/drivers/iio" "$k/drivers/isdn" "$k/drivers/bluetooth" "$k/sound" \
           "$k/net/bluetooth" "$k/net/wireless" "$k/net/mac80211"
    chroot "$root" depmod -a "$(basename "$kver")"
done

# The initrd: only what mounting /dev/vda needs, built once, now.
mkdir -p "$root/etc/initramfs-tools/conf.d"
echo 'MODULES=list' >"$root/etc/initramfs-tools/conf.d/spotter-vm.conf"
cat >>"$root/etc/initramfs-tools/modules" <<'MOD'
virtio_pci
virtio_mmio
virtio_blk
ext4
MOD
rm -f "$root/usr/sbin/update-initramfs"
chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
chroot "$root" update-initramfs -c -k all

# Smaller image: docs, man pages and apt lists are not needed in the guest.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/var/lib/apt/lists/* \
       "$root"/var/cache/apt/*.bin
: "$arch"
