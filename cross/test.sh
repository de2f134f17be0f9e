#!/usr/bin/env bash
# Cross-build Spotter for TRIPLE (default aarch64-unknown-linux-gnu) and run
# its library tests and golden inference tests under qemu-user (the cargo
# runner set in cross/config.toml). On aarch64 both runtimes are tested:
# LiteRT's aarch64 libLiteRt.so is fetched and required. armv7 has no LiteRT
# build, so there only the built-in runtime runs.
#
# Usage: cross/test.sh [TRIPLE]          (scripts/test.sh runs it for aarch64)
source "$(dirname "$0")/../scripts/lib.sh"
source "$REPO/cross/env.sh" "${1:-aarch64-unknown-linux-gnu}"

export SPOTTER_TESTDATA="${SPOTTER_TESTDATA:-$REPO/../shared/testdata}"
[ -d "$SPOTTER_TESTDATA" ] || die "test data not found at $SPOTTER_TESTDATA"
if [ -n "$CROSS_LITERT_ARCH" ]; then
    SPOTTER_LITERT_LIB="$(bash "$REPO/scripts/setup-litert.sh" "$CROSS_LITERT_ARCH")"
    export SPOTTER_LITERT_LIB SPOTTER_REQUIRE_LITERT=1
else
    unset SPOTTER_LITERT_LIB SPOTTER_REQUIRE_LITERT
fi
cd "$REPO"
start=$(date +%s)
say "cross build for $CROSS_TRIPLE (tests, dev profile)"
cargo test --locked "${CROSS_CARGO[@]}" --lib --test golden --no-run >&2
built=$(date +%s)
say "library and golden tests for $CROSS_TRIPLE under qemu-user"
cargo test --locked "${CROSS_CARGO[@]}" --lib --test golden -- --test-threads=2
done_at=$(date +%s)
say "cross $CROSS_TRIPLE: build $((built - start)) s, tests under qemu $((done_at - built)) s"
