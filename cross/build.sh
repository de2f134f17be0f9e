#!/usr/bin/env bash
# Cross-build the release binary for TRIPLE with Debian's cross gcc.
#   cross/build.sh aarch64-unknown-linux-gnu        (primary: LiteRT + built-in)
#   cross/build.sh armv7-unknown-linux-gnueabihf    (built-in runtime only; best effort)
# Prints the binary's path. For a package use scripts/build-deb.sh --target.
source "$(dirname "$0")/../scripts/lib.sh"
source "$REPO/cross/env.sh" "${1:?usage: cross/build.sh TRIPLE}"
cd "$REPO"
cargo build --release --locked --bin spotter "${CROSS_CARGO[@]}" >&2
target_dir="$(cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
echo "$target_dir/$CROSS_TRIPLE/release/spotter"
