# Cross-build environment for one target triple. Source it, don't run it:
#   source cross/env.sh aarch64-unknown-linux-gnu
# Installs what the cross build needs (Debian's cross gcc/g++ and binutils,
# qemu-user-static to run tests, clang/libclang for bindgen, the Rust
# standard library for the target) and sets:
#   CROSS_TRIPLE       the Rust target triple
#   CROSS_GNU          the GNU triple of the toolchain (aarch64-linux-gnu)
#   CROSS_DEB_ARCH     the Debian architecture (arm64)
#   CROSS_LITERT_ARCH  the LiteRT wheel architecture, empty when none exists
#   CROSS_CARGO        cargo arguments: (--config cross/config.toml --target T)
#   CROSS_ENV          extra NAME=VALUE pairs for `env` (names with dashes,
#                      which bash cannot export: cargo-deb's STRIP_<triple>)
[ -n "${REPO:-}" ] || source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

CROSS_TRIPLE="${1:?usage: source cross/env.sh TRIPLE}"
case "$CROSS_TRIPLE" in
    aarch64-unknown-linux-gnu)
        CROSS_GNU=aarch64-linux-gnu; CROSS_DEB_ARCH=arm64; CROSS_LITERT_ARCH=aarch64 ;;
    armv7-unknown-linux-gnueabihf)
        CROSS_GNU=arm-linux-gnueabihf; CROSS_DEB_ARCH=armhf; CROSS_LITERT_ARCH="" ;;
    *) die "cross/env.sh: unsupported target '$CROSS_TRIPLE' (aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf)" ;;
esac

apt_install "gcc-$CROSS_GNU" "g++-$CROSS_GNU" "binutils-$CROSS_GNU" qemu-user-static clang libclang-dev make
if ! rustup target list --installed | grep -qx "$CROSS_TRIPLE"; then
    say "adding the Rust standard library for $CROSS_TRIPLE"
    rustup target add "$CROSS_TRIPLE" >&2
fi
CROSS_CARGO=(--config "$REPO/cross/config.toml" --target "$CROSS_TRIPLE")
CROSS_ENV=("STRIP_$CROSS_GNU=$CROSS_GNU-strip" "OBJCOPY_$CROSS_GNU=$CROSS_GNU-objcopy")
export CROSS_TRIPLE CROSS_GNU CROSS_DEB_ARCH CROSS_LITERT_ARCH
