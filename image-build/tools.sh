#!/usr/bin/env bash
# Install the host tools the image build and the VM test use, from Debian's
# packages: mmdebstrap, QEMU (system emulators; qemu-user-static for arm64
# rootfs builds), e2fsprogs (mkfs.ext4 -d), OpenSSH client, curl, openssl.
# Idempotent. When the machine already has a newer QEMU from
# bookworm-backports (qemu-utils), QEMU comes from there too, so the
# versions match; no file under /etc/apt is changed for that.
source "$(dirname "$0")/../scripts/lib.sh"

need_arm64=0
[ "${1:-}" = "--arm64" ] && need_arm64=1

apt_install mmdebstrap e2fsprogs openssh-client curl openssl ca-certificates python3 zstd

qemu_pkgs=(qemu-system-x86)
# arch-test: mmdebstrap uses it to check that foreign binaries run.
[ "$need_arm64" = 1 ] && { qemu_pkgs+=(qemu-system-arm qemu-user-static); apt_install arch-test; }
missing=()
for p in "${qemu_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    utils_ver="$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)"
    if [[ "$utils_ver" == *bpo12* ]]; then
        # qemu-utils from bookworm-backports breaks bookworm's qemu-system-*:
        # take QEMU from the same suite, through a temporary source list.
        say "installing ${missing[*]} from bookworm-backports (to match qemu-utils $utils_ver)"
        bpo="$(mktemp)"
        echo 'deb http://deb.debian.org/debian bookworm-backports main' >"$bpo"
        apt-get update -qq -o Dir::Etc::sourcelist="$bpo"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o Dir::Etc::sourcelist="$bpo" -t bookworm-backports "${missing[@]}" >/dev/null
        rm -f "$bpo"
    else
        apt_install "${missing[@]}"
    fi
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing after install"
