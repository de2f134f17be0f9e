#!/usr/bin/env bash
# Build Spotter's Debian package with cargo-deb.
#
# Usage: scripts/build-deb.sh [--target aarch64-unknown-linux-gnu] [--profile dev]
#
# --profile dev packages the dev-profile binary instead of a release build;
# the test suite (scripts/test.sh) uses it to check the package's contents
# without a second full build. Packages to install come from the default.
#
# Builds the release binary (for --target: with Debian's cross gcc, see
# cross/README.md), fetches libLiteRt.so for the target's architecture and
# the demo model, and packages them with the unit, the sysusers.d user, the
# default config and the docs (see [package.metadata.deb] in Cargo.toml).
# Progress goes to stderr; the LAST line on stdout is the absolute path of
# spotter_<version>_<arch>.deb. Installs what it needs (cargo-deb, pinned;
# dpkg-dev for dpkg-shlibdeps; the cross toolchain for --target).
source "$(dirname "$0")/lib.sh"

CARGO_DEB_VERSION=3.8.0

target=""
profile=release
while [ $# -gt 0 ]; do
    case "$1" in
        --target) [ $# -ge 2 ] || die "--target needs a triple"; target="$2"; shift 2 ;;
        --target=*) target="${1#--target=}"; shift ;;
        --profile) [ $# -ge 2 ] || die "--profile needs a name"; profile="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
        *) die "unknown argument '$1' (usage: scripts/build-deb.sh [--target TRIPLE])" ;;
    esac
done

host="$(rustc -vV | sed -n 's/^host: //p')"
[ -n "$target" ] || target="$host"
case "$target" in
    x86_64-unknown-linux-gnu) litert_arch=x86_64 ;;
    aarch64-unknown-linux-gnu) litert_arch=aarch64 ;;
    *) die "no package for '$target': supported are x86_64-unknown-linux-gnu and aarch64-unknown-linux-gnu (LiteRT ships for those only)" ;;
esac

apt_install dpkg-dev python3
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    say "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install --quiet --locked --version "$CARGO_DEB_VERSION" cargo-deb >&2
fi

cd "$REPO"
target_args=()
build_args=()
deb_env=()
if [ "$target" != "$host" ]; then
    # Cross: Debian's gcc and binutils for the target, from
    # cross/config.toml; cargo-deb strips with the target's binutils.
    source "$REPO/cross/env.sh" "$target"
    target_args=(--target "$target")
    build_args=("${CROSS_CARGO[@]}")
    deb_env=("${CROSS_ENV[@]}")
fi

litert="$(bash scripts/setup-litert.sh "$litert_arch")"
model="$(bash models/fetch-demo-model.sh)"
[ "$model" -ef "$REPO/.cache/models/efficientnet_lite0.tflite" ] \
    || die "the demo model is at $model, not where Cargo.toml's assets expect it"

say "cargo build --profile $profile ${build_args[*]}"
cargo build --profile "$profile" --locked --bin spotter "${build_args[@]}" >&2

# cargo-deb maps the `target/release/` prefix of assets to the real output
# directory (CARGO_TARGET_DIR, --target); put libLiteRt.so there beside the
# binary.
target_dir="$(cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
profile_dir="$profile"
[ "$profile" = dev ] && profile_dir=debug
out_dir="$target_dir/$profile_dir"
[ "$target" = "$host" ] || out_dir="$target_dir/$target/$profile_dir"
install -m 0644 "$litert" "$out_dir/libLiteRt.so"

say "cargo deb ${target_args[*]}"
deb="$(env "${deb_env[@]}" cargo deb --no-build --locked --profile "$profile" "${target_args[@]}" | tail -n 1)"
[ -f "$deb" ] || die "cargo deb did not report a package file (got '$deb')"
realpath "$deb"
